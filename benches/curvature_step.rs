//! Amortised cost of a training step with the curvature-aware optimizers against Burn's Adam on
//! the same model, batch and backend, and the memory their state takes per parameter.
//!
//! One measured iteration is 10 full training steps (forward, backward, optimizer step) on a
//! fixed digits batch, so a Hessian refresh every 10 steps is counted exactly once:
//! - `adam`: Burn's `AdamConfig` (the baseline).
//! - `sophia_g`: Sophia-G, GNB refresh every 10 steps (one extra forward + backward on sampled
//!   labels).
//! - `sophia_h`, `adahessian`: a Hutchinson refresh every 10 steps with one probe (two extra
//!   gradient evaluations for the central finite-difference Hessian-vector product).
//! - `mfac`: M-FAC with a 32-gradient window (no refresh; O(d·m) per step).
//!
//! ```text
//! cargo bench --bench curvature_step                      # flex
//! cargo bench --features wgpu --bench curvature_step      # flex + wgpu
//! ```
//! After criterion's report, a summary table prints each optimizer's mean step time, its ratio to
//! Adam (issue #3's goals: Sophia-G ≤ 1.15x, AdaHessian / Sophia-H with interval 10 ≤ 1.3x) and its
//! state size in bytes per parameter (the serialized state divided by the parameter count).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use burn::module::Module;
use burn::optim::AdamConfig;
use burn::tensor::Device;
use criterion::{BenchmarkId, Criterion};
use firebox::device::{Availability, BackendName, probe};
use firebox::models::data::{ClassificationBatch, digits_split};
use firebox::models::{Mlp, MlpConfig};
use firebox::optim::adahessian::AdaHessianConfig;
use firebox::optim::mfac::MfacConfig;
use firebox::optim::record::ModuleState;
use firebox::optim::sophia::{SophiaGConfig, SophiaHConfig};
use firebox::trainer::TrainOptimizer;

/// Steps per measured iteration: one Hessian refresh interval.
const WINDOW: usize = 10;
/// Hidden width of the benchmark MLP (64 → HIDDEN → 10 ≈ 77k parameters).
const HIDDEN: usize = 1024;
/// Images per batch.
const BATCH: usize = 128;

fn optimizers() -> Vec<(&'static str, TrainOptimizer)> {
    vec![
        ("adam", TrainOptimizer::PerTensor(AdamConfig::new().init())),
        (
            "sophia_g",
            TrainOptimizer::SophiaG {
                optimizer: SophiaGConfig::new().init(),
                interval: WINDOW,
                steps: 0,
            },
        ),
        (
            "sophia_h",
            TrainOptimizer::SophiaH(SophiaHConfig::new().with_update_interval(WINDOW).init()),
        ),
        (
            "adahessian",
            TrainOptimizer::AdaHessian(
                AdaHessianConfig::new()
                    .with_update_interval(WINDOW)
                    .with_num_samples(1)
                    .init(),
            ),
        ),
        (
            "mfac",
            TrainOptimizer::Mfac(MfacConfig::new().with_ngrads(32).with_damp(1e-2).init()),
        ),
    ]
}

/// Serialized state size in bytes.
fn state_bytes(optimizer: &TrainOptimizer) -> usize {
    match optimizer {
        TrainOptimizer::PerTensor(o) => o.into_bytes().map(|b| b.len()).unwrap_or(0),
        TrainOptimizer::SophiaG { optimizer, .. } => record_len(optimizer),
        TrainOptimizer::SophiaH(o) => record_len(o),
        TrainOptimizer::AdaHessian(o) => record_len(o),
        TrainOptimizer::Mfac(o) => record_len(o),
        TrainOptimizer::AdaGradNorm(o) => record_len(o),
    }
}

fn record_len(optimizer: &impl ModuleState) -> usize {
    optimizer
        .to_record()
        .into_bytes()
        .map(|b| b.len())
        .unwrap_or(0)
}

/// Mean time per training step and state bytes per parameter, by optimizer.
type Summary = BTreeMap<&'static str, (Duration, f64)>;

fn bench_backend(c: &mut Criterion, backend: BackendName, device: Device, summary: &mut Summary) {
    let device = device.autodiff();
    let (train, _) = digits_split(1);
    let batch: ClassificationBatch = train
        .batches(BATCH, None, &device)
        .next()
        .expect("a digits batch");
    let mut group = c.benchmark_group(format!("curvature_step/{backend}"));
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(3));
    for (name, optimizer) in optimizers() {
        device.seed(3);
        let model = MlpConfig::for_images(train.height, train.width)
            .with_hidden(HIDDEN)
            .init(&device);
        let params = model.num_params();
        let initial = model.clone();
        let state = RefCell::new((Some(model), optimizer));
        let timing = RefCell::new(Vec::<Duration>::new());
        group.bench_function(BenchmarkId::new(name, WINDOW), |b| {
            b.iter_custom(|iterations| {
                let mut state = state.borrow_mut();
                let (model, optimizer) = &mut *state;
                let start = Instant::now();
                for _ in 0..iterations {
                    // Every window restarts from the initial weights (the optimizer state carries
                    // on): thousands of steps on one batch would overfit it until the gradients
                    // underflow to subnormals, which makes CPU matmuls many times slower and
                    // would time the arithmetic of subnormals rather than the optimizer.
                    *model = Some(initial.clone());
                    for _ in 0..WINDOW {
                        let current: Mlp = model.take().expect("model");
                        let (next, _) = optimizer.step(1e-3, current, &batch);
                        *model = Some(next);
                    }
                    device.sync().expect("device sync");
                }
                let elapsed = start.elapsed();
                timing.borrow_mut().push(elapsed / iterations.max(1) as u32);
                elapsed
            })
        });
        // The median over criterion's calls (warm-up included, so the first compilation and
        // autotuning on wgpu do not count), per step.
        let mut per_window = timing.into_inner();
        per_window.sort();
        let per_step = per_window
            .get(per_window.len() / 2)
            .map_or(Duration::ZERO, |d| *d / WINDOW as u32);
        let bytes = state_bytes(&state.borrow().1) as f64 / params as f64;
        summary.insert(name, (per_step, bytes));
    }
    group.finish();
}

fn print_summary(backend: BackendName, summary: &Summary) {
    // Nothing to report when a criterion filter skipped the baseline.
    let Some(&(adam, _)) = summary.get("adam").filter(|(time, _)| !time.is_zero()) else {
        return;
    };
    println!(
        "\ncurvature_step on {backend}: mean training step, {BATCH} digits, MLP 64-{HIDDEN}-10"
    );
    println!("| optimizer | step (median) | ratio to adam | state bytes/param |");
    println!("|---|---|---|---|");
    for name in ["adam", "sophia_g", "sophia_h", "adahessian", "mfac"] {
        if let Some((time, bytes)) = summary.get(name) {
            println!(
                "| {name} | {:.3} ms | {:.2}x | {bytes:.1} |",
                time.as_secs_f64() * 1e3,
                time.as_secs_f64() / adam.as_secs_f64()
            );
        }
    }
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    let mut summaries = Vec::new();
    for backend in [BackendName::Flex, BackendName::Wgpu] {
        match probe(backend) {
            Availability::Ready(device, adapter) => {
                eprintln!("curvature_step: {backend} on {adapter}");
                let mut summary = Summary::new();
                bench_backend(&mut criterion, backend, device, &mut summary);
                summaries.push((backend, summary));
            }
            Availability::Unavailable(reason) => {
                eprintln!("curvature_step: SKIP {backend}: {reason}")
            }
        }
    }
    criterion.final_summary();
    for (backend, summary) in &summaries {
        print_summary(*backend, summary);
    }
}
