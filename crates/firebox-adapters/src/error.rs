//! The one error type of the crate: every variant names the layer, adapter or file concerned.

use std::fmt;

/// Why attaching, switching, merging, saving or loading adapters failed.
///
/// The model passed in is never half-modified: every check runs before the model is mapped.
#[derive(Clone, Debug, PartialEq)]
pub enum AdapterError {
    /// A target pattern matched no layer of the model.
    NoMatch {
        /// The adapter whose targets matched nothing.
        adapter: String,
        /// The targets, as written.
        targets: String,
        /// Layers that could have been targeted (paths of modules owning a 2-D `weight`).
        available: Vec<String>,
    },
    /// A targeted layer's weight is not a matrix (e.g. a convolution kernel).
    NotAMatrix {
        /// The layer path.
        layer: String,
        /// The weight's rank.
        rank: usize,
    },
    /// A target regular expression does not compile.
    BadPattern {
        /// The pattern.
        pattern: String,
        /// The regex error.
        message: String,
    },
    /// A configuration value is out of range (rank 0, dropout outside `[0, 1)`, …).
    BadConfig(String),
    /// The model already carries adapters where none were expected, or none where some were.
    AdapterState(String),
    /// An adapter name that no layer carries.
    UnknownAdapter {
        /// The name asked for.
        name: String,
        /// The names the model carries.
        known: Vec<String>,
    },
    /// A stored tensor does not fit the model.
    ShapeMismatch {
        /// The layer path.
        layer: String,
        /// Which tensor of the layer (`lora.default.a`, …).
        tensor: String,
        /// Shape in the model.
        model: Vec<usize>,
        /// Shape in the file.
        file: Vec<usize>,
    },
    /// A stored adapter tensor is missing from the file, or the file holds one the model lacks.
    MissingTensor(String),
    /// Reading or writing an adapter file failed.
    Io {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
}

impl fmt::Display for AdapterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdapterError::NoMatch {
                adapter,
                targets,
                available,
            } => write!(
                f,
                "adapter `{adapter}`: targets {targets} match no layer; layers with a 2-D weight: {}",
                available.join(", ")
            ),
            AdapterError::NotAMatrix { layer, rank } => write!(
                f,
                "layer `{layer}` is targeted but its weight has rank {rank}; LoRA and MoS adapt 2-D (Linear) weights"
            ),
            AdapterError::BadPattern { pattern, message } => {
                write!(
                    f,
                    "target pattern `{pattern}` is not a valid regular expression: {message}"
                )
            }
            AdapterError::BadConfig(message) => {
                write!(f, "invalid adapter configuration: {message}")
            }
            AdapterError::AdapterState(message) => write!(f, "{message}"),
            AdapterError::UnknownAdapter { name, known } => write!(
                f,
                "no layer carries an adapter named `{name}`; the model has: {}",
                known.join(", ")
            ),
            AdapterError::ShapeMismatch {
                layer,
                tensor,
                model,
                file,
            } => write!(
                f,
                "layer `{layer}`: {tensor} has shape {model:?} in the model but {file:?} in the file"
            ),
            AdapterError::MissingTensor(message) => write!(f, "{message}"),
            AdapterError::Io { path, message } => write!(f, "{path}: {message}"),
        }
    }
}

impl std::error::Error for AdapterError {}
