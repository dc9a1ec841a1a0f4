//! Discrete noise schedules: the β table of a DDPM-style model and its cumulative product
//! `ᾱ_t = Π_{s ≤ t} (1 − β_s)`, in f64 (diffusers' float64 formulas; building them in f32 moves
//! derived grids).

use std::f64::consts::PI;
use std::str::FromStr;

/// How the β table is laid out over the training timesteps (diffusers' `beta_schedule`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum BetaSchedule {
    /// `linspace(β_start, β_end, T)` (Ho et al. 2020).
    Linear,
    /// `linspace(√β_start, √β_end, T)²` (Stable Diffusion's).
    ScaledLinear,
    /// The cosine ᾱ of Nichol & Dhariwal 2021 (eq. 17), `β_i = min(1 − ᾱ((i+1)/T)/ᾱ(i/T), 0.999)`.
    SquaredCosCapV2,
    /// `sigmoid(linspace(−6, 6, T))·(β_end − β_start) + β_start` (GeoDiff).
    Sigmoid,
}

impl FromStr for BetaSchedule {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        match name {
            "linear" => Ok(Self::Linear),
            "scaled_linear" => Ok(Self::ScaledLinear),
            "squaredcos_cap_v2" => Ok(Self::SquaredCosCapV2),
            "sigmoid" => Ok(Self::Sigmoid),
            other => Err(format!(
                "unknown beta_schedule `{other}`: expected linear, scaled_linear, \
                 squaredcos_cap_v2 or sigmoid"
            )),
        }
    }
}

/// `n` evenly spaced values from `start` to `end` inclusive, computed as `torch.linspace` does
/// (from the start for the first half, from the end for the second), so tables match it bit for
/// bit in f64.
pub fn linspace(start: f64, end: f64, n: usize) -> Vec<f64> {
    match n {
        0 => Vec::new(),
        1 => vec![start],
        _ => {
            let step = (end - start) / (n - 1) as f64;
            let half = n / 2;
            (0..n)
                .map(|i| {
                    if i < half {
                        start + step * i as f64
                    } else {
                        end - step * (n - 1 - i) as f64
                    }
                })
                .collect()
        }
    }
}

/// The β table of `schedule` over `num_train_timesteps` steps.
///
/// # Panics
/// If `num_train_timesteps` is 0.
pub fn betas(
    schedule: BetaSchedule,
    beta_start: f64,
    beta_end: f64,
    num_train_timesteps: usize,
) -> Vec<f64> {
    assert!(
        num_train_timesteps > 0,
        "betas: num_train_timesteps must be at least 1"
    );
    let t = num_train_timesteps;
    match schedule {
        BetaSchedule::Linear => linspace(beta_start, beta_end, t),
        BetaSchedule::ScaledLinear => linspace(beta_start.sqrt(), beta_end.sqrt(), t)
            .into_iter()
            .map(|b| b * b)
            .collect(),
        BetaSchedule::SquaredCosCapV2 => {
            let alpha_bar = |x: f64| ((x + 0.008) / 1.008 * PI / 2.0).cos().powi(2);
            (0..t)
                .map(|i| {
                    let (t1, t2) = (i as f64 / t as f64, (i + 1) as f64 / t as f64);
                    (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999)
                })
                .collect()
        }
        BetaSchedule::Sigmoid => linspace(-6.0, 6.0, t)
            .into_iter()
            .map(|x| 1.0 / (1.0 + (-x).exp()) * (beta_end - beta_start) + beta_start)
            .collect(),
    }
}

/// `ᾱ_t = Π_{s ≤ t} (1 − β_s)`.
pub fn alphas_cumprod(betas: &[f64]) -> Vec<f64> {
    betas
        .iter()
        .scan(1.0, |product, beta| {
            *product *= 1.0 - beta;
            Some(*product)
        })
        .collect()
}

/// Rescales β so that the last timestep has zero signal-to-noise ratio (Lin et al. 2024,
/// *Common Diffusion Noise Schedules and Sample Steps are Flawed*, Algorithm 1): `√ᾱ` is shifted
/// so its last entry is 0 and scaled so its first is unchanged.
pub fn rescale_zero_terminal_snr(betas: &[f64]) -> Vec<f64> {
    let sqrt_abar: Vec<f64> = alphas_cumprod(betas).iter().map(|a| a.sqrt()).collect();
    let (first, last) = (sqrt_abar[0], sqrt_abar[sqrt_abar.len() - 1]);
    let abar: Vec<f64> = sqrt_abar
        .iter()
        .map(|s| ((s - last) * first / (first - last)).powi(2))
        .collect();
    let mut out = Vec::with_capacity(abar.len());
    out.push(1.0 - abar[0]);
    for w in abar.windows(2) {
        out.push(1.0 - w[1] / w[0]);
    }
    out
}

/// A discrete schedule's ᾱ table, from the diffusers-style configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct DiscreteSchedule {
    /// `ᾱ_t` for `t = 0..T`.
    pub alphas_cumprod: Vec<f64>,
}

impl DiscreteSchedule {
    /// The schedule for `betas`, optionally rescaled to zero terminal SNR.
    pub fn from_betas(betas: &[f64], rescale_zero_snr: bool) -> Self {
        let betas = if rescale_zero_snr {
            rescale_zero_terminal_snr(betas)
        } else {
            betas.to_vec()
        };
        Self {
            alphas_cumprod: alphas_cumprod(&betas),
        }
    }

    /// Number of training timesteps T.
    pub fn num_train_timesteps(&self) -> usize {
        self.alphas_cumprod.len()
    }

    /// `ᾱ(t)` linearly interpolated between the integer timesteps (exact at integers), clamped to
    /// the table.
    pub fn alpha_bar_at(&self, t: f64) -> f64 {
        let last = self.alphas_cumprod.len() - 1;
        let t = t.clamp(0.0, last as f64);
        let low = t.floor() as usize;
        let high = (low + 1).min(last);
        let w = t - low as f64;
        self.alphas_cumprod[low] * (1.0 - w) + self.alphas_cumprod[high] * w
    }
}

/// The VE noise level of a VP level: `σ_VE = √((1 − ᾱ)/ᾱ)` (diffusers' `sigmas` table).
pub fn ve_sigma(alpha_bar: f64) -> f64 {
    ((1.0 - alpha_bar) / alpha_bar).sqrt()
}

/// The VP pair `(α_t, σ_t) = (1/√(σ²+1), σ/√(σ²+1))` of a VE level σ (diffusers'
/// `_sigma_to_alpha_sigma_t`).
pub fn vp_of_ve(sigma: f64) -> (f64, f64) {
    let alpha = 1.0 / (sigma * sigma + 1.0).sqrt();
    (alpha, sigma * alpha)
}

impl DiscreteSchedule {
    /// The VE noise levels `√((1 − ᾱ_t)/ᾱ_t)` of every training timestep (increasing in t).
    pub fn ve_sigmas(&self) -> Vec<f64> {
        self.alphas_cumprod.iter().map(|&a| ve_sigma(a)).collect()
    }
}
