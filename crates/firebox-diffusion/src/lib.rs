//! # firebox-diffusion
//!
//! Noise schedules, timestep grids and samplers for diffusion models, written against Burn's
//! tensor API so they run on every backend. Schedule scalars (ᾱ, α, σ) are computed on the host
//! in f64, as diffusers' float64 tables; the per-step arithmetic on samples runs on the device.
//!
//! Start with [`sampler`]: every sampler implements [`Sampler`](sampler::Sampler) (one
//! `step` per model call, with its own state) and [`sample`](sampler::sample) runs the loop:
//!
//! ```
//! use burn::tensor::{Device, Tensor};
//! use firebox_diffusion::dpm_solver::{Algorithm, DpmSolverConfig, DpmSolverMultistep, SolverType};
//! use firebox_diffusion::grid::Spacing;
//! use firebox_diffusion::prediction::Prediction;
//! use firebox_diffusion::sampler::{SeededNoise, sample};
//! use firebox_diffusion::schedule::{BetaSchedule, DiscreteSchedule, betas};
//! use firebox_diffusion::solver_grid::{FinalSigma, SigmaSpacing, SolverGridOptions, TimestepRounding};
//!
//! let schedule = DiscreteSchedule::from_betas(&betas(BetaSchedule::ScaledLinear, 0.00085, 0.012, 1000), false);
//! let config = DpmSolverConfig {
//!     schedule,
//!     prediction: Prediction::Epsilon,
//!     algorithm: Algorithm::DpmSolverPlusPlus,
//!     solver_order: 2,
//!     solver_type: SolverType::Midpoint,
//!     lower_order_final: true,
//!     euler_at_final: false,
//!     grid: SolverGridOptions {
//!         spacing: Spacing::Linspace,
//!         steps_offset: 0,
//!         lambda_min_clipped: f64::NEG_INFINITY,
//!         sigma_spacing: SigmaSpacing::Timesteps,
//!         final_sigma: FinalSigma::Zero,
//!         rounding: TimestepRounding::Round,
//!     },
//!     threshold: None,
//! };
//! let mut sampler = DpmSolverMultistep::<2>::new(config, 20);
//! let device = Device::flex();
//! // Any closure (x, t) -> prediction is a denoiser; a real one calls the network.
//! let denoiser = |x: Tensor<2>, _t: f64| x.mul_scalar(0.1);
//! let x_t = Tensor::<2>::ones([4, 2], &device);
//! let x_0 = sample(&mut sampler, &denoiser, x_t, &mut SeededNoise::new(0));
//! assert_eq!(x_0.dims(), [4, 2]);
//! ```
//!
//! Building blocks:
//! - [`schedule`]: discrete β tables (linear, scaled_linear, squaredcos_cap_v2, sigmoid) and
//!   `rescale_betas_zero_snr`; [`vp_continuous`]: DPM-Solver's continuous-time VP schedules
//!   (discrete-table, linear, cosine).
//! - [`grid`]: the timestep grids of diffusers' schedulers (leading, linspace, trailing, Karras,
//!   exponential); [`solver_grid`]: the DPM-Solver / UniPC / DEIS family's grids.
//! - [`prediction`]: what the denoiser predicts (ε, x0, v, flow) and the conversions;
//!   [`threshold`]: Imagen's dynamic thresholding of x̂0.
//!
//! Samplers (diffusers family, then research):
//! - [`ddpm`], [`ddim`] (η, inversion), [`pndm`] (PLMS), [`euler`] (Euler, Euler ancestral),
//!   [`heun`], [`dpm_solver`] (multistep 1–3M, SDE, singlestep), [`unipc`], [`deis`],
//!   [`flow_match`].
//! - [`momentum`] (GHVB, PLMS with heavy ball), [`bdia`] (BDIA-DDIM with exact inversion),
//!   [`dpm_solver_v3`] (with EMS loader, closed form and estimator), [`dc_solver`] (ratio
//!   search for UniPC's dynamic compensation), [`mrs`] (MR Sampler, IR-SDE).
//! - [`step_search`]: BOSS (Bellman-optimal step sizes) and an evolutionary schedule search.
#![warn(missing_docs)]

pub mod bdia;
pub mod dc_solver;
pub mod ddim;
pub mod ddpm;
pub mod deis;
pub mod dpm_solver;
pub mod dpm_solver_v3;
pub mod euler;
pub mod flow_match;
pub mod grid;
pub mod heun;
pub mod momentum;
pub mod mrs;
pub mod pndm;
pub mod prediction;
pub mod sampler;
pub mod schedule;
pub mod solver_grid;
pub mod step_search;
pub mod threshold;
pub mod unipc;
pub mod vp_continuous;
