//! What a denoiser predicts, and the conversions to the clean-sample estimate x̂0 and the noise
//! estimate ε̂ at a noise level `x = α·x0 + σ·ε` (VP: `α = √ᾱ`, `σ = √(1 − ᾱ)`).

use std::str::FromStr;

use burn::tensor::Tensor;

/// diffusers' `prediction_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prediction {
    /// The noise ε (`epsilon`).
    Epsilon,
    /// The clean sample x0 (`sample`).
    Sample,
    /// The velocity `v = α·ε − σ·x0` (`v_prediction`, Salimans & Ho 2022).
    Velocity,
    /// The flow-matching velocity `u = ε − x0` (rectified flow, Lipman et al. 2023; `flow` in
    /// the fixtures, `flow_prediction` in diffusers), natural with `α = 1 − σ`.
    Flow,
}

impl FromStr for Prediction {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        match name {
            "epsilon" => Ok(Self::Epsilon),
            "sample" => Ok(Self::Sample),
            "v_prediction" => Ok(Self::Velocity),
            "flow" | "flow_prediction" => Ok(Self::Flow),
            other => Err(format!(
                "unknown prediction_type `{other}`: expected epsilon, sample, v_prediction or flow"
            )),
        }
    }
}

impl Prediction {
    /// `(x̂0, ε̂)` from the model output at `x` with signal scale `alpha` and noise scale `sigma`.
    /// ε-prediction needs `alpha > 0`, x0-prediction `sigma > 0`, flow `alpha + sigma > 0`.
    pub fn to_x0_eps<const D: usize>(
        self,
        output: Tensor<D>,
        x: Tensor<D>,
        alpha: f64,
        sigma: f64,
    ) -> (Tensor<D>, Tensor<D>) {
        match self {
            Self::Epsilon => {
                let x0 = (x - output.clone().mul_scalar(sigma)).div_scalar(alpha);
                (x0, output)
            }
            Self::Sample => {
                let eps = (x - output.clone().mul_scalar(alpha)).div_scalar(sigma);
                (output, eps)
            }
            Self::Velocity => {
                let x0 = x.clone().mul_scalar(alpha) - output.clone().mul_scalar(sigma);
                let eps = output.mul_scalar(alpha) + x.mul_scalar(sigma);
                (x0, eps)
            }
            Self::Flow => {
                // x = α·x0 + σ·ε and u = ε − x0  ⇒  x0 = (x − σ·u)/(α + σ), ε = u + x0.
                let x0 = (x - output.clone().mul_scalar(sigma)).div_scalar(alpha + sigma);
                let eps = output + x0.clone();
                (x0, eps)
            }
        }
    }
}
