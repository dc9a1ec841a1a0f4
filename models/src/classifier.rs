//! What the training helpers need from a model: images in, class logits out.

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::tensor::{Int, Tensor};
use burn::train::ClassificationOutput;

/// An image classifier: `[batch, 1, height, width]` images in, `[batch, classes]` logits out.
///
/// [`Mlp`](crate::Mlp) and [`Cnn`](crate::Cnn) implement it; the functions of
/// [`train`](crate::train) work with any implementation.
pub trait Classifier: Module + core::fmt::Display + 'static {
    /// Class logits, shape `[batch, classes]`, for images of shape `[batch, 1, height, width]`.
    fn logits(&self, images: Tensor<4>) -> Tensor<2>;

    /// Logits, mean cross-entropy loss against `targets` (shape `[batch]`) and the targets,
    /// bundled for burn-train's metrics.
    fn classify(&self, images: Tensor<4>, targets: Tensor<1, Int>) -> ClassificationOutput {
        classification_output(self.logits(images), targets)
    }
}

/// Bundles logits and targets with their mean cross-entropy loss.
pub fn classification_output(logits: Tensor<2>, targets: Tensor<1, Int>) -> ClassificationOutput {
    let loss = CrossEntropyLossConfig::new()
        .init(&logits.device())
        .forward(logits.clone(), targets.clone());
    ClassificationOutput::new(loss, logits, targets)
}

/// Implements burn-train's `TrainStep` and `InferenceStep` for a [`Classifier`] taking
/// [`ClassificationBatch`](crate::data::ClassificationBatch)es, so that it trains through
/// `Learner`.
macro_rules! impl_learner_steps {
    ($model:ty) => {
        impl burn::train::TrainStep for $model {
            type Input = $crate::data::ClassificationBatch;
            type Output = burn::train::ClassificationOutput;

            fn step(
                &self,
                batch: $crate::data::ClassificationBatch,
            ) -> burn::train::TrainOutput<burn::train::ClassificationOutput> {
                let item = $crate::Classifier::classify(self, batch.images, batch.targets);
                burn::train::TrainOutput::new(self, item.loss.backward(), item)
            }
        }

        impl burn::train::InferenceStep for $model {
            type Input = $crate::data::ClassificationBatch;
            type Output = burn::train::ClassificationOutput;

            fn step(
                &self,
                batch: $crate::data::ClassificationBatch,
            ) -> burn::train::ClassificationOutput {
                $crate::Classifier::classify(self, batch.images, batch.targets)
            }
        }
    };
}

pub(crate) use impl_learner_steps;
