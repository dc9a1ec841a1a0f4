//! Whole-module optimizers: M-FAC against the dense Woodbury oracle, and save/resume of every
//! module-level optimizer's state through `ModuleState`, on every available backend.

mod common;

use burn::nn::{Linear, LinearConfig};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor, TensorData};
use firebox::optim::adahessian::AdaHessianConfig;
use firebox::optim::mfac::MfacConfig;
use firebox::optim::record::ModuleState;
use firebox::optim::sophia::{SophiaGConfig, SophiaHConfig};

const INPUTS: usize = 4;
const OUTPUTS: usize = 3;

fn linear(device: &Device) -> Linear {
    LinearConfig::new(INPUTS, OUTPUTS).init(&device.clone().autodiff())
}

/// All parameter values in visit order (weight, then bias), in f64.
fn values(model: &Linear) -> Vec<f64> {
    let mut out: Vec<f64> = Vec::new();
    let mut push = |data: TensorData| {
        out.extend(
            data.try_into_vec_as::<f32>()
                .unwrap()
                .into_iter()
                .map(f64::from),
        )
    };
    push(model.weight.val().into_data());
    push(model.bias.as_ref().unwrap().val().into_data());
    out
}

/// Deterministic pseudo-random gradients (weight then bias, flattened), and the same values as
/// `GradientsParams` for `model`.
fn gradients(model: &Linear, seed: usize, scale: f64) -> (Vec<f64>, GradientsParams) {
    let n = INPUTS * OUTPUTS + OUTPUTS;
    let flat: Vec<f64> = (0..n)
        .map(|i| scale * ((seed * 31 + i * 7) as f64 * 0.37 + seed as f64).sin())
        .collect();
    let device = model.weight.val().device().inner();
    let to_f32 = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<_>>();
    let mut grads = GradientsParams::new();
    grads.register::<2>(
        model.weight.id,
        Tensor::from_data(
            TensorData::new(to_f32(&flat[..INPUTS * OUTPUTS]), [INPUTS, OUTPUTS]),
            &device,
        ),
    );
    grads.register::<1>(
        model.bias.as_ref().unwrap().id,
        Tensor::from_data(
            TensorData::new(to_f32(&flat[INPUTS * OUTPUTS..]), [OUTPUTS]),
            &device,
        ),
    );
    (flat, grads)
}

/// Solves `A x = b` (dense, f64) by Gaussian elimination with partial pivoting.
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Vec<f64> {
    let n = b.len();
    for col in 0..n {
        let pivot = (col..n)
            .max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))
            .unwrap();
        a.swap(col, pivot);
        b.swap(col, pivot);
        for row in col + 1..n {
            let factor = a[row][col] / a[col][col];
            let (upper, lower) = a.split_at_mut(row);
            for (target, source) in lower[0][col..].iter_mut().zip(&upper[col][col..]) {
                *target -= factor * source;
            }
            b[row] -= factor * b[col];
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let tail: f64 = (row + 1..n).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - tail) / a[row][row];
    }
    x
}

/// `F⁻¹g` with `F = damp·I + (1/m)·Σ_rows rowᵀrow`, built densely.
fn dense_oracle(window: &[Vec<f64>], damp: f64, g: &[f64]) -> Vec<f64> {
    let (m, d) = (window.len(), g.len());
    let fisher = (0..d)
        .map(|i| {
            (0..d)
                .map(|j| {
                    let outer: f64 = window.iter().map(|row| row[i] * row[j]).sum();
                    outer / m as f64 + if i == j { damp } else { 0.0 }
                })
                .collect()
        })
        .collect();
    solve(fisher, g.to_vec())
}

/// Over 3 trips around the ring buffer (so the Woodbury updates, the periodic refactorisations
/// and the wrap-around are all exercised), every M-FAC step equals `−lr·F⁻¹g` with F built
/// densely from the last m gradients (zero rows before the window fills), including the coupled
/// weight-decay term in g.
#[test]
fn mfac_step_is_the_dense_woodbury_oracle() {
    let (m, damp, weight_decay, lr) = (4, 0.05, 0.01, 0.5);
    for (backend, device) in common::devices() {
        let mut model = linear(&device);
        let mut optimizer = MfacConfig::new()
            .with_ngrads(m)
            .with_damp(damp)
            .with_weight_decay(weight_decay)
            .init();
        let d = INPUTS * OUTPUTS + OUTPUTS;
        let mut window = vec![vec![0.0; d]; m];
        for t in 0..3 * m + 1 {
            let before = values(&model);
            let (raw, grads) = gradients(&model, t, 1.0);
            let g: Vec<f64> = raw
                .iter()
                .zip(&before)
                .map(|(g, p)| g + weight_decay * p)
                .collect();
            window[t % m] = g.clone();
            let expected = dense_oracle(&window, damp, &g);
            model = optimizer.step(lr, model, grads);
            let after = values(&model);
            for k in 0..d {
                let step = (before[k] - after[k]) / lr;
                // The device works in f32 (G·g, Gᵀc, the flattened parameters): rounding of
                // ~1e-7 relative is amplified by 1/damp = 20 in x = (g − Gᵀc)/damp, and the
                // parameter difference (before − after)/lr loses a few more bits; 2e-4 is ~10x
                // the largest deviation seen, far below the O(1) error of a wrong Woodbury update.
                let tolerance = 2e-4 * (1.0 + expected[k].abs());
                assert!(
                    (step - expected[k]).abs() <= tolerance,
                    "{backend}: step {t}, coordinate {k}: M-FAC moved by {step}, the dense \
                     oracle F⁻¹g is {}",
                    expected[k]
                );
            }
        }
        assert_eq!(optimizer.time(), 3 * m + 1);
        assert_eq!(optimizer.dim(), d);
    }
}

/// Momentum averages the preconditioned direction: with a window of one row and μ, the second
/// step is `μ·(1−μ)·x₁ + (1−μ)·x₂` for the two single-step directions.
#[test]
fn mfac_momentum_is_an_ema_of_directions() {
    let (damp, momentum) = (0.1, 0.9);
    for (backend, device) in common::devices() {
        let model = linear(&device);
        let x = |g: &[f64]| dense_oracle(&[g.to_vec()], damp, g);
        let mut optimizer = MfacConfig::new()
            .with_ngrads(1)
            .with_damp(damp)
            .with_momentum(momentum)
            .init();
        let (g1, grads1) = gradients(&model, 1, 1.0);
        let p0 = values(&model);
        let model = optimizer.step(1.0, model, grads1);
        let p1 = values(&model);
        let (g2, grads2) = gradients(&model, 2, 1.0);
        let model = optimizer.step(1.0, model, grads2);
        let p2 = values(&model);
        let (x1, x2) = (x(&g1), x(&g2));
        for k in 0..p0.len() {
            let v1 = (1.0 - momentum) * x1[k];
            let v2 = momentum * v1 + (1.0 - momentum) * x2[k];
            assert!(
                (p0[k] - p1[k] - v1).abs() < 1e-5,
                "{backend}: first step {k}"
            );
            assert!(
                (p1[k] - p2[k] - v2).abs() < 1e-5,
                "{backend}: second step {k}"
            );
        }
    }
}

/// The window spans one fixed vector: a later step with a different set of parameters is refused
/// with a message naming the change.
#[test]
#[should_panic(expected = "the parameters with gradients changed")]
fn mfac_refuses_a_changed_parameter_set() {
    let device = Device::flex();
    let model = linear(&device);
    let mut optimizer = MfacConfig::new().with_ngrads(2).with_damp(0.1).init();
    let (_, grads) = gradients(&model, 0, 1.0);
    let model = optimizer.step(0.1, model, grads);
    let (_, mut grads) = gradients(&model, 1, 1.0);
    grads.remove::<1>(model.bias.as_ref().unwrap().id);
    optimizer.step(0.1, model, grads);
}

#[test]
fn mfac_rejects_invalid_hyperparameters() {
    let error = MfacConfig::new().with_damp(0.0).try_init().unwrap_err();
    assert!(error.to_string().contains("damp"), "{error}");
    let error = MfacConfig::new().with_ngrads(0).try_init().unwrap_err();
    assert!(error.to_string().contains("ngrads"), "{error}");
}

/// A fresh temporary path for one checkpoint.
fn checkpoint_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "firebox-{name}-{}-{:?}.bpk",
        std::process::id(),
        std::thread::current().id()
    ))
}

/// Steps `optimizer` through `steps` (a closure stepping one optimizer once), saves, then runs
/// the same remaining steps on the original and on a fresh optimizer loaded from the file (after
/// the file is deleted); the parameters must agree exactly.
fn assert_resumes<O, F>(name: &str, device: &Device, make: impl Fn() -> O, mut step: F)
where
    O: ModuleState + Clone,
    F: FnMut(&mut O, Linear, usize) -> Linear,
{
    let mut model = linear(device);
    let mut optimizer = make();
    for t in 0..5 {
        model = step(&mut optimizer, model, t);
    }
    let path = checkpoint_path(name);
    optimizer.save(&path).unwrap();
    let mut resumed = make().load(&path, device).unwrap();
    std::fs::remove_file(&path).unwrap();
    let mut fresh = make();
    let mut model_resumed = model.clone();
    let mut model_fresh = model.clone();
    for t in 5..9 {
        model = step(&mut optimizer, model, t);
        model_resumed = step(&mut resumed, model_resumed, t);
        model_fresh = step(&mut fresh, model_fresh, t);
    }
    assert_eq!(
        values(&model),
        values(&model_resumed),
        "{name}: the resumed optimizer diverged from the uninterrupted one"
    );
    assert_ne!(
        values(&model),
        values(&model_fresh),
        "{name}: a fresh optimizer gives the same result, so the test cannot see lost state"
    );
}

/// A positive diagonal "Hessian estimate" for the curvature optimizers.
fn estimate(model: &Linear, t: usize) -> GradientsParams {
    let (flat, _) = gradients(model, t + 100, 1.0);
    let positive: Vec<f64> = flat.iter().map(|v| v.abs() + 0.1).collect();
    let device = model.weight.val().device().inner();
    let mut grads = GradientsParams::new();
    let to_f32 = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<_>>();
    grads.register::<2>(
        model.weight.id,
        Tensor::from_data(
            TensorData::new(to_f32(&positive[..INPUTS * OUTPUTS]), [INPUTS, OUTPUTS]),
            &device,
        ),
    );
    grads.register::<1>(
        model.bias.as_ref().unwrap().id,
        Tensor::from_data(
            TensorData::new(to_f32(&positive[INPUTS * OUTPUTS..]), [OUTPUTS]),
            &device,
        ),
    );
    grads
}

#[test]
fn module_optimizers_resume_from_a_checkpoint() {
    for (backend, device) in common::devices() {
        common::report(&format!("[firebox tests] resume on {backend}"));
        assert_resumes(
            "mfac",
            &device,
            || {
                MfacConfig::new()
                    .with_ngrads(3)
                    .with_damp(0.1)
                    .with_momentum(0.5)
                    .init()
            },
            |o, model, t| {
                let (_, grads) = gradients(&model, t, 1.0);
                o.step(0.1, model, grads)
            },
        );
        assert_resumes(
            "adahessian",
            &device,
            || AdaHessianConfig::new().with_update_interval(2).init(),
            |o, model, t| {
                let (_, grads) = gradients(&model, t, 1.0);
                let h = o.needs_hessian().then(|| estimate(&model, t));
                o.step(0.01, model, grads, h.as_ref())
            },
        );
        assert_resumes(
            "sophia_h",
            &device,
            || {
                SophiaHConfig::new()
                    .with_update_interval(2)
                    .with_gamma(3.0)
                    .init()
            },
            |o, model, t| {
                let (_, grads) = gradients(&model, t, 1.0);
                let h = o.needs_hessian().then(|| estimate(&model, t));
                o.step(0.01, model, grads, h.as_ref()).0
            },
        );
        assert_resumes(
            "sophia_g",
            &device,
            || SophiaGConfig::new().with_rho(0.5).init(),
            |o, model, t| {
                let (_, grads) = gradients(&model, t, 1.0);
                let (model, _) = o.step(0.01, model, grads, 4.0);
                let (_, sampled) = gradients(&model, t + 50, 0.5);
                o.update_hessian(&model, &sampled);
                model
            },
        );
    }
}

/// A truncated or foreign file is an error naming the path, not a panic or silent reset.
#[test]
fn a_corrupt_checkpoint_is_an_error_naming_the_file() {
    let path = checkpoint_path("corrupt");
    std::fs::write(&path, b"not a burnpack file").unwrap();
    let error = MfacConfig::new()
        .init()
        .load(&path, &Device::flex())
        .unwrap_err();
    std::fs::remove_file(&path).unwrap();
    assert!(error.contains(&path.display().to_string()), "{error}");
    let missing = checkpoint_path("missing");
    let error = MfacConfig::new()
        .init()
        .load(&missing, &Device::flex())
        .unwrap_err();
    assert!(error.contains("cannot read"), "{error}");
}

/// Turning the win-rate count off changes nothing but the report.
#[test]
fn sophia_without_counting_steps_identically() {
    for (backend, device) in common::devices() {
        let model = linear(&device);
        let (_, grads) = gradients(&model, 3, 1.0);
        let (_, grads_again) = gradients(&model, 3, 1.0);
        let mut counted = SophiaGConfig::new().init();
        let mut quiet = SophiaGConfig::new().with_count_unclipped(false).init();
        let (a, report_a) = counted.step(0.01, model.clone(), grads, 8.0);
        let (b, report_b) = quiet.step(0.01, model, grads_again, 8.0);
        assert_eq!(values(&a), values(&b), "{backend}");
        assert_eq!(report_a.total(), report_b.total());
        assert!(report_a.unclipped().is_some(), "{backend}");
        assert_eq!(report_b.unclipped(), None, "{backend}");
    }
}
