//! Euler and Euler-ancestral sampling in VE units (Karras et al., NeurIPS 2022, "Elucidating the
//! Design Space of Diffusion-Based Generative Models", Alg. 1 with S_churn = 0; the ancestral form
//! of k-diffusion), as `diffusers.EulerDiscreteScheduler` / `EulerAncestralDiscreteScheduler`.
//!
//! The sample lives in VE units `x = x0 + σ·ε` (σ = √((1−ᾱ)/ᾱ)); the network gets
//! `x/√(σ²+1)` (the VP sample) and a float timestep:
//! ```text
//! x̂0 = x − σ·ε̂           (v: x̂0 = −σ/√(σ²+1)·v + x/(σ²+1))
//! Euler:      x ← x + (σ_next − σ)·(x − x̂0)/σ
//! ancestral:  σ_up = √(σ_next²(σ² − σ_next²)/σ²), σ_down = √(σ_next² − σ_up²),
//!             x ← x + (σ_down − σ)·(x − x̂0)/σ + σ_up·z
//! ```
//! diffusers' grid ([`ve_grid`]): float timesteps (linspace unrounded; leading / trailing
//! rounded), σ by linear interpolation of the training table at them, optionally re-placed on a
//! Karras or exponential ramp between the grid's extremes with `t = _sigma_to_t(σ)` (fractional),
//! then the final level and a cast of σ (and Euler's timesteps) to float32.

use burn::tensor::Tensor;

use crate::grid::{
    Spacing, exponential_sigmas, interp_table, karras_sigmas, np_linspace, sigma_to_t,
};
use crate::prediction::Prediction;
use crate::sampler::{Sampler, StepOutput};
use crate::schedule::{DiscreteSchedule, ve_sigma};
use crate::solver_grid::{FinalSigma, SigmaSpacing};

/// Options of [`ve_grid`].
#[derive(Clone, Copy, Debug)]
pub struct VeGridOptions {
    /// `timestep_spacing`.
    pub spacing: Spacing,
    /// `steps_offset` (leading).
    pub steps_offset: i64,
    /// σ placement: `Timesteps` (interpolated), `Karras` or `Exponential`.
    pub sigma_spacing: SigmaSpacing,
    /// The level after the last step: zero or `σ(ᾱ₀)`.
    pub final_sigma: FinalSigma,
}

/// Float timesteps (one per step) and f32-rounded VE levels (one more) of the Euler family.
#[derive(Clone, Debug, PartialEq)]
pub struct VeGrid {
    /// The model's timesteps, in f64 (Karras: the unrounded `_sigma_to_t`).
    pub timesteps: Vec<f64>,
    /// σ at each timestep plus the final level.
    pub sigmas: Vec<f64>,
}

/// Builds the grid of `EulerDiscreteScheduler.set_timesteps` (shared by Heun and Euler
/// ancestral).
///
/// # Panics
/// If `n` is 0 or the σ placement is `LuLambdas` (not offered by these schedulers).
pub fn ve_grid(schedule: &DiscreteSchedule, n: usize, options: VeGridOptions) -> VeGrid {
    assert!(n >= 1, "num_inference_steps must be at least 1");
    let train = schedule.num_train_timesteps();
    let f32r = |v: f64| v as f32 as f64;
    let mut timesteps: Vec<f64> = match options.spacing {
        Spacing::Linspace => np_linspace(0.0, (train - 1) as f64, n)
            .into_iter()
            .rev()
            .map(f32r)
            .collect(),
        Spacing::Leading => {
            let ratio = (train / n) as f64;
            (0..n)
                .rev()
                .map(|i| f32r((i as f64 * ratio).round_ties_even()) + options.steps_offset as f64)
                .collect()
        }
        Spacing::Trailing => {
            let ratio = train as f64 / n as f64;
            let len = (train as f64 / ratio).ceil() as usize;
            (0..len)
                .map(|k| f32r((train as f64 - k as f64 * ratio).round_ties_even()) - 1.0)
                .collect()
        }
    };
    let table = schedule.ve_sigmas();
    let log_table: Vec<f64> = table.iter().map(|s| s.ln()).collect();
    let mut sigmas: Vec<f64> = timesteps.iter().map(|&t| interp_table(t, &table)).collect();
    let (lo, hi) = (sigmas[sigmas.len() - 1], sigmas[0]);
    match options.sigma_spacing {
        SigmaSpacing::Timesteps => {}
        SigmaSpacing::Karras => sigmas = karras_sigmas(lo, hi, n, 7.0),
        SigmaSpacing::Exponential => sigmas = exponential_sigmas(lo, hi, n),
        SigmaSpacing::LuLambdas => panic!("the Euler family has no Lu-lambda grid"),
    }
    if options.sigma_spacing != SigmaSpacing::Timesteps {
        timesteps = sigmas.iter().map(|&s| sigma_to_t(s, &log_table)).collect();
    }
    sigmas.push(match options.final_sigma {
        FinalSigma::SigmaMin => ve_sigma(schedule.alphas_cumprod[0]),
        _ => 0.0,
    });
    VeGrid {
        timesteps,
        sigmas: sigmas.into_iter().map(f32r).collect(),
    }
}

/// `x̂0` from the model output at VE level σ (diffusers' Euler-family conversions).
pub fn ve_x0<const D: usize>(
    prediction: Prediction,
    output: Tensor<D>,
    sample: Tensor<D>,
    sigma: f64,
) -> Tensor<D> {
    match prediction {
        Prediction::Epsilon => sample - output.mul_scalar(sigma),
        Prediction::Sample => output,
        Prediction::Velocity => {
            let s2 = sigma * sigma + 1.0;
            output.mul_scalar(-sigma / s2.sqrt()) + sample.div_scalar(s2)
        }
        Prediction::Flow => panic!("flow prediction needs the flow-matching sampler"),
    }
}

/// Settings of [`Euler`].
#[derive(Clone, Debug)]
pub struct EulerConfig {
    /// The ᾱ table.
    pub schedule: DiscreteSchedule,
    /// What the model predicts.
    pub prediction: Prediction,
    /// Grid options.
    pub grid: VeGridOptions,
    /// Euler ancestral (one noise draw per step) instead of deterministic Euler.
    pub ancestral: bool,
}

/// Euler or Euler-ancestral sampler in VE units.
#[derive(Clone, Debug)]
pub struct Euler {
    config: EulerConfig,
    model_times: Vec<f64>,
    sigmas: Vec<f64>,
    index: usize,
}

impl Euler {
    /// The sampler for `num_inference_steps` steps (timesteps handed to the model as float32
    /// values, as diffusers casts them).
    ///
    /// # Panics
    /// As [`ve_grid`].
    pub fn new(config: EulerConfig, num_inference_steps: usize) -> Self {
        let grid = ve_grid(&config.schedule, num_inference_steps, config.grid);
        Self::on_grid(
            config,
            VeGrid {
                timesteps: grid.timesteps.iter().map(|&t| t as f32 as f64).collect(),
                sigmas: grid.sigmas,
            },
        )
    }

    /// The sampler on caller-given timesteps and VE levels (one more level than timesteps).
    ///
    /// # Panics
    /// If the lengths disagree.
    pub fn on_grid(config: EulerConfig, grid: VeGrid) -> Self {
        assert_eq!(
            grid.sigmas.len(),
            grid.timesteps.len() + 1,
            "one σ more than timesteps"
        );
        Self {
            config,
            model_times: grid.timesteps,
            sigmas: grid.sigmas,
            index: 0,
        }
    }
}

/// diffusers' `init_noise_sigma` of the Euler family: σ_max, or √(σ_max²+1) for leading grids.
pub fn ve_init_noise_sigma(sigmas: &[f64], spacing: Spacing) -> f64 {
    let max = sigmas.iter().cloned().fold(0.0, f64::max);
    match spacing {
        Spacing::Leading => (max * max + 1.0).sqrt(),
        _ => max,
    }
}

impl<const D: usize> Sampler<D> for Euler {
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
    }

    fn init_noise_sigma(&self) -> f64 {
        ve_init_noise_sigma(&self.sigmas, self.config.grid.spacing)
    }

    fn scale_model_input(&self, sample: Tensor<D>) -> Tensor<D> {
        let sigma = self.sigmas[self.index];
        sample.div_scalar((sigma * sigma + 1.0).sqrt())
    }

    fn needs_noise(&self) -> bool {
        self.config.ancestral
    }

    fn step(
        &mut self,
        model_output: Tensor<D>,
        sample: Tensor<D>,
        noise: Option<Tensor<D>>,
    ) -> StepOutput<D> {
        let i = self.index;
        assert!(
            i < self.model_times.len(),
            "Euler::step: the run is finished (call reset)"
        );
        let (sigma, next) = (self.sigmas[i], self.sigmas[i + 1]);
        let x0 = ve_x0(self.config.prediction, model_output, sample.clone(), sigma);
        let derivative = (sample.clone() - x0.clone()).div_scalar(sigma);
        let prev = if self.config.ancestral {
            let up = (next * next * (sigma * sigma - next * next) / (sigma * sigma)).sqrt();
            let down = (next * next - up * up).sqrt();
            let noise = noise.expect("Euler ancestral needs a noise tensor every step");
            sample + derivative.mul_scalar(down - sigma) + noise.mul_scalar(up)
        } else {
            sample + derivative.mul_scalar(next - sigma)
        };
        self.index += 1;
        StepOutput::with_x0(prev, x0)
    }
}
