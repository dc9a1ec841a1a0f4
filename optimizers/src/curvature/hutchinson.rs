//! Hutchinson's estimator of the Hessian diagonal and of per-parameter traces.
//!
//! For Rademacher `z` (independent ±1 entries), `E[z ⊙ Hz] = diag(H)` and `E[zᵀHz] = tr(H)`
//! (Hutchinson 1989; Bekas, Kokiopoulou & Saad 2007 for the diagonal). With `n` probes the
//! estimate is the mean over probes. For a separable objective (diagonal `H`) every probe gives
//! the exact diagonal, since `z_i² = 1`. `Hz` comes from [`hvp`](super::hvp::hvp).

use burn::module::Module;
use burn::optim::GradientsParams;

use super::directions::{hadamard, lincomb, rademacher};
use super::hvp::{StepSize, hvp};

/// The mean of `z ⊙ Hz` over `probes` Rademacher probes: an unbiased estimate of `diag(H)`,
/// one tensor per trainable parameter. Probes are drawn from the device RNG (seed it with
/// `Device::seed` for reproducibility). `grad` is as in [`hvp`].
///
/// # Panics
/// If `probes` is 0.
pub fn hutchinson_diagonal<M, F>(
    module: &M,
    probes: usize,
    rule: StepSize,
    mut grad: F,
) -> GradientsParams
where
    M: Module,
    F: FnMut(&M) -> GradientsParams,
{
    assert!(
        probes > 0,
        "hutchinson_diagonal: `probes` must be at least 1"
    );
    let mut sum: Option<GradientsParams> = None;
    for _ in 0..probes {
        let z = rademacher(module);
        let hz = hvp(module, &z, rule, &mut grad);
        let sample = hadamard(module, &z, &hz);
        sum = Some(match sum {
            None => sample,
            Some(acc) => lincomb(module, 1.0, &acc, 1.0, &sample),
        });
    }
    let sum = sum.expect("at least one probe");
    lincomb(module, 1.0 / probes as f64, &sum, 0.0, &sum)
}
