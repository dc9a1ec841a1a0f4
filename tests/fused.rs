//! Fused optimizer steps (issue #8), on every backend:
//! - every fused optimizer against its own tensor-op path (`with_fallback`) on random data, within
//!   f32 rounding, with the path counters showing the fused step ran: the host loop on flex and
//!   ndarray, the CubeCL kernel on wgpu (every configuration has one), for a small tensor and one
//!   large enough to be split across threads;
//! - the drop-ins against Burn's own `Adam`, `AdamW` and `Adan`, and firebox's AdaGrad against
//!   Burn's `AdaGrad`;
//! - copy-on-write for shared parameters, the fallback for non-contiguous tensors, and a whole
//!   module through `ModuleOptimizer` on an autodiff device.
//!
//! The path counters are per thread, so the tests can run in parallel.

mod common;

use burn::optim::decay::WeightDecayConfig;
use burn::optim::{AdaGradConfig, AdamConfig, AdamWConfig, AdanConfig, GradientsParams, Optimizer};
use burn::tensor::{Device, Tensor};
use firebox::device::BackendName;
use firebox::models::{Mlp, MlpConfig};
use firebox::optim::fused::{
    FusedAdamConfig, FusedAdamWConfig, FusedAdanConfig, PathCounts, path_counts, with_fallback,
};
use firebox::optim::{AdaBeliefConfig, AdaGradInitConfig, DiffGradConfig};

const STEPS: usize = 6;

fn max_rel(a: Tensor<2>, b: Tensor<2>) -> f32 {
    let scale = b.clone().abs().max().into_scalar::<f32>().max(1e-12);
    (a - b).abs().max().into_scalar::<f32>() / scale
}

/// Deterministic pseudo-normal data (sum of 4 uniforms, centred and scaled), generated on the host
/// so that tests running in parallel do not interleave draws from the device RNG.
fn normal(shape: [usize; 2], seed: u64, std: f32, device: &Device) -> Tensor<2> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut uniform = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 40) as f32 / (1u64 << 24) as f32
    };
    let values: Vec<f32> = (0..shape[0] * shape[1])
        .map(|_| ((0..4).map(|_| uniform()).sum::<f32>() - 2.0) * std * 1.7)
        .collect();
    Tensor::from_data(burn::tensor::TensorData::new(values, shape), device)
}

/// `STEPS` steps of `optim` from a seeded parameter and gradient stream; the final parameter.
fn run<O: Optimizer>(
    optim: &O,
    device: &Device,
    shape: [usize; 2],
    transpose: bool,
    lr: f64,
) -> Tensor<2> {
    let mut p = normal(shape, 7, 1.0, device);
    if transpose {
        p = p.transpose();
    }
    let mut state = None;
    for step in 0..STEPS {
        let [rows, cols] = p.dims();
        let g = normal([rows, cols], 100 + step as u64, 0.1, device);
        let (next, s) = optim.step(lr, p, g, state);
        p = next;
        state = s;
    }
    p
}

/// Whether this backend runs the fused host loop (raw CPU buffers).
fn fuses(backend: BackendName) -> bool {
    matches!(backend, BackendName::Flex | BackendName::Ndarray)
}

/// Whether this backend runs the fused CubeCL kernels (the CubeCL backends of this build).
fn fuses_on_device(backend: BackendName) -> bool {
    matches!(
        backend,
        BackendName::Wgpu | BackendName::Vulkan | BackendName::Metal | BackendName::Cuda
    )
}

/// Runs `optim` on both paths and on a reference; checks agreement and the paths taken.
fn check<O: Optimizer, R: Optimizer>(name: &str, optim: &O, reference: Option<&R>, lr: f64) {
    for (backend, device) in common::devices() {
        // 7·129 elements (one chunk) and 300·450 = 135000 (split over threads).
        for shape in [[67, 129], [300, 450]] {
            let before = path_counts();
            let fused = run(optim, &device, shape, false, lr);
            let ran = path_counts() - before;
            let fallback = with_fallback(|| run(optim, &device, shape, false, lr));
            let fallback_ran = path_counts() - before - ran;
            let expected = if fuses(backend) || fuses_on_device(backend) {
                PathCounts {
                    fused: STEPS,
                    fallback: 0,
                    copied: 0,
                }
            } else {
                PathCounts {
                    fused: 0,
                    fallback: STEPS,
                    copied: 0,
                }
            };
            assert_eq!(ran, expected, "{name} on {backend} {shape:?}: paths");
            assert_eq!(
                fallback_ran,
                PathCounts {
                    fused: 0,
                    fallback: STEPS,
                    copied: 0,
                },
                "{name} on {backend}: with_fallback must force the tensor-op path"
            );
            let err = max_rel(fused.clone(), fallback);
            assert!(
                err <= 2e-6,
                "{name} on {backend} {shape:?}: fused vs tensor-op path, rel error {err:e}"
            );
            if let Some(reference) = reference {
                let expected = run(reference, &device, shape, false, lr);
                let err_ref = max_rel(fused, expected);
                assert!(
                    err_ref <= 2e-6,
                    "{name} on {backend} {shape:?}: vs the reference, rel error {err_ref:e}"
                );
            }
            common::report(&format!(
                "[firebox tests] fused {name} {backend} {shape:?}: rel error to the tensor-op path {err:.1e}"
            ));
        }
    }
}

/// A stand-in type for `check`'s reference when there is none.
type NoReference = burn::optim::Adam;

#[test]
fn adam_and_adamw_fused_match_burns() {
    let wd = || Some(WeightDecayConfig::new(0.01));
    for amsgrad in [false, true] {
        check(
            &format!("Adam amsgrad={amsgrad}"),
            &FusedAdamConfig::new()
                .with_amsgrad(amsgrad)
                .with_weight_decay(wd())
                .build(),
            Some(
                &AdamConfig::new()
                    .with_amsgrad(amsgrad)
                    .with_weight_decay(wd())
                    .build(),
            ),
            1e-2,
        );
        for cautious in [false, true] {
            check(
                &format!("AdamW amsgrad={amsgrad} cautious={cautious}"),
                &FusedAdamWConfig::new()
                    .with_weight_decay(0.05)
                    .with_amsgrad(amsgrad)
                    .with_cautious_weight_decay(cautious)
                    .build(),
                Some(
                    &AdamWConfig::new()
                        .with_weight_decay(0.05)
                        .with_amsgrad(amsgrad)
                        .with_cautious_weight_decay(cautious)
                        .build(),
                ),
                1e-2,
            );
        }
    }
}

#[test]
fn adan_fused_matches_burns() {
    for (wd, no_prox) in [(0.0, false), (0.02, false), (0.02, true)] {
        check(
            &format!("Adan wd={wd} no_prox={no_prox}"),
            &FusedAdanConfig::new()
                .with_weight_decay(wd)
                .with_no_prox(no_prox)
                .build(),
            Some(
                &AdanConfig::new()
                    .with_weight_decay(wd)
                    .with_no_prox(no_prox)
                    .build(),
            ),
            1e-2,
        );
    }
}

#[test]
fn firebox_optimizers_fused_match_their_tensor_op_path() {
    for wd in [0.0, 0.01] {
        check::<_, NoReference>(
            &format!("diffGrad wd={wd}"),
            &DiffGradConfig::new().with_weight_decay(wd).build(),
            None,
            1e-2,
        );
    }
    let adabelief = [
        AdaBeliefConfig::new(),
        AdaBeliefConfig::new()
            .with_weight_decay(0.01)
            .with_weight_decouple(false),
        AdaBeliefConfig::new()
            .with_weight_decay(0.1)
            .with_fixed_decay(true)
            .with_amsgrad(true),
        AdaBeliefConfig::new()
            .with_rectify(false)
            .with_amsgrad(true),
        AdaBeliefConfig::new().with_degenerated_to_sgd(false),
    ];
    for (i, config) in adabelief.iter().enumerate() {
        check::<_, NoReference>(&format!("AdaBelief #{i}"), &config.build(), None, 1e-2);
    }
    check::<_, NoReference>(
        "AdaGrad (initial accumulator, L2, lr decay)",
        &AdaGradInitConfig::new()
            .with_initial_accumulator_value(0.1)
            .with_weight_decay(0.01)
            .with_lr_decay(0.01)
            .build(),
        None,
        5e-2,
    );
    // With the accumulator starting at 0, firebox's AdaGrad is Burn's.
    check(
        "AdaGrad = Burn's AdaGrad",
        &AdaGradInitConfig::new().with_epsilon(1e-5).build(),
        Some(&AdaGradConfig::new().with_epsilon(1e-5).build()),
        5e-2,
    );
}

#[test]
fn non_contiguous_tensors_take_the_fallback_on_the_host() {
    let optim = FusedAdamWConfig::new().build();
    let burn = AdamWConfig::new().build();
    for (backend, device) in common::devices() {
        let before = path_counts();
        let fused = run(&optim, &device, [33, 257], true, 1e-2);
        let ran = path_counts() - before;
        // On the host the transposed parameter goes to the fallback on the first step. Flex's
        // tensor-op step returns a contiguous tensor, so its later steps are fused; ndarray's
        // keeps the transposed layout, so every step falls back. The device kernel makes the
        // tensor contiguous first, so every step is fused there.
        let expected = if backend == BackendName::Flex {
            (STEPS - 1, 1)
        } else if fuses_on_device(backend) {
            (STEPS, 0)
        } else {
            (0, STEPS)
        };
        assert_eq!((ran.fused, ran.fallback), expected, "{backend}: paths");
        let err = max_rel(fused, run(&burn, &device, [33, 257], true, 1e-2));
        assert!(err <= 2e-6, "{backend}: transposed, rel error {err:e}");
    }
}

#[test]
fn a_shared_parameter_is_copied_not_changed() {
    type FirstStep = Box<dyn Fn(Tensor<2>, Tensor<2>) -> Tensor<2>>;
    let optims: [(&str, FirstStep); 2] = [
        (
            "AdamW",
            Box::new(|p, g| FusedAdamWConfig::new().build().step(0.1, p, g, None).0),
        ),
        (
            "diffGrad",
            Box::new(|p, g| DiffGradConfig::new().build().step(0.1, p, g, None).0),
        ),
    ];
    for (backend, device) in common::devices() {
        for (name, step) in &optims {
            let p = normal([64, 64], 3, 1.0, &device);
            let kept = p.clone();
            let kept_values = kept.clone().into_data();
            let g = Tensor::<2>::ones([64, 64], &device);
            let before = path_counts();
            let stepped = step(p, g);
            let ran = path_counts() - before;
            let fused = fuses(backend) || fuses_on_device(backend);
            assert_eq!(ran.fused, usize::from(fused), "{name} {backend}");
            // Only the shared parameter is copied (the states are new); the device kernel copies
            // it too (checked below by the other holder's values) but does not count copies.
            assert_eq!(ran.copied, usize::from(fuses(backend)), "{name} {backend}");
            assert_eq!(
                kept.into_data(),
                kept_values,
                "{name} on {backend}: the other holder's tensor changed"
            );
            assert!(max_rel(stepped, Tensor::from_data(kept_values, &device)) > 1e-3);
        }
    }
}

#[test]
fn module_optimizer_steps_fused_on_an_autodiff_device() {
    for (backend, device) in common::devices() {
        let device = device.autodiff();
        let model: Mlp = MlpConfig::new(64).init(&device);
        let x = normal([16, 64], 11, 1.0, &device);
        let mut a = model.clone();
        let mut b = model;
        let mut opt_a = FusedAdamWConfig::new().init();
        let mut opt_b = AdamWConfig::new().init();
        // Both optimizers get the same gradient values: one backward pass of `b` per step, copied
        // through host data into a second `GradientsParams` (the parameter ids are shared with
        // the clone `a`). Two backward passes are not bit-reproducible on wgpu, whose autotune
        // may pick a different matmul kernel for the second; and Adam's m/√v amplifies such
        // last-bit differences on a near-zero gradient (1.1e-6 and 2.1e-6 deviations seen on
        // CI's llvmpipe), which says nothing about the step.
        let grads = |model: &Mlp| {
            let loss = model.forward_flat(x.clone()).square().mean();
            let grads = GradientsParams::from_grads(loss.backward(), model);
            let mut copy = GradientsParams::new();
            for layer in [&model.hidden, &model.output] {
                let weight = grads.get::<2>(layer.weight.id).expect("weight gradient");
                let inner = weight.device();
                copy.register(
                    layer.weight.id,
                    Tensor::<2>::from_data(weight.into_data(), &inner),
                );
                let bias = layer.bias.as_ref().expect("bias");
                let g = grads.get::<1>(bias.id).expect("bias gradient");
                copy.register(bias.id, Tensor::<1>::from_data(g.into_data(), &inner));
            }
            (grads, copy)
        };
        let before = path_counts();
        for _ in 0..3 {
            let (ga, gb) = grads(&b);
            a = opt_a.step(1e-2, a, ga);
            b = opt_b.step(1e-2, b, gb);
        }
        let ran = path_counts() - before;
        // 2 weights and 2 biases per step.
        let expected = if fuses(backend) || fuses_on_device(backend) {
            3 * 4
        } else {
            0
        };
        assert_eq!(ran.fused, expected, "{backend}: fused parameter steps");
        // `a` starts as a clone of `b`: its 4 parameters are copied on the first step only;
        // after that every buffer is owned by the optimizer step alone.
        let expected = if fuses(backend) { 4 } else { 0 };
        assert_eq!(ran.copied, expected, "{backend}: copied buffers");
        let err = max_rel(a.hidden.weight.val(), b.hidden.weight.val());
        assert!(err <= 1e-6, "{backend}: module step, rel error {err:e}");
        common::report(&format!(
            "[firebox tests] fused AdamW module step = Burn's AdamW {backend}: rel error {err:.1e}, {ran:?}"
        ));
    }
}

/// A deterministic gradient for every parameter of `model` (host data, shape of the parameter).
fn model_grads(model: &burn::nn::Linear, seed: u64, std: f32) -> GradientsParams {
    let device = model.weight.val().device().without_autodiff();
    let [rows, cols] = model.weight.dims();
    let mut grads = GradientsParams::new();
    grads.register(model.weight.id, normal([rows, cols], seed, std, &device));
    grads
}

#[test]
fn sophia_fused_matches_its_tensor_op_path() {
    use burn::nn::LinearConfig;
    use firebox::optim::sophia::{SophiaGConfig, SophiaHConfig};

    for (backend, device) in common::devices() {
        let model = LinearConfig::new(300, 450)
            .with_bias(false)
            .init(&device.clone().autodiff());
        // `fallback`: with the fused path turned off. Returns the weights and unclipped counts.
        let run_g = |fallback: bool| {
            let mut optim = SophiaGConfig::new()
                .with_weight_decay(0.1)
                .with_rho(0.04)
                .init();
            let mut m = model.clone();
            let mut unclipped = Vec::new();
            for step in 0..4u64 {
                let grads = model_grads(&m, 10 + step, 0.1);
                let go = || optim.step(1e-2, m, grads, 32.0);
                let (next, stats) = if fallback { with_fallback(go) } else { go() };
                m = next;
                unclipped.push(stats.unclipped().expect("counted"));
                // A Hessian estimate after every step (the sampled-label gradient's square).
                optim.update_hessian(&m, &model_grads(&m, 50 + step, 0.3));
            }
            (m.weight.val().inner(), unclipped)
        };
        let run_h = |fallback: bool| {
            let mut optim = SophiaHConfig::new()
                .with_weight_decay(0.1)
                .with_update_interval(1)
                .init();
            let mut m = model.clone();
            let mut unclipped = Vec::new();
            for step in 0..4u64 {
                let grads = model_grads(&m, 10 + step, 0.1);
                let hessian = model_grads(&m, 70 + step, 0.5);
                let go = || optim.step(1e-2, m, grads, Some(&hessian));
                let (next, stats) = if fallback { with_fallback(go) } else { go() };
                m = next;
                unclipped.push(stats.unclipped().expect("counted"));
            }
            (m.weight.val().inner(), unclipped)
        };
        for (name, run) in [
            (
                "Sophia-G",
                &run_g as &dyn Fn(bool) -> (Tensor<2>, Vec<usize>),
            ),
            ("Sophia-H", &run_h),
        ] {
            let before = path_counts();
            let (fused, fused_unclipped) = run(false);
            let ran = path_counts() - before;
            let (tensor_ops, tensor_unclipped) = run(true);
            // The first step (zero state) runs as tensor ops; the next three are fused (the host
            // loop on CPU, the kernel on wgpu, which counts from the new state).
            let expected = if fuses(backend) || fuses_on_device(backend) {
                3
            } else {
                0
            };
            assert_eq!(ran.fused, expected, "{name} on {backend}: fused steps");
            assert_eq!(
                fused_unclipped, tensor_unclipped,
                "{name} on {backend}: unclipped coordinates per step"
            );
            assert!(
                fused_unclipped[1..].iter().any(|&u| u > 0 && u < 300 * 450),
                "{name} on {backend}: the test must exercise both clipped and unclipped \
                 coordinates, got {fused_unclipped:?}"
            );
            let err = max_rel(fused, tensor_ops);
            assert!(err <= 2e-6, "{name} on {backend}: rel error {err:e}");
            common::report(&format!(
                "[firebox tests] fused {name} {backend}: rel error {err:.1e}, unclipped {fused_unclipped:?}"
            ));
        }
    }
}

/// Runs `run(model)` (4 steps of a module-level optimizer on a 300×450 `Linear`) on
/// both paths on every backend: the same weights within f32 rounding, and `fused_steps` fused
/// tensor steps on the CPU backends and on the CubeCL ones (none elsewhere).
fn check_module(name: &str, fused_steps: usize, run: impl Fn(&burn::nn::Linear) -> Tensor<2>) {
    use burn::nn::LinearConfig;

    for (backend, device) in common::devices() {
        let model = LinearConfig::new(300, 450)
            .with_bias(false)
            .init(&device.clone().autodiff());
        let before = path_counts();
        let fused = run(&model);
        let ran = path_counts() - before;
        let expected = if fuses(backend) || fuses_on_device(backend) {
            fused_steps
        } else {
            0
        };
        assert_eq!(ran.fused, expected, "{name} on {backend}: fused steps");
        let err = max_rel(fused, with_fallback(|| run(&model)));
        assert!(err <= 2e-6, "{name} on {backend}: rel error {err:e}");
    }
}

#[test]
fn adahessian_fused_matches_its_tensor_op_path() {
    use firebox::optim::adahessian::AdaHessianConfig;

    for (power, wd) in [(1.0, 0.0), (1.0, 0.01), (0.5, 0.01)] {
        // The first step (no state) and a power other than 1 run as tensor ops.
        let fused_steps = if power == 1.0 { 3 } else { 0 };
        check_module(
            &format!("AdaHessian power {power} wd {wd}"),
            fused_steps,
            |model| {
                let mut optim = AdaHessianConfig::new()
                    .with_hessian_power(power)
                    .with_weight_decay(wd)
                    .init();
                let mut m = model.clone();
                for step in 0..4u64 {
                    let grads = model_grads(&m, 10 + step, 0.1);
                    let hessian = model_grads(&m, 70 + step, 0.5);
                    m = optim.step(0.15, m, grads, Some(&hessian));
                }
                m.weight.val().inner()
            },
        );
    }
}

#[test]
fn adagrad_norm_fused_matches_its_tensor_op_path() {
    use firebox::optim::adagrad_norm::AdaGradNormConfig;

    for (momentum, wd) in [(0.0, 0.0), (0.9, 0.01)] {
        check_module(&format!("AdaGrad-Norm momentum {momentum}"), 4, |model| {
            let mut optim = AdaGradNormConfig::new()
                .with_momentum(momentum)
                .with_weight_decay(wd)
                .init();
            let mut m = model.clone();
            for step in 0..4u64 {
                m = optim.step(0.1, m.clone(), model_grads(&m, 10 + step, 0.1));
            }
            m.weight.val().inner()
        });
    }
}

/// Per-row AdaGrad-Norm's parameter kinds, visited in this order: a matrix `w`, a vector `b`
/// (coupled to `w`'s rows when they divide), a convolution kernel `k` and a 3-D `t` whose first
/// and last dimensions equal `k`'s rows (the pooled term broadcast along the last axis).
#[derive(burn::module::Module, Debug)]
struct RowNet {
    w: burn::module::Param<Tensor<2>>,
    b: burn::module::Param<Tensor<1>>,
    k: burn::module::Param<Tensor<4>>,
    t: burn::module::Param<Tensor<3>>,
    /// A one-row matrix: under `Axis1` its `den` is `[1, 40]` over the `[1, 40]` view, per column.
    v: burn::module::Param<Tensor<2>>,
}

/// A parameter of `shape` (on `device`'s autodiff device) from the test's host RNG.
fn random_param<const D: usize>(
    shape: [usize; D],
    seed: u64,
    device: &Device,
) -> burn::module::Param<Tensor<D>> {
    let numel = shape.iter().product();
    let value = normal([1, numel], seed, 1.0, &device.clone().autodiff()).reshape(shape);
    burn::module::Param::initialized(burn::module::ParamId::new(), value)
}

/// A gradient of `param`'s shape from the test's host RNG (on the device without autodiff).
fn register_grad<const D: usize>(
    grads: &mut GradientsParams,
    param: &burn::module::Param<Tensor<D>>,
    seed: u64,
) {
    let device = param.val().device().without_autodiff();
    let shape = param.dims();
    let numel = shape.iter().product();
    grads.register(
        param.id,
        normal([1, numel], seed, 0.1, &device).reshape(shape),
    );
}

/// The bits of every value of `t`.
fn bits<const D: usize>(t: Tensor<D>) -> Vec<u32> {
    t.into_data()
        .try_to_vec::<f32>()
        .expect("f32")
        .into_iter()
        .map(f32::to_bits)
        .collect()
}

/// Runs `run` on both paths on every backend: bit for bit the same values, `fused_steps` fused
/// tensor steps on the CPU backends and on the CubeCL ones (none elsewhere, where every step
/// falls back).
fn check_bitwise(name: &str, fused_steps: usize, run: impl Fn(&Device) -> Vec<Vec<u32>>) {
    for (backend, device) in common::devices() {
        let before = path_counts();
        let fused = run(&device);
        let ran = path_counts() - before;
        let tensor_ops = with_fallback(|| run(&device));
        let fallback_ran = path_counts() - before - ran;
        let expected = if fuses(backend) || fuses_on_device(backend) {
            (fused_steps, 0)
        } else {
            (0, fused_steps)
        };
        assert_eq!((ran.fused, ran.fallback), expected, "{name} on {backend}");
        assert_eq!(ran.copied, 0, "{name} on {backend}: copied buffers");
        assert_eq!(
            (fallback_ran.fused, fallback_ran.fallback),
            (0, fused_steps),
            "{name} on {backend}: with_fallback must force the tensor-op path"
        );
        for (i, (a, b)) in fused.iter().zip(&tensor_ops).enumerate() {
            let differ = a.iter().zip(b).filter(|(x, y)| x != y).count();
            assert_eq!(
                differ, 0,
                "{name} on {backend}: tensor {i}, {differ} values differ from the tensor-op path"
            );
        }
        common::report(&format!(
            "[firebox tests] fused {name} {backend}: bit-identical to the tensor-op path, {:?}",
            ran
        ));
    }
}

#[test]
fn per_row_adagrad_norm_fused_is_bit_identical_to_its_tensor_op_path() {
    use firebox::optim::adagrad_norm::{AdaGradNormConfig, Granularity, MatrixRows};

    const ROW_STEPS: usize = 4;
    for rows in [MatrixRows::Axis0, MatrixRows::Axis1] {
        for (momentum, wd, lr_decay) in [(0.0, 0.0, 0.0), (0.9, 0.01, 0.1)] {
            let name = format!("per-row AdaGrad-Norm {rows:?} momentum {momentum} wd {wd}");
            // Every parameter, every step: the matrix and the kernel with the broadcast
            // accumulator, the vector and the 3-D tensor per element.
            check_bitwise(&name, 5 * ROW_STEPS, |device| {
                let mut optim = AdaGradNormConfig::new()
                    .with_granularity(Granularity::PerRow)
                    .with_matrix_rows(rows)
                    .with_momentum(momentum)
                    .with_weight_decay(wd)
                    .with_lr_decay(lr_decay)
                    .init();
                // 300·450 and 16·8·40·40 elements: split across threads.
                let mut m = RowNet {
                    w: random_param([300, 450], 1, device),
                    b: random_param([450], 2, device),
                    k: random_param([16, 8, 40, 40], 3, device),
                    t: random_param([16, 5, 16], 4, device),
                    v: random_param([1, 40], 5, device),
                };
                for step in 0..ROW_STEPS as u64 {
                    let mut grads = GradientsParams::new();
                    register_grad(&mut grads, &m.w, 10 + step);
                    register_grad(&mut grads, &m.b, 20 + step);
                    register_grad(&mut grads, &m.k, 30 + step);
                    register_grad(&mut grads, &m.t, 40 + step);
                    register_grad(&mut grads, &m.v, 50 + step);
                    m = optim.step(0.05, m, grads);
                }
                vec![
                    bits(m.w.val()),
                    bits(m.b.val()),
                    bits(m.k.val()),
                    bits(m.t.val()),
                    bits(m.v.val()),
                ]
            });
        }
    }
}

#[test]
fn mfac_fused_is_bit_identical_to_its_tensor_op_path() {
    use burn::nn::LinearConfig;
    use firebox::optim::mfac::MfacConfig;

    // 6 steps through a window of 4: the ring buffer wraps and the inverse is refactored.
    const MFAC_STEPS: usize = 6;
    for (momentum, wd) in [(0.0, 0.0), (0.9, 0.01)] {
        // Per step: the direction, θ −= lr·x for the weight and the bias, and with weight decay
        // g + wd·θ for both.
        let per_step = 3 + if wd > 0.0 { 2 } else { 0 };
        check_bitwise(
            &format!("M-FAC momentum {momentum} wd {wd}"),
            per_step * MFAC_STEPS,
            |device| {
                let mut optim = MfacConfig::new()
                    .with_ngrads(4)
                    .with_damp(0.1)
                    .with_momentum(momentum)
                    .with_weight_decay(wd)
                    .init();
                // Host-generated values: the same on both paths.
                let mut m = LinearConfig::new(300, 450).init(&device.clone().autodiff());
                m.weight = random_param([300, 450], 1, device);
                m.bias = Some(random_param([450], 2, device));
                for step in 0..MFAC_STEPS as u64 {
                    let mut grads = GradientsParams::new();
                    register_grad(&mut grads, &m.weight, 10 + step);
                    register_grad(&mut grads, m.bias.as_ref().expect("bias"), 20 + step);
                    m = optim.step(0.05, m, grads);
                }
                vec![bits(m.weight.val()), bits(m.bias.expect("bias").val())]
            },
        );
    }
}
