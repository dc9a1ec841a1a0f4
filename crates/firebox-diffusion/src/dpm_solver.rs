//! DPM-Solver and DPM-Solver++ (Lu et al., NeurIPS 2022, "DPM-Solver"; Lu et al. 2022,
//! "DPM-Solver++"), as `diffusers.DPMSolverMultistepScheduler` and
//! `DPMSolverSinglestepScheduler`.
//!
//! Both integrate the probability-flow ODE exactly in its linear part, in `λ = log(α/σ)`, with
//! `h = λ_t − λ_s` (VP levels from the VE grid: `α = 1/√(σ²+1)`, `σ_VP = σ·α`):
//! ```text
//! DPM-Solver++ (data prediction D = x̂0), first order (DDIM):   x_t = (σ_t/σ_s)·x_s − α_t(e^{−h} − 1)·D0
//! DPM-Solver   (noise prediction D = ε̂), first order:          x_t = (α_t/α_s)·x_s − σ_t(e^{h} − 1)·D0
//! multistep 2M (Alg. 2 of DPM-Solver++): D1 = (m0 − m1)/r0, r0 = h_prev/h;
//!   midpoint: … − ½α_t(e^{−h} − 1)·D1         heun: … + α_t((e^{−h} − 1)/h + 1)·D1
//! 3M: D1 = D1_0 + r0/(r0+r1)(D1_0 − D1_1), D2 = (D1_0 − D1_1)/(r0+r1), … − α_t((e^{−h}−1+h)/h² − ½)·D2
//! SDE-DPM-Solver++ (Lu et al. 2022, §5): x_t = (σ_t/σ_s)e^{−h}x_s + α_t(1 − e^{−2h})D0 [+ ½α_t(1−e^{−2h})D1]
//!                                           + σ_t√(1 − e^{−2h})·z
//! ```
//! diffusers' choices reproduced here:
//! - the σ grid is rounded to float32 ([`crate::solver_grid`]);
//! - multistep: the last step is first order when `euler_at_final`, or `lower_order_final` with
//!   fewer than 15 steps, **or whenever the final σ is zero**; the second-to-last drops to
//!   second order only for `lower_order_final` with fewer than 15 steps; warm-up uses the orders
//!   the history allows;
//! - singlestep: the orders follow `get_order_list` (groups `[1, 2, 3]`), every group restarts
//!   from the sample at its start, and `lower_order_final = false` is rewritten to `true` when
//!   the final σ is zero or `n` is not a multiple of the order (as diffusers' `set_timesteps`).

use std::str::FromStr;

use burn::tensor::Tensor;

use crate::prediction::Prediction;
use crate::sampler::{Sampler, StepOutput};
use crate::schedule::{DiscreteSchedule, vp_of_ve};
use crate::solver_grid::{FinalSigma, SolverGrid, SolverGridOptions, solver_grid};
use crate::threshold::DynamicThreshold;

/// A VP noise level: `x = α·x0 + σ·ε`, `λ = log α − log σ` (+∞ at σ = 0).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Level {
    /// Signal scale α.
    pub alpha: f64,
    /// Noise scale σ.
    pub sigma: f64,
    /// Half log-SNR λ.
    pub lambda: f64,
}

impl Level {
    /// The VP level of a VE noise level σ_VE (diffusers' `_sigma_to_alpha_sigma_t`).
    pub fn of_ve(sigma_ve: f64) -> Self {
        let (alpha, sigma) = vp_of_ve(sigma_ve);
        Self {
            alpha,
            sigma,
            lambda: alpha.ln() - sigma.ln(),
        }
    }
}

/// `algorithm_type`: what the solver integrates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// DPM-Solver++: the data prediction x̂0 (`dpmsolver++`).
    DpmSolverPlusPlus,
    /// DPM-Solver: the noise prediction ε̂ (`dpmsolver`; needs a non-zero final σ).
    DpmSolver,
    /// SDE-DPM-Solver++ (`sde-dpmsolver++`): one standard-normal draw per step.
    SdeDpmSolverPlusPlus,
}

impl Algorithm {
    /// Whether the solver works on x̂0 (else on ε̂).
    pub fn predicts_data(self) -> bool {
        !matches!(self, Self::DpmSolver)
    }
}

impl FromStr for Algorithm {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        match name {
            "dpmsolver++" => Ok(Self::DpmSolverPlusPlus),
            "dpmsolver" => Ok(Self::DpmSolver),
            "sde-dpmsolver++" => Ok(Self::SdeDpmSolverPlusPlus),
            other => Err(format!(
                "unsupported algorithm_type `{other}`: expected dpmsolver++, dpmsolver or \
                 sde-dpmsolver++"
            )),
        }
    }
}

/// `solver_type` of the second-order update.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SolverType {
    /// The midpoint form (diffusers' default).
    Midpoint,
    /// The Heun form.
    Heun,
}

impl FromStr for SolverType {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        match name {
            "midpoint" => Ok(Self::Midpoint),
            "heun" => Ok(Self::Heun),
            other => Err(format!(
                "unknown solver_type `{other}`: expected midpoint or heun"
            )),
        }
    }
}

/// The model output converted to what a solver integrates (diffusers' `convert_model_output`):
/// x̂0 (dynamically thresholded if asked) when `data`, else ε̂ (recomputed from the thresholded
/// x̂0 when thresholding).
pub fn convert_output<const D: usize>(
    prediction: Prediction,
    data: bool,
    threshold: Option<DynamicThreshold>,
    output: Tensor<D>,
    sample: Tensor<D>,
    level: Level,
) -> Tensor<D> {
    let (x0, eps) = prediction.to_x0_eps(output, sample.clone(), level.alpha, level.sigma);
    match (data, threshold) {
        (true, None) => x0,
        (true, Some(t)) => t.apply(x0),
        (false, None) => eps,
        (false, Some(t)) => {
            let x0 = t.apply(x0);
            (sample - x0.mul_scalar(level.alpha)).div_scalar(level.sigma)
        }
    }
}

/// Settings of [`DpmSolverMultistep`] and [`DpmSolverSinglestep`] (diffusers' arguments that
/// change the numbers; defaults as diffusers').
#[derive(Clone, Debug)]
pub struct DpmSolverConfig {
    /// The ᾱ table.
    pub schedule: DiscreteSchedule,
    /// What the model predicts.
    pub prediction: Prediction,
    /// DPM-Solver++, DPM-Solver or SDE-DPM-Solver++.
    pub algorithm: Algorithm,
    /// 1, 2 or 3.
    pub solver_order: usize,
    /// Midpoint or Heun second-order form.
    pub solver_type: SolverType,
    /// Lower the order at the end of short runs.
    pub lower_order_final: bool,
    /// Always end with a first-order step (multistep only).
    pub euler_at_final: bool,
    /// Grid options (spacing, σ placement, final σ, rounding, λ clipping).
    pub grid: SolverGridOptions,
    /// Imagen's dynamic thresholding of x̂0.
    pub threshold: Option<DynamicThreshold>,
}

impl DpmSolverConfig {
    fn check(&self) {
        assert!(
            (1..=3).contains(&self.solver_order),
            "solver_order = {} is not supported: expected 1, 2 or 3",
            self.solver_order
        );
        assert!(
            !(self.algorithm == Algorithm::DpmSolver && self.grid.final_sigma == FinalSigma::Zero),
            "algorithm_type dpmsolver needs final_sigmas_type sigma_min (ε-prediction cannot \
             step to σ = 0)"
        );
    }
}

/// First-, second- and third-order updates from the newest history level `s0` to `t`, shared by
/// the multistep and singlestep forms (their history differs, not the formulas). `levels` are
/// the history levels oldest to newest, `outputs` the converted model outputs at them.
#[allow(clippy::too_many_arguments)] // the formulas' inputs, named as in the paper
fn update<const D: usize>(
    config: &DpmSolverConfig,
    order: usize,
    target: Level,
    levels: &[Level],
    outputs: &[Tensor<D>],
    anchor: Level,
    sample: Tensor<D>,
    noise: Option<Tensor<D>>,
    singlestep: bool,
) -> Tensor<D> {
    let t = target;
    let s = anchor;
    let h = t.lambda - s.lambda;
    let n = outputs.len();
    // Finite differences D0, D1, D2 of the history in λ (DPM-Solver++ Alg. 2, DPM-Solver §3.3).
    let (d0, d1, d2) = match (order, singlestep) {
        (1, _) => (outputs[n - 1].clone(), None, None),
        (2, false) => {
            let (m0, m1) = (&outputs[n - 1], &outputs[n - 2]);
            let r0 = (levels[n - 1].lambda - levels[n - 2].lambda) / h;
            (
                m0.clone(),
                Some((m0.clone() - m1.clone()).div_scalar(r0)),
                None,
            )
        }
        (3, false) => {
            let (m0, m1, m2) = (&outputs[n - 1], &outputs[n - 2], &outputs[n - 3]);
            let r0 = (levels[n - 1].lambda - levels[n - 2].lambda) / h;
            let r1 = (levels[n - 2].lambda - levels[n - 3].lambda) / h;
            let d1_0 = (m0.clone() - m1.clone()).div_scalar(r0);
            let d1_1 = (m1.clone() - m2.clone()).div_scalar(r1);
            let d1 = d1_0.clone() + (d1_0.clone() - d1_1.clone()).mul_scalar(r0 / (r0 + r1));
            let d2 = (d1_0 - d1_1).div_scalar(r0 + r1);
            (m0.clone(), Some(d1), Some(d2))
        }
        (2, true) => {
            // Singlestep: s = the group start (m1), one intermediate point (m0).
            let (m0, m1) = (&outputs[n - 1], &outputs[n - 2]);
            let r0 = (levels[n - 1].lambda - s.lambda) / h;
            (
                m1.clone(),
                Some((m0.clone() - m1.clone()).div_scalar(r0)),
                None,
            )
        }
        (3, true) => {
            let (m0, m1, m2) = (&outputs[n - 1], &outputs[n - 2], &outputs[n - 3]);
            let r0 = (levels[n - 1].lambda - s.lambda) / h;
            let r1 = (levels[n - 2].lambda - s.lambda) / h;
            let d1_0 = (m1.clone() - m2.clone()).div_scalar(r1);
            let d1_1 = (m0.clone() - m2.clone()).div_scalar(r0);
            match config.solver_type {
                // diffusers' singlestep midpoint uses D1_1 alone as the first derivative.
                SolverType::Midpoint => (m2.clone(), Some(d1_1), None),
                SolverType::Heun => {
                    let d1 = (d1_0.clone().mul_scalar(r0) - d1_1.clone().mul_scalar(r1))
                        .div_scalar(r0 - r1);
                    let d2 = (d1_1 - d1_0).mul_scalar(2.0 / (r0 - r1));
                    (m2.clone(), Some(d1), Some(d2))
                }
            }
        }
        _ => unreachable!("orders are 1..=3"),
    };
    let e = (-h).exp_m1(); // e^{−h} − 1
    let midpoint = config.solver_type == SolverType::Midpoint && !(singlestep && order == 3);
    match config.algorithm {
        Algorithm::DpmSolverPlusPlus => {
            let mut x = sample.mul_scalar(t.sigma / s.sigma) - d0.mul_scalar(t.alpha * e);
            if let Some(d1) = d1 {
                let c = if midpoint && d2.is_none() {
                    -0.5 * t.alpha * e
                } else {
                    t.alpha * (e / h + 1.0)
                };
                x = x + d1.mul_scalar(c);
            }
            if let Some(d2) = d2 {
                x = x - d2.mul_scalar(t.alpha * ((e + h) / (h * h) - 0.5));
            }
            x
        }
        Algorithm::DpmSolver => {
            let ep = h.exp_m1(); // e^{h} − 1
            let mut x = sample.mul_scalar(t.alpha / s.alpha) - d0.mul_scalar(t.sigma * ep);
            if let Some(d1) = d1 {
                let c = if midpoint && d2.is_none() {
                    0.5 * t.sigma * ep
                } else {
                    t.sigma * (ep / h - 1.0)
                };
                x = x - d1.mul_scalar(c);
            }
            if let Some(d2) = d2 {
                x = x - d2.mul_scalar(t.sigma * ((ep - h) / (h * h) - 0.5));
            }
            x
        }
        Algorithm::SdeDpmSolverPlusPlus => {
            let e2 = -(-2.0 * h).exp_m1(); // 1 − e^{−2h}
            let noise = noise.expect("SDE-DPM-Solver++ needs a noise tensor every step");
            let mut x = sample.mul_scalar(t.sigma / s.sigma * (-h).exp())
                + d0.mul_scalar(t.alpha * e2)
                + noise.mul_scalar(t.sigma * e2.sqrt());
            if let Some(d1) = d1 {
                let c = if midpoint && d2.is_none() {
                    0.5 * t.alpha * e2
                } else {
                    t.alpha * (e2 / (-2.0 * h) + 1.0)
                };
                x = x + d1.mul_scalar(c);
            }
            if let Some(d2) = d2 {
                let c = t.alpha * ((e2 - 2.0 * h) / (2.0 * h).powi(2) - 0.5);
                x = x + d2.mul_scalar(c);
            }
            x
        }
    }
}

/// Multistep DPM-Solver(++) for `n` steps (one model call per step).
#[derive(Clone, Debug)]
pub struct DpmSolverMultistep<const D: usize> {
    config: DpmSolverConfig,
    grid: SolverGrid,
    levels: Vec<Level>,
    model_times: Vec<f64>,
    history: Vec<(Level, Tensor<D>)>,
    lower_order_nums: usize,
    index: usize,
}

impl<const D: usize> DpmSolverMultistep<D> {
    /// The sampler for `num_inference_steps` steps.
    ///
    /// # Panics
    /// If the order is not 1–3, `num_inference_steps` is 0, or DPM-Solver (ε) is asked to end at σ = 0.
    pub fn new(config: DpmSolverConfig, num_inference_steps: usize) -> Self {
        config.check();
        let grid = solver_grid(&config.schedule, num_inference_steps, config.grid);
        Self::on_grid(config, grid)
    }

    /// The sampler on a caller-given grid (timesteps for the model and VE σ levels, one more).
    ///
    /// # Panics
    /// If the grid's lengths disagree.
    pub fn on_grid(config: DpmSolverConfig, grid: SolverGrid) -> Self {
        config.check();
        assert_eq!(
            grid.sigmas.len(),
            grid.timesteps.len() + 1,
            "a solver grid needs one σ more than timesteps"
        );
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

    /// The grid (integer timesteps and f32-rounded VE σ levels).
    pub fn grid(&self) -> &SolverGrid {
        &self.grid
    }
}

impl<const D: usize> Sampler<D> for DpmSolverMultistep<D> {
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

    fn needs_noise(&self) -> bool {
        self.config.algorithm == Algorithm::SdeDpmSolverPlusPlus
    }

    fn step(
        &mut self,
        model_output: Tensor<D>,
        sample: Tensor<D>,
        noise: Option<Tensor<D>>,
    ) -> StepOutput<D> {
        let n = self.model_times.len();
        let i = self.index;
        assert!(
            i < n,
            "DpmSolverMultistep::step: the run is finished (call reset)"
        );
        let c = &self.config;
        let short = c.lower_order_final && n < 15;
        let last_first_order =
            i == n - 1 && (c.euler_at_final || short || c.grid.final_sigma == FinalSigma::Zero);
        let second_last = i + 2 == n && short;
        let level = self.levels[i];
        let converted = convert_output(
            c.prediction,
            c.algorithm.predicts_data(),
            c.threshold,
            model_output,
            sample.clone(),
            level,
        );
        self.history.push((level, converted.clone()));
        if self.history.len() > c.solver_order {
            self.history.remove(0);
        }
        let order = if c.solver_order == 1 || self.lower_order_nums < 1 || last_first_order {
            1
        } else if c.solver_order == 2 || self.lower_order_nums < 2 || second_last {
            2
        } else {
            3
        };
        let (levels, outputs): (Vec<Level>, Vec<Tensor<D>>) = self.history.iter().cloned().unzip();
        let prev = update(
            c,
            order,
            self.levels[i + 1],
            &levels,
            &outputs,
            level,
            sample,
            noise,
            false,
        );
        self.lower_order_nums = (self.lower_order_nums + 1).min(c.solver_order);
        self.index += 1;
        if c.algorithm.predicts_data() {
            StepOutput::with_x0(prev, converted)
        } else {
            StepOutput::sample(prev)
        }
    }
}

/// Singlestep DPM-Solver(++) (Lu et al. 2022, Alg. 1 / DPM-Solver-2S, -3S): groups of 1–3 model
/// calls, each group restarting from its first sample.
#[derive(Clone, Debug)]
pub struct DpmSolverSinglestep<const D: usize> {
    config: DpmSolverConfig,
    grid: SolverGrid,
    levels: Vec<Level>,
    model_times: Vec<f64>,
    orders: Vec<usize>,
    history: Vec<(Level, Tensor<D>)>,
    group_start: Option<(Level, Tensor<D>)>,
    index: usize,
}

/// diffusers' `get_order_list`: the order of each of `steps` singlestep updates.
pub fn singlestep_orders(
    steps: usize,
    order: usize,
    lower_order_final: bool,
    zero_final: bool,
) -> Vec<usize> {
    let repeat = |pattern: &[usize], times: usize| -> Vec<usize> {
        pattern
            .iter()
            .copied()
            .cycle()
            .take(pattern.len() * times)
            .collect()
    };
    let mut orders = match (order, lower_order_final) {
        (3, true) => match steps % 3 {
            0 => [repeat(&[1, 2, 3], steps / 3 - 1), vec![1, 2, 1]].concat(),
            1 => [repeat(&[1, 2, 3], steps / 3), vec![1]].concat(),
            _ => [repeat(&[1, 2, 3], steps / 3), vec![1, 2]].concat(),
        },
        (2, true) => {
            if steps.is_multiple_of(2) {
                [repeat(&[1, 2], steps / 2 - 1), vec![1, 1]].concat()
            } else {
                [repeat(&[1, 2], steps / 2), vec![1]].concat()
            }
        }
        (3, false) => repeat(&[1, 2, 3], steps / 3),
        (2, false) => repeat(&[1, 2], steps / 2),
        _ => vec![1; steps],
    };
    if zero_final && let Some(last) = orders.last_mut() {
        *last = 1;
    }
    orders
}

impl<const D: usize> DpmSolverSinglestep<D> {
    /// The sampler for `num_inference_steps` steps (the grid always uses linspace spacing, as
    /// diffusers' singlestep scheduler does).
    ///
    /// # Panics
    /// As [`DpmSolverMultistep::new`].
    pub fn new(mut config: DpmSolverConfig, num_inference_steps: usize) -> Self {
        config.check();
        let zero = config.grid.final_sigma == FinalSigma::Zero;
        if !config.lower_order_final
            && (zero || !num_inference_steps.is_multiple_of(config.solver_order))
        {
            // diffusers' set_timesteps rewrites the config the same way.
            config.lower_order_final = true;
        }
        config.grid.spacing = crate::grid::Spacing::Linspace;
        let grid = solver_grid(&config.schedule, num_inference_steps, config.grid);
        let orders = singlestep_orders(
            num_inference_steps,
            config.solver_order,
            config.lower_order_final,
            zero,
        );
        Self {
            levels: grid.sigmas.iter().map(|&s| Level::of_ve(s)).collect(),
            model_times: grid.timesteps.iter().map(|&t| t as f64).collect(),
            grid,
            config,
            orders,
            history: Vec::new(),
            group_start: None,
            index: 0,
        }
    }

    /// The order of every step.
    pub fn orders(&self) -> &[usize] {
        &self.orders
    }
}

impl<const D: usize> Sampler<D> for DpmSolverSinglestep<D> {
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
        self.group_start = None;
    }

    fn needs_noise(&self) -> bool {
        self.config.algorithm == Algorithm::SdeDpmSolverPlusPlus
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
            "DpmSolverSinglestep::step: the run is finished (call reset)"
        );
        let c = &self.config;
        let level = self.levels[i];
        let converted = convert_output(
            c.prediction,
            c.algorithm.predicts_data(),
            c.threshold,
            model_output,
            sample.clone(),
            level,
        );
        self.history.push((level, converted));
        if self.history.len() > c.solver_order {
            self.history.remove(0);
        }
        let order = self.orders[i].min(self.history.len());
        if order == 1 {
            self.group_start = Some((level, sample));
        }
        let (anchor, start) = self
            .group_start
            .clone()
            .expect("a singlestep group starts with a first-order step");
        let (levels, outputs): (Vec<Level>, Vec<Tensor<D>>) = self.history.iter().cloned().unzip();
        let prev = update(
            c,
            order,
            self.levels[i + 1],
            &levels,
            &outputs,
            anchor,
            start,
            noise,
            true,
        );
        self.index += 1;
        StepOutput::sample(prev)
    }
}
