//! Optimizers by name, for the examples and benches (`--optimizer adabelief`).
//!
//! Every entry is a [`ModuleOptimizer`] built with its paper's reference defaults, plus a learning
//! rate that trains the example models on the shipped digits data well. Burn's own `adam`, `adamw`
//! and `sgd` are included as baselines.

use burn::optim::{AdaGradConfig, AdamConfig, AdamWConfig, ModuleOptimizer, SgdConfig};

use crate::optim::{AdaBeliefConfig, AdanConfig, DiffGradConfig};

/// One registry entry: name, default learning rate and constructor.
struct Entry {
    name: &'static str,
    lr: f64,
    build: fn() -> ModuleOptimizer,
}

fn entries() -> Vec<Entry> {
    vec![
        Entry {
            name: "adam",
            lr: 1e-2,
            build: || AdamConfig::new().init(),
        },
        Entry {
            name: "adamw",
            lr: 1e-2,
            build: || AdamWConfig::new().init(),
        },
        Entry {
            name: "sgd",
            lr: 0.1,
            build: || {
                SgdConfig::new()
                    .with_momentum(Some(burn::optim::momentum::MomentumConfig::new()))
                    .init()
            },
        },
        Entry {
            name: "adagrad",
            lr: 5e-2,
            build: || AdaGradConfig::new().with_epsilon(1e-10).init(),
        },
        Entry {
            name: "adan",
            lr: 2e-2,
            build: || AdanConfig::new().init(),
        },
        Entry {
            name: "diffgrad",
            lr: 2e-2,
            build: || DiffGradConfig::new().init(),
        },
        Entry {
            name: "adabelief",
            // The RAdam rectification scales the step by r_t ≈ 0.14 at step 45 (β2 = 0.999):
            // short runs need a larger nominal lr than Adam's.
            lr: 3e-2,
            build: || AdaBeliefConfig::new().init(),
        },
    ]
}

/// Names accepted by `--optimizer` (besides `all`).
pub fn optimizer_names() -> Vec<&'static str> {
    entries().iter().map(|e| e.name).collect()
}

/// The optimizer for a name with its default learning rate for the example models, or an error
/// listing the valid names.
pub fn build_optimizer(name: &str) -> Result<(ModuleOptimizer, f64), String> {
    entries()
        .into_iter()
        .find(|e| e.name == name)
        .map(|e| ((e.build)(), e.lr))
        .ok_or_else(|| {
            format!(
                "unknown optimizer `{name}`: expected one of {} or `all`",
                optimizer_names().join(", ")
            )
        })
}
