//! Schedules, grids and DDIM against closed forms and diffusers' conventions.

use burn::tensor::{Device, Tensor, TensorData};
use firebox_diffusion::ddim::{Ddim, DdimConfig};
use firebox_diffusion::grid::{Spacing, ddim_timesteps};
use firebox_diffusion::prediction::Prediction;
use firebox_diffusion::schedule::{
    BetaSchedule, DiscreteSchedule, alphas_cumprod, betas, rescale_zero_terminal_snr,
};

#[test]
fn beta_tables_have_their_endpoints() {
    let linear = betas(BetaSchedule::Linear, 1e-4, 0.02, 1000);
    assert_eq!(linear.len(), 1000);
    assert_eq!((linear[0], linear[999]), (1e-4, 0.02));
    let scaled = betas(BetaSchedule::ScaledLinear, 0.00085, 0.012, 1000);
    assert!((scaled[0] - 0.00085).abs() < 1e-15 && (scaled[999] - 0.012).abs() < 1e-15);
    let cosine = betas(BetaSchedule::SquaredCosCapV2, 0.0, 0.0, 1000);
    assert!(cosine.iter().all(|&b| b > 0.0 && b <= 0.999));
    assert_eq!(cosine[999], 0.999, "the cap binds at the end");
    let sigmoid = betas(BetaSchedule::Sigmoid, 1e-4, 0.02, 1000);
    assert!(sigmoid.windows(2).all(|w| w[0] < w[1]));
    assert!(
        "cosine"
            .parse::<BetaSchedule>()
            .unwrap_err()
            .contains("squaredcos_cap_v2")
    );
}

#[test]
fn zero_terminal_snr_rescaling_ends_at_zero_signal_and_keeps_the_start() {
    let table = betas(BetaSchedule::ScaledLinear, 0.00085, 0.012, 1000);
    let before = alphas_cumprod(&table);
    let after = alphas_cumprod(&rescale_zero_terminal_snr(&table));
    assert_eq!(after[999], 0.0, "zero SNR at the last timestep");
    assert!((after[0].sqrt() - before[0].sqrt()).abs() < 1e-12);
    assert!(after.windows(2).all(|w| w[0] > w[1] || w[1] == 0.0));
}

#[test]
fn grids_follow_diffusers_spacings() {
    assert_eq!(
        ddim_timesteps(1000, 10, Spacing::Leading, 1),
        vec![901, 801, 701, 601, 501, 401, 301, 201, 101, 1]
    );
    assert_eq!(
        ddim_timesteps(1000, 10, Spacing::Trailing, 0),
        vec![999, 899, 799, 699, 599, 499, 399, 299, 199, 99]
    );
    // linspace(0, 999, 3) = [0, 499.5, 999]: NumPy rounds the tie to even.
    assert_eq!(
        ddim_timesteps(1000, 3, Spacing::Linspace, 0),
        vec![999, 500, 0]
    );
    // T/n not an integer: 1000/3 = 333.33…, arange(1000, 0, −333.33) has 3 values.
    assert_eq!(
        ddim_timesteps(1000, 3, Spacing::Trailing, 0),
        vec![999, 666, 332]
    );
}

/// DDIM (η = 0) integrates the probability-flow ODE with global error O(1/N). For Gaussian data
/// N(m, s²) the exact flow keeps `z = (x_t − α_t m)/√(α_t² s² + σ_t²)` constant, so the endpoint is
/// `m + s·z`; the observed order from N = 10, 20, 40 steps must be ≈ 1.
#[test]
fn ddim_converges_to_the_exact_flow_endpoint_at_first_order() {
    let (m, s) = (1.5f64, 0.5f64);
    let schedule =
        DiscreteSchedule::from_betas(&betas(BetaSchedule::Linear, 1e-4, 0.02, 1000), false);
    let device = Device::flex();
    let x_t = [-1.3f32, 0.4, 2.2];
    let mut errors = Vec::new();
    for n in [10, 20, 40] {
        let ddim = Ddim::new(
            DdimConfig {
                schedule: schedule.clone(),
                prediction: Prediction::Epsilon,
                spacing: Spacing::Trailing,
                steps_offset: 0,
                set_alpha_to_one: true,
                clip_sample: None,
            },
            n,
        );
        let t0 = ddim.grid()[0] as usize;
        let mut x = Tensor::<1>::from_data(TensorData::new(x_t.to_vec(), [3]), &device);
        for &t in ddim.grid() {
            let abar = schedule.alphas_cumprod[t as usize];
            let (alpha, sigma) = (abar.sqrt(), (1.0 - abar).sqrt());
            let var = alpha * alpha * s * s + sigma * sigma;
            let eps = x.clone().sub_scalar(alpha * m).mul_scalar(sigma / var);
            x = ddim.step_at(eps, t, x, 0.0, None).prev_sample;
        }
        let got: Vec<f32> = x.into_data().try_into_vec_as().unwrap();
        let abar = schedule.alphas_cumprod[t0];
        let (alpha, sigma) = (abar.sqrt(), (1.0 - abar).sqrt());
        let err = x_t
            .iter()
            .zip(&got)
            .map(|(&xt, &g)| {
                let z = (xt as f64 - alpha * m) / (alpha * alpha * s * s + sigma * sigma).sqrt();
                (g as f64 - (m + s * z)).abs()
            })
            .fold(0.0, f64::max);
        errors.push(err);
    }
    for pair in errors.windows(2) {
        let order = (pair[0] / pair[1]).log2();
        assert!(
            (0.75..1.4).contains(&order),
            "observed order {order} from errors {errors:?}"
        );
    }
}

/// DDPM ancestral sampling with the exact denoiser of Gaussian data N(m, s²) is a linear-Gaussian
/// chain: each step maps `x_t ↦ A·x_t + B + σ·z`, so the law of the output is known exactly
/// (mean and variance by recursion in f64). 4000 chains over 50 steps (noise from a seeded RNG)
/// must match it within sampling error. (The coarse chain's spread is below the data's s: the
/// fixed-small variance ignores the uncertainty of x̂0.)
#[test]
fn ddpm_samples_follow_the_exact_law_of_the_chain() {
    use burn::tensor::Distribution;
    use firebox_diffusion::ddpm::{Ddpm, DdpmConfig, Variance};

    let (m, s) = (0.7f64, 0.3f64);
    let schedule =
        DiscreteSchedule::from_betas(&betas(BetaSchedule::Linear, 1e-4, 0.02, 1000), false);
    let ddpm = Ddpm::new(
        DdpmConfig {
            schedule: schedule.clone(),
            prediction: Prediction::Epsilon,
            spacing: Spacing::Leading,
            steps_offset: 0,
            clip_sample: None,
            variance: Variance::FixedSmall,
        },
        50,
    );
    let device = Device::flex();
    device.seed(17);
    let n = 4000;
    let mut x = Tensor::<1>::random([n], Distribution::Normal(0.0, 1.0), &device);
    let (mut law_mean, mut law_var) = (0.0f64, 1.0f64);
    let grid = ddpm.grid().to_vec();
    for (k, &t) in grid.iter().enumerate() {
        let abar = schedule.alphas_cumprod[t as usize];
        let (alpha, sigma) = (abar.sqrt(), (1.0 - abar).sqrt());
        let var = alpha * alpha * s * s + sigma * sigma;
        let eps = x.clone().sub_scalar(alpha * m).mul_scalar(sigma / var);
        let noise = ddpm
            .needs_noise_at(k)
            .then(|| Tensor::<1>::random([n], Distribution::Normal(0.0, 1.0), &device));
        x = ddpm.step_at(eps, k, x, noise);
        // The same step on the law: x̂0 = m(1 − α²s²/var) + (αs²/var)·x_t.
        let a_p = grid
            .get(k + 1)
            .map_or(1.0, |&p| schedule.alphas_cumprod[p as usize]);
        let beta = 1.0 - abar / a_p;
        let c1 = a_p.sqrt() * beta / (1.0 - abar);
        let c2 = (1.0 - beta).sqrt() * (1.0 - a_p) / (1.0 - abar);
        let a = c1 * alpha * s * s / var + c2;
        let b = c1 * m * (1.0 - alpha * alpha * s * s / var);
        let noise_var = if t > 0 {
            ((1.0 - a_p) / (1.0 - abar) * beta).max(1e-20)
        } else {
            0.0
        };
        law_mean = a * law_mean + b;
        law_var = a * a * law_var + noise_var;
    }
    let values: Vec<f32> = x.into_data().try_into_vec_as().unwrap();
    let mean = values.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
    let std = (values
        .iter()
        .map(|&v| (v as f64 - mean).powi(2))
        .sum::<f64>()
        / n as f64)
        .sqrt();
    let law_std = law_var.sqrt();
    assert!(
        (mean - law_mean).abs() < 4.0 * law_std / (n as f64).sqrt(),
        "sample mean {mean}, exact {law_mean}"
    );
    // The sample std of n Gaussian draws has relative standard error 1/√(2n) ≈ 1.1 %: 5 % is
    // ~4.5 σ, while the wrong variance type is off by 28 %.
    assert!(
        (std / law_std - 1.0).abs() < 0.05,
        "sample std {std}, exact {law_std}"
    );
}

/// DDIM inversion then DDIM sampling on the same trailing grid returns the start: exactly in the
/// limit, with an error that shrinks as the grid refines (both are first-order schemes of the
/// same flow, the inversion evaluating the model one level early).
#[test]
fn ddim_inversion_round_trips_through_sampling() {
    use firebox_diffusion::ddim::DdimInverse;
    use firebox_diffusion::sampler::{SeededNoise, sample};
    let (m, s) = (0.5f64, 0.8f64);
    let schedule = DiscreteSchedule::from_betas(
        &betas(BetaSchedule::ScaledLinear, 0.00085, 0.012, 1000),
        false,
    );
    let table = schedule.alphas_cumprod.clone();
    let denoiser = move |x: Tensor<1>, t: f64| {
        let a = table[t as usize];
        let (alpha, sigma) = (a.sqrt(), (1.0 - a).sqrt());
        (x - alpha * m).mul_scalar(sigma / (alpha * alpha * s * s + sigma * sigma))
    };
    let device = Device::flex();
    let x0 = Tensor::<1>::from_data(TensorData::new(vec![0.1f32, -0.7, 1.3, 0.9], [4]), &device);
    let config = |spacing| DdimConfig {
        schedule: schedule.clone(),
        prediction: Prediction::Epsilon,
        spacing,
        steps_offset: 0,
        set_alpha_to_one: true,
        clip_sample: None,
    };
    let mut errors = Vec::new();
    for n in [10, 40] {
        let mut inverse = DdimInverse::new(config(Spacing::Trailing), n);
        let x_t = sample(
            &mut inverse,
            &denoiser,
            x0.clone(),
            &mut SeededNoise::new(0),
        );
        let mut forward = Ddim::new(config(Spacing::Trailing), n);
        let back = sample(&mut forward, &denoiser, x_t, &mut SeededNoise::new(0));
        let err = (back - x0.clone()).abs().max().into_scalar::<f32>();
        errors.push(err);
    }
    assert!(errors[1] < 0.5 * errors[0], "round-trip errors {errors:?}");
    assert!(errors[1] < 0.05, "round-trip errors {errors:?}");
}
