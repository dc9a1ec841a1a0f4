//! Calibrated post-training quantization of a model's weights, selected by module path.
//!
//! [`quantize_weights`] calibrates every selected weight with its scheme (the default, or a
//! per-layer override, e.g. from [`hawq`](crate::hawq)), quantizes it, stores it (Burn-native
//! where Burn can execute the scheme, see [`native`](crate::native)) and reports per layer the
//! scheme, size and SQNR `10·log10(‖W‖² / ‖Ŵ - W‖²)`. Activation ranges come from
//! [`observer`](crate::observer).

use std::collections::BTreeMap;
use std::fmt;

use burn::module::{Module, Param};
use burn::tensor::Tensor;

use crate::QuantError;
use crate::affine::{Quantized, sqnr_db};
use crate::native::{Stored, store};
use crate::paths::{MapAtPath, VisitAtPath, map_at_paths, visit_at_paths};
use crate::spec::QuantSpec;
use firebox_adapters::Targets;
use firebox_adapters::target::layer_of_weight;

/// What [`quantize_weights`] does.
#[derive(Clone, Debug)]
pub struct PtqConfig {
    /// Which layers (module paths of layers owning a `weight`, e.g. `"*.fc1"`).
    pub targets: Targets,
    /// The scheme of every selected layer without an override.
    pub spec: QuantSpec,
    /// Per-layer schemes (layer path → scheme), e.g. a mixed-precision allocation.
    pub overrides: BTreeMap<String, QuantSpec>,
    /// Fail (naming the layer and the scheme) instead of storing dequantized floats when Burn
    /// cannot hold a layer's scheme natively on the model's backend.
    pub require_native: bool,
}

impl PtqConfig {
    /// One scheme for the selected layers.
    pub fn new(targets: Targets, spec: QuantSpec) -> Self {
        Self {
            targets,
            spec,
            overrides: BTreeMap::new(),
            require_native: false,
        }
    }

    /// The scheme of `layer`.
    pub fn spec_of(&self, layer: &str) -> QuantSpec {
        self.overrides.get(layer).copied().unwrap_or(self.spec)
    }
}

/// One quantized layer.
#[derive(Clone, Debug)]
pub struct LayerReport {
    /// The layer path.
    pub layer: String,
    /// The weight's shape.
    pub shape: Vec<usize>,
    /// The scheme's label.
    pub scheme: String,
    /// Bits per weight.
    pub bits: u32,
    /// SQNR in dB.
    pub sqnr_db: f64,
    /// Stored size in bits (codes, scales and zero points).
    pub size_bits: u64,
    /// How it is stored.
    pub stored: Stored,
}

/// Every quantized layer of a pass.
#[derive(Clone, Debug, Default)]
pub struct PtqReport {
    /// Per layer, in module order.
    pub layers: Vec<LayerReport>,
}

impl PtqReport {
    /// Total stored size of the quantized weights in bits.
    pub fn size_bits(&self) -> u64 {
        self.layers.iter().map(|l| l.size_bits).sum()
    }
}

impl fmt::Display for PtqReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<24} {:>12} {:<34} {:>9} {:>10}  stored",
            "layer", "shape", "scheme", "SQNR dB", "KiB"
        )?;
        for l in &self.layers {
            writeln!(
                f,
                "{:<24} {:>12} {:<34} {:>9.2} {:>10.2}  {}",
                l.layer,
                format!("{:?}", l.shape),
                l.scheme,
                l.sqnr_db,
                l.size_bits as f64 / 8192.0,
                l.stored.label()
            )?;
        }
        Ok(())
    }
}

/// The weights a [`Targets`] selection picks in a model.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// `(layer path, weight shape)` in module order.
    pub weights: Vec<(String, Vec<usize>)>,
}

impl Selection {
    /// Whether the parameter at `param_path` (`layer.weight`) is selected.
    pub fn contains_param(&self, param_path: &str) -> bool {
        layer_of_weight(param_path)
            .is_some_and(|layer| self.weights.iter().any(|(l, _)| l == layer))
    }
}

/// The selected layers' weights; an error lists the available layers when nothing matches.
pub fn select_weights<M: Module>(model: &M, targets: &Targets) -> Result<Selection, QuantError> {
    let matcher = targets.matcher().map_err(|e| QuantError::Targets {
        message: e.to_string(),
    })?;
    let mut visitor = WeightVisitor { found: Vec::new() };
    visit_at_paths(model, &mut visitor);
    let weights: Vec<(String, Vec<usize>)> = visitor
        .found
        .iter()
        .filter(|(layer, _)| matcher.matches(layer))
        .cloned()
        .collect();
    if weights.is_empty() {
        let available: Vec<&str> = visitor.found.iter().map(|(l, _)| l.as_str()).collect();
        return Err(QuantError::Targets {
            message: format!(
                "targets {targets:?} match no layer; layers with a weight: {}",
                available.join(", ")
            ),
        });
    }
    Ok(Selection { weights })
}

struct WeightVisitor {
    found: Vec<(String, Vec<usize>)>,
}

impl VisitAtPath for WeightVisitor {
    fn visit_at<const D: usize>(&mut self, path: &str, param: &Param<Tensor<D>>) {
        if let Some(layer) = layer_of_weight(path) {
            self.found
                .push((layer.to_string(), param.lazy_shape().as_slice().to_vec()));
        }
    }
}

/// Post-training quantization of the selected weights (see the [module docs](self)), returning
/// the quantized model; `model` itself is left as it is. Errors name the layer and the value:
/// options that do not fit a layer (checked before anything is quantized), weights holding NaN
/// or ±∞, and, with [`PtqConfig::require_native`], a scheme Burn cannot hold natively.
pub fn quantize_weights<M: Module>(
    model: &M,
    config: &PtqConfig,
) -> Result<(M, PtqReport), QuantError> {
    let selection = select_weights(model, &config.targets)?;
    for (layer, dims) in &selection.weights {
        config.spec_of(layer).validate(layer, dims)?;
    }
    let mut mapper = PtqMapper {
        selection,
        config: config.clone(),
        report: PtqReport::default(),
        error: None,
    };
    let model = map_at_paths(model.clone(), &mut mapper);
    match mapper.error {
        Some(e) => Err(e),
        None => Ok((model, mapper.report)),
    }
}

struct PtqMapper {
    selection: Selection,
    config: PtqConfig,
    report: PtqReport,
    error: Option<QuantError>,
}

impl MapAtPath for PtqMapper {
    fn map_at<const D: usize>(&mut self, path: &str, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if !self.selection.contains_param(path) {
            return param;
        }
        let layer = layer_of_weight(path).unwrap_or(path).to_string();
        let spec = self.config.spec_of(&layer);
        let weight = param.val().detach();
        let finite: bool = weight.clone().is_finite().all().into_scalar();
        if !finite {
            self.error.get_or_insert(QuantError::NonFinite {
                layer,
                what: "weights".to_string(),
            });
            return param;
        }
        let quantized = Quantized::calibrate(weight.clone(), &spec);
        let sqnr = sqnr_db(weight.clone(), quantized.dequantize());
        let (tensor, stored) = store(&quantized);
        if let (true, Stored::Simulated(why)) = (self.config.require_native, &stored) {
            self.error.get_or_insert(QuantError::UnsupportedBits {
                layer,
                bits: spec.bits,
                supported: format!(
                    "Burn cannot hold `{}` natively on this backend: {why}",
                    spec.label()
                ),
            });
            return param;
        }
        self.report.layers.push(LayerReport {
            shape: weight.dims().to_vec(),
            layer,
            scheme: spec.label(),
            bits: spec.bits,
            sqnr_db: sqnr,
            size_bits: quantized.size_bits(),
            stored,
        });
        Param::initialized(param.id, tensor).set_require_grad(false)
    }
}
