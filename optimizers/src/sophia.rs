//! Sophia: clipped, Hessian-preconditioned momentum (Sophia-G and Sophia-H).
//!
//! Liu, Li, Hall, Liang, Ma, *Sophia: A Scalable Stochastic Second-order Optimizer for Language
//! Model Pre-training*, ICLR 2024 (arXiv:2305.14342), Algorithm 3, with the two reference
//! implementations the fixtures follow:
//!
//! **Sophia-G** (official Liuhong99/Sophia `SophiaG`): per parameter,
//! ```text
//! θ = θ·(1 − lr·wd)                                   decoupled decay, first
//! m = β1·m + (1−β1)·g                                 (no bias correction)
//! θ = θ − lr·sign(m)·min(|m| / (ρ·bs·h + 1e-15), 1)
//! update_hessian (every k steps, AFTER the step):  h = β2·h + (1−β2)·ĝ⊙ĝ
//! ```
//! where ĝ is the gradient on labels sampled from the model's own logits
//! ([`gnb::sample_labels`](crate::curvature::gnb::sample_labels)). The reference keeps the EMA of
//! `ĝ⊙ĝ` without the paper's factor B and multiplies by `bs` (tokens per batch) in the denominator
//! instead; the paper's `max(γh, ε)` becomes `ρ·bs·h + 1e-15`.
//!
//! **Sophia-H** (levanter `sophia_h`, which the fixtures follow where it departs from the paper):
//! ```text
//! μ = (1−β1)·g + β1·μ
//! u = clip((μ/(1−β1^t)) / max(γ·h, eps), ±clip_threshold)   negative h gives eps: no sign flip
//! if t mod k = 0 (AFTER the step):  h = (1−β2)·(z⊙Hz) + β2·h    Hz at the pre-step parameters
//! θ = θ − lr·(u + wd·θ)                                       decay on the pre-step θ, not clipped
//! ```
//! Both report the fraction of unclipped coordinates (the reference's "win rate").

use burn::config::Config;
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor};

use crate::curvature::hutchinson::hutchinson_diagonal;
use crate::curvature::hvp::StepSize;
use crate::fused::rule::{DeviceRule, SophiaConstants};
use crate::fused::{Fused, StepInputs, try_step_counting_on};
use crate::host::host_sum;
use crate::module_state::{FlatStates, UnclippedCounter, counted_record, from_counted_record};
use crate::record::{ModuleState, StateRecord};
use crate::validate::{Check, InvalidConfig, assert_finite_lr};

/// What one Sophia step reports: how many coordinates the clip left alone (the reference's
/// "win rate"). The count stays on the device until asked for, so a training loop that does not
/// log it never waits for the device.
#[derive(Clone, Debug)]
pub struct SophiaStep {
    count: Option<Tensor<1>>,
    total: usize,
}

impl SophiaStep {
    /// All coordinates stepped.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Coordinates whose preconditioned step was below the clip (reads one value back from the
    /// device); `None` when the optimizer was configured with `count_unclipped = false`.
    pub fn unclipped(&self) -> Option<usize> {
        // Each per-parameter count is an exact integer below 2^24 in f32; their sum is exact
        // below 2^24 coordinates, and rounded (relative error 6e-8) above.
        self.count
            .clone()
            .map(|count| host_sum(vec![count]).round() as usize)
    }

    /// `unclipped / total` (the reference's win rate / unclipped fraction), 0 for an empty step;
    /// `None` when not counted.
    pub fn unclipped_fraction(&self) -> Option<f64> {
        if self.total == 0 {
            return Some(0.0);
        }
        self.unclipped()
            .map(|unclipped| unclipped as f64 / self.total as f64)
    }
}

/// Configuration of [`SophiaG`]; defaults are those of the official `SophiaG`.
#[derive(Config, Debug)]
pub struct SophiaGConfig {
    /// Decay of the momentum (β1).
    #[config(default = 0.965)]
    pub beta_1: f32,
    /// Decay of the Hessian EMA (β2).
    #[config(default = 0.99)]
    pub beta_2: f32,
    /// Clipping scale ρ.
    #[config(default = 0.04)]
    pub rho: f32,
    /// Decoupled weight decay, scaled by the learning rate.
    #[config(default = 0.1)]
    pub weight_decay: f32,
    /// Count the unclipped coordinates each step ([`SophiaStep::unclipped`]). Turn off when the
    /// win rate is not logged: it costs four element-wise passes per parameter.
    #[config(default = true)]
    pub count_unclipped: bool,
}

impl SophiaGConfig {
    /// The optimizer, or an error naming the first invalid field.
    pub fn try_init(&self) -> Result<SophiaG, InvalidConfig> {
        let check = Check("SophiaG");
        check.beta("beta_1", self.beta_1)?;
        check.beta("beta_2", self.beta_2)?;
        check.positive("rho", self.rho as f64)?;
        check.non_negative("weight_decay", self.weight_decay as f64)?;
        Ok(SophiaG {
            config: self.clone(),
            states: FlatStates::default(),
        })
    }

    /// The optimizer.
    ///
    /// # Panics
    /// If a hyperparameter is invalid; the message names the field.
    pub fn init(&self) -> SophiaG {
        self.try_init().unwrap_or_else(|e| panic!("{e}"))
    }
}

/// Sophia-G over a whole module; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct SophiaG {
    config: SophiaGConfig,
    /// Per parameter: `[m, h]`.
    states: FlatStates,
}

impl SophiaG {
    /// One step with `bs` examples (tokens) per batch in the denominator.
    ///
    /// # Panics
    /// If the lr is not finite or `bs` is not positive.
    pub fn step<M: Module>(
        &mut self,
        lr: f64,
        module: M,
        mut grads: GradientsParams,
        bs: f64,
    ) -> (M, SophiaStep) {
        assert_finite_lr("SophiaG", lr);
        assert!(
            bs.is_finite() && bs > 0.0,
            "SophiaG: `bs` must be finite and > 0, got {bs}"
        );
        let mut mapper = SophiaGMapper {
            config: &self.config,
            lr,
            bs,
            grads: &mut grads,
            states: &mut self.states,
            counter: UnclippedCounter::new(self.config.count_unclipped),
        };
        let module = module.map(&mut mapper);
        let (count, total) = mapper.counter.finish();
        (module, SophiaStep { count, total })
    }

    /// Folds the sampled-label gradients ĝ into the Hessian EMA: `h = β2·h + (1−β2)·ĝ⊙ĝ`.
    /// Call it after the step, every k steps (the reference's `update_hessian`).
    pub fn update_hessian<M: Module>(&mut self, module: &M, sampled_grads: &GradientsParams) {
        let b2 = self.config.beta_2 as f64;
        module.visit(&mut EmaVisitor {
            source: sampled_grads,
            states: &mut self.states,
            slot: 1,
            decay: b2,
            square: true,
        });
    }
}

struct SophiaGMapper<'a> {
    config: &'a SophiaGConfig,
    lr: f64,
    bs: f64,
    grads: &'a mut GradientsParams,
    states: &'a mut FlatStates,
    counter: UnclippedCounter,
}

impl ModuleMapper for SophiaGMapper<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(grad) = self.grads.remove::<D>(param.id) else {
            return param;
        };
        let (c, lr, bs) = (self.config, self.lr, self.bs);
        let b1 = c.beta_1 as f64;
        let counter = &mut self.counter;
        self.states.update(param, |theta, state| {
            let keep = (1.0 - lr * c.weight_decay as f64) as f32;
            let (beta, fraction) = (b1 as f32, (1.0 - b1) as f32);
            let scale = (c.rho as f64 * bs) as f32;
            let lr_32 = lr as f32;
            let update = move |p: &mut f32, [g, h]: [f32; 2], [m]: &mut [f32; 1]| {
                let theta = *p * keep;
                *m = *m * beta + g * fraction;
                let ratio = *m / (h * scale + 1e-15);
                *p = theta - ratio.clamp(-1.0, 1.0) * lr_32;
                u32::from(ratio.abs() < 1.0)
            };
            let device = (
                SophiaConstants::G {
                    beta: [beta, fraction],
                    keep,
                    scale,
                    lr: lr_32,
                },
                1.0,
                |m: Tensor<D>, h: Tensor<D>| m / h.mul_scalar(c.rho as f64 * bs).add_scalar(1e-15),
            );
            let fused = fused_pair(theta, grad, state, counter, &update, device);
            let (theta, grad, state) = match fused {
                Ok(done) => return done,
                Err(back) => *back,
            };
            let (m, h) = split_pair(state, &grad);
            let theta = theta.mul_scalar(1.0 - lr * c.weight_decay as f64);
            let m = m.mul_scalar(b1) + grad.mul_scalar(1.0 - b1);
            // sign(m)·min(|m|/d, 1) = clamp(m/d, −1, 1) exactly, since d > 0 and IEEE division
            // is symmetric in sign: two fewer element-wise passes.
            let ratio = m.clone() / h.clone().mul_scalar(c.rho as f64 * bs).add_scalar(1e-15);
            counter.add(ratio.clone(), 1.0);
            let theta = theta - ratio.clamp(-1.0, 1.0).mul_scalar(lr);
            (theta, vec![m, h])
        })
    }
}

/// The inputs handed back when a fused Sophia step does not apply.
type Declined<const D: usize> = Box<(Tensor<D>, Tensor<D>, Option<Vec<Tensor<D>>>)>;

/// One fused Sophia step over the `[first, h]` state: `update` reads the gradient and h, updates
/// the first state in place and counts the unclipped coordinates into `counter`. Returns the new
/// parameter and state, or the inputs back when the fused path does not apply (always on the
/// first step: the state does not exist yet, and the tensor-op path creates it).
///
/// On a CubeCL device `rule`'s kernel runs instead; it does not count, so the count is taken from
/// the new state with `ratio(first, h)` (the tensor-op path's clipped quantity) and `limit`.
fn fused_pair<const D: usize>(
    theta: Tensor<D>,
    grad: Tensor<D>,
    state: Option<Vec<Tensor<D>>>,
    counter: &mut UnclippedCounter,
    update: &(impl Fn(&mut f32, [f32; 2], &mut [f32; 1]) -> u32 + Sync + Copy),
    device: (
        SophiaConstants,
        f64,
        impl Fn(Tensor<D>, Tensor<D>) -> Tensor<D>,
    ),
) -> Result<(Tensor<D>, Vec<Tensor<D>>), Declined<D>> {
    let Some(mut state) = state else {
        return Err(Box::new((theta, grad, None)));
    };
    let h = state.pop().expect("two state tensors");
    let first = state.pop().expect("two state tensors");
    let total = theta.shape().num_elements();
    let inputs = StepInputs {
        param: theta,
        // h is read only: a second handle to it is cheap and keeps it for the state.
        reads: [grad, h.clone()],
        states: [Some(first)],
    };
    let (constants, limit, ratio) = device;
    match try_step_counting_on(inputs, [0.0], update, DeviceRule::Sophia(constants)) {
        (Fused::Done(theta, [first]), Some(counted)) => {
            counter.add_counted(counted, total, &h.device());
            Ok((theta, vec![first, h]))
        }
        (Fused::Done(theta, [first]), None) => {
            counter.add(ratio(first.clone(), h.clone()), limit);
            Ok((theta, vec![first, h]))
        }
        (Fused::Declined(back), _) => {
            let [grad, _] = back.reads;
            let [first] = back.states;
            let first = first.expect("given");
            Err(Box::new((back.param, grad, Some(vec![first, h]))))
        }
    }
}

/// Configuration of [`SophiaH`]; defaults are those of levanter's `sophia_h`.
#[derive(Config, Debug)]
pub struct SophiaHConfig {
    /// Decay of the momentum (β1).
    #[config(default = 0.965)]
    pub beta_1: f32,
    /// Decay of the Hessian EMA (β2).
    #[config(default = 0.99)]
    pub beta_2: f32,
    /// Floor of the preconditioner `max(γh, eps)`.
    #[config(default = 1e-8)]
    pub epsilon: f32,
    /// Scale γ of the Hessian in the preconditioner.
    #[config(default = 0.01)]
    pub gamma: f32,
    /// Decoupled weight decay (not clipped, scaled by the learning rate).
    #[config(default = 0.0)]
    pub weight_decay: f32,
    /// Clip of the preconditioned step.
    #[config(default = 1.0)]
    pub clip_threshold: f32,
    /// Count the unclipped coordinates each step ([`SophiaStep::unclipped`]). Turn off when the
    /// unclipped fraction is not logged: it costs four element-wise passes per parameter.
    #[config(default = true)]
    pub count_unclipped: bool,
    /// Refresh the Hessian EMA after every this many steps (k).
    #[config(default = 10)]
    pub update_interval: usize,
}

impl SophiaHConfig {
    /// The optimizer, or an error naming the first invalid field.
    pub fn try_init(&self) -> Result<SophiaH, InvalidConfig> {
        let check = Check("SophiaH");
        check.beta("beta_1", self.beta_1)?;
        check.beta("beta_2", self.beta_2)?;
        check.positive("epsilon", self.epsilon as f64)?;
        check.positive("gamma", self.gamma as f64)?;
        check.non_negative("weight_decay", self.weight_decay as f64)?;
        check.positive("clip_threshold", self.clip_threshold as f64)?;
        check.positive("update_interval", self.update_interval as f64)?;
        Ok(SophiaH {
            config: self.clone(),
            time: 0,
            states: FlatStates::default(),
        })
    }

    /// The optimizer.
    ///
    /// # Panics
    /// If a hyperparameter is invalid; the message names the field.
    pub fn init(&self) -> SophiaH {
        self.try_init().unwrap_or_else(|e| panic!("{e}"))
    }
}

/// Sophia-H over a whole module; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct SophiaH {
    config: SophiaHConfig,
    time: usize,
    /// Per parameter: `[μ, h]`.
    states: FlatStates,
}

impl SophiaH {
    /// Whether the next step refreshes the Hessian EMA (after its update), and so needs an
    /// estimate `z⊙Hz` taken at the current (pre-step) parameters.
    pub fn needs_hessian(&self) -> bool {
        (self.time + 1).is_multiple_of(self.config.update_interval)
    }

    /// One step; `hessian_diag` (`z⊙Hz` at the pre-step parameters) is required when
    /// [`needs_hessian`](Self::needs_hessian) and ignored otherwise.
    ///
    /// # Panics
    /// If the lr is not finite, or a refresh step gets no estimate.
    pub fn step<M: Module>(
        &mut self,
        lr: f64,
        module: M,
        mut grads: GradientsParams,
        hessian_diag: Option<&GradientsParams>,
    ) -> (M, SophiaStep) {
        assert_finite_lr("SophiaH", lr);
        let refresh = self.needs_hessian();
        assert!(
            !refresh || hessian_diag.is_some(),
            "SophiaH: step {} refreshes the Hessian (update_interval {}) but no estimate was given",
            self.time + 1,
            self.config.update_interval
        );
        self.time += 1;
        let mut mapper = SophiaHMapper {
            config: &self.config,
            time: self.time,
            lr,
            grads: &mut grads,
            states: &mut self.states,
            counter: UnclippedCounter::new(self.config.count_unclipped),
        };
        let module = module.map(&mut mapper);
        let (count, total) = mapper.counter.finish();
        if refresh && let Some(estimate) = hessian_diag {
            module.visit(&mut EmaVisitor {
                source: estimate,
                states: &mut self.states,
                slot: 1,
                decay: self.config.beta_2 as f64,
                square: false,
            });
        }
        (module, SophiaStep { count, total })
    }

    /// One step that computes `z⊙Hz` itself when needed, with one Rademacher probe and a
    /// finite-difference Hessian-vector product of `grad` at the pre-step parameters (levanter
    /// draws Gaussian probes; both are unbiased, Rademacher has the lower variance).
    pub fn step_with_closure<M, F>(
        &mut self,
        lr: f64,
        module: M,
        grads: GradientsParams,
        grad: F,
    ) -> (M, SophiaStep)
    where
        M: Module,
        F: FnMut(&M) -> GradientsParams,
    {
        let estimate = self
            .needs_hessian()
            .then(|| hutchinson_diagonal(&module, 1, StepSize::Auto, grad));
        self.step(lr, module, grads, estimate.as_ref())
    }
}

struct SophiaHMapper<'a> {
    config: &'a SophiaHConfig,
    time: usize,
    lr: f64,
    grads: &'a mut GradientsParams,
    states: &'a mut FlatStates,
    counter: UnclippedCounter,
}

impl ModuleMapper for SophiaHMapper<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(grad) = self.grads.remove::<D>(param.id) else {
            return param;
        };
        let (c, lr) = (self.config, self.lr);
        let b1 = c.beta_1 as f64;
        let bias_1 = 1.0 - b1.powi(self.time as i32);
        let counter = &mut self.counter;
        self.states.update(param, |theta, state| {
            let (beta, fraction) = (b1 as f32, (1.0 - b1) as f32);
            let (gamma, eps) = (c.gamma, c.epsilon);
            let (bias, limit) = (bias_1 as f32, c.clip_threshold);
            let (wd, lr_32) = (c.weight_decay, lr as f32);
            let update = move |p: &mut f32, [g, h]: [f32; 2], [mu]: &mut [f32; 1]| {
                *mu = g * fraction + *mu * beta;
                let u = (*mu / bias) / (h * gamma).max(eps);
                let counted = u32::from(u.abs() < limit);
                let u = u.clamp(-limit, limit);
                *p -= (u + *p * wd) * lr_32;
                counted
            };
            let device = (
                SophiaConstants::H {
                    beta: [beta, fraction],
                    bias,
                    gamma,
                    eps,
                    limit,
                    wd,
                    lr: lr_32,
                },
                c.clip_threshold as f64,
                |mu: Tensor<D>, h: Tensor<D>| {
                    let precond = h.mul_scalar(c.gamma as f64).clamp_min(c.epsilon as f64);
                    mu.div_scalar(bias_1) / precond
                },
            );
            let fused = fused_pair(theta, grad, state, counter, &update, device);
            let (theta, grad, state) = match fused {
                Ok(done) => return done,
                Err(back) => *back,
            };
            let (mu, h) = split_pair(state, &grad);
            let mu = grad.mul_scalar(1.0 - b1) + mu.mul_scalar(b1);
            let precond = h
                .clone()
                .mul_scalar(c.gamma as f64)
                .clamp_min(c.epsilon as f64);
            let u = mu.clone().div_scalar(bias_1) / precond;
            counter.add(u.clone(), c.clip_threshold as f64);
            let limit = c.clip_threshold as f64;
            let u = u.clamp(-limit, limit);
            let decay = theta.clone().mul_scalar(c.weight_decay as f64);
            let theta = theta - (u + decay).mul_scalar(lr);
            (theta, vec![mu, h])
        })
    }
}

/// The pair of state tensors `[first, h]`, or zeros shaped like `like` on a first step.
fn split_pair<const D: usize>(
    state: Option<Vec<Tensor<D>>>,
    like: &Tensor<D>,
) -> (Tensor<D>, Tensor<D>) {
    match state {
        Some(mut s) => {
            let h = s.pop().expect("two state tensors");
            (s.pop().expect("two state tensors"), h)
        }
        None => (like.zeros_like(), like.zeros_like()),
    }
}

/// `state[slot] = decay·state[slot] + (1−decay)·x` (or `x²`) for every parameter with an entry
/// in `source`, creating a zero `[first, h]` state for parameters not stepped yet.
struct EmaVisitor<'a> {
    source: &'a GradientsParams,
    states: &'a mut FlatStates,
    slot: usize,
    decay: f64,
    square: bool,
}

impl ModuleVisitor for EmaVisitor<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let Some(x) = self.source.get::<D>(param.id) else {
            return;
        };
        let numel = x.shape().num_elements();
        let x: Tensor<1> = x.reshape([numel]);
        let x = if self.square { x.square() } else { x };
        if self.states.get_mut(&param.id).is_none() {
            self.states
                .insert(param.id, vec![x.zeros_like(), x.zeros_like()]);
        }
        let state = self.states.get_mut(&param.id).expect("inserted above");
        let old = state[self.slot].clone();
        state[self.slot] = old.mul_scalar(self.decay) + x.mul_scalar(1.0 - self.decay);
    }
}

impl ModuleState for SophiaG {
    fn to_record(&self) -> StateRecord {
        counted_record(0, &self.states)
    }

    fn load_record(mut self, record: StateRecord, device: &Device) -> Result<Self, String> {
        (_, self.states) = from_counted_record(record, device)?;
        Ok(self)
    }
}

impl ModuleState for SophiaH {
    fn to_record(&self) -> StateRecord {
        counted_record(self.time, &self.states)
    }

    fn load_record(mut self, record: StateRecord, device: &Device) -> Result<Self, String> {
        (self.time, self.states) = from_counted_record(record, device)?;
        Ok(self)
    }
}
