//! Flow-matching Euler (Lipman et al., ICLR 2023; rectified flow, Liu et al. 2023; the SD3 /
//! Flux sampler), as `diffusers.FlowMatchEulerDiscreteScheduler`: `x_σ = (1 − σ)·x0 + σ·ε`, the
//! model predicts the velocity `u = ε − x0`, and Euler steps `x ← x + (σ_next − σ)·u`.
//!
//! Grid (diffusers): the training levels are `shift(t/T)` for t = 1..T with
//! `shift(s) = k·s/(1 + (k − 1)·s)` (SD3's timestep shift, eq. 23); `set_timesteps(n)` spaces
//! `n` levels linearly from `σ_max·T` to `σ_min·T` **with the already shifted σ_min**, divides by
//! T and shifts **again** (so σ_min is shifted twice; fixtures follow diffusers), then appends 0.
//! The model gets `t = σ·T` (fractional); there is no `scale_model_input`.

use burn::tensor::Tensor;

use crate::grid::np_linspace;
use crate::sampler::{Sampler, StepOutput};

/// The timestep shift `k·s/(1 + (k − 1)·s)`.
pub fn shift_sigma(shift: f64, sigma: f64) -> f64 {
    shift * sigma / (1.0 + (shift - 1.0) * sigma)
}

/// Flow-matching Euler sampler.
#[derive(Clone, Debug)]
pub struct FlowMatchEuler {
    model_times: Vec<f64>,
    sigmas: Vec<f64>,
    index: usize,
}

impl FlowMatchEuler {
    /// The sampler for `num_inference_steps` steps with `num_train_timesteps` T and `shift` k
    /// (1 = no shift; SD3 uses 3).
    ///
    /// # Panics
    /// If `num_inference_steps` is 0 or `shift` is not positive.
    pub fn new(num_train_timesteps: usize, shift: f64, num_inference_steps: usize) -> Self {
        assert!(
            num_inference_steps >= 1,
            "num_inference_steps must be at least 1"
        );
        assert!(shift > 0.0, "shift = {shift} must be positive");
        let t = num_train_timesteps as f64;
        let sigma_max = shift_sigma(shift, 1.0);
        let sigma_min = shift_sigma(shift, 1.0 / t);
        let sigmas: Vec<f64> = np_linspace(sigma_max * t, sigma_min * t, num_inference_steps)
            .into_iter()
            .map(|ts| shift_sigma(shift, ts / t))
            .collect();
        Self::with_sigmas(num_train_timesteps, sigmas)
    }

    /// The sampler on caller-given decreasing levels in (0, 1] (a searched or hand-made
    /// schedule); the final level 0 is appended.
    ///
    /// # Panics
    /// If `sigmas` is empty or a level is outside (0, 1].
    pub fn with_sigmas(num_train_timesteps: usize, mut sigmas: Vec<f64>) -> Self {
        assert!(!sigmas.is_empty(), "no levels given");
        assert!(
            sigmas.iter().all(|&s| s > 0.0 && s <= 1.0),
            "flow levels {sigmas:?} must lie in (0, 1]"
        );
        let model_times = sigmas
            .iter()
            .map(|s| s * num_train_timesteps as f64)
            .collect();
        sigmas.push(0.0);
        Self {
            model_times,
            sigmas,
            index: 0,
        }
    }
}

impl<const D: usize> Sampler<D> for FlowMatchEuler {
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

    fn step(
        &mut self,
        model_output: Tensor<D>,
        sample: Tensor<D>,
        _noise: Option<Tensor<D>>,
    ) -> StepOutput<D> {
        let i = self.index;
        assert!(
            i < self.model_times.len(),
            "FlowMatchEuler::step: the run is finished (call reset)"
        );
        let (sigma, next) = (self.sigmas[i], self.sigmas[i + 1]);
        let x0 = sample.clone() - model_output.clone().mul_scalar(sigma);
        let prev = sample + model_output.mul_scalar(next - sigma);
        self.index += 1;
        StepOutput::with_x0(prev, x0)
    }
}
