//! Diffusion sampling with every firebox sampler, on shipped data.
//!
//! ```text
//! cargo run --release --example sample
//! cargo run --release --example sample -- --device wgpu --out target/sample
//! ```
//!
//! 1. **Analytic mixture denoiser.** The 2-D Gaussian mixture of the shipped oracle fixtures
//!    (`tests/fixtures/samplers/oracle_gmm__*.json`: 10 components, the exact probability-flow
//!    ODE endpoint of 64 starting points) is denoised in closed form; every sampler configuration
//!    of the oracle files runs at NFE ≈ 5, 10, 20 and the table prints its RMS error to the exact
//!    endpoint beside diffusers' own error on the same check.
//! 2. **Trained 2-D denoiser.** A [`DenoiserMlp`] learns the same mixture (ε-prediction, samples
//!    drawn from the mixture), then the same table is run with the network in place of the
//!    closed form (its error includes the network's). The samples of DPM-Solver++(2M) at 20
//!    steps and data samples are drawn to `OUT/mixture.svg`.
//! 3. **Trained digits denoiser.** A wider [`DenoiserMlp`] learns the shipped 8x8 digits; 8 samples
//!    per sampler at 10 model calls are written as a PNG grid `OUT/digits.png` (one row per
//!    sampler, the same starting noise in every row): the oracle's configurations, the stochastic
//!    ones (DDPM, DDIM η = 1, Euler ancestral, SDE-DPM-Solver++), DEIS, GHVB and BDIA-DDIM.
//!
//! Part 1 also runs the research samplers on the mixture (GHVB, PLMS with heavy ball,
//! DC-Solver with ratios searched against a 200-step reference, DPM-Solver-v3 with statistics
//! estimated from mixture samples).

#[path = "common/png.rs"]
mod png;

use std::path::PathBuf;
use std::time::Instant;

use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::{Device, Tensor, TensorData};
use clap::Parser;
use firebox::device::{Availability, BackendName, probe};
use firebox::diffusion::sampler::{SeededNoise, sample};
use firebox::fixtures::sampler::oracle::{CheckResult, run_checks, run_checks_with};
use firebox::fixtures::sampler::{Data, build_diffusers, discrete_schedule};
use firebox::models::data::load_digits;
use firebox::models::data::shuffle::SplitMix64;
use firebox::models::denoiser::standard_normals;
use firebox::models::{DenoiserMlp, DenoiserMlpConfig};
use plotters::prelude::*;
use serde_json::{Value, json};

#[derive(Parser, Debug)]
#[command(about = "Train small denoisers on shipped data and sample with every sampler")]
struct Cli {
    /// Backend: flex, ndarray, wgpu, vulkan, metal or cuda (compiled in by Cargo feature).
    #[arg(long, default_value = "flex")]
    device: String,
    /// Training steps of the 2-D mixture denoiser.
    #[arg(long, default_value_t = 6000)]
    mixture_steps: usize,
    /// Training steps of the digits denoiser.
    #[arg(long, default_value_t = 2500)]
    digits_steps: usize,
    /// Output folder for the pictures.
    #[arg(long, default_value = "target/sample")]
    out: PathBuf,
    /// Seed of data, initialisation draws and starting noise.
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/samplers");

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(&cli) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run(cli: &Cli) -> Result<(), String> {
    let started = Instant::now();
    let device = open_device(&cli.device)?;
    let oracles: Vec<(String, Value)> = ["oracle_gmm__sd_zero", "oracle_gmm__linear_sigma_min"]
        .iter()
        .map(|name| {
            let path = format!("{FIXTURES}/{name}.json");
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("missing data file {path}: {e}"))?;
            let value = serde_json::from_str(&text).map_err(|e| format!("{path}: {e}"))?;
            Ok((name.to_string(), value))
        })
        .collect::<Result<_, String>>()?;

    println!("== 1. analytic mixture denoiser: RMS error to the exact PF-ODE endpoint ==");
    for (name, value) in &oracles {
        match run_checks(value, &device) {
            Ok(results) => print_table(name, &results, None),
            Err(e) => println!("{name}: {e}"),
        }
    }

    research_table(&oracles[1].1, &device, cli.seed)?;

    println!("\n== 2. trained 2-D mixture denoiser ==");
    let (sd_name, sd) = &oracles[0];
    let schedule = discrete_schedule(&sd["schedule_config"])?.alphas_cumprod;
    let data = Data::parse(&sd["model"]["data"])?;
    let t0 = Instant::now();
    let model = train(
        &device,
        DenoiserMlpConfig::new(2),
        &schedule,
        cli.mixture_steps,
        256,
        2e-3,
        cli.seed,
        |rng, n| mixture_samples(&data, rng, n),
    );
    println!(
        "trained {} steps in {:.1} s",
        cli.mixture_steps,
        t0.elapsed().as_secs_f64()
    );
    let net = |x: Tensor<2>, t: f64| model.predict(x, t);
    match (run_checks(sd, &device), run_checks_with(sd, &device, &net)) {
        (Ok(analytic), Ok(trained)) => print_table(sd_name, &trained, Some(&analytic)),
        (Err(e), _) | (_, Err(e)) => println!("{sd_name}: {e}"),
    }
    draw_mixture(cli, &device, &data, &model)?;

    println!("\n== 3. trained digits denoiser ==");
    let digits = load_digits();
    let images: Vec<Vec<f32>> = (0..digits.len())
        .map(|i| digits.image(i).iter().map(|p| 2.0 * p - 1.0).collect())
        .collect();
    let t0 = Instant::now();
    let digits_model = train(
        &device,
        DenoiserMlpConfig::new(64).with_hidden(256),
        &schedule,
        cli.digits_steps,
        128,
        1e-3,
        cli.seed,
        |rng, n| {
            (0..n)
                .flat_map(|_| images[rng.below(images.len())].clone())
                .collect()
        },
    );
    println!(
        "trained {} steps in {:.1} s",
        cli.digits_steps,
        t0.elapsed().as_secs_f64()
    );
    draw_digits(cli, &device, sd, &digits_model)?;
    println!("\ntotal {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

fn open_device(name: &str) -> Result<Device, String> {
    let backend: BackendName = name.parse()?;
    match probe(backend) {
        Availability::Ready(device, _) => Ok(device),
        Availability::Unavailable(reason) => Err(reason),
    }
}

/// Trains a denoiser with AdamW and a cosine learning-rate decay; `draw(rng, n)` returns `n`
/// data rows, row-major.
#[allow(clippy::too_many_arguments)]
fn train(
    device: &Device,
    config: DenoiserMlpConfig,
    alphas_cumprod: &[f64],
    steps: usize,
    batch: usize,
    lr: f64,
    seed: u64,
    mut draw: impl FnMut(&mut SplitMix64, usize) -> Vec<f32>,
) -> DenoiserMlp {
    let dim = config.dim;
    let autodiff = device.clone().autodiff();
    let mut model = config.init(&autodiff);
    let mut optim = AdamWConfig::new().with_weight_decay(0.0).init();
    let mut rng = SplitMix64::new(seed);
    let mut recent = 0.0;
    for step in 0..steps {
        let x0 = Tensor::<2>::from_data(
            TensorData::new(draw(&mut rng, batch), [batch, dim]),
            &autodiff,
        );
        let loss = model.loss(x0, alphas_cumprod, &mut rng);
        recent += loss.clone().into_scalar::<f64>();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let progress = step as f64 / steps as f64;
        let step_lr = lr * (0.05 + 0.95 * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()));
        model = optim.step(step_lr, model, grads);
        if (step + 1) % (steps / 5).max(1) == 0 {
            println!(
                "  step {:>5}: loss {:.4}",
                step + 1,
                recent / (steps / 5).max(1) as f64
            );
            recent = 0.0;
        }
    }
    model.valid()
}

/// `n` points of the mixture, row-major.
fn mixture_samples(data: &Data, rng: &mut SplitMix64, n: usize) -> Vec<f32> {
    let Data::Gmm {
        weights,
        means,
        stds,
    } = data
    else {
        panic!("the oracle's data is a mixture");
    };
    let total: f64 = weights.iter().sum();
    let z = standard_normals(rng, 2 * n);
    let mut out = Vec::with_capacity(2 * n);
    for i in 0..n {
        let mut u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * total;
        let mut k = 0;
        while k + 1 < weights.len() && u >= weights[k] {
            u -= weights[k];
            k += 1;
        }
        for d in 0..2 {
            out.push((means[k][d] + stds[k] * z[2 * i + d] as f64) as f32);
        }
    }
    out
}

/// RMS error of `got` to the oracle's exact endpoint.
fn rms_to(got: Tensor<2>, exact: &[f64]) -> f64 {
    let got: Vec<f32> = got.into_data().try_into_vec_as().unwrap_or_default();
    (got.iter()
        .zip(exact)
        .map(|(g, e)| (*g as f64 - e).powi(2))
        .sum::<f64>()
        / exact.len() as f64)
        .sqrt()
}

/// The research samplers on the analytic mixture of the `linear_sigma_min` oracle (their runs
/// end at ᾱ_0, that oracle's end level): GHVB and PLMS with heavy ball (order 1.8), DC-Solver
/// (UniPC-3 bh1 with searched ratios) and DPM-Solver-v3 (order 2 + corrector, EMS estimated
/// from mixture samples with the estimator), against UniPC on the same continuous grid.
fn research_table(oracle: &Value, device: &Device, seed: u64) -> Result<(), String> {
    use firebox::diffusion::dc_solver::{RatioSearch, search_ratios};
    use firebox::diffusion::dpm_solver_v3::{DpmSolverV3, Ems, V3Grid, V3Options, ems_lambdas};
    use firebox::diffusion::grid::{Spacing, solver_timesteps};
    use firebox::diffusion::momentum::{MomentumConfig, MomentumKind, MomentumSampler};
    use firebox::diffusion::prediction::Prediction;
    use firebox::diffusion::unipc::{BhVariant, UniPc, UniPcConfig};
    use firebox::diffusion::vp_continuous::NoiseScheduleVp;
    use firebox::fixtures::sampler::{AnalyticDenoiser, NoiseLevel, flatten64, matrix};

    let table = discrete_schedule(&oracle["schedule_config"])?;
    let abar = table.alphas_cumprod.clone();
    let x_t = oracle["x_T"].clone();
    let rows = x_t.as_array().map_or(0, Vec::len);
    let x_t = matrix(&x_t, [rows, 2], "x_T", device)?;
    let exact = flatten64(&oracle["expected"]["x_end"], "x_end")?;
    let discrete = AnalyticDenoiser::of_fixture(oracle, NoiseLevel::DiscreteVp(abar.clone()))?;
    let continuous =
        AnalyticDenoiser::of_fixture(oracle, NoiseLevel::DpmSolverDiscrete(abar.clone()))?;
    let eps_discrete = |x: Tensor<2>, t: f64| discrete.predict(x, t);
    let eps_continuous = |x: Tensor<2>, t: f64| continuous.predict(x, t);
    let vp = NoiseScheduleVp::discrete(&abar);
    let (t_start, t_end) = (1.0, vp.t_end());
    // EMS of the mixture, estimated once from 4096 mixture samples on a 200-point λ grid.
    let Data::Gmm { .. } = Data::parse(&oracle["model"]["data"])? else {
        return Err("the oracle's data is not a mixture".into());
    };
    let data = Data::parse(&oracle["model"]["data"])?;
    let mut rng = SplitMix64::new(seed + 3);
    let samples = Tensor::<2>::from_data(
        TensorData::new(mixture_samples(&data, &mut rng, 4096), [4096, 2]),
        device,
    );
    let ems = Ems::estimate(
        &eps_continuous,
        &vp,
        ems_lambdas(&vp, t_start, t_end, 200),
        samples,
        2,
        seed,
    );
    let unipc = |n: usize, levels: Vec<f64>, ratios: Option<Vec<f64>>| {
        let model_times: Vec<f64> = levels[..n].iter().map(|&t| vp.model_time(t)).collect();
        let config = UniPcConfig {
            schedule: table.clone(),
            prediction: Prediction::Epsilon,
            predict_x0: true,
            variant: BhVariant::Bh1,
            solver_order: 3,
            lower_order_final: true,
            disable_corrector: Vec::new(),
            grid: firebox::diffusion::solver_grid::SolverGridOptions {
                spacing: Spacing::Linspace,
                steps_offset: 0,
                lambda_min_clipped: f64::NEG_INFINITY,
                sigma_spacing: firebox::diffusion::solver_grid::SigmaSpacing::Timesteps,
                final_sigma: firebox::diffusion::solver_grid::FinalSigma::SigmaMin,
                rounding: firebox::diffusion::solver_grid::TimestepRounding::Round,
            },
            threshold: None,
        };
        let sampler = UniPc::<2>::on_levels(
            config,
            levels.iter().map(|&t| vp.level(t)).collect(),
            model_times,
        );
        match ratios {
            Some(r) => sampler.with_compensation(r, levels),
            None => sampler,
        }
    };
    println!(
        "\noracle_gmm__linear_sigma_min, research samplers (error = RMS to the exact PF-ODE endpoint):"
    );
    println!("{:<44} {:>4} {:>11}", "sampler", "NFE", "error");
    for nfe in [5, 10, 20] {
        let grid = solver_timesteps(1000, 1000, nfe, Spacing::Linspace, 0);
        for (name, kind) in [
            ("GHVB 1.8", MomentumKind::Ghvb),
            ("PLMS-HB 1.8", MomentumKind::PlmsHeavyBall),
        ] {
            let mut sampler = MomentumSampler::<2>::new(
                MomentumConfig {
                    schedule: table.clone(),
                    prediction: Prediction::Epsilon,
                    kind,
                    order: 1.8,
                },
                grid.clone(),
            );
            let out = sample(
                &mut sampler,
                &eps_discrete,
                x_t.clone(),
                &mut SeededNoise::new(0),
            );
            println!("{name:<44} {nfe:>4} {:>11.4e}", rms_to(out, &exact));
        }
        let levels = vp.time_steps("time_uniform", t_start, t_end, nfe);
        let mut plain = unipc(nfe, levels.clone(), None);
        let out = sample(
            &mut plain,
            &eps_continuous,
            x_t.clone(),
            &mut SeededNoise::new(0),
        );
        println!(
            "{:<44} {nfe:>4} {:>11.4e}",
            "UniPC-3 bh1, time-uniform (DC-Solver's base)",
            rms_to(out, &exact)
        );
        if nfe >= 4 {
            // Ground truth at each level: UniPC-3 with 200 λ-uniform steps from t = 1.
            let reference = |k: usize| {
                let target = levels[k];
                let fine: Vec<f64> = (0..=200)
                    .map(|j| {
                        vp.inverse_lambda(
                            vp.lambda(t_start)
                                + (vp.lambda(target) - vp.lambda(t_start)) * j as f64 / 200.0,
                        )
                    })
                    .collect();
                let mut s = unipc(200, fine, None);
                sample(
                    &mut s,
                    &eps_continuous,
                    x_t.clone(),
                    &mut SeededNoise::new(0),
                )
            };
            let base = unipc(nfe, levels.clone(), Some(vec![1.0; nfe]));
            let ratios = search_ratios(
                &base,
                &eps_continuous,
                x_t.clone(),
                reference,
                RatioSearch::default(),
            );
            let mut dc = unipc(nfe, levels.clone(), Some(ratios));
            let out = sample(
                &mut dc,
                &eps_continuous,
                x_t.clone(),
                &mut SeededNoise::new(0),
            );
            println!(
                "{:<44} {nfe:>4} {:>11.4e}",
                "DC-Solver (searched ratios)",
                rms_to(out, &exact)
            );
        }
        let grid = V3Grid {
            steps: nfe,
            t_start,
            t_end,
            skip_type: "logSNR".into(),
        };
        let options = V3Options {
            order: 2,
            ..V3Options::default()
        };
        let mut v3 = DpmSolverV3::<2>::new(vp.clone(), &ems, &grid, options, false);
        let out = sample(
            &mut v3,
            &eps_continuous,
            x_t.clone(),
            &mut SeededNoise::new(0),
        );
        println!(
            "{:<44} {nfe:>4} {:>11.4e}",
            "DPM-Solver-v3 order 2 + corrector, estimated EMS",
            rms_to(out, &exact)
        );
    }
    println!(
        "(BDIA-DDIM's grid starts at 1 + (n−1)·T/n, not at the oracle's t = 999, and MRS solves a \
         mean-reverting SDE: both are checked by their fixtures and tests, not here.)"
    );
    Ok(())
}

/// One table row per check: sampler, configuration, NFE, error (and the reference's).
fn print_table(name: &str, results: &[CheckResult], analytic: Option<&[CheckResult]>) {
    println!("\n{name}:");
    match analytic {
        None => println!(
            "{:<22} {:<44} {:>4} {:>11} {:>11} {:>6}",
            "sampler", "configuration", "NFE", "error", "diffusers", "ratio"
        ),
        Some(_) => println!(
            "{:<22} {:<44} {:>4} {:>11} {:>11}",
            "sampler", "configuration", "NFE", "trained", "analytic"
        ),
    }
    for (i, r) in results.iter().enumerate() {
        match analytic {
            None => println!(
                "{:<22} {:<44} {:>4} {:>11.4e} {:>11.4e} {:>6.3}",
                r.sampler,
                r.label,
                r.model_calls,
                r.error,
                r.reference_error,
                r.error / r.reference_error
            ),
            Some(a) => println!(
                "{:<22} {:<44} {:>4} {:>11.4e} {:>11.4e}",
                r.sampler, r.label, r.model_calls, r.error, a[i].error
            ),
        }
    }
}

/// A sampler of the oracle checks' configurations, for `n` steps.
fn sampler_for(
    check: &Value,
    steps: usize,
) -> Result<Box<dyn firebox::diffusion::sampler::Sampler<2>>, String> {
    let mut spec = check.clone();
    spec["num_inference_steps"] = json!(steps);
    let key = check["sampler"].as_str().unwrap_or_default();
    build_diffusers(key, &spec)?.ok_or(format!("`{key}` is not a diffusers-family sampler"))
}

/// The configurations drawn in the pictures: the first check of each distinct label.
fn distinct_checks(oracle: &Value) -> Vec<Value> {
    let mut seen = Vec::new();
    let mut out = Vec::new();
    for check in oracle["checks"].as_array().into_iter().flatten() {
        let id = format!("{} {}", check["sampler"], check["label"]);
        if !seen.contains(&id) {
            seen.push(id);
            out.push(check.clone());
        }
    }
    out
}

fn draw_mixture(
    cli: &Cli,
    device: &Device,
    data: &Data,
    model: &DenoiserMlp,
) -> Result<(), String> {
    let n = 1000;
    let mut rng = SplitMix64::new(cli.seed + 1);
    let truth = mixture_samples(data, &mut rng, n);
    let x_t = Tensor::<2>::from_data(
        TensorData::new(standard_normals(&mut rng, 2 * n), [n, 2]),
        device,
    );
    let check = json!({
        "sampler": "dpmsolver_multistep",
        "scheduler_config": {"beta_schedule": "scaled_linear", "beta_start": 0.00085,
            "beta_end": 0.012, "num_train_timesteps": 1000, "algorithm_type": "dpmsolver++",
            "solver_order": 2},
    });
    let generated = match sampler_for(&check, 20) {
        Ok(mut sampler) => {
            let net = |x: Tensor<2>, t: f64| model.predict(x, t);
            let out = sample(sampler.as_mut(), &net, x_t, &mut SeededNoise::new(0));
            out.into_data()
                .try_into_vec_as::<f32>()
                .map_err(|e| format!("{e:?}"))?
        }
        Err(e) => {
            println!("(picture skipped: {e})");
            return Ok(());
        }
    };
    let path = cli.out.join("mixture.svg");
    std::fs::create_dir_all(&cli.out).map_err(|e| format!("{}: {e}", cli.out.display()))?;
    let root = SVGBackend::new(&path, (640, 640)).into_drawing_area();
    let draw = || -> Result<(), Box<dyn std::error::Error + '_>> {
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "2-D mixture: data (grey) vs DPM-Solver++(2M), 20 steps, trained denoiser (blue)",
                ("sans-serif", 14),
            )
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(30)
            .build_cartesian_2d(-6f32..6f32, -6f32..6f32)?;
        chart.configure_mesh().draw()?;
        chart.draw_series(
            truth
                .chunks(2)
                .map(|p| Circle::new((p[0], p[1]), 2, RGBColor(160, 160, 160).filled())),
        )?;
        chart.draw_series(
            generated
                .chunks(2)
                .map(|p| Circle::new((p[0], p[1]), 2, BLUE.mix(0.6).filled())),
        )?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| format!("drawing {}: {e}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}

fn draw_digits(
    cli: &Cli,
    device: &Device,
    oracle: &Value,
    model: &DenoiserMlp,
) -> Result<(), String> {
    let per_row = 8;
    let mut rng = SplitMix64::new(cli.seed + 2);
    let noise = standard_normals(&mut rng, per_row * 64);
    let net = |x: Tensor<2>, t: f64| model.predict(x, t);
    let mut rows: Vec<(String, Vec<f32>)> = Vec::new();
    // The oracle's deterministic configurations, then the stochastic diffusers samplers.
    let sd = json!({"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
        "num_train_timesteps": 1000, "timestep_spacing": "trailing"});
    let mut extra = Vec::new();
    for (key, label, more) in [
        (
            "ddpm",
            "stochastic (fixed_small)",
            json!({"clip_sample": false}),
        ),
        (
            "ddim",
            "eta = 1 (stochastic)",
            json!({"set_alpha_to_one": true}),
        ),
        ("euler_ancestral", "stochastic", json!({})),
        (
            "dpmsolver_multistep",
            "sde-dpmsolver++ 2M",
            json!({"algorithm_type": "sde-dpmsolver++"}),
        ),
        ("deis", "order 2", json!({})),
    ] {
        let mut config = sd.clone();
        for (k, v) in more.as_object().into_iter().flatten() {
            config[k] = v.clone();
        }
        let mut check = json!({"sampler": key, "label": label, "scheduler_config": config});
        if label.starts_with("eta") {
            check["step_kwargs"] = json!({"eta": 1.0});
        }
        extra.push(check);
    }
    for check in distinct_checks(oracle).into_iter().chain(extra) {
        let key = check["sampler"].as_str().unwrap_or_default().to_string();
        let steps = match key.as_str() {
            "heun" => 5, // 9 model calls
            "pndm" => 9, // 10 model calls
            _ => 10,
        };
        let mut sampler = match sampler_for(&check, steps) {
            Ok(s) => s,
            Err(e) => {
                println!("  {key}: skipped ({e})");
                continue;
            }
        };
        let x_t = Tensor::<2>::from_data(TensorData::new(noise.clone(), [per_row, 64]), device)
            .mul_scalar(sampler.init_noise_sigma());
        let out = sample(sampler.as_mut(), &net, x_t, &mut SeededNoise::new(11));
        let values = out
            .into_data()
            .try_into_vec_as::<f32>()
            .map_err(|e| format!("{e:?}"))?;
        rows.push((format!("{key} {}", check["label"]), values));
    }
    // Research samplers on the same noise: GHVB (order 1.8) and BDIA-DDIM (γ = 1).
    {
        use firebox::diffusion::bdia::BdiaDdim;
        use firebox::diffusion::grid::{Spacing, solver_timesteps};
        use firebox::diffusion::momentum::{MomentumConfig, MomentumKind, MomentumSampler};
        use firebox::diffusion::prediction::Prediction;
        let table = discrete_schedule(&oracle["schedule_config"])?;
        let x_t = Tensor::<2>::from_data(TensorData::new(noise.clone(), [per_row, 64]), device);
        let mut ghvb = MomentumSampler::<2>::new(
            MomentumConfig {
                schedule: table.clone(),
                prediction: Prediction::Epsilon,
                kind: MomentumKind::Ghvb,
                order: 1.8,
            },
            solver_timesteps(1000, 1000, 10, Spacing::Linspace, 0),
        );
        let out = sample(&mut ghvb, &net, x_t.clone(), &mut SeededNoise::new(0));
        rows.push((
            "ghvb order 1.8".into(),
            out.into_data()
                .try_into_vec_as::<f32>()
                .map_err(|e| format!("{e:?}"))?,
        ));
        let mut bdia = BdiaDdim::<2>::new(table, Prediction::Epsilon, 10, 1.0);
        let out = sample(&mut bdia, &net, x_t, &mut SeededNoise::new(0));
        rows.push((
            "bdia_ddim gamma 1".into(),
            out.into_data()
                .try_into_vec_as::<f32>()
                .map_err(|e| format!("{e:?}"))?,
        ));
    }
    // Grid: 8x8 digits with a 1-pixel border, one row per sampler.
    let (cell, scale) = (9usize, 4usize);
    let (w, h) = (per_row * cell + 1, rows.len() * cell + 1);
    let mut pixels = vec![0u8; w * h * scale * scale];
    for (r, (_, values)) in rows.iter().enumerate() {
        for c in 0..per_row {
            for y in 0..8 {
                for x in 0..8 {
                    let v = values[c * 64 + y * 8 + x];
                    let grey = (((v + 1.0) * 0.5).clamp(0.0, 1.0) * 255.0) as u8;
                    let (px, py) = (c * cell + 1 + x, r * cell + 1 + y);
                    for dy in 0..scale {
                        for dx in 0..scale {
                            pixels[(py * scale + dy) * w * scale + px * scale + dx] = grey;
                        }
                    }
                }
            }
        }
    }
    let path = cli.out.join("digits.png");
    png::write_grey_png(&path, w * scale, h * scale, &pixels)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    println!("wrote {} (rows, top to bottom):", path.display());
    for (label, _) in &rows {
        println!("  {label}");
    }
    Ok(())
}
