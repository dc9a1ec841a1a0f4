//! The four batch-size tests of AdAdaGrad, computed from per-sample gradients.
//!
//! Reference: timlautk/AdAdaGrad@cc126fb `tests.py`, functions `norm_test`, `inner_product_test`,
//! `orthogonality_test` and `inner_product_orthogonality_test` (single device). Paper: Lau, Liu,
//! Kolar, arXiv:2402.11215, Section 3 (the norm test of Byrd et al. 2012 and the augmented inner
//! product test of Bollapragada et al. 2018).

use std::str::FromStr;

use burn::config::Config;
use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::Tensor;

use super::AdaDaGradError;
use crate::host::host_values;

/// Which batch-size test decides whether the batch grows (`main.py`'s `--test_type`).
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum BatchTest {
    /// `norm`: the norm test, `Σ_k Var(g_k) / (η²‖ḡ‖²) > b` grows the batch.
    Norm,
    /// `ip`: the inner-product test, `Var(⟨g_i, ḡ⟩) / (θ²‖ḡ‖⁴) > b`.
    InnerProduct,
    /// `orth`: the orthogonality test, `Σ_k Var(g⊥_k) / (ν²‖ḡ‖²) > b` (only `tests.py`;
    /// `main.py` wires up `norm`, `ip` and `ip+orth`).
    Orthogonality,
    /// `ip+orth`: the augmented inner-product test, the larger of the `ip` and `orth` statistics.
    InnerProductOrthogonality,
}

impl BatchTest {
    /// Every test, in the order of [`name`](Self::name)s `norm`, `ip`, `orth`, `ip+orth`.
    pub const ALL: [BatchTest; 4] = [
        BatchTest::Norm,
        BatchTest::InnerProduct,
        BatchTest::Orthogonality,
        BatchTest::InnerProductOrthogonality,
    ];

    /// The reference's name of the test (`main.py --test_type`): `norm`, `ip`, `orth`, `ip+orth`.
    pub fn name(self) -> &'static str {
        match self {
            BatchTest::Norm => "norm",
            BatchTest::InnerProduct => "ip",
            BatchTest::Orthogonality => "orth",
            BatchTest::InnerProductOrthogonality => "ip+orth",
        }
    }
}

impl FromStr for BatchTest {
    type Err = AdaDaGradError;

    /// The reference's names `norm`, `ip`, `orth`, `ip+orth` (also `inner_product`,
    /// `orthogonality`, `inner_product_orthogonality`); anything else is
    /// [`AdaDaGradError::UnknownTest`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "norm" => Ok(BatchTest::Norm),
            "ip" | "inner_product" => Ok(BatchTest::InnerProduct),
            "orth" | "orthogonality" => Ok(BatchTest::Orthogonality),
            "ip+orth" | "inner_product_orthogonality" => Ok(BatchTest::InnerProductOrthogonality),
            other => Err(AdaDaGradError::UnknownTest(other.to_string())),
        }
    }
}

/// The test constants η (norm), θ (inner product) and ν (orthogonality); `main.py`'s defaults
/// are 0.1 each. Smaller constants demand a more accurate gradient, i.e. grow the batch sooner.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TestConstants {
    /// η of the norm test.
    pub eta: f64,
    /// θ of the inner-product test.
    pub theta: f64,
    /// ν of the orthogonality test.
    pub nu: f64,
}

impl Default for TestConstants {
    fn default() -> Self {
        Self {
            eta: 0.1,
            theta: 0.1,
            nu: 0.1,
        }
    }
}

/// The sample statistics behind every test, summed over parameter tensors.
///
/// With `G_j` the `k × n_j` matrix of the `k` gradients of parameter tensor `j` (one row per
/// sample or micro-batch), `ḡ_j` its row mean, `Var_i` the unbiased variance over rows (divisor
/// `k − 1`) and `s` the micro-batch size:
/// ```text
/// variance_one_norm       = s · Σ_j Σ_c Var_i(G_j[i, c])
/// variance_inner_product  = s · Σ_j Var_i(⟨G_j[i], ḡ_j⟩)
/// variance_orthogonality  = s · Σ_j Σ_c Var_i(O_j[i, c]),  O_j[i] = G_j[i] − ⟨G_j[i], ḡ_j⟩ ḡ_j/‖ḡ_j‖²
/// batch_grad_norm_squared = Σ_j ‖ḡ_j‖²
/// ```
/// As in the reference, inner products and projections are taken **within each parameter
/// tensor** and summed, not over the concatenated model vector as in the paper.
///
/// **Micro-batches.** With `s = 1` (per-sample gradients) these are exactly the reference's
/// estimators. A row that is the mean gradient of `s` i.i.d. samples has `1/s` of a sample's
/// covariance, so `s ×` the row variance estimates the per-sample variance the tests compare
/// against; `b = k·s`. (This is the unbiased estimator; the reference's gradient-accumulation
/// path `norm_test_accumulate` combines micro-batch variances differently.) All micro-batches must
/// have the same size.
///
/// The per-tensor reductions run on the device in the tensors' precision (f32); the `k + 3`
/// numbers per tensor are read back once and summed in f64.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchStatistics {
    /// `b`: samples behind these statistics (gradients × micro-batch size).
    pub batch_size: usize,
    /// `s`: samples per gradient row (1 for per-sample gradients).
    pub micro_batch_size: usize,
    /// Sum of the per-coordinate variances (the norm test's numerator).
    pub variance_one_norm: f64,
    /// Variance of the inner products with the batch gradient (the `ip` test's numerator).
    pub variance_inner_product: f64,
    /// Sum of the per-coordinate variances of the components orthogonal to the batch gradient
    /// (the `orth` test's numerator).
    pub variance_orthogonality: f64,
    /// `‖ḡ‖²`, the squared norm of the batch (mean) gradient.
    pub batch_grad_norm_squared: f64,
}

/// A test's verdict: the statistics, every test's statistic, and the batch size to use next.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchDecision {
    /// The test that decided.
    pub test: BatchTest,
    /// The statistics it was computed from.
    pub statistics: BatchStatistics,
    /// `variance_one_norm / (η² N)` with `N = batch_grad_norm_squared`.
    pub statistic_norm: f64,
    /// `variance_inner_product / (θ² N²)`.
    pub statistic_ip: f64,
    /// `variance_orthogonality / (ν² N)`.
    pub statistic_orth: f64,
    /// The deciding statistic: the one of `test`, or `max(ip, orth)` for `ip+orth`. It is the
    /// batch size at which the test would just pass.
    pub statistic: f64,
    /// `!(statistic > b)`: the batch was large enough.
    pub test_passed: bool,
    /// The reference's `min(ceil(max(b, statistic)), max_batch_size)`. (The
    /// [`BatchSizeController`](super::BatchSizeController) additionally never shrinks.)
    pub next_batch_size: usize,
}

impl BatchStatistics {
    /// The statistics of per-sample (or per-micro-batch) gradients given as one `[k, n_j]` block
    /// per parameter tensor: row `i` is gradient `i`, flattened row-major. Names are only used in
    /// errors.
    ///
    /// # Errors
    /// No blocks, fewer than 2 rows, blocks with different row counts, `micro_batch_size` 0, or a
    /// non-finite statistic (NaN/Inf in the gradients).
    pub fn from_blocks(
        blocks: impl IntoIterator<Item = (String, Tensor<2>)>,
        micro_batch_size: usize,
    ) -> Result<Self, AdaDaGradError> {
        if micro_batch_size == 0 {
            return Err(AdaDaGradError::MicroBatchSize);
        }
        let mut rows: Option<(String, usize)> = None;
        let mut parts = Vec::new();
        for (name, block) in blocks {
            let [k, n] = block.dims();
            match &rows {
                None => rows = Some((name.clone(), k)),
                Some((first, rows)) if *rows != k => {
                    return Err(AdaDaGradError::ShapeMismatch(format!(
                        "`{name}` has {k} gradient rows but `{first}` has {rows}"
                    )));
                }
                Some(_) => {}
            }
            if k < 2 {
                return Err(AdaDaGradError::TooFewGradients(k));
            }
            if n > 0 {
                parts.push(block_parts(block));
            }
        }
        let Some((_, k)) = rows else {
            return Err(AdaDaGradError::NoGradients);
        };
        let values = host_values(parts);
        let mut stats = BatchStatistics {
            batch_size: k * micro_batch_size,
            micro_batch_size,
            variance_one_norm: 0.0,
            variance_inner_product: 0.0,
            variance_orthogonality: 0.0,
            batch_grad_norm_squared: 0.0,
        };
        let (divisor, s) = ((k - 1) as f64, micro_batch_size as f64);
        for part in values.chunks(3 + k) {
            let (sum_d2, sum_r2, norm_sq, c) = (part[0], part[1], part[2], &part[3..]);
            let c_mean = c.iter().sum::<f64>() / k as f64;
            let var_c = c.iter().map(|x| (x - c_mean).powi(2)).sum::<f64>() / divisor;
            stats.variance_one_norm += s * sum_d2 / divisor;
            stats.variance_inner_product += s * var_c;
            stats.variance_orthogonality += s * sum_r2 / divisor;
            stats.batch_grad_norm_squared += norm_sq;
        }
        for (what, value) in [
            ("variance_one_norm", stats.variance_one_norm),
            ("variance_inner_product", stats.variance_inner_product),
            ("variance_orthogonality", stats.variance_orthogonality),
            ("batch_grad_norm_squared", stats.batch_grad_norm_squared),
        ] {
            if !value.is_finite() {
                return Err(AdaDaGradError::NonFinite { what, value });
            }
        }
        Ok(stats)
    }

    /// The reference's decision for `test` with `constants`, capped at `max_batch_size`.
    ///
    /// # Errors
    /// [`AdaDaGradError::NonFinite`] when the deciding statistic is NaN: a zero batch gradient
    /// with zero variance (`0/0`). A zero batch gradient with positive variance gives an infinite
    /// statistic, which fails the test and jumps to `max_batch_size`.
    pub fn decide(
        &self,
        test: BatchTest,
        constants: TestConstants,
        max_batch_size: usize,
    ) -> Result<BatchDecision, AdaDaGradError> {
        let n = self.batch_grad_norm_squared;
        let statistic_norm = self.variance_one_norm / (constants.eta.powi(2) * n);
        let statistic_ip = self.variance_inner_product / (constants.theta.powi(2) * n * n);
        let statistic_orth = self.variance_orthogonality / (constants.nu.powi(2) * n);
        let statistic = match test {
            BatchTest::Norm => statistic_norm,
            BatchTest::InnerProduct => statistic_ip,
            BatchTest::Orthogonality => statistic_orth,
            // f64::max would hide a NaN part; a zero batch gradient leaves both undefined.
            BatchTest::InnerProductOrthogonality if statistic_ip.is_nan() => f64::NAN,
            BatchTest::InnerProductOrthogonality => statistic_ip.max(statistic_orth),
        };
        if statistic.is_nan() {
            return Err(AdaDaGradError::NonFinite {
                what: "statistic",
                value: statistic,
            });
        }
        let b = self.batch_size;
        let test_passed = statistic <= b as f64;
        let wanted = statistic.max(b as f64);
        let next_batch_size = if wanted >= max_batch_size as f64 {
            max_batch_size
        } else {
            (wanted.ceil() as usize).min(max_batch_size)
        };
        Ok(BatchDecision {
            test,
            statistics: *self,
            statistic_norm,
            statistic_ip,
            statistic_orth,
            statistic,
            test_passed,
            next_batch_size,
        })
    }
}

/// On the device, for one `[k, n]` block: `[Σ‖d_i‖², Σ‖r_i‖², ‖ḡ‖², c_1..c_k]` with
/// `d_i = G_i − ḡ`, `c_i = ⟨d_i, ḡ⟩` (the centred inner products) and
/// `r_i = d_i − c_i ḡ/‖ḡ‖²` (= `O_i − Ō`, the centred orthogonal components).
fn block_parts(block: Tensor<2>) -> Tensor<1> {
    let [k, _] = block.dims();
    let mean = block.clone().mean_dim(0); // [1, n]
    let d = block - mean.clone(); // [k, n]
    let norm_sq = mean.clone().square().sum(); // [1]
    let c = d.clone().matmul(mean.clone().transpose()); // [k, 1]
    // A zero batch gradient has no direction to project on: r = d (not the reference's 0/0).
    let coef = c.clone() / norm_sq.clone().clamp_min(f32::MIN_POSITIVE).reshape([1, 1]);
    let r = d.clone() - coef * mean; // [k, n]
    Tensor::cat(
        vec![d.square().sum(), r.square().sum(), norm_sq, c.reshape([k])],
        0,
    )
}

/// Per-sample (or per-micro-batch) gradients of a module, stacked per parameter tensor, with
/// their mean: one pass over the micro-batches feeds both the batch-size test and the optimizer.
///
/// Burn has no `vmap`: run the model on micro-batches of 1 sample (or `s` samples), call
/// `GradientsParams::from_grads(loss.backward(), &model)` for each, and hand the list here. The
/// mean of the micro-batch gradients is the gradient of the whole batch when the loss is a mean
/// over samples and the micro-batches have equal sizes.
#[derive(Debug)]
pub struct PerSampleGradients {
    blocks: Vec<(String, Tensor<2>)>,
    mean: GradientsParams,
    count: usize,
    micro_batch_size: usize,
}

impl PerSampleGradients {
    /// From one `GradientsParams` per sample (micro-batches of size 1), at the same parameters.
    ///
    /// # Errors
    /// See [`from_micro_batches`](Self::from_micro_batches).
    pub fn from_samples<M: Module>(
        module: &M,
        grads: Vec<GradientsParams>,
    ) -> Result<Self, AdaDaGradError> {
        Self::from_micro_batches(module, grads, 1)
    }

    /// From one `GradientsParams` per micro-batch of `micro_batch_size` samples each, all taken at
    /// the same parameters. Parameters are visited in `module`'s order; one without a gradient in
    /// any micro-batch (frozen) is left out.
    ///
    /// # Errors
    /// Fewer than 2 micro-batches, `micro_batch_size` 0, a parameter with a gradient in only some
    /// micro-batches, or gradients of a shape other than the parameter's. The errors name the
    /// parameter by its module path.
    pub fn from_micro_batches<M: Module>(
        module: &M,
        grads: Vec<GradientsParams>,
        micro_batch_size: usize,
    ) -> Result<Self, AdaDaGradError> {
        if micro_batch_size == 0 {
            return Err(AdaDaGradError::MicroBatchSize);
        }
        if grads.len() < 2 {
            return Err(AdaDaGradError::TooFewGradients(grads.len()));
        }
        let mut collector = Collector {
            grads,
            path: Vec::new(),
            blocks: Vec::new(),
            mean: GradientsParams::new(),
            error: None,
        };
        module.visit(&mut collector);
        if let Some(error) = collector.error {
            return Err(error);
        }
        if collector.blocks.is_empty() {
            return Err(AdaDaGradError::NoGradients);
        }
        Ok(Self {
            blocks: collector.blocks,
            mean: collector.mean,
            count: collector.grads.len(),
            micro_batch_size,
        })
    }

    /// `b`: the samples behind these gradients (gradients × micro-batch size).
    pub fn batch_size(&self) -> usize {
        self.count * self.micro_batch_size
    }

    /// The number of gradients (micro-batches).
    pub fn num_gradients(&self) -> usize {
        self.count
    }

    /// Samples per gradient.
    pub fn micro_batch_size(&self) -> usize {
        self.micro_batch_size
    }

    /// The per-parameter `[k, n_j]` blocks, named by module path, in visit order.
    pub fn blocks(&self) -> &[(String, Tensor<2>)] {
        &self.blocks
    }

    /// The test statistics of these gradients.
    ///
    /// # Errors
    /// A non-finite statistic (NaN/Inf gradients).
    pub fn statistics(&self) -> Result<BatchStatistics, AdaDaGradError> {
        BatchStatistics::from_blocks(self.blocks.iter().cloned(), self.micro_batch_size)
    }

    /// The mean gradient, to give to the optimizer (gradient accumulation).
    pub fn into_mean(self) -> GradientsParams {
        self.mean
    }
}

/// The mean of per-sample (or equal-size micro-batch) gradients, parameter by parameter, to give
/// to an optimizer: gradient accumulation. [`PerSampleGradients::into_mean`] gives the same while
/// keeping the gradients for the test.
///
/// # Errors
/// No gradients, or a parameter with a gradient in only some of them (named by module path).
pub fn mean_gradients<M: Module>(
    module: &M,
    grads: &[GradientsParams],
) -> Result<GradientsParams, AdaDaGradError> {
    if grads.is_empty() {
        return Err(AdaDaGradError::TooFewGradients(0));
    }
    let mut averager = Averager {
        grads,
        path: Vec::new(),
        mean: GradientsParams::new(),
        error: None,
    };
    module.visit(&mut averager);
    match averager.error {
        Some(error) => Err(error),
        None => Ok(averager.mean),
    }
}

/// The gradients of `id` in every entry of `grads`: `Ok(None)` when it has none at all.
fn gradients_of<const D: usize>(
    grads: &[GradientsParams],
    id: ParamId,
    path: &[String],
) -> Result<Option<Vec<Tensor<D>>>, AdaDaGradError> {
    let found: Vec<Tensor<D>> = grads.iter().filter_map(|g| g.get::<D>(id)).collect();
    if found.is_empty() {
        Ok(None)
    } else if found.len() != grads.len() {
        Err(AdaDaGradError::MissingGradient {
            parameter: path.join("."),
            present: found.len(),
            total: grads.len(),
        })
    } else {
        Ok(Some(found))
    }
}

struct Collector {
    grads: Vec<GradientsParams>,
    path: Vec<String>,
    blocks: Vec<(String, Tensor<2>)>,
    mean: GradientsParams,
    error: Option<AdaDaGradError>,
}

impl ModuleVisitor for Collector {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if self.error.is_some() {
            return;
        }
        let found = match gradients_of::<D>(&self.grads, param.id, &self.path) {
            Ok(Some(found)) => found,
            Ok(None) => return,
            Err(e) => {
                self.error = Some(e);
                return;
            }
        };
        let shape = param.lazy_shape();
        if let Some(bad) = found.iter().find(|g| g.shape() != shape) {
            self.error = Some(AdaDaGradError::ShapeMismatch(format!(
                "the gradient of `{}` has shape {:?} but the parameter has {:?}",
                self.path.join("."),
                bad.dims(),
                shape
            )));
            return;
        }
        let dims = found[0].dims();
        let numel: usize = dims.iter().product();
        let rows: Vec<Tensor<1>> = found.into_iter().map(|g| g.reshape([numel])).collect();
        let block: Tensor<2> = Tensor::stack(rows, 0);
        self.mean
            .register::<D>(param.id, block.clone().mean_dim(0).reshape(dims));
        self.blocks.push((self.path.join("."), block));
    }
}

struct Averager<'a> {
    grads: &'a [GradientsParams],
    path: Vec<String>,
    mean: GradientsParams,
    error: Option<AdaDaGradError>,
}

impl ModuleVisitor for Averager<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if self.error.is_some() {
            return;
        }
        match gradients_of::<D>(self.grads, param.id, &self.path) {
            Ok(Some(found)) => {
                let count = found.len() as f64;
                let sum = found
                    .into_iter()
                    .reduce(|a, b| a + b)
                    .expect("at least one gradient");
                self.mean.register::<D>(param.id, sum.div_scalar(count));
            }
            Ok(None) => {}
            Err(e) => self.error = Some(e),
        }
    }
}
