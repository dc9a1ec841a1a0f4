//! Hessian-vector products by central finite differences of gradients on the same batch.
//!
//! `H v ≈ (∇L(θ + r v) − ∇L(θ − r v)) / (2r)`, a second-order-accurate central difference
//! (Pearlmutter 1994 discusses it as the baseline for the exact R-operator, which needs double
//! backward that Burn lacks).
//!
//! **Step size.** [`StepSize::Auto`] (the default) uses `r = ∛ε_f32 · (1 + ‖θ‖) / ‖v‖` with
//! `∛ε_f32 ≈ 4.9e-3`: the perturbation `r v` is about `∛ε` relative to the parameters. Central
//! differences have truncation error `O(r²·‖∇³L‖·‖v‖³)` and rounding error
//! `O(ε_f32·‖∇L‖/r)`; balancing the two gives `r ∝ ∛ε`, with a relative error of about
//! `ε^(2/3) ≈ 2.4e-5` of `‖∇L‖/‖v‖` for a well-scaled problem. For a quadratic the truncation
//! error is exactly zero and only the rounding term remains.

use burn::module::Module;
use burn::optim::GradientsParams;

use super::directions::{lincomb, param_norm, perturbed};

/// `∛ε` for f32: the relative perturbation that balances truncation and rounding error.
pub const CBRT_F32_EPSILON: f64 = 4.921_566_601_151_848e-3;

/// How the finite-difference step `r` is chosen.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum StepSize {
    /// `r = ∛ε_f32 · (1 + ‖θ‖) / ‖v‖` (see the module docs).
    Auto,
    /// A fixed `r`, used as is.
    Fixed(f64),
}

/// The finite-difference step for direction norm `v_norm` at parameter norm `theta_norm`.
pub fn step_size(rule: StepSize, theta_norm: f64, v_norm: f64) -> f64 {
    match rule {
        StepSize::Fixed(r) => r,
        StepSize::Auto => CBRT_F32_EPSILON * (1.0 + theta_norm) / v_norm.max(f64::MIN_POSITIVE),
    }
}

/// `H v` at `module`'s parameters by a central difference of `grad` (see the [module docs](self)).
///
/// `grad` recomputes the loss on the **same batch** for the module it is given and returns its
/// gradients (`GradientsParams::from_grads(loss.backward(), module)`); it is called twice, at
/// `θ + r v` and `θ − r v`. Parameters without a direction are not perturbed; the result has an
/// entry for every parameter present in both gradients.
///
/// # Panics
/// If `v` is zero or not finite, or the step size is not finite and positive; the message says
/// which.
pub fn hvp<M, F>(module: &M, v: &GradientsParams, rule: StepSize, mut grad: F) -> GradientsParams
where
    M: Module,
    F: FnMut(&M) -> GradientsParams,
{
    let v_norm = super::directions::dot(module, v, v).sqrt();
    assert!(
        v_norm.is_finite() && v_norm > 0.0,
        "hvp: the direction must be finite and non-zero, its norm is {v_norm}"
    );
    let r = step_size(rule, param_norm(module), v_norm);
    assert!(
        r.is_finite() && r > 0.0,
        "hvp: the finite-difference step must be finite and > 0, got {r}"
    );
    let plus = grad(&perturbed(module, v, r));
    let minus = grad(&perturbed(module, v, -r));
    lincomb(module, 0.5 / r, &plus, -0.5 / r, &minus)
}
