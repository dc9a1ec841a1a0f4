//! Continuous-time VP noise schedules as DPM-Solver's `NoiseScheduleVP` defines them (Lu et al.
//! 2022, App. A), used by the continuous-time solvers (DPM-Solver-v3, DC-Solver): `t ∈ (0, T]`,
//! `x_t = α_t·x0 + σ_t·ε`, `σ_t = √(1 − α_t²)`, `λ_t = log α_t − log σ_t`.
//!
//! - `Discrete`: a DDPM table ᾱ_i at knots `t_i = (i+1)/N`; `log α(t)` is piecewise linear
//!   through `½ log ᾱ_i` with linear extrapolation beyond the ends; `T = 1`. The network's time
//!   input is `1000·(t − 1/N)` (DPM-Solver's `model_wrapper` for discrete models).
//! - `Linear`: `log α(t) = −¼t²(β₁ − β₀) − ½tβ₀` (the VP-SDE of Song et al. 2021); `T = 1`; the
//!   network gets `t`.
//! - `Cosine`: the continuous cosine schedule (improved DDPM); `T = 0.9946` (where λ stays
//!   finite, as DPM-Solver clips it); the network gets `t`.

use crate::grid::np_linspace;

/// A continuous-time VP schedule.
#[derive(Clone, Debug, PartialEq)]
pub enum NoiseScheduleVp {
    /// Interpolated DDPM table (`½ log ᾱ_i` at `t_i = (i+1)/N`).
    Discrete {
        /// `½ log ᾱ_i`.
        log_alphas: Vec<f64>,
    },
    /// The cosine schedule of Nichol & Dhariwal (2021) in continuous time (DPM-Solver's
    /// `cosine`: `s = 0.008`, `T = 0.9946`, `log α_t = log cos((t+s)/(1+s)·π/2) − log cos(s/(1+s)·π/2)`).
    Cosine,
    /// The linear VP-SDE.
    Linear {
        /// β₀ (0.1 in Song et al.).
        beta_0: f64,
        /// β₁ (20).
        beta_1: f64,
    },
}

/// `interpolate_fn` of DPM-Solver: piecewise linear through `(xp, yp)` (xp increasing), extended
/// linearly by the end segments.
pub fn interpolate(x: f64, xp: &[f64], yp: &[f64]) -> f64 {
    let k = xp.len();
    let seg = match xp.iter().position(|&p| p > x) {
        Some(0) => 0,
        Some(j) => j - 1,
        None => k - 2,
    }
    .min(k - 2);
    let (x0, x1, y0, y1) = (xp[seg], xp[seg + 1], yp[seg], yp[seg + 1]);
    y0 + (x - x0) * (y1 - y0) / (x1 - x0)
}

impl NoiseScheduleVp {
    /// The schedule of a DDPM `alphas_cumprod` table.
    pub fn discrete(alphas_cumprod: &[f64]) -> Self {
        Self::Discrete {
            log_alphas: alphas_cumprod.iter().map(|a| 0.5 * a.ln()).collect(),
        }
    }

    fn knots(n: usize) -> Vec<f64> {
        np_linspace(0.0, 1.0, n + 1)[1..].to_vec()
    }

    /// The default end time: `1/N` (discrete) or `1e-3` (linear, DPM-Solver's default).
    pub fn t_end(&self) -> f64 {
        match self {
            Self::Discrete { log_alphas } => 1.0 / log_alphas.len() as f64,
            Self::Linear { .. } | Self::Cosine => 1e-3,
        }
    }

    /// The start time `T`: 1, or 0.9946 for the cosine schedule.
    pub fn t_start(&self) -> f64 {
        match self {
            Self::Cosine => 0.9946,
            _ => 1.0,
        }
    }

    /// `log α_t`.
    pub fn log_alpha(&self, t: f64) -> f64 {
        match self {
            Self::Discrete { log_alphas } => {
                interpolate(t, &Self::knots(log_alphas.len()), log_alphas)
            }
            Self::Linear { beta_0, beta_1 } => -0.25 * t * t * (beta_1 - beta_0) - 0.5 * t * beta_0,
            Self::Cosine => {
                let s = 0.008;
                let f = |t: f64| {
                    ((t + s) / (1.0 + s) * std::f64::consts::FRAC_PI_2)
                        .cos()
                        .ln()
                };
                f(t) - f(0.0)
            }
        }
    }

    /// `α_t`.
    pub fn alpha(&self, t: f64) -> f64 {
        self.log_alpha(t).exp()
    }

    /// `σ_t = √(1 − α_t²)`.
    pub fn sigma(&self, t: f64) -> f64 {
        (1.0 - (2.0 * self.log_alpha(t)).exp()).sqrt()
    }

    /// `λ_t = log α_t − ½ log(1 − α_t²)`.
    pub fn lambda(&self, t: f64) -> f64 {
        let la = self.log_alpha(t);
        la - 0.5 * (-(2.0 * la).exp_m1()).ln()
    }

    /// The time of half log-SNR `λ`.
    pub fn inverse_lambda(&self, lambda: f64) -> f64 {
        // log α = −½·logaddexp(0, −2λ).
        let log_add_exp = |a: f64, b: f64| a.max(b) + (-(a - b).abs()).exp().ln_1p();
        match self {
            Self::Discrete { log_alphas } => {
                let log_alpha = -0.5 * log_add_exp(0.0, -2.0 * lambda);
                let knots = Self::knots(log_alphas.len());
                let xp: Vec<f64> = log_alphas.iter().rev().copied().collect();
                let yp: Vec<f64> = knots.iter().rev().copied().collect();
                interpolate(log_alpha, &xp, &yp)
            }
            Self::Linear { beta_0, beta_1 } => {
                let tmp = 2.0 * (beta_1 - beta_0) * log_add_exp(-2.0 * lambda, 0.0);
                let delta = beta_0 * beta_0 + tmp;
                tmp / (delta.sqrt() + beta_0) / (beta_1 - beta_0)
            }
            Self::Cosine => {
                let s = 0.008;
                let log_alpha = -0.5 * log_add_exp(0.0, -2.0 * lambda);
                let start = (s / (1.0 + s) * std::f64::consts::FRAC_PI_2).cos().ln();
                (log_alpha + start).exp().acos() * 2.0 * (1.0 + s) / std::f64::consts::PI - s
            }
        }
    }

    /// The time input the network receives at `t`.
    pub fn model_time(&self, t: f64) -> f64 {
        match self {
            Self::Discrete { log_alphas } => 1000.0 * (t - 1.0 / log_alphas.len() as f64),
            Self::Linear { .. } | Self::Cosine => t,
        }
    }

    /// The [`crate::dpm_solver::Level`] at `t`.
    pub fn level(&self, t: f64) -> crate::dpm_solver::Level {
        crate::dpm_solver::Level {
            alpha: self.alpha(t),
            sigma: self.sigma(t),
            lambda: self.lambda(t),
        }
    }

    /// DPM-Solver's `get_time_steps`: `n + 1` times from `t_start` to `t_end`, uniform in
    /// `λ` (`logSNR`), in `t` (`time_uniform`) or in `√t` (`time_quadratic`).
    ///
    /// # Panics
    /// On an unknown `skip_type`.
    pub fn time_steps(&self, skip_type: &str, t_start: f64, t_end: f64, n: usize) -> Vec<f64> {
        use crate::schedule::linspace;
        match skip_type {
            "logSNR" => linspace(self.lambda(t_start), self.lambda(t_end), n + 1)
                .into_iter()
                .map(|l| self.inverse_lambda(l))
                .collect(),
            "time_uniform" => linspace(t_start, t_end, n + 1),
            "time_quadratic" => linspace(t_start.sqrt(), t_end.sqrt(), n + 1)
                .into_iter()
                .map(|s| s * s)
                .collect(),
            other => panic!(
                "unknown skip_type `{other}`: expected logSNR, time_uniform or time_quadratic"
            ),
        }
    }
}
