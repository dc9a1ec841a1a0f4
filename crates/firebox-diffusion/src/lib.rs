//! # firebox-diffusion
//!
//! Noise schedules, timestep grids and samplers for diffusion models, written against Burn's
//! tensor API so they run on every backend. Schedule scalars (ᾱ, α, σ) are computed on the host
//! in f64, as diffusers' float64 tables; the per-step arithmetic on samples runs on the device.
//!
//! - [`schedule`]: discrete β tables (linear, scaled_linear, squaredcos_cap_v2, sigmoid) and
//!   `rescale_betas_zero_snr`.
//! - [`grid`]: the timestep grids of diffusers' schedulers (leading, linspace, trailing).
//! - [`prediction`]: what the denoiser predicts (ε, x0, v) and the conversions between them.
//! - [`ddim`]: DDIM (Song et al. 2021) with η, as `diffusers.DDIMScheduler`.
//! - [`ddpm`]: DDPM ancestral sampling (Ho et al. 2020), as `diffusers.DDPMScheduler`.
//! - [`solver_grid`]: the timestep/σ grids of the DPM-Solver / UniPC / DEIS family.
//! - [`step_search`]: BOSS (Bellman-optimal step sizes by dynamic programming) and an
//!   evolutionary timestep-schedule search (AutoDiffusion / USF) for any sampler.
//! - [`threshold`]: Imagen's dynamic thresholding of x̂0.
//! - [`dpm_solver`]: DPM-Solver / DPM-Solver++ (multistep 1–3M, midpoint / Heun, SDE variant,
//!   singlestep), as diffusers' schedulers.
//! - [`unipc`]: UniPC (bh1 / bh2 predictor-corrector); [`deis`]: DEIS (log-ρ multistep).
//! - [`euler`]: Euler and Euler ancestral in VE units; [`heun`]: Heun's 2nd-order method;
//!   [`flow_match`]: flow-matching Euler with the SD3 shift.
//! - [`pndm`]: PLMS; [`momentum`]: GHVB and PLMS with heavy ball; [`bdia`]: BDIA-DDIM with
//!   exact inversion.
//! - [`dpm_solver_v3`]: DPM-Solver-v3 with empirical model statistics (loader, Gaussian closed
//!   form, estimator).
//! - [`dc_solver`]: DC-Solver's compensation-ratio search (UniPC with dynamic compensation).
//! - [`mrs`]: MR Sampler for mean-reverting diffusion (IR-SDE).
//! - [`vp_continuous`]: DPM-Solver's continuous-time VP schedules (discrete-table and linear).
//! - [`sampler`]: the [`Sampler`](sampler::Sampler) step API every sampler implements, the
//!   [`Denoiser`](sampler::Denoiser) trait, classifier-free guidance, noise sources and
//!   [`sample`](sampler::sample).
//!
//! Issue #4 adds the other samplers.
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
