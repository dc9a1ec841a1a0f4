//! The grids of diffusers' multistep-solver family (`DPMSolverMultistepScheduler`,
//! `DPMSolverSinglestepScheduler`, `UniPCMultistepScheduler`, `DEISMultistepScheduler`): integer
//! timesteps for the network and the VE noise levels `σ = √((1−ᾱ)/ᾱ)` the solver steps through,
//! one more than the timesteps (the final level).
//!
//! diffusers builds them in NumPy and casts the σ grid to float32 at the end; so does
//! [`solver_grid`] (the values are f32-rounded, stored as f64). On Karras / exponential / Lu grids
//! the network gets `t = _sigma_to_t(σ)` rounded (or truncated, see [`TimestepRounding`]) to an
//! integer while the solver keeps the unrounded σ: the two noise levels differ slightly, as in
//! diffusers.

use std::str::FromStr;

use crate::grid::{
    Spacing, exponential_sigmas, interp_table, karras_sigmas, np_linspace, sigma_to_t,
    solver_timesteps,
};
use crate::schedule::{DiscreteSchedule, ve_sigma};

/// How the σ levels of the grid are placed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SigmaSpacing {
    /// σ of the integer timesteps (`np.interp` on the training table).
    Timesteps,
    /// Karras et al. (2022) ρ = 7 ramp between the table's extremes (`use_karras_sigmas`).
    Karras,
    /// Uniform in log σ between the table's extremes (`use_exponential_sigmas`).
    Exponential,
    /// Lu et al. (2022): uniform in log σ = −λ, built as diffusers' `_convert_to_lu`
    /// (`use_lu_lambdas`).
    LuLambdas,
}

/// The level after the last timestep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinalSigma {
    /// σ = 0: the last step lands on the data (`final_sigmas_type="zero"`).
    Zero,
    /// `σ(ᾱ_0)`, the table's smallest level (`final_sigmas_type="sigma_min"`).
    SigmaMin,
    /// The grid's own last σ again, as UniPC's `sigma_min` on Karras/exponential grids and DEIS on
    /// those grids (a zero-length final step for DEIS).
    RepeatLast,
}

impl FromStr for FinalSigma {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        match name {
            "zero" => Ok(Self::Zero),
            "sigma_min" => Ok(Self::SigmaMin),
            other => Err(format!(
                "unknown final_sigmas_type `{other}`: expected zero or sigma_min"
            )),
        }
    }
}

/// How a fractional `_sigma_to_t` timestep becomes the network's integer timestep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimestepRounding {
    /// `.round()` (half to even) before the int64 cast.
    Round,
    /// The bare int64 cast (truncation toward zero), as diffusers does where it skips `.round()`.
    Truncate,
}

/// Timesteps for the network and σ levels for the solver.
#[derive(Clone, Debug, PartialEq)]
pub struct SolverGrid {
    /// Integer timesteps, one per solver step, decreasing.
    pub timesteps: Vec<i64>,
    /// VE σ at each timestep plus the final level (`timesteps.len() + 1` values, f32-rounded).
    pub sigmas: Vec<f64>,
}

/// Options of [`solver_grid`].
#[derive(Clone, Copy, Debug)]
pub struct SolverGridOptions {
    /// `timestep_spacing` (used by [`SigmaSpacing::Timesteps`] grids).
    pub spacing: Spacing,
    /// `steps_offset` (leading spacing).
    pub steps_offset: i64,
    /// `lambda_min_clipped`: timesteps whose λ is below it are cut from the top of the grid
    /// (`f64::NEG_INFINITY` for none).
    pub lambda_min_clipped: f64,
    /// Placement of the σ levels.
    pub sigma_spacing: SigmaSpacing,
    /// The final level.
    pub final_sigma: FinalSigma,
    /// Conversion of fractional timesteps on σ-placed grids.
    pub rounding: TimestepRounding,
}

/// The number of training timesteps whose λ = log α − log σ is below `lambda_min_clipped`
/// (`torch.searchsorted(flip(lambda_t), lambda_min_clipped)`, λ decreasing in t).
pub fn clipped_timesteps(schedule: &DiscreteSchedule, lambda_min_clipped: f64) -> usize {
    schedule
        .alphas_cumprod
        .iter()
        .filter(|&&a| 0.5 * a.ln() - 0.5 * (1.0 - a).ln() < lambda_min_clipped)
        .count()
}

fn round_f32(values: impl IntoIterator<Item = f64>) -> Vec<f64> {
    values.into_iter().map(|v| v as f32 as f64).collect()
}

/// Builds the grid of `n` solver steps, as the family's `set_timesteps` does.
///
/// # Panics
/// If `n` is 0.
pub fn solver_grid(
    schedule: &DiscreteSchedule,
    n: usize,
    options: SolverGridOptions,
) -> SolverGrid {
    let train = schedule.num_train_timesteps();
    let last = train - clipped_timesteps(schedule, options.lambda_min_clipped);
    let table = schedule.ve_sigmas();
    let log_sigmas: Vec<f64> = table.iter().map(|s| s.ln()).collect();
    let (sigma_min, sigma_max) = (table[0], table[train - 1]);
    let to_t = |sigmas: &[f64]| -> Vec<i64> {
        sigmas
            .iter()
            .map(|&s| {
                let t = sigma_to_t(s, &log_sigmas);
                match options.rounding {
                    TimestepRounding::Round => t.round_ties_even() as i64,
                    TimestepRounding::Truncate => t as i64,
                }
            })
            .collect()
    };
    let (timesteps, mut sigmas) = match options.sigma_spacing {
        SigmaSpacing::Timesteps => {
            let timesteps = solver_timesteps(train, last, n, options.spacing, options.steps_offset);
            let sigmas = timesteps
                .iter()
                .map(|&t| interp_table(t as f64, &table))
                .collect();
            (timesteps, sigmas)
        }
        SigmaSpacing::Karras => {
            let sigmas = karras_sigmas(sigma_min, sigma_max, n, 7.0);
            (to_t(&sigmas), sigmas)
        }
        SigmaSpacing::Exponential => {
            let sigmas = exponential_sigmas(sigma_min, sigma_max, n);
            (to_t(&sigmas), sigmas)
        }
        SigmaSpacing::LuLambdas => {
            // diffusers calls log σ "lambdas" here: uniform from log σ_max to log σ_min.
            let sigmas: Vec<f64> = np_linspace(log_sigmas[train - 1], log_sigmas[0], n)
                .into_iter()
                .map(f64::exp)
                .collect();
            (to_t(&sigmas), sigmas)
        }
    };
    let final_level = match options.final_sigma {
        FinalSigma::Zero => 0.0,
        FinalSigma::SigmaMin => ve_sigma(schedule.alphas_cumprod[0]),
        FinalSigma::RepeatLast => *sigmas.last().expect("at least one step"),
    };
    sigmas.push(final_level);
    SolverGrid {
        timesteps,
        sigmas: round_f32(sigmas),
    }
}
