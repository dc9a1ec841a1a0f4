//! Invariants of the firebox optimizers, on every available backend: first-step closed forms,
//! constant-gradient behaviour, save → load → step resume, parameter groups, restart, global-norm
//! clipping, and errors for bad input.

mod common;

use std::fmt::Display;

use burn::module::{Module, ParamGroup};
use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdaGradConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Tensor, TensorData};
use firebox::optim::check::find_non_finite_grad;
use firebox::optim::checkpoint::{load, save_atomic};
use firebox::optim::clip::{GlobalNormClip, clip_grad_norm, grad_norm};
use firebox::optim::restart::restart;
use firebox::optim::{AdaBeliefConfig, AdaGradInitConfig, AdanConfig, DiffGradConfig};

const GRAD: [f32; 6] = [0.5, -2.0, 1e-3, 3.0, -0.25, 0.0];

/// A 3→2 linear layer with fixed weights, its parameters on the autodiff flavour of `device`
/// (ModuleOptimizer steps tracked parameters, as in training).
fn layer(device: &Device) -> Linear {
    let device = &device.clone().autodiff();
    let linear = LinearConfig::new(3, 2).init(device);
    let weight = Tensor::<2>::from_data(
        TensorData::new(vec![0.1f32, -0.2, 0.3, 0.4, -0.5, 0.6], [3, 2]),
        device,
    );
    let bias = Tensor::<1>::from_data(TensorData::new(vec![0.05f32, -0.05], [2]), device);
    Linear {
        weight: linear.weight.map(|_| weight),
        bias: linear.bias.map(|b| b.map(|_| bias)),
    }
}

/// Gradients with the weight's gradient `scale * GRAD` and the bias's `scale * [1, -1]`.
fn grads(model: &Linear, scale: f32) -> GradientsParams {
    // Gradients are plain tensors of the inner backend, as `backward` returns them.
    let device = model.weight.val().device().inner();
    let mut grads = GradientsParams::new();
    let w: Vec<f32> = GRAD.iter().map(|g| g * scale).collect();
    grads.register(
        model.weight.id,
        Tensor::<2>::from_data(TensorData::new(w, [3, 2]), &device),
    );
    let bias = model.bias.as_ref().unwrap();
    grads.register(
        bias.id,
        Tensor::<1>::from_data(TensorData::new(vec![scale, -scale], [2]), &device),
    );
    grads
}

fn weight(model: &Linear) -> Vec<f32> {
    model.weight.val().into_data().try_into_vec_as().unwrap()
}

fn weight_grad(model: &Linear, grads: &GradientsParams) -> Vec<f32> {
    let grad = grads.get::<2>(model.weight.id).expect("a weight gradient");
    grad.into_data().try_into_vec_as().unwrap()
}

fn all_values(model: &Linear) -> Vec<f32> {
    let mut v = weight(model);
    v.extend(
        model
            .bias
            .as_ref()
            .unwrap()
            .val()
            .into_data()
            .try_into_vec_as::<f32>()
            .unwrap(),
    );
    v
}

fn assert_close(got: &[f32], expected: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), expected.len(), "{what}: length");
    for (i, (&g, &e)) in got.iter().zip(expected).enumerate() {
        // f32 arithmetic on values of order 1: a few ulps.
        assert!(
            (g as f64 - e).abs() <= tol * (1.0 + e.abs()),
            "{what}[{i}]: got {g}, expected {e}"
        );
    }
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

#[test]
fn first_step_closed_forms() {
    let lr = 0.01;
    let w0 = [0.1f64, -0.2, 0.3, 0.4, -0.5, 0.6];
    for (backend, device) in common::devices() {
        // diffGrad, t = 1, g_prev = 0: m = (1−β1)g, v = (1−β2)g², so
        // Δθ = −lr·σ(|g|)·g/(|g| + eps/sqrt(1−β2)).
        let eps = 1e-8;
        let mut optim = DiffGradConfig::new().init();
        let model = layer(&device);
        let model = optim.step(lr, model.clone(), grads(&model, 1.0));
        let expected: Vec<f64> = w0
            .iter()
            .zip(GRAD)
            .map(|(w, g)| {
                let g = g as f64;
                w - lr * sigmoid(g.abs()) * g / (g.abs() + eps / (1.0f64 - 0.999).sqrt())
            })
            .collect();
        assert_close(
            &weight(&model),
            &expected,
            1e-6,
            &format!("diffGrad {backend}"),
        );

        // AdaBelief (rectified): ρ_1 = 1 < 5, so step 1 is momentum SGD: Δθ = −lr·g.
        let mut optim = AdaBeliefConfig::new().init();
        let model = layer(&device);
        let model = optim.step(lr, model.clone(), grads(&model, 1.0));
        let expected: Vec<f64> = w0
            .iter()
            .zip(GRAD)
            .map(|(w, g)| w - lr * g as f64)
            .collect();
        assert_close(
            &weight(&model),
            &expected,
            1e-6,
            &format!("AdaBelief {backend}"),
        );

        // AdaBelief without rectification: s_1 = (1−β2)(β1 g)² + eps, Δθ = −lr·g/(sqrt(s_1/(1−β2)) + eps).
        let mut optim = AdaBeliefConfig::new()
            .with_rectify(false)
            .with_epsilon(1e-8)
            .init();
        let model = layer(&device);
        let model = optim.step(lr, model.clone(), grads(&model, 1.0));
        let expected: Vec<f64> = w0
            .iter()
            .zip(GRAD)
            .map(|(w, g)| {
                let g = g as f64;
                let s1 = 0.001 * (0.9 * g).powi(2) + 1e-8;
                w - lr * g / ((s1 / 0.001).sqrt() + 1e-8)
            })
            .collect();
        assert_close(
            &weight(&model),
            &expected,
            1e-5,
            &format!("AdaBelief/no-rectify {backend}"),
        );

        // AdaGrad with accumulator a: Δθ = −lr·g/(sqrt(a + g²) + eps).
        let mut optim = AdaGradInitConfig::new()
            .with_initial_accumulator_value(0.1)
            .init();
        let model = layer(&device);
        let model = optim.step(lr, model.clone(), grads(&model, 1.0));
        let expected: Vec<f64> = w0
            .iter()
            .zip(GRAD)
            .map(|(w, g)| {
                let g = g as f64;
                w - lr * g / ((0.1 + g * g).sqrt() + 1e-10)
            })
            .collect();
        assert_close(
            &weight(&model),
            &expected,
            1e-6,
            &format!("AdaGrad {backend}"),
        );
    }
}

#[test]
fn diffgrad_constant_gradient_moves_at_half_speed() {
    // With a constant gradient the friction is σ(0) = 1/2 from step 2 on, and m_t = (1−β1^t)g,
    // v_t = (1−β2^t)g², so every step is exactly −lr/2 · g/(|g| + eps/sqrt(1−β2^t)).
    let lr = 0.01;
    for (backend, device) in common::devices() {
        let mut optim = DiffGradConfig::new().init();
        let mut model = layer(&device);
        model = optim.step(lr, model.clone(), grads(&model, 1.0));
        for t in 2..=6 {
            let before = weight(&model);
            model = optim.step(lr, model.clone(), grads(&model, 1.0));
            let expected: Vec<f64> = before
                .iter()
                .zip(GRAD)
                .map(|(&w, g)| {
                    let g = g as f64;
                    let eps = 1e-8 / (1.0 - 0.999f64.powi(t)).sqrt();
                    w as f64 - lr * 0.5 * g / (g.abs() + eps)
                })
                .collect();
            assert_close(
                &weight(&model),
                &expected,
                1e-6,
                &format!("{backend} t={t}"),
            );
        }
    }
}

#[test]
fn adabelief_takes_large_steps_when_the_gradient_is_predictable() {
    // The belief (g − m)² of a constant gradient decays like β1^(2t), so AdaBelief's step grows
    // past Adam's (which stays ≈ lr): the paper's "large step for a confident gradient".
    let lr = 1e-3;
    for (backend, device) in common::devices() {
        let mut optim = AdaBeliefConfig::new().with_rectify(false).init();
        let mut model = layer(&device);
        let mut last = 0.0;
        for t in 1..=30 {
            let before = weight(&model)[0];
            model = optim.step(lr, model.clone(), grads(&model, 1.0));
            let step = (before - weight(&model)[0]).abs() as f64;
            if t > 1 {
                assert!(
                    step > last,
                    "{backend}: step {t} = {step} not larger than {last}"
                );
            }
            last = step;
        }
        // Adam's step for a constant gradient stays ≈ lr; AdaBelief's is 2.7·lr by step 30
        // (s_t → 0.00426·g² as t → ∞, so it keeps growing towards ≈ 15·lr).
        assert!(
            last > 2.5 * lr,
            "{backend}: step after 30 iterations only {last}"
        );
    }
}

/// A named constructor of a fresh optimizer.
type MakeOptimizer = (&'static str, fn() -> ModuleOptimizer);

fn stateful_optimizers() -> Vec<MakeOptimizer> {
    vec![
        ("diffgrad", || {
            DiffGradConfig::new().with_weight_decay(0.01).init()
        }),
        ("adabelief", || {
            AdaBeliefConfig::new()
                .with_amsgrad(true)
                .with_rectify(false)
                .init()
        }),
        ("adabelief-rectified", || {
            AdaBeliefConfig::new().with_weight_decay(0.1).init()
        }),
        ("adagrad-init", || {
            AdaGradInitConfig::new()
                .with_initial_accumulator_value(0.1)
                .with_lr_decay(0.01)
                .init()
        }),
        ("adan", || AdanConfig::new().with_weight_decay(0.02).init()),
    ]
}

#[test]
fn save_load_step_resumes_exactly() {
    let lr = 0.01;
    for (backend, device) in common::devices() {
        for (name, make) in stateful_optimizers() {
            let mut optim = make();
            let mut model = layer(&device);
            for (i, scale) in [1.0, 0.3, -0.5, 0.01].into_iter().enumerate() {
                model = optim.step(lr * (1.0 + i as f64), model.clone(), grads(&model, scale));
            }
            // In memory (burnpack bytes) and through an atomic file write.
            let bytes = optim.into_bytes().unwrap();
            let from_bytes = make().from_bytes(bytes).unwrap();
            let path = std::env::temp_dir().join(format!(
                "firebox-resume-{name}-{backend}-{}.bpk",
                std::process::id()
            ));
            save_atomic(&optim, &path).unwrap();
            let from_file = load(make(), &path).unwrap();
            // The loaded state must not depend on the file any more (Burn's lazy `load` would
            // re-read it by path): overwrite it with another checkpoint, then delete it.
            save_atomic(&make(), &path).unwrap();
            std::fs::remove_file(&path).unwrap();

            let expected = all_values(&optim.step(lr, model.clone(), grads(&model, -0.2)));
            for (how, mut restored) in [("bytes", from_bytes), ("file", from_file)] {
                let got = all_values(&restored.step(lr, model.clone(), grads(&model, -0.2)));
                assert_eq!(got, expected, "{name} on {backend}: resume from {how}");
            }
            // A fresh optimizer does not give the same step: the state mattered.
            let fresh = all_values(&make().step(lr, model.clone(), grads(&model, -0.2)));
            assert_ne!(fresh, expected, "{name} on {backend}: state had no effect");
        }
    }
}

#[test]
fn restart_makes_the_next_step_a_first_step() {
    let lr = 0.01;
    for (backend, device) in common::devices() {
        for (name, make) in stateful_optimizers() {
            let mut optim = make();
            let mut model = layer(&device);
            for scale in [1.0, -0.7, 0.2] {
                model = optim.step(lr, model.clone(), grads(&model, scale));
            }
            let restarted = all_values(&restart(optim).step(lr, model.clone(), grads(&model, 0.4)));
            let fresh = all_values(&make().step(lr, model.clone(), grads(&model, 0.4)));
            assert_eq!(restarted, fresh, "{name} on {backend}");
        }
    }
}

#[derive(Module, Debug)]
struct TwoLayers {
    encoder: Linear,
    head: Linear,
}

/// Gradients of a [`TwoLayers`]: the encoder's from [`grads`] with `encoder_scale`, the head's
/// with `head_scale`.
fn two_layer_grads(model: &TwoLayers, encoder_scale: f32, head_scale: f32) -> GradientsParams {
    let mut g = grads(&model.encoder, encoder_scale);
    let h = grads(&model.head, head_scale);
    let head_bias = model.head.bias.as_ref().unwrap().id;
    g.register(
        model.head.weight.id,
        h.get::<2>(model.head.weight.id).unwrap(),
    );
    g.register(head_bias, h.get::<1>(head_bias).unwrap());
    g
}

/// The grouped model's layers equal the layers trained alone, bit for bit.
fn assert_same_layers(model: &TwoLayers, encoder: &Linear, head: &Linear, backend: impl Display) {
    assert_eq!(
        all_values(&model.encoder),
        all_values(encoder),
        "{backend}: encoder"
    );
    assert_eq!(all_values(&model.head), all_values(head), "{backend}: head");
}

#[test]
fn parameter_groups_run_two_optimizers_side_by_side() {
    let lr = 0.01;
    for (backend, device) in common::devices() {
        let model = TwoLayers {
            encoder: layer(&device),
            head: layer(&device),
        };
        let mut grouped = DiffGradConfig::new().init().with_group(
            ParamGroup::from_predicate("head"),
            AdaBeliefConfig::new().build(),
            None,
        );
        let mut alone_diffgrad = DiffGradConfig::new().init();
        let mut alone_adabelief = AdaBeliefConfig::new().init();
        let (mut model, mut encoder, mut head) = (model, layer(&device), layer(&device));
        for scale in [1.0, -0.5, 0.25, 2.0, 0.1, 0.1, 0.1] {
            let g = two_layer_grads(&model, scale, -scale);
            model = grouped.step(lr, model, g);
            encoder = alone_diffgrad.step(lr, encoder.clone(), grads(&encoder, scale));
            head = alone_adabelief.step(lr, head.clone(), grads(&head, -scale));
        }
        assert_same_layers(&model, &encoder, &head, backend);
    }
}

#[test]
fn adagrad_init_equals_burn_adagrad_from_zero() {
    // With a zero initial accumulator the firebox extension is Burn's AdaGrad exactly.
    for (backend, device) in common::devices() {
        let mut burn_optim = AdaGradConfig::new()
            .with_epsilon(1e-10)
            .with_lr_decay(0.05)
            .init();
        let mut ours = AdaGradInitConfig::new().with_lr_decay(0.05).init();
        let (mut a, mut b) = (layer(&device), layer(&device));
        for scale in [1.0, 0.5, -2.0, 0.1] {
            a = burn_optim.step(0.02, a.clone(), grads(&a, scale));
            b = ours.step(0.02, b.clone(), grads(&b, scale));
        }
        let (a, b) = (all_values(&a), all_values(&b));
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() <= 1e-6, "{backend}: {a:?} vs {b:?}");
        }
    }
}

#[test]
fn global_norm_clipping_scales_all_gradients_together() {
    for (backend, device) in common::devices() {
        let model = layer(&device);
        let mut g = grads(&model, 1.0);
        // ‖g‖² = Σ GRAD² + 1 + 1
        let expected_norm = (GRAD.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() + 2.0).sqrt();
        assert!(
            (grad_norm(&model, &g) - expected_norm).abs() < 1e-5,
            "{backend}"
        );

        let norm = clip_grad_norm(&model, &mut g, 1.0);
        assert!(
            (norm - expected_norm).abs() < 1e-5,
            "{backend}: returned norm"
        );
        let clipped = grad_norm(&model, &g);
        assert!(
            (clipped - 1.0).abs() < 1e-5,
            "{backend}: clipped norm {clipped}"
        );
        // Direction kept: each element scaled by the same factor.
        let w = weight_grad(&model, &g);
        let c = 1.0 / (expected_norm + 1e-6);
        for (got, raw) in w.iter().zip(GRAD) {
            assert!(
                (*got as f64 - raw as f64 * c).abs() < 1e-6,
                "{backend}: {got} vs {raw}·{c}"
            );
        }

        // Below the threshold nothing changes.
        let mut small = grads(&model, 1e-3);
        let before = weight_grad(&model, &small);
        GlobalNormClip::new(10.0).apply(&model, &mut small);
        let after = weight_grad(&model, &small);
        assert_eq!(before, after, "{backend}");
    }
}

#[test]
fn invalid_hyperparameters_are_rejected_naming_the_field() {
    let err = AdaBeliefConfig::new()
        .with_beta_2(1.0)
        .try_init()
        .err()
        .unwrap();
    assert_eq!(
        err.to_string(),
        "AdaBelief: invalid `beta_2` = 1e0: must be in [0, 1)"
    );
    let err = DiffGradConfig::new()
        .with_epsilon(0.0)
        .try_init()
        .err()
        .unwrap();
    assert!(err.to_string().contains("`epsilon`"), "{err}");
    let err = DiffGradConfig::new()
        .with_beta_1(-0.1)
        .try_init()
        .err()
        .unwrap();
    assert!(err.to_string().contains("`beta_1`"), "{err}");
    let err = AdaGradInitConfig::new()
        .with_initial_accumulator_value(f32::NAN)
        .try_init()
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("`initial_accumulator_value`"),
        "{err}"
    );
    let err = AdaBeliefConfig::new()
        .with_weight_decay(-1.0)
        .try_init()
        .err()
        .unwrap();
    assert!(err.to_string().contains("`weight_decay`"), "{err}");
}

#[test]
#[should_panic(expected = "diffGrad: invalid `beta_2` = 1.5e0: must be in [0, 1)")]
fn init_panics_with_the_field_name() {
    let _ = DiffGradConfig::new().with_beta_2(1.5).init();
}

#[test]
#[should_panic(expected = "AdaBelief: the learning rate must be finite, got NaN")]
fn non_finite_learning_rate_is_rejected() {
    let device = common::devices().remove(0).1;
    let model = layer(&device);
    let g = grads(&model, 1.0);
    let _ = AdaBeliefConfig::new().init().step(f64::NAN, model, g);
}

#[test]
fn non_finite_gradients_are_traced_to_their_parameter() {
    for (backend, device) in common::devices() {
        let model = TwoLayers {
            encoder: layer(&device),
            head: layer(&device),
        };
        let mut g = GradientsParams::new();
        g.register(
            model.encoder.weight.id,
            Tensor::<2>::from_data(TensorData::new(vec![0.0f32; 6], [3, 2]), &device),
        );
        assert_eq!(find_non_finite_grad(&model, &g), None, "{backend}");
        g.register(
            model.head.weight.id,
            Tensor::<2>::from_data(
                TensorData::new(
                    vec![0.0f32, f32::NAN, 1.0, f32::INFINITY, f32::NAN, 0.0],
                    [3, 2],
                ),
                &device,
            ),
        );
        let bad = find_non_finite_grad(&model, &g).expect("a non-finite gradient");
        assert_eq!(bad.path, "head.weight", "{backend}");
        assert_eq!((bad.nan, bad.inf), (2, 1), "{backend}");
        assert!(
            bad.to_string().contains("`head.weight`: 2 NaN and 1 Inf"),
            "{bad}"
        );
    }
}

#[test]
fn per_group_learning_rates_from_a_module_lr_scheduler() {
    use burn::lr_scheduler::cosine::CosineAnnealingLrSchedulerConfig;
    for (backend, device) in common::devices() {
        // Encoder follows a cosine schedule, the head a constant 1e-3, both under one AdaBelief.
        let mut scheduler = CosineAnnealingLrSchedulerConfig::new(0.02, 5)
            .init()
            .unwrap()
            .with_group(ParamGroup::from_predicate("head"), 1e-3f64);
        let mut optim = AdaBeliefConfig::new().init();
        let (mut alone_encoder, mut alone_head) =
            (AdaBeliefConfig::new().init(), AdaBeliefConfig::new().init());
        let mut model = TwoLayers {
            encoder: layer(&device),
            head: layer(&device),
        };
        let (mut encoder, mut head) = (layer(&device), layer(&device));
        let mut encoder_lrs = Vec::new();
        for scale in [1.0, -0.5, 0.25, 2.0, 0.1, 0.1, 0.1, -1.0] {
            let lrs = scheduler.step();
            let encoder_lr = lrs.lr_from_param(model.encoder.weight.id, Some("encoder.weight"));
            let head_lr = lrs.lr_from_param(model.head.weight.id, Some("head.weight"));
            assert_eq!(head_lr, 1e-3, "{backend}");
            encoder_lrs.push(encoder_lr);

            let g = two_layer_grads(&model, scale, scale);
            model = optim.step(lrs, model, g);
            encoder = alone_encoder.step(encoder_lr, encoder.clone(), grads(&encoder, scale));
            head = alone_head.step(head_lr, head.clone(), grads(&head, scale));
        }
        // The cosine schedule really varied the encoder's learning rate.
        assert!(
            encoder_lrs[0] > 0.019 && encoder_lrs[4] < 0.005,
            "{backend}: {encoder_lrs:?}"
        );
        assert_same_layers(&model, &encoder, &head, backend);
    }
}

#[test]
fn sophia_g_takes_sign_steps_until_the_first_hessian_update() {
    use firebox::optim::sophia::SophiaGConfig;
    // h starts at 0, so |m|/(ρ·bs·h + 1e-15) ≥ 1 for every m ≠ 0: the step is lr·sign(m) and only
    // the zero-gradient coordinate counts as unclipped.
    for (backend, device) in common::devices() {
        let model = layer(&device);
        let before = all_values(&model);
        let mut optim = SophiaGConfig::new().with_weight_decay(0.0).init();
        let g = grads(&model, 1.0);
        let (model, stats) = optim.step(0.01, model.clone(), g, 8.0);
        let signs: Vec<f64> = GRAD
            .iter()
            .map(|&x| if x == 0.0 { 0.0 } else { x.signum() as f64 })
            .chain([1.0, -1.0])
            .collect();
        let expected: Vec<f64> = before
            .iter()
            .zip(&signs)
            .map(|(&w, s)| w as f64 - 0.01 * s)
            .collect();
        assert_close(
            &all_values(&model),
            &expected,
            1e-6,
            &format!("SophiaG {backend}"),
        );
        assert_eq!(
            (stats.unclipped(), stats.total()),
            (Some(1), 8),
            "{backend}"
        );
    }
}

#[test]
fn adagrad_norm_first_step_uses_the_global_norm() {
    use firebox::optim::adagrad_norm::AdaGradNormConfig;
    // b² = b0² + ‖g‖² over every parameter, then θ1 = θ0 − lr·g/(sqrt(b²) + eps).
    let norm_sq = GRAD.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() + 2.0;
    for (backend, device) in common::devices() {
        let model = layer(&device);
        let before = all_values(&model);
        let mut optim = AdaGradNormConfig::new().init();
        let g = grads(&model, 1.0);
        let model = optim.step(0.5, model.clone(), g);
        assert!(
            (optim.accumulator() - (1e-2 + norm_sq)).abs() < 1e-5,
            "{backend}"
        );
        let raw: Vec<f64> = GRAD.iter().map(|&x| x as f64).chain([1.0, -1.0]).collect();
        let den = (1e-2 + norm_sq).sqrt() + 1e-10;
        let expected: Vec<f64> = before
            .iter()
            .zip(&raw)
            .map(|(&w, g)| w as f64 - 0.5 * g / den)
            .collect();
        assert_close(
            &all_values(&model),
            &expected,
            1e-6,
            &format!("AdaGradNorm {backend}"),
        );
    }
}
