//! One training step on a classification batch, for every optimizer of the
//! [registry](crate::registry): Burn's per-tensor optimizers through `ModuleOptimizer`, and the
//! whole-module ones (AdaHessian, Sophia-G/H, M-FAC, AdaGrad-Norm) with what each needs besides
//! the gradient:
//!
//! - **AdaHessian / Sophia-H**: on Hessian-refresh steps, Hutchinson's diagonal from
//!   finite-difference Hessian-vector products. The closure recomputes the gradient on the *same*
//!   batch; the example models have no dropout or batch norm, so repeated forward passes agree.
//! - **Sophia-G**: every `k` steps, after the step, labels are sampled from the model's own
//!   logits on the batch and the gradient of the cross-entropy on them refreshes the Hessian EMA
//!   (the Gauss-Newton-Bartlett estimator); `bs` is the batch size, as in the reference.
//! - **M-FAC, AdaGrad-Norm**: the gradient alone.

use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{GradientsParams, ModuleOptimizer};

use crate::models::Classifier;
use crate::models::data::ClassificationBatch;
use crate::optim::adadagrad::{
    AdaDaGradError, BatchDecision, BatchSizeController, PerSampleGradients,
};
use crate::optim::adagrad_norm::AdaGradNorm;
use crate::optim::adahessian::AdaHessian;
use crate::optim::curvature::gnb::sample_labels;
use crate::optim::mfac::Mfac;
use crate::optim::sophia::{SophiaG, SophiaH};

/// Any optimizer of the registry, ready to step a [`Classifier`] on a batch.
#[allow(clippy::large_enum_variant)]
pub enum TrainOptimizer {
    /// A per-tensor optimizer (`burn::optim::Optimizer`) through Burn's `ModuleOptimizer`.
    PerTensor(ModuleOptimizer),
    /// AdaHessian; the Hessian estimate is computed from the batch on refresh steps.
    AdaHessian(AdaHessian),
    /// Sophia-G with its Hessian refresh interval `k`.
    SophiaG {
        /// The optimizer.
        optimizer: SophiaG,
        /// Refresh the GNB estimate every `interval` steps (the reference's `k`, 10).
        interval: usize,
        /// Steps taken.
        steps: usize,
    },
    /// Sophia-H; `z⊙Hz` is computed from the batch on refresh steps.
    SophiaH(SophiaH),
    /// M-FAC over the whole model.
    Mfac(Mfac),
    /// AdaGrad-Norm with one step size for the whole model.
    AdaGradNorm(AdaGradNorm),
}

/// Gradients of `model`'s mean cross-entropy on `batch`, and the loss.
pub fn batch_gradients<M: Classifier>(
    model: &M,
    batch: &ClassificationBatch,
) -> (GradientsParams, f64) {
    let output = model.classify(batch.images.clone(), batch.targets.clone());
    let loss = output.loss.clone().into_scalar::<f64>();
    (
        GradientsParams::from_grads(output.loss.backward(), model),
        loss,
    )
}

impl TrainOptimizer {
    /// One step of `model` on `batch` with learning rate `lr`; returns the updated model and the
    /// batch loss before the step.
    pub fn step<M>(&mut self, lr: f64, model: M, batch: &ClassificationBatch) -> (M, f64)
    where
        M: Classifier,
    {
        let (grads, loss) = batch_gradients(&model, batch);
        (self.apply(lr, model, grads, batch), loss)
    }

    /// One step with gradients already computed on `batch` (the batch is used again only by the
    /// optimizers that need more than the gradient).
    pub fn apply<M>(
        &mut self,
        lr: f64,
        model: M,
        grads: GradientsParams,
        batch: &ClassificationBatch,
    ) -> M
    where
        M: Classifier,
    {
        let same_batch = |m: &M| batch_gradients(m, batch).0;
        match self {
            Self::PerTensor(optimizer) => optimizer.step(lr, model, grads),
            Self::AdaHessian(optimizer) => {
                optimizer.step_with_closure(lr, model, grads, same_batch)
            }
            Self::SophiaH(optimizer) => optimizer.step_with_closure(lr, model, grads, same_batch).0,
            Self::Mfac(optimizer) => optimizer.step(lr, model, grads),
            Self::AdaGradNorm(optimizer) => optimizer.step(lr, model, grads),
            Self::SophiaG {
                optimizer,
                interval,
                steps,
            } => {
                let (model, _) = optimizer.step(lr, model, grads, batch.len() as f64);
                *steps += 1;
                if steps.is_multiple_of(*interval) {
                    let sampled = sampled_label_gradients(&model, batch);
                    optimizer.update_hessian(&model, &sampled);
                }
                model
            }
        }
    }
}

/// The Gauss-Newton-Bartlett gradient ĝ: the gradient of the mean cross-entropy of `model`'s
/// logits on `batch` against labels sampled from those logits.
pub fn sampled_label_gradients<M: Classifier>(
    model: &M,
    batch: &ClassificationBatch,
) -> GradientsParams {
    let logits = model.logits(batch.images.clone());
    let labels = sample_labels(logits.clone().detach());
    let loss = CrossEntropyLossConfig::new()
        .init(&logits.device())
        .forward(logits, labels);
    GradientsParams::from_grads(loss.backward(), model)
}

/// AdAdaGrad (Lau, Liu, Kolar 2024, arXiv:2402.11215): an optimizer whose batch size grows
/// when the batch gradient is too noisy, as decided by a [`BatchSizeController`] (norm,
/// inner-product, orthogonality or ip+orth test).
///
/// On a step where a test is due, the batch is split into micro-batches and their gradients,
/// all taken at the pre-step parameters, feed both the test and (their mean) the step. Burn has
/// no per-sample `vmap`, so a batch of b ≤ `max_gradients` samples is split into single samples
/// (the reference's per-sample estimator); a larger one into micro-batches of
/// `s = ceil(b / max_gradients)` samples, whose variance is rescaled by s (see
/// [`PerSampleGradients::from_micro_batches`]); the last `b mod s` samples of that step are
/// dropped so all micro-batches have s samples. Other steps use the plain batch gradient.
pub struct AdaptiveBatchTrainer {
    /// The optimizer (AdAdaGrad uses per-row AdaGrad-Norm).
    pub optimizer: TrainOptimizer,
    /// The batch-size controller: read [`BatchSizeController::batch_size`] for the next batch.
    pub controller: BatchSizeController,
    /// Most backward passes a test step may take (micro-batches per test).
    pub max_gradients: usize,
}

impl AdaptiveBatchTrainer {
    /// One step on `batch`; returns the model, the batch loss before the step and the test's
    /// decision on a test step.
    ///
    /// # Errors
    /// The test's error (a non-finite statistic, fewer than 2 micro-batches).
    pub fn step<M: Classifier>(
        &mut self,
        lr: f64,
        model: M,
        batch: &ClassificationBatch,
    ) -> Result<(M, f64, Option<BatchDecision>), AdaDaGradError> {
        let b = batch.len();
        if !self.controller.test_due() || b < 2 {
            self.controller.record(b);
            let (model, loss) = self.optimizer.step(lr, model, batch);
            return Ok((model, loss, None));
        }
        let size = b.div_ceil(self.max_gradients.max(1));
        let count = b / size;
        let mut loss = 0.0;
        let grads = (0..count)
            .map(|k| {
                let part = ClassificationBatch {
                    images: batch.images.clone().narrow(0, k * size, size),
                    targets: batch.targets.clone().narrow(0, k * size, size),
                };
                let (grads, part_loss) = batch_gradients(&model, &part);
                loss += part_loss / count as f64;
                grads
            })
            .collect();
        let gradients = PerSampleGradients::from_micro_batches(&model, grads, size)?;
        let decision = self.controller.observe(&gradients)?;
        let used = ClassificationBatch {
            images: batch.images.clone().narrow(0, 0, count * size),
            targets: batch.targets.clone().narrow(0, 0, count * size),
        };
        let model = self
            .optimizer
            .apply(lr, model, gradients.into_mean(), &used);
        Ok((model, loss, Some(decision)))
    }
}

/// The reference's sample-indexed schedule (`get_warmup_cosine_lr_sample` in the AdAdaGrad
/// authors' `utils.py`): linear warm-up over `warmup_samples`, cosine decay from `lr` to `min_lr`
/// until `decay_samples`, then `min_lr`. Indexing by samples rather than steps keeps the schedule
/// when the batch size grows.
pub fn warmup_cosine_lr_by_samples(
    samples: u64,
    warmup_samples: u64,
    decay_samples: u64,
    min_lr: f64,
    lr: f64,
) -> f64 {
    if samples < warmup_samples {
        return lr * samples as f64 / warmup_samples as f64;
    }
    if samples > decay_samples {
        return min_lr;
    }
    let span = decay_samples.saturating_sub(warmup_samples).max(1) as f64;
    let ratio = (samples - warmup_samples) as f64 / span;
    min_lr + 0.5 * (1.0 + (std::f64::consts::PI * ratio).cos()) * (lr - min_lr)
}
