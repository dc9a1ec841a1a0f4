//! Per-step cost of the samplers against one call of the example denoiser, on the same backend.
//!
//! The denoiser is the digits [`DenoiserMlp`] of `examples/sample.rs` (64-dim input, 3 residual
//! layers of 256, Fourier time features) on a batch of 64. For each sampler one measured iteration
//! is a full run of about 20 model calls in which the model output is a fixed precomputed tensor,
//! so only the sampler's own work (coefficients on the host, tensor arithmetic on the device, its
//! history) is timed; `denoiser` is 20 calls of the network alone. Every diffusers-family sampler
//! and the research ones (GHVB, PLMS-HB, BDIA-DDIM, DPM-Solver-v3 order 3 + corrector, MRS) run. Both end with one read-back, so GPU work
//! is counted. The summary prints each sampler's time per step and its ratio to one denoiser call
//! (issue #4's goal: < 5%).
//!
//! ```text
//! cargo bench --bench sampler_step                      # flex
//! cargo bench --features wgpu --bench sampler_step      # flex + wgpu
//! ```

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use burn::tensor::{Device, Distribution, Tensor};
use criterion::Criterion;
use firebox::device::{Availability, BackendName, probe};
use firebox::diffusion::sampler::Sampler;
use firebox::fixtures::sampler::build_diffusers;
use firebox::models::{DenoiserMlp, DenoiserMlpConfig};
use serde_json::{Value, json};

const CALLS: usize = 20;
const BATCH: usize = 64;

/// (name, sampler key, scheduler_config, inference steps giving 20 model calls).
fn configs() -> Vec<(&'static str, &'static str, Value, usize)> {
    let sd = json!({"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
        "num_train_timesteps": 1000});
    let with = |extra: Value| {
        let mut config = sd.clone();
        for (k, v) in extra.as_object().unwrap() {
            config[k] = v.clone();
        }
        config
    };
    vec![
        (
            "ddim",
            "ddim",
            with(json!({"timestep_spacing": "trailing"})),
            20,
        ),
        ("ddpm", "ddpm", sd.clone(), 20),
        ("plms", "pndm", with(json!({"skip_prk_steps": true})), 19),
        ("euler", "euler", sd.clone(), 20),
        ("euler_ancestral", "euler_ancestral", sd.clone(), 20),
        ("heun", "heun", sd.clone(), 10),
        ("dpm++2m", "dpmsolver_multistep", sd.clone(), 20),
        (
            "dpm++3m",
            "dpmsolver_multistep",
            with(json!({"solver_order": 3})),
            20,
        ),
        (
            "sde-dpm++2m",
            "dpmsolver_multistep",
            with(json!({"algorithm_type": "sde-dpmsolver++"})),
            20,
        ),
        (
            "dpm++3s",
            "dpmsolver_singlestep",
            with(json!({"solver_order": 3})),
            20,
        ),
        ("unipc_bh2", "unipc", sd.clone(), 20),
        ("deis", "deis", sd.clone(), 20),
        (
            "flow_match_euler",
            "flow_match_euler",
            json!({"num_train_timesteps": 1000, "shift": 3.0}),
            20,
        ),
    ]
}

/// A sampler, or why it could not be built.
type Built = Result<Box<dyn Sampler<2>>, String>;

/// Every sampler at about 20 model calls: the diffusers family through the fixture builders, the
/// research samplers directly.
fn samplers(device: &Device) -> Vec<(String, Built)> {
    use firebox::diffusion::bdia::BdiaDdim;
    use firebox::diffusion::dpm_solver_v3::{DpmSolverV3, Ems, V3Grid, V3Options, ems_lambdas};
    use firebox::diffusion::grid::{Spacing, solver_timesteps};
    use firebox::diffusion::momentum::{MomentumConfig, MomentumKind, MomentumSampler};
    use firebox::diffusion::mrs::{
        IrSde, MrSampler, MrsParameterization, MrsSolver, ThetaSchedule,
    };
    use firebox::diffusion::prediction::Prediction;
    use firebox::diffusion::schedule::{BetaSchedule, DiscreteSchedule, betas};
    use firebox::diffusion::vp_continuous::NoiseScheduleVp;
    let mut out: Vec<(String, Built)> = configs()
        .into_iter()
        .map(|(name, key, config, steps)| (name.to_string(), build(key, &config, steps)))
        .collect();
    let table = DiscreteSchedule::from_betas(
        &betas(BetaSchedule::ScaledLinear, 0.00085, 0.012, 1000),
        false,
    );
    let grid = solver_timesteps(1000, 1000, CALLS, Spacing::Linspace, 0);
    for (name, kind) in [
        ("ghvb", MomentumKind::Ghvb),
        ("plms_hb", MomentumKind::PlmsHeavyBall),
    ] {
        let config = MomentumConfig {
            schedule: table.clone(),
            prediction: Prediction::Epsilon,
            kind,
            order: 1.8,
        };
        out.push((
            name.into(),
            Ok(Box::new(MomentumSampler::<2>::new(config, grid.clone()))),
        ));
    }
    out.push((
        "bdia_ddim".into(),
        Ok(Box::new(BdiaDdim::<2>::new(
            table.clone(),
            Prediction::Epsilon,
            CALLS,
            1.0,
        ))),
    ));
    let vp = NoiseScheduleVp::discrete(&table.alphas_cumprod);
    let ems = Ems::degenerated(ems_lambdas(&vp, 1.0, vp.t_end(), 500), 64);
    let v3_grid = V3Grid {
        steps: CALLS,
        t_start: 1.0,
        t_end: vp.t_end(),
        skip_type: "logSNR".into(),
    };
    out.push((
        "dpm_solver_v3".into(),
        Ok(Box::new(DpmSolverV3::<2>::new(
            vp,
            &ems,
            &v3_grid,
            V3Options::default(),
            false,
        ))),
    ));
    let sde = IrSde::new(50.0, 100, ThetaSchedule::Cosine, 0.005);
    let cond = Tensor::<2>::zeros([BATCH, 64], device);
    out.push((
        "mrs".into(),
        Ok(Box::new(MrSampler::<2>::new(
            &sde,
            CALLS,
            2,
            MrsParameterization::Data,
            MrsSolver::Ode,
            -5.0,
            cond,
        ))),
    ));
    out
}

fn build(key: &str, config: &Value, steps: usize) -> Result<Box<dyn Sampler<2>>, String> {
    let spec = json!({"sampler": key, "scheduler_config": config, "num_inference_steps": steps});
    build_diffusers(key, &spec)?.ok_or(format!("{key} has no diffusers builder"))
}

fn sync(x: Tensor<2>) {
    let _ = x.sum().into_scalar::<f32>();
}

/// One full run with a fixed model output; returns the final sample.
fn run(sampler: &mut dyn Sampler<2>, x: Tensor<2>, out: &Tensor<2>, z: &Tensor<2>) -> Tensor<2> {
    let mut x = x;
    while sampler.step_index() < sampler.timesteps().len() {
        let _ = sampler.scale_model_input(x.clone());
        let noise = sampler.needs_noise().then(|| z.clone());
        x = sampler.step(out.clone(), x, noise).prev_sample;
    }
    sampler.reset();
    x
}

fn bench_backend(c: &mut Criterion, backend: BackendName, device: &Device) {
    let model: DenoiserMlp = DenoiserMlpConfig::new(64).with_hidden(256).init(device);
    let x = Tensor::<2>::random([BATCH, 64], Distribution::Normal(0.0, 1.0), device);
    let out = Tensor::<2>::random([BATCH, 64], Distribution::Normal(0.0, 1.0), device);
    let z = Tensor::<2>::random([BATCH, 64], Distribution::Normal(0.0, 1.0), device);
    let mut group = c.benchmark_group(format!("sampler_step/{backend}"));
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(300));
    group.measurement_time(Duration::from_secs(2));
    let times = RefCell::new(BTreeMap::<String, Duration>::new());
    let calls_of = RefCell::new(BTreeMap::<String, usize>::new());
    let record = |name: &str, elapsed: Duration| {
        times
            .borrow_mut()
            .entry(name.to_string())
            .and_modify(|d| *d = (*d).min(elapsed))
            .or_insert(elapsed);
    };
    group.bench_function("denoiser", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                let mut y = x.clone();
                for k in 0..CALLS {
                    y = model.predict(y, 999.0 - 50.0 * k as f64);
                }
                sync(y);
            }
            let elapsed = start.elapsed();
            record("denoiser", elapsed / iters as u32);
            elapsed
        })
    });
    for (name, built) in samplers(device) {
        let mut sampler = match built {
            Ok(s) => s,
            Err(e) => {
                eprintln!("sampler_step: SKIP {name}: {e}");
                continue;
            }
        };
        let calls = sampler.timesteps().len();
        calls_of.borrow_mut().insert(name.clone(), calls);
        group.bench_function(name.as_str(), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    sync(run(sampler.as_mut(), x.clone(), &out, &z));
                }
                let elapsed = start.elapsed();
                record(&name, elapsed / iters as u32);
                elapsed
            })
        });
    }
    group.finish();
    let times = times.into_inner();
    let Some(&denoiser) = times.get("denoiser") else {
        return;
    };
    println!(
        "\n{backend}: sampler work per model call vs one denoiser call (batch {BATCH}, dim 64)"
    );
    println!(
        "| sampler | per step | ratio to denoiser call ({:.3} ms) |",
        denoiser.as_secs_f64() * 1e3 / CALLS as f64
    );
    println!("|---|---|---|");
    let per_call = denoiser.as_secs_f64() / CALLS as f64;
    let calls_of = calls_of.into_inner();
    for (name, _) in samplers(device) {
        if let (Some(t), Some(&calls)) = (times.get(name.as_str()), calls_of.get(name.as_str())) {
            let step = t.as_secs_f64() / calls as f64;
            println!(
                "| {name} | {:.1} µs | {:.1}% |",
                step * 1e6,
                100.0 * step / per_call
            );
        }
    }
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    for backend in [BackendName::Flex, BackendName::Wgpu] {
        match probe(backend) {
            Availability::Ready(device, adapter) => {
                eprintln!("sampler_step: {backend} on {adapter}");
                bench_backend(&mut criterion, backend, &device);
            }
            Availability::Unavailable(reason) => {
                eprintln!("sampler_step: SKIP {backend}: {reason}");
            }
        }
    }
    criterion.final_summary();
}
