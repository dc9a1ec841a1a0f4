//! # firebox
//!
//! Research optimizers, quantization passes, parameter-efficient adapters and diffusion samplers
//! for [Burn](https://burn.dev), written once against Burn's tensor API so they run on every
//! backend. This umbrella crate re-exports the member crates and hosts the examples and benches.
//!
//! - [`optim`]: diffGrad, AdaBelief, Adan extras (global-norm clipping, restart), AdaGrad with
//!   PyTorch's initial accumulator ([`firebox_optim`]).
//! - [`adapters`]: LoRA (peft-exact) and MoS for any Burn model ([`firebox_adapters`]).
//! - [`quant`]: PTQ, QAT, DGQ, HAWQ-V2, Double Rounding and GGUF blocks for any Burn model ([`firebox_quant`]).
//! - [`diffusion`]: noise schedules, timestep grids and samplers ([`firebox_diffusion`]).
//! - [`models`]: example models and data loaders ([`firebox_models`]).
//! - [`registry`] and [`trainer`]: every optimizer by name, and one training step for each.
//! - [`device`]: run-time choice of the backend among those compiled in.
//! - [`fixtures`]: the parity-fixture reader and replayer behind `examples/parity.rs`.

#![warn(missing_docs)]

pub mod device;

pub use firebox_adapters as adapters;
pub use firebox_diffusion as diffusion;
pub use firebox_models as models;
pub use firebox_optim as optim;
pub use firebox_quant as quant;
pub mod fixtures;
pub mod registry;
pub mod trainer;
