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
