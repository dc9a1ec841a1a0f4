//! A tiny character-level transformer language model and its text data.
//!
//! - [`text`]: the shipped Tiny Shakespeare prefix ([`load_shakespeare`], public domain, via
//!   char-rnn), a character vocabulary ([`CharVocab`]), a contiguous, deterministic train/validation
//!   split ([`CharCorpus`]) and batches of context windows drawn with a seeded RNG
//!   ([`WindowSampler`], [`spaced_windows`] for a fixed validation set).
//! - [`model`]: [`CharLm`], a GPT-style decoder (token + position embeddings, pre-norm causal
//!   self-attention blocks, a linear head) with [`CharLm::loss`] and, for Sophia-G's
//!   Gauss-Newton-Bartlett Hessian estimate, [`CharLm::sampled_loss`] on labels drawn from its own
//!   logits.
//!
//! ```no_run
//! use burn::optim::{AdamWConfig, GradientsParams};
//! use burn::tensor::Device;
//! use firebox_models::lm::{CharLmConfig, WindowSampler, shakespeare_corpus};
//!
//! let device = Device::flex().autodiff();
//! let corpus = shakespeare_corpus();
//! device.seed(42);
//! let mut model = CharLmConfig::new(corpus.vocab.len(), 64).init(&device);
//! let mut sampler = WindowSampler::new(&corpus.train, 64, 42).unwrap();
//! let mut optim = AdamWConfig::new().init();
//! for step in 0..100 {
//!     let batch = sampler.next_batch(32, &device);
//!     let loss = model.loss(&batch);
//!     println!("step {step}: loss {:.3}", loss.clone().into_scalar::<f32>());
//!     let grads = GradientsParams::from_grads(loss.backward(), &model);
//!     model = optim.step(3e-3, model, grads);
//! }
//! ```

pub mod model;
pub mod text;

pub use model::{CharLm, CharLmConfig, cross_entropy};
pub use text::{
    CharCorpus, CharVocab, LmBatch, WindowSampler, load_shakespeare, shakespeare_corpus,
    spaced_windows,
};
