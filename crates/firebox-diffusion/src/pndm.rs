//! PLMS, the pseudo linear multistep method of PNDM (Liu et al., ICLR 2022, "Pseudo Numerical
//! Methods for Diffusion Models on Manifolds", eq. 11–12), as `diffusers.PNDMScheduler` with
//! `skip_prk_steps=True` (the Stable Diffusion configuration).
//!
//! Transfer (eq. 11) from `t` to `p = t − T//n` with a noise estimate `e`:
//! ```text
//! x_p = √(ᾱ_p/ᾱ_t)·x_t − (ᾱ_p − ᾱ_t)·e / (ᾱ_t·√(1−ᾱ_p) + √((1−ᾱ_t)·ᾱ_t·ᾱ_p))
//! ```
//! Calls (n + 1 for n grid points; the second-to-last grid point is duplicated): call 0 transfers
//! with `e0`; call 1 (at the same next point) restarts from `x_{t0}` with `(e0 + e1)/2` (improved
//! Euler; `e1` is not stored); later calls use Adams–Bashforth weights on the stored outputs of
//! calls 0, 2, 3, …: `(3, −1)/2`, `(23, −16, 5)/12`, `(55, −59, 37, −9)/24`. Below timestep 0 the
//! level is `ᾱ = 1` (`set_alpha_to_one`) or `ᾱ_0`.

use burn::tensor::Tensor;

use crate::grid::{Spacing, np_linspace};
use crate::prediction::Prediction;
use crate::sampler::{Sampler, StepOutput};
use crate::schedule::DiscreteSchedule;

/// Settings of [`Pndm`].
#[derive(Clone, Debug)]
pub struct PndmConfig {
    /// The ᾱ table.
    pub schedule: DiscreteSchedule,
    /// ε or v prediction.
    pub prediction: Prediction,
    /// Grid layout.
    pub spacing: Spacing,
    /// Added to leading grids.
    pub steps_offset: i64,
    /// `ᾱ = 1` below timestep 0 (else `ᾱ_0`).
    pub set_alpha_to_one: bool,
}

/// The PLMS sampler.
#[derive(Clone, Debug)]
pub struct Pndm<const D: usize> {
    config: PndmConfig,
    timesteps: Vec<i64>,
    model_times: Vec<f64>,
    ratio: i64,
    ets: Vec<Tensor<D>>,
    start: Option<Tensor<D>>,
    counter: usize,
}

impl<const D: usize> Pndm<D> {
    /// The sampler for `num_inference_steps` grid points (`n + 1` model calls).
    ///
    /// # Panics
    /// If `num_inference_steps` is below 2 or above T, or the prediction is x0 or flow.
    pub fn new(config: PndmConfig, num_inference_steps: usize) -> Self {
        let t = config.schedule.num_train_timesteps();
        let n = num_inference_steps;
        assert!(n >= 2 && n <= t, "PLMS needs 2..={t} steps, got {n}");
        assert!(
            matches!(
                config.prediction,
                Prediction::Epsilon | Prediction::Velocity
            ),
            "PNDM supports epsilon and v_prediction"
        );
        let ascending: Vec<i64> = match config.spacing {
            Spacing::Linspace => np_linspace(0.0, (t - 1) as f64, n)
                .into_iter()
                .map(|v| v.round_ties_even() as i64)
                .collect(),
            Spacing::Leading => (0..n as i64)
                .map(|i| i * (t / n) as i64 + config.steps_offset)
                .collect(),
            Spacing::Trailing => {
                let mut grid = crate::grid::ddim_timesteps(t, n, Spacing::Trailing, 0);
                grid.reverse();
                grid
            }
        };
        // [t_0 … t_{n−2}, t_{n−2}, t_{n−1}] reversed: the second-largest point is duplicated.
        let mut plms: Vec<i64> = ascending[..n - 1].to_vec();
        plms.push(ascending[n - 2]);
        plms.push(ascending[n - 1]);
        plms.reverse();
        Self {
            model_times: plms.iter().map(|&t| t as f64).collect(),
            timesteps: plms,
            ratio: (t / n) as i64,
            config,
            ets: Vec::new(),
            start: None,
            counter: 0,
        }
    }

    fn alpha_bar(&self, t: i64) -> f64 {
        if t < 0 {
            if self.config.set_alpha_to_one {
                1.0
            } else {
                self.config.schedule.alphas_cumprod[0]
            }
        } else {
            self.config.schedule.alphas_cumprod[t as usize]
        }
    }

    /// PNDM's transfer (eq. 11) from `t` to `p` with noise estimate `e` (v converted first).
    fn transfer(&self, sample: Tensor<D>, t: i64, p: i64, e: Tensor<D>) -> Tensor<D> {
        let (a_t, a_p) = (self.alpha_bar(t), self.alpha_bar(p));
        let e = match self.config.prediction {
            Prediction::Velocity => {
                e.mul_scalar(a_t.sqrt()) + sample.clone().mul_scalar((1.0 - a_t).sqrt())
            }
            _ => e,
        };
        let denom = a_t * (1.0 - a_p).sqrt() + ((1.0 - a_t) * a_t * a_p).sqrt();
        sample.mul_scalar((a_p / a_t).sqrt()) - e.mul_scalar((a_p - a_t) / denom)
    }
}

impl<const D: usize> Sampler<D> for Pndm<D> {
    fn timesteps(&self) -> &[f64] {
        &self.model_times
    }

    fn step_index(&self) -> usize {
        self.counter
    }

    fn set_begin_index(&mut self, index: usize) {
        assert!(
            index < self.timesteps.len(),
            "begin index {index} is past the grid"
        );
        self.counter = index;
        self.ets.clear();
        self.start = None;
    }

    fn step(
        &mut self,
        model_output: Tensor<D>,
        sample: Tensor<D>,
        _noise: Option<Tensor<D>>,
    ) -> StepOutput<D> {
        let k = self.counter;
        assert!(
            k < self.timesteps.len(),
            "Pndm::step: the run is finished (call reset)"
        );
        let mut t = self.timesteps[k];
        let mut p = t - self.ratio;
        let mut x = sample;
        let e = if k == 1 {
            // Improved Euler from the first point, with the average of both slopes.
            p = t;
            t += self.ratio;
            x = self.start.take().expect("call 0 stored its sample");
            (model_output + self.ets[0].clone()).div_scalar(2.0)
        } else {
            if self.ets.len() == 4 {
                self.ets.remove(0);
            }
            self.ets.push(model_output.clone());
            let e = &self.ets;
            let n = e.len();
            match n {
                1 => {
                    self.start = Some(x.clone());
                    model_output
                }
                2 => (e[1].clone().mul_scalar(3.0) - e[0].clone()).div_scalar(2.0),
                3 => (e[2].clone().mul_scalar(23.0) - e[1].clone().mul_scalar(16.0)
                    + e[0].clone().mul_scalar(5.0))
                .div_scalar(12.0),
                _ => (e[3].clone().mul_scalar(55.0) - e[2].clone().mul_scalar(59.0)
                    + e[1].clone().mul_scalar(37.0)
                    - e[0].clone().mul_scalar(9.0))
                .div_scalar(24.0),
            }
        };
        let prev = self.transfer(x, t, p, e);
        self.counter += 1;
        StepOutput::sample(prev)
    }
}
