//! Momentum samplers for diffusion (Wizadwongsa & Suwajanakorn, ICLR 2023, "Accelerating Guided
//! Diffusion Sampling with Splitting Numerical Methods" / "Diffusion Sampling with Momentum for
//! Mitigating Divergence Artifacts", sWizad/momentum-diffusion): GHVB (generalised heavy ball)
//! and PLMS with Polyak's heavy ball (PLMS-HB).
//!
//! In the DDIM ODE's variables `x̄ = x/√ᾱ`, `γ = √(1−ᾱ)/√ᾱ` the update is an explicit
//! Adams–Bashforth step `x̄_p = x̄_t + (γ_p − γ_t)·u` whose slope `u` carries momentum β ∈ (0, 1]:
//! ```text
//! GHVB:    v ← (1−β)·v + β·ε̂;  history ← v;   u = AB_m^β(history)
//! PLMS-HB: history ← ε̂;        v ← (1−β)·v + β·AB_m^1(history);   u = v
//! AB_1 = e1, AB_2^b = ((2+b)e1 − (2−b)e2)/(2b), AB_3^b = ((18+5b)e1 − (24−8b)e2 + (6−b)e3)/(12b), …
//! ```
//! The order `o` sets both: `k = ⌊o⌋ + 1` history entries and `β = frac(o)` when `o` has a
//! fractional part, else `k = o`, `β = 1` (1.8 → k = 2, β = 0.8). β = 1 gives plain
//! Adams–Bashforth (PLMS) in these variables; GHVB(1.0) is DDIM.
//!
//! Quirk kept from the reference: on the very first call `v` starts as the model output as
//! returned (before any ε conversion), which matters for v / x0 models with β < 1.

use std::str::FromStr;

use burn::tensor::Tensor;

use crate::prediction::Prediction;
use crate::sampler::{Sampler, StepOutput};
use crate::schedule::DiscreteSchedule;

/// Which momentum scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MomentumKind {
    /// Generalised heavy ball: momentum on ε̂ before the multistep combination.
    Ghvb,
    /// PLMS with Polyak's heavy ball: momentum on the multistep combination.
    PlmsHeavyBall,
}

impl FromStr for MomentumKind {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        match name {
            "ghvb" => Ok(Self::Ghvb),
            "plms_hb" => Ok(Self::PlmsHeavyBall),
            other => Err(format!(
                "unknown momentum sampler `{other}`: expected ghvb or plms_hb"
            )),
        }
    }
}

/// `(k, β)` of a momentum order `o > 0`.
///
/// # Panics
/// If `order` is not positive or needs more than 5 history entries.
pub fn order_split(order: f64) -> (usize, f64) {
    assert!(order > 0.0, "momentum order {order} must be positive");
    let frac = order - order.floor();
    let (k, beta) = if frac > 0.0 {
        (order.floor() as usize + 1, frac)
    } else {
        (order as usize, 1.0)
    };
    assert!(
        k <= 5,
        "momentum order {order} needs {k} history entries; at most 5 are supported"
    );
    (k, beta)
}

/// `AB_m^b` of the history (newest last), divided by `b` as the reference does.
fn adams_bashforth<const D: usize>(history: &[Tensor<D>], b: f64) -> Tensor<D> {
    let m = history.len();
    let e = |j: usize| history[m - j].clone();
    let weights: Vec<f64> = match m {
        1 => return e(1),
        2 => vec![(2.0 + b) / (2.0 * b), -(2.0 - b) / (2.0 * b)],
        3 => [18.0 + 5.0 * b, -(24.0 - 8.0 * b), 6.0 - b]
            .map(|w| w / (12.0 * b))
            .to_vec(),
        4 => [
            46.0 + 9.0 * b,
            -(78.0 - 19.0 * b),
            42.0 - 5.0 * b,
            -(10.0 - b),
        ]
        .map(|w| w / (24.0 * b))
        .to_vec(),
        _ => [
            1650.0 + 251.0 * b,
            -(3420.0 - 646.0 * b),
            2880.0 - 264.0 * b,
            -(1380.0 - 106.0 * b),
            270.0 - 19.0 * b,
        ]
        .map(|w| w / (720.0 * b))
        .to_vec(),
    };
    weights
        .iter()
        .enumerate()
        .map(|(j, &w)| e(j + 1).mul_scalar(w))
        .reduce(|a, c| a + c)
        .expect("m ≥ 2")
}

/// Settings of [`MomentumSampler`].
#[derive(Clone, Debug)]
pub struct MomentumConfig {
    /// The ᾱ table.
    pub schedule: DiscreteSchedule,
    /// What the model predicts (converted to ε̂).
    pub prediction: Prediction,
    /// GHVB or PLMS-HB.
    pub kind: MomentumKind,
    /// The order `o` (see the module docs).
    pub order: f64,
}

/// A GHVB or PLMS-HB sampler on a decreasing integer grid; the last step lands on timestep 0.
#[derive(Clone, Debug)]
pub struct MomentumSampler<const D: usize> {
    config: MomentumConfig,
    timesteps: Vec<i64>,
    model_times: Vec<f64>,
    k: usize,
    beta: f64,
    velocity: Option<Tensor<D>>,
    history: Vec<Tensor<D>>,
    index: usize,
}

impl<const D: usize> MomentumSampler<D> {
    /// The sampler on `timesteps` (decreasing, e.g. [`crate::grid::solver_timesteps`], the
    /// grid of the reference's DPM-Solver base scheduler).
    ///
    /// # Panics
    /// If the grid is empty or leaves the table, or the order is invalid.
    pub fn new(config: MomentumConfig, timesteps: Vec<i64>) -> Self {
        let t = config.schedule.num_train_timesteps() as i64;
        assert!(!timesteps.is_empty(), "empty grid");
        assert!(
            timesteps.iter().all(|&s| (0..t).contains(&s)),
            "grid {timesteps:?} leaves the table"
        );
        let (k, beta) = order_split(config.order);
        Self {
            model_times: timesteps.iter().map(|&t| t as f64).collect(),
            timesteps,
            config,
            k,
            beta,
            velocity: None,
            history: Vec::new(),
            index: 0,
        }
    }
}

impl<const D: usize> Sampler<D> for MomentumSampler<D> {
    fn timesteps(&self) -> &[f64] {
        &self.model_times
    }

    fn step_index(&self) -> usize {
        self.index
    }

    fn set_begin_index(&mut self, index: usize) {
        assert!(
            index < self.timesteps.len(),
            "begin index {index} is past the grid"
        );
        self.index = index;
        self.velocity = None;
        self.history.clear();
    }

    fn step(
        &mut self,
        model_output: Tensor<D>,
        sample: Tensor<D>,
        _noise: Option<Tensor<D>>,
    ) -> StepOutput<D> {
        let i = self.index;
        assert!(
            i < self.timesteps.len(),
            "MomentumSampler::step: the run is finished"
        );
        let table = &self.config.schedule.alphas_cumprod;
        let a = table[self.timesteps[i] as usize];
        let a_p = table[self.timesteps.get(i + 1).copied().unwrap_or(0) as usize];
        let (s0, s1) = (a.sqrt(), a_p.sqrt());
        let dg = (1.0 - a_p).sqrt() / s1 - (1.0 - a).sqrt() / s0;
        let velocity = self.velocity.take().unwrap_or_else(|| model_output.clone());
        let (_, eps) =
            self.config
                .prediction
                .to_x0_eps(model_output, sample.clone(), s0, (1.0 - a).sqrt());
        let beta = self.beta;
        let u = match self.config.kind {
            MomentumKind::Ghvb => {
                let v = velocity.mul_scalar(1.0 - beta) + eps.mul_scalar(beta);
                self.history.push(v.clone());
                if self.history.len() > self.k {
                    self.history.remove(0);
                }
                self.velocity = Some(v);
                adams_bashforth(&self.history, beta)
            }
            MomentumKind::PlmsHeavyBall => {
                self.history.push(eps);
                if self.history.len() > self.k {
                    self.history.remove(0);
                }
                let v = velocity.mul_scalar(1.0 - beta)
                    + adams_bashforth(&self.history, 1.0).mul_scalar(beta);
                self.velocity = Some(v.clone());
                v
            }
        };
        let prev = (sample.div_scalar(s0) + u.mul_scalar(dg)).mul_scalar(s1);
        self.index += 1;
        StepOutput::sample(prev)
    }
}
