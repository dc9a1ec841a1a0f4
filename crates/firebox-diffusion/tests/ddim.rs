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
        let t0 = ddim.timesteps()[0] as usize;
        let mut x = Tensor::<1>::from_data(TensorData::new(x_t.to_vec(), [3]), &device);
        for &t in ddim.timesteps() {
            let abar = schedule.alphas_cumprod[t as usize];
            let (alpha, sigma) = (abar.sqrt(), (1.0 - abar).sqrt());
            let var = alpha * alpha * s * s + sigma * sigma;
            let eps = x.clone().sub_scalar(alpha * m).mul_scalar(sigma / var);
            x = ddim.step(eps, t, x, 0.0, None).prev_sample;
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
