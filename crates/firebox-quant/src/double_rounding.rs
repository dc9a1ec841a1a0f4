//! Double Rounding and adaptive bit switching (Huang et al., "Nearly Lossless Adaptive Bit
//! Switching", arXiv 2502.01199, 2025).
//!
//! **Double Rounding** (§3.1): one model is stored at the highest integer precision `h` (8
//! bits) with a symmetric step `s` per group; every lower precision `l` is derived from the
//! stored integers alone, by a second rounding:
//!
//! ```text
//! W_h = clamp(round(W / s), -2^(h-1), 2^(h-1) - 1)                 (stored, int8)
//! W_l = clamp(round(W_h / 2^(h-l)), -2^(l-1), 2^(l-1) - 1)          (derived)
//! Ŵ_l = W_l · s · 2^(h-l)
//! ```
//!
//! with round-half-to-even, so 8/6/4/2-bit models need no float copy and switching is a shift.
//! During joint training the same expression is the forward pass, with straight-through
//! rounding and a learned `s` shared by every precision ([`DoubleRoundingQuant`]).
//!
//! **ALRS** (§3.2, Adaptive Learning-Rate Scaling): the shared step receives gradients whose size
//! grows like `2^(h-l)` at low precision (`∂Ŵ_l/∂s = 2^(h-l)·W_l`), so the precisions compete.
//! [`Alrs`] keeps a running mean of the step-gradient norm per precision and scales the step's
//! learning rate at precision `l` by `‖g_h‖ / ‖g_l‖` (capped at 1), which equalises the update
//! size across precisions. The authors' code could not be obtained (see the fixtures README),
//! so this is our reading of the paper's description; it is marked as such in the docs.
//!
//! **HASB** (§3.3, Hessian-Aware Stochastic Bit-switching) for one-shot mixed precision: at
//! each iteration every layer samples its bit width; layers with a larger average Hessian trace
//! (HAWQ-V2's sensitivity, [`hawq`](crate::hawq)) are biased towards the higher widths:
//! `p_i(b_k) ∝ exp(β·τ_i·k)`, with `τ_i = t_i / max_j t_j ∈ [0, 1]` the normalised trace and `k`
//! the index of `b_k` among the increasing candidates ([`Hasb`]). `β = 0` is uniform switching.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use burn::module::{Module, Param, Reparameterization, Reparameterizer};
use burn::tensor::{Tensor, TensorData};
use rand::Rng;

use crate::QuantError;
use crate::affine::{QParams, Quantized};
use crate::capture::{self, Captured};
use crate::layout::RowLayout;
use crate::paths::{MapAtPath, map_at_paths};
use crate::ptq::{Selection, select_weights};
use crate::spec::{IntRange, Mode, QuantSpec};
use firebox_adapters::Targets;
use firebox_adapters::target::layer_of_weight;

/// The lower-precision codes derived from stored `h`-bit codes: `clamp(round(q / 2^(h-l)))` on
/// the signed `l`-bit grid, round-half-to-even (host reference).
///
/// # Panics
/// If `low` is 0 or above `high`.
pub fn derive_codes(codes: &[i32], high: u32, low: u32) -> Vec<i32> {
    assert!(
        low >= 1 && low <= high,
        "derive_codes: target width {low} must be in 1..={high}"
    );
    let div = (1i64 << (high - low)) as f64;
    let range = IntRange::new(low, true);
    codes
        .iter()
        .map(|&q| ((q as f64 / div).round_ties_even() as i32).clamp(range.min, range.max))
        .collect()
}

/// Double-Rounding fake quantization of `w` at `bits` from the `high`-bit grid with per-group
/// steps `step` (`[groups, 1]`), straight-through rounding (LSQ-style gradient for the step).
pub fn fake_quant_double_rounding<const D: usize>(
    w: Tensor<D>,
    step: Tensor<2>,
    layout: &RowLayout<D>,
    high: u32,
    bits: u32,
) -> Tensor<D> {
    let hi = IntRange::new(high, true);
    let lo = IntRange::new(bits, true);
    let shift = (1u64 << (high - bits)) as f32;
    let ste_round = |v: Tensor<2>| v.clone() + (v.clone().round() - v).detach();
    let rows = layout.to_rows(w);
    // `x · (1/s)` like every other quantizer here (PyTorch's order), so the codes match the
    // stored ones at the boundary ties that min-max calibration creates (±127.5).
    let q_high = ste_round(rows.mul(step.clone().recip())).clamp(hi.min as f32, hi.max as f32);
    let q_low = ste_round(q_high.div_scalar(shift)).clamp(lo.min as f32, lo.max as f32);
    layout.from_rows(q_low.mul(step).mul_scalar(shift))
}

/// Which bit width each layer of a Double-Rounding model runs at; shared by the model's
/// reparameterizations, so setting it switches the model in place.
#[derive(Clone, Debug, Default)]
pub struct BitSwitch {
    layers: Vec<(String, Arc<AtomicU32>)>,
}

impl BitSwitch {
    /// Every layer at `bits`.
    pub fn set_all(&self, bits: u32) {
        for (_, b) in &self.layers {
            b.store(bits, Ordering::Relaxed);
        }
    }

    /// One width per layer, in [`layers`](Self::layers) order.
    ///
    /// # Panics
    /// If the number of widths differs from the number of layers.
    pub fn set_each(&self, bits: &[u32]) {
        assert_eq!(
            bits.len(),
            self.layers.len(),
            "BitSwitch::set_each: {} widths for {} layers",
            bits.len(),
            self.layers.len()
        );
        for ((_, b), &w) in self.layers.iter().zip(bits) {
            b.store(w, Ordering::Relaxed);
        }
    }

    /// The layers, in module order.
    pub fn layers(&self) -> Vec<String> {
        self.layers.iter().map(|(l, _)| l.clone()).collect()
    }

    /// The current width of each layer.
    pub fn current(&self) -> Vec<u32> {
        self.layers
            .iter()
            .map(|(_, b)| b.load(Ordering::Relaxed))
            .collect()
    }
}

/// The Double-Rounding state of one weight: the learned step at the highest precision and the
/// switch giving the current width.
#[derive(Module, Debug)]
pub struct DoubleRoundingQuant {
    /// Learned per-group step of the `high`-bit grid, `[groups, 1]`.
    pub step: Param<Tensor<2>>,
    /// The stored precision and granularity (symmetric, signed).
    #[module(skip)]
    pub spec: QuantSpec,
    /// The current width.
    #[module(skip)]
    pub bits: Arc<AtomicU32>,
    /// The layer it was attached at.
    #[module(skip)]
    pub layer: String,
}

impl Reparameterization for DoubleRoundingQuant {
    const NAME: &'static str = "double_rounding";

    fn apply<const D: usize>(&self, base: Tensor<D>) -> Tensor<D> {
        let layout = RowLayout::new(base.dims(), self.spec.granularity);
        if capture::active() {
            let step = self.step.val().detach().abs().clamp_min(self.spec.eps);
            let params = QParams {
                zero_point: step.zeros_like(),
                scale: step,
            };
            let q = Quantized::with_qparams(base.clone().detach(), params, &self.spec);
            capture::record(Captured::of(&self.layer, &q));
            return base;
        }
        let step = self.step.val().abs().clamp_min(self.spec.eps);
        let bits = self.bits.load(Ordering::Relaxed);
        fake_quant_double_rounding(base, step, &layout, self.spec.bits, bits)
    }
}

/// Attaches Double-Rounding fake quantization (stored at `spec.bits`, symmetric) to the selected
/// weights, steps initialised by `spec`'s calibration; returns the model and its [`BitSwitch`]
/// (every layer starts at `spec.bits`).
pub fn prepare_double_rounding<M: Module>(
    model: M,
    targets: &Targets,
    spec: QuantSpec,
) -> Result<(M, BitSwitch), QuantError> {
    let selection = select_weights(&model, targets)?;
    for (layer, dims) in &selection.weights {
        spec.validate(layer, dims)?;
        if spec.mode != Mode::Symmetric || spec.range.min >= 0 {
            return Err(QuantError::Calibration {
                layer: layer.clone(),
                message: "Double Rounding stores a symmetric signed grid".to_string(),
            });
        }
    }
    let switch = BitSwitch {
        layers: selection
            .weights
            .iter()
            .map(|(l, _)| (l.clone(), Arc::new(AtomicU32::new(spec.bits))))
            .collect(),
    };
    let model = model.apply_reparameterization(DrAttacher {
        selection,
        spec,
        switch: switch.clone(),
    });
    Ok((model, switch))
}

struct DrAttacher {
    selection: Selection,
    spec: QuantSpec,
    switch: BitSwitch,
}

impl Reparameterizer for DrAttacher {
    type Reparam = DoubleRoundingQuant;

    fn reparameterize<const D: usize>(
        &mut self,
        path: &str,
        param: Param<Tensor<D>>,
    ) -> (Param<Tensor<D>>, Option<DoubleRoundingQuant>) {
        let Some(layer) = layer_of_weight(path).filter(|_| self.selection.contains_param(path))
        else {
            return (param, None);
        };
        let bits = self
            .switch
            .layers
            .iter()
            .find(|(l, _)| l == layer)
            .map(|(_, b)| b.clone())
            .expect("selected layers have a switch");
        let weight = param.base().detach();
        let scale = Quantized::calibrate(weight.clone(), &self.spec)
            .params
            .scale;
        // A fresh leaf on the weight's device (the calibration result is not one).
        let step = Param::from_tensor(Tensor::from_data(scale.into_data(), &weight.device()));
        (
            param,
            Some(DoubleRoundingQuant {
                step,
                spec: self.spec,
                bits,
                layer: layer.to_string(),
            }),
        )
    }
}

/// One stored integer weight: `h`-bit codes and per-group steps, on the host.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredWeight {
    /// The weight's shape.
    pub dims: Vec<usize>,
    /// Codes in [`RowLayout`] row order (`rows × per_row`).
    pub codes: Vec<i32>,
    /// One step per row.
    pub steps: Vec<f32>,
    /// Elements per row.
    pub per_row: usize,
}

/// The one stored model: every Double-Rounding weight at its highest precision.
#[derive(Clone, Debug)]
pub struct StoredModel {
    /// The stored precision.
    pub high_bits: u32,
    /// Per layer.
    pub weights: BTreeMap<String, StoredWeight>,
    spec: QuantSpec,
}

impl StoredModel {
    /// Captures the `h`-bit integers of every Double-Rounding weight of a trained `model`
    /// (see [`capture`](crate::capture) for how).
    pub fn capture<M: Module>(model: &M) -> Self {
        let (_, captured) = capture::capturing(|| model.clone().materialize());
        let spec = captured
            .first()
            .map(|c| c.spec)
            .unwrap_or_else(QuantSpec::int8);
        let weights = captured
            .into_iter()
            .map(|c| {
                let per_row = c.codes.len() / c.scale.len().max(1);
                (
                    c.layer,
                    StoredWeight {
                        dims: c.dims,
                        codes: c.codes,
                        steps: c.scale,
                        per_row,
                    },
                )
            })
            .collect();
        Self {
            high_bits: spec.bits,
            weights,
            spec,
        }
    }

    /// Stored size in bits (codes at `h` bits, f32 steps).
    pub fn size_bits(&self) -> u64 {
        self.weights
            .values()
            .map(|w| w.codes.len() as u64 * self.high_bits as u64 + 32 * w.steps.len() as u64)
            .sum()
    }

    /// The weights of `layer` at `bits`, dequantized from the stored integers by Double Rounding
    /// (row layout).
    pub fn dequantize_at(&self, layer: &str, bits: u32) -> Option<Vec<f32>> {
        let w = self.weights.get(layer)?;
        let shift = (1u64 << (self.high_bits - bits)) as f32;
        let codes = derive_codes(&w.codes, self.high_bits, bits);
        Some(
            codes
                .iter()
                .enumerate()
                .map(|(i, &q)| q as f32 * w.steps[i / w.per_row] * shift)
                .collect(),
        )
    }

    /// `model` (the trained Double-Rounding model, or any model with the same layers) with
    /// every stored layer's weight replaced by its `bits[layer]`-bit version (missing layers at
    /// `default_bits`), and the fake-quantization state dropped.
    pub fn model_at<M: Module>(
        &self,
        model: M,
        bits: &BTreeMap<String, u32>,
        default_bits: u32,
    ) -> M {
        let mut mapper = Derive {
            store: self,
            bits,
            default_bits,
        };
        // Drop the Double-Rounding reparameterizations first (Burn re-attaches a parameter's
        // reparameterization after mapping it); the mapper then overwrites the weights.
        map_at_paths(model.materialize(), &mut mapper)
    }
}

struct Derive<'a> {
    store: &'a StoredModel,
    bits: &'a BTreeMap<String, u32>,
    default_bits: u32,
}

impl MapAtPath for Derive<'_> {
    fn map_at<const D: usize>(&mut self, path: &str, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(layer) = layer_of_weight(path) else {
            return param;
        };
        let bits = self.bits.get(layer).copied().unwrap_or(self.default_bits);
        let Some(values) = self.store.dequantize_at(layer, bits) else {
            return param;
        };
        let device = param.lazy_device();
        let w = &self.store.weights[layer];
        let dims: [usize; D] = w.dims.clone().try_into().expect("stored rank");
        let layout = RowLayout::new(dims, self.store.spec.granularity);
        let rows =
            Tensor::<2>::from_data(TensorData::new(values, [w.steps.len(), w.per_row]), &device);
        Param::initialized(param.id, layout.from_rows(rows)).set_require_grad(false)
    }
}

/// Adaptive Learning-Rate Scaling of the shared steps (see the [module docs](self); our reading
/// of the paper, the reference code being unavailable).
#[derive(Clone, Debug)]
pub struct Alrs {
    high_bits: u32,
    momentum: f64,
    norms: BTreeMap<u32, f64>,
}

impl Alrs {
    /// ALRS for a model stored at `high_bits`, with running means of momentum `0.9`.
    pub fn new(high_bits: u32) -> Self {
        Self {
            high_bits,
            momentum: 0.9,
            norms: BTreeMap::new(),
        }
    }

    /// Records the step-gradient norm measured at `bits` and returns the lr factor for it:
    /// `min(1, ‖g_h‖ / ‖g_bits‖)` with running means (1 until the highest width was seen).
    pub fn observe(&mut self, bits: u32, grad_norm: f64) -> f64 {
        let m = self.momentum;
        let entry = self.norms.entry(bits).or_insert(grad_norm);
        *entry = m * *entry + (1.0 - m) * grad_norm;
        self.factor(bits)
    }

    /// The current lr factor at `bits`.
    pub fn factor(&self, bits: u32) -> f64 {
        match (self.norms.get(&self.high_bits), self.norms.get(&bits)) {
            (Some(&h), Some(&l)) if l > 0.0 && h.is_finite() => (h / l).min(1.0),
            _ => 1.0,
        }
    }
}

/// Hessian-aware stochastic bit switching (see the [module docs](self)).
#[derive(Clone, Debug)]
pub struct Hasb {
    /// Candidate widths, increasing.
    pub candidate_bits: Vec<u32>,
    /// Per-layer sampling probabilities over the candidates.
    pub probabilities: Vec<Vec<f64>>,
}

impl Hasb {
    /// Probabilities from per-layer average Hessian traces, with bias strength `beta` (≥ 0).
    ///
    /// # Panics
    /// If `candidate_bits` is empty or a trace is negative or not finite.
    pub fn new(traces: &[f64], candidate_bits: Vec<u32>, beta: f64) -> Self {
        assert!(!candidate_bits.is_empty(), "Hasb: no candidate bit widths");
        assert!(
            traces.iter().all(|t| t.is_finite() && *t >= 0.0),
            "Hasb: traces must be finite and non-negative, got {traces:?}"
        );
        let top = traces.iter().cloned().fold(0.0f64, f64::max);
        let probabilities = traces
            .iter()
            .map(|&t| {
                let tau = if top > 0.0 { t / top } else { 0.0 };
                let w: Vec<f64> = (0..candidate_bits.len())
                    .map(|k| (beta * tau * k as f64).exp())
                    .collect();
                let z: f64 = w.iter().sum();
                w.into_iter().map(|v| v / z).collect()
            })
            .collect();
        Self {
            candidate_bits,
            probabilities,
        }
    }

    /// One width per layer, sampled.
    pub fn sample<R: Rng>(&self, rng: &mut R) -> Vec<u32> {
        self.probabilities
            .iter()
            .map(|p| {
                let u: f64 = rng.random();
                let mut acc = 0.0;
                for (k, &pk) in p.iter().enumerate() {
                    acc += pk;
                    if u < acc {
                        return self.candidate_bits[k];
                    }
                }
                *self.candidate_bits.last().expect("non-empty")
            })
            .collect()
    }
}
