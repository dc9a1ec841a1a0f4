//! DDPM ancestral sampling (Ho, Jain, Abbeel, NeurIPS 2020, eq. 6–7 with the posterior
//! q(x_p | x_t, x̂0)), as `diffusers.DDPMScheduler` on a sub-grid:
//!
//! ```text
//! β̃ = 1 − ᾱ_t/ᾱ_p                         (p = the next grid timestep, ᾱ_p = 1 after the last)
//! μ  = √ᾱ_p·β̃/(1−ᾱ_t)·x̂0 + √(1−β̃)·(1−ᾱ_p)/(1−ᾱ_t)·x_t
//! x_p = μ + σ·z   (only when t > 0)        σ² = (1−ᾱ_p)/(1−ᾱ_t)·β̃ (fixed_small, ≥ 1e-20) or β̃ (fixed_large)
//! ```
//! x̂0 is clamped to `±clip_sample_range` before the mean when `clip_sample` is on (diffusers'
//! default).

use std::str::FromStr;

use burn::tensor::Tensor;

use crate::grid::{Spacing, ddim_timesteps};
use crate::prediction::Prediction;
use crate::sampler::{Sampler, StepOutput};
use crate::schedule::DiscreteSchedule;

/// diffusers' `variance_type` (the two that need no learned variance).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variance {
    /// The posterior variance `(1−ᾱ_p)/(1−ᾱ_t)·β̃`, clamped at 1e-20.
    FixedSmall,
    /// `β̃`.
    FixedLarge,
}

impl FromStr for Variance {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        match name {
            "fixed_small" => Ok(Self::FixedSmall),
            "fixed_large" => Ok(Self::FixedLarge),
            other => Err(format!(
                "unsupported variance_type `{other}`: expected fixed_small or fixed_large"
            )),
        }
    }
}

/// Settings of [`Ddpm`].
#[derive(Clone, Debug)]
pub struct DdpmConfig {
    /// The ᾱ table.
    pub schedule: DiscreteSchedule,
    /// What the denoiser predicts.
    pub prediction: Prediction,
    /// Grid layout.
    pub spacing: Spacing,
    /// Added to every leading-grid timestep.
    pub steps_offset: i64,
    /// Clamp x̂0 to `±clip_sample_range`.
    pub clip_sample: Option<f64>,
    /// The noise variance.
    pub variance: Variance,
}

/// A DDPM sampler for `n` steps.
#[derive(Clone, Debug)]
pub struct Ddpm {
    config: DdpmConfig,
    timesteps: Vec<i64>,
    model_times: Vec<f64>,
    index: usize,
}

impl Ddpm {
    /// The sampler for `num_inference_steps` steps.
    ///
    /// # Panics
    /// If `num_inference_steps` is 0 or above the number of training timesteps.
    pub fn new(config: DdpmConfig, num_inference_steps: usize) -> Self {
        let t = config.schedule.num_train_timesteps();
        let timesteps = ddim_timesteps(t, num_inference_steps, config.spacing, config.steps_offset);
        Self {
            config,
            model_times: timesteps.iter().map(|&t| t as f64).collect(),
            timesteps,
            index: 0,
        }
    }

    /// The integer timesteps, in sampling order (decreasing).
    pub fn grid(&self) -> &[i64] {
        &self.timesteps
    }

    /// Whether the step at grid index `index` draws noise (diffusers: only when t > 0).
    pub fn needs_noise_at(&self, index: usize) -> bool {
        self.timesteps[index] > 0
    }

    /// One step at grid index `index` with the model's `output` at `sample`; `noise` is required
    /// when [`needs_noise_at`](Self::needs_noise_at).
    ///
    /// # Panics
    /// If noise is needed and missing, or `index` is past the grid.
    pub fn step_at<const D: usize>(
        &self,
        output: Tensor<D>,
        index: usize,
        sample: Tensor<D>,
        noise: Option<Tensor<D>>,
    ) -> Tensor<D> {
        let table = &self.config.schedule.alphas_cumprod;
        let t = self.timesteps[index];
        let a_t = table[t as usize];
        let a_p = self
            .timesteps
            .get(index + 1)
            .map_or(1.0, |&p| if p < 0 { 1.0 } else { table[p as usize] });
        let alpha = a_t / a_p;
        let beta = 1.0 - alpha;
        let (x0, _) = self.config.prediction.to_x0_eps(
            output,
            sample.clone(),
            a_t.sqrt(),
            (1.0 - a_t).sqrt(),
        );
        let x0 = match self.config.clip_sample {
            Some(range) => x0.clamp(-range, range),
            None => x0,
        };
        let mean = x0.mul_scalar(a_p.sqrt() * beta / (1.0 - a_t))
            + sample.mul_scalar(alpha.sqrt() * (1.0 - a_p) / (1.0 - a_t));
        if t <= 0 {
            return mean;
        }
        let variance = match self.config.variance {
            Variance::FixedSmall => ((1.0 - a_p) / (1.0 - a_t) * beta).max(1e-20),
            Variance::FixedLarge => beta,
        };
        let noise = noise.expect("Ddpm::step: a step with t > 0 needs a noise tensor");
        mean + noise.mul_scalar(variance.sqrt())
    }
}

impl<const D: usize> Sampler<D> for Ddpm {
    fn timesteps(&self) -> &[f64] {
        &self.model_times
    }

    fn step_index(&self) -> usize {
        self.index
    }

    fn set_begin_index(&mut self, index: usize) {
        assert!(
            index < self.timesteps.len(),
            "begin index {index} is past the {} DDPM steps",
            self.timesteps.len()
        );
        self.index = index;
    }

    fn needs_noise(&self) -> bool {
        self.index < self.timesteps.len() && self.needs_noise_at(self.index)
    }

    fn step(
        &mut self,
        model_output: Tensor<D>,
        sample: Tensor<D>,
        noise: Option<Tensor<D>>,
    ) -> StepOutput<D> {
        assert!(
            self.index < self.timesteps.len(),
            "Ddpm::step: the run is finished (call reset)"
        );
        let prev = self.step_at(model_output, self.index, sample, noise);
        self.index += 1;
        StepOutput::sample(prev)
    }
}
