//! One optimizer step (issue #8): firebox's fused step against Burn's own optimizer and against
//! firebox's tensor-op path, on one tensor of 1M, 4M and 16M parameters and on the example CNN and
//! char LM (many small tensors, through `ModuleOptimizer`), plus a STREAM-like triad that measures
//! the machine's memory bandwidth. Each step includes a device sync, so lazy backends are timed
//! fully.
//!
//! ```text
//! cargo bench --bench optim_step                       # flex (the fused path)
//! cargo bench --features ndarray --bench optim_step    # flex and ndarray
//! FIREBOX_BENCH_DEVICES=wgpu cargo bench --features wgpu --bench optim_step
//! ```
//!
//! At the end it prints a markdown table from criterion's estimates: ms per step, effective
//! bandwidth (the bytes an ideal single pass reads and writes, divided by the time), its fraction
//! of the triad's bandwidth, and the ratio to Burn's optimizer. `FIREBOX_BENCH_SIZES=1,4` limits
//! the single-tensor sizes (in Mi parameters); `FIREBOX_BENCH_DEVICES=flex,ndarray` picks devices.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::{
    AdaGradConfig, AdamConfig, AdamWConfig, AdanConfig, GradientsParams, ModuleOptimizer,
    Optimizer, SgdConfig,
};
use burn::tensor::{Device, Distribution, Int, Tensor};
use criterion::{BenchmarkId, Criterion, Throughput};
use firebox::device::{Availability, BackendName, probe};
use firebox::models::lm::{CharLm, CharLmConfig};
use firebox::models::{Cnn, CnnConfig};
use firebox::optim::fused::{FusedAdamConfig, FusedAdamWConfig, FusedAdanConfig, with_fallback};
use firebox::optim::{AdaBeliefConfig, AdaGradInitConfig, DiffGradConfig};
use rayon::prelude::*;

/// How a variant runs: Burn's optimizer, firebox's fused step, or firebox's tensor-op path.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Path {
    Burn,
    Fused,
    TensorOps,
}

impl Path {
    fn name(self) -> &'static str {
        match self {
            Path::Burn => "burn",
            Path::Fused => "fused",
            Path::TensorOps => "tensor_ops",
        }
    }
}

/// Bytes one ideal pass moves per parameter: the parameter and K states read and written, the
/// gradient read.
fn bytes_per_param(states: usize) -> u64 {
    4 * (3 + 2 * states as u64)
}

fn sizes() -> Vec<usize> {
    let sizes = std::env::var("FIREBOX_BENCH_SIZES").unwrap_or_else(|_| "1,4,16".into());
    sizes
        .split(',')
        .map(|s| {
            s.trim()
                .parse::<usize>()
                .expect("FIREBOX_BENCH_SIZES: Mi parameters")
                << 20
        })
        .collect()
}

/// One tensor step of `optim`, repeated; the gradient is fixed, the state carried over.
fn bench_tensor<O: Optimizer>(
    c: &mut Criterion,
    (group, id): (&str, BenchmarkId),
    optim: &O,
    path: Path,
    device: &Device,
    n: usize,
    states: usize,
) {
    let mut g = c.benchmark_group(group);
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Bytes(bytes_per_param(states) * n as u64));
    let grad = Tensor::<1>::random([n], Distribution::Normal(0.0, 1e-2), device);
    let mut param = Some(Tensor::<1>::random([n], Distribution::Default, device));
    let mut state = None;
    g.bench_function(id, |b| {
        b.iter(|| {
            let (p, s) = (param.take().unwrap(), state.take());
            let step = || optim.step(1e-3, p, grad.clone(), s);
            let (next, s) = match path {
                Path::TensorOps => with_fallback(step),
                _ => step(),
            };
            device.sync().expect("device sync");
            param = Some(black_box(next));
            state = s;
        })
    });
    g.finish();
}

/// The single-tensor benches of one optimizer: `burn` (when Burn has it), `fused`, `tensor_ops`.
fn bench_optimizer<O: Optimizer, B: Optimizer>(
    c: &mut Criterion,
    backend: BackendName,
    device: &Device,
    name: &str,
    states: usize,
    firebox: &O,
    burn: Option<&B>,
) {
    for n in sizes() {
        let group = format!("optim_step/{backend}/{}M", n >> 20);
        if let Some(burn) = burn {
            let id = BenchmarkId::new(name, Path::Burn.name());
            bench_tensor(c, (&group, id), burn, Path::Burn, device, n, states);
        }
        for path in [Path::Fused, Path::TensorOps] {
            // The drop-ins' tensor-op path is Burn's own step: measured above.
            if burn.is_some() && path == Path::TensorOps && !name.starts_with("adagrad") {
                continue;
            }
            let id = BenchmarkId::new(name, path.name());
            bench_tensor(c, (&group, id), firebox, path, device, n, states);
        }
    }
}

/// Registers, for each parameter of a module, the gradient held in `source` (an `Arc` clone).
struct CloneGrads<'a> {
    source: &'a GradientsParams,
    target: GradientsParams,
}

impl ModuleVisitor for CloneGrads<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.source.get::<D>(param.id) {
            self.target.register(param.id, g);
        }
    }
}

fn clone_grads<M: Module>(model: &M, source: &GradientsParams) -> GradientsParams {
    let mut visitor = CloneGrads {
        source,
        target: GradientsParams::new(),
    };
    model.visit(&mut visitor);
    visitor.target
}

/// A whole-module AdamW step on a model with many tensors, and Burn's plain SGD (one op per
/// tensor) as the floor set by `ModuleOptimizer`'s own per-parameter work.
fn bench_model<M: Module + Clone>(
    c: &mut Criterion,
    backend: BackendName,
    device: &Device,
    name: &str,
    model: M,
    grads: GradientsParams,
) {
    let params = model.num_params();
    let mut g = c.benchmark_group(format!("optim_step/{backend}/{name}"));
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Bytes(bytes_per_param(2) * params as u64));
    type Build = fn() -> ModuleOptimizer;
    let variants: [(&str, Path, Build); 4] = [
        ("adamw", Path::Burn, || AdamWConfig::new().init()),
        ("adamw", Path::Fused, || FusedAdamWConfig::new().init()),
        ("adamw", Path::TensorOps, || FusedAdamWConfig::new().init()),
        ("sgd", Path::Burn, || SgdConfig::new().init()),
    ];
    for (optimizer, path, build) in variants {
        let mut optim = build();
        let mut current = Some(model.clone());
        g.bench_function(BenchmarkId::new(optimizer, path.name()), |b| {
            b.iter(|| {
                let m = current.take().unwrap();
                let step_grads = clone_grads(&m, &grads);
                let next = match path {
                    Path::TensorOps => with_fallback(|| optim.step(1e-3, m, step_grads)),
                    _ => optim.step(1e-3, m, step_grads),
                };
                device.sync().expect("device sync");
                current = Some(black_box(next));
            })
        });
    }
    g.finish();
    eprintln!("optim_step: {name} has {params} parameters");
}

fn cnn(device: &Device) -> (Cnn, GradientsParams) {
    let ad = device.clone().autodiff();
    let model = CnnConfig::new().init(&ad);
    let images = Tensor::<4>::random([64, 1, 8, 8], Distribution::Default, &ad);
    let loss = model.forward(images).square().mean();
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    (model, grads)
}

fn char_lm(device: &Device) -> (CharLm, GradientsParams) {
    let ad = device.clone().autodiff();
    let model = CharLmConfig::new(65, 64).init(&ad);
    let tokens = Tensor::<2, Int>::random([8, 64], Distribution::Uniform(0.0, 65.0), &ad);
    let loss = model.forward(tokens).square().mean();
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    (model, grads)
}

/// A STREAM-like triad, in place (`a = a + s·b`: 2 reads and 1 write per element, 12 bytes, and
/// no write-allocate traffic, like an optimizer step), over 16Mi f32 on rayon's pool with the
/// fused steps' chunk size. Its bandwidth is the reference of the "of triad" column.
fn triad(c: &mut Criterion) {
    let n = 1 << 24;
    let b = vec![2.0f32; n];
    let mut a = vec![1.0f32; n];
    let mut g = c.benchmark_group("optim_step/triad");
    g.sample_size(20)
        .throughput(Throughput::Bytes(12 * n as u64))
        .measurement_time(Duration::from_secs(2));
    g.bench_function("16M", |bench| {
        bench.iter(|| {
            a.par_chunks_mut(1 << 16)
                .zip(b.par_chunks(1 << 16))
                .for_each(|(a, b)| {
                    for (a, b) in a.iter_mut().zip(b) {
                        *a += 1e-3 * b;
                    }
                });
            black_box(&mut a);
        })
    });
    g.finish();
}

fn devices() -> Vec<(BackendName, Device)> {
    let wanted = std::env::var("FIREBOX_BENCH_DEVICES").unwrap_or_else(|_| "flex,ndarray".into());
    let mut out = Vec::new();
    for name in wanted.split(',').map(str::trim) {
        let Some(backend) = BackendName::ALL.into_iter().find(|b| b.as_str() == name) else {
            panic!("FIREBOX_BENCH_DEVICES: unknown backend `{name}`");
        };
        match probe(backend) {
            Availability::Ready(device, adapter) => {
                eprintln!("optim_step: {backend} on {adapter}");
                out.push((backend, device));
            }
            Availability::Unavailable(reason) => eprintln!("optim_step: SKIP {backend}: {reason}"),
        }
    }
    out
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    triad(&mut c);
    let none = None::<&burn::optim::Adam>;
    for (backend, device) in devices() {
        let d = &device;
        let adam = AdamConfig::new().build();
        let adamw = AdamWConfig::new().build();
        let adan = AdanConfig::new().build();
        let adagrad = AdaGradConfig::new().with_epsilon(1e-10).build();
        bench_optimizer(
            &mut c,
            backend,
            d,
            "adam",
            2,
            &FusedAdamConfig::new().build(),
            Some(&adam),
        );
        bench_optimizer(
            &mut c,
            backend,
            d,
            "adamw",
            2,
            &FusedAdamWConfig::new().build(),
            Some(&adamw),
        );
        bench_optimizer(
            &mut c,
            backend,
            d,
            "adan",
            4,
            &FusedAdanConfig::new().build(),
            Some(&adan),
        );
        bench_optimizer(
            &mut c,
            backend,
            d,
            "adagrad",
            1,
            &AdaGradInitConfig::new().build(),
            Some(&adagrad),
        );
        bench_optimizer(
            &mut c,
            backend,
            d,
            "diffgrad",
            3,
            &DiffGradConfig::new().build(),
            none,
        );
        bench_optimizer(
            &mut c,
            backend,
            d,
            "adabelief",
            2,
            &AdaBeliefConfig::new().build(),
            none,
        );
        let (model, grads) = cnn(d);
        bench_model(&mut c, backend, d, "cnn", model, grads);
        let (model, grads) = char_lm(d);
        bench_model(&mut c, backend, d, "char_lm", model, grads);
    }
    c.final_summary();
    print_table();
}

/// The mean time (ns) criterion estimated for one bench, if it ran.
fn mean_ns(dir: &std::path::Path) -> Option<f64> {
    let text = std::fs::read_to_string(dir.join("new/estimates.json")).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    value["mean"]["point_estimate"].as_f64()
}

/// Criterion's output directory (`target/criterion`, or `CARGO_TARGET_DIR/criterion`).
fn criterion_dir() -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    PathBuf::from(target).join("criterion")
}

/// Prints the README's table from criterion's estimates of this run.
fn print_table() {
    let root = criterion_dir();
    let triad_ns = mean_ns(&root.join("optim_step_triad/16M"));
    let triad_gbs = triad_ns.map(|ns| 12.0 * (1u64 << 24) as f64 / ns);
    println!("\n## optim_step summary");
    if let Some(bw) = triad_gbs {
        println!(
            "in-place triad bandwidth: {bw:.1} GB/s (rayon, {} threads)",
            rayon::current_num_threads()
        );
    }
    println!("| backend | size | optimizer | path | ms | GB/s | of triad | vs Burn |");
    println!("|---|---|---|---|---:|---:|---:|---:|");
    let Ok(groups) = std::fs::read_dir(&root) else {
        return;
    };
    let mut groups: Vec<_> = groups.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    groups.sort();
    for group in groups {
        let name = group.file_name().unwrap().to_string_lossy().to_string();
        let Some(rest) = name.strip_prefix("optim_step_") else {
            continue;
        };
        let Some((backend, size)) = rest.split_once('_') else {
            continue;
        };
        let params = size
            .strip_suffix('M')
            .and_then(|m| m.parse::<u64>().ok())
            .map(|m| m << 20);
        let mut optimizers: Vec<_> = std::fs::read_dir(&group)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.is_dir() && p.file_name().is_some_and(|n| n != "report"))
            .collect();
        optimizers.sort();
        for dir in optimizers {
            let optimizer = dir.file_name().unwrap().to_string_lossy().to_string();
            let burn = mean_ns(&dir.join("burn"));
            for path in ["burn", "fused", "tensor_ops"] {
                let Some(ns) = mean_ns(&dir.join(path)) else {
                    continue;
                };
                let bytes = bytes_per_param(states_of(&optimizer)) as f64;
                let gbs = params.map(|p| bytes * p as f64 / ns);
                let fmt_gbs = gbs.map_or("—".into(), |g| format!("{g:.1}"));
                let of_triad = match (gbs, triad_gbs) {
                    (Some(g), Some(t)) => format!("{:.0} %", 100.0 * g / t),
                    _ => "—".into(),
                };
                let ratio = burn.map_or("—".into(), |b| format!("{:.2}x", b / ns));
                println!(
                    "| {backend} | {size} | {optimizer} | {path} | {:.2} | {fmt_gbs} | {of_triad} | {ratio} |",
                    ns / 1e6
                );
            }
        }
    }
}

fn states_of(optimizer: &str) -> usize {
    match optimizer {
        "adan" => 4,
        "diffgrad" => 3,
        "adagrad" => 1,
        "sgd" => 0,
        _ => 2,
    }
}
