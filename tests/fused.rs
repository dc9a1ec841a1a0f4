//! The fused AdamW step (issue #8's first slice) against Burn's `AdamW`, on every backend: the
//! same parameters and moments within f32 rounding, the fused path taken on flex and the
//! fallback elsewhere, copy-on-write for shared parameters, the fallback for non-contiguous
//! tensors, and a whole-module step through `ModuleOptimizer`. One test function, because the
//! path counters are process-wide.

mod common;

use burn::optim::{AdamWConfig, AdamWState, GradientsParams, Optimizer};
use burn::tensor::{Device, Distribution, Tensor};
use firebox::models::{Mlp, MlpConfig};
use firebox::optim::fused::{FusedAdamWConfig, path_counts};

fn max_rel(a: Tensor<2>, b: Tensor<2>) -> f32 {
    let scale = b.clone().abs().max().into_scalar::<f32>().max(1e-12);
    (a - b).abs().max().into_scalar::<f32>() / scale
}

/// `steps` steps of `optim` on a fixed parameter and gradient stream.
fn run<O>(optim: &O, device: &Device, steps: usize, transpose: bool) -> (Tensor<2>, AdamWState<2>)
where
    O: Optimizer<State<2> = AdamWState<2>>,
{
    device.seed(7);
    let mut p = Tensor::<2>::random([33, 257], Distribution::Normal(0.0, 1.0), device);
    if transpose {
        p = p.transpose();
    }
    let mut state = None;
    for _ in 0..steps {
        let g = Tensor::<2>::random(p.shape(), Distribution::Normal(0.0, 0.1), device);
        let (next, s) = optim.step(1e-2, p, g, state);
        p = next;
        state = s;
    }
    (p, state.expect("a state"))
}

#[test]
fn fused_adamw_matches_burns_adamw_on_every_backend() {
    let fused = FusedAdamWConfig::new().with_weight_decay(0.01).build();
    let burn = AdamWConfig::new().with_weight_decay(0.01).build();
    for (backend, device) in common::devices() {
        for transpose in [false, true] {
            let before = path_counts();
            let (p_fused, s_fused) = run(&fused, &device, 5, transpose);
            let after = path_counts();
            let (p_burn, s_burn) = run(&burn, &device, 5, transpose);
            let err = max_rel(p_fused, p_burn);
            let err_m = max_rel(s_fused.momentum.moment_1, s_burn.momentum.moment_1);
            let err_v = max_rel(s_fused.momentum.moment_2, s_burn.momentum.moment_2);
            assert!(
                err < 1e-6 && err_m < 1e-6 && err_v < 1e-6,
                "{backend} transpose={transpose}: rel errors {err}, {err_m}, {err_v}"
            );
            assert_eq!(s_fused.momentum.time, 5);
            let fused_ran = after.0 - before.0;
            let fallback_ran = after.1 - before.1;
            // On flex a transposed (non-contiguous) parameter takes the fallback once; Burn's step
            // returns a contiguous tensor, so the next four steps are fused.
            let expected = match (backend.as_str(), transpose) {
                ("flex", false) => (5, 0),
                ("flex", true) => (4, 1),
                _ => (0, 5),
            };
            assert_eq!(
                (fused_ran, fallback_ran),
                expected,
                "{backend} transpose={transpose}: paths (fused, fallback)"
            );
            common::report(&format!(
                "fused AdamW {backend} transpose={transpose}: max rel error {err:.1e}, fused steps {fused_ran}"
            ));
        }
    }

    // Copy-on-write: a parameter also held elsewhere is not changed behind its holder's back.
    let device = Device::flex();
    device.seed(3);
    let p = Tensor::<2>::random([64, 64], Distribution::Default, &device);
    let kept = p.clone();
    let kept_values = kept.clone().into_data();
    let g = Tensor::<2>::ones([64, 64], &device);
    let (stepped, _) = fused.step(0.1, p, g, None);
    assert_eq!(kept.into_data(), kept_values);
    assert!(max_rel(stepped, Tensor::from_data(kept_values, &device)) > 1e-3);

    // A whole module through ModuleOptimizer on an autodiff device: same model as Burn's AdamW.
    let device = Device::flex().autodiff();
    device.seed(5);
    let model: Mlp = MlpConfig::new(64).init(&device);
    let x = Tensor::<2>::random([16, 64], Distribution::Default, &device);
    let mut a = model.clone();
    let mut b = model;
    let mut opt_a = FusedAdamWConfig::new().init();
    let mut opt_b = AdamWConfig::new().init();
    let before = path_counts();
    for _ in 0..3 {
        let ga =
            GradientsParams::from_grads(a.forward_flat(x.clone()).square().mean().backward(), &a);
        a = opt_a.step(1e-2, a, ga);
        let gb =
            GradientsParams::from_grads(b.forward_flat(x.clone()).square().mean().backward(), &b);
        b = opt_b.step(1e-2, b, gb);
    }
    let fused_ran = path_counts().0 - before.0;
    assert_eq!(
        fused_ran,
        3 * 4,
        "every parameter of the MLP (2 weights, 2 biases) fused"
    );
    let err = max_rel(a.hidden.weight.val(), b.hidden.weight.val());
    assert!(err < 1e-6, "module step: rel error {err}");
}
