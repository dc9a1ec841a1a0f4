//! Adam and AdamW as drop-ins for Burn's, with a fused step.
//!
//! Kingma & Ba 2015 (*Adam*, Algorithm 1) and Loshchilov & Hutter 2019 (*Decoupled Weight Decay
//! Regularization*, Algorithm 2), computed exactly as Burn 0.22.1's `Adam` and `AdamW` compute
//! them: the same f32 operations in the same order, so the fused loop and Burn's tensor ops give
//! the same bits on flex and ndarray. The two differ in Burn (and here) beyond weight decay:
//!
//! ```text
//! Adam:   g = g + wd·θ (coupled, optional)
//!         m = β1·m + (1−β1)·g,   v = β2·v + (1−β2)·g²,   [v̂max = max(v̂max, v)]
//!         θ = θ − lr · (m·√(1−β2ᵗ)/(1−β1ᵗ)) / (√v + ε·√(1−β2ᵗ))
//! AdamW:  m, v as above (no coupled decay)
//!         θ = θ·(1 − lr·wd) − lr · (m/(1−β1ᵗ)) / (√(v/(1−β2ᵗ)) + ε)
//!         (cautious: the decay is skipped where θ and m differ in sign)
//! ```

use burn::config::Config;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::grad_clipping::GradientClippingConfig;
use burn::optim::{
    Adam, AdamConfig, AdamState, AdamW, AdamWConfig, AdamWState, AdaptiveMomentumState,
    LearningRate, ModuleOptimizer, Optimizer,
};
use burn::tensor::{Device, Tensor};

use super::rule::{AdamConstants, DeviceRule};
use super::{Fused, StepInputs, try_step_on};

/// [`FusedAdamW`]'s configuration: the fields and defaults of Burn's `AdamWConfig` (β = 0.9 /
/// 0.999, ε = 1e-5, weight decay 1e-4).
#[derive(Config, Debug)]
pub struct FusedAdamWConfig {
    /// β1.
    #[config(default = 0.9)]
    pub beta_1: f32,
    /// β2.
    #[config(default = 0.999)]
    pub beta_2: f32,
    /// ε added to `√v̂`.
    #[config(default = 1e-5)]
    pub epsilon: f32,
    /// Decoupled weight decay (`θ ← θ·(1 − lr·wd)`).
    #[config(default = 1e-4)]
    pub weight_decay: f32,
    /// Cautious weight decay (Chen et al. 2025, arXiv:2510.12402): no decay where θ and m differ
    /// in sign.
    #[config(default = false)]
    pub cautious_weight_decay: bool,
    /// AMSGrad: the running maximum of v in the denominator.
    #[config(default = false)]
    pub amsgrad: bool,
    /// Per-tensor gradient clipping applied by the `ModuleOptimizer` (Burn's).
    pub grad_clipping: Option<GradientClippingConfig>,
}

impl FusedAdamWConfig {
    /// The per-tensor optimizer.
    pub fn build(&self) -> FusedAdamW {
        let burn = AdamWConfig::new()
            .with_beta_1(self.beta_1)
            .with_beta_2(self.beta_2)
            .with_epsilon(self.epsilon)
            .with_weight_decay(self.weight_decay)
            .with_amsgrad(self.amsgrad)
            .with_cautious_weight_decay(self.cautious_weight_decay)
            .build();
        FusedAdamW {
            config: self.clone(),
            fallback: burn,
        }
    }

    /// A `ModuleOptimizer` over a whole module, with the configured gradient clipping.
    pub fn init(&self) -> ModuleOptimizer {
        with_clipping(ModuleOptimizer::from(self.build()), &self.grad_clipping)
    }
}

/// [`FusedAdam`]'s configuration: the fields and defaults of Burn's `AdamConfig` (β = 0.9 / 0.999,
/// ε = 1e-5, no weight decay).
#[derive(Config, Debug)]
pub struct FusedAdamConfig {
    /// β1.
    #[config(default = 0.9)]
    pub beta_1: f32,
    /// β2.
    #[config(default = 0.999)]
    pub beta_2: f32,
    /// ε, scaled by `√(1−β2ᵗ)` as in Burn.
    #[config(default = 1e-5)]
    pub epsilon: f32,
    /// AMSGrad: the running maximum of v in the denominator.
    #[config(default = false)]
    pub amsgrad: bool,
    /// Coupled L2 penalty added to the gradient.
    pub weight_decay: Option<WeightDecayConfig>,
    /// Per-tensor gradient clipping applied by the `ModuleOptimizer` (Burn's).
    pub grad_clipping: Option<GradientClippingConfig>,
}

impl FusedAdamConfig {
    /// The per-tensor optimizer.
    pub fn build(&self) -> FusedAdam {
        let burn = AdamConfig::new()
            .with_beta_1(self.beta_1)
            .with_beta_2(self.beta_2)
            .with_epsilon(self.epsilon)
            .with_amsgrad(self.amsgrad)
            .with_weight_decay(self.weight_decay.clone())
            .build();
        FusedAdam {
            config: self.clone(),
            fallback: burn,
        }
    }

    /// A `ModuleOptimizer` over a whole module, with the configured gradient clipping.
    pub fn init(&self) -> ModuleOptimizer {
        with_clipping(ModuleOptimizer::from(self.build()), &self.grad_clipping)
    }
}

pub(super) fn with_clipping(
    optim: ModuleOptimizer,
    clipping: &Option<GradientClippingConfig>,
) -> ModuleOptimizer {
    match clipping {
        Some(config) => optim.with_grad_clipping(config.init()),
        None => optim,
    }
}

/// AdamW with a fused step; see the [module docs](self) and [`fused`](super).
#[derive(Clone)]
pub struct FusedAdamW {
    config: FusedAdamWConfig,
    fallback: AdamW,
}

/// Adam with a fused step; see the [module docs](self) and [`fused`](super).
#[derive(Clone)]
pub struct FusedAdam {
    config: FusedAdamConfig,
    fallback: Adam,
}

/// Step constants, in the precision Burn uses for each.
#[derive(Clone, Copy)]
struct Constants {
    beta_1: f32,
    beta_2: f32,
    factor_1: f32,
    factor_2: f32,
}

impl Constants {
    fn new(beta_1: f32, beta_2: f32) -> Self {
        Self {
            beta_1,
            beta_2,
            factor_1: 1.0 - beta_1,
            factor_2: 1.0 - beta_2,
        }
    }

    /// `[β1, β2, 1 − β1, 1 − β2]`, as the device kernel takes them.
    fn array(&self) -> [f32; 4] {
        [self.beta_1, self.beta_2, self.factor_1, self.factor_2]
    }

    /// The moment updates shared by Adam and AdamW; returns the v used in the denominator.
    #[inline(always)]
    fn moments(&self, g: f32, m: &mut f32, v: &mut f32, v_max: Option<&mut f32>) -> f32 {
        *m = *m * self.beta_1 + g * self.factor_1;
        *v = *v * self.beta_2 + g * g * self.factor_2;
        match v_max {
            Some(max) => {
                *max = max.max(*v);
                *max
            }
            None => *v,
        }
    }
}

/// The moment state as the fused loop sees it: `[m, v]` or `[m, v, v_max]`.
fn split<const D: usize>(
    state: Option<AdaptiveMomentumState<D>>,
) -> (usize, [Option<Tensor<D>>; 3]) {
    match state {
        Some(s) => (s.time, [Some(s.moment_1), Some(s.moment_2), s.max_moment_2]),
        None => (0, [None, None, None]),
    }
}

fn join<const D: usize>(
    time: usize,
    [m, v, max]: [Option<Tensor<D>>; 3],
) -> Option<AdaptiveMomentumState<D>> {
    match (m, v) {
        (Some(moment_1), Some(moment_2)) => Some(AdaptiveMomentumState {
            time,
            moment_1,
            moment_2,
            max_moment_2: max,
        }),
        _ => None,
    }
}

/// The inputs handed back when the fused path does not apply.
type Declined<const D: usize> = (Tensor<D>, Tensor<D>, Option<AdaptiveMomentumState<D>>);

/// Runs `update` fused with `[m, v]` (or `[m, v, v_max]` with AMSGrad) as state; `Err` hands the
/// inputs back with the state rebuilt.
fn fused_moments<const D: usize>(
    amsgrad: bool,
    tensor: Tensor<D>,
    grad: Tensor<D>,
    state: Option<AdaptiveMomentumState<D>>,
    update2: impl Fn(&mut f32, f32, &mut f32, &mut f32, Option<&mut f32>) + Sync + Copy,
    rule: DeviceRule,
) -> Result<(Tensor<D>, AdaptiveMomentumState<D>), Box<Declined<D>>> {
    let (time, [m, v, max]) = split(state);
    let time = time + 1;
    if amsgrad {
        let inputs = StepInputs {
            param: tensor,
            reads: [grad],
            states: [m, v, max],
        };
        let update = move |p: &mut f32, [g]: [f32; 1], [m, v, mx]: &mut [f32; 3]| {
            update2(p, g, m, v, Some(mx))
        };
        // The same kernel constants, with the running maximum as a third state.
        let rule = match rule {
            DeviceRule::Adam(c) => DeviceRule::AdamAmsgrad(c),
            other => other,
        };
        match try_step_on(inputs, [0.0, 0.0, f32::NEG_INFINITY], &update, rule) {
            Fused::Done(p, [m, v, mx]) => {
                Ok((p, join(time, [Some(m), Some(v), Some(mx)]).expect("m, v")))
            }
            Fused::Declined(back) => {
                let [g] = back.reads;
                Err(Box::new((back.param, g, join(time - 1, back.states))))
            }
        }
    } else {
        let inputs = StepInputs {
            param: tensor,
            reads: [grad],
            states: [m, v],
        };
        let update =
            move |p: &mut f32, [g]: [f32; 1], [m, v]: &mut [f32; 2]| update2(p, g, m, v, None);
        match try_step_on(inputs, [0.0, 0.0], &update, rule) {
            Fused::Done(p, [m, v]) => Ok((p, join(time, [Some(m), Some(v), max]).expect("m, v"))),
            Fused::Declined(back) => {
                let [m, v] = back.states;
                let [g] = back.reads;
                Err(Box::new((back.param, g, join(time - 1, [m, v, max]))))
            }
        }
    }
}

impl Optimizer for FusedAdamW {
    type State<const D: usize> = AdamWState<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        let c = &self.config;
        let time = state.as_ref().map_or(0, |s| s.momentum.time) + 1;
        let moments = Constants::new(c.beta_1, c.beta_2);
        let t = time as i32;
        let (bias_1, bias_2) = (1f32 - c.beta_1.powi(t), 1f32 - c.beta_2.powi(t));
        let eps = c.epsilon;
        let decay_rate = lr * c.weight_decay as f64;
        let (keep, decay_rate_32) = ((1.0 - decay_rate) as f32, decay_rate as f32);
        let lr_32 = lr as f32;
        let cautious = c.cautious_weight_decay;
        let update = move |p: &mut f32, g: f32, m: &mut f32, v: &mut f32, max: Option<&mut f32>| {
            let v_used = moments.moments(g, m, v, max);
            let delta = (*m / bias_1) / ((v_used / bias_2).sqrt() + eps);
            let decayed = if decay_rate == 0.0 {
                *p
            } else if cautious {
                let differ = (*p >= 0.0) != (*m >= 0.0);
                *p - if differ { 0.0 } else { *p * decay_rate_32 }
            } else {
                *p * keep
            };
            *p = decayed - delta * lr_32;
        };
        let cautious_decay = cautious && decay_rate != 0.0;
        let rule = DeviceRule::Adam(AdamConstants {
            moments: moments.array(),
            scale_1: bias_1,
            scale_2: bias_2,
            eps,
            lr: lr_32,
            decay: if cautious_decay { decay_rate_32 } else { keep },
            decays: decay_rate != 0.0,
            decoupled: true,
            cautious: cautious_decay,
        });
        let momentum = state.map(|s| s.momentum);
        match fused_moments(c.amsgrad, tensor, grad, momentum, update, rule) {
            Ok((p, momentum)) => (p, Some(AdamWState { momentum })),
            Err(back) => {
                let (tensor, grad, momentum) = *back;
                self.fallback.step(
                    lr,
                    tensor,
                    grad,
                    momentum.map(|momentum| AdamWState { momentum }),
                )
            }
        }
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &Device) -> Self::State<D> {
        AdamW::to_device(state, device)
    }
}

impl Optimizer for FusedAdam {
    type State<const D: usize> = AdamState<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        let c = &self.config;
        let time = state.as_ref().map_or(0, |s| s.momentum.time) + 1;
        let moments = Constants::new(c.beta_1, c.beta_2);
        let t = time as i32;
        let bias_2_sqrt = (1.0 - c.beta_2.powi(t)).sqrt();
        let combined = bias_2_sqrt / (1.0 - c.beta_1.powi(t));
        let eps = c.epsilon * bias_2_sqrt;
        let penalty = c.weight_decay.as_ref().map(|w| w.penalty);
        let lr_32 = lr as f32;
        let update = move |p: &mut f32, g: f32, m: &mut f32, v: &mut f32, max: Option<&mut f32>| {
            let g = match penalty {
                Some(penalty) => *p * penalty + g,
                None => g,
            };
            let v_used = moments.moments(g, m, v, max);
            let delta = (*m * combined) / (v_used.sqrt() + eps);
            *p -= delta * lr_32;
        };
        let rule = DeviceRule::Adam(AdamConstants {
            moments: moments.array(),
            scale_1: combined,
            scale_2: 1.0,
            eps,
            lr: lr_32,
            decay: penalty.unwrap_or(0.0),
            decays: penalty.is_some(),
            decoupled: false,
            cautious: false,
        });
        let momentum = state.map(|s| s.momentum);
        match fused_moments(c.amsgrad, tensor, grad, momentum, update, rule) {
            Ok((p, momentum)) => (p, Some(AdamState { momentum })),
            Err(back) => {
                let (tensor, grad, momentum) = *back;
                self.fallback.step(
                    lr,
                    tensor,
                    grad,
                    momentum.map(|momentum| AdamState { momentum }),
                )
            }
        }
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &Device) -> Self::State<D> {
        Adam::to_device(state, device)
    }
}
