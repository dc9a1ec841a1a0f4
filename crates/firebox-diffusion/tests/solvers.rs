//! Orders of convergence and identities between samplers, on Gaussian data where the exact
//! probability-flow ODE map is known in closed form: per dimension, with `x = α·x0 + σ·ε` and
//! data N(m, s²), the flow keeps `z = (x − α m)/√(α²s² + σ²)` constant.

use burn::tensor::{Device, Tensor, TensorData};
use firebox_diffusion::bdia::BdiaDdim;
use firebox_diffusion::ddim::{Ddim, DdimConfig};
use firebox_diffusion::dpm_solver::{
    Algorithm, DpmSolverConfig, DpmSolverMultistep, Level, SolverType,
};
use firebox_diffusion::dpm_solver_v3::{DpmSolverV3, Ems, V3Grid, V3Options, ems_lambdas};
use firebox_diffusion::flow_match::FlowMatchEuler;
use firebox_diffusion::grid::Spacing;
use firebox_diffusion::momentum::{MomentumConfig, MomentumKind, MomentumSampler};
use firebox_diffusion::prediction::Prediction;
use firebox_diffusion::sampler::{Sampler, SeededNoise, sample};
use firebox_diffusion::schedule::{BetaSchedule, DiscreteSchedule, betas};
use firebox_diffusion::solver_grid::{
    FinalSigma, SigmaSpacing, SolverGrid, SolverGridOptions, TimestepRounding,
};
use firebox_diffusion::unipc::{BhVariant, UniPc, UniPcConfig};
use firebox_diffusion::vp_continuous::NoiseScheduleVp;

const M: f64 = 0.7;
const S: f64 = 0.6;

fn table() -> DiscreteSchedule {
    DiscreteSchedule::from_betas(
        &betas(BetaSchedule::ScaledLinear, 0.00085, 0.012, 1000),
        false,
    )
}

fn values<const D: usize>(x: Tensor<D>) -> Vec<f64> {
    x.into_data()
        .try_into_vec_as::<f32>()
        .unwrap()
        .into_iter()
        .map(f64::from)
        .collect()
}

fn start(device: &Device) -> Tensor<1> {
    Tensor::from_data(
        TensorData::new(SeededNoise::new(1).normals(32), [32]),
        device,
    )
}

/// ε̂ of Gaussian data at level (α, σ).
fn eps(x: Tensor<1>, level: Level) -> Tensor<1> {
    let (a, s) = (level.alpha, level.sigma);
    (x - a * M).mul_scalar(s / (a * a * S * S + s * s))
}

/// The exact flow map of `x` from level `from` to `to`.
fn exact(x: &[f64], from: Level, to: Level) -> Vec<f64> {
    let spread = |l: Level| (l.alpha * l.alpha * S * S + l.sigma * l.sigma).sqrt();
    x.iter()
        .map(|&x| to.alpha * M + spread(to) * (x - from.alpha * M) / spread(from))
        .collect()
}

fn max_err(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// A grid uniform in λ from −2.5 to 3.5 with `n` steps (VE σ = e^{−λ}); the model's
/// "timesteps" are the level indices, which the test denoiser maps back to levels.
fn log_snr_grid(n: usize) -> (SolverGrid, Vec<Level>) {
    let sigmas: Vec<f64> = (0..=n)
        .map(|k| (-(-2.5 + 6.0 * k as f64 / n as f64)).exp())
        .collect();
    let levels = sigmas.iter().map(|&s| Level::of_ve(s)).collect();
    (
        SolverGrid {
            timesteps: (0..n as i64).collect(),
            sigmas,
        },
        levels,
    )
}

fn grid_options() -> SolverGridOptions {
    SolverGridOptions {
        spacing: Spacing::Linspace,
        steps_offset: 0,
        lambda_min_clipped: f64::NEG_INFINITY,
        sigma_spacing: SigmaSpacing::Timesteps,
        final_sigma: FinalSigma::SigmaMin,
        rounding: TimestepRounding::Round,
    }
}

fn dpm_config(order: usize) -> DpmSolverConfig {
    DpmSolverConfig {
        schedule: table(),
        prediction: Prediction::Epsilon,
        algorithm: Algorithm::DpmSolverPlusPlus,
        solver_order: order,
        solver_type: SolverType::Midpoint,
        lower_order_final: false,
        euler_at_final: false,
        grid: grid_options(),
        threshold: None,
    }
}

fn unipc_config(corrector: bool, n: usize) -> UniPcConfig {
    UniPcConfig {
        schedule: table(),
        prediction: Prediction::Epsilon,
        predict_x0: true,
        variant: BhVariant::Bh2,
        solver_order: 2,
        lower_order_final: false,
        disable_corrector: if corrector {
            Vec::new()
        } else {
            (0..n).collect()
        },
        grid: grid_options(),
        threshold: None,
    }
}

/// Runs a sampler on the λ grid with the Gaussian denoiser; returns the endpoint error.
fn error_on_grid(mut sampler: Box<dyn Sampler<1>>, levels: &[Level], device: &Device) -> f64 {
    let x = start(device);
    let want = exact(&values(x.clone()), levels[0], *levels.last().unwrap());
    let model = |x: Tensor<1>, t: f64| eps(x, levels[t as usize]);
    let got = sample(sampler.as_mut(), &model, x, &mut SeededNoise::new(0));
    max_err(&values(got), &want)
}

fn observed_order(errors: &[f64]) -> f64 {
    (errors[0] / errors[errors.len() - 1]).log2() / (errors.len() - 1) as f64
}

/// DPM-Solver++(2M) is second order on λ-uniform grids; UniPC-2 with its corrector (UniC)
/// is third order (Zhao et al. 2023, Thm. 3.1); without the corrector it is second order.
#[test]
fn multistep_solvers_converge_at_their_orders() {
    let device = Device::flex();
    let (mut dpm, mut unic, mut unip) = (Vec::new(), Vec::new(), Vec::new());
    for n in [10, 20, 40] {
        let (grid, levels) = log_snr_grid(n);
        dpm.push(error_on_grid(
            Box::new(DpmSolverMultistep::on_grid(dpm_config(2), grid.clone())),
            &levels,
            &device,
        ));
        unic.push(error_on_grid(
            Box::new(UniPc::on_grid(unipc_config(true, n), grid.clone())),
            &levels,
            &device,
        ));
        unip.push(error_on_grid(
            Box::new(UniPc::on_grid(unipc_config(false, n), grid)),
            &levels,
            &device,
        ));
    }
    let (p_dpm, p_unic, p_unip) = (
        observed_order(&dpm),
        observed_order(&unic),
        observed_order(&unip),
    );
    eprintln!(
        "observed orders: DPM-Solver++(2M) {p_dpm:.2}, UniPC-2+UniC {p_unic:.2}, UniP-2 {p_unip:.2}"
    );
    assert!(
        (1.7..2.4).contains(&p_dpm),
        "DPM-Solver++(2M) order {p_dpm} ({dpm:?})"
    );
    assert!(
        (2.6..3.6).contains(&p_unic),
        "UniPC-2 + UniC order {p_unic} ({unic:?})"
    );
    assert!(
        (1.7..2.4).contains(&p_unip),
        "UniP-2 order {p_unip} ({unip:?})"
    );
}

/// UniP-2 (bh2) without the corrector is DPM-Solver++(2M) (Zhao et al. 2023, §3.3): the same
/// numbers on the same grid.
#[test]
fn unip2_without_corrector_is_dpm_solver_pp_2m() {
    let device = Device::flex();
    let (grid, levels) = log_snr_grid(12);
    let x = start(&device);
    let model = |x: Tensor<1>, t: f64| eps(x, levels[t as usize]);
    let mut dpm = DpmSolverMultistep::<1>::on_grid(dpm_config(2), grid.clone());
    let mut unip = UniPc::<1>::on_grid(unipc_config(false, 12), grid);
    let a = values(sample(
        &mut dpm,
        &model,
        x.clone(),
        &mut SeededNoise::new(0),
    ));
    let b = values(sample(&mut unip, &model, x, &mut SeededNoise::new(0)));
    assert!(max_err(&a, &b) < 1e-5, "{a:?} vs {b:?}");
}

/// Flow-matching Euler is DDIM on the same signal-to-noise ratios: the flow path
/// `(1−σ_f)x0 + σ_f ε` is the VP path scaled by `c = √((1−σ_f)² + σ_f²)`.
#[test]
fn flow_euler_is_ddim_with_alpha_one_minus_sigma() {
    let device = Device::flex();
    let schedule = table();
    let grid: Vec<i64> = vec![999, 800, 600, 400, 250, 120, 40];
    let flow_sigma = |t: i64| {
        let a = schedule.alphas_cumprod[t as usize];
        (1.0 - a).sqrt() / (a.sqrt() + (1.0 - a).sqrt())
    };
    let x_vp = start(&device);
    let ddim_model = |x: Tensor<1>, t: f64| {
        let a = schedule.alphas_cumprod[t as usize];
        eps(
            x,
            Level {
                alpha: a.sqrt(),
                sigma: (1.0 - a).sqrt(),
                lambda: 0.0,
            },
        )
    };
    let config = DdimConfig {
        schedule: schedule.clone(),
        prediction: Prediction::Epsilon,
        spacing: Spacing::Leading,
        steps_offset: 0,
        set_alpha_to_one: true,
        clip_sample: None,
    };
    let mut ddim = Ddim::with_timesteps(config, grid.clone());
    let vp_end = values(sample(
        &mut ddim,
        &ddim_model,
        x_vp.clone(),
        &mut SeededNoise::new(0),
    ));

    let sigmas: Vec<f64> = grid.iter().map(|&t| flow_sigma(t)).collect();
    let s0 = sigmas[0];
    let c0 = ((1.0 - s0).powi(2) + s0 * s0).sqrt();
    // Flow model: u = ε̂ − x̂0 at flow level σ_f = t/1000.
    let flow_model = |x: Tensor<1>, t: f64| {
        let s = t / 1000.0;
        let level = Level {
            alpha: 1.0 - s,
            sigma: s,
            lambda: 0.0,
        };
        let e = eps(x.clone(), level);
        let x0 = (x - e.clone().mul_scalar(s)).div_scalar(1.0 - s);
        e - x0
    };
    let mut flow = FlowMatchEuler::with_sigmas(1000, sigmas);
    let flow_end = values(sample(
        &mut flow,
        &flow_model,
        x_vp.mul_scalar(c0),
        &mut SeededNoise::new(0),
    ));
    assert!(
        max_err(&vp_end, &flow_end) < 2e-5,
        "{vp_end:?} vs {flow_end:?}"
    );
}

/// With integer orders (β = 1) GHVB and PLMS with heavy ball are both Adams–Bashforth in
/// `(x/√ᾱ, √(1−ᾱ)/√ᾱ)`; GHVB(1.0) is DDIM on the same grid (ending at ᾱ_0).
#[test]
fn integer_momentum_is_plms_and_order_one_is_ddim() {
    let device = Device::flex();
    let schedule = table();
    let grid = vec![999, 899, 799, 699, 599, 500, 400, 300, 200, 100];
    let model = |x: Tensor<1>, t: f64| {
        let a = schedule.alphas_cumprod[t as usize];
        eps(
            x,
            Level {
                alpha: a.sqrt(),
                sigma: (1.0 - a).sqrt(),
                lambda: 0.0,
            },
        )
    };
    let run = |kind, order: f64| {
        let mut sampler = MomentumSampler::<1>::new(
            MomentumConfig {
                schedule: schedule.clone(),
                prediction: Prediction::Epsilon,
                kind,
                order,
            },
            grid.clone(),
        );
        values(sample(
            &mut sampler,
            &model,
            start(&device),
            &mut SeededNoise::new(0),
        ))
    };
    for order in [2.0, 3.0, 4.0] {
        let (g, p) = (
            run(MomentumKind::Ghvb, order),
            run(MomentumKind::PlmsHeavyBall, order),
        );
        assert!(max_err(&g, &p) < 1e-6, "order {order}: {g:?} vs {p:?}");
    }
    let mut ddim = Ddim::with_timesteps(
        DdimConfig {
            schedule: schedule.clone(),
            prediction: Prediction::Epsilon,
            spacing: Spacing::Leading,
            steps_offset: 0,
            set_alpha_to_one: false,
            clip_sample: None,
        },
        grid.clone(),
    );
    let d = values(sample(
        &mut ddim,
        &model,
        start(&device),
        &mut SeededNoise::new(0),
    ));
    let g1 = run(MomentumKind::Ghvb, 1.0);
    assert!(max_err(&d, &g1) < 1e-5, "{d:?} vs {g1:?}");
    // Momentum changes the result (β < 1 is not AB).
    assert!(max_err(&run(MomentumKind::Ghvb, 1.5), &run(MomentumKind::Ghvb, 2.0)) > 1e-4);
}

/// First-order DPM-Solver-v3 with the analytic EMS of Gaussian data is exact up to the
/// trapezoid quadrature of its integrals: the endpoint error falls like K⁻² with the EMS grid
/// size K (README: 1.6e-5 at K = 250, 9.9e-7 at 1000), far below DPM-Solver++'s.
#[test]
fn first_order_v3_with_the_analytic_ems_is_exact_to_quadrature() {
    let device = Device::flex();
    let schedule = NoiseScheduleVp::discrete(&table().alphas_cumprod);
    let (t0, t1) = (1.0, schedule.t_end());
    let grid = V3Grid {
        steps: 10,
        t_start: t0,
        t_end: t1,
        skip_type: "logSNR".into(),
    };
    let options = V3Options {
        order: 1,
        use_corrector: false,
        c_pseudo: false,
        ..V3Options::default()
    };
    let x = start(&device);
    let want = exact(&values(x.clone()), schedule.level(t0), schedule.level(t1));
    let model = |x: Tensor<1>, t_in: f64| {
        let t = t_in / 1000.0 + t1;
        eps(x, schedule.level(t))
    };
    let mut errors = Vec::new();
    for k in [250, 1000] {
        let ems = Ems::gaussian(ems_lambdas(&schedule, t0, t1, k), &[M], &[S]);
        let mut v3 = DpmSolverV3::<1>::new(schedule.clone(), &ems, &grid, options, false);
        errors.push(max_err(
            &values(sample(&mut v3, &model, x.clone(), &mut SeededNoise::new(0))),
            &want,
        ));
    }
    let degenerated = Ems::degenerated(ems_lambdas(&schedule, t0, t1, 1000), 1);
    let mut dpm = DpmSolverV3::<1>::new(schedule.clone(), &degenerated, &grid, options, false);
    let dpm_err = max_err(
        &values(sample(&mut dpm, &model, x, &mut SeededNoise::new(0))),
        &want,
    );
    eprintln!(
        "v3 order 1, analytic EMS: K=250 {:.2e}, K=1000 {:.2e}; degenerate {dpm_err:.2e}",
        errors[0], errors[1]
    );
    assert!(errors[1] < 1e-5, "K = 1000: {errors:?}");
    assert!(errors[0] / errors[1] > 8.0, "K⁻² convergence: {errors:?}");
    assert!(
        dpm_err > 100.0 * errors[1],
        "DPM-Solver++ {dpm_err} vs v3 {errors:?}"
    );
}

/// The EMS estimator, applied to the Gaussian denoiser with data drawn from the Gaussian,
/// recovers the analytic `l` and gives a first-order v3 sampler far more accurate than the
/// degenerate statistics.
#[test]
fn the_ems_estimator_recovers_the_gaussian_statistics() {
    let device = Device::flex();
    let schedule = NoiseScheduleVp::discrete(&table().alphas_cumprod);
    let (t0, t1) = (1.0, schedule.t_end());
    let lambdas = ems_lambdas(&schedule, t0, t1, 200);
    let n = 4000;
    let data: Vec<f32> = SeededNoise::new(8)
        .normals(n)
        .into_iter()
        .map(|z| (M + S * z as f64) as f32)
        .collect();
    let data = Tensor::<2>::from_data(TensorData::new(data, [n, 1]), &device);
    let model2 = |x: Tensor<2>, t_in: f64| {
        let level = schedule.level(t_in / 1000.0 + t1);
        let (a, s) = (level.alpha, level.sigma);
        (x - a * M).mul_scalar(s / (a * a * S * S + s * s))
    };
    let estimated = Ems::estimate(&model2, &schedule, lambdas.clone(), data, 2, 3);
    let analytic = Ems::gaussian(lambdas, &[M], &[S]);
    let l_err = estimated
        .l
        .iter()
        .zip(&analytic.l)
        .map(|(a, b)| (a[0] - b[0]).abs())
        .fold(0.0, f64::max);
    assert!(l_err < 0.02, "l error {l_err}");
    let options = V3Options {
        order: 1,
        use_corrector: false,
        c_pseudo: false,
        ..V3Options::default()
    };
    let x = start(&device);
    let want = exact(&values(x.clone()), schedule.level(t0), schedule.level(t1));
    let model = |x: Tensor<1>, t_in: f64| eps(x, schedule.level(t_in / 1000.0 + t1));
    let grid = V3Grid {
        steps: 10,
        t_start: t0,
        t_end: t1,
        skip_type: "logSNR".into(),
    };
    let err_of = |ems: &Ems| {
        let mut v3 = DpmSolverV3::<1>::new(schedule.clone(), ems, &grid, options, false);
        max_err(
            &values(sample(&mut v3, &model, x.clone(), &mut SeededNoise::new(0))),
            &want,
        )
    };
    let degenerated = Ems::degenerated(estimated.lambdas.clone(), 1);
    let (est, deg) = (err_of(&estimated), err_of(&degenerated));
    eprintln!("EMS estimator: l error {l_err:.2e}; v3 error {est:.2e} vs degenerate {deg:.2e}");
    assert!(
        est < 0.1 * deg,
        "estimated EMS error {est}, degenerate {deg}"
    );
}

/// BDIA-DDIM's inversion recovers x_T from the last two states (γ = 1: float rounding only).
#[test]
fn bdia_inversion_recovers_the_start() {
    let device = Device::flex();
    let schedule = table();
    let model = |x: Tensor<1>, t: f64| {
        let a = schedule.alphas_cumprod[t as usize];
        eps(
            x,
            Level {
                alpha: a.sqrt(),
                sigma: (1.0 - a).sqrt(),
                lambda: 0.0,
            },
        )
    };
    for gamma in [1.0, 0.7] {
        let mut bdia = BdiaDdim::<1>::new(schedule.clone(), Prediction::Epsilon, 10, gamma);
        let x_t = start(&device);
        let mut x = x_t.clone();
        let mut before = x.clone();
        while Sampler::<1>::step_index(&bdia) < Sampler::<1>::timesteps(&bdia).len() {
            let t = Sampler::<1>::timesteps(&bdia)[Sampler::<1>::step_index(&bdia)];
            before = x.clone();
            x = bdia.step(model(x.clone(), t), x, None).prev_sample;
        }
        let states = bdia.invert(&model, x, before);
        let recovered = values(states.last().unwrap().clone());
        let err = max_err(&recovered, &values(x_t));
        assert!(
            err < if gamma == 1.0 { 1e-4 } else { 1e-3 },
            "γ = {gamma}: error {err}"
        );
    }
}

/// DC-Solver's search: ratios fitted to a ground-truth trajectory (here the exact flow) lower
/// the endpoint error of 6-step UniPC-3 (bh1, continuous time), and the warm-up ratios stay 1.
#[test]
fn the_dc_ratio_search_lowers_the_error() {
    use firebox_diffusion::dc_solver::{RatioSearch, search_ratios};
    let device = Device::flex();
    let schedule = NoiseScheduleVp::discrete(&table().alphas_cumprod);
    let times = schedule.time_steps("time_uniform", 1.0, schedule.t_end(), 6);
    let levels: Vec<Level> = times.iter().map(|&t| schedule.level(t)).collect();
    let build = |ratios: Vec<f64>| {
        UniPc::<1>::on_levels(
            UniPcConfig {
                variant: BhVariant::Bh1,
                solver_order: 3,
                lower_order_final: true,
                disable_corrector: Vec::new(),
                ..unipc_config(true, 0)
            },
            levels.clone(),
            (0..6).map(|k| k as f64).collect(),
        )
        .with_compensation(ratios, times.clone())
    };
    let model = |x: Tensor<1>, t: f64| eps(x, levels[t as usize]);
    let x = start(&device);
    let x_host = values(x.clone());
    let reference = |k: usize| {
        Tensor::<1>::from_data(
            TensorData::new(
                exact(&x_host, levels[0], levels[k])
                    .into_iter()
                    .map(|v| v as f32)
                    .collect::<Vec<_>>(),
                [32],
            ),
            &device,
        )
    };
    let ratios = search_ratios(
        &build(vec![1.0; 6]),
        &model,
        x.clone(),
        reference,
        RatioSearch::default(),
    );
    assert_eq!(ratios[..2], [1.0, 1.0]);
    let want = values(reference(6));
    let err = |ratios: Vec<f64>| {
        let mut s = build(ratios);
        max_err(
            &values(sample(&mut s, &model, x.clone(), &mut SeededNoise::new(0))),
            &want,
        )
    };
    let (plain, searched) = (err(vec![1.0; 6]), err(ratios.clone()));
    eprintln!("DC-Solver ratios {ratios:?}: error {searched:.3e} vs UniPC {plain:.3e}");
    assert!(
        searched < 0.8 * plain,
        "ratios {ratios:?}: {searched} vs UniPC {plain}"
    );
}
