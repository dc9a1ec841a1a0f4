//! AdAdaGrad: adaptive batch sizes decided by statistical tests on per-sample gradients, for
//! AdaGrad-Norm (or any optimizer).
//!
//! Lau, Liu, Kolar, *AdAdaGrad: Adaptive Batch Size Schemes for Adaptive Gradient Methods*,
//! arXiv:2402.11215; reference code timlautk/AdAdaGrad@cc126fb (`tests.py` for the tests,
//! `main.py` for the training loop, `adagradnorm.py` for the optimizer, here
//! [`AdaGradNorm`](crate::adagrad_norm::AdaGradNorm) with
//! [`Granularity::PerRow`](crate::adagrad_norm::Granularity::PerRow)).
//!
//! At each tested step, with `b` per-sample gradients `g_i` taken at the pre-step parameters and
//! their mean `ḡ`, a test asks whether `ḡ` is accurate enough; if not, the next batch takes the
//! size at which it would have been ([`BatchStatistics`] has the formulas):
//!
//! | test | [`BatchTest`] | next batch size when it fails |
//! |---|---|---|
//! | norm (Byrd et al. 2012) | `Norm` (`norm`) | `Σ_k Var(g_k) / (η² ‖ḡ‖²)` |
//! | inner product (Bollapragada et al. 2018) | `InnerProduct` (`ip`) | `Var(⟨g_i, ḡ⟩) / (θ² ‖ḡ‖⁴)` |
//! | orthogonality | `Orthogonality` (`orth`) | `Σ_k Var(g⊥_k) / (ν² ‖ḡ‖²)` |
//! | augmented inner product | `InnerProductOrthogonality` (`ip+orth`) | the larger of `ip` and `orth` |
//!
//! As in `tests.py`, variances and inner products are taken per parameter tensor and summed
//! (the paper writes them over the whole parameter vector), the next size is
//! `min(ceil(max(b, statistic)), max_batch_size)`, and a step passes when `statistic <= b`.
//!
//! # Getting per-sample gradients in Burn
//! Burn has no `vmap`. Run the model on micro-batches of one sample (or of `s` samples, see
//! [`BatchStatistics`] for how the variance is rescaled), collect one
//! [`GradientsParams`](burn::optim::GradientsParams) per micro-batch, and build
//! [`PerSampleGradients`]: it stacks them per parameter for the test and keeps their mean for the
//! optimizer, so one pass serves both (for a mean-reduced loss the mean of the per-sample
//! gradients is the batch gradient). Steps without a due test take one ordinary batch gradient.
//!
//! # A training loop
//! ```
//! use burn::module::Module;
//! use burn::nn::{Linear, LinearConfig};
//! use burn::optim::GradientsParams;
//! use burn::tensor::{Device, Distribution, Tensor};
//! use firebox_optim::adadagrad::{BatchSizeControllerConfig, BatchTest, PerSampleGradients};
//! use firebox_optim::adagrad_norm::{AdaGradNormConfig, Granularity, MatrixRows};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let device = Device::flex().autodiff();
//! let mut model: Linear = LinearConfig::new(4, 1).init(&device);
//! // The authors' optimizer: per-row AdaGrad-Norm (Burn's Linear stores [d_input, d_output]).
//! let mut optim = AdaGradNormConfig::new()
//!     .with_granularity(Granularity::PerRow)
//!     .with_matrix_rows(MatrixRows::Axis1)
//!     .init();
//! let mut controller = BatchSizeControllerConfig::new()
//!     .with_test("ip+orth".parse::<BatchTest>()?)
//!     .with_initial_batch_size(4)
//!     .with_max_batch_size(32)
//!     .init();
//! let mse = |model: &Linear, x: Tensor<2>, y: Tensor<2>| (model.forward(x) - y).square().mean();
//!
//! let mut lr = 0.5;
//! while controller.samples_seen() < 256 {
//!     let b = controller.batch_size();
//!     let x = Tensor::<2>::random([b, 4], Distribution::Normal(0.0, 1.0), &device);
//!     let y = x.clone().sum_dim(1) + Tensor::random([b, 1], Distribution::Normal(0.0, 0.1), &device);
//!     let grads = if controller.test_due() {
//!         // One backward pass per sample, at the pre-step parameters.
//!         let per_sample = (0..b)
//!             .map(|i| {
//!                 let loss = mse(&model, x.clone().narrow(0, i, 1), y.clone().narrow(0, i, 1));
//!                 GradientsParams::from_grads(loss.backward(), &model)
//!             })
//!             .collect();
//!         let per_sample = PerSampleGradients::from_samples(&model, per_sample)?;
//!         let decision = controller.observe(&per_sample)?;
//!         assert_eq!(decision.statistics.batch_size, b);
//!         per_sample.into_mean()
//!     } else {
//!         controller.record(b);
//!         GradientsParams::from_grads(mse(&model, x, y).backward(), &model)
//!     };
//!     model = optim.step(lr, model, grads);
//!     // A schedule indexed by samples, as main.py's `lr_decay_type = sample`.
//!     lr = 0.5 / (1.0 + controller.samples_seen() as f64 / 1024.0);
//! }
//! assert!(controller.batch_size() >= 4 && controller.batch_size() <= 32);
//! # Ok(())
//! # }
//! ```

mod controller;
mod statistics;

use std::fmt;

pub use controller::{BatchSizeController, BatchSizeControllerConfig};
pub use statistics::{
    BatchDecision, BatchStatistics, BatchTest, PerSampleGradients, TestConstants, mean_gradients,
};

/// Why a batch-size test could not be computed.
#[derive(Clone, Debug, PartialEq)]
pub enum AdaDaGradError {
    /// A test name other than `norm`, `ip`, `orth`, `ip+orth`.
    UnknownTest(String),
    /// Fewer than 2 gradients: the tests need a sample variance (divisor `b − 1`).
    TooFewGradients(usize),
    /// A micro-batch size of 0.
    MicroBatchSize,
    /// No parameter has a gradient.
    NoGradients,
    /// A parameter has a gradient in some of the per-sample gradients only.
    MissingGradient {
        /// The parameter's module path.
        parameter: String,
        /// How many of the gradients hold it.
        present: usize,
        /// How many gradients there are.
        total: usize,
    },
    /// Gradients whose shapes do not fit together (described).
    ShapeMismatch(String),
    /// A statistic is NaN or infinite.
    NonFinite {
        /// Which statistic.
        what: &'static str,
        /// Its value.
        value: f64,
    },
}

impl fmt::Display for AdaDaGradError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdaDaGradError::UnknownTest(name) => write!(
                f,
                "AdAdaGrad: unknown test type `{name}`: expected one of norm, ip, orth, ip+orth"
            ),
            AdaDaGradError::TooFewGradients(n) => write!(
                f,
                "AdAdaGrad: the batch-size tests need at least 2 per-sample (or micro-batch) \
                 gradients for a sample variance, got {n}"
            ),
            AdaDaGradError::MicroBatchSize => {
                write!(f, "AdAdaGrad: the micro-batch size must be at least 1")
            }
            AdaDaGradError::NoGradients => {
                write!(f, "AdAdaGrad: no parameter has a per-sample gradient")
            }
            AdaDaGradError::MissingGradient {
                parameter,
                present,
                total,
            } => write!(
                f,
                "AdAdaGrad: parameter `{parameter}` has a gradient in only {present} of the \
                 {total} per-sample gradients"
            ),
            AdaDaGradError::ShapeMismatch(what) => {
                write!(f, "AdAdaGrad: per-sample gradient shape mismatch: {what}")
            }
            AdaDaGradError::NonFinite { what, value } => write!(
                f,
                "AdAdaGrad: `{what}` is {value}: the per-sample gradients hold NaN/Inf (find \
                 the parameter with firebox_optim::check::find_non_finite_grad), or the batch \
                 gradient and its variance are both zero"
            ),
        }
    }
}

impl std::error::Error for AdaDaGradError {}
