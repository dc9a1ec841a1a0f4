//! BDIA-DDIM (Zhang, Lewis, Kleijn, CVPR 2024, "Exact Diffusion Inversion via Bi-directional
//! Integration Approximation", eq. 17): each step combines a forward DDIM step from the current
//! state with a backward DDIM step towards the previous one,
//! ```text
//! x_{j−1} = γ·(x_{j+1} − Φ_up(x_j)) + Φ_down(x_j)
//! Φ_down(x_j) = √ᾱ_{j−1}·x̂0 + √(1−ᾱ_{j−1})·ε̂,   Φ_up(x_j) = √ᾱ_{j+1}·x̂0 + √(1−ᾱ_{j+1})·ε̂
//! ```
//! (the first step, without a previous state, is plain DDIM). The update is linear in
//! `x_{j+1}`, so the pair `(x_j, x_{j−1})` determines `x_{j+1}` exactly:
//! [`BdiaDdim::invert`] runs the recursion backwards and recovers `x_T` (up to float rounding,
//! amplified by `1/γ` per step for γ < 1).
//!
//! Grid of the reference (`BDIAddim.py`, LDM's `make_ddim_timesteps` "uniform"):
//! `τ = range(0, T, T//n) + 1` (so `M = len(τ)` can exceed n), run from the largest; the last
//! step goes to `ᾱ_0`. The reference's table is LDM's sqrt-linear βs (diffusers' scaled_linear).

use burn::tensor::Tensor;

use crate::prediction::Prediction;
use crate::sampler::{Denoiser, Sampler, StepOutput};
use crate::schedule::DiscreteSchedule;

/// BDIA-DDIM sampler (deterministic, η = 0).
#[derive(Clone, Debug)]
pub struct BdiaDdim<const D: usize> {
    schedule: DiscreteSchedule,
    prediction: Prediction,
    gamma: f64,
    /// τ ascending.
    taus: Vec<usize>,
    model_times: Vec<f64>,
    last: Option<Tensor<D>>,
    index: usize,
}

impl<const D: usize> BdiaDdim<D> {
    /// The sampler for `num_steps` (LDM's uniform DDIM grid) with mixing weight `gamma`
    /// (γ = 1: the paper's default; γ = 0 reduces to DDIM).
    ///
    /// # Panics
    /// If `num_steps` is 0 or above T, the prediction is not ε or v, or γ is not in [0, 1].
    pub fn new(
        schedule: DiscreteSchedule,
        prediction: Prediction,
        num_steps: usize,
        gamma: f64,
    ) -> Self {
        let t = schedule.num_train_timesteps();
        assert!(
            num_steps >= 1 && num_steps <= t,
            "num_steps = {num_steps} must be in 1..={t}"
        );
        assert!(
            matches!(prediction, Prediction::Epsilon | Prediction::Velocity),
            "BDIA-DDIM supports epsilon and v_prediction"
        );
        assert!(
            (0.0..=1.0).contains(&gamma),
            "gamma = {gamma} must be in [0, 1]"
        );
        let c = t / num_steps;
        let taus: Vec<usize> = (0..t)
            .step_by(c)
            .map(|s| s + 1)
            .filter(|&s| s < t)
            .collect();
        Self {
            model_times: taus.iter().rev().map(|&s| s as f64).collect(),
            taus,
            schedule,
            prediction,
            gamma,
            last: None,
            index: 0,
        }
    }

    /// The grid τ in increasing order (LDM's `ddim_timesteps`).
    pub fn ddim_timesteps(&self) -> &[usize] {
        &self.taus
    }

    fn abar(&self, j: isize) -> f64 {
        let table = &self.schedule.alphas_cumprod;
        if j < 0 {
            table[0]
        } else {
            table[self.taus[j as usize]]
        }
    }

    /// `(x̂0, ε̂)` at grid index `j`.
    fn split(&self, output: Tensor<D>, x: Tensor<D>, j: isize) -> (Tensor<D>, Tensor<D>) {
        let a = self.abar(j);
        self.prediction
            .to_x0_eps(output, x, a.sqrt(), (1.0 - a).sqrt())
    }

    /// Recovers the sampling trajectory backwards from its last two states: `x_final` (the
    /// output) and `x_before` (the state at τ_0, before the last step). Returns the states at
    /// τ_1, τ_2, …, τ_{M−1}; the last is `x_T`. One model call per step, at the state's own
    /// level (`timesteps` τ_0 … τ_{M−2}).
    ///
    /// # Panics
    /// If γ = 0 (the recursion divides by γ) or the grid has one point.
    pub fn invert<M: Denoiser<D> + ?Sized>(
        &self,
        denoiser: &M,
        x_final: Tensor<D>,
        x_before: Tensor<D>,
    ) -> Vec<Tensor<D>> {
        assert!(self.gamma > 0.0, "BDIA inversion needs gamma > 0");
        let m = self.taus.len();
        assert!(m >= 2, "inversion needs at least two grid points");
        let g = self.gamma;
        let (mut prev, mut latent) = (x_final, x_before);
        let mut states = Vec::with_capacity(m - 1);
        for k in 1..m {
            let (a_t, a_c, a_lo) = (
                self.abar(k as isize),
                self.abar(k as isize - 1),
                self.abar(k as isize - 2),
            );
            let output = denoiser.denoise(latent.clone(), self.taus[k - 1] as f64);
            let (_, e) = self.split(output, latent.clone(), k as isize - 1);
            // reverse_step (up to τ_k) and forward_step (down to τ_{k−2}) of the editing code.
            let up = (a_t / a_c).sqrt();
            let new = latent.clone().mul_scalar(up)
                + e.clone()
                    .mul_scalar((1.0 - a_t).sqrt() - up * (1.0 - a_c).sqrt());
            let q = (a_c / a_lo).sqrt();
            let back = latent.clone().div_scalar(q)
                + e.mul_scalar((1.0 - a_lo).sqrt() - (1.0 - a_c).sqrt() / q);
            let next = prev.div_scalar(g) - back.div_scalar(g) + new;
            prev = latent;
            latent = next;
            states.push(latent.clone());
        }
        states
    }
}

impl<const D: usize> Sampler<D> for BdiaDdim<D> {
    fn timesteps(&self) -> &[f64] {
        &self.model_times
    }

    fn step_index(&self) -> usize {
        self.index
    }

    fn set_begin_index(&mut self, index: usize) {
        assert!(
            index < self.taus.len(),
            "begin index {index} is past the grid"
        );
        self.index = index;
        self.last = None;
    }

    fn step(
        &mut self,
        model_output: Tensor<D>,
        sample: Tensor<D>,
        _noise: Option<Tensor<D>>,
    ) -> StepOutput<D> {
        let m = self.taus.len();
        assert!(
            self.index < m,
            "BdiaDdim::step: the run is finished (call reset)"
        );
        let j = (m - 1 - self.index) as isize;
        let (x0, e) = self.split(model_output, sample.clone(), j);
        let a_prev = self.abar(j - 1);
        let down =
            x0.clone().mul_scalar(a_prev.sqrt()) + e.clone().mul_scalar((1.0 - a_prev).sqrt());
        let next = match self.last.take() {
            None => down,
            Some(last) => {
                let a_last = self.abar(j + 1);
                let up = x0.clone().mul_scalar(a_last.sqrt()) + e.mul_scalar((1.0 - a_last).sqrt());
                let g = self.gamma;
                // As coded: x_last − (1−γ)(x_last − x) − γ(Φ_up − x) + Φ_down − x.
                last.clone()
                    - (last - sample.clone()).mul_scalar(1.0 - g)
                    - (up - sample.clone()).mul_scalar(g)
                    + down
                    - sample.clone()
            }
        };
        self.last = Some(sample);
        self.index += 1;
        StepOutput::with_x0(next, x0)
    }
}
