//! DDIM: denoising diffusion implicit models (Song, Meng, Ermon, ICLR 2021, eq. 12), as
//! `diffusers.DDIMScheduler`:
//!
//! ```text
//! x̂0   = prediction → x0 at ᾱ_t                       (clamped to ±clip_sample_range if clip_sample;
//!                                                        ε̂ is NOT recomputed from the clamped x̂0)
//! σ_η  = η·√((1−ᾱ_p)/(1−ᾱ_t)·(1 − ᾱ_t/ᾱ_p))
//! x_p  = √ᾱ_p·x̂0 + √(1 − ᾱ_p − σ_η²)·ε̂ + σ_η·z
//! ```
//! with `p = t − T/n` (integer division) **always**, not the next grid point, and
//! `ᾱ_p = 1` (`set_alpha_to_one`) or `ᾱ_0` below timestep 0.

use burn::tensor::Tensor;

use crate::grid::{Spacing, ddim_timesteps};
use crate::prediction::Prediction;
use crate::sampler::{Sampler, StepOutput};
use crate::schedule::DiscreteSchedule;

/// Settings of [`Ddim`] (diffusers' `DDIMScheduler` arguments that change the numbers).
#[derive(Clone, Debug)]
pub struct DdimConfig {
    /// The ᾱ table.
    pub schedule: DiscreteSchedule,
    /// What the denoiser predicts.
    pub prediction: Prediction,
    /// Grid layout.
    pub spacing: Spacing,
    /// Added to every leading-grid timestep.
    pub steps_offset: i64,
    /// `ᾱ` below timestep 0 is 1 (else `ᾱ_0`).
    pub set_alpha_to_one: bool,
    /// Clamp x̂0 to `±clip_sample_range`.
    pub clip_sample: Option<f64>,
}

impl DdimConfig {
    /// `ᾱ_t`, with `ᾱ = 1` (`set_alpha_to_one`) or `ᾱ_0` below timestep 0.
    pub fn alpha_bar(&self, t: i64) -> f64 {
        let table = &self.schedule.alphas_cumprod;
        match (t < 0, self.set_alpha_to_one) {
            (true, true) => 1.0,
            (true, false) => table[0],
            (false, _) => table[t as usize],
        }
    }
}

/// The output of one DDIM step.
#[derive(Clone, Debug)]
pub struct DdimStep<const D: usize> {
    /// The sample at the previous (less noisy) timestep.
    pub prev_sample: Tensor<D>,
    /// The model's clean-sample estimate x̂0 at this step.
    pub x0_pred: Tensor<D>,
}

/// A DDIM sampler for `n` steps. As a [`Sampler`] it runs with the η of
/// [`with_eta`](Self::with_eta) (0 by default: deterministic); [`step_at`](Self::step_at) is the
/// stateless step at any grid timestep.
#[derive(Clone, Debug)]
pub struct Ddim {
    config: DdimConfig,
    timesteps: Vec<i64>,
    model_times: Vec<f64>,
    /// The timestep each step lands on (−1: below the table).
    prev: Vec<i64>,
    step_ratio: i64,
    eta: f64,
    index: usize,
}

impl Ddim {
    /// The sampler for `num_inference_steps` steps.
    ///
    /// # Panics
    /// If `num_inference_steps` is 0 or above the number of training timesteps.
    pub fn new(config: DdimConfig, num_inference_steps: usize) -> Self {
        let t = config.schedule.num_train_timesteps();
        let timesteps = ddim_timesteps(t, num_inference_steps, config.spacing, config.steps_offset);
        let step_ratio = (t / num_inference_steps) as i64;
        Self {
            step_ratio,
            config,
            model_times: timesteps.iter().map(|&t| t as f64).collect(),
            prev: timesteps.iter().map(|&t| t - step_ratio).collect(),
            timesteps,
            eta: 0.0,
            index: 0,
        }
    }

    /// A sampler on a caller-given decreasing list of training timesteps (a searched or
    /// hand-made schedule). Each step lands on the next listed timestep and the last one below
    /// the table (`ᾱ = 1` or `ᾱ_0` per `set_alpha_to_one`).
    ///
    /// # Panics
    /// If the list is empty, not strictly decreasing, or outside `[0, T)`.
    pub fn with_timesteps(config: DdimConfig, timesteps: Vec<i64>) -> Self {
        let t = config.schedule.num_train_timesteps() as i64;
        assert!(!timesteps.is_empty(), "the timestep list is empty");
        assert!(
            timesteps.windows(2).all(|w| w[0] > w[1]),
            "timesteps {timesteps:?} are not strictly decreasing"
        );
        assert!(
            timesteps.iter().all(|&s| (0..t).contains(&s)),
            "timesteps {timesteps:?} leave the table [0, {t})"
        );
        let mut prev: Vec<i64> = timesteps[1..].to_vec();
        prev.push(-1);
        Self {
            step_ratio: 0,
            config,
            model_times: timesteps.iter().map(|&t| t as f64).collect(),
            prev,
            timesteps,
            eta: 0.0,
            index: 0,
        }
    }

    /// The same sampler with stochasticity `eta` (0: DDIM, 1: DDPM-like ancestral variance).
    pub fn with_eta(mut self, eta: f64) -> Self {
        self.eta = eta;
        self
    }

    /// The integer timesteps, in sampling order (decreasing).
    pub fn grid(&self) -> &[i64] {
        &self.timesteps
    }

    fn alpha_bar(&self, t: i64) -> f64 {
        self.config.alpha_bar(t)
    }

    /// One step from timestep `t` with the model's `output` at `sample`; `noise` (standard
    /// normal, the sample's shape) is required when `eta > 0`.
    ///
    /// # Panics
    /// If `eta > 0` and no noise is given, or `t` is outside the table.
    pub fn step_at<const D: usize>(
        &self,
        output: Tensor<D>,
        t: i64,
        sample: Tensor<D>,
        eta: f64,
        noise: Option<Tensor<D>>,
    ) -> DdimStep<D> {
        self.step_between(output, t, t - self.step_ratio, sample, eta, noise)
    }

    fn step_between<const D: usize>(
        &self,
        output: Tensor<D>,
        t: i64,
        prev: i64,
        sample: Tensor<D>,
        eta: f64,
        noise: Option<Tensor<D>>,
    ) -> DdimStep<D> {
        let a_t = self.alpha_bar(t);
        let a_p = self.alpha_bar(prev);
        let (x0, eps) =
            self.config
                .prediction
                .to_x0_eps(output, sample, a_t.sqrt(), (1.0 - a_t).sqrt());
        let x0 = match self.config.clip_sample {
            Some(range) => x0.clamp(-range, range),
            None => x0,
        };
        let variance = (1.0 - a_p) / (1.0 - a_t) * (1.0 - a_t / a_p);
        let std = eta * variance.sqrt();
        let direction = eps.mul_scalar((1.0 - a_p - std * std).sqrt());
        let mut prev = x0.clone().mul_scalar(a_p.sqrt()) + direction;
        if eta > 0.0 {
            let noise = noise.expect("Ddim::step: eta > 0 needs a noise tensor");
            prev = prev + noise.mul_scalar(std);
        }
        DdimStep {
            prev_sample: prev,
            x0_pred: x0,
        }
    }
}

impl<const D: usize> Sampler<D> for Ddim {
    fn timesteps(&self) -> &[f64] {
        &self.model_times
    }

    fn step_index(&self) -> usize {
        self.index
    }

    fn set_begin_index(&mut self, index: usize) {
        assert!(
            index < self.timesteps.len(),
            "begin index {index} is past the {} DDIM steps",
            self.timesteps.len()
        );
        self.index = index;
    }

    fn needs_noise(&self) -> bool {
        self.eta > 0.0
    }

    fn step(
        &mut self,
        model_output: Tensor<D>,
        sample: Tensor<D>,
        noise: Option<Tensor<D>>,
    ) -> StepOutput<D> {
        let t = *self
            .timesteps
            .get(self.index)
            .expect("Ddim::step: the run is finished (call reset)");
        let prev = self.prev[self.index];
        let out = self.step_between(model_output, t, prev, sample, self.eta, noise);
        self.index += 1;
        StepOutput::with_x0(out.prev_sample, out.x0_pred)
    }
}

/// DDIM inversion (Song et al. 2021, §4.3; Mokady et al. 2023's "DDIM inversion"), as
/// `diffusers.DDIMInverseScheduler`: the deterministic DDIM update run from data towards noise,
/// to find the `x_T` that DDIM maps back to a given sample (image editing).
///
/// Grid: ascending, leading `arange(n)·(T//n) + steps_offset` or trailing
/// `round(arange(T, 0, −T/n))[::-1] − 1`. At the call with timestep `t` the sample is at level
/// `s = min(t − T//n, T−1)` (`ᾱ_s = 1` or `ᾱ_0` per `set_alpha_to_one` when `s < 0`) and moves to
/// `t`; **the model is evaluated with the target's label `t`** (diffusers' approximation: the
/// network sees the sample of level `s`). Update: `x_t = √ᾱ_t·x̂0 + √(1−ᾱ_t)·ε̂`.
#[derive(Clone, Debug)]
pub struct DdimInverse {
    config: DdimConfig,
    timesteps: Vec<i64>,
    model_times: Vec<f64>,
    step_ratio: i64,
    index: usize,
}

impl DdimInverse {
    /// The inverse sampler for `num_inference_steps` steps.
    ///
    /// # Panics
    /// If `num_inference_steps` is 0 or above `T`, or the spacing is `linspace` (diffusers'
    /// inverse scheduler has only leading and trailing).
    pub fn new(config: DdimConfig, num_inference_steps: usize) -> Self {
        let t = config.schedule.num_train_timesteps();
        assert!(
            num_inference_steps >= 1 && num_inference_steps <= t,
            "num_inference_steps = {num_inference_steps} must be between 1 and {t}"
        );
        let ratio = (t / num_inference_steps) as i64;
        let timesteps: Vec<i64> = match config.spacing {
            Spacing::Leading => (0..num_inference_steps as i64)
                .map(|i| i * ratio + config.steps_offset)
                .collect(),
            Spacing::Trailing => {
                let mut grid = ddim_timesteps(t, num_inference_steps, Spacing::Trailing, 0);
                grid.reverse();
                grid
            }
            Spacing::Linspace => {
                panic!("DDIM inversion supports leading and trailing spacing, not linspace")
            }
        };
        Self {
            model_times: timesteps.iter().map(|&t| t as f64).collect(),
            timesteps,
            step_ratio: ratio,
            config,
            index: 0,
        }
    }

    fn alpha_bar(&self, t: i64) -> f64 {
        self.config.alpha_bar(t)
    }
}

impl<const D: usize> Sampler<D> for DdimInverse {
    fn timesteps(&self) -> &[f64] {
        &self.model_times
    }

    fn step_index(&self) -> usize {
        self.index
    }

    fn set_begin_index(&mut self, index: usize) {
        assert!(
            index < self.timesteps.len(),
            "begin index {index} is past the {} inversion steps",
            self.timesteps.len()
        );
        self.index = index;
    }

    fn step(
        &mut self,
        model_output: Tensor<D>,
        sample: Tensor<D>,
        _noise: Option<Tensor<D>>,
    ) -> StepOutput<D> {
        let target = *self
            .timesteps
            .get(self.index)
            .expect("DdimInverse::step: the run is finished (call reset)");
        let last = self.config.schedule.num_train_timesteps() as i64 - 1;
        let source = (target - self.step_ratio).min(last);
        let a_s = self.alpha_bar(source);
        let a_t = self.alpha_bar(target);
        let (x0, eps) =
            self.config
                .prediction
                .to_x0_eps(model_output, sample, a_s.sqrt(), (1.0 - a_s).sqrt());
        let x0 = match self.config.clip_sample {
            Some(range) => x0.clamp(-range, range),
            None => x0,
        };
        let next = x0.clone().mul_scalar(a_t.sqrt()) + eps.mul_scalar((1.0 - a_t).sqrt());
        self.index += 1;
        StepOutput::with_x0(next, x0)
    }
}
