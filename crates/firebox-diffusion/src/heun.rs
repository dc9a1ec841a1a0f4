//! Heun's second-order method in VE units (Karras et al. 2022, Alg. 1: Euler predictor plus the
//! trapezoidal corrector), as `diffusers.HeunDiscreteScheduler`: `2n − 1` model calls for `n`
//! levels.
//!
//! Calls alternate: an even call is the Euler predictor `x̃ = x + (σ_next − σ)·d(x, σ)` (the
//! sample it returns is the predicted point); the odd call after it evaluates the model at `x̃`,
//! level σ_next, and restarts from the stored `x` with the averaged slope
//! `x ← x + (σ_next − σ)·(d(x, σ) + d(x̃, σ_next))/2`. The last interval, down to σ = 0, is a
//! plain Euler step (no corrector: `d` is undefined at σ = 0). Grid: [`crate::euler::ve_grid`]
//! with the inner levels doubled, timesteps `[t0, t1, t1, …, t_{n−1}, t_{n−1}]` (Karras grids keep
//! the fractional f64 timesteps).

use burn::tensor::Tensor;

use crate::euler::{VeGrid, VeGridOptions, ve_grid, ve_init_noise_sigma, ve_x0};
use crate::prediction::Prediction;
use crate::sampler::{Sampler, StepOutput};
use crate::schedule::DiscreteSchedule;

/// Settings of [`Heun`].
#[derive(Clone, Debug)]
pub struct HeunConfig {
    /// The ᾱ table (diffusers' default: linear β from 0.00085 to 0.012).
    pub schedule: DiscreteSchedule,
    /// What the model predicts.
    pub prediction: Prediction,
    /// Grid options (the final level is always 0 in diffusers' Heun).
    pub grid: VeGridOptions,
    /// Clamp x̂0 to `±range`.
    pub clip_sample: Option<f64>,
}

/// Heun sampler.
#[derive(Clone, Debug)]
pub struct Heun<const D: usize> {
    config: HeunConfig,
    model_times: Vec<f64>,
    sigmas: Vec<f64>,
    stored: Option<(Tensor<D>, Tensor<D>, f64)>,
    index: usize,
}

impl<const D: usize> Heun<D> {
    /// The sampler for `num_inference_steps` levels (`2n − 1` model calls).
    ///
    /// # Panics
    /// As [`ve_grid`].
    pub fn new(config: HeunConfig, num_inference_steps: usize) -> Self {
        let grid = ve_grid(&config.schedule, num_inference_steps, config.grid);
        Self::on_grid(config, grid)
    }

    /// The sampler on caller-given levels (`n` timesteps and `n + 1` VE σ, the last normally 0);
    /// the doubling is applied here.
    ///
    /// # Panics
    /// If the lengths disagree.
    pub fn on_grid(config: HeunConfig, grid: VeGrid) -> Self {
        let n = grid.timesteps.len();
        assert_eq!(grid.sigmas.len(), n + 1, "one σ more than timesteps");
        let mut model_times = vec![grid.timesteps[0]];
        let mut sigmas = vec![grid.sigmas[0]];
        for k in 1..n {
            model_times.extend([grid.timesteps[k]; 2]);
            sigmas.extend([grid.sigmas[k]; 2]);
        }
        sigmas.push(grid.sigmas[n]);
        Self {
            config,
            model_times,
            sigmas,
            stored: None,
            index: 0,
        }
    }
}

impl<const D: usize> Sampler<D> for Heun<D> {
    fn timesteps(&self) -> &[f64] {
        &self.model_times
    }

    fn sigmas(&self) -> Option<&[f64]> {
        Some(&self.sigmas)
    }

    fn step_index(&self) -> usize {
        self.index
    }

    fn set_begin_index(&mut self, index: usize) {
        assert!(
            index < self.model_times.len(),
            "begin index {index} is past the grid"
        );
        self.index = index;
        self.stored = None;
    }

    fn init_noise_sigma(&self) -> f64 {
        ve_init_noise_sigma(&self.sigmas, self.config.grid.spacing)
    }

    fn scale_model_input(&self, sample: Tensor<D>) -> Tensor<D> {
        let sigma = self.sigmas[self.index];
        sample.div_scalar((sigma * sigma + 1.0).sqrt())
    }

    fn step(
        &mut self,
        model_output: Tensor<D>,
        sample: Tensor<D>,
        _noise: Option<Tensor<D>>,
    ) -> StepOutput<D> {
        let i = self.index;
        assert!(
            i < self.model_times.len(),
            "Heun::step: the run is finished (call reset)"
        );
        let clip = |x0: Tensor<D>| match self.config.clip_sample {
            Some(r) => x0.clamp(-r, r),
            None => x0,
        };
        let out = match self.stored.take() {
            None => {
                let (sigma, next) = (self.sigmas[i], self.sigmas[i + 1]);
                let x0 = clip(ve_x0(
                    self.config.prediction,
                    model_output,
                    sample.clone(),
                    sigma,
                ));
                let d = (sample.clone() - x0.clone()).div_scalar(sigma);
                let dt = next - sigma;
                let prev = sample.clone() + d.clone().mul_scalar(dt);
                self.stored = Some((sample, d, dt));
                StepOutput::with_x0(prev, x0)
            }
            Some((start, d_first, dt)) => {
                let next = self.sigmas[i];
                let x0 = clip(ve_x0(
                    self.config.prediction,
                    model_output,
                    sample.clone(),
                    next,
                ));
                let d = (sample - x0.clone()).div_scalar(next);
                let prev = start + (d_first + d).mul_scalar(0.5 * dt);
                StepOutput::with_x0(prev, x0)
            }
        };
        self.index += 1;
        out
    }
}
