//! Test loss and accuracy of a classifier, shared by the examples.

use burn::nn::loss::CrossEntropyLossConfig;
use burn::tensor::{Device, Int, Tensor};
use firebox::models::data::ClassificationData;

/// Mean cross-entropy of `logits` against `targets`.
pub fn cross_entropy(logits: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1> {
    CrossEntropyLossConfig::new()
        .init(&logits.device())
        .forward(logits, targets)
}

/// Mean loss and accuracy (%) of `logits` (images → class logits) on `data`, in batches of 256.
pub fn loss_and_accuracy(
    logits: impl Fn(Tensor<4>) -> Tensor<2>,
    data: &ClassificationData,
    device: &Device,
) -> (f64, f64) {
    let (mut loss, mut correct) = (0.0, 0i64);
    for batch in data.batches(256, None, device) {
        let out = logits(batch.images.clone());
        loss += cross_entropy(out.clone(), batch.targets.clone()).into_scalar::<f64>()
            * batch.len() as f64;
        correct += out
            .argmax(1)
            .flatten::<1>(0, 1)
            .equal(batch.targets.clone())
            .int()
            .sum()
            .into_scalar::<i64>();
    }
    (loss / data.n as f64, 100.0 * correct as f64 / data.n as f64)
}
