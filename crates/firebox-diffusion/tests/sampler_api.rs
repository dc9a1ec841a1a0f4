//! The user-facing pieces shared by every sampler: `sample()`, begin index, classifier-free
//! guidance, noise sources, dynamic thresholding and the solver-family grids.

use burn::tensor::{Device, Tensor, TensorData};
use firebox_diffusion::ddim::{Ddim, DdimConfig};
use firebox_diffusion::ddpm::{Ddpm, DdpmConfig, Variance};
use firebox_diffusion::grid::Spacing;
use firebox_diffusion::prediction::Prediction;
use firebox_diffusion::sampler::{
    ClassifierFreeGuidance, Denoiser, NoiseSource, RecordedNoise, Sampler, SeededNoise, sample,
};
use firebox_diffusion::schedule::{BetaSchedule, DiscreteSchedule, betas};
use firebox_diffusion::solver_grid::{
    FinalSigma, SigmaSpacing, SolverGridOptions, TimestepRounding, solver_grid,
};
use firebox_diffusion::threshold::DynamicThreshold;

fn schedule() -> DiscreteSchedule {
    DiscreteSchedule::from_betas(&betas(BetaSchedule::Linear, 1e-4, 0.02, 1000), false)
}

fn values<const D: usize>(x: Tensor<D>) -> Vec<f32> {
    x.into_data().try_into_vec_as().unwrap()
}

#[test]
fn guidance_mixes_the_two_predictions() {
    let device = Device::flex();
    let cond = |x: Tensor<1>, _t: f64| x.mul_scalar(2.0);
    let uncond = |x: Tensor<1>, _t: f64| x.add_scalar(1.0);
    let guided = ClassifierFreeGuidance {
        conditional: cond,
        unconditional: uncond,
        scale: 3.0,
    };
    let x = Tensor::<1>::from_data(TensorData::new(vec![1.0f32, -2.0], [2]), &device);
    // u + 3(c − u): c = [2, −4], u = [2, −1] → [2, −10].
    assert_eq!(values(guided.denoise(x, 10.0)), vec![2.0, -10.0]);
}

#[test]
fn seeded_noise_is_reproducible_and_standard_normal() {
    let a = SeededNoise::new(9).normals(20_000);
    assert_eq!(a, SeededNoise::new(9).normals(20_000));
    assert_ne!(a[..8], SeededNoise::new(10).normals(8)[..]);
    let mean = a.iter().map(|&v| v as f64).sum::<f64>() / a.len() as f64;
    let var = a.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / a.len() as f64;
    // 5σ bounds for n = 20 000: mean ± 0.035, variance ± 0.05.
    assert!(
        mean.abs() < 0.035 && (var - 1.0).abs() < 0.05,
        "{mean} {var}"
    );
}

#[test]
fn recorded_noise_hands_out_draws_in_order_and_refuses_more() {
    let device = Device::flex();
    let draws = vec![
        Tensor::<1>::from_data(TensorData::new(vec![1.0f32], [1]), &device),
        Tensor::<1>::from_data(TensorData::new(vec![2.0f32], [1]), &device),
    ];
    let mut noise = RecordedNoise::new(draws);
    assert_eq!(values(noise.draw([1].into(), &device)), vec![1.0]);
    assert_eq!(values(noise.draw([1].into(), &device)), vec![2.0]);
    let more = std::panic::catch_unwind(move || noise.draw([1].into(), &device));
    assert!(more.is_err());
}

/// `sample()` equals the hand-written loop, uses one draw per stochastic step, honours a begin
/// index, and resets the sampler so it can run again.
#[test]
fn sample_runs_the_step_loop_and_resets() {
    let device = Device::flex();
    let model = |x: Tensor<1>, t: f64| x.mul_scalar(0.3 + t / 5000.0);
    let config = DdpmConfig {
        schedule: schedule(),
        prediction: Prediction::Epsilon,
        spacing: Spacing::Leading,
        steps_offset: 0,
        clip_sample: None,
        variance: Variance::FixedSmall,
    };
    let x_t = Tensor::<1>::from_data(TensorData::new(vec![0.5f32, -1.5, 2.0], [3]), &device);
    let mut ddpm = Ddpm::new(config, 8);
    let got = sample(&mut ddpm, &model, x_t.clone(), &mut SeededNoise::new(4));
    assert_eq!(Sampler::<1>::step_index(&ddpm), 0, "reset after the run");

    let mut noise = SeededNoise::new(4);
    let mut x = x_t.clone();
    let mut draws = 0;
    for k in 0..8 {
        let t = Sampler::<1>::timesteps(&ddpm)[k];
        let z = Sampler::<1>::needs_noise(&ddpm).then(|| {
            draws += 1;
            noise.draw([3].into(), &device)
        });
        x = ddpm.step(model(x.clone(), t), x, z).prev_sample;
    }
    assert_eq!(draws, 7, "no noise at t = 0");
    assert_eq!(values(got), values(x));

    // From the middle of a DDIM run: 4 model calls instead of 8.
    let ddim_config = DdimConfig {
        schedule: schedule(),
        prediction: Prediction::Epsilon,
        spacing: Spacing::Leading,
        steps_offset: 0,
        set_alpha_to_one: true,
        clip_sample: None,
    };
    let mut ddim = Ddim::new(ddim_config, 8);
    Sampler::<1>::set_begin_index(&mut ddim, 4);
    let calls = std::cell::Cell::new(0);
    let counting = |x: Tensor<1>, t: f64| {
        calls.set(calls.get() + 1);
        model(x, t)
    };
    sample(&mut ddim, &counting, x_t, &mut SeededNoise::new(0));
    assert_eq!(calls.get(), 4);
}

/// Imagen's rule on a hand example: the 0.75-quantile of |x| per sample (linear interpolation),
/// at least 1, at most the max value; then clamp to ±s and divide by s.
#[test]
fn dynamic_thresholding_clamps_and_rescales_per_sample() {
    let device = Device::flex();
    let x = Tensor::<2>::from_data(
        TensorData::new(vec![0.5f32, -3.0, 2.0, 1.0, 0.2, -0.1, 0.3, 0.4], [2, 4]),
        &device,
    );
    let threshold = DynamicThreshold {
        ratio: 0.75,
        max_value: 2.5,
    };
    // Row 0: |x| sorted [0.5, 1, 2, 3], position 2.25 → 2.25; clamp to ±2.25, divide.
    // Row 1: |x| sorted [0.1, 0.2, 0.3, 0.4] → 0.325, raised to 1: unchanged.
    let got = values(threshold.apply(x));
    let want = [
        0.5 / 2.25,
        -1.0,
        2.0 / 2.25,
        1.0 / 2.25,
        0.2,
        -0.1,
        0.3,
        0.4,
    ];
    for (g, w) in got.iter().zip(want) {
        assert!((g - w as f32).abs() < 1e-6, "{got:?}");
    }
}

/// The DPM-Solver family's grid for 10 linspace steps on linear betas: diffusers'
/// `round(linspace(0, 999, 11))[::-1][:-1]` and the f32 σ levels with a zero final level; a
/// Karras grid keeps the table's extremes and rounds its timesteps.
#[test]
fn solver_grids_follow_diffusers() {
    let options = SolverGridOptions {
        spacing: Spacing::Linspace,
        steps_offset: 0,
        lambda_min_clipped: f64::NEG_INFINITY,
        sigma_spacing: SigmaSpacing::Timesteps,
        final_sigma: FinalSigma::Zero,
        rounding: TimestepRounding::Round,
    };
    let grid = solver_grid(&schedule(), 10, options);
    assert_eq!(
        grid.timesteps,
        vec![999, 899, 799, 699, 599, 500, 400, 300, 200, 100]
    );
    let table = schedule().ve_sigmas();
    assert_eq!(grid.sigmas[0], table[999] as f32 as f64);
    assert_eq!(grid.sigmas[5], table[500] as f32 as f64);
    assert_eq!(grid.sigmas[10], 0.0);
    let karras = solver_grid(
        &schedule(),
        5,
        SolverGridOptions {
            sigma_spacing: SigmaSpacing::Karras,
            final_sigma: FinalSigma::SigmaMin,
            ..options
        },
    );
    assert_eq!(karras.timesteps[0], 999);
    assert_eq!(karras.timesteps[4], 0);
    assert!(karras.sigmas.windows(2).all(|w| w[0] >= w[1]));
    assert_eq!(karras.sigmas[5], table[0] as f32 as f64);
}

/// The continuous VP schedules: `inverse_lambda` inverts `lambda`, α² + σ² = 1, and the
/// discrete one reproduces its table at the knots.
#[test]
fn continuous_vp_schedules_are_consistent() {
    use firebox_diffusion::vp_continuous::NoiseScheduleVp;
    let table = schedule().alphas_cumprod;
    for vp in [
        NoiseScheduleVp::discrete(&table),
        NoiseScheduleVp::Linear {
            beta_0: 0.1,
            beta_1: 20.0,
        },
        NoiseScheduleVp::Cosine,
    ] {
        for k in 1..20 {
            let t = vp.t_end() + (vp.t_start() - vp.t_end()) * k as f64 / 20.0;
            let back = vp.inverse_lambda(vp.lambda(t));
            assert!((back - t).abs() < 1e-6, "{vp:?}: t {t} -> {back}");
            let (a, s) = (vp.alpha(t), vp.sigma(t));
            assert!((a * a + s * s - 1.0).abs() < 1e-12);
        }
    }
    let vp = NoiseScheduleVp::discrete(&table);
    assert!((vp.alpha(0.5).powi(2) - table[499]).abs() < 1e-12);
}
