//! DC-Solver (Zhao et al., ECCV 2024, "DC-Solver: Improving Predictor-Corrector Diffusion
//! Sampler via Dynamic Compensation"): UniPC whose newest model output is replaced, before each
//! step, by its Lagrange interpolation at `t* = r·t_{−1} + (1−r)·t_{−2}`
//! ([`UniPc::with_compensation`]); the ratios `r` are found once per (model, NFE) by matching a
//! many-step ground-truth trajectory ([`search_ratios`]).
//!
//! The authors search each ratio with 40 AdamW steps (lr 0.1) on the MSE between the step's
//! (corrected) output and the ground truth at the nearest reference time. Here the same
//! objective is minimised per step by golden-section search on a bracket (the objective is
//! smooth and one-dimensional; no autodiff through the denoiser is needed). Not provided: the
//! cascade polynomial regression that predicts ratios for unseen NFE / guidance scales from
//! coefficients fitted by the authors (those coefficients are not in the reference repository).

use burn::tensor::Tensor;

use crate::sampler::{Denoiser, Sampler};
use crate::unipc::UniPc;

/// Settings of [`search_ratios`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RatioSearch {
    /// The bracket searched for each ratio.
    pub bracket: (f64, f64),
    /// Golden-section iterations per ratio (each costs one extra model call).
    pub iterations: usize,
    /// Model calls of warm-up whose ratios stay 1 (the compensation needs three outputs).
    pub warm_up: usize,
}

impl Default for RatioSearch {
    fn default() -> Self {
        Self {
            bracket: (0.5, 1.5),
            iterations: 20,
            warm_up: 2,
        }
    }
}

fn mse<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f64 {
    (a - b).powf_scalar(2.0).mean().into_scalar::<f32>() as f64
}

/// Searches one compensation ratio per model call of `sampler` (built
/// [`with_compensation`](UniPc::with_compensation), ratios 1) starting from `x_t`, so that the
/// state each step reaches (after its corrector, which uses the next model output) is as close
/// as possible to `reference(k)`, the ground truth at the sampler's level `k` (e.g. a many-step
/// solution interpolated at that time). Returns the ratios, one per model call.
#[allow(clippy::needless_range_loop)] // k indexes the ratios and the sampler's calls alike
pub fn search_ratios<const D: usize, M: Denoiser<D> + ?Sized>(
    sampler: &UniPc<D>,
    denoiser: &M,
    x_t: Tensor<D>,
    reference: impl Fn(usize) -> Tensor<D>,
    options: RatioSearch,
) -> Vec<f64> {
    let calls = sampler.timesteps().len();
    let mut ratios = vec![1.0; calls];
    let mut base = sampler.clone();
    base.reset();
    let mut x = x_t;
    let phi = (5f64.sqrt() - 1.0) / 2.0;
    for k in 0..calls {
        let t = base.timesteps()[k];
        let out = denoiser.denoise(x.clone(), t);
        if k >= options.warm_up {
            // Loss of ratio r: run call k, then (if any) call k+1 whose corrector fixes the
            // point reached; compare with the reference at level k+1.
            let loss = |r: f64| {
                let mut trial = base.clone();
                trial.set_ratio(k, r);
                let pred = trial.step(out.clone(), x.clone(), None).prev_sample;
                let state = if k + 1 < calls {
                    let next = denoiser.denoise(pred.clone(), trial.timesteps()[k + 1]);
                    trial.step(next, pred, None);
                    trial.corrected().cloned().expect("the corrector ran")
                } else {
                    pred
                };
                mse(state, reference(k + 1))
            };
            let (mut a, mut b) = options.bracket;
            let (mut c, mut d) = (b - phi * (b - a), a + phi * (b - a));
            let (mut fc, mut fd) = (loss(c), loss(d));
            for _ in 0..options.iterations {
                if fc < fd {
                    b = d;
                    d = c;
                    fd = fc;
                    c = b - phi * (b - a);
                    fc = loss(c);
                } else {
                    a = c;
                    c = d;
                    fc = fd;
                    d = a + phi * (b - a);
                    fd = loss(d);
                }
            }
            let best = if fc < fd { c } else { d };
            // Keep 1 when it is at least as good (the search never makes a step worse).
            ratios[k] = if loss(1.0) <= loss(best) { 1.0 } else { best };
            base.set_ratio(k, ratios[k]);
        }
        x = base.step(out, x, None).prev_sample;
    }
    ratios
}
