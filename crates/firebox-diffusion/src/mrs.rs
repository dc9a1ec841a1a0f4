//! MR Sampler (Li et al. 2025, "MRS: A Fast Sampler for Mean Reverting Diffusion based on ODE
//! and SDE Solvers"), as the authors' `MRSampler` (grrrute/mr-sampler) on IR-SDE (Luo et al.
//! 2023, "Image Restoration with Mean-Reverting SDEs").
//!
//! Mean-reverting diffusion: `x_t − μ = α_t·(x0 − μ) + σ_t·ε` with the condition (degraded image)
//! `μ`. The solvers are exponential integrators in `λ = log(α/σ)`, `h = λ_t − λ_s`:
//! ```text
//! data prediction q = (x − σ_s ε̂)/α_s − (1 − α_s)/α_s·μ:
//!   ODE: φ1 = e^{−h} − 1, φ2 = φ1/h + 1, φ3 = φ2/h − ½,  D = φ1 q0 [− φ2 D1 [+ φ3 D2]]
//!        x_t = (σ_t/σ_s)·x − α_t·D + μ·(1 − σ_t/σ_s + (σ_t/σ_s)·α_s − α_t)
//!   SDE: p1 = 1 − e^{−2h}, p2 = 1 − p1/(2h)
//!        x_t = (σ_t/σ_s)e^{−h}·x + α_t p1 q0 [+ α_t p2 D1] + σ_t√p1·z + μ·(1 − (α_t/α_s)e^{−2h} − α_t p1)
//! noise prediction q = ε̂ (ODE): φ1 = e^{h} − 1, φ2 = φ1/h − 1, φ3 = φ2/h − ½,
//!        D = φ1 q0 [+ φ2 D1 [+ φ3 D2]],  x_t = (α_t/α_s)·x − σ_t·D + μ·(1 − α_t/α_s)
//! D1 = (q0 − q1)/r (2nd order); 3rd: D1_0 = (q0−q1)/r, D1_1 = (q1−q2)/r1,
//!   D1 = D1_0 + (D1_0 − D1_1)·r/(r + r1), D2 = (D1_0 − D1_1)/(r + r1)
//! ```
//! with `r`, `r1` the previous λ gaps over `h`. Grid: `M + 1` float times uniform from
//! `max_t = T − #{λ < λ_min}` to 0; α, σ and λ at them are interpolated from the tables
//! **separately** (so the SDE's μ coefficient is not the exact shift at fractional times; the
//! reference does the same). Orders: warm-up `1, 2, …`, then `min(order, M − i)` when `M < 10`
//! (else `order`), and the last step at the full order (the reference's quirk).

use std::str::FromStr;

use burn::tensor::Tensor;

use crate::grid::interp_table;
use crate::sampler::{Sampler, StepOutput};
use crate::schedule::linspace;

/// IR-SDE's θ schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThetaSchedule {
    /// The cosine schedule (`1 − ᾱ` of Nichol & Dhariwal, one step longer).
    Cosine,
    /// Linear θ.
    Linear,
    /// Constant θ = 1.
    Constant,
}

impl FromStr for ThetaSchedule {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        match name {
            "cosine" => Ok(Self::Cosine),
            "linear" => Ok(Self::Linear),
            "constant" => Ok(Self::Constant),
            other => Err(format!(
                "unknown IR-SDE schedule `{other}`: expected cosine, linear or constant"
            )),
        }
    }
}

/// The tables of IR-SDE (`IRSDE._initialize`), at integer times `0..=T`.
#[derive(Clone, Debug, PartialEq)]
pub struct IrSde {
    /// α(t).
    pub alphas: Vec<f64>,
    /// σ(t).
    pub sigmas: Vec<f64>,
    /// λ(t) = log α − log σ.
    pub lambdas: Vec<f64>,
}

impl IrSde {
    /// The tables for `max_sigma` (divided by 255 when ≥ 1, as the reference does), `T` steps,
    /// the θ schedule and the end level `eps`.
    pub fn new(max_sigma: f64, t: usize, schedule: ThetaSchedule, eps: f64) -> Self {
        let max_sigma = if max_sigma >= 1.0 {
            max_sigma / 255.0
        } else {
            max_sigma
        };
        let thetas: Vec<f64> = match schedule {
            ThetaSchedule::Cosine => {
                let n = t + 2;
                let u = linspace(0.0, n as f64, n + 1);
                let ac: Vec<f64> = u
                    .iter()
                    .map(|&u| {
                        ((u / n as f64 + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2)
                            .cos()
                            .powi(2)
                    })
                    .collect();
                ac[1..n].iter().map(|a| 1.0 - a / ac[0]).collect()
            }
            ThetaSchedule::Linear => {
                let n = t + 1;
                let scale = 1000.0 / n as f64;
                linspace(scale * 1e-4, scale * 0.02, n)
            }
            ThetaSchedule::Constant => vec![1.0; t + 1],
        };
        let mut cum = Vec::with_capacity(thetas.len());
        let mut acc = 0.0;
        for th in &thetas {
            acc += th;
            cum.push(acc);
        }
        let dt = -eps.ln() / acc;
        let alphas: Vec<f64> = cum.iter().map(|c| (-c * dt).exp()).collect();
        let sigmas: Vec<f64> = cum
            .iter()
            .map(|c| max_sigma * (-(-2.0 * c * dt).exp_m1()).sqrt())
            .collect();
        let lambdas = alphas
            .iter()
            .zip(&sigmas)
            .map(|(a, s)| a.ln() - s.ln())
            .collect();
        Self {
            alphas,
            sigmas,
            lambdas,
        }
    }
}

/// What the solver integrates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MrsParameterization {
    /// The data prediction (recommended by the paper).
    Data,
    /// The noise prediction.
    Noise,
}

/// ODE or SDE solver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MrsSolver {
    /// The probability-flow ODE (orders 1–3).
    Ode,
    /// The reverse SDE (orders 1–2, data prediction; one draw per step).
    Sde,
}

/// MR Sampler on IR-SDE with condition `μ`.
#[derive(Clone, Debug)]
pub struct MrSampler<const D: usize> {
    parameterization: MrsParameterization,
    solver: MrsSolver,
    order: usize,
    times: Vec<f64>,
    alphas: Vec<f64>,
    sigmas: Vec<f64>,
    lambdas: Vec<f64>,
    cond: Tensor<D>,
    buffer: Vec<Tensor<D>>,
    index: usize,
}

impl<const D: usize> MrSampler<D> {
    /// `steps` steps on `sde` down from `max_t` (λ clipped at `lambda_min`), with the
    /// condition `cond` (the network's ε̂ must be for `x − cond`).
    ///
    /// # Panics
    /// If `steps` or `order` is 0, order > 3, or SDE with order > 2 or the noise
    /// parameterisation.
    pub fn new(
        sde: &IrSde,
        steps: usize,
        order: usize,
        parameterization: MrsParameterization,
        solver: MrsSolver,
        lambda_min: f64,
        cond: Tensor<D>,
    ) -> Self {
        assert!(
            steps >= 1 && (1..=3).contains(&order),
            "MRS needs steps ≥ 1 and order 1–3"
        );
        assert!(
            solver == MrsSolver::Ode
                || (order <= 2 && parameterization == MrsParameterization::Data),
            "the MRS SDE solver has orders 1–2 with the data parameterisation"
        );
        let t = sde.lambdas.len() - 1;
        let clipped = sde.lambdas.iter().filter(|&&l| l < lambda_min).count();
        let max_t = (t - clipped) as f64;
        let times: Vec<f64> = linspace(0.0, max_t, steps + 1).into_iter().rev().collect();
        let at = |table: &[f64]| times.iter().map(|&s| interp_table(s, table)).collect();
        Self {
            parameterization,
            solver,
            order,
            alphas: at(&sde.alphas),
            sigmas: at(&sde.sigmas),
            lambdas: at(&sde.lambdas),
            times,
            cond,
            buffer: Vec::new(),
            index: 0,
        }
    }

    /// The float times of the grid (`M + 1`, decreasing to 0), and α, σ, λ at them.
    pub fn grid(&self) -> (&[f64], &[f64], &[f64], &[f64]) {
        (&self.times, &self.alphas, &self.sigmas, &self.lambdas)
    }

    fn step_order(&self, i: usize) -> usize {
        let m = self.times.len() - 1;
        if i < self.order {
            i
        } else if i < m {
            if m < 10 {
                self.order.min(m - i)
            } else {
                self.order
            }
        } else {
            self.order
        }
        .min(self.buffer.len())
    }
}

impl<const D: usize> Sampler<D> for MrSampler<D> {
    fn timesteps(&self) -> &[f64] {
        &self.times[..self.times.len() - 1]
    }

    fn step_index(&self) -> usize {
        self.index
    }

    fn set_begin_index(&mut self, index: usize) {
        assert!(
            index + 1 < self.times.len(),
            "begin index {index} is past the grid"
        );
        self.index = index;
        self.buffer.clear();
    }

    fn needs_noise(&self) -> bool {
        self.solver == MrsSolver::Sde
    }

    fn step(
        &mut self,
        model_output: Tensor<D>,
        sample: Tensor<D>,
        noise: Option<Tensor<D>>,
    ) -> StepOutput<D> {
        let i = self.index + 1;
        assert!(
            i < self.times.len(),
            "MrSampler::step: the run is finished (call reset)"
        );
        let (a_s, s_s, a_t, s_t) = (
            self.alphas[i - 1],
            self.sigmas[i - 1],
            self.alphas[i],
            self.sigmas[i],
        );
        let cond = self.cond.clone();
        let q = match self.parameterization {
            MrsParameterization::Data => {
                (sample.clone() - model_output.mul_scalar(s_s)).div_scalar(a_s)
                    - cond.clone().mul_scalar((1.0 - a_s) / a_s)
            }
            MrsParameterization::Noise => model_output,
        };
        self.buffer.insert(0, q);
        self.buffer.truncate(self.order);
        let order = self.step_order(i);
        let l = &self.lambdas;
        let h = l[i] - l[i - 1];
        let q = &self.buffer;
        let (d1, d2) = match order {
            2 => {
                let r = (l[i - 1] - l[i - 2]) / h;
                (Some((q[0].clone() - q[1].clone()).div_scalar(r)), None)
            }
            3 => {
                let r = (l[i - 1] - l[i - 2]) / h;
                let r1 = (l[i - 2] - l[i - 3]) / h;
                let d1_0 = (q[0].clone() - q[1].clone()).div_scalar(r);
                let d1_1 = (q[1].clone() - q[2].clone()).div_scalar(r1);
                let d1 = d1_0.clone() + (d1_0.clone() - d1_1.clone()).mul_scalar(r / (r + r1));
                (Some(d1), Some((d1_0 - d1_1).div_scalar(r + r1)))
            }
            _ => (None, None),
        };
        let prev = match (self.parameterization, self.solver) {
            (MrsParameterization::Data, MrsSolver::Ode) => {
                let phi1 = (-h).exp_m1();
                let phi2 = phi1 / h + 1.0;
                let phi3 = phi2 / h - 0.5;
                let mut d = q[0].clone().mul_scalar(phi1);
                if let Some(d1) = d1 {
                    d = d - d1.mul_scalar(phi2);
                }
                if let Some(d2) = d2 {
                    d = d + d2.mul_scalar(phi3);
                }
                let ratio = s_t / s_s;
                sample.mul_scalar(ratio) - d.mul_scalar(a_t)
                    + cond.mul_scalar(1.0 - ratio + ratio * a_s - a_t)
            }
            (MrsParameterization::Data, MrsSolver::Sde) => {
                let p1 = -(-2.0 * h).exp_m1();
                let p2 = 1.0 - p1 / (2.0 * h);
                let z = noise.expect("the MRS SDE solver needs a noise tensor every step");
                let mut x = sample.mul_scalar(s_t / s_s * (-h).exp())
                    + q[0].clone().mul_scalar(a_t * p1)
                    + z.mul_scalar(s_t * p1.sqrt())
                    + cond.mul_scalar(1.0 - a_t / a_s * (-2.0 * h).exp() - a_t * p1);
                if let Some(d1) = d1 {
                    x = x + d1.mul_scalar(a_t * p2);
                }
                x
            }
            (MrsParameterization::Noise, _) => {
                let phi1 = h.exp_m1();
                let phi2 = phi1 / h - 1.0;
                let phi3 = phi2 / h - 0.5;
                let mut d = q[0].clone().mul_scalar(phi1);
                if let Some(d1) = d1 {
                    d = d + d1.mul_scalar(phi2);
                }
                if let Some(d2) = d2 {
                    d = d + d2.mul_scalar(phi3);
                }
                sample.mul_scalar(a_t / a_s) - d.mul_scalar(s_t) + cond.mul_scalar(1.0 - a_t / a_s)
            }
        };
        self.index += 1;
        StepOutput::sample(prev)
    }
}
