//! Data sets for the example models: the shipped 8x8 digits and MNIST's IDX files.
//!
//! - [`classification`]: [`ClassificationData`], images and labels in memory, with a seeded
//!   shuffle and train/test split.
//! - [`shuffle`]: the seeded SplitMix64 shuffle behind it (no `rand` dependency).
//! - [`digits`]: the UCI 8x8 digits embedded in the crate.
//! - [`idx`]: an MNIST IDX reader (plain or gzip'd files).
//! - [`batcher`]: [`ClassificationBatch`] tensors, and a Burn `Batcher` for data loaders.

pub mod batcher;
pub mod classification;
pub mod digits;
pub mod idx;
pub mod shuffle;

pub use batcher::{ClassificationBatch, ClassificationBatcher};
pub use classification::{ClassificationData, ClassificationItem};
pub use digits::{digits_split, load_digits};
pub use idx::{IdxError, Mnist, load_mnist};
