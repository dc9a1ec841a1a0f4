//! DEIS (Zhang & Chen, ICLR 2023, "Fast Sampling of Diffusion Models with Exponential
//! Integrator"), the log-ρ multistep variant of `diffusers.DEISMultistepScheduler`.
//!
//! With `ρ = σ/α` (the VE level) the ODE `d(x/α)/dρ = ε̂` is integrated by fitting a polynomial
//! in `log ρ` through the last k noise predictions (eq. 15, "ρAB-DEIS" with log-ρ basis):
//! ```text
//! order 1: x_t = (α_t/α_s)·x_s − σ_t(e^{h} − 1)·ε̂_s                    (= DDIM)
//! order k: x_t = α_t·(x_s/α_s + Σ_j c_j·ε̂_j),  c_j = ∫_{ρ_s}^{ρ_t} ℓ_j(log ρ) dρ
//! ```
//! with `ℓ_j` the Lagrange basis through the history's `log ρ` values, integrated in closed form
//! (diffusers' `ind_fn`). diffusers' grid rules: the grid ends at `σ(ᾱ₀)` (no zero final level);
//! on Karras / exponential grids the last σ is repeated (a zero-length final step);
//! `lower_order_final` acts below 15 steps.

use burn::tensor::Tensor;

use crate::dpm_solver::{Level, convert_output};
use crate::prediction::Prediction;
use crate::sampler::{Sampler, StepOutput};
use crate::schedule::DiscreteSchedule;
use crate::solver_grid::{SolverGrid, SolverGridOptions, solver_grid};
use crate::threshold::DynamicThreshold;

/// Settings of [`Deis`].
#[derive(Clone, Debug)]
pub struct DeisConfig {
    /// The ᾱ table.
    pub schedule: DiscreteSchedule,
    /// What the model predicts.
    pub prediction: Prediction,
    /// 1, 2 or 3 (diffusers' default 2).
    pub solver_order: usize,
    /// Lower the order at the end of runs below 15 steps.
    pub lower_order_final: bool,
    /// Grid options (the final σ is `SigmaMin` or, on σ-placed grids, `RepeatLast`).
    pub grid: SolverGridOptions,
    /// Dynamic thresholding of x̂0 (ε̂ is recomputed from it).
    pub threshold: Option<DynamicThreshold>,
}

/// DEIS multistep sampler.
#[derive(Clone, Debug)]
pub struct Deis<const D: usize> {
    config: DeisConfig,
    grid: SolverGrid,
    levels: Vec<Level>,
    model_times: Vec<f64>,
    history: Vec<Tensor<D>>,
    lower_order_nums: usize,
    index: usize,
}

/// `∫ ℓ(ρ) dρ` antiderivative of the order-2 Lagrange basis (`ind_fn(t, b, c)` in diffusers).
fn ind2(t: f64, b: f64, c: f64) -> f64 {
    t * (-c.ln() + t.ln() - 1.0) / (b.ln() - c.ln())
}

/// The order-3 antiderivative (`ind_fn(t, b, c, d)`).
fn ind3(t: f64, b: f64, c: f64, d: f64) -> f64 {
    let (lt, lc, ld) = (t.ln(), c.ln(), d.ln());
    let numerator = t * (lc * (ld - lt + 1.0) - ld * lt + ld + lt * lt - 2.0 * lt + 2.0);
    numerator / ((b.ln() - lc) * (b.ln() - ld))
}

impl<const D: usize> Deis<D> {
    /// The sampler for `num_inference_steps` steps.
    ///
    /// # Panics
    /// If the order is not 1–3 or `num_inference_steps` is 0.
    pub fn new(config: DeisConfig, num_inference_steps: usize) -> Self {
        assert!(
            (1..=3).contains(&config.solver_order),
            "DEIS solver_order = {} is not supported: expected 1, 2 or 3",
            config.solver_order
        );
        let grid = solver_grid(&config.schedule, num_inference_steps, config.grid);
        Self {
            levels: grid.sigmas.iter().map(|&s| Level::of_ve(s)).collect(),
            model_times: grid.timesteps.iter().map(|&t| t as f64).collect(),
            grid,
            config,
            history: Vec::new(),
            lower_order_nums: 0,
            index: 0,
        }
    }
}

impl<const D: usize> Sampler<D> for Deis<D> {
    fn timesteps(&self) -> &[f64] {
        &self.model_times
    }

    fn sigmas(&self) -> Option<&[f64]> {
        Some(&self.grid.sigmas)
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
        self.history.clear();
        self.lower_order_nums = 0;
    }

    fn step(
        &mut self,
        model_output: Tensor<D>,
        sample: Tensor<D>,
        _noise: Option<Tensor<D>>,
    ) -> StepOutput<D> {
        let i = self.index;
        let n = self.model_times.len();
        assert!(i < n, "Deis::step: the run is finished (call reset)");
        let c = &self.config;
        let short = c.lower_order_final && n < 15;
        let level = self.levels[i];
        let eps = convert_output(
            c.prediction,
            false,
            c.threshold,
            model_output,
            sample.clone(),
            level,
        );
        self.history.push(eps);
        if self.history.len() > c.solver_order {
            self.history.remove(0);
        }
        let order = if c.solver_order == 1 || self.lower_order_nums < 1 || (i == n - 1 && short) {
            1
        } else if c.solver_order == 2 || self.lower_order_nums < 2 || (i + 2 == n && short) {
            2
        } else {
            3
        };
        let t = self.levels[i + 1];
        let h = self.history.len();
        let rho = |l: Level| l.sigma / l.alpha;
        let prev = match order {
            1 => {
                let step = t.lambda - level.lambda;
                sample.mul_scalar(t.alpha / level.alpha)
                    - self.history[h - 1]
                        .clone()
                        .mul_scalar(t.sigma * step.exp_m1())
            }
            2 => {
                let (rt, r0, r1) = (rho(t), rho(level), rho(self.levels[i - 1]));
                let c1 = ind2(rt, r0, r1) - ind2(r0, r0, r1);
                let c2 = ind2(rt, r1, r0) - ind2(r0, r1, r0);
                (sample.div_scalar(level.alpha)
                    + self.history[h - 1].clone().mul_scalar(c1)
                    + self.history[h - 2].clone().mul_scalar(c2))
                .mul_scalar(t.alpha)
            }
            _ => {
                let (rt, r0, r1, r2) = (
                    rho(t),
                    rho(level),
                    rho(self.levels[i - 1]),
                    rho(self.levels[i - 2]),
                );
                let c1 = ind3(rt, r0, r1, r2) - ind3(r0, r0, r1, r2);
                let c2 = ind3(rt, r1, r2, r0) - ind3(r0, r1, r2, r0);
                let c3 = ind3(rt, r2, r0, r1) - ind3(r0, r2, r0, r1);
                (sample.div_scalar(level.alpha)
                    + self.history[h - 1].clone().mul_scalar(c1)
                    + self.history[h - 2].clone().mul_scalar(c2)
                    + self.history[h - 3].clone().mul_scalar(c3))
                .mul_scalar(t.alpha)
            }
        };
        self.lower_order_nums = (self.lower_order_nums + 1).min(c.solver_order);
        self.index += 1;
        StepOutput::sample(prev)
    }
}
