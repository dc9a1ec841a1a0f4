//! # firebox-optim
//!
//! Research optimizers for [Burn](https://burn.dev) 0.22.1, each a plain
//! [`burn::optim::Optimizer`] so it drops into [`ModuleOptimizer`](burn::optim::ModuleOptimizer),
//! burn-train's `Learner`, parameter groups (`ModuleOptimizer::with_group`), learning-rate
//! schedulers and burnpack checkpoints unchanged.
//!
//! | optimizer | module | reference |
//! |---|---|---|
//! | diffGrad | [`diffgrad`] | Dubey et al. 2019, official `diffGrad_v2.py` |
//! | AdaBelief | [`adabelief`] | Zhuang et al. 2020, `adabelief-pytorch==0.2.1` |
//! | Adan | [`adan`] (Burn's `AdanConfig`, re-exported) + [`clip`] + [`restart`] | Xie et al. 2022, sail-sg/Adan |
//! | AdaGrad | Burn's `AdaGradConfig`; [`adagrad_init`] adds PyTorch's initial accumulator | Duchi et al. 2011 |
//! | Adam, AdamW, Adan as drop-ins for Burn's | [`fused`] (`FusedAdamConfig`, `FusedAdamWConfig`, `FusedAdanConfig`: Burn's fields, defaults and state types) | Kingma & Ba 2015; Loshchilov & Hutter 2019; Xie et al. 2022 |
//!
//! diffGrad, AdaBelief, `AdaGradInit` and the three drop-ins run their update as one fused loop
//! over the raw buffers on the CPU backends (flex, ndarray), with rayon across chunks, and as
//! tensor ops elsewhere, with the same numbers; see [`fused`]. (Burn's own `AdaGrad` and `Adan`,
//! re-exported here, keep Burn's tensor-op step; `AdaGradInitConfig` with its default
//! accumulator 0 is the fused AdaGrad.)
//!
//! Whole-module optimizers (they need more than one tensor's gradient: Hessian estimates, a
//! gradient window, a global norm), each with `step(lr, module, grads, …)` and
//! [`ModuleState`] save/load:
//!
//! | optimizer | module | reference |
//! |---|---|---|
//! | AdaHessian | [`adahessian`] | Yao et al. 2021, amirgholami/adahessian |
//! | Sophia-G, Sophia-H | [`sophia`] | Liu et al. 2024, Liuhong99/Sophia; levanter |
//! | M-FAC | [`mfac`] | Frantar et al. 2021, IST-DASLab/M-FAC `optim.py` |
//! | AdaGrad-Norm (global and per-row) | [`adagrad_norm`] | Ward et al. 2020; timlautk/AdAdaGrad `adagradnorm.py` |
//! | AdAdaGrad adaptive batch size (norm, inner-product, orthogonality tests) | [`adadagrad`] | Lau et al. 2024, timlautk/AdAdaGrad `tests.py`, `main.py` |
//!
//! Utilities that work with any optimizer:
//! - [`clip::clip_grad_norm`]: global-norm gradient clipping over all parameters, like
//!   `torch.nn.utils.clip_grad_norm_` (Burn only clips each tensor by its own norm).
//! - [`restart::restart`]: drops every parameter's state (Adan's `restart_opt`).
//! - [`check::find_non_finite_grad`]: names the first parameter whose gradient holds NaN/Inf.
//! - [`checkpoint::save_atomic`]: writes optimizer state so a crash never leaves a torn file.
//! - [`record::ModuleState`]: atomic save and eager load of the module-level optimizers (AdaHessian,
//!   Sophia, M-FAC), in the burnpack layout of Burn's optimizer records.
//! - [`curvature`]: Hessian information without double backward (finite-difference
//!   Hessian-vector products, Hutchinson's diagonal, the Gauss-Newton-Bartlett estimator).
//!
//! Hyperparameters are validated when the optimizer is built: `try_init` returns an
//! [`InvalidConfig`] naming the field, `init` panics with the same message.
#![warn(missing_docs)]

pub mod adabelief;
pub mod adadagrad;
pub mod adagrad_init;
pub mod adagrad_norm;
pub mod adahessian;
pub mod adan;
pub mod check;
pub mod checkpoint;
pub mod clip;
pub mod curvature;
pub mod diffgrad;
pub mod fused;
mod host;
pub mod mfac;
mod module_state;
pub mod record;
pub mod restart;
pub mod sophia;
mod validate;

pub use adabelief::{AdaBelief, AdaBeliefConfig, AdaBeliefState};
pub use adagrad_init::{AdaGradInit, AdaGradInitConfig, AdaGradInitState};
pub use adan::{Adan, AdanConfig, AdanState};
pub use burn::optim::{AdaGrad, AdaGradConfig, AdaGradState};
pub use diffgrad::{DiffGrad, DiffGradConfig, DiffGradState};
pub use mfac::{Mfac, MfacConfig};
pub use record::{ModuleState, StateRecord};
pub use validate::InvalidConfig;

// `#[derive(RecordState)]` refers to these through `crate::`; they are Burn's own items.
#[doc(hidden)]
pub use burn::optim::{RecordState, StateSink, StateSource, join_index, join_path};
