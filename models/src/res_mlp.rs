//! A deep residual perceptron for small images: the model of the adapter example, deep enough
//! (8 blocks of the same shape by default) for MoS's shard pools to be shared across layers.

use crate::classifier::{Classifier, impl_learner_steps};
use burn::config::Config;
use burn::module::Module;
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::Tensor;
use burn::tensor::activation::gelu;

/// Configuration of a [`ResMlp`].
#[derive(Config, Debug)]
pub struct ResMlpConfig {
    /// Input features: pixels per image (64 for the 8x8 digits).
    pub input: usize,
    /// Width of the residual stream.
    #[config(default = 256)]
    pub width: usize,
    /// Residual blocks.
    #[config(default = 8)]
    pub blocks: usize,
    /// Output classes.
    #[config(default = 10)]
    pub classes: usize,
}

impl ResMlpConfig {
    /// Initializes the model on `device` (use an autodiff device to train it).
    pub fn init(&self, device: &burn::tensor::Device) -> ResMlp {
        ResMlp {
            input: LinearConfig::new(self.input, self.width).init(device),
            blocks: (0..self.blocks)
                .map(|_| ResBlock {
                    norm: LayerNormConfig::new(self.width).init(device),
                    fc: LinearConfig::new(self.width, self.width).init(device),
                })
                .collect(),
            head: LinearConfig::new(self.width, self.classes).init(device),
        }
    }
}

/// One pre-norm residual block: `x + gelu(fc(norm(x)))`.
#[derive(Module, Debug)]
pub struct ResBlock {
    /// Layer norm before the projection.
    pub norm: LayerNorm,
    /// `width → width` projection.
    pub fc: Linear,
}

/// Flattened image → linear → residual blocks → linear → class logits.
#[derive(Module, Debug)]
pub struct ResMlp {
    /// Pixels to the residual stream.
    pub input: Linear,
    /// The blocks (`blocks.i.fc` are the layers the adapter example targets).
    pub blocks: Vec<ResBlock>,
    /// Residual stream to class logits.
    pub head: Linear,
}

impl ResMlp {
    /// Class logits `[batch, classes]` for flattened images `[batch, pixels]`.
    pub fn forward_flat(&self, x: Tensor<2>) -> Tensor<2> {
        let mut x = self.input.forward(x);
        for block in &self.blocks {
            x = x.clone() + gelu(block.fc.forward(block.norm.forward(x)));
        }
        self.head.forward(x)
    }
}

impl Classifier for ResMlp {
    fn logits(&self, images: Tensor<4>) -> Tensor<2> {
        self.forward_flat(images.flatten(1, 3))
    }
}

impl_learner_steps!(ResMlp);
