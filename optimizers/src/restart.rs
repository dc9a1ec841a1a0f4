//! Restarting an optimizer: dropping the state of every parameter.
//!
//! Adan's reference exposes `restart_opt()`, which zeroes the moments and the step count so the
//! next step runs as step 1 (bias corrections start again, the gradient difference is 0); the
//! paper (Xie et al. 2022, §4.3 "restart") triggers it on a loss condition chosen by the caller.
//! For a [`ModuleOptimizer`] the equivalent is to forget every parameter's state, which this does
//! for any optimizer while keeping its parameter groups and gradient clipping.

use burn::optim::{ModuleOptimizer, OptimizerRecord};

/// Returns `optimizer` with the state of every parameter dropped; parameters are not touched.
/// The next step of each parameter is its first.
pub fn restart(optimizer: ModuleOptimizer) -> ModuleOptimizer {
    optimizer.load_record(OptimizerRecord::default())
}
