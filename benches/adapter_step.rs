//! Forward + backward cost of an adapted model against the base model and full fine-tuning,
//! on the same backend.
//!
//! Model: 8 residual blocks of two `Linear(512, 512)` (tanh between), batch 128, loss = mean of
//! squares. One measured iteration is a forward, a backward and the gradient collection
//! (`GradientsParams::from_grads`), ending with a read-back so GPU work is counted:
//!
//! - `base_frozen`: every parameter frozen (the base model's inference forward + backward to the
//!   input; the floor any adapter pays);
//! - `full_finetune`: every parameter trainable;
//! - `lora_r8`: LoRA rank 8 on every Linear through the weight reparameterization
//!   (`Linear::forward` on `W₀ + s·A·B`);
//! - `lora_r8_activation`: the same adapters through `LoraForward::forward_lora`
//!   (`x·W₀ + s·(x·A)·B`, no weight-sized delta);
//! - `mos_r8_v1`: MoS, materialised rank 8 from equivalent rank 1 (l = 2), shared pools.
//!
//! The summary prints each variant's time and its ratio to full fine-tuning.
//!
//! ```text
//! cargo bench --bench adapter_step                      # flex
//! cargo bench --features wgpu --bench adapter_step      # flex + wgpu
//! ```

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Distribution, Tensor};
use criterion::Criterion;
use firebox::adapters::{LoraConfig, LoraForward, MosConfig, Targets};
use firebox::device::{Availability, BackendName, probe};

const WIDTH: usize = 512;
const BLOCKS: usize = 8;
const BATCH: usize = 128;

#[derive(Module, Debug)]
struct Block {
    fc1: Linear,
    fc2: Linear,
}

#[derive(Module, Debug)]
struct Stack {
    blocks: Vec<Block>,
}

impl Stack {
    fn new(device: &Device) -> Self {
        Self {
            blocks: (0..BLOCKS)
                .map(|_| Block {
                    fc1: LinearConfig::new(WIDTH, WIDTH).init(device),
                    fc2: LinearConfig::new(WIDTH, WIDTH).init(device),
                })
                .collect(),
        }
    }

    fn forward(&self, mut x: Tensor<2>, activation_space: bool) -> Tensor<2> {
        for b in &self.blocks {
            let h = if activation_space {
                b.fc2.forward_lora(b.fc1.forward_lora(x.clone()).tanh())
            } else {
                b.fc2.forward(b.fc1.forward(x.clone()).tanh())
            };
            x = x + h;
        }
        x
    }
}

fn step<M: Module>(model: &M, loss: Tensor<1>) {
    let grads = GradientsParams::from_grads(loss.backward(), model);
    assert!(!grads.is_empty());
}

fn bench_backend(c: &mut Criterion, backend: BackendName, device: &Device) {
    let device = device.clone().autodiff();
    let base = Stack::new(&device);
    // Materialise the lazily initialised weights: Burn's clones share a pending initialisation,
    // and freezing a clone of a never-run model would freeze `base` too.
    let _ = base.forward(Tensor::zeros([1, WIDTH], &device), false);
    let x = Tensor::<2>::random([BATCH, WIDTH], Distribution::Default, &device).require_grad();
    let targets = Targets::names(["fc1", "fc2"]);
    let frozen = base.clone().set_require_grad(false);
    let lora = LoraConfig::new(8, 16.0, targets.clone())
        .attach(base.clone())
        .unwrap();
    let mos = MosConfig::new(8, 1, 0, 2, 16.0, targets)
        .attach(base.clone())
        .unwrap();
    let times = RefCell::new(BTreeMap::<&str, Duration>::new());
    let mut group = c.benchmark_group(format!("adapter_step/{backend}"));
    group.sample_size(10);
    let mut measure = |name: &'static str, mut f: Box<dyn FnMut() + '_>| {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    f();
                }
                let elapsed = start.elapsed();
                let mut times = times.borrow_mut();
                let per = elapsed / iters as u32;
                let best = times.entry(name).or_insert(per);
                *best = (*best).min(per);
                elapsed
            })
        });
    };
    measure(
        "base_frozen",
        Box::new(|| {
            let loss = frozen.forward(x.clone(), false).powi_scalar(2).mean();
            let grads = loss.backward();
            let _ = x.grad(&grads).map(|g| g.sum().into_scalar::<f32>());
        }),
    );
    measure(
        "full_finetune",
        Box::new(|| step(&base, base.forward(x.clone(), false).powi_scalar(2).mean())),
    );
    measure(
        "lora_r8",
        Box::new(|| step(&lora, lora.forward(x.clone(), false).powi_scalar(2).mean())),
    );
    measure(
        "lora_r8_activation",
        Box::new(|| step(&lora, lora.forward(x.clone(), true).powi_scalar(2).mean())),
    );
    measure(
        "mos_r8_v1",
        Box::new(|| {
            step(
                &mos,
                mos.adapted()
                    .forward(x.clone(), false)
                    .powi_scalar(2)
                    .mean(),
            )
        }),
    );
    group.finish();
    let times = times.into_inner();
    let Some(full) = times.get("full_finetune").copied() else {
        return;
    };
    println!("\n{backend}: forward + backward, {BLOCKS}x2 Linear({WIDTH}, {WIDTH}), batch {BATCH}");
    println!("| variant | time | vs full fine-tuning |");
    println!("|---|---:|---:|");
    for (name, t) in &times {
        println!(
            "| {name} | {:.2} ms | {:.2}x |",
            t.as_secs_f64() * 1e3,
            t.as_secs_f64() / full.as_secs_f64()
        );
    }
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    for backend in [BackendName::Flex, BackendName::Wgpu] {
        match probe(backend) {
            Availability::Ready(device, adapter) => {
                eprintln!("adapter_step: {backend} on {adapter}");
                bench_backend(&mut criterion, backend, &device);
            }
            Availability::Unavailable(reason) => {
                eprintln!("adapter_step: SKIP {backend}: {reason}");
            }
        }
    }
    criterion.final_summary();
}
