//! Validation of optimizer hyperparameters, shared by every config in this crate.

use std::fmt;

/// A hyperparameter outside its valid range, named by optimizer and field.
#[derive(Clone, Debug, PartialEq)]
pub struct InvalidConfig {
    /// The optimizer whose config was rejected (e.g. `"AdaBelief"`).
    pub optimizer: &'static str,
    /// The config field (e.g. `"beta_2"`).
    pub field: &'static str,
    /// The rejected value, formatted.
    pub value: String,
    /// What the field must be (e.g. `"in [0, 1)"`).
    pub expected: &'static str,
}

impl fmt::Display for InvalidConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: invalid `{}` = {}: must be {}",
            self.optimizer, self.field, self.value, self.expected
        )
    }
}

impl std::error::Error for InvalidConfig {}

/// Checks of single fields; each returns the error that names the field.
pub(crate) struct Check(pub &'static str);

impl Check {
    fn err(&self, field: &'static str, value: f64, expected: &'static str) -> InvalidConfig {
        InvalidConfig {
            optimizer: self.0,
            field,
            value: format!("{value:e}"),
            expected,
        }
    }

    /// An exponential-moving-average decay: `0 <= beta < 1`.
    pub fn beta(&self, field: &'static str, value: f32) -> Result<(), InvalidConfig> {
        if (0.0..1.0).contains(&value) {
            Ok(())
        } else {
            Err(self.err(field, value as f64, "in [0, 1)"))
        }
    }

    /// A strictly positive finite value (eps, damping).
    pub fn positive(&self, field: &'static str, value: f64) -> Result<(), InvalidConfig> {
        if value.is_finite() && value > 0.0 {
            Ok(())
        } else {
            Err(self.err(field, value, "finite and > 0"))
        }
    }

    /// A non-negative finite value (weight decay, lr decay, initial accumulator).
    pub fn non_negative(&self, field: &'static str, value: f64) -> Result<(), InvalidConfig> {
        if value.is_finite() && value >= 0.0 {
            Ok(())
        } else {
            Err(self.err(field, value, "finite and >= 0"))
        }
    }
}

/// Panics unless the learning rate given to a step is finite; the message names the optimizer.
pub(crate) fn assert_finite_lr(optimizer: &str, lr: f64) {
    assert!(
        lr.is_finite(),
        "{optimizer}: the learning rate must be finite, got {lr}"
    );
}

/// Generates a config's `build`, `try_init` and `init` from its `try_build`, so every optimizer
/// config validates the same way and offers the same constructors as Burn's configs.
macro_rules! config_constructors {
    ($config:ty, $optim:ty) => {
        impl $config {
            /// Builds the per-parameter optimizer (for `ModuleOptimizer::with_group`).
            ///
            /// # Panics
            /// If a hyperparameter is invalid; the message names the field.
            pub fn build(&self) -> $optim {
                self.try_build().unwrap_or_else(|e| panic!("{e}"))
            }

            /// The whole-module optimizer, or an error naming the first invalid field.
            pub fn try_init(
                &self,
            ) -> Result<burn::optim::ModuleOptimizer, $crate::validate::InvalidConfig> {
                self.try_build().map(burn::optim::ModuleOptimizer::from)
            }

            /// The whole-module optimizer.
            ///
            /// # Panics
            /// If a hyperparameter is invalid; the message names the field.
            pub fn init(&self) -> burn::optim::ModuleOptimizer {
                burn::optim::ModuleOptimizer::from(self.build())
            }
        }
    };
}
pub(crate) use config_constructors;
