//! AdaHessian: Adam whose second moment tracks a Hutchinson estimate of the Hessian diagonal.
//!
//! Yao, Gholami, Shen, Mustafa, Keutzer, Mahoney, *ADAHESSIAN: An Adaptive Second Order Optimizer
//! for Machine Learning*, AAAI 2021 (arXiv:2006.00719), Algorithm 1 with the spatial averaging of
//! eq. 10 and the Hessian power `k` of eq. 11.
//!
//! One core covers the three reference implementations (official amirgholami/adahessian,
//! davda54/ada-hessian and pytorch-optimizer), which differ only in four switches:
//! the refresh interval P, the number of probes S, conv-kernel averaging, and what happens to the
//! second moment between refreshes ([`StaleHessian`]). Per step (t counts every step):
//!
//! ```text
//! θ = θ·(1 − lr·wd)                                     decoupled decay, this step's lr
//! m = β1·m + (1−β1)·g
//! refresh step ((t−1) mod P = 0):  h = (1/S)·Σ_s z_s ⊙ H z_s      (signed Hutchinson estimate)
//!                                  4-D kernel with averaging: h = mean(|h|) over dims 2, 3
//!                                  v = β2·v + (1−β2)·h²
//! other steps:   Reuse:  v = β2·v + (1−β2)·h²  with the last h (davda54)
//!                Freeze: v unchanged                          (pytorch-optimizer)
//! den = (v/(1−β2^t))^(k/2) + eps
//! θ = θ − lr/(1−β1^t) · m/den
//! ```
//!
//! Departures from the paper, kept for parity: the official code averages `|Hz|` (here `|h|`, the
//! same for one probe since |z| = 1), not the signed estimate; eps is added after the power.
//!
//! Burn's autodiff is first order, so `Hz` comes from
//! [`hvp`](crate::curvature::hvp::hvp) (finite differences on the same batch). AdaHessian is
//! therefore a module-level optimizer: [`AdaHessian::step`] takes the gradients and, on refresh
//! steps, the Hessian-diagonal estimate (from
//! [`hutchinson_diagonal`](crate::curvature::hutchinson::hutchinson_diagonal), or injected).

use burn::config::Config;
use burn::module::{Module, ModuleMapper, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor};

use crate::curvature::hutchinson::hutchinson_diagonal;
use crate::curvature::hvp::StepSize;
use crate::fused::rule::{AdaHessianConstants, DeviceRule};
use crate::fused::{Fused, StepInputs, try_step_on};
use crate::module_state::FlatStates;
use crate::module_state::{counted_record, from_counted_record};
use crate::record::{ModuleState, StateRecord};
use crate::validate::{Check, InvalidConfig, assert_finite_lr};

/// What the second moment does on steps without a fresh Hessian estimate.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum StaleHessian {
    /// Update `v` with the last estimate (davda54/ada-hessian).
    Reuse,
    /// Leave `v` unchanged (pytorch-optimizer).
    Freeze,
}

/// Configuration of [`AdaHessian`]; defaults are those of the official implementation.
#[derive(Config, Debug)]
pub struct AdaHessianConfig {
    /// Decay of the gradient EMA (β1).
    #[config(default = 0.9)]
    pub beta_1: f32,
    /// Decay of the Hessian-diagonal EMA (β2).
    #[config(default = 0.999)]
    pub beta_2: f32,
    /// Added to the denominator after the power.
    #[config(default = 1e-4)]
    pub epsilon: f32,
    /// Decoupled weight decay, scaled by the learning rate.
    #[config(default = 0.0)]
    pub weight_decay: f32,
    /// Hessian power k: the denominator is `v̂^(k/2)`.
    #[config(default = 1.0)]
    pub hessian_power: f32,
    /// Refresh the Hessian estimate every this many steps (P).
    #[config(default = 1)]
    pub update_interval: usize,
    /// Hutchinson probes per refresh (S), used by [`AdaHessian::step_with_closure`].
    #[config(default = 1)]
    pub num_samples: usize,
    /// Average `|h|` over the spatial dims of 4-D (conv) kernels.
    #[config(default = true)]
    pub average_conv_kernel: bool,
    /// Second-moment policy between refreshes.
    #[config(default = "StaleHessian::Reuse")]
    pub stale_hessian: StaleHessian,
}

impl AdaHessianConfig {
    /// The optimizer, or an error naming the first invalid field.
    pub fn try_init(&self) -> Result<AdaHessian, InvalidConfig> {
        let check = Check("AdaHessian");
        check.beta("beta_1", self.beta_1)?;
        check.beta("beta_2", self.beta_2)?;
        check.positive("epsilon", self.epsilon as f64)?;
        check.non_negative("weight_decay", self.weight_decay as f64)?;
        check.non_negative("hessian_power", self.hessian_power as f64)?;
        check.positive("update_interval", self.update_interval as f64)?;
        check.positive("num_samples", self.num_samples as f64)?;
        Ok(AdaHessian {
            config: self.clone(),
            time: 0,
            states: FlatStates::default(),
        })
    }

    /// The optimizer.
    ///
    /// # Panics
    /// If a hyperparameter is invalid; the message names the field.
    pub fn init(&self) -> AdaHessian {
        self.try_init().unwrap_or_else(|e| panic!("{e}"))
    }
}

/// The AdaHessian optimizer over a whole module; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct AdaHessian {
    config: AdaHessianConfig,
    time: usize,
    /// Per parameter: `[m, v]`, plus the last estimate `h` once there is one.
    states: FlatStates,
}

impl AdaHessian {
    /// Whether the next step refreshes the Hessian estimate (and so needs one).
    pub fn needs_hessian(&self) -> bool {
        self.time.is_multiple_of(self.config.update_interval)
    }

    /// Number of steps taken.
    pub fn time(&self) -> usize {
        self.time
    }

    /// One step. `hessian_diag` is the (signed) Hutchinson estimate `(1/S)Σ z⊙Hz`, required on
    /// refresh steps ([`needs_hessian`](Self::needs_hessian)) and ignored otherwise.
    ///
    /// # Panics
    /// If the lr is not finite, or a refresh step gets no estimate.
    pub fn step<M: Module>(
        &mut self,
        lr: f64,
        module: M,
        mut grads: GradientsParams,
        hessian_diag: Option<&GradientsParams>,
    ) -> M {
        assert_finite_lr("AdaHessian", lr);
        let refresh = self.needs_hessian();
        let estimate = if refresh {
            Some(hessian_diag.unwrap_or_else(|| {
                panic!(
                    "AdaHessian: step {} refreshes the Hessian (update_interval {}) but no \
                     estimate was given",
                    self.time + 1,
                    self.config.update_interval
                )
            }))
        } else {
            None
        };
        self.time += 1;
        let mut mapper = StepMapper {
            config: &self.config,
            time: self.time,
            lr,
            grads: &mut grads,
            estimate,
            states: &mut self.states,
        };
        module.map(&mut mapper)
    }

    /// One step that computes the Hessian estimate itself on refresh steps, with
    /// `num_samples` Rademacher probes and finite-difference Hessian-vector products of `grad`
    /// (see [`hvp`](crate::curvature::hvp::hvp) for what the closure must guarantee).
    pub fn step_with_closure<M, F>(
        &mut self,
        lr: f64,
        module: M,
        grads: GradientsParams,
        grad: F,
    ) -> M
    where
        M: Module,
        F: FnMut(&M) -> GradientsParams,
    {
        let estimate = self
            .needs_hessian()
            .then(|| hutchinson_diagonal(&module, self.config.num_samples, StepSize::Auto, grad));
        self.step(lr, module, grads, estimate.as_ref())
    }
}

struct StepMapper<'a> {
    config: &'a AdaHessianConfig,
    time: usize,
    lr: f64,
    grads: &'a mut GradientsParams,
    estimate: Option<&'a GradientsParams>,
    states: &'a mut FlatStates,
}

fn average_conv<const D: usize>(h: Tensor<D>) -> Tensor<D> {
    let shape = h.shape();
    let dims: [usize; 4] = [shape[0], shape[1], shape[2], shape[3]];
    let kernel: Tensor<4> = h.reshape(dims);
    kernel.abs().mean_dims(&[2, 3]).expand(dims).reshape(shape)
}

impl ModuleMapper for StepMapper<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(grad) = self.grads.remove::<D>(param.id) else {
            return param;
        };
        let id = param.id;
        let c = self.config;
        let (b1, b2) = (c.beta_1 as f64, c.beta_2 as f64);
        let t = self.time as i32;
        let estimate = self.estimate.and_then(|e| e.get::<D>(id));
        if self.estimate.is_some() && estimate.is_none() {
            panic!("AdaHessian: the Hessian estimate has no entry for a parameter with a gradient");
        }
        let lr = self.lr;
        let refresh = self.estimate.is_some();
        self.states.update(param, |theta, state| {
            let had_state = state.is_some();
            let (m, v, last) = match state {
                Some(mut s) => {
                    let last = (s.len() == 3).then(|| s.pop().unwrap());
                    let v = s.pop().unwrap();
                    (s.pop().unwrap(), v, last)
                }
                None => (grad.zeros_like(), grad.zeros_like(), None),
            };
            let h = match estimate {
                Some(h) if D == 4 && c.average_conv_kernel => Some(average_conv(h)),
                Some(h) => Some(h),
                None => last,
            };
            let updates_v = refresh || c.stale_hessian == StaleHessian::Reuse;
            let bias_2 = 1.0 - b2.powi(t);
            let step = lr / (1.0 - b1.powi(t));
            // The fused path: a stored state, an h that enters v this step, power 1 (√).
            let (theta, grad, m, v) = match &h {
                Some(h) if had_state && updates_v && c.hessian_power == 1.0 => {
                    let keep = (1.0 - lr * c.weight_decay as f64) as f32;
                    let decays = c.weight_decay != 0.0;
                    let (beta_1, fraction_1) = (b1 as f32, (1.0 - b1) as f32);
                    let (beta_2, fraction_2) = (b2 as f32, (1.0 - b2) as f32);
                    let (bias, eps, step_32) = (bias_2 as f32, c.epsilon, step as f32);
                    let update = move |p: &mut f32, [g, h]: [f32; 2], [m, v]: &mut [f32; 2]| {
                        let theta = if decays { *p * keep } else { *p };
                        *m = *m * beta_1 + g * fraction_1;
                        *v = *v * beta_2 + h * h * fraction_2;
                        let den = (*v / bias).sqrt() + eps;
                        *p = theta - (*m / den) * step_32;
                    };
                    let inputs = StepInputs {
                        param: theta,
                        // h is read only; the second handle keeps it for the state.
                        reads: [grad, h.clone()],
                        states: [Some(m), Some(v)],
                    };
                    let rule = DeviceRule::AdaHessian(AdaHessianConstants {
                        moments: [beta_1, beta_2, fraction_1, fraction_2],
                        bias_2: bias,
                        eps,
                        step: step_32,
                        keep,
                        decays,
                    });
                    match try_step_on(inputs, [0.0; 2], &update, rule) {
                        Fused::Done(theta, [m, v]) => {
                            return (theta, vec![m, v, h.clone()]);
                        }
                        Fused::Declined(back) => {
                            let [grad, _] = back.reads;
                            let [m, v] = back.states.map(|s| s.expect("given"));
                            (back.param, grad, m, v)
                        }
                    }
                }
                _ => (theta, grad, m, v),
            };
            let theta = if c.weight_decay != 0.0 {
                theta.mul_scalar(1.0 - lr * c.weight_decay as f64)
            } else {
                theta
            };
            let m = m.mul_scalar(b1) + grad.mul_scalar(1.0 - b1);
            let v = match &h {
                Some(h) if updates_v => v.mul_scalar(b2) + h.clone().square().mul_scalar(1.0 - b2),
                _ => v,
            };
            let corrected = v.clone().div_scalar(bias_2);
            // The default power 1 is a square root, far cheaper than a general power.
            let den = if c.hessian_power == 1.0 {
                corrected.sqrt()
            } else {
                corrected.powf_scalar(c.hessian_power as f64 / 2.0)
            }
            .add_scalar(c.epsilon as f64);
            let theta = theta - (m.clone() / den).mul_scalar(step);
            let mut state = vec![m, v];
            state.extend(h);
            (theta, state)
        })
    }
}

impl ModuleState for AdaHessian {
    fn to_record(&self) -> StateRecord {
        counted_record(self.time, &self.states)
    }

    fn load_record(mut self, record: StateRecord, device: &Device) -> Result<Self, String> {
        (self.time, self.states) = from_counted_record(record, device)?;
        Ok(self)
    }
}
