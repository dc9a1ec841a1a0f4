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

use burn::config::Config;
use burn::optim::{LearningRate, Optimizer};
use burn::tensor::{Device, Tensor};

use crate::RecordState;
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
        let t = time as i32;
        let step_size = lr * (1.0 - self.beta_2.powi(t)).sqrt() / (1.0 - self.beta_1.powi(t));
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

    fn to_device<const D: usize>(state: Self::State<D>, device: &Device) -> Self::State<D> {
        DiffGradState {
            time: state.time,
            exp_avg: state.exp_avg.to_device(device),
            exp_avg_sq: state.exp_avg_sq.to_device(device),
            previous_grad: state.previous_grad.to_device(device),
        }
    }
}
