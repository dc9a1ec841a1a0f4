//! Inference cost of a quantized `Linear` against the float one, on the same backend.
//!
//! Layer: `Linear(1024, 1024)`, input batch 64 (a prefill-sized matmul) and batch 1 (decode).
//! One measured iteration is a forward pass ending with a read-back, so GPU work is counted:
//!
//! - `float32`: the float layer;
//! - `burn_q8_tensor` / `burn_q4_tensor`: weights stored by `quantize_weights` as Burn-native
//!   quantized tensors (int8 / int4, one scale), executed by Burn's quantized matmul;
//! - `fake_quant_w4_channel`: the QAT model (int4 per-channel weight, fake-quantized at every
//!   forward), i.e. the training-time overhead of quantization-aware training;
//! - `dgq_a8w4_host` (CPU backends only): DGQ's A8W4 format through the crate's INT8 reference
//!   kernel on the host (activations quantized to int8 per call, i32 accumulation).
//!
//! The summary prints each variant's time and its ratio to `float32`.
//!
//! ```text
//! cargo bench --bench quant_linear                      # flex
//! cargo bench --features wgpu --bench quant_linear      # flex + wgpu
//! ```

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Device, Distribution, Tensor};
use criterion::Criterion;
use firebox::device::{Availability, BackendName, probe};
use firebox::quant::dgq::{DgqConfig, dgq_quantize, quantize_activations_int8};
use firebox::quant::native::Stored;
use firebox::quant::{PtqConfig, QatConfig, QuantSpec, Targets, prepare_qat, quantize_weights};

const WIDTH: usize = 1024;

#[derive(Module, Debug)]
struct Layer {
    fc: Linear,
}

fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("float data")
}

fn bench_backend(c: &mut Criterion, backend: BackendName, device: &Device) {
    device.seed(0);
    let float = Layer {
        fc: LinearConfig::new(WIDTH, WIDTH).init(device),
    };
    let targets = Targets::names(["fc"]);
    let quantized = |spec: QuantSpec| {
        let (model, report) =
            quantize_weights(&float, &PtqConfig::new(targets.clone(), spec)).expect("quantize");
        let native = matches!(report.layers[0].stored, Stored::Native(_));
        eprintln!(
            "quant_linear: {backend} {} stored as {}",
            spec.label(),
            report.layers[0].stored.label()
        );
        native.then_some(model)
    };
    let q8 = quantized(QuantSpec::int8());
    let q4 = quantized(QuantSpec::int4());
    let fake = prepare_qat(
        float.clone(),
        &QatConfig {
            targets: targets.clone(),
            spec: QuantSpec::int4().per_channel(1),
            learned_scale: false,
        },
    )
    .expect("qat");
    let host_backend = matches!(backend, BackendName::Flex | BackendName::Ndarray);
    let dgq = host_backend.then(|| {
        let w = host(float.fc.weight.val().transpose());
        let calib = host(Tensor::<2>::random(
            [256, WIDTH],
            Distribution::Default,
            device,
        ));
        let config = DgqConfig {
            group_size: 128,
            w4w8: true,
        };
        dgq_quantize(&w, WIDTH, WIDTH, &calib, 256, &config).expect("dgq")
    });
    for batch in [64usize, 1] {
        let x = Tensor::<2>::random([batch, WIDTH], Distribution::Default, device);
        let x_host = host(x.clone());
        let times = RefCell::new(BTreeMap::<String, Duration>::new());
        let mut group = c.benchmark_group(format!("quant_linear/{backend}/batch{batch}"));
        group.sample_size(10);
        let mut measure = |name: &str, mut f: Box<dyn FnMut() + '_>| {
            let name = name.to_string();
            group.bench_function(name.clone(), |b| {
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    for _ in 0..iters {
                        f();
                    }
                    let elapsed = start.elapsed();
                    let per = elapsed / iters as u32;
                    let mut times = times.borrow_mut();
                    let best = times.entry(name.clone()).or_insert(per);
                    *best = (*best).min(per);
                    elapsed
                })
            });
        };
        measure(
            "float32",
            Box::new(|| {
                let _ = float.fc.forward(x.clone()).into_data();
            }),
        );
        if let Some(m) = &q8 {
            measure(
                "burn_q8_tensor",
                Box::new(|| {
                    let _ = m.fc.forward(x.clone()).into_data();
                }),
            );
        }
        if let Some(m) = &q4 {
            measure(
                "burn_q4_tensor",
                Box::new(|| {
                    let _ = m.fc.forward(x.clone()).into_data();
                }),
            );
        }
        measure(
            "fake_quant_w4_channel",
            Box::new(|| {
                let _ = fake.fc.forward(x.clone()).into_data();
            }),
        );
        if let Some(q) = &dgq {
            measure(
                "dgq_a8w4_host",
                Box::new(|| {
                    let (codes, scale) = quantize_activations_int8(&x_host, 99.9).expect("acts");
                    let _ = q.matmul_a8w4(&codes, scale, batch).expect("kernel");
                }),
            );
        }
        group.finish();
        let times = times.into_inner();
        let Some(base) = times.get("float32").copied() else {
            continue;
        };
        println!("\n{backend}: Linear({WIDTH}, {WIDTH}) forward, batch {batch}");
        println!("| variant | time | vs float32 |");
        println!("|---|---:|---:|");
        for (name, t) in &times {
            println!(
                "| {name} | {:.3} ms | {:.2}x |",
                t.as_secs_f64() * 1e3,
                t.as_secs_f64() / base.as_secs_f64()
            );
        }
    }
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    for backend in [BackendName::Flex, BackendName::Wgpu] {
        match probe(backend) {
            Availability::Ready(device, adapter) => {
                eprintln!("quant_linear: {backend} on {adapter}");
                bench_backend(&mut criterion, backend, &device);
            }
            Availability::Unavailable(reason) => {
                eprintln!("quant_linear: SKIP {backend}: {reason}");
            }
        }
    }
    criterion.final_summary();
}
