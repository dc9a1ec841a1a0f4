#![warn(missing_docs)]

//! # firebox-models
//!
//! Small example models and data sets for exercising optimizers on Burn 0.22, on every backend.
//!
//! - [`data`]: the UCI 8x8 handwritten digits embedded in the crate ([`data::load_digits`]), an
//!   MNIST IDX reader ([`data::load_mnist`]), a seeded train/test split and batching.
//! - [`Mlp`] and [`Cnn`]: classifiers for 8x8 or 28x28 grey-scale images, trainable through
//!   burn-train's `Learner` (they implement `TrainStep` and `InferenceStep`).
//! - [`ResMlp`]: a deep residual MLP (8 blocks of one shape), the base model of the adapter
//!   example.
//! - [`train`]: a plain training loop and evaluation, and one-call runs through `Learner`.
//! - [`denoiser`]: a time-conditioned residual MLP ε-denoiser ([`DenoiserMlp`]) with the DDPM
//!   training loss, for the diffusion samplers of `firebox-diffusion`.
//! - [`lm`]: a tiny character-level transformer language model ([`CharLm`]) and the shipped Tiny
//!   Shakespeare text (public domain) with a character vocabulary and seeded window batches.
//!
//! ```no_run
//! use burn::optim::AdamConfig;
//! use burn::tensor::Device;
//! use firebox_models::{MlpConfig, data::digits_split, train};
//!
//! let device = Device::flex().autodiff();
//! let (train_set, test_set) = digits_split(42);
//! let mut model = MlpConfig::for_images(8, 8).init(&device);
//! let mut optim = AdamConfig::new().init();
//! for epoch in 0..10 {
//!     let batches = train_set.batches(32, Some(epoch), &device);
//!     let (trained, loss) = train::train_epoch(model, &mut optim, 1e-2, batches);
//!     model = trained;
//!     println!("epoch {epoch}: loss {loss:.3}");
//! }
//! println!("test accuracy {:.3}", train::evaluate(&model, &test_set));
//! ```

mod classifier;
pub mod cnn;
pub mod data;
pub mod denoiser;
pub mod lm;
pub mod mlp;
pub mod res_mlp;
pub mod train;

pub use classifier::{Classifier, classification_output};
pub use cnn::{Cnn, CnnConfig};
pub use denoiser::{DenoiserMlp, DenoiserMlpConfig};
pub use lm::{CharLm, CharLmConfig};
pub use mlp::{Mlp, MlpConfig};
pub use res_mlp::{ResMlp, ResMlpConfig};
