//! One optimizer step on 1M and 4M parameters, for every optimizer in the registry (Burn's Adam,
//! AdamW, SGD, AdaGrad, Adan and firebox's diffGrad, AdaBelief), on flex and on wgpu when an adapter
//! exists. Each step includes a device sync, so GPU timings are not just kernel launches.
//!
//! ```text
//! cargo bench --bench optim_step                      # flex
//! cargo bench --features wgpu --bench optim_step      # flex + wgpu
//! ```
//! Ratios to Burn's Adam on the same backend are in README.md.

use std::hint::black_box;

use burn::nn::{Linear, LinearConfig};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Distribution, Tensor};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use firebox::device::{Availability, BackendName, probe};
use firebox::registry::{build_optimizer, optimizer_names};

/// Square weight matrices: 1024² ≈ 1.05M and 2048² ≈ 4.19M parameters.
const SIDES: [usize; 2] = [1024, 2048];

fn grads_for(model: &Linear, grad: &Tensor<2>) -> GradientsParams {
    let mut grads = GradientsParams::new();
    grads.register(model.weight.id, grad.clone());
    grads
}

fn bench_backend(c: &mut Criterion, backend: BackendName, device: Device) {
    let mut group = c.benchmark_group(format!("optim_step/{backend}"));
    group.sample_size(10);
    group.warm_up_time(std::time::Duration::from_millis(500));
    group.measurement_time(std::time::Duration::from_secs(2));
    for side in SIDES {
        let params = side * side;
        let grad = Tensor::<2>::random([side, side], Distribution::Normal(0.0, 1e-2), &device);
        for name in optimizer_names() {
            let (mut optim, lr) = build_optimizer(name).expect("registry name");
            // Parameters on the autodiff device as in training; the gradient is a plain tensor.
            let mut model = Some(
                LinearConfig::new(side, side)
                    .with_bias(false)
                    .init(&device.clone().autodiff()),
            );
            group.bench_function(BenchmarkId::new(name, params), |b| {
                b.iter(|| {
                    let current = model.take().unwrap();
                    let grads = grads_for(&current, &grad);
                    let next = optim.step(lr, current, grads);
                    device.sync().expect("device sync");
                    model = Some(black_box(next));
                })
            });
        }
    }
    group.finish();
}

fn optim_step(c: &mut Criterion) {
    for backend in [BackendName::Flex, BackendName::Wgpu] {
        match probe(backend) {
            Availability::Ready(device, adapter) => {
                eprintln!("optim_step: {backend} on {adapter}");
                bench_backend(c, backend, device);
            }
            Availability::Unavailable(reason) => eprintln!("optim_step: SKIP {backend}: {reason}"),
        }
    }
}

criterion_group!(benches, optim_step);
criterion_main!(benches);
