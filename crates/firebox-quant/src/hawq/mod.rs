//! HAWQ-V2 (Dong et al., "HAWQ-V2: Hessian Aware trace-Weighted Quantization of Neural
//! Networks", NeurIPS 2020): mixed precision without manual choices.
//!
//! 1. **Sensitivity** of layer `i` at `b` bits (Eq. 4–5 / §3.2): the average Hessian trace
//!    `Tr(H_i)/n_i` times the quantization perturbation `‖Q_b(W_i) - W_i‖²`. The traces come
//!    from Hutchinson's estimator with finite-difference Hessian-vector products
//!    ([`firebox_optim::curvature::hutchinson::hutchinson_traces`]: Burn has no double backward),
//!    the perturbations from the layer's scheme at each candidate bit width
//!    ([`weight_sensitivities`]). For activations (§3.4) the same estimator runs on the gradient
//!    with respect to the activation tensor ([`activation_trace`]).
//! 2. **Bit allocation** on the Pareto frontier (§3.3): among all configurations whose model size
//!    fits the budget, the one with the smallest total perturbation
//!    `Ω = Σ_i Tr(H_i)/n_i · ‖Q_{b_i}(W_i) - W_i‖²` ([`allocation`], exact).
//! 3. [`HawqPlan::ptq_config`] turns the allocation into per-layer schemes for
//!    [`quantize_weights`](crate::ptq::quantize_weights).

pub mod allocation;

use std::collections::BTreeMap;

use burn::module::{Module, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::{Distribution, Tensor};
use firebox_optim::curvature::hutchinson::hutchinson_traces;
use firebox_optim::curvature::hvp::StepSize;

use crate::QuantError;
use crate::affine::{Quantized, host};
use crate::paths::{VisitAtPath, visit_at_paths};
use crate::ptq::{PtqConfig, select_weights};
use crate::spec::QuantSpec;
use firebox_adapters::Targets;
use firebox_adapters::target::layer_of_weight;

pub use allocation::{Allocation, LayerSensitivity, allocate, pareto_frontier};

/// What HAWQ-V2 measures and allocates.
#[derive(Clone, Debug)]
pub struct HawqConfig {
    /// The layers whose precision is chosen.
    pub targets: Targets,
    /// The scheme, whose bit width is varied (granularity, mode, clipping kept).
    pub spec: QuantSpec,
    /// Candidate bit widths, increasing (e.g. `[2, 4, 8]`).
    pub candidate_bits: Vec<u32>,
    /// Hutchinson probes (the paper uses a few hundred for ImageNet models; tens suffice for
    /// small models, as the estimate's relative error falls like `1/√probes`).
    pub probes: usize,
}

/// Per-layer sensitivities of the selected weights (see the [module docs](self)).
///
/// `model` must live on an autodiff device with the selected weights trainable; `grad`
/// recomputes the loss on one fixed batch and returns its gradients (see
/// [`hvp`](firebox_optim::curvature::hvp::hvp)). Errors name the layer (bad scheme for a
/// candidate width, a weight without gradient).
pub fn weight_sensitivities<M, F>(
    model: &M,
    config: &HawqConfig,
    grad: F,
) -> Result<Vec<LayerSensitivity>, QuantError>
where
    M: Module,
    F: FnMut(&M) -> GradientsParams,
{
    let selection = select_weights(model, &config.targets)?;
    for (layer, dims) in &selection.weights {
        for &bits in &config.candidate_bits {
            config.spec.with_bits(bits).validate(layer, dims)?;
        }
    }
    let traces = hutchinson_traces(model, config.probes.max(1), StepSize::Auto, grad);
    let mut weights = WeightsById {
        found: BTreeMap::new(),
    };
    visit_at_paths(model, &mut weights);
    let mut out = Vec::new();
    for (layer, _) in &selection.weights {
        let Some((id, weight)) = weights.found.get(layer) else {
            continue;
        };
        let trace = traces
            .iter()
            .find(|t| t.id == *id)
            .ok_or_else(|| QuantError::Calibration {
                layer: layer.clone(),
                message: "the weight has no gradient (frozen, or not on an autodiff device)"
                    .to_string(),
            })?;
        let perturbation = config
            .candidate_bits
            .iter()
            .map(|&bits| perturbation(weight.clone(), &config.spec.with_bits(bits)))
            .collect();
        out.push(LayerSensitivity {
            name: layer.clone(),
            n_params: trace.numel,
            avg_hessian_trace: trace.trace / trace.numel as f64,
            perturbation,
        });
    }
    Ok(out)
}

/// `‖Q(W) - W‖²` under `spec`.
pub fn perturbation(weight: Tensor<2>, spec: &QuantSpec) -> f64 {
    let q = Quantized::calibrate(weight.clone(), spec).dequantize();
    host((q - weight).square().sum().into_data())[0] as f64
}

/// Hutchinson's estimate of `Tr(∂²L/∂a²)` for an activation `a`: `loss` maps the activation to
/// the (scalar, shape `[1]`) loss of the rest of the network on the same batch; its gradient
/// with respect to `a` is differenced at `a ± r·z` for Rademacher `z` (`r` as in
/// [`StepSize::Auto`], relative to `‖a‖`). `a` must be on an autodiff device.
///
/// # Panics
/// If `probes` is 0.
pub fn activation_trace<const D: usize, F>(activation: Tensor<D>, probes: usize, mut loss: F) -> f64
where
    F: FnMut(Tensor<D>) -> Tensor<1>,
{
    assert!(probes > 0, "activation_trace: `probes` must be at least 1");
    let a = activation.detach();
    let norm = host(a.clone().square().sum().into_data())[0] as f64;
    let mut grad_at = |x: Tensor<D>| -> Tensor<D> {
        let x = x.require_grad();
        let grads = loss(x.clone()).backward();
        x.grad(&grads)
            .map(Tensor::from_inner)
            .unwrap_or_else(|| x.zeros_like().detach())
    };
    let mut sum = 0.0;
    for _ in 0..probes {
        let z = Tensor::<D>::random(a.shape(), Distribution::Bernoulli(0.5), &a.device())
            .mul_scalar(2.0)
            .sub_scalar(1.0);
        let n = z.shape().num_elements() as f64;
        let r = firebox_optim::curvature::hvp::step_size(StepSize::Auto, norm.sqrt(), n.sqrt());
        let plus = grad_at(a.clone() + z.clone().mul_scalar(r));
        let minus = grad_at(a.clone() - z.clone().mul_scalar(r));
        let hz = (plus - minus).div_scalar(2.0 * r);
        sum += host((hz * z).sum().into_data())[0] as f64;
    }
    sum / probes as f64
}

/// The sensitivity of an activation for HAWQ-V2's allocation (§3.4): `trace` is its Hessian
/// trace over the batch `activation` (from [`activation_trace`]), averaged per element; the
/// perturbations are `‖Q_b(a) − a‖²` over that batch for each candidate width under `spec` (per
/// tensor, calibrated on the batch by `spec.clipping`). The "size" of an activation is its
/// elements per sample (`n_params` = numel / batch, the first axis), so a budget is activation
/// bits per sample. Errors name the activation (a bad scheme for a width, an empty batch).
pub fn activation_sensitivity<const D: usize>(
    name: &str,
    activation: Tensor<D>,
    trace: f64,
    spec: &QuantSpec,
    candidate_bits: &[u32],
) -> Result<LayerSensitivity, QuantError> {
    let dims = activation.dims();
    let numel: usize = dims.iter().product();
    if numel == 0 || D < 2 {
        return Err(QuantError::Shape {
            layer: name.to_string(),
            message: format!("an activation batch needs a batch axis and elements, got {dims:?}"),
        });
    }
    let flat: Tensor<2> = activation.detach().reshape([1, numel]);
    let per_tensor = QuantSpec {
        granularity: crate::spec::Granularity::PerTensor,
        ..*spec
    };
    let mut perturbations = Vec::new();
    for &bits in candidate_bits {
        let s = per_tensor.with_bits(bits);
        s.validate(name, &[1, numel])?;
        perturbations.push(perturbation(flat.clone(), &s));
    }
    Ok(LayerSensitivity {
        name: name.to_string(),
        n_params: numel / dims[0],
        avg_hessian_trace: trace / numel as f64,
        perturbation: perturbations,
    })
}

/// A HAWQ-V2 result: the sensitivities and the chosen allocation.
#[derive(Clone, Debug)]
pub struct HawqPlan {
    /// Per layer, in module order.
    pub layers: Vec<LayerSensitivity>,
    /// The candidate bit widths.
    pub candidate_bits: Vec<u32>,
    /// The optimum under the budget.
    pub allocation: Allocation,
    /// The scheme the bit widths apply to.
    pub spec: QuantSpec,
    /// The layer selection.
    pub targets: Targets,
}

impl HawqPlan {
    /// Allocates bits to `layers` under `budget_bits` (weights only: `Σ n_i·b_i`). A budget below
    /// the smallest possible model is an error giving that minimum.
    pub fn new(
        layers: Vec<LayerSensitivity>,
        config: &HawqConfig,
        budget_bits: u64,
    ) -> Result<Self, QuantError> {
        let allocation = allocate(&layers, &config.candidate_bits, budget_bits).map_err(|e| {
            QuantError::Budget {
                message: e.to_string(),
            }
        })?;
        Ok(Self {
            layers,
            candidate_bits: config.candidate_bits.clone(),
            allocation,
            spec: config.spec,
            targets: config.targets.clone(),
        })
    }

    /// Per-layer schemes for [`quantize_weights`](crate::ptq::quantize_weights).
    pub fn ptq_config(&self) -> PtqConfig {
        let mut config = PtqConfig::new(self.targets.clone(), self.spec);
        for (layer, &bits) in self.layers.iter().zip(&self.allocation.bits) {
            config
                .overrides
                .insert(layer.name.clone(), self.spec.with_bits(bits));
        }
        config
    }
}

struct WeightsById {
    found: BTreeMap<String, (ParamId, Tensor<2>)>,
}

impl VisitAtPath for WeightsById {
    fn visit_at<const D: usize>(&mut self, path: &str, param: &Param<Tensor<D>>) {
        if D == 2
            && let Some(layer) = layer_of_weight(path)
        {
            let value = param.val().detach();
            let dims = value.dims();
            let value: Tensor<2> = value.reshape([dims[0], dims[1..].iter().product::<usize>()]);
            self.found.insert(layer.to_string(), (param.id, value));
        }
    }
}
