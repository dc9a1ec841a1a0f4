//! A one-hidden-layer perceptron for small images.

use crate::classifier::{Classifier, classification_output, impl_learner_steps};
use burn::config::Config;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig, Relu};
use burn::tensor::{Device, Int, Tensor};
use burn::train::ClassificationOutput;

/// Configuration of an [`Mlp`].
#[derive(Config, Debug)]
pub struct MlpConfig {
    /// Input features: pixels per image (64 for the 8x8 digits, 784 for MNIST).
    pub input: usize,
    /// Hidden units.
    #[config(default = 64)]
    pub hidden: usize,
    /// Output classes.
    #[config(default = 10)]
    pub classes: usize,
}

impl MlpConfig {
    /// The MLP for images of `height` x `width` pixels, with the default hidden size.
    pub fn for_images(height: usize, width: usize) -> Self {
        Self::new(height * width)
    }

    /// Initializes the model's parameters on `device` (use an autodiff device to train it).
    pub fn init(&self, device: &Device) -> Mlp {
        Mlp {
            hidden: LinearConfig::new(self.input, self.hidden).init(device),
            output: LinearConfig::new(self.hidden, self.classes).init(device),
            activation: Relu::new(),
        }
    }
}

/// Flattened image -> linear -> ReLU -> linear -> class logits.
#[derive(Module, Debug)]
pub struct Mlp {
    /// Input to hidden layer.
    pub hidden: Linear,
    /// Hidden to output layer.
    pub output: Linear,
    /// The hidden activation.
    pub activation: Relu,
}

impl Mlp {
    /// Class logits `[batch, classes]` for images `[batch, 1, height, width]`.
    ///
    /// # Panics
    ///
    /// If `height * width` differs from the configured input size.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        self.forward_flat(images.flatten(1, 3))
    }

    /// Class logits `[batch, classes]` for flattened images `[batch, height * width]`.
    pub fn forward_flat(&self, x: Tensor<2>) -> Tensor<2> {
        let x = self.activation.forward(self.hidden.forward(x));
        self.output.forward(x)
    }

    /// Logits, mean cross-entropy loss and targets for burn-train's metrics.
    pub fn forward_classification(
        &self,
        images: Tensor<4>,
        targets: Tensor<1, Int>,
    ) -> ClassificationOutput {
        classification_output(self.forward(images), targets)
    }
}

impl Classifier for Mlp {
    fn logits(&self, images: Tensor<4>) -> Tensor<2> {
        self.forward(images)
    }
}

impl_learner_steps!(Mlp);
