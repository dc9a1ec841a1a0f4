//! diffGrad: Adam whose step is damped by a "friction" on the change of the gradient.
//!
//! Dubey, Chakraborty, Roy, Mukherjee, Singh, Chaudhuri, *diffGrad: An Optimization Method for
//! Convolutional Neural Networks*, IEEE TNNLS 2019 (arXiv:1909.11015), Algorithm 1 with the
//! "AbsSig" friction `ξ_t = sigmoid(|g_{t-1} − g_t|)` (eq. 5).
//!
//! Numerics follow the official `diffGrad_v2.py` (shivram1987/diffGrad@73233ba), which the
//! authors' README names as the fixed version, step by step (t counts from 1, `g_prev` starts at 0):
//!
//! ```text
//! g      = grad + weight_decay·θ                  coupled L2 (only if weight_decay ≠ 0)
//! m      = β1·m + (1−β1)·g
//! v      = β2·v + (1−β2)·g²
//! ξ      = 1 / (1 + exp(−|g_prev − g|))
//! g_prev = g                                       (including the L2 term)
//! θ      = θ − lr·sqrt(1−β2^t)/(1−β1^t) · ξ·m / (sqrt(v) + eps)
//! ```
//!
//! Departure from the paper, kept for parity with the reference: `eps` is added to the
//! *uncorrected* `sqrt(v)` (the PyTorch-legacy placement), i.e. the paper's ε becomes
//! `eps/sqrt(1−β2^t)`. Scalars (bias corrections, step size) are computed on the host in f64.
//!
//! On flex and ndarray the step runs as one fused loop ([`fused`](crate::fused)) with the same
//! f32 operations in the same order (its `exp` is within 2 ulp of the backend's); elsewhere as
//! tensor ops.

use burn::config::Config;
use burn::optim::{LearningRate, Optimizer};
use burn::tensor::{Device, Tensor};

use crate::RecordState;
use crate::fused::math::exp_nonpositive;
use crate::fused::rule::{DeviceRule, DiffGradConstants};
use crate::fused::{Fused, StepInputs, try_step_on};
use crate::validate::{Check, InvalidConfig, assert_finite_lr, config_constructors};

/// Configuration of [`DiffGrad`]; defaults are those of the official `diffGrad_v2.py`.
#[derive(Config, Debug)]
pub struct DiffGradConfig {
    /// Decay of the first-moment EMA (β1).
    #[config(default = 0.9)]
    pub beta_1: f32,
    /// Decay of the second-moment EMA (β2).
    #[config(default = 0.999)]
    pub beta_2: f32,
    /// Added to `sqrt(v)` (uncorrected) in the denominator.
    #[config(default = 1e-8)]
    pub epsilon: f32,
    /// Coupled L2 penalty added to the gradient (PyTorch `weight_decay`).
    #[config(default = 0.0)]
    pub weight_decay: f32,
}

impl DiffGradConfig {
    /// Builds the per-parameter optimizer, or names the first invalid field.
    pub fn try_build(&self) -> Result<DiffGrad, InvalidConfig> {
        let check = Check("diffGrad");
        check.beta("beta_1", self.beta_1)?;
        check.beta("beta_2", self.beta_2)?;
        check.positive("epsilon", self.epsilon as f64)?;
        check.non_negative("weight_decay", self.weight_decay as f64)?;
        Ok(DiffGrad {
            beta_1: self.beta_1 as f64,
            beta_2: self.beta_2 as f64,
            epsilon: self.epsilon as f64,
            weight_decay: self.weight_decay as f64,
        })
    }
}

config_constructors!(DiffGradConfig, DiffGrad);

/// The diffGrad optimizer for one parameter tensor; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct DiffGrad {
    beta_1: f64,
    beta_2: f64,
    epsilon: f64,
    weight_decay: f64,
}

/// Per-parameter diffGrad state.
#[derive(RecordState, Clone)]
pub struct DiffGradState<const D: usize> {
    /// Number of steps taken (t).
    pub time: usize,
    /// First-moment EMA (m).
    pub exp_avg: Tensor<D>,
    /// Second-moment EMA (v).
    pub exp_avg_sq: Tensor<D>,
    /// The previous step's gradient, including the L2 term.
    pub previous_grad: Tensor<D>,
}

impl DiffGrad {
    /// The step size `lr·√(1−β2ᵗ)/(1−β1ᵗ)`, on the host in f64.
    fn step_size(&self, lr: LearningRate, time: usize) -> f64 {
        let t = time as i32;
        lr * (1.0 - self.beta_2.powi(t)).sqrt() / (1.0 - self.beta_1.powi(t))
    }

    /// One element of the step, the tensor-op path's f32 operations in the same order
    /// (`[m, v, g_prev]`), and the same step for the device kernel.
    fn fused_update(
        &self,
        lr: LearningRate,
        time: usize,
    ) -> (
        impl Fn(&mut f32, [f32; 1], &mut [f32; 3]) + Sync + Copy,
        DeviceRule,
    ) {
        let (b1, b2) = (self.beta_1 as f32, self.beta_2 as f32);
        let (f1, f2) = ((1.0 - self.beta_1) as f32, (1.0 - self.beta_2) as f32);
        let (eps, wd) = (self.epsilon as f32, self.weight_decay as f32);
        let decays = self.weight_decay != 0.0;
        let step_size = self.step_size(lr, time) as f32;
        let rule = DeviceRule::DiffGrad(DiffGradConstants {
            moments: [b1, b2, f1, f2],
            eps,
            weight_decay: wd,
            decays,
            step_size,
        });
        let update = move |p: &mut f32, [g]: [f32; 1], [m, v, prev]: &mut [f32; 3]| {
            let g = if decays { g + *p * wd } else { g };
            *m = *m * b1 + g * f1;
            *v = *v * b2 + g * g * f2;
            // exp as arithmetic (within 2 ulp of libm's) so the loop vectorises; the friction's
            // reciprocal is folded into the denominator (one division instead of two).
            let friction_inv = exp_nonpositive(-(*prev - g).abs()) + 1.0;
            *prev = g;
            *p -= *m / ((v.sqrt() + eps) * friction_inv) * step_size;
        };
        (update, rule)
    }

    /// The tensor-op step (every backend).
    fn tensor_step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<DiffGradState<D>>,
    ) -> (Tensor<D>, Option<DiffGradState<D>>) {
        let grad = if self.weight_decay != 0.0 {
            grad + tensor.clone().mul_scalar(self.weight_decay)
        } else {
            grad
        };
        let (time, exp_avg, exp_avg_sq, previous_grad) = match state {
            Some(s) => (s.time, s.exp_avg, s.exp_avg_sq, s.previous_grad),
            None => (0, grad.zeros_like(), grad.zeros_like(), grad.zeros_like()),
        };
        let time = time + 1;
        let exp_avg = exp_avg.mul_scalar(self.beta_1) + grad.clone().mul_scalar(1.0 - self.beta_1);
        let exp_avg_sq = exp_avg_sq.mul_scalar(self.beta_2)
            + grad.clone().square().mul_scalar(1.0 - self.beta_2);
        // AbsSig friction (eq. 5); the argument is <= 0 so exp cannot overflow.
        let friction = (previous_grad - grad.clone())
            .abs()
            .neg()
            .exp()
            .add_scalar(1.0)
            .recip();
        let step_size = self.step_size(lr, time);
        let update =
            exp_avg.clone() * friction / exp_avg_sq.clone().sqrt().add_scalar(self.epsilon);
        let tensor = tensor - update.mul_scalar(step_size);
        let state = DiffGradState {
            time,
            exp_avg,
            exp_avg_sq,
            previous_grad: grad,
        };
        (tensor, Some(state))
    }
}

impl Optimizer for DiffGrad {
    type State<const D: usize> = DiffGradState<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        assert_finite_lr("diffGrad", lr);
        let time = state.as_ref().map_or(0, |s| s.time) + 1;
        let states = match state {
            Some(s) => [s.exp_avg, s.exp_avg_sq, s.previous_grad].map(Some),
            None => [None, None, None],
        };
        let inputs = StepInputs {
            param: tensor,
            reads: [grad],
            states,
        };
        let (update, rule) = self.fused_update(lr, time);
        match try_step_on(inputs, [0.0; 3], &update, rule) {
            Fused::Done(tensor, [exp_avg, exp_avg_sq, previous_grad]) => {
                let state = DiffGradState {
                    time,
                    exp_avg,
                    exp_avg_sq,
                    previous_grad,
                };
                (tensor, Some(state))
            }
            Fused::Declined(back) => {
                let [grad] = back.reads;
                let state = match back.states {
                    [Some(exp_avg), Some(exp_avg_sq), Some(previous_grad)] => Some(DiffGradState {
                        time: time - 1,
                        exp_avg,
                        exp_avg_sq,
                        previous_grad,
                    }),
                    _ => None,
                };
                self.tensor_step(lr, back.param, grad, state)
            }
        }
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &Device) -> Self::State<D> {
        DiffGradState {
            time: state.time,
            exp_avg: state.exp_avg.to_device(device),
            exp_avg_sq: state.exp_avg_sq.to_device(device),
            previous_grad: state.previous_grad.to_device(device),
        }
    }
}
