//! AdaBelief: Adam whose second moment tracks the "belief" `(g − m)²` instead of `g²`.
//!
//! Zhuang, Tang, Ding, Tatikonda, Dvornek, Papademetris, Duncan, *AdaBelief Optimizer: Adapting
//! Stepsizes by the Belief in Observed Gradients*, NeurIPS 2020 (arXiv:2010.07468), Algorithm 2,
//! with the RAdam rectification (Liu et al. 2020, arXiv:1908.03265, eq. 6–7).
//!
//! Numerics follow the official `adabelief-pytorch==0.2.1` (`AdaBelief` class), per parameter:
//!
//! ```text
//! weight_decouple:   θ = θ·(1 − lr·wd)        (fixed_decay: θ = θ·(1 − wd))
//! else if wd ≠ 0:    g = g + wd·θ             (coupled L2)
//! t += 1
//! m = β1·m + (1−β1)·g
//! s = β2·s + (1−β2)·(g − m)² + eps           eps enters the STATE every step (reference quirk)
//! amsgrad:           s_max = max(s_max, s)
//! rectify = false:   θ = θ − lr/(1−β1^t) · m / (sqrt(s or s_max)/sqrt(1−β2^t) + eps)
//! rectify = true:    ρ∞ = 2/(1−β2) − 1,  ρ_t = ρ∞ − 2tβ2^t/(1−β2^t)
//!   ρ_t ≥ 5:         r_t = sqrt((ρ_t−4)(ρ_t−2)ρ∞ / ((ρ∞−4)(ρ∞−2)ρ_t))
//!                    θ = θ − lr·r_t·sqrt(1−β2^t)/(1−β1^t) · m / (sqrt(s) + eps)   (s, never s_max)
//!   else if degenerated_to_sgd:  θ = θ − lr/(1−β1^t) · m
//!   else:            no update this step (weight decay still applied)
//! ```
//!
//! Departures from the paper, kept for parity: eps inside the state; the threshold `ρ_t ≥ 5`
//! (RAdam's paper: `> 4`); in the rectified branch the bias correction is folded into the step size
//! so the paper's ε becomes `eps/sqrt(1−β2^t)`; the SGD fallback. ρ_t, r_t and every step size are
//! computed on the host in f64 (ρ₅ = 4.996 misses the threshold by 0.004 for β2 = 0.999).

use burn::config::Config;
use burn::optim::{LearningRate, Optimizer};
use burn::tensor::{Device, Tensor};

use crate::RecordState;
use crate::fused::rule::{AdaBeliefConstants, DeviceRule};
use crate::fused::{Fused, StepInputs, try_step_on};
use crate::validate::{Check, InvalidConfig, assert_finite_lr, config_constructors};

/// Configuration of [`AdaBelief`]; defaults are those of `adabelief-pytorch==0.2.1`.
#[derive(Config, Debug)]
pub struct AdaBeliefConfig {
    /// Decay of the first-moment EMA (β1).
    #[config(default = 0.9)]
    pub beta_1: f32,
    /// Decay of the belief EMA (β2).
    #[config(default = 0.999)]
    pub beta_2: f32,
    /// Added into the belief state every step and to the denominator (reference default 1e-16).
    #[config(default = 1e-16)]
    pub epsilon: f32,
    /// Weight decay: decoupled (AdamW-style) if `weight_decouple`, else a coupled L2 term.
    #[config(default = 0.0)]
    pub weight_decay: f32,
    /// Keep the running maximum of the belief (AMSGrad); used by the update only when
    /// `rectify` is false.
    #[config(default = false)]
    pub amsgrad: bool,
    /// Decoupled weight decay `θ·(1 − lr·wd)` (true) or coupled L2 (false).
    #[config(default = true)]
    pub weight_decouple: bool,
    /// With `weight_decouple`, decay by `θ·(1 − wd)`, not scaled by the learning rate.
    #[config(default = false)]
    pub fixed_decay: bool,
    /// RAdam rectification of the adaptive step size.
    #[config(default = true)]
    pub rectify: bool,
    /// While the rectification is off (ρ_t < 5), take a momentum-SGD step instead of none.
    #[config(default = true)]
    pub degenerated_to_sgd: bool,
}

impl AdaBeliefConfig {
    /// Builds the per-parameter optimizer, or names the first invalid field.
    pub fn try_build(&self) -> Result<AdaBelief, InvalidConfig> {
        let check = Check("AdaBelief");
        check.beta("beta_1", self.beta_1)?;
        check.beta("beta_2", self.beta_2)?;
        check.positive("epsilon", self.epsilon as f64)?;
        check.non_negative("weight_decay", self.weight_decay as f64)?;
        Ok(AdaBelief {
            beta_1: self.beta_1 as f64,
            beta_2: self.beta_2 as f64,
            epsilon: self.epsilon as f64,
            weight_decay: self.weight_decay as f64,
            amsgrad: self.amsgrad,
            weight_decouple: self.weight_decouple,
            fixed_decay: self.fixed_decay,
            rectify: self.rectify,
            degenerated_to_sgd: self.degenerated_to_sgd,
        })
    }
}

config_constructors!(AdaBeliefConfig, AdaBelief);

/// The AdaBelief optimizer for one parameter tensor; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct AdaBelief {
    beta_1: f64,
    beta_2: f64,
    epsilon: f64,
    weight_decay: f64,
    amsgrad: bool,
    weight_decouple: bool,
    fixed_decay: bool,
    rectify: bool,
    degenerated_to_sgd: bool,
}

/// Per-parameter AdaBelief state.
#[derive(RecordState, Clone)]
pub struct AdaBeliefState<const D: usize> {
    /// Number of steps taken (t).
    pub time: usize,
    /// First-moment EMA (m).
    pub exp_avg: Tensor<D>,
    /// Belief EMA (s), including the accumulated eps.
    pub exp_avg_var: Tensor<D>,
    /// Running maximum of s (AMSGrad only).
    pub max_exp_avg_var: Option<Tensor<D>>,
}

/// How the parameter moves on a given step, decided on the host from t alone.
#[derive(Clone, Copy)]
enum StepKind {
    /// `θ −= size · m / (sqrt(s)·denom_scale + eps)`.
    Adaptive { size: f64, denom_scale: f64 },
    /// `θ −= size · m`.
    Sgd { size: f64 },
    /// No parameter update.
    Skip,
}

impl AdaBelief {
    fn step_kind(&self, lr: f64, t: usize) -> StepKind {
        let t_i = t as i32;
        let bias_1 = 1.0 - self.beta_1.powi(t_i);
        let bias_2 = 1.0 - self.beta_2.powi(t_i);
        if !self.rectify {
            return StepKind::Adaptive {
                size: lr / bias_1,
                denom_scale: 1.0 / bias_2.sqrt(),
            };
        }
        let rho_inf = 2.0 / (1.0 - self.beta_2) - 1.0;
        let rho_t = rho_inf - 2.0 * t as f64 * self.beta_2.powi(t_i) / bias_2;
        if rho_t >= 5.0 {
            let r_t = ((rho_t - 4.0) * (rho_t - 2.0) * rho_inf
                / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t))
                .sqrt();
            StepKind::Adaptive {
                size: lr * r_t * bias_2.sqrt() / bias_1,
                denom_scale: 1.0,
            }
        } else if self.degenerated_to_sgd {
            StepKind::Sgd { size: lr / bias_1 }
        } else {
            StepKind::Skip
        }
    }
    /// The constants of one step, shared by the host loop and the device kernel.
    fn step_constants(&self, lr: LearningRate, kind: StepKind) -> AdaBeliefConstants {
        let (b1, b2) = (self.beta_1 as f32, self.beta_2 as f32);
        let (f1, f2) = ((1.0 - self.beta_1) as f32, (1.0 - self.beta_2) as f32);
        // Decoupled decay scales θ; coupled L2 adds wd·θ to g.
        let (theta_scale, coupled) = match (self.weight_decay != 0.0, self.weight_decouple) {
            (false, _) => (1.0, 0.0),
            (true, true) if self.fixed_decay => ((1.0 - self.weight_decay) as f32, 0.0),
            (true, true) => ((1.0 - lr * self.weight_decay) as f32, 0.0),
            (true, false) => (1.0, self.weight_decay as f32),
        };
        let (adaptive_size, denom_scale, sgd_size) = match kind {
            StepKind::Adaptive { size, denom_scale } => (size as f32, denom_scale as f32, 0.0),
            StepKind::Sgd { size } => (0.0, 1.0, size as f32),
            StepKind::Skip => (0.0, 1.0, 0.0),
        };
        AdaBeliefConstants {
            moments: [b1, b2, f1, f2],
            eps: self.epsilon as f32,
            coupled,
            theta_scale,
            denom_scale,
            adaptive_size,
            sgd_size,
        }
    }

    /// One element of the step, the tensor-op path's f32 operations in the same order. Branch
    /// free, so that the loop vectorises: the options the tensor path decides by branching become
    /// factors that leave the value unchanged exactly (`θ·1`, `g + θ·0`, `θ − x·0`).
    fn fused_update(
        &self,
        constants: AdaBeliefConstants,
    ) -> impl Fn(&mut f32, f32, &mut f32, &mut f32, Option<&mut f32>) + Sync + Copy {
        let AdaBeliefConstants {
            moments: [b1, b2, f1, f2],
            eps,
            coupled,
            theta_scale,
            denom_scale,
            adaptive_size,
            sgd_size,
        } = constants;
        let max_in_denominator = !self.rectify;
        move |p: &mut f32, g: f32, m: &mut f32, s: &mut f32, max: Option<&mut f32>| {
            let theta = *p;
            let g = g + theta * coupled;
            *m = *m * b1 + g * f1;
            let belief = (g - *m) * (g - *m);
            *s = (*s * b2 + belief * f2) + eps;
            let s_used = match max {
                Some(max) => {
                    *max = max.max(*s);
                    if max_in_denominator { *max } else { *s }
                }
                None => *s,
            };
            let denom = s_used.sqrt() * denom_scale + eps;
            *p = theta * theta_scale - (*m / denom) * adaptive_size - *m * sgd_size;
        }
    }

    /// The tensor-op step (every backend).
    fn tensor_step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<AdaBeliefState<D>>,
    ) -> (Tensor<D>, Option<AdaBeliefState<D>>) {
        let (tensor, grad) = match (self.weight_decay != 0.0, self.weight_decouple) {
            (false, _) => (tensor, grad),
            (true, true) => {
                let factor = if self.fixed_decay {
                    1.0 - self.weight_decay
                } else {
                    1.0 - lr * self.weight_decay
                };
                (tensor.mul_scalar(factor), grad)
            }
            (true, false) => {
                let grad = grad + tensor.clone().mul_scalar(self.weight_decay);
                (tensor, grad)
            }
        };
        let (time, exp_avg, exp_avg_var, max_exp_avg_var) = match state {
            Some(s) => (s.time, s.exp_avg, s.exp_avg_var, s.max_exp_avg_var),
            None => (0, grad.zeros_like(), grad.zeros_like(), None),
        };
        let time = time + 1;
        let exp_avg = exp_avg.mul_scalar(self.beta_1) + grad.clone().mul_scalar(1.0 - self.beta_1);
        let belief = (grad - exp_avg.clone()).square();
        let exp_avg_var = (exp_avg_var.mul_scalar(self.beta_2)
            + belief.mul_scalar(1.0 - self.beta_2))
        .add_scalar(self.epsilon);
        let max_exp_avg_var = self.amsgrad.then(|| match max_exp_avg_var {
            Some(max) => max.max_pair(exp_avg_var.clone()),
            None => exp_avg_var.clone(),
        });

        let tensor = match self.step_kind(lr, time) {
            StepKind::Adaptive { size, denom_scale } => {
                // Without rectification, AMSGrad's maximum replaces s in the denominator.
                let s = match (&max_exp_avg_var, self.rectify) {
                    (Some(max), false) => max.clone(),
                    _ => exp_avg_var.clone(),
                };
                let denom = s.sqrt().mul_scalar(denom_scale).add_scalar(self.epsilon);
                tensor - (exp_avg.clone() / denom).mul_scalar(size)
            }
            StepKind::Sgd { size } => tensor - exp_avg.clone().mul_scalar(size),
            StepKind::Skip => tensor,
        };
        let state = AdaBeliefState {
            time,
            exp_avg,
            exp_avg_var,
            max_exp_avg_var,
        };
        (tensor, Some(state))
    }
}

impl Optimizer for AdaBelief {
    type State<const D: usize> = AdaBeliefState<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        assert_finite_lr("AdaBelief", lr);
        let time = state.as_ref().map_or(0, |s| s.time) + 1;
        let (exp_avg, exp_avg_var, max_exp_avg_var) = match state {
            Some(s) => (Some(s.exp_avg), Some(s.exp_avg_var), s.max_exp_avg_var),
            None => (None, None, None),
        };
        let kind = self.step_kind(lr, time);
        let rebuild = |time, [m, s]: [Option<Tensor<D>>; 2], max| match (m, s) {
            (Some(exp_avg), Some(exp_avg_var)) => Some(AdaBeliefState {
                time,
                exp_avg,
                exp_avg_var,
                max_exp_avg_var: max,
            }),
            _ => None,
        };
        if self.amsgrad {
            let inputs = StepInputs {
                param: tensor,
                reads: [grad],
                states: [exp_avg, exp_avg_var, max_exp_avg_var],
            };
            let constants = self.step_constants(lr, kind);
            let element = self.fused_update(constants);
            let update = move |p: &mut f32, [g]: [f32; 1], [m, s, max]: &mut [f32; 3]| {
                element(p, g, m, s, Some(max))
            };
            let rule = DeviceRule::AdaBeliefAmsgrad {
                constants,
                max_in_denominator: !self.rectify,
            };
            match try_step_on(inputs, [0.0, 0.0, f32::NEG_INFINITY], &update, rule) {
                Fused::Done(tensor, [m, s, max]) => {
                    (tensor, rebuild(time, [Some(m), Some(s)], Some(max)))
                }
                Fused::Declined(back) => {
                    let [grad] = back.reads;
                    let [m, s, max] = back.states;
                    let state = rebuild(time - 1, [m, s], max);
                    self.tensor_step(lr, back.param, grad, state)
                }
            }
        } else {
            let inputs = StepInputs {
                param: tensor,
                reads: [grad],
                states: [exp_avg, exp_avg_var],
            };
            let constants = self.step_constants(lr, kind);
            let element = self.fused_update(constants);
            let update =
                move |p: &mut f32, [g]: [f32; 1], [m, s]: &mut [f32; 2]| element(p, g, m, s, None);
            let rule = DeviceRule::AdaBelief(constants);
            match try_step_on(inputs, [0.0, 0.0], &update, rule) {
                Fused::Done(tensor, [m, s]) => (tensor, rebuild(time, [Some(m), Some(s)], None)),
                Fused::Declined(back) => {
                    let [grad] = back.reads;
                    let state = rebuild(time - 1, back.states, max_exp_avg_var);
                    self.tensor_step(lr, back.param, grad, state)
                }
            }
        }
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &Device) -> Self::State<D> {
        AdaBeliefState {
            time: state.time,
            exp_avg: state.exp_avg.to_device(device),
            exp_avg_var: state.exp_avg_var.to_device(device),
            max_exp_avg_var: state.max_exp_avg_var.map(|t| t.to_device(device)),
        }
    }
}
