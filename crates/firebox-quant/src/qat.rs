//! Quantization-aware training of any Burn model: each selected weight gets a Burn
//! [`Reparameterization`] ([`WeightFakeQuant`], name `fake_quant`) so every forward pass, in any
//! layer code, sees the fake-quantized weight, and gradients reach the float weight through the
//! straight-through estimator (or the learned LSQ step, see [`fake_quant`](crate::fake_quant)).
//! Train with any Burn/firebox optimizer through `ModuleOptimizer`; then [`export_qat`] replaces
//! every fake-quantized weight by the real quantized tensor (Burn-native when Burn can execute
//! the scheme, see [`native`](crate::native)), whose forward equals the fake-quantized one up to
//! rounding ties.
//!
//! Activations are quantized where the model calls an
//! [`ActivationQuant`](crate::observer::ActivationQuant) (the equivalent of PyTorch's
//! `QuantStub`): Burn layers have no input hooks, so a generic pass cannot insert them.

use burn::module::{Module, Param, Reparameterization, Reparameterizer};
use burn::tensor::{Tensor, TensorData};

use crate::QuantError;
use crate::affine::{QParams, Quantized, calibrated_range, qparams_from_range};
use crate::capture::{self, Captured};
use crate::fake_quant::{fake_quant_lsq, fake_quant_ste};
use crate::layout::RowLayout;
use crate::native::{Stored, store};
use crate::paths::{MapAtPath, map_at_paths};
use crate::ptq::{Selection, select_weights};
use crate::spec::{Mode, QuantSpec};
use firebox_adapters::Targets;
use firebox_adapters::target::layer_of_weight;

/// What [`prepare_qat`] attaches.
#[derive(Clone, Debug)]
pub struct QatConfig {
    /// Which layers (module paths of layers owning a `weight`).
    pub targets: Targets,
    /// The weight scheme.
    pub spec: QuantSpec,
    /// Learn the steps (LSQ; symmetric schemes only) instead of recalibrating them from the
    /// current weights at every forward pass.
    pub learned_scale: bool,
}

/// The fake-quantization state of one weight.
#[derive(Module, Debug)]
pub struct WeightFakeQuant {
    /// LSQ's learned per-group steps `[groups, 1]`, when enabled.
    pub step: Option<Param<Tensor<2>>>,
    /// The scheme.
    #[module(skip)]
    pub spec: QuantSpec,
    /// The layer it was attached at.
    #[module(skip)]
    pub layer: String,
}

impl WeightFakeQuant {
    /// The parameters this weight quantizes with now: the learned steps, or a fresh calibration.
    pub fn qparams<const D: usize>(&self, weight: Tensor<D>) -> (QParams, RowLayout<D>) {
        let layout = RowLayout::new(weight.dims(), self.spec.granularity);
        let params = match &self.step {
            Some(step) => {
                let scale = step.val().detach().abs().clamp_min(self.spec.eps);
                QParams {
                    zero_point: scale.zeros_like(),
                    scale,
                }
            }
            None => {
                let rows = layout.to_rows(weight.detach());
                let s = &self.spec;
                let (lo, hi) = calibrated_range(rows, s.range, s.mode, s.clipping, s.eps);
                qparams_from_range(lo, hi, s.range, s.mode, s.eps)
            }
        };
        (params, layout)
    }
}

impl Reparameterization for WeightFakeQuant {
    const NAME: &'static str = "fake_quant";

    fn apply<const D: usize>(&self, base: Tensor<D>) -> Tensor<D> {
        if capture::active() {
            return self.apply_recorded(base);
        }
        match &self.step {
            Some(step) => {
                let layout = RowLayout::new(base.dims(), self.spec.granularity);
                fake_quant_lsq(
                    base,
                    step.val().abs().clamp_min(self.spec.eps),
                    &layout,
                    self.spec.range,
                )
            }
            None => {
                let (params, layout) = self.qparams(base.clone());
                fake_quant_ste(base, &params, &layout, self.spec.range)
            }
        }
    }
}

impl WeightFakeQuant {
    fn apply_recorded<const D: usize>(&self, base: Tensor<D>) -> Tensor<D> {
        let (params, _) = self.qparams(base.clone());
        let quantized = Quantized::with_qparams(base.detach(), params, &self.spec);
        capture::record(Captured::of(&self.layer, &quantized));
        quantized.dequantize()
    }
}

/// Attaches weight fake quantization to the selected layers of `model`. Errors name the layer
/// and value (a group size not dividing the dimension, a bit width out of range, LSQ with an
/// affine scheme, targets matching nothing); the model is returned untouched only on success.
pub fn prepare_qat<M: Module>(model: M, config: &QatConfig) -> Result<M, QuantError> {
    let selection = select_weights(&model, &config.targets)?;
    for (layer, dims) in &selection.weights {
        config.spec.validate(layer, dims)?;
        if config.learned_scale && config.spec.mode != Mode::Symmetric {
            return Err(QuantError::Calibration {
                layer: layer.clone(),
                message: "learned steps (LSQ) need a symmetric scheme".to_string(),
            });
        }
    }
    Ok(model.apply_reparameterization(Attacher {
        selection,
        config: config.clone(),
    }))
}

struct Attacher {
    selection: Selection,
    config: QatConfig,
}

impl Reparameterizer for Attacher {
    type Reparam = WeightFakeQuant;

    fn reparameterize<const D: usize>(
        &mut self,
        path: &str,
        param: Param<Tensor<D>>,
    ) -> (Param<Tensor<D>>, Option<WeightFakeQuant>) {
        if !self.selection.contains_param(path) {
            return (param, None);
        }
        let spec = self.config.spec;
        let step = self.config.learned_scale.then(|| {
            let weight = param.base().detach();
            let scale = Quantized::calibrate(weight.clone(), &spec).params.scale;
            // A fresh leaf on the weight's device (the calibration result is not one).
            Param::from_tensor(Tensor::from_data(scale.into_data(), &weight.device()))
        });
        let layer = layer_of_weight(path).unwrap_or(path).to_string();
        (param, Some(WeightFakeQuant { step, spec, layer }))
    }
}

/// Replaces every fake-quantized weight by its real quantized value (see the module docs) and
/// drops the fake-quantization state: the model's forward then equals the QAT model's, up to
/// rounding ties. Returns the model and how each weight was stored.
pub fn export_qat<M: Module>(model: M) -> (M, Vec<(String, Stored)>) {
    let (model, captured) = capture::capturing(|| model.materialize());
    store_captured(model, captured)
}

/// Stores every captured weight (by layer path) in its quantized form.
pub(crate) fn store_captured<M: Module>(
    model: M,
    captured: Vec<Captured>,
) -> (M, Vec<(String, Stored)>) {
    let mut exporter = Exporter {
        captured,
        stored: Vec::new(),
    };
    let model = map_at_paths(model, &mut exporter);
    (model, exporter.stored)
}

struct Exporter {
    captured: Vec<Captured>,
    stored: Vec<(String, Stored)>,
}

impl MapAtPath for Exporter {
    fn map_at<const D: usize>(&mut self, path: &str, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(layer) = layer_of_weight(path) else {
            return param;
        };
        let Some(c) = self.captured.iter().find(|c| c.layer == layer) else {
            return param;
        };
        let Ok(dims) = <[usize; D]>::try_from(c.dims.clone()) else {
            return param;
        };
        let device = param.lazy_device();
        let layout = RowLayout::new(dims, c.spec.granularity);
        let [rows, per_row] = layout.row_shape();
        let column =
            |v: &[f32]| Tensor::<2>::from_data(TensorData::new(v.to_vec(), [rows, 1]), &device);
        let codes: Vec<f32> = c.codes.iter().map(|&q| q as f32).collect();
        let codes = Tensor::<2>::from_data(TensorData::new(codes, [rows, per_row]), &device);
        let quantized = Quantized {
            codes: layout.from_rows(codes),
            params: QParams {
                scale: column(&c.scale),
                zero_point: column(&c.zero_point),
            },
            layout,
            spec: c.spec,
        };
        let (tensor, how) = store(&quantized);
        self.stored.push((layer.to_string(), how));
        Param::initialized(param.id, tensor).set_require_grad(false)
    }
}
