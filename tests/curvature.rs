//! Curvature machinery against closed forms: the finite-difference Hessian-vector product on a
//! quadratic, and Hutchinson's diagonal on a separable objective, on every available backend.

mod common;

use burn::module::{Module, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor, TensorData};
use firebox::optim::curvature::directions::rademacher;
use firebox::optim::curvature::hutchinson::{hutchinson_diagonal, hutchinson_traces};
use firebox::optim::curvature::hvp::{StepSize, hvp};

const N: usize = 5;

/// A symmetric (indefinite) matrix, row-major.
fn matrix() -> Vec<f64> {
    let mut a = vec![0.0; N * N];
    for i in 0..N {
        for j in 0..N {
            a[i * N + j] = ((i + 1) as f64 * 0.7 + (j + 1) as f64 * 0.7).sin()
                + if i == j { 1.5 } else { 0.0 };
        }
    }
    a
}

#[derive(Module, Debug)]
struct Point {
    x: Param<Tensor<1>>,
}

fn point(device: &Device) -> Point {
    let device = device.clone().autodiff();
    let x = [0.3f32, -1.2, 0.8, 2.0, -0.4];
    Point {
        x: Param::from_tensor(Tensor::from_data(TensorData::new(x.to_vec(), [N]), &device)),
    }
}

/// Gradient of `½ xᵀ A x` by autodiff.
fn quadratic_grad(model: &Point) -> GradientsParams {
    let device = model.x.val().device();
    let a: Vec<f32> = matrix().iter().map(|&v| v as f32).collect();
    let a = Tensor::<2>::from_data(TensorData::new(a, [N, N]), &device);
    let x = model.x.val();
    let ax = a.matmul(x.clone().reshape([N, 1])).reshape([N]);
    let loss = (x * ax).sum().mul_scalar(0.5);
    GradientsParams::from_grads(loss.backward(), model)
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f64> {
    t.into_data()
        .try_into_vec_as::<f32>()
        .unwrap()
        .into_iter()
        .map(f64::from)
        .collect()
}

#[test]
fn finite_difference_hvp_of_a_quadratic_is_a_times_v() {
    let _rng = common::rng_lock();
    let a = matrix();
    for (backend, device) in common::devices() {
        let model = point(&device);
        for seed in [1u64, 2, 3] {
            device.seed(seed);
            let v = rademacher(&model);
            let v_host = values(v.get::<1>(model.x.id).unwrap());
            let hv = hvp(&model, &v, StepSize::Auto, quadratic_grad);
            let got = values(hv.get::<1>(model.x.id).unwrap());
            // For a quadratic the central difference has no truncation error; what remains is the
            // f32 rounding of the two gradients (≈ N·ε·‖A‖·‖x‖ each) divided by 2r, with
            // r·‖v‖ = ∛ε·(1 + ‖x‖) ≈ 0.017: ≈ 1e-4·‖A‖. The bound 2e-3·max|Av| leaves
            // ~10x headroom and still catches a wrong sign, scale or step.
            let av: Vec<f64> = (0..N)
                .map(|i| (0..N).map(|j| a[i * N + j] * v_host[j]).sum())
                .collect();
            let scale = av.iter().fold(0.0f64, |m, x| m.max(x.abs()));
            for i in 0..N {
                assert!(
                    (got[i] - av[i]).abs() <= 2e-3 * scale,
                    "{backend} seed {seed}: (Hv)[{i}] = {}, Av = {}",
                    got[i],
                    av[i]
                );
            }
        }
    }
}

#[derive(Module, Debug)]
struct Separable {
    a: Param<Tensor<1>>,
    b: Param<Tensor<2>>,
}

const A0: [f32; 3] = [0.5, -1.0, 1.5];
const B0: [f32; 4] = [0.2, -0.7, 1.1, 0.0];
const C_A: [f64; 3] = [1.0, 2.0, 0.5];
const C_B: [f64; 4] = [3.0, 0.25, 1.0, 2.0];

fn separable(device: &Device) -> Separable {
    let device = device.clone().autodiff();
    Separable {
        a: Param::from_tensor(Tensor::from_data(
            TensorData::new(A0.to_vec(), [3]),
            &device,
        )),
        b: Param::from_tensor(Tensor::from_data(
            TensorData::new(B0.to_vec(), [2, 2]),
            &device,
        )),
    }
}

/// Gradient of `L = Σ c_i (x_i²/2 + x_i⁴/12)`, whose Hessian is diagonal: `c_i (1 + x_i²)`.
fn separable_grad(model: &Separable) -> GradientsParams {
    let device = model.a.val().device();
    let term = |x: Tensor<1>, c: &[f64]| {
        let c: Vec<f32> = c.iter().map(|&v| v as f32).collect();
        let n = c.len();
        let c = Tensor::<1>::from_data(TensorData::new(c, [n]), &device);
        let x2 = x.clone().square();
        (c * (x2.clone().mul_scalar(0.5) + x2.square().div_scalar(12.0))).sum()
    };
    let loss = term(model.a.val(), &C_A) + term(model.b.val().reshape([4]), &C_B);
    GradientsParams::from_grads(loss.backward(), model)
}

#[test]
fn hutchinson_diagonal_is_exact_for_a_separable_objective() {
    let _rng = common::rng_lock();
    for (backend, device) in common::devices() {
        let model = separable(&device);
        for seed in [7u64, 8] {
            device.seed(seed);
            let diag = hutchinson_diagonal(&model, 1, StepSize::Auto, separable_grad);
            let got_a = values(diag.get::<1>(model.a.id).unwrap());
            let got_b = values(diag.get::<2>(model.b.id).unwrap());
            let exact = |x: &[f32], c: &[f64]| -> Vec<f64> {
                x.iter()
                    .zip(c)
                    .map(|(&x, c)| c * (1.0 + (x as f64).powi(2)))
                    .collect()
            };
            // One probe suffices (z_i² = 1). The quartic adds a truncation error
            // r²·c·|x|/3 ≈ 1e-4 relative with r ≈ 0.015; rounding is ≈ 1e-4 too: 2e-3 relative.
            for (got, want) in [(got_a, exact(&A0, &C_A)), (got_b, exact(&B0, &C_B))] {
                for (g, w) in got.iter().zip(&want) {
                    assert!(
                        (g - w).abs() <= 2e-3 * w.abs(),
                        "{backend} seed {seed}: diag {g} vs exact {w}"
                    );
                }
            }
        }
    }
}

/// Per-parameter traces: exact for a separable objective with one probe (any seed), in module
/// visit order with the block sizes.
#[test]
fn hutchinson_traces_are_exact_for_a_separable_objective() {
    let _rng = common::rng_lock();
    for (backend, device) in common::devices() {
        let model = separable(&device);
        device.seed(11);
        let traces = hutchinson_traces(&model, 1, StepSize::Auto, separable_grad);
        let exact = |x: &[f32], c: &[f64]| -> f64 {
            x.iter()
                .zip(c)
                .map(|(&x, c)| c * (1.0 + (x as f64).powi(2)))
                .sum()
        };
        assert_eq!(traces.len(), 2, "{backend}: one trace per parameter");
        assert_eq!((traces[0].id, traces[0].numel), (model.a.id, 3));
        assert_eq!((traces[1].id, traces[1].numel), (model.b.id, 4));
        for (trace, want) in traces.iter().zip([exact(&A0, &C_A), exact(&B0, &C_B)]) {
            assert!(
                (trace.trace - want).abs() <= 2e-3 * want.abs(),
                "{backend}: trace {} vs exact {want}",
                trace.trace
            );
        }
    }
}

/// For a full (non-diagonal) quadratic one probe is not exact: `zᵀAz = tr A + Σ_{i≠j} z_i z_j A_ij`.
/// Its variance is `2 Σ_{i≠j} A_ij²` per probe; the mean of n probes must land
/// within 5 standard deviations of tr A (200 probes).
#[test]
fn hutchinson_trace_of_a_full_quadratic_is_unbiased() {
    let _rng = common::rng_lock();
    let a = matrix();
    let trace: f64 = (0..N).map(|i| a[i * N + i]).sum();
    // Var(zᵀAz) = 2 Σ_{i≠j} A_ij² for symmetric A and Rademacher z.
    let variance: f64 = (0..N)
        .flat_map(|i| (0..N).map(move |j| (i, j)))
        .filter(|(i, j)| i != j)
        .map(|(i, j)| 2.0 * a[i * N + j].powi(2))
        .sum();
    let probes = 200;
    let sigma = (variance / probes as f64).sqrt();
    for (backend, device) in common::devices() {
        device.seed(5);
        let model = point(&device);
        let traces = hutchinson_traces(&model, probes, StepSize::Auto, quadratic_grad);
        let got = traces[0].trace;
        assert!(
            (got - trace).abs() <= 5.0 * sigma,
            "{backend}: trace {got} vs tr A = {trace} (σ of the mean {sigma})"
        );
        assert!(
            variance > 0.0 && (got - trace).abs() > 0.0,
            "the estimate is not trivially exact"
        );
    }
}

/// Softmax regression: 4 inputs of 2 features, 3 classes, logits = x W.
const X: [f32; 8] = [1.0, -0.5, 0.3, 2.0, -1.2, 0.7, 0.0, 1.0];
const W0: [f32; 6] = [0.4, -0.3, 0.1, 0.2, 0.5, -0.6];

#[test]
fn gnb_estimate_matches_the_exact_gauss_newton_diagonal_in_expectation() {
    let _rng = common::rng_lock();
    use burn::nn::loss::CrossEntropyLossConfig;
    use firebox::optim::curvature::gnb::{gnb_diagonal, sample_labels};

    const DRAWS: usize = 1500;
    for (backend, device) in common::devices() {
        let ad = device.clone().autodiff();
        let w = Tensor::<2>::from_data(TensorData::new(W0.to_vec(), [2, 3]), &ad);
        let model = burn::nn::Linear {
            weight: Param::from_tensor(w),
            bias: None,
        };
        let x = Tensor::<2>::from_data(TensorData::new(X.to_vec(), [4, 2]), &ad);

        // Exact Gauss-Newton diagonal of the mean loss: (1/N) Σ_n x_nj² p_nk (1 − p_nk).
        let p = values(burn::tensor::activation::softmax(
            model.forward(x.clone()),
            1,
        ));
        let exact: Vec<f64> = (0..6)
            .map(|e| {
                let (j, k) = (e / 3, e % 3);
                (0..4)
                    .map(|n| (X[n * 2 + j] as f64).powi(2) * p[n * 3 + k] * (1.0 - p[n * 3 + k]))
                    .sum::<f64>()
                    / 4.0
            })
            .collect();

        device.seed(11);
        let loss_fn = CrossEntropyLossConfig::new().init(&ad);
        let (mut sum, mut sum_sq) = (vec![0.0f64; 6], vec![0.0f64; 6]);
        for _ in 0..DRAWS {
            let logits = model.forward(x.clone());
            let labels = sample_labels(logits.clone().detach());
            let grads =
                GradientsParams::from_grads(loss_fn.forward(logits, labels).backward(), &model);
            let h = values(
                gnb_diagonal(&model, &grads, 4)
                    .get::<2>(model.weight.id)
                    .unwrap(),
            );
            for e in 0..6 {
                sum[e] += h[e];
                sum_sq[e] += h[e] * h[e];
            }
        }
        for e in 0..6 {
            let mean = sum[e] / DRAWS as f64;
            let var = (sum_sq[e] / DRAWS as f64 - mean * mean).max(0.0);
            let stderr = (var / DRAWS as f64).sqrt();
            // Five standard errors: a correct estimator fails this with probability < 1e-5 per
            // element; a wrong factor (no B, or B²) or labels not drawn from softmax(logits) is off
            // by many more.
            assert!(
                (mean - exact[e]).abs() <= 5.0 * stderr + 1e-6,
                "{backend}: element {e}: GNB mean {mean} ± {stderr}, exact GN {}",
                exact[e]
            );
        }
    }
}

/// Gradient of `½ Σ d_i x_i²` (Hessian `diag(d)`).
const DIAG: [f64; N] = [2.0, 0.5, 4.0, 1.0, 3.0];

fn diagonal_quadratic_grad(model: &Point) -> GradientsParams {
    let device = model.x.val().device();
    let d: Vec<f32> = DIAG.iter().map(|&v| v as f32).collect();
    let d = Tensor::<1>::from_data(TensorData::new(d, [N]), &device);
    let x = model.x.val();
    let loss = (d * x.clone() * x).sum().mul_scalar(0.5);
    GradientsParams::from_grads(loss.backward(), model)
}

#[test]
fn adahessian_first_step_is_a_newton_step_on_a_diagonal_quadratic() {
    let _rng = common::rng_lock();
    use firebox::optim::adahessian::AdaHessianConfig;
    // Step 1: m = (1−β1)g, h = diag(H) = d (one probe is exact here), v = (1−β2)d², so
    // den = |d| + eps and θ1 = θ0 − lr·g/(|d| + eps) = θ0·(1 − lr·d/(|d| + eps)): with lr = 1
    // the first step lands on the minimum, up to eps and the finite-difference rounding.
    for (backend, device) in common::devices() {
        let model = point(&device);
        let x0 = values(model.x.val());
        let mut optim = AdaHessianConfig::new().with_epsilon(1e-6).init();
        assert!(optim.needs_hessian());
        let grads = diagonal_quadratic_grad(&model);
        device.seed(3);
        let model = optim.step_with_closure(1.0, model, grads, diagonal_quadratic_grad);
        let x1 = values(model.x.val());
        for i in 0..N {
            let expected = x0[i] * (1.0 - DIAG[i] / (DIAG[i] + 1e-6));
            // FD rounding on h is ≈ 1e-4 relative (see the HVP test), so x1 ≈ 1e-4·|x0|.
            assert!(
                (x1[i] - expected).abs() <= 1e-3 * x0[i].abs(),
                "{backend}: x1[{i}] = {}, expected {expected}",
                x1[i]
            );
        }
        assert_eq!(optim.time(), 1);
    }
}
