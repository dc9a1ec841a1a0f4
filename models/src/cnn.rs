//! A small convolutional network that works for any image size of at least 2x2.

use crate::classifier::{Classifier, classification_output, impl_learner_steps};
use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d, Relu};
use burn::tensor::{Device, Int, Tensor};
use burn::train::ClassificationOutput;

/// Configuration of a [`Cnn`].
#[derive(Config, Debug)]
pub struct CnnConfig {
    /// Channels of the first convolution.
    #[config(default = 8)]
    pub channels1: usize,
    /// Channels of the second convolution.
    #[config(default = 16)]
    pub channels2: usize,
    /// Side of the feature map after adaptive average pooling.
    #[config(default = 4)]
    pub pooled: usize,
    /// Output classes.
    #[config(default = 10)]
    pub classes: usize,
}

impl CnnConfig {
    /// Initializes the model's parameters on `device` (use an autodiff device to train it).
    pub fn init(&self, device: &Device) -> Cnn {
        let same = PaddingConfig2d::Explicit(1, 1, 1, 1);
        Cnn {
            conv1: Conv2dConfig::new([1, self.channels1], [3, 3])
                .with_padding(same.clone())
                .init(device),
            conv2: Conv2dConfig::new([self.channels1, self.channels2], [3, 3])
                .with_stride([2, 2])
                .with_padding(same)
                .init(device),
            pool: AdaptiveAvgPool2dConfig::new([self.pooled, self.pooled]).init(),
            output: LinearConfig::new(self.channels2 * self.pooled * self.pooled, self.classes)
                .init(device),
            activation: Relu::new(),
        }
    }
}

/// conv 3x3 -> ReLU -> conv 3x3 stride 2 -> ReLU -> adaptive average pool -> flatten -> linear.
///
/// The stride halves the map (8x8 -> 4x4, 28x28 -> 14x14) and the pool brings every input size to
/// the same `pooled` x `pooled` map, so one configuration serves the digits and MNIST.
#[derive(Module, Debug)]
pub struct Cnn {
    /// First convolution, 1 -> `channels1`, padding 1.
    pub conv1: Conv2d,
    /// Second convolution, `channels1` -> `channels2`, stride 2, padding 1.
    pub conv2: Conv2d,
    /// Adaptive average pooling to `pooled` x `pooled`.
    pub pool: AdaptiveAvgPool2d,
    /// Classifier head.
    pub output: Linear,
    /// The activation after each convolution.
    pub activation: Relu,
}

impl Cnn {
    /// Class logits `[batch, classes]` for images `[batch, 1, height, width]`.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let x = self.activation.forward(self.conv1.forward(images));
        let x = self.activation.forward(self.conv2.forward(x));
        let x = self.pool.forward(x);
        self.output.forward(x.flatten(1, 3))
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

impl Classifier for Cnn {
    fn logits(&self, images: Tensor<4>) -> Tensor<2> {
        self.forward(images)
    }
}

impl_learner_steps!(Cnn);
