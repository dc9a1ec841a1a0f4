//! UniPC (Zhao et al., NeurIPS 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast
//! Sampling of Diffusion Models"), as `diffusers.UniPCMultistepScheduler`.
//!
//! In `λ = log(α/σ)` with `h = λ_t − λ_s`, `hh = −h` (data prediction, `predict_x0`) or `h`
//! (noise prediction), `hφ₁ = e^{hh} − 1`, `B(h) = hh` (bh1) or `e^{hh} − 1` (bh2):
//! ```text
//! UniP-p  (Alg. 2):  x_t = (σ_t/σ_s)·x_s − α_t·hφ₁·m_s − α_t·B(h)·Σ_k ρ^p_k·D_k
//! UniC-p  (Alg. 3):  x_t^c = (σ_t/σ_s)·x_s − α_t·hφ₁·m_s − α_t·B(h)·(Σ_k ρ^c_k·D_k + ρ^c_p·(m_t − m_s))
//! D_k = (m_{s_k} − m_s)/r_k,  r_k = (λ_{s_k} − λ_s)/h;  R_ik = r_k^{i−1},  b_i = hφ_{i+1}·i!/B(h)
//! (hφ_{k+1} = hφ_k/hh − 1/k!), ρ = R⁻¹b (ρ^p fixed at ½ for p = 2, ρ^c = ½ for p = 1)
//! ```
//! (noise prediction: `α/α_s`, `σ_t` in place of `σ/σ_s`, `α_t`). The corrector for the point
//! reached by step i−1 runs at the start of call i with call i's model output (no extra model
//! evaluation), unless `i−1` is in `disable_corrector`; the last result is never corrected, so
//! the sample returned by call k is the uncorrected predictor output.
//!
//! Departure from diffusers: bh1 with a zero final σ returns NaN there (`B(h) = −∞` times a zero
//! residual in the first-order last step); here a first-order predictor has no residual term,
//! which gives the same value wherever diffusers' is finite.

use std::str::FromStr;

use burn::tensor::Tensor;

use crate::dpm_solver::{Level, convert_output};
use crate::prediction::Prediction;
use crate::sampler::{Sampler, StepOutput};
use crate::schedule::DiscreteSchedule;
use crate::solver_grid::{SolverGrid, SolverGridOptions, solver_grid};
use crate::threshold::DynamicThreshold;

/// UniPC's `B(h)` variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BhVariant {
    /// `B(h) = hh` (recommended for few steps, unconditional).
    Bh1,
    /// `B(h) = e^{hh} − 1` (diffusers' default, guided sampling).
    Bh2,
}

impl FromStr for BhVariant {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        match name {
            "bh1" => Ok(Self::Bh1),
            "bh2" => Ok(Self::Bh2),
            other => Err(format!(
                "unknown UniPC solver_type `{other}`: expected bh1 or bh2"
            )),
        }
    }
}

/// Settings of [`UniPc`] (diffusers' defaults: bh2, order 2, `predict_x0`, lower_order_final).
#[derive(Clone, Debug)]
pub struct UniPcConfig {
    /// The ᾱ table.
    pub schedule: DiscreteSchedule,
    /// What the model predicts.
    pub prediction: Prediction,
    /// Integrate the data prediction (else the noise prediction).
    pub predict_x0: bool,
    /// bh1 or bh2.
    pub variant: BhVariant,
    /// The predictor order p (≥ 1).
    pub solver_order: usize,
    /// Lower the order over the last steps.
    pub lower_order_final: bool,
    /// Steps whose result is not corrected.
    pub disable_corrector: Vec<usize>,
    /// Grid options.
    pub grid: SolverGridOptions,
    /// Dynamic thresholding of x̂0.
    pub threshold: Option<DynamicThreshold>,
}

/// DC-Solver's ratios and the continuous times they interpolate in.
#[derive(Clone, Debug)]
struct Compensation {
    ratios: Vec<f64>,
    times: Vec<f64>,
}

/// Solves the small dense system `R·ρ = b` by Gaussian elimination with partial pivoting.
pub fn solve(mut r: Vec<Vec<f64>>, mut b: Vec<f64>) -> Vec<f64> {
    let n = b.len();
    for col in 0..n {
        let pivot = (col..n)
            .max_by(|&i, &j| r[i][col].abs().total_cmp(&r[j][col].abs()))
            .expect("non-empty system");
        r.swap(col, pivot);
        b.swap(col, pivot);
        let pivot_row = r[col].clone();
        for row in col + 1..n {
            let f = r[row][col] / pivot_row[col];
            for (a, p) in r[row][col..].iter_mut().zip(&pivot_row[col..]) {
                *a -= f * p;
            }
            b[row] -= f * b[col];
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let s: f64 = (row + 1..n).map(|k| r[row][k] * x[k]).sum();
        x[row] = (b[row] - s) / r[row][row];
    }
    x
}

/// The UniPC coefficients for order `p` from `s` to `t`: the ratios `r_k` of the history
/// levels, `hφ₁`, `B(h)` and `(R, b)` of Zhao et al. Alg. 2/3.
struct Coefficients {
    hphi_1: f64,
    b_h: f64,
    r: Vec<Vec<f64>>,
    b: Vec<f64>,
}

fn coefficients(
    predict_x0: bool,
    variant: BhVariant,
    h: f64,
    rks: &[f64],
    order: usize,
) -> Coefficients {
    let hh = if predict_x0 { -h } else { h };
    let hphi_1 = hh.exp_m1();
    let b_h = match variant {
        BhVariant::Bh1 => hh,
        BhVariant::Bh2 => hh.exp_m1(),
    };
    let mut rks = rks.to_vec();
    rks.push(1.0);
    let mut hphi_k = hphi_1 / hh - 1.0;
    let mut factorial = 1.0;
    let (mut r, mut b) = (Vec::new(), Vec::new());
    for i in 1..=order {
        r.push(rks.iter().map(|rk| rk.powi(i as i32 - 1)).collect());
        b.push(hphi_k * factorial / b_h);
        factorial *= (i + 1) as f64;
        hphi_k = hphi_k / hh - 1.0 / factorial;
    }
    Coefficients { hphi_1, b_h, r, b }
}

/// UniPC multistep sampler for `n` steps (one model call per step).
#[derive(Clone, Debug)]
pub struct UniPc<const D: usize> {
    config: UniPcConfig,
    sigmas: Option<Vec<f64>>,
    levels: Vec<Level>,
    compensation: Option<Compensation>,
    corrected: Option<Tensor<D>>,
    model_times: Vec<f64>,
    history: Vec<Tensor<D>>,
    last_sample: Option<Tensor<D>>,
    this_order: usize,
    lower_order_nums: usize,
    index: usize,
}

impl<const D: usize> UniPc<D> {
    /// The sampler for `num_inference_steps` steps.
    ///
    /// # Panics
    /// If `solver_order` is 0 or `num_inference_steps` is 0.
    pub fn new(config: UniPcConfig, num_inference_steps: usize) -> Self {
        let grid = solver_grid(&config.schedule, num_inference_steps, config.grid);
        Self::on_grid(config, grid)
    }

    /// The sampler on a caller-given grid (one σ more than timesteps).
    ///
    /// # Panics
    /// If `solver_order` is 0 or the grid's lengths disagree.
    pub fn on_grid(config: UniPcConfig, grid: SolverGrid) -> Self {
        assert!(
            config.solver_order >= 1,
            "UniPC solver_order must be at least 1"
        );
        assert_eq!(
            grid.sigmas.len(),
            grid.timesteps.len() + 1,
            "one σ more than timesteps"
        );
        Self::on_levels(
            config,
            grid.sigmas.iter().map(|&s| Level::of_ve(s)).collect(),
            grid.timesteps.iter().map(|&t| t as f64).collect(),
        )
        .with_sigmas(grid.sigmas)
    }

    fn with_sigmas(mut self, sigmas: Vec<f64>) -> Self {
        self.sigmas = Some(sigmas);
        self
    }

    /// The sampler on caller-given levels (one more than model calls) and model time inputs,
    /// e.g. a continuous-time schedule's levels (UniPC of Zhao et al.'s own code).
    ///
    /// # Panics
    /// If `solver_order` is 0 or `levels` is not one longer than `model_times`.
    pub fn on_levels(config: UniPcConfig, levels: Vec<Level>, model_times: Vec<f64>) -> Self {
        assert!(
            config.solver_order >= 1,
            "UniPC solver_order must be at least 1"
        );
        assert_eq!(
            levels.len(),
            model_times.len() + 1,
            "one level more than model calls"
        );
        Self {
            levels,
            model_times,
            sigmas: None,
            compensation: None,
            corrected: None,
            config,
            history: Vec::new(),
            last_sample: None,
            this_order: 0,
            lower_order_nums: 0,
            index: 0,
        }
    }

    /// Dynamic compensation (DC-Solver, Zhao et al. ECCV 2024, eq. 9): before the predictor of
    /// step k (model call k), if `ratios[k] ≠ 1` the newest model output is replaced by the
    /// Lagrange interpolation of the three newest outputs at `t* = r·t_{−1} + (1−r)·t_{−2}`
    /// (`times` are the continuous times of the levels); the compensated value stays in the
    /// history.
    ///
    /// # Panics
    /// If the lengths do not match the grid or the order is below 3 (three points are needed).
    pub fn with_compensation(mut self, ratios: Vec<f64>, times: Vec<f64>) -> Self {
        assert_eq!(ratios.len(), self.model_times.len(), "one ratio per step");
        assert_eq!(times.len(), self.levels.len(), "one time per level");
        assert!(
            self.config.solver_order >= 3,
            "dynamic compensation needs solver_order >= 3"
        );
        self.compensation = Some(Compensation { ratios, times });
        self
    }

    /// Changes the compensation ratio of model call `step` (for a ratio search; takes effect
    /// if that call has not run yet).
    ///
    /// # Panics
    /// If the sampler has no compensation or `step` is past the grid.
    pub fn set_ratio(&mut self, step: usize, ratio: f64) {
        let dc = self
            .compensation
            .as_mut()
            .expect("set_ratio needs a sampler built with_compensation");
        dc.ratios[step] = ratio;
    }

    /// The corrected sample of the point reached by the previous call (UniC's output), once
    /// the current call has run its corrector; the fixture of DC-Solver records these.
    pub fn corrected(&self) -> Option<&Tensor<D>> {
        self.corrected.as_ref()
    }

    /// `x_ = (σ_t/σ_s)x − α_t·hφ₁·m_s` (data) or `(α_t/α_s)x − σ_t·hφ₁·m_s` (noise), the
    /// common first-order part; returns it with the factor multiplying `B(h)·residual`.
    fn base(
        &self,
        s: Level,
        t: Level,
        x: Tensor<D>,
        m_s: Tensor<D>,
        hphi_1: f64,
    ) -> (Tensor<D>, f64) {
        if self.config.predict_x0 {
            (
                x.mul_scalar(t.sigma / s.sigma) - m_s.mul_scalar(t.alpha * hphi_1),
                t.alpha,
            )
        } else {
            (
                x.mul_scalar(t.alpha / s.alpha) - m_s.mul_scalar(t.sigma * hphi_1),
                t.sigma,
            )
        }
    }

    /// Differences `D_k = (m_{s_k} − m_s)/r_k` over the `order − 1` older history entries, with
    /// `level_of(k)` the level of the k-th older entry.
    fn differences(
        &self,
        order: usize,
        s: Level,
        h: f64,
        level_of: impl Fn(usize) -> Level,
    ) -> (Vec<f64>, Vec<Tensor<D>>) {
        let n = self.history.len();
        let m_s = &self.history[n - 1];
        (1..order)
            .map(|k| {
                let rk = (level_of(k).lambda - s.lambda) / h;
                (
                    rk,
                    (self.history[n - 1 - k].clone() - m_s.clone()).div_scalar(rk),
                )
            })
            .unzip()
    }

    fn weighted(ds: &[Tensor<D>], rhos: &[f64]) -> Option<Tensor<D>> {
        ds.iter()
            .zip(rhos)
            .map(|(d, &rho)| d.clone().mul_scalar(rho))
            .reduce(|a, b| a + b)
    }
}

impl<const D: usize> Sampler<D> for UniPc<D> {
    fn timesteps(&self) -> &[f64] {
        &self.model_times
    }

    fn sigmas(&self) -> Option<&[f64]> {
        self.sigmas.as_deref()
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
        self.corrected = None;
        self.last_sample = None;
        self.this_order = 0;
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
        assert!(i < n, "UniPc::step: the run is finished (call reset)");
        let c = self.config.clone();
        let level = self.levels[i];
        let converted = convert_output(
            c.prediction,
            c.predict_x0,
            c.threshold,
            model_output,
            sample.clone(),
            level,
        );
        let mut sample = sample;
        // UniC for the point the previous call reached, with this call's model output.
        if let Some(last) = self
            .last_sample
            .clone()
            .filter(|_| i > 0 && !c.disable_corrector.contains(&(i - 1)))
        {
            let order = self.this_order;
            let (s, t) = (self.levels[i - 1], level);
            let h = t.lambda - s.lambda;
            let (rks, ds) = self.differences(order, s, h, |k| self.levels[i - 1 - k]);
            let co = coefficients(c.predict_x0, c.variant, h, &rks, order);
            let rhos = if order == 1 {
                vec![0.5]
            } else {
                solve(co.r, co.b)
            };
            let m_s = self.history[self.history.len() - 1].clone();
            let (base, scale) = self.base(s, t, last, m_s.clone(), co.hphi_1);
            let mut residual = (converted.clone() - m_s).mul_scalar(rhos[order - 1]);
            if let Some(corr) = Self::weighted(&ds, &rhos[..order - 1]) {
                residual = residual + corr;
            }
            sample = base - residual.mul_scalar(scale * co.b_h);
            self.corrected = Some(sample.clone());
        }
        self.history.push(converted.clone());
        if self.history.len() > c.solver_order {
            self.history.remove(0);
        }
        let mut converted = converted;
        if let Some(dc) = &self.compensation
            && dc.ratios[i] != 1.0
        {
            let n = self.history.len();
            assert!(
                n >= 3,
                "dynamic compensation at step {i} needs three model outputs"
            );
            let ts = [dc.times[i], dc.times[i - 1], dc.times[i - 2]];
            let target = dc.ratios[i] * ts[0] + (1.0 - dc.ratios[i]) * ts[1];
            let mut value: Option<Tensor<D>> = None;
            for a in 0..3 {
                let mut w = 1.0;
                for b in 0..3 {
                    if a != b {
                        w *= (target - ts[b]) / (ts[a] - ts[b]);
                    }
                }
                let term = self.history[n - 1 - a].clone().mul_scalar(w);
                value = Some(match value {
                    Some(v) => v + term,
                    None => term,
                });
            }
            converted = value.expect("three terms");
            self.history[n - 1] = converted.clone();
        }
        let order = if c.lower_order_final {
            c.solver_order.min(n - i)
        } else {
            c.solver_order
        }
        .min(self.lower_order_nums + 1);
        self.this_order = order;
        self.last_sample = Some(sample.clone());
        // UniP from this level to the next.
        let (s, t) = (level, self.levels[i + 1]);
        let h = t.lambda - s.lambda;
        let (rks, ds) = self.differences(order, s, h, |k| self.levels[i - k]);
        let co = coefficients(c.predict_x0, c.variant, h, &rks, order);
        let (base, scale) = self.base(s, t, sample, converted.clone(), co.hphi_1);
        let prev = if order == 1 {
            base
        } else {
            let rhos = if order == 2 {
                vec![0.5]
            } else {
                let k = order - 1;
                let r: Vec<Vec<f64>> = co.r[..k].iter().map(|row| row[..k].to_vec()).collect();
                solve(r, co.b[..k].to_vec())
            };
            let residual = Self::weighted(&ds, &rhos).expect("order ≥ 2 has differences");
            base - residual.mul_scalar(scale * co.b_h)
        };
        self.lower_order_nums = (self.lower_order_nums + 1).min(c.solver_order);
        self.index += 1;
        if c.predict_x0 {
            StepOutput::with_x0(prev, converted)
        } else {
            StepOutput::sample(prev)
        }
    }
}
