//! AdaGrad-Norm: one scalar step size for the whole model, adapted by the accumulated squared
//! gradient norm.
//!
//! Ward, Wu, Bottou, *AdaGrad stepsizes: Sharp convergence over nonconvex landscapes*, JMLR 2020
//! (arXiv:1806.01811), Algorithm 1 (AdaGrad-Norm), with the conventions of the AdAdaGrad authors'
//! `adagradnorm.py` (timlautk/AdAdaGrad) for the initial value, eps, lr decay and momentum:
//!
//! ```text
//! b² = initial_accumulator_value                  (b0² = 1e-2)
//! b² += Σ over all parameters ‖g‖²                (updated first: the paper's b_{j+1})
//! clr = lr / (1 + (t−1)·lr_decay)
//! θ  −= clr · (momentum > 0 ? buf : g) / (sqrt(b²) + eps),  buf = μ·buf + (1−μ)·g
//! ```
//! b² is accumulated on the host in f64 (one device read-back per step, via
//! [`grad_norm`](crate::clip::grad_norm)). The authors' class itself implements a per-row
//! variant; that one is still to come (issue #3).

use burn::config::Config;
use burn::module::{Module, ModuleMapper, Param};
use burn::optim::GradientsParams;
use burn::tensor::Tensor;

use crate::clip::grad_norm;
use crate::module_state::FlatStates;
use crate::validate::{Check, InvalidConfig, assert_finite_lr};

/// Configuration of [`AdaGradNorm`]; defaults are those of the authors' code.
#[derive(Config, Debug)]
pub struct AdaGradNormConfig {
    /// Learning-rate decay: step t uses `lr / (1 + (t−1)·lr_decay)`.
    #[config(default = 0.0)]
    pub lr_decay: f64,
    /// EMA momentum μ of the gradient (0 = none).
    #[config(default = 0.0)]
    pub momentum: f64,
    /// Starting value b0² of the accumulated squared norm.
    #[config(default = 1e-2)]
    pub initial_accumulator_value: f64,
    /// Added to `sqrt(b²)`.
    #[config(default = 1e-10)]
    pub epsilon: f64,
}

impl AdaGradNormConfig {
    /// The optimizer, or an error naming the first invalid field.
    pub fn try_init(&self) -> Result<AdaGradNorm, InvalidConfig> {
        let check = Check("AdaGradNorm");
        check.non_negative("lr_decay", self.lr_decay)?;
        check.beta("momentum", self.momentum as f32)?;
        check.non_negative("initial_accumulator_value", self.initial_accumulator_value)?;
        check.positive("epsilon", self.epsilon)?;
        Ok(AdaGradNorm {
            config: self.clone(),
            time: 0,
            accumulator: self.initial_accumulator_value,
            states: FlatStates::default(),
        })
    }

    /// The optimizer.
    ///
    /// # Panics
    /// If a hyperparameter is invalid; the message names the field.
    pub fn init(&self) -> AdaGradNorm {
        self.try_init().unwrap_or_else(|e| panic!("{e}"))
    }
}

/// AdaGrad-Norm over a whole module; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct AdaGradNorm {
    config: AdaGradNormConfig,
    time: usize,
    accumulator: f64,
    /// Per parameter: `[buf]` when momentum is on.
    states: FlatStates,
}

impl AdaGradNorm {
    /// The accumulated squared norm b² so far.
    pub fn accumulator(&self) -> f64 {
        self.accumulator
    }

    /// One step.
    ///
    /// # Panics
    /// If the lr is not finite or the gradient norm is not finite.
    pub fn step<M: Module>(&mut self, lr: f64, module: M, mut grads: GradientsParams) -> M {
        assert_finite_lr("AdaGradNorm", lr);
        let norm = grad_norm(&module, &grads);
        assert!(
            norm.is_finite(),
            "AdaGradNorm: the gradient norm is {norm}; find the parameter with \
             firebox_optim::check::find_non_finite_grad"
        );
        self.time += 1;
        self.accumulator += norm * norm;
        let clr = lr / (1.0 + (self.time as f64 - 1.0) * self.config.lr_decay);
        let scale = clr / (self.accumulator.sqrt() + self.config.epsilon);
        module.map(&mut NormMapper {
            momentum: self.config.momentum,
            scale,
            grads: &mut grads,
            states: &mut self.states,
        })
    }
}

struct NormMapper<'a> {
    momentum: f64,
    scale: f64,
    grads: &'a mut GradientsParams,
    states: &'a mut FlatStates,
}

impl ModuleMapper for NormMapper<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(grad) = self.grads.remove::<D>(param.id) else {
            return param;
        };
        let (momentum, scale) = (self.momentum, self.scale);
        self.states.update(param, |theta, state| {
            if momentum > 0.0 {
                let buf = match state {
                    Some(mut s) => s.pop().expect("momentum buffer"),
                    None => grad.zeros_like(),
                };
                let buf = buf.mul_scalar(momentum) + grad.mul_scalar(1.0 - momentum);
                (theta - buf.clone().mul_scalar(scale), vec![buf])
            } else {
                (theta - grad.mul_scalar(scale), Vec::new())
            }
        })
    }
}
