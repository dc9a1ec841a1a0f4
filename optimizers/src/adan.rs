//! Adan: adaptive Nesterov momentum, as shipped by Burn 0.22.1.
//!
//! Xie, Zhou, Li, Lin, Yan, *Adan: Adaptive Nesterov Momentum Algorithm for Faster Optimizing
//! Deep Models*, TPAMI 2024 (arXiv:2208.06677), Algorithm 1.
//!
//! Burn's [`AdanConfig`] matches the reference implementation (sail-sg/Adan@2c65bea,
//! `_single_tensor_adan`) on the public parity fixtures (`cargo run --release --example parity --
//! tests/fixtures/optim/adan__*.json`), so firebox re-exports it instead of writing a second one.
//! Its `beta_1, beta_2, beta_3` are the reference's EMA *decays* (0.98, 0.92, 0.99); the paper's β
//! are one minus these. What Burn lacks, firebox adds as optimizer-agnostic utilities:
//!
//! - **global-norm clipping** (`max_grad_norm` in the reference): [`clip_grad_norm`] over all
//!   parameters before the step, with the reference's `N + eps` denominator via
//!   [`GlobalNormClip::with_eps`]. Burn's `GradientClippingConfig::Norm` clips each tensor by its
//!   own norm, which is a different algorithm.
//! - **restart** (`Adan.restart_opt()`): [`restart`] drops all state, so the next step runs as
//!   step 1 (bias corrections start again, the gradient difference is 0).
//!
//! Differences that remain (below the fixtures' tolerance): Burn counts steps per tensor rather
//! than per group (identical when every parameter gets a gradient every step) and computes the
//! bias corrections `beta.powi(t)` in f32.
//!
//! ```no_run
//! use firebox_optim::{AdanConfig, clip::GlobalNormClip, restart::restart};
//! let mut optim = AdanConfig::new().with_weight_decay(0.02).init();
//! let clip = GlobalNormClip::new(5.0).with_eps(1e-8); // Adan's max_grad_norm = 5
//! // each step: clip.apply(&model, &mut grads); model = optim.step(lr, model, grads);
//! // on a loss spike: optim = restart(optim);
//! # let _ = (&mut optim, clip);
//! ```

pub use burn::optim::{Adan, AdanConfig, AdanState};

#[allow(unused_imports)] // linked from the docs above
use crate::{clip::GlobalNormClip, clip::clip_grad_norm, restart::restart};
