//! One AdamW step on one tensor of 1M and 4M parameters: firebox's fused AdamW against Burn's
//! `AdamW` on the same backend (issue #8's first slice; the other optimizers and the multi-tensor,
//! bandwidth and PyTorch comparisons of issue #8 are still to come).
//!
//! ```text
//! cargo bench --bench fused_step
//! ```

use std::time::Duration;

use burn::optim::{AdamWConfig, AdamWState, Optimizer};
use burn::tensor::{Device, Distribution, Tensor};
use criterion::Criterion;
use firebox::optim::fused::FusedAdamWConfig;

fn bench<O>(c: &mut Criterion, name: &str, optim: &O, device: &Device, n: usize)
where
    O: Optimizer<State<1> = AdamWState<1>>,
{
    let g = Tensor::<1>::random([n], Distribution::Normal(0.0, 0.1), device);
    let mut p = Some(Tensor::<1>::random([n], Distribution::Default, device));
    let mut state: Option<AdamWState<1>> = None;
    c.bench_function(&format!("fused_step/flex/{}M/{name}", n >> 20), |b| {
        b.iter(|| {
            let (next, s) = optim.step(1e-3, p.take().expect("param"), g.clone(), state.take());
            // Flex executes eagerly; the sync makes the measurement valid for lazy backends too.
            device.sync().expect("device sync");
            p = Some(next);
            state = s;
        })
    });
}

fn main() {
    let mut criterion = Criterion::default()
        .configure_from_args()
        .sample_size(20)
        .measurement_time(Duration::from_secs(3));
    let device = Device::flex();
    let fused = FusedAdamWConfig::new().build();
    let burn = AdamWConfig::new().build();
    for n in [1 << 20, 1 << 22] {
        bench(&mut criterion, "burn_adamw", &burn, &device, n);
        bench(&mut criterion, "fused_adamw", &fused, &device, n);
    }
    criterion.final_summary();
}
