//! Uniform (affine / symmetric) integer quantization with PyTorch's exact arithmetic.
//!
//! For each scale group (a row of the [`RowLayout`]) with observed range `[min, max]`
//! (PyTorch `torch.ao.quantization.observer._calculate_qparams`; Jacob et al. 2018, Eq. 1–2):
//!
//! ```text
//! min⁻ = min(min, 0),  max⁺ = max(max, 0)
//! symmetric: scale = max(max(-min⁻, max⁺) / ((q_max - q_min) / 2), eps),  zero = fixed
//! affine:    scale = max((max⁺ - min⁻) / (q_max - q_min), eps)
//!            zero  = clamp(q_min - round(min⁻ / scale), q_min, q_max)
//! q       = clamp(round(x · (1 / scale)) + zero, q_min, q_max)
//! x̂       = (q - zero) · scale
//! ```
//!
//! in float32 with one rounding per operation and `round` = round-half-to-even. The reciprocal is
//! taken first and multiplied (PyTorch never computes `x / scale`), which decides the code of
//! values within an ulp of a rounding boundary. Because the range always contains 0, zero is
//! exactly representable, and every `x ∈ [min⁻, max⁺]` is reproduced within half a step
//! (`|x̂ - x| ≤ scale / 2`); values outside are clamped to the grid's ends.

use burn::tensor::{Tensor, TensorData};

use crate::layout::RowLayout;
use crate::spec::{Clipping, IntRange, Mode, QuantSpec};

/// Per-row scale and zero point, `[rows, 1]` each (zero points are integer-valued floats).
#[derive(Clone, Debug)]
pub struct QParams {
    /// The step between codes.
    pub scale: Tensor<2>,
    /// The code of real 0.
    pub zero_point: Tensor<2>,
}

/// Scale and zero point from an observed per-row range `min_val`, `max_val` (`[rows, 1]`).
pub fn qparams_from_range(
    min_val: Tensor<2>,
    max_val: Tensor<2>,
    range: IntRange,
    mode: Mode,
    eps: f32,
) -> QParams {
    let min_neg = min_val.clamp_max(0.0);
    let max_pos = max_val.clamp_min(0.0);
    match mode {
        Mode::Symmetric => {
            let half = (range.max - range.min) as f32 / 2.0;
            let amax = min_neg.neg().max_pair(max_pos);
            let scale = amax.div_scalar(half).clamp_min(eps);
            let zero = scale.zeros_like().add_scalar(range.symmetric_zero_point());
            QParams {
                scale,
                zero_point: zero,
            }
        }
        Mode::Affine => {
            let width = (range.max - range.min) as f32;
            let scale = (max_pos - min_neg.clone()).div_scalar(width).clamp_min(eps);
            let zero = min_neg
                .div(scale.clone())
                .round()
                .neg()
                .add_scalar(range.min)
                .clamp(range.min, range.max);
            QParams {
                scale,
                zero_point: zero,
            }
        }
    }
}

/// Integer codes of `rows` (as floats): `clamp(round(x · (1/scale)) + zero, q_min, q_max)`.
pub fn quantize_rows(rows: Tensor<2>, params: &QParams, range: IntRange) -> Tensor<2> {
    let inv = params.scale.clone().recip();
    rows.mul(inv)
        .round()
        .add(params.zero_point.clone())
        .clamp(range.min, range.max)
}

/// Real values of codes: `(q - zero) · scale`.
pub fn dequantize_rows(codes: Tensor<2>, params: &QParams) -> Tensor<2> {
    codes
        .sub(params.zero_point.clone())
        .mul(params.scale.clone())
}

/// Per-row observed range of `rows` under a clipping rule: `([rows,1] min, [rows,1] max)`.
///
/// Percentile clipping sorts each row; MSE clipping tries every ratio and keeps, per row, the one
/// with the smallest squared error (the first one on ties, largest ratio first).
pub fn calibrated_range(
    rows: Tensor<2>,
    range: IntRange,
    mode: Mode,
    clipping: Clipping,
    eps: f32,
) -> (Tensor<2>, Tensor<2>) {
    let min_val = rows.clone().min_dim(1);
    let max_val = rows.clone().max_dim(1);
    match clipping {
        Clipping::MinMax => (min_val, max_val),
        Clipping::Percentile(p) => percentile_range(rows, mode, p),
        Clipping::Mse { grid, min_ratio } => {
            let mut best: Option<(Tensor<2>, Tensor<2>, Tensor<2>)> = None;
            for i in 0..grid {
                let ratio = if grid == 1 {
                    1.0
                } else {
                    1.0 - (1.0 - min_ratio) * i as f64 / (grid - 1) as f64
                };
                let lo = min_val.clone().mul_scalar(ratio);
                let hi = max_val.clone().mul_scalar(ratio);
                let params = qparams_from_range(lo.clone(), hi.clone(), range, mode, eps);
                let fq = dequantize_rows(quantize_rows(rows.clone(), &params, range), &params);
                let err = (fq - rows.clone()).square().sum_dim(1);
                best = Some(match best {
                    None => (err, lo, hi),
                    Some((best_err, best_lo, best_hi)) => {
                        let better = err.clone().lower(best_err.clone());
                        (
                            best_err.mask_where(better.clone(), err),
                            best_lo.mask_where(better.clone(), lo),
                            best_hi.mask_where(better, hi),
                        )
                    }
                });
            }
            let (_, lo, hi) = best.expect("grid >= 1 is validated");
            (lo, hi)
        }
    }
}

/// The `p`-th percentile per row (nearest rank): of `|x|` for symmetric grids (returned as
/// `[-a, a]`), of `x` at `100 - p` and `p` for affine ones.
fn percentile_range(rows: Tensor<2>, mode: Mode, p: f64) -> (Tensor<2>, Tensor<2>) {
    let [m, n] = rows.dims();
    let rank = |q: f64| (((q / 100.0) * n as f64).ceil() as usize).clamp(1, n) - 1;
    match mode {
        Mode::Symmetric => {
            let sorted = rows.abs().sort(1);
            let k = rank(p);
            let a = sorted.slice([0..m, k..k + 1]);
            (a.clone().neg(), a)
        }
        Mode::Affine => {
            let sorted = rows.sort(1);
            let hi = rank(p);
            let lo = rank(100.0 - p);
            let lo = lo.min(hi);
            (
                sorted.clone().slice([0..m, lo..lo + 1]),
                sorted.slice([0..m, hi..hi + 1]),
            )
        }
    }
}

/// A tensor quantized under a [`QuantSpec`]: integer codes with their scales and zero points.
/// The codes are kept as integer-valued floats on the tensor's device (exact for ≤ 8 bits).
#[derive(Clone, Debug)]
pub struct Quantized<const D: usize> {
    /// The codes, in the tensor's shape.
    pub codes: Tensor<D>,
    /// Per-group parameters, `[groups, 1]` in [`RowLayout`] row order.
    pub params: QParams,
    /// How groups map to the tensor.
    pub layout: RowLayout<D>,
    /// The scheme.
    pub spec: QuantSpec,
}

impl<const D: usize> Quantized<D> {
    /// Quantizes `tensor` with parameters calibrated on the tensor itself by `spec.clipping`.
    /// `spec` must have been validated for this shape ([`QuantSpec::validate`]).
    pub fn calibrate(tensor: Tensor<D>, spec: &QuantSpec) -> Self {
        let layout = RowLayout::new(tensor.dims(), spec.granularity);
        let rows = layout.to_rows(tensor);
        let (lo, hi) =
            calibrated_range(rows.clone(), spec.range, spec.mode, spec.clipping, spec.eps);
        let params = qparams_from_range(lo, hi, spec.range, spec.mode, spec.eps);
        Self::with_params(rows, params, layout, spec)
    }

    /// Quantizes `tensor` with given parameters (e.g. from an activation observer).
    pub fn with_qparams(tensor: Tensor<D>, params: QParams, spec: &QuantSpec) -> Self {
        let layout = RowLayout::new(tensor.dims(), spec.granularity);
        let rows = layout.to_rows(tensor);
        Self::with_params(rows, params, layout, spec)
    }

    fn with_params(
        rows: Tensor<2>,
        params: QParams,
        layout: RowLayout<D>,
        spec: &QuantSpec,
    ) -> Self {
        let codes = layout.from_rows(quantize_rows(rows, &params, spec.range));
        Self {
            codes,
            params,
            layout,
            spec: *spec,
        }
    }

    /// The real values the codes stand for.
    pub fn dequantize(&self) -> Tensor<D> {
        let rows = self.layout.to_rows(self.codes.clone());
        self.layout.from_rows(dequantize_rows(rows, &self.params))
    }

    /// Per-element scale, in the tensor's shape.
    pub fn scales(&self) -> Tensor<D> {
        self.layout.broadcast(self.params.scale.clone())
    }

    /// The codes read back to the host as integers (row-major).
    pub fn codes_i32(&self) -> Vec<i32> {
        host(self.codes.clone().into_data())
            .into_iter()
            .map(|v| v as i32)
            .collect()
    }

    /// Storage in bits: `bits` per element plus 32 per scale (and 8 per zero point if affine).
    pub fn size_bits(&self) -> u64 {
        let n: usize = self.layout.dims.iter().product();
        let [groups, _] = self.layout.row_shape();
        let per_group = 32 + if self.spec.mode == Mode::Affine { 8 } else { 0 };
        n as u64 * self.spec.bits as u64 + groups as u64 * per_group
    }
}

/// Fake quantization without gradients: `dequantize(quantize(x))` calibrated on `x`.
pub fn fake_quantize<const D: usize>(tensor: Tensor<D>, spec: &QuantSpec) -> Tensor<D> {
    Quantized::calibrate(tensor, spec).dequantize()
}

/// Signal-to-quantization-noise ratio in dB, `10·log10(‖x‖² / ‖x̂ - x‖²)`; `+∞` when exact.
pub fn sqnr_db<const D: usize>(original: Tensor<D>, approx: Tensor<D>) -> f64 {
    let signal = original.clone().square().sum();
    let noise = (approx - original).square().sum();
    let values = host(Tensor::cat(vec![signal, noise], 0).into_data());
    let (s, n) = (values[0] as f64, values[1] as f64);
    if n == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (s / n).log10()
    }
}

/// A float tensor's values on the host.
pub(crate) fn host(data: TensorData) -> Vec<f32> {
    data.convert::<f32>()
        .try_into_vec::<f32>()
        .expect("float tensor data")
}
