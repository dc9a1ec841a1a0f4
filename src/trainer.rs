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
        let same_batch = |m: &M| batch_gradients(m, batch).0;
        let model = match self {
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
        };
        (model, loss)
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
