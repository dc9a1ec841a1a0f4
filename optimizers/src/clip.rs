//! Global-norm gradient clipping over every parameter of a module.
//!
//! Like `torch.nn.utils.clip_grad_norm_` and Adan's `max_grad_norm`: the L2 norm
//! `N = sqrt(Σ_params Σ g²)` is taken over **all** gradients at once and every gradient is scaled
//! by `c = min(max_norm / (N + eps), 1)`. Burn's `GradientClippingConfig::Norm` clips each tensor by
//! its own norm, a different algorithm (it changes the direction of the whole update).
//!
//! Use it between `backward` and `ModuleOptimizer::step`, with any optimizer:
//!
//! ```no_run
//! # use burn::optim::{GradientsParams, ModuleOptimizer};
//! # fn f<M: burn::module::Module>(model: M, mut grads: GradientsParams, optim: &mut ModuleOptimizer) -> M {
//! let norm = firebox_optim::clip::clip_grad_norm(&model, &mut grads, 1.0);
//! # let _ = norm;
//! optim.step(1e-3, model, grads)
//! # }
//! ```

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::Tensor;

use crate::host::host_sum;

/// `eps` of `torch.nn.utils.clip_grad_norm_`, added to the norm in the clipping coefficient.
pub const TORCH_CLIP_EPS: f64 = 1e-6;

/// Global-norm clipping settings: clip to `max_norm` with `c = min(max_norm/(N + eps), 1)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GlobalNormClip {
    /// The largest allowed global L2 norm.
    pub max_norm: f64,
    /// Added to the norm in the coefficient's denominator (PyTorch 1e-6; Adan uses its own eps).
    pub eps: f64,
}

impl GlobalNormClip {
    /// Clipping to `max_norm` with PyTorch's `eps` (1e-6).
    ///
    /// # Panics
    /// If `max_norm` is not finite and > 0.
    pub fn new(max_norm: f64) -> Self {
        assert!(
            max_norm.is_finite() && max_norm > 0.0,
            "GlobalNormClip: `max_norm` must be finite and > 0, got {max_norm}"
        );
        Self {
            max_norm,
            eps: TORCH_CLIP_EPS,
        }
    }

    /// Replaces the `eps` added to the norm (Adan's reference uses the optimizer's eps, 1e-8).
    ///
    /// # Panics
    /// If `eps` is negative or not finite.
    pub fn with_eps(mut self, eps: f64) -> Self {
        assert!(
            eps.is_finite() && eps >= 0.0,
            "GlobalNormClip: `eps` must be finite and >= 0, got {eps}"
        );
        self.eps = eps;
        self
    }

    /// The coefficient `min(max_norm / (norm + eps), 1)` that multiplies every gradient.
    pub fn coefficient(&self, norm: f64) -> f64 {
        (self.max_norm / (norm + self.eps)).min(1.0)
    }

    /// Computes the global norm of `grads` over the parameters of `module`, scales every gradient
    /// in place by [`coefficient`](Self::coefficient) when it is below 1, and returns the norm
    /// before clipping.
    ///
    /// A non-finite norm leaves the gradients untouched and is returned as is, so the caller can
    /// skip the step ([`crate::check::find_non_finite_grad`] names the parameter at fault).
    pub fn apply<M: Module>(&self, module: &M, grads: &mut GradientsParams) -> f64 {
        let norm = grad_norm(module, grads);
        let coefficient = self.coefficient(norm);
        if norm.is_finite() && coefficient < 1.0 {
            scale_grads(module, grads, coefficient);
        }
        norm
    }
}

/// Clips `grads` to global norm `max_norm` (PyTorch's `eps` = 1e-6) and returns the norm before
/// clipping; see [`GlobalNormClip::apply`].
pub fn clip_grad_norm<M: Module>(module: &M, grads: &mut GradientsParams, max_norm: f64) -> f64 {
    GlobalNormClip::new(max_norm).apply(module, grads)
}

/// The global L2 norm of the gradients of `module`'s float parameters (parameters without a
/// gradient are skipped). Each tensor's sum of squares is reduced on its device; the sum over
/// tensors is done on the host in f64, with a single device read-back.
pub fn grad_norm<M: Module>(module: &M, grads: &GradientsParams) -> f64 {
    let mut visitor = SquaredSums {
        grads,
        sums: Vec::new(),
    };
    module.visit(&mut visitor);
    host_sum(visitor.sums).sqrt()
}

/// Multiplies the gradient of every float parameter of `module` by `factor`.
pub fn scale_grads<M: Module>(module: &M, grads: &mut GradientsParams, factor: f64) {
    module.visit(&mut Scale { grads, factor });
}

struct SquaredSums<'a> {
    grads: &'a GradientsParams,
    sums: Vec<Tensor<1>>,
}

impl ModuleVisitor for SquaredSums<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(grad) = self.grads.get::<D>(param.id) {
            self.sums.push(grad.square().sum());
        }
    }
}

struct Scale<'a> {
    grads: &'a mut GradientsParams,
    factor: f64,
}

impl ModuleVisitor for Scale<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(grad) = self.grads.remove::<D>(param.id) {
            self.grads.register(param.id, grad.mul_scalar(self.factor));
        }
    }
}
