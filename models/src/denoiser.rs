//! A small time-conditioned MLP denoiser for diffusion models on vectors (2-D points, flattened
//! 8x8 digits), trained with the ε-prediction objective of DDPM (Ho et al. 2020, eq. 14):
//! `E_{t, x0, ε} ‖ε − ε_θ(√ᾱ_t x0 + √(1−ᾱ_t) ε, t)‖²` with `t` uniform over the training steps.
//!
//! The timestep enters through Fourier features `[sin(2^k π τ), cos(2^k π τ)]` of `τ = t/T`,
//! concatenated with the input; the body is residual SiLU layers. Its `forward` takes the sample
//! and the timestep each row is at, so it plugs into any `firebox_diffusion` sampler as a closure
//! `|x, t| model.predict(x, t)`.

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::silu;
use burn::tensor::{Device, Tensor, TensorData};

use crate::data::shuffle::SplitMix64;

/// Settings of [`DenoiserMlp`].
#[derive(Config, Debug)]
pub struct DenoiserMlpConfig {
    /// The data dimension.
    pub dim: usize,
    /// Width of the hidden layers.
    #[config(default = 128)]
    pub hidden: usize,
    /// Residual hidden layers.
    #[config(default = 3)]
    pub layers: usize,
    /// Fourier frequencies of the time embedding (2 features each).
    #[config(default = 8)]
    pub frequencies: usize,
    /// `T`, the number of training timesteps the time input is divided by.
    #[config(default = 1000)]
    pub train_timesteps: usize,
}

/// A residual MLP `ε_θ(x, t)`.
#[derive(Module, Debug)]
pub struct DenoiserMlp {
    input: Linear,
    body: Vec<Linear>,
    output: Linear,
    frequencies: usize,
    train_timesteps: usize,
}

impl DenoiserMlpConfig {
    /// The model on `device`, with Burn's default initialisation.
    pub fn init(&self, device: &Device) -> DenoiserMlp {
        DenoiserMlp {
            input: LinearConfig::new(self.dim + 2 * self.frequencies, self.hidden).init(device),
            body: (0..self.layers)
                .map(|_| LinearConfig::new(self.hidden, self.hidden).init(device))
                .collect(),
            output: LinearConfig::new(self.hidden, self.dim).init(device),
            frequencies: self.frequencies,
            train_timesteps: self.train_timesteps,
        }
    }
}

impl DenoiserMlp {
    /// The prediction for `x` (`[batch, dim]`) with row `i` at timestep `t[i]` (`[batch, 1]`,
    /// training-step units, fractional allowed).
    pub fn forward(&self, x: Tensor<2>, t: Tensor<2>) -> Tensor<2> {
        let [batch, _] = x.dims();
        let device = x.device();
        let tau = t.div_scalar(self.train_timesteps as f64);
        let scales: Vec<f32> = (0..self.frequencies)
            .map(|k| std::f32::consts::PI * 2f32.powi(k as i32))
            .collect();
        let scales =
            Tensor::<2>::from_data(TensorData::new(scales, [1, self.frequencies]), &device)
                .expand([batch, self.frequencies]);
        let angles = tau.expand([batch, self.frequencies]) * scales;
        let features = Tensor::cat(vec![x, angles.clone().sin(), angles.cos()], 1);
        let mut h = silu(self.input.forward(features));
        for layer in &self.body {
            h = h.clone() + silu(layer.forward(h));
        }
        self.output.forward(h)
    }

    /// The prediction for every row of `x` at the same timestep `t` (the sampler interface).
    pub fn predict(&self, x: Tensor<2>, t: f64) -> Tensor<2> {
        let [batch, _] = x.dims();
        let t = Tensor::<2>::full([batch, 1], t, &x.device());
        self.forward(x, t)
    }

    /// The ε-prediction loss on clean rows `x0` with the cumulative signal table
    /// `alphas_cumprod` (ᾱ per training step): draws `t` and ε from `rng`, returns the mean
    /// squared error.
    ///
    /// # Panics
    /// If the table is empty.
    pub fn loss(&self, x0: Tensor<2>, alphas_cumprod: &[f64], rng: &mut SplitMix64) -> Tensor<1> {
        assert!(!alphas_cumprod.is_empty(), "the ᾱ table is empty");
        let [batch, dim] = x0.dims();
        let device = x0.device();
        let steps: Vec<usize> = (0..batch)
            .map(|_| rng.below(alphas_cumprod.len()))
            .collect();
        let signal: Vec<f32> = steps
            .iter()
            .map(|&t| alphas_cumprod[t].sqrt() as f32)
            .collect();
        let noise_scale: Vec<f32> = steps
            .iter()
            .map(|&t| (1.0 - alphas_cumprod[t]).sqrt() as f32)
            .collect();
        let column = |v: Vec<f32>| Tensor::<2>::from_data(TensorData::new(v, [batch, 1]), &device);
        let eps = Tensor::<2>::from_data(
            TensorData::new(standard_normals(rng, batch * dim), [batch, dim]),
            &device,
        );
        let x_t = x0 * column(signal).expand([batch, dim])
            + eps.clone() * column(noise_scale).expand([batch, dim]);
        let t = column(steps.iter().map(|&t| t as f32).collect());
        let pred = self.forward(x_t, t);
        (pred - eps).powf_scalar(2.0).mean()
    }
}

/// `n` standard-normal draws (Box–Muller on `rng`).
pub fn standard_normals(rng: &mut SplitMix64, n: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(n + 1);
    let mut uniform = || -> f64 { ((rng.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64 };
    while out.len() < n {
        let (u1, u2) = (uniform(), uniform());
        let r = (-2.0 * u1.ln()).sqrt();
        let a = 2.0 * std::f64::consts::PI * u2;
        out.push((r * a.cos()) as f32);
        out.push((r * a.sin()) as f32);
    }
    out.truncate(n);
    out
}
