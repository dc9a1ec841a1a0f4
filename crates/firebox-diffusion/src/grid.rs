//! Timestep grids of diffusers' discrete schedulers. Each family builds its grid its own way;
//! these reproduce them exactly (integers, with NumPy's round-half-to-even), so no step is ever
//! found by comparing floats.

use std::str::FromStr;

/// diffusers' `timestep_spacing`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spacing {
    /// `arange(n)·(T // n)`, reversed, plus `steps_offset`.
    Leading,
    /// `round(linspace(0, T−1, n))`, reversed.
    Linspace,
    /// `round(arange(T, 0, −T/n)) − 1`.
    Trailing,
}

impl FromStr for Spacing {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        match name {
            "leading" => Ok(Self::Leading),
            "linspace" => Ok(Self::Linspace),
            "trailing" => Ok(Self::Trailing),
            other => Err(format!(
                "unknown timestep_spacing `{other}`: expected leading, linspace or trailing"
            )),
        }
    }
}

/// The grid of `DDIMScheduler`, `DDPMScheduler` and `PNDMScheduler`: `n` integer timesteps in
/// decreasing order for `T = num_train_timesteps`.
///
/// # Panics
/// If `n` is 0 or larger than `T`.
pub fn ddim_timesteps(
    num_train_timesteps: usize,
    n: usize,
    spacing: Spacing,
    steps_offset: i64,
) -> Vec<i64> {
    let t = num_train_timesteps;
    assert!(
        n >= 1 && n <= t,
        "num_inference_steps = {n} must be between 1 and num_train_timesteps = {t}"
    );
    match spacing {
        Spacing::Leading => {
            let ratio = (t / n) as i64;
            (0..n as i64)
                .rev()
                .map(|i| i * ratio + steps_offset)
                .collect()
        }
        Spacing::Linspace => crate::schedule::linspace(0.0, (t - 1) as f64, n)
            .into_iter()
            .rev()
            .map(|v| v.round_ties_even() as i64)
            .collect(),
        Spacing::Trailing => {
            let ratio = t as f64 / n as f64;
            // np.arange(T, 0, −ratio): ceil(T / ratio) values T − k·ratio.
            let len = (t as f64 / ratio).ceil() as usize;
            (0..len)
                .map(|k| (t as f64 - k as f64 * ratio).round_ties_even() as i64 - 1)
                .collect()
        }
    }
}

/// `n` evenly spaced values from `start` to `end` inclusive, computed as `numpy.linspace` does
/// (`start + i·step`, the last value set to `end`): the grids of diffusers' `set_timesteps` are
/// NumPy-built, the β tables torch-built ([`crate::schedule::linspace`]).
pub fn np_linspace(start: f64, end: f64, n: usize) -> Vec<f64> {
    match n {
        0 => Vec::new(),
        1 => vec![start],
        _ => {
            let step = (end - start) / (n - 1) as f64;
            let mut out: Vec<f64> = (0..n).map(|i| start + i as f64 * step).collect();
            out[n - 1] = end;
            out
        }
    }
}

/// The integer grid of the DPM-Solver / UniPC / DEIS family (`DPMSolverMultistepScheduler.
/// set_timesteps`), `n` decreasing timesteps: linspace `round(linspace(0, last−1, n+1))`
/// reversed without its final 0; leading `arange(n+1)·(last // (n+1))` reversed without its final
/// 0, plus `steps_offset`; trailing `round(arange(last, 0, −T/n)) − 1`. `last` is
/// `num_train_timesteps` minus the clipped timesteps (`lambda_min_clipped`; pass `T` when none).
///
/// # Panics
/// If `n` is 0.
pub fn solver_timesteps(
    num_train_timesteps: usize,
    last_timestep: usize,
    n: usize,
    spacing: Spacing,
    steps_offset: i64,
) -> Vec<i64> {
    assert!(n >= 1, "num_inference_steps must be at least 1");
    match spacing {
        Spacing::Linspace => {
            let grid = np_linspace(0.0, last_timestep as f64 - 1.0, n + 1);
            grid[1..]
                .iter()
                .rev()
                .map(|v| v.round_ties_even() as i64)
                .collect()
        }
        Spacing::Leading => {
            let ratio = (last_timestep / (n + 1)) as i64;
            (1..=n as i64)
                .rev()
                .map(|i| i * ratio + steps_offset)
                .collect()
        }
        Spacing::Trailing => {
            let ratio = num_train_timesteps as f64 / n as f64;
            let len = (last_timestep as f64 / ratio).ceil() as usize;
            (0..len)
                .map(|k| (last_timestep as f64 - k as f64 * ratio).round_ties_even() as i64 - 1)
                .collect()
        }
    }
}

/// `numpy.interp(x, arange(len(table)), table)` for `x` in `[0, len − 1]` (clamped outside).
pub fn interp_table(x: f64, table: &[f64]) -> f64 {
    let last = table.len() - 1;
    if x <= 0.0 {
        return table[0];
    }
    if x >= last as f64 {
        return table[last];
    }
    let low = x.floor() as usize;
    let w = x - low as f64;
    // NumPy's formula: slope·(x − xp[j]) + fp[j].
    (table[low + 1] - table[low]) * w + table[low]
}

/// The Karras et al. (2022, eq. 5) ρ-ramp of `n` noise levels from `sigma_max` down to
/// `sigma_min` (ρ = 7 in diffusers), as `_convert_to_karras`.
pub fn karras_sigmas(sigma_min: f64, sigma_max: f64, n: usize, rho: f64) -> Vec<f64> {
    let (min_inv, max_inv) = (sigma_min.powf(1.0 / rho), sigma_max.powf(1.0 / rho));
    np_linspace(0.0, 1.0, n)
        .into_iter()
        .map(|r| (max_inv + r * (min_inv - max_inv)).powf(rho))
        .collect()
}

/// `n` noise levels uniform in log σ from `sigma_max` to `sigma_min` (`_convert_to_exponential`).
pub fn exponential_sigmas(sigma_min: f64, sigma_max: f64, n: usize) -> Vec<f64> {
    np_linspace(sigma_max.ln(), sigma_min.ln(), n)
        .into_iter()
        .map(f64::exp)
        .collect()
}

/// diffusers' `_sigma_to_t`: the fractional training timestep of noise level `sigma`, by linear
/// interpolation in log σ over the training table (`log_sigmas` increasing with t), clamped to
/// the table's range.
pub fn sigma_to_t(sigma: f64, log_sigmas: &[f64]) -> f64 {
    let log_sigma = sigma.max(1e-10).ln();
    // The last index whose log σ is ≤ log_sigma (0 if none), at most len − 2.
    let count = log_sigmas.iter().filter(|&&l| log_sigma - l >= 0.0).count();
    let low = count.saturating_sub(1).min(log_sigmas.len() - 2);
    let (lo, hi) = (log_sigmas[low], log_sigmas[low + 1]);
    let w = ((lo - log_sigma) / (lo - hi)).clamp(0.0, 1.0);
    (1.0 - w) * low as f64 + w * (low + 1) as f64
}
