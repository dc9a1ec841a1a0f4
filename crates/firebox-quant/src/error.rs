//! The crate's error type for the Burn-tensor passes: every variant names the layer and the value.
//! (The host kernels [`dgq`](crate::dgq), [`gguf`](crate::gguf) and
//! [`hawq::allocation`](crate::hawq::allocation) have their own, equally specific, errors.)

use std::fmt;

/// Why a quantization pass refused its input. The model is never half-modified: every check runs
/// before any parameter is replaced.
#[derive(Clone, Debug, PartialEq)]
pub enum QuantError {
    /// A bit width outside what the scheme supports (`2..=8` for integer grids).
    UnsupportedBits {
        /// The layer (or `"<tensor>"` when quantizing a bare tensor).
        layer: String,
        /// The bit width asked for.
        bits: u32,
        /// What is supported, in words.
        supported: String,
    },
    /// A group size that is zero or does not divide the grouped dimension.
    GroupSize {
        /// The layer.
        layer: String,
        /// The group size.
        group: usize,
        /// The axis grouped along.
        axis: usize,
        /// That axis' extent.
        dim: usize,
    },
    /// An axis that the tensor does not have.
    Axis {
        /// The layer.
        layer: String,
        /// The axis asked for.
        axis: usize,
        /// The tensor's rank.
        rank: usize,
    },
    /// A percentile outside `(0, 100]`, an empty MSE grid, or another bad calibration option.
    Calibration {
        /// The layer.
        layer: String,
        /// What is wrong.
        message: String,
    },
    /// A tensor holding NaN or ±∞ where finite values are required.
    NonFinite {
        /// The layer.
        layer: String,
        /// Which tensor (weights, activations).
        what: String,
    },
    /// Layer selection matched nothing, or a pattern does not compile.
    Targets {
        /// What went wrong, with the available layers.
        message: String,
    },
    /// A model-size budget that no allocation can meet, or another allocation problem.
    Budget {
        /// What went wrong, with the numbers.
        message: String,
    },
    /// A shape mismatch between tensors that must agree.
    Shape {
        /// The layer.
        layer: String,
        /// What disagrees.
        message: String,
    },
}

impl fmt::Display for QuantError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QuantError::UnsupportedBits {
                layer,
                bits,
                supported,
            } => write!(
                f,
                "layer `{layer}`: {bits}-bit quantization is not supported ({supported})"
            ),
            QuantError::GroupSize {
                layer,
                group,
                axis,
                dim,
            } => write!(
                f,
                "layer `{layer}`: group size {group} does not divide dimension {axis} of size {dim}"
            ),
            QuantError::Axis { layer, axis, rank } => write!(
                f,
                "layer `{layer}`: axis {axis} does not exist in a rank-{rank} tensor"
            ),
            QuantError::Calibration { layer, message } => {
                write!(f, "layer `{layer}`: {message}")
            }
            QuantError::NonFinite { layer, what } => {
                write!(f, "layer `{layer}`: {what} contain NaN or infinite values")
            }
            QuantError::Targets { message } => f.write_str(message),
            QuantError::Budget { message } => f.write_str(message),
            QuantError::Shape { layer, message } => write!(f, "layer `{layer}`: {message}"),
        }
    }
}

impl std::error::Error for QuantError {}
