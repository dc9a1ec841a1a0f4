//! The two API levels every sampler offers.
//!
//! - The **step API** ([`Sampler`]): the caller owns the loop, as in a diffusers pipeline. Each call
//!   of [`Sampler::step`] consumes one model output (one network evaluation) and returns the next
//!   sample; the sampler keeps its own state (step index, past model outputs, the sample a
//!   multi-stage method restarts from), so pipelines can interleave their own logic (inpainting,
//!   img2img start index via [`Sampler::set_begin_index`]).
//! - The **user API** ([`sample`]): `x_T -> x_0` with a [`Denoiser`] and a [`NoiseSource`].
//!
//! The timestep a sampler hands to the model is an `f64`: integer-valued for the discrete
//! (DDPM-trained) schedulers, fractional where the reference passes a float (Euler, Heun, flow
//! matching, continuous-time solvers). A denoiser converts it to whatever its network embeds.

use burn::tensor::{Device, Distribution, Shape, Tensor, TensorData};

/// What one [`Sampler::step`] returns.
#[derive(Clone, Debug)]
pub struct StepOutput<const D: usize> {
    /// The sample after the step (diffusers' `prev_sample`).
    pub prev_sample: Tensor<D>,
    /// The clean-sample estimate x̂0 the step used, where the method forms one.
    pub x0_pred: Option<Tensor<D>>,
}

impl<const D: usize> StepOutput<D> {
    /// A step result with the sample only.
    pub fn sample(prev_sample: Tensor<D>) -> Self {
        Self {
            prev_sample,
            x0_pred: None,
        }
    }

    /// A step result with the sample and the x̂0 estimate.
    pub fn with_x0(prev_sample: Tensor<D>, x0_pred: Tensor<D>) -> Self {
        Self {
            prev_sample,
            x0_pred: Some(x0_pred),
        }
    }
}

/// A diffusion sampler driven one model evaluation at a time.
///
/// The loop is always:
/// ```text
/// for k in begin_index..timesteps().len():
///     x_in = scale_model_input(x)
///     out  = model(x_in, timesteps()[k])
///     x    = step(out, x, needs_noise().then(|| z ~ N(0, I))).prev_sample
/// ```
/// `x_T` is the prior sample already multiplied by [`init_noise_sigma`](Self::init_noise_sigma).
pub trait Sampler<const D: usize> {
    /// The timesteps passed to the model, one per model call, in call order.
    fn timesteps(&self) -> &[f64];

    /// The noise levels of the grid in the sampler's own units (σ of the VE or flow
    /// parameterisation), where the method has them; `None` otherwise.
    fn sigmas(&self) -> Option<&[f64]> {
        None
    }

    /// The index of the next model call (0 before the first step).
    fn step_index(&self) -> usize;

    /// Starts the next run at model call `index` (img2img / inpainting), clearing the state.
    ///
    /// # Panics
    /// If `index` is past the last call.
    fn set_begin_index(&mut self, index: usize);

    /// Clears all state and returns to the first model call.
    fn reset(&mut self) {
        self.set_begin_index(0);
    }

    /// The factor the standard-normal prior is multiplied by to give `x_T` (diffusers'
    /// `init_noise_sigma`): 1 for VP samplers, σ_max (or √(σ_max² + 1)) for VE ones.
    fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    /// The model input for the next call (diffusers' `scale_model_input`); the identity for
    /// most samplers.
    fn scale_model_input(&self, sample: Tensor<D>) -> Tensor<D> {
        sample
    }

    /// Whether the next [`step`](Self::step) consumes a standard-normal draw.
    fn needs_noise(&self) -> bool {
        false
    }

    /// One model call's worth of progress: `model_output` is the model at
    /// `scale_model_input(sample)` and `timesteps()[step_index()]`.
    ///
    /// # Panics
    /// If the run is finished, or noise is needed ([`needs_noise`](Self::needs_noise)) and
    /// missing.
    fn step(
        &mut self,
        model_output: Tensor<D>,
        sample: Tensor<D>,
        noise: Option<Tensor<D>>,
    ) -> StepOutput<D>;
}

/// A denoising network as the samplers call it: the (scaled) noisy sample and the timestep the
/// sampler hands out, returning the prediction the sampler was configured for (ε, x0, v or flow
/// velocity). Closures `Fn(Tensor<D>, f64) -> Tensor<D>` are denoisers.
pub trait Denoiser<const D: usize> {
    /// The prediction at `sample` and `timestep`.
    fn denoise(&self, sample: Tensor<D>, timestep: f64) -> Tensor<D>;
}

impl<const D: usize, F> Denoiser<D> for F
where
    F: Fn(Tensor<D>, f64) -> Tensor<D>,
{
    fn denoise(&self, sample: Tensor<D>, timestep: f64) -> Tensor<D> {
        self(sample, timestep)
    }
}

/// Classifier-free guidance (Ho & Salimans 2022, eq. 6): `u + w·(c − u)` from a conditional and
/// an unconditional denoiser. `w = 1` is the conditional model, `w = 0` the unconditional one.
pub struct ClassifierFreeGuidance<C, U> {
    /// The conditional denoiser.
    pub conditional: C,
    /// The unconditional denoiser.
    pub unconditional: U,
    /// The guidance scale `w`.
    pub scale: f64,
}

impl<const D: usize, C: Denoiser<D>, U: Denoiser<D>> Denoiser<D> for ClassifierFreeGuidance<C, U> {
    fn denoise(&self, sample: Tensor<D>, timestep: f64) -> Tensor<D> {
        let c = self.conditional.denoise(sample.clone(), timestep);
        if self.scale == 1.0 {
            return c;
        }
        let u = self.unconditional.denoise(sample, timestep);
        u.clone() + (c - u).mul_scalar(self.scale)
    }
}

/// Where stochastic samplers get their standard-normal draws.
pub trait NoiseSource<const D: usize> {
    /// A standard-normal tensor of `shape` on `device`.
    fn draw(&mut self, shape: Shape, device: &Device) -> Tensor<D>;
}

/// Standard-normal draws from a seeded host generator (SplitMix64 + Box–Muller), so a CPU and a
/// GPU run with the same seed see the same noise.
#[derive(Clone, Debug)]
pub struct SeededNoise {
    state: u64,
}

impl SeededNoise {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next raw 64-bit value (SplitMix64).
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform index in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        assert!(n > 0, "SeededNoise::below(0)");
        (self.next_u64() % n as u64) as usize
    }

    /// A uniform draw in (0, 1].
    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    /// `n` standard-normal values.
    pub fn normals(&mut self, n: usize) -> Vec<f32> {
        let mut out = Vec::with_capacity(n + 1);
        while out.len() < n {
            let (u1, u2) = (self.uniform(), self.uniform());
            let r = (-2.0 * u1.ln()).sqrt();
            let angle = 2.0 * std::f64::consts::PI * u2;
            out.push((r * angle.cos()) as f32);
            out.push((r * angle.sin()) as f32);
        }
        out.truncate(n);
        out
    }
}

impl<const D: usize> NoiseSource<D> for SeededNoise {
    fn draw(&mut self, shape: Shape, device: &Device) -> Tensor<D> {
        let values = self.normals(shape.num_elements());
        Tensor::from_data(TensorData::new(values, shape), device)
    }
}

/// Standard-normal draws from the device's own generator (`Tensor::random`): fastest, but the
/// stream differs between backends.
#[derive(Clone, Copy, Debug, Default)]
pub struct DeviceNoise;

impl<const D: usize> NoiseSource<D> for DeviceNoise {
    fn draw(&mut self, shape: Shape, device: &Device) -> Tensor<D> {
        Tensor::random(shape, Distribution::Normal(0.0, 1.0), device)
    }
}

/// A fixed list of draws, consumed in order (replaying a recorded run).
#[derive(Clone, Debug)]
pub struct RecordedNoise<const D: usize> {
    draws: std::collections::VecDeque<Tensor<D>>,
}

impl<const D: usize> RecordedNoise<D> {
    /// The draws, in the order they will be handed out.
    pub fn new(draws: Vec<Tensor<D>>) -> Self {
        Self {
            draws: draws.into(),
        }
    }
}

impl<const D: usize> NoiseSource<D> for RecordedNoise<D> {
    /// # Panics
    /// If the recording is exhausted or the next draw's shape differs from `shape`.
    fn draw(&mut self, shape: Shape, _device: &Device) -> Tensor<D> {
        let next = self
            .draws
            .pop_front()
            .expect("RecordedNoise: the sampler asked for more draws than were recorded");
        assert_eq!(
            next.shape(),
            shape,
            "RecordedNoise: the recorded draw's shape differs from the sample's"
        );
        next
    }
}

/// Runs `sampler` from its begin index to the end: `x_T -> x_0`, one `denoiser` call per model
/// call. `x_t` is the prior sample already scaled by `init_noise_sigma` (or, after
/// [`Sampler::set_begin_index`], the noised start sample). The sampler is reset afterwards
/// rather than before, so a begin index set by the caller is honoured.
pub fn sample<const D: usize, S, M, N>(
    sampler: &mut S,
    denoiser: &M,
    x_t: Tensor<D>,
    noise: &mut N,
) -> Tensor<D>
where
    S: Sampler<D> + ?Sized,
    M: Denoiser<D> + ?Sized,
    N: NoiseSource<D> + ?Sized,
{
    let mut x = x_t;
    let device = x.device();
    while sampler.step_index() < sampler.timesteps().len() {
        let t = sampler.timesteps()[sampler.step_index()];
        let out = denoiser.denoise(sampler.scale_model_input(x.clone()), t);
        let z = sampler
            .needs_noise()
            .then(|| noise.draw(x.shape(), &device));
        x = sampler.step(out, x, z).prev_sample;
    }
    sampler.reset();
    x
}
