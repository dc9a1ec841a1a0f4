//! Adan as a drop-in for Burn's, with a fused step.
//!
//! Xie, Zhou, Li, Lin, Yan, *Adan: Adaptive Nesterov Momentum Algorithm for Faster Optimizing
//! Deep Models*, TPAMI 2024 (arXiv:2208.06677), Algorithm 1, computed exactly as Burn 0.22.1's
//! `Adan` computes it (β are the reference code's EMA decays, as in Burn):
//!
//! ```text
//! step 1:  m = (1−β1)·g,  v = (1−β3)·g²,  d = 0,  p = −g
//! later:   Δ = p + g;  m = β1·m + (1−β1)·g;  d = β2·d + (1−β2)·Δ;
//!          v = β3·v + (1−β3)·(β2·Δ + g)²;  p = −g
//! η = √v/√(1−β3ᵗ) + ε;   u = (m/(1−β1ᵗ))/η + (β2·d/(1−β2ᵗ))/η
//! proximal (default): θ = (θ − lr·u)/(1 + lr·wd);   no_prox: θ = θ·(1 − lr·wd) − lr·u
//! ```
//!
//! Global-norm clipping ([`clip_grad_norm`](crate::clip::clip_grad_norm)) and restart
//! ([`restart`](crate::restart::restart)) work on it as on Burn's `Adan`: clipping acts on the
//! gradients before the step, restart drops the state.

use burn::config::Config;
use burn::optim::grad_clipping::GradientClippingConfig;
use burn::optim::{
    Adan, AdanConfig, AdanState, AdaptiveNesterovMomentumState, LearningRate, ModuleOptimizer,
    Optimizer,
};
use burn::tensor::{Device, Tensor};

use super::adamw::with_clipping;
use super::rule::{AdanConstants, AdanDecay, DeviceRule};
use super::{Fused, StepInputs, try_step_on};

/// [`FusedAdan`]'s configuration: the fields and defaults of Burn's `AdanConfig` (decays 0.98,
/// 0.92, 0.99, ε = 1e-8, no weight decay, proximal decay).
#[derive(Config, Debug)]
pub struct FusedAdanConfig {
    /// EMA decay of the gradient (the paper's 1 − β1).
    #[config(default = 0.98)]
    pub beta_1: f32,
    /// EMA decay of the gradient difference (the paper's 1 − β2).
    #[config(default = 0.92)]
    pub beta_2: f32,
    /// EMA decay of the squared Nesterov gradient (the paper's 1 − β3).
    #[config(default = 0.99)]
    pub beta_3: f32,
    /// ε added to the corrected `√v`.
    #[config(default = 1e-8)]
    pub epsilon: f32,
    /// Weight decay (proximal by default).
    #[config(default = 0.0)]
    pub weight_decay: f32,
    /// Decay as `θ·(1 − lr·wd)` before the step instead of the proximal `/(1 + lr·wd)` after it.
    #[config(default = false)]
    pub no_prox: bool,
    /// Per-tensor gradient clipping applied by the `ModuleOptimizer` (Burn's).
    pub grad_clipping: Option<GradientClippingConfig>,
}

impl FusedAdanConfig {
    /// The per-tensor optimizer.
    pub fn build(&self) -> FusedAdan {
        let burn = AdanConfig::new()
            .with_beta_1(self.beta_1)
            .with_beta_2(self.beta_2)
            .with_beta_3(self.beta_3)
            .with_epsilon(self.epsilon)
            .with_weight_decay(self.weight_decay)
            .with_no_prox(self.no_prox)
            .build();
        FusedAdan {
            config: self.clone(),
            fallback: burn,
        }
    }

    /// A `ModuleOptimizer` over a whole module, with the configured gradient clipping.
    pub fn init(&self) -> ModuleOptimizer {
        with_clipping(ModuleOptimizer::from(self.build()), &self.grad_clipping)
    }
}

/// Adan with a fused step; see the [module docs](self) and [`fused`](super).
#[derive(Clone)]
pub struct FusedAdan {
    config: FusedAdanConfig,
    fallback: Adan,
}

impl Optimizer for FusedAdan {
    type State<const D: usize> = AdanState<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        let c = &self.config;
        let (time, states) = match state {
            Some(s) => {
                let s = s.momentum;
                let states = [s.exp_avg, s.exp_avg_sq, s.exp_avg_diff, s.neg_pre_grad];
                (s.time, states.map(Some))
            }
            None => (0, [None, None, None, None]),
        };
        let first = time == 0;
        let t = (time + 1) as i32;
        let (b1, b2, b3) = (c.beta_1, c.beta_2, c.beta_3);
        let (f1, f2, f3) = (1.0 - b1, 1.0 - b2, 1.0 - b3);
        let bias_3_sqrt = (1.0 - b3.powi(t)).sqrt();
        let (bias_1, bias_2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
        let eps = c.epsilon;
        let decay_rate = lr * c.weight_decay as f64;
        let (keep, prox) = ((1.0 - decay_rate) as f32, (1.0 + decay_rate) as f32);
        let lr_32 = lr as f32;
        let no_prox = c.no_prox;
        let update = move |p: &mut f32, [g]: [f32; 1], [m, v, d, neg]: &mut [f32; 4]| {
            if first {
                *m = g * f1;
                *v = g * g * f3;
                *d = 0.0;
            } else {
                let diff = *neg + g;
                let nesterov = diff * b2 + g;
                *m = *m * b1 + g * f1;
                *d = *d * b2 + diff * f2;
                *v = *v * b3 + nesterov * nesterov * f3;
            }
            *neg = -g;
            let denom = v.sqrt() / bias_3_sqrt + eps;
            let u = (*m / bias_1) / denom + ((*d * b2) / bias_2) / denom;
            let delta = u * lr_32;
            *p = if no_prox {
                if decay_rate == 0.0 {
                    *p - delta
                } else {
                    *p * keep - delta
                }
            } else if decay_rate == 0.0 {
                *p - delta
            } else {
                (*p - delta) / prox
            };
        };
        let inputs = StepInputs {
            param: tensor,
            reads: [grad],
            states,
        };
        let state = |time, [m, v, d, neg]: [Tensor<D>; 4]| {
            AdanState::new(AdaptiveNesterovMomentumState::new(time, m, v, d, neg))
        };
        let decay = match (no_prox, decay_rate == 0.0) {
            (_, true) => AdanDecay::None,
            (true, false) => AdanDecay::Scale(keep),
            (false, false) => AdanDecay::Proximal(prox),
        };
        let rule = DeviceRule::Adan(AdanConstants {
            decays: [b1, b2, b3, f1, f2, f3],
            bias: [bias_1, bias_2, bias_3_sqrt],
            eps,
            lr: lr_32,
            first,
            decay,
        });
        match try_step_on(inputs, [0.0; 4], &update, rule) {
            Fused::Done(p, states) => (p, Some(state(time + 1, states))),
            Fused::Declined(back) => {
                let [grad] = back.reads;
                let state = match back.states {
                    [Some(m), Some(v), Some(d), Some(neg)] => Some(state(time, [m, v, d, neg])),
                    _ => None,
                };
                self.fallback.step(lr, back.param, grad, state)
            }
        }
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &Device) -> Self::State<D> {
        Adan::to_device(state, device)
    }
}
