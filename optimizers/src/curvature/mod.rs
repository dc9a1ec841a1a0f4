//! Curvature information without double backward (issue #3, in progress).
//!
//! Burn's autodiff is first order, so Hessian information comes from **gradients evaluated twice on
//! the same batch**: a Hessian-vector product is a central finite difference of gradients,
//!
//! ```text
//! H v ≈ (∇L(θ + r v) − ∇L(θ − r v)) / (2 r)
//! ```
//!
//! exact for a quadratic up to f32 rounding, with an O(r²·‖∇³L‖) truncation error otherwise
//! ([`hvp`]). The user supplies the gradient as a closure `FnMut(&M) -> GradientsParams` that
//! recomputes the loss and its gradient **on the current batch**, for the module it is given. The
//! closure must be a pure function of the parameters: it must not update batch-norm running
//! statistics (evaluate such layers in inference mode or freeze them) and must not redraw dropout
//! masks (disable dropout, or reseed the device identically inside the closure), otherwise the two
//! gradients differ by more than the curvature.
//!
//! - [`directions`]: parameter-shaped direction sets (Rademacher probes, dot products, axpy).
//! - [`hvp`]: the finite-difference Hessian-vector product and its step-size rule.
//! - [`hutchinson`]: the Hutchinson diagonal estimate `diag(H) ≈ E[z ⊙ Hz]`.
//! - [`gnb`]: the Gauss-Newton-Bartlett estimator for softmax/cross-entropy heads (Sophia-G).
//!
//! Still to come (issue #3): per-parameter traces and the optimizers built on these estimators
//! (AdaHessian, Sophia-G/H).

pub mod directions;
pub mod gnb;
pub mod hutchinson;
pub mod hvp;
