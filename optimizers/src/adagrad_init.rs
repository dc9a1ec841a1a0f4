//! AdaGrad with PyTorch's `initial_accumulator_value`.
//!
//! Duchi, Hazan, Singer, *Adaptive Subgradient Methods for Online Learning and Stochastic
//! Optimization*, JMLR 2011 (diagonal AdaGrad, eq. 1), with the two additions of
//! `torch.optim.Adagrad` (neither is in the paper):
//!
//! ```text
//! g   = grad + weight_decay·θ                  coupled L2
//! clr = lr / (1 + (t−1)·lr_decay)              t counts from 1: the first step is undecayed
//! G   = G + g²                                  G starts at initial_accumulator_value
//! θ   = θ − clr · g / (sqrt(G) + eps)           eps outside the square root
//! ```
//!
//! Burn's own [`AdaGradConfig`](burn::optim::AdaGradConfig) computes exactly these equations but
//! always starts the accumulator at zero, and its state cannot be seeded from outside. Use Burn's
//! when `initial_accumulator_value` is 0 (the parity tests prove it matches PyTorch); use this one
//! otherwise. Both default `epsilon` differently: Burn 1e-5, PyTorch (and this config) 1e-10.

use burn::config::Config;
use burn::optim::{LearningRate, Optimizer};
use burn::tensor::{Device, Tensor};

use crate::RecordState;
use crate::fused::rule::{AdaGradConstants, DeviceRule};
use crate::fused::{Fused, StepInputs, try_step_on};
use crate::validate::{Check, InvalidConfig, assert_finite_lr, config_constructors};

/// Configuration of [`AdaGradInit`]; defaults are those of `torch.optim.Adagrad`.
#[derive(Config, Debug)]
pub struct AdaGradInitConfig {
    /// Learning-rate decay: step t uses `lr / (1 + (t−1)·lr_decay)`.
    #[config(default = 0.0)]
    pub lr_decay: f64,
    /// Coupled L2 penalty added to the gradient.
    #[config(default = 0.0)]
    pub weight_decay: f32,
    /// Starting value of the sum of squared gradients.
    #[config(default = 0.0)]
    pub initial_accumulator_value: f32,
    /// Added to `sqrt(G)` in the denominator.
    #[config(default = 1e-10)]
    pub epsilon: f32,
}

impl AdaGradInitConfig {
    /// Builds the per-parameter optimizer, or names the first invalid field.
    pub fn try_build(&self) -> Result<AdaGradInit, InvalidConfig> {
        let check = Check("AdaGrad");
        check.non_negative("lr_decay", self.lr_decay)?;
        check.non_negative("weight_decay", self.weight_decay as f64)?;
        check.non_negative(
            "initial_accumulator_value",
            self.initial_accumulator_value as f64,
        )?;
        check.positive("epsilon", self.epsilon as f64)?;
        Ok(AdaGradInit {
            lr_decay: self.lr_decay,
            weight_decay: self.weight_decay as f64,
            initial_accumulator_value: self.initial_accumulator_value as f64,
            epsilon: self.epsilon as f64,
        })
    }
}

config_constructors!(AdaGradInitConfig, AdaGradInit);

/// AdaGrad with a seeded accumulator for one parameter tensor; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct AdaGradInit {
    lr_decay: f64,
    weight_decay: f64,
    initial_accumulator_value: f64,
    epsilon: f64,
}

/// Per-parameter AdaGrad state.
#[derive(RecordState, Clone)]
pub struct AdaGradInitState<const D: usize> {
    /// Number of steps taken (t).
    pub time: usize,
    /// Sum of squared gradients (G), including the initial value.
    pub sum: Tensor<D>,
}

impl AdaGradInit {
    /// The tensor-op step (every backend).
    fn tensor_step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<AdaGradInitState<D>>,
    ) -> (Tensor<D>, Option<AdaGradInitState<D>>) {
        let grad = if self.weight_decay != 0.0 {
            grad + tensor.clone().mul_scalar(self.weight_decay)
        } else {
            grad
        };
        let (time, sum) = match state {
            Some(s) => (s.time + 1, s.sum + grad.clone().square()),
            None => (
                1,
                grad.clone()
                    .square()
                    .add_scalar(self.initial_accumulator_value),
            ),
        };
        let clr = lr / (1.0 + (time as f64 - 1.0) * self.lr_decay);
        let update = grad / sum.clone().sqrt().add_scalar(self.epsilon);
        let tensor = tensor - update.mul_scalar(clr);
        (tensor, Some(AdaGradInitState { time, sum }))
    }
}

impl Optimizer for AdaGradInit {
    type State<const D: usize> = AdaGradInitState<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        assert_finite_lr("AdaGrad", lr);
        let (time, sum) = match state {
            Some(s) => (s.time + 1, Some(s.sum)),
            None => (1, None),
        };
        let clr = (lr / (1.0 + (time as f64 - 1.0) * self.lr_decay)) as f32;
        let (eps, wd) = (self.epsilon as f32, self.weight_decay as f32);
        let decays = self.weight_decay != 0.0;
        // G starts at the initial accumulator value: `G₀ + g²` is the tensor path's `g² + G₀`.
        let update = move |p: &mut f32, [g]: [f32; 1], [sum]: &mut [f32; 1]| {
            let g = if decays { g + *p * wd } else { g };
            *sum += g * g;
            *p -= g / (sum.sqrt() + eps) * clr;
        };
        let inputs = StepInputs {
            param: tensor,
            reads: [grad],
            states: [sum],
        };
        let init = [self.initial_accumulator_value as f32];
        let rule = DeviceRule::AdaGrad(AdaGradConstants {
            eps,
            weight_decay: wd,
            decays,
            clr,
        });
        match try_step_on(inputs, init, &update, rule) {
            Fused::Done(tensor, [sum]) => (tensor, Some(AdaGradInitState { time, sum })),
            Fused::Declined(back) => {
                let [grad] = back.reads;
                let [sum] = back.states;
                let state = sum.map(|sum| AdaGradInitState {
                    time: time - 1,
                    sum,
                });
                self.tensor_step(lr, back.param, grad, state)
            }
        }
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &Device) -> Self::State<D> {
        AdaGradInitState {
            time: state.time,
            sum: state.sum.to_device(device),
        }
    }
}
