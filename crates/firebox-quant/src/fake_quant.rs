//! Fake quantization with gradients, for quantization-aware training.
//!
//! The forward pass is `x̂ = (clamp(round(x/s) + z) - z)·s`; `round` has zero gradient almost
//! everywhere, so training uses a **straight-through estimator** (Bengio et al. 2013; the
//! gradient PyTorch's `fake_quantize_per_*_affine` defines): `∂x̂/∂x = 1` where the code was not
//! clamped, `0` where it was. Built as `x·m + (x̂ - x·m).detach()` with the in-range mask `m`,
//! which has exactly that gradient and exactly the value `x̂`.
//!
//! **LSQ** (Esser et al. 2020, "Learned Step Size Quantization", Eq. 1–3, 5): the step `s` is a
//! parameter. `x̂ = ⌊clamp(x/s, -Q_N, Q_P)⌉·s` with the straight-through rounding
//! `⌊v⌉ = v + (round(v) - v).detach()` gives the paper's gradients for both `x` and `s`; the
//! step's gradient is scaled by `g = 1/√(N·Q_P)` (Eq. 4–5, `N` = elements per step) through
//! `s·g + (s - s·g).detach()`. LSQ is symmetric (zero point 0, signed grid).

use burn::tensor::Tensor;

use crate::affine::{QParams, dequantize_rows, quantize_rows};
use crate::layout::RowLayout;
use crate::spec::IntRange;

/// Straight-through fake quantization of `x` with fixed per-group parameters.
pub fn fake_quant_ste<const D: usize>(
    x: Tensor<D>,
    params: &QParams,
    layout: &RowLayout<D>,
    range: IntRange,
) -> Tensor<D> {
    if !x.is_require_grad() {
        // No gradient to shape: the plain fake quantization (same values).
        let rows = layout.to_rows(x);
        return layout.from_rows(dequantize_rows(quantize_rows(rows, params, range), params));
    }
    let rows = layout.to_rows(x.clone().detach());
    let inv = params.scale.clone().recip();
    let unclamped = rows.clone().mul(inv).round().add(params.zero_point.clone());
    let in_range = unclamped
        .clone()
        .greater_equal_elem(range.min as f32)
        .bool_and(unclamped.lower_equal_elem(range.max as f32));
    let fq = dequantize_rows(quantize_rows(rows, params, range), params);
    let fq = layout.from_rows(fq);
    let mask = layout.from_rows(in_range.float());
    let passed = x * mask;
    passed.clone() + (fq - passed).detach()
}

/// LSQ fake quantization of `x` with a learned per-group step `scale` (`[groups, 1]`, in
/// [`RowLayout`] row order), symmetric on the signed grid `range`.
pub fn fake_quant_lsq<const D: usize>(
    x: Tensor<D>,
    scale: Tensor<2>,
    layout: &RowLayout<D>,
    range: IntRange,
) -> Tensor<D> {
    let [_, per_group] = layout.row_shape();
    let g = 1.0 / ((per_group as f64) * range.max as f64).sqrt();
    let scaled = scale.clone().mul_scalar(g);
    let scale = scaled.clone() + (scale - scaled).detach();
    let rows = layout.to_rows(x);
    // `x · (1/s)`, PyTorch's order, so codes match the exported ones at ties.
    let v = rows
        .mul(scale.clone().recip())
        .clamp(range.min as f32, range.max as f32);
    let rounded = v.clone() + (v.clone().round() - v).detach();
    layout.from_rows(rounded.mul(scale))
}
