//! Invariants of the quantization passes on the flex backend (every backend runs the
//! model-level checks in the workspace's `tests/quant.rs`).

use std::collections::BTreeMap;

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, Distribution, Tensor, TensorData};
use firebox_quant::affine::{QParams, Quantized, calibrated_range};
use firebox_quant::double_rounding::{
    Alrs, Hasb, StoredModel, derive_codes, prepare_double_rounding,
};
use firebox_quant::fake_quant::{fake_quant_lsq, fake_quant_ste};
use firebox_quant::hawq::{HawqConfig, HawqPlan, weight_sensitivities};
use firebox_quant::layout::RowLayout;
use firebox_quant::native::Stored;
use firebox_quant::qat::export_qat;
use firebox_quant::{
    ActivationQuant, Clipping, Granularity, Mode, Observer, PtqConfig, QatConfig, QuantError,
    QuantSpec, Targets, prepare_qat, quantize_weights,
};

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

fn normal(shape: [usize; 2], device: &Device) -> Tensor<2> {
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), device)
}

fn schemes() -> Vec<QuantSpec> {
    let mut out = Vec::new();
    for bits in [2, 4, 8] {
        for affine in [false, true] {
            for gran in [
                Granularity::PerTensor,
                Granularity::PerChannel { axis: 1 },
                Granularity::PerGroup { axis: 0, size: 4 },
                Granularity::PerGroup { axis: 1, size: 3 },
            ] {
                let s = QuantSpec::new(bits);
                let s = if affine { s.affine() } else { s };
                out.push(QuantSpec {
                    granularity: gran,
                    ..s
                });
            }
        }
    }
    out
}

/// Round to nearest: every in-range element is reproduced within half a step of its group.
#[test]
fn dequantized_values_are_within_half_a_step() {
    let device = Device::flex();
    device.seed(1);
    let x = normal([12, 9], &device);
    for spec in schemes() {
        spec.validate("t", &[12, 9]).unwrap();
        let q = Quantized::calibrate(x.clone(), &spec);
        let err = values((q.dequantize() - x.clone()).abs());
        let half = values(q.scales().div_scalar(2.0));
        for (i, (e, h)) in err.iter().zip(&half).enumerate() {
            // f32 rounding of (q - z)·s adds at most one ulp of the value.
            assert!(
                *e <= h * (1.0 + 1e-5) + 1e-6,
                "{}: element {i} off by {e}, half step {h}",
                spec.label()
            );
        }
        let codes = q.codes_i32();
        assert!(
            codes
                .iter()
                .all(|c| (spec.range.min..=spec.range.max).contains(c)),
            "{}: code out of range",
            spec.label()
        );
    }
}

/// Values on the grid come back bit for bit, with the codes they were built from.
#[test]
fn values_on_the_grid_round_trip_exactly() {
    let device = Device::flex();
    let spec = QuantSpec::new(4).affine().per_channel(0);
    let (scales, zeros) = ([0.25f32, 0.0625, 1.5], [3.0f32, 0.0, 15.0]);
    let mut codes = Vec::new();
    let mut grid = Vec::new();
    for r in 0..3 {
        for c in 0..16 {
            let q = ((c * 7 + r * 3) % 16) as f32;
            codes.push(q as i32);
            grid.push((q - zeros[r]) * scales[r]);
        }
    }
    let params = QParams {
        scale: Tensor::from_data(TensorData::new(scales.to_vec(), [3, 1]), &device),
        zero_point: Tensor::from_data(TensorData::new(zeros.to_vec(), [3, 1]), &device),
    };
    let x = Tensor::<2>::from_data(TensorData::new(grid.clone(), [3, 16]), &device);
    let q = Quantized::with_qparams(x, params, &spec);
    assert_eq!(q.codes_i32(), codes);
    assert_eq!(values(q.dequantize()), grid);
}

/// Affine: the zero point makes 0.0 exact; an all-positive tensor gets zero point q_min and
/// uses the whole grid for [0, max].
#[test]
fn zero_points_make_zero_exact_and_shift_positive_ranges() {
    let device = Device::flex();
    let spec = QuantSpec::new(8).affine();
    let x = Tensor::<2>::from_data(
        TensorData::new(vec![0.0f32, 0.3, 1.7, 2.55, 0.9, 0.0], [1, 6]),
        &device,
    );
    let q = Quantized::calibrate(x.clone(), &spec);
    assert_eq!(values(q.params.zero_point.clone()), vec![0.0]);
    assert_eq!(values(q.params.scale.clone()), vec![2.55f32 / 255.0]);
    assert_eq!(q.codes_i32()[3], 255);
    let deq = values(q.dequantize());
    assert_eq!((deq[0], deq[5]), (0.0, 0.0));
    // A range straddling zero: zero is still exactly representable.
    let y = Tensor::<2>::from_data(
        TensorData::new(vec![-1.3f32, 0.0, 0.7, 2.9], [1, 4]),
        &device,
    );
    let q = Quantized::calibrate(y, &spec);
    let z = values(q.params.zero_point.clone())[0];
    assert!(z > 0.0 && z < 255.0 && z.fract() == 0.0, "zero point {z}");
    assert_eq!(values(q.dequantize())[1], 0.0);
}

/// Group boundaries: each group's scale is the one computed from that group alone, for groups
/// along either axis of a ragged 6×10 matrix.
#[test]
fn groups_follow_their_boundaries_at_ragged_sizes() {
    let device = Device::flex();
    device.seed(3);
    let x = normal([6, 10], &device);
    let host = values(x.clone());
    let at = |r: usize, c: usize| host[r * 10 + c];
    for (axis, size) in [(1usize, 5usize), (0, 3), (1, 2), (0, 2)] {
        let spec = QuantSpec::new(4).per_group(axis, size);
        let q = Quantized::calibrate(x.clone(), &spec);
        let scales = values(q.scales());
        for r in 0..6 {
            for c in 0..10 {
                let members: Vec<f32> = if axis == 1 {
                    let g = c / size;
                    (g * size..g * size + size).map(|j| at(r, j)).collect()
                } else {
                    let g = r / size;
                    (g * size..g * size + size).map(|i| at(i, c)).collect()
                };
                let amax = members.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                let expected = (amax / 7.5).max(f32::EPSILON);
                assert_eq!(
                    scales[r * 10 + c],
                    expected,
                    "group ({axis},{size}) element ({r},{c})"
                );
            }
        }
    }
}

/// Clipping: MSE search never has more squared error than min-max; percentile ranges lie inside
/// the min-max range and clip a planted outlier.
#[test]
fn clipping_rules_trade_range_for_resolution() {
    let device = Device::flex();
    device.seed(4);
    let mut data = values(normal([1, 4096], &device));
    data[17] = 40.0;
    let x = Tensor::<2>::from_data(TensorData::new(data, [1, 4096]), &device);
    let err = |spec: QuantSpec| {
        let q = Quantized::calibrate(x.clone(), &spec);
        values((q.dequantize() - x.clone()).square().sum())[0]
    };
    let minmax = err(QuantSpec::new(4));
    let mse = err(QuantSpec::new(4).clipping(Clipping::mse()));
    assert!(mse < 0.5 * minmax, "mse {mse} vs minmax {minmax}");
    let spec = QuantSpec::new(4).clipping(Clipping::Percentile(99.0));
    let (lo, hi) = calibrated_range(
        x.clone(),
        spec.range,
        Mode::Symmetric,
        spec.clipping,
        spec.eps,
    );
    let (lo, hi) = (values(lo)[0], values(hi)[0]);
    assert!(hi < 5.0 && hi > 1.5 && lo == -hi, "p99 range [{lo}, {hi}]");
}

/// Straight-through estimator: gradient 1 inside the grid, 0 where the code was clamped; value
/// equal to the plain fake quantization. LSQ: the step gets a gradient.
#[test]
fn straight_through_gradients() {
    let device = Device::flex().autodiff();
    let spec = QuantSpec::new(4);
    let x = Tensor::<2>::from_data(
        TensorData::new(vec![-3.0f32, -0.4, 0.1, 0.55, 2.0], [1, 5]),
        &device,
    )
    .require_grad();
    let params = QParams {
        scale: Tensor::from_data(TensorData::new(vec![0.125f32], [1, 1]), &device),
        zero_point: Tensor::zeros([1, 1], &device),
    };
    let layout = RowLayout::new([1, 5], Granularity::PerTensor);
    let y = fake_quant_ste(x.clone(), &params, &layout, spec.range);
    assert_eq!(values(y.clone()), vec![-1.0, -0.375, 0.125, 0.5, 0.875]);
    let grads = y.sum().backward();
    assert_eq!(
        values(x.grad(&grads).unwrap()),
        vec![0.0, 1.0, 1.0, 1.0, 0.0]
    );
    let step =
        Tensor::<2>::from_data(TensorData::new(vec![0.125f32], [1, 1]), &device).require_grad();
    let y = fake_quant_lsq(x.clone(), step.clone(), &layout, spec.range);
    let grads = y.sum().backward();
    let g = values(step.grad(&grads).unwrap())[0];
    assert!(g.is_finite() && g != 0.0, "LSQ step gradient {g}");
}

#[derive(Module, Debug)]
struct TwoLayer {
    fc1: Linear,
    fc2: Linear,
}

impl TwoLayer {
    fn new(device: &Device) -> Self {
        Self {
            fc1: LinearConfig::new(16, 32).init(device),
            fc2: LinearConfig::new(32, 8).init(device),
        }
    }

    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.fc2
            .forward(burn::tensor::activation::relu(self.fc1.forward(x)))
    }
}

/// PTQ stores int8 symmetric per-channel and group weights as Burn quantized tensors whose
/// dequantized values are exactly ours; schemes Burn lacks are stored as dequantized floats.
#[test]
fn ptq_stores_native_tensors_equal_to_the_reference_quantization() {
    let device = Device::flex();
    device.seed(5);
    let model = TwoLayer::new(&device);
    // Per-tensor int8/int4 are native on flex; block scales only where Burn's `linear` computes
    // them right (on flex 0.22.1 it does not: see `native`'s docs), so they are not asserted.
    for (spec, native) in [
        (QuantSpec::int8().per_channel(1), None),
        (QuantSpec::int4().per_group(0, 8), None),
        (QuantSpec::int8(), Some(true)),
        (QuantSpec::int4(), Some(true)),
        (QuantSpec::int8().affine(), Some(false)),
        (QuantSpec::new(6).per_channel(1), Some(false)),
    ] {
        let config = PtqConfig::new(Targets::glob(["fc*"]), spec);
        let (quantized, report) = quantize_weights(&model, &config).unwrap();
        assert_eq!(report.layers.len(), 2);
        for layer in &report.layers {
            if let Some(native) = native {
                assert_eq!(
                    matches!(layer.stored, Stored::Native(_)),
                    native,
                    "{} {:?}",
                    spec.label(),
                    layer.stored
                );
            }
            assert!(layer.sqnr_db > 6.0 * spec.bits as f64 - 12.0, "{layer:?}");
        }
        let reference = Quantized::calibrate(model.fc1.weight.val(), &spec).dequantize();
        let stored = quantized.fc1.weight.val().dequantize();
        assert_eq!(values(stored), values(reference), "{}", spec.label());
        let bias = quantized.fc1.bias.as_ref().unwrap().val();
        assert_eq!(values(bias), values(model.fc1.bias.as_ref().unwrap().val()));
        let x = normal([4, 16], &device);
        let _ = values(quantized.forward(x));
    }
}

/// Bad input: errors name the layer and the value; the model is not touched.
#[test]
fn bad_options_are_errors_naming_layer_and_value() {
    let device = Device::flex();
    let model = TwoLayer::new(&device);
    let err = |spec: QuantSpec| {
        quantize_weights(&model, &PtqConfig::new(Targets::names(["fc1"]), spec))
            .unwrap_err()
            .to_string()
    };
    let e = err(QuantSpec::int4().per_group(0, 5));
    assert!(
        e.contains("`fc1`") && e.contains("group size 5") && e.contains("16"),
        "{e}"
    );
    let e = err(QuantSpec::new(9));
    assert!(e.contains("`fc1`") && e.contains("9-bit"), "{e}");
    let e = err(QuantSpec::new(8).per_channel(2));
    assert!(e.contains("axis 2"), "{e}");
    let e = err(QuantSpec::new(8).clipping(Clipping::Percentile(120.0)));
    assert!(e.contains("120"), "{e}");
    // A width Burn has no native type for, when native storage is required.
    let mut config = PtqConfig::new(Targets::names(["fc2"]), QuantSpec::new(6));
    config.require_native = true;
    let e = quantize_weights(&model, &config).unwrap_err().to_string();
    assert!(
        e.contains("`fc2`") && e.contains("6-bit") && e.contains("natively"),
        "{e}"
    );
    // NaN weights: an error naming the layer, and the caller's model is untouched.
    let mut broken = model.clone();
    let w = broken.fc2.weight.val();
    let nan = Tensor::<2>::full(w.dims(), f32::NAN, &device);
    broken.fc2.weight = burn::module::Param::from_tensor(nan);
    let e = quantize_weights(
        &broken,
        &PtqConfig::new(Targets::glob(["fc*"]), QuantSpec::int8()),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("`fc2`") && e.contains("NaN"), "{e}");
    assert_eq!(
        values(broken.fc1.weight.val()),
        values(model.fc1.weight.val())
    );
    let e = quantize_weights(
        &model,
        &PtqConfig::new(Targets::names(["conv"]), QuantSpec::int8()),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("fc1") && e.contains("fc2"), "{e}");
    let e = prepare_qat(
        model.clone(),
        &QatConfig {
            targets: Targets::names(["fc2"]),
            spec: QuantSpec::int4().affine(),
            learned_scale: true,
        },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("`fc2`") && e.contains("symmetric"), "{e}");
    assert!(matches!(
        Observer::new("act", QuantSpec::int8().per_channel(0)),
        Err(QuantError::Calibration { .. })
    ));
}

/// QAT: training moves the float weights through the fake quantizer; the exported model (real
/// quantized weights) gives the fake-quantized model's outputs.
#[test]
fn qat_trains_and_export_matches_the_fake_quantized_model() {
    let device = Device::flex().autodiff();
    device.seed(6);
    for learned_scale in [false, true] {
        let model = TwoLayer::new(&device);
        let config = QatConfig {
            targets: Targets::glob(["fc*"]),
            spec: QuantSpec::int4().per_channel(1),
            learned_scale,
        };
        let mut model = prepare_qat(model, &config).unwrap();
        let x = normal([32, 16], &device);
        let target = normal([32, 8], &device);
        let mut optim = AdamConfig::new().init();
        let loss_of = |m: &TwoLayer| (m.forward(x.clone()) - target.clone()).square().mean();
        let first = values(loss_of(&model))[0];
        for _ in 0..30 {
            let loss = loss_of(&model);
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(1e-2, model, grads);
        }
        let last = values(loss_of(&model))[0];
        assert!(last < 0.9 * first, "QAT loss {first} -> {last}");
        let fake = values(model.forward(x.clone()));
        let (exported, stored) = export_qat(model.clone());
        assert_eq!(stored.len(), 2);
        let real = values(exported.forward(x.clone()));
        for (i, (a, b)) in fake.iter().zip(&real).enumerate() {
            assert!(
                (a - b).abs() <= 1e-5 * (1.0 + a.abs()),
                "output {i}: fake {a} vs exported {b}"
            );
        }
    }
}

/// Observers: min-max ranges over every batch; activation fake quantization on that range.
#[test]
fn observers_calibrate_activation_ranges() {
    let device = Device::flex();
    let mut obs = Observer::new("act", QuantSpec::int8().affine()).unwrap();
    obs.observe(&Tensor::<2>::from_data(
        TensorData::new(vec![0.5f32, 2.0], [1, 2]),
        &device,
    ));
    obs.observe(&Tensor::<2>::from_data(
        TensorData::new(vec![-1.0f32, 1.0], [1, 2]),
        &device,
    ));
    assert_eq!(obs.range(), (-1.0, 2.0));
    let aq = ActivationQuant::from_observer(&obs, false, &device);
    assert_eq!(values(aq.scale.val()), vec![3.0f32 / 255.0]);
    let y = aq.forward(Tensor::<2>::from_data(
        TensorData::new(vec![0.0f32, 5.0], [1, 2]),
        &device,
    ));
    assert_eq!(
        values(y),
        [0.0, 255.0f32 - 85.0]
            .iter()
            .map(|q| q * (3.0f32 / 255.0))
            .collect::<Vec<_>>()
    );
}

#[derive(Module, Debug)]
struct Parallel {
    a: Linear,
    b: Linear,
}

/// HAWQ-V2 on a model whose sensitivity is known: `L = 50·‖a(x)‖² + ‖b(x)‖²` with identically
/// distributed layers, so `a`'s Hessian trace is 50x `b`'s. Under a budget that allows one layer
/// at 8 bits and the other at 2, the allocation gives `a` the 8 bits, respects the budget, and a
/// budget below the all-2-bit size is an error giving that minimum.
#[test]
fn hawq_prefers_the_sensitive_layer_within_budget() {
    let device = Device::flex().autodiff();
    device.seed(7);
    let model = Parallel {
        a: LinearConfig::new(32, 32).with_bias(false).init(&device),
        b: LinearConfig::new(32, 32).with_bias(false).init(&device),
    };
    let x = normal([64, 32], &device);
    let grad = |m: &Parallel| {
        let loss = m.a.forward(x.clone()).square().mean().mul_scalar(50.0)
            + m.b.forward(x.clone()).square().mean();
        GradientsParams::from_grads(loss.backward(), m)
    };
    let config = HawqConfig {
        targets: Targets::names(["a", "b"]),
        spec: QuantSpec::int8().per_channel(1),
        candidate_bits: vec![2, 4, 8],
        probes: 8,
    };
    let layers = weight_sensitivities(&model, &config, grad).unwrap();
    let ratio = layers[0].avg_hessian_trace / layers[1].avg_hessian_trace;
    assert!((ratio - 50.0).abs() < 5.0, "trace ratio {ratio}");
    let n = 32 * 32;
    let plan = HawqPlan::new(layers.clone(), &config, (n * 10) as u64).unwrap();
    assert_eq!(plan.allocation.bits, vec![8, 2]);
    assert!(plan.allocation.size_bits <= (n * 10) as u64);
    let e = HawqPlan::new(layers, &config, (n * 4 - 1) as u64)
        .unwrap_err()
        .to_string();
    assert!(e.contains(&(n * 4).to_string()), "{e}");
    let ptq = plan.ptq_config();
    assert_eq!(ptq.spec_of("a").bits, 8);
    assert_eq!(ptq.spec_of("b").bits, 2);
}

/// Double Rounding: the 4- and 2-bit models derived from the stored int8 model are exactly the
/// reference rounding of the stored integers, and equal the joint-training forward at that width.
#[test]
fn double_rounding_models_derive_from_the_stored_integers() {
    let device = Device::flex().autodiff();
    device.seed(8);
    let model = TwoLayer::new(&device);
    let (model, switch) = prepare_double_rounding(
        model,
        &Targets::glob(["fc*"]),
        QuantSpec::int8().per_channel(1),
    )
    .unwrap();
    let store = StoredModel::capture(&model);
    assert_eq!(store.weights.len(), 2);
    let x = normal([5, 16], &device);
    for bits in [8u32, 6, 4, 2] {
        let w = &store.weights["fc1"];
        let low = derive_codes(&w.codes, 8, bits);
        let shift = (1u32 << (8 - bits)) as f32;
        let want: Vec<f32> = low
            .iter()
            .enumerate()
            .map(|(i, &q)| q as f32 * w.steps[i / w.per_row] * shift)
            .collect();
        assert_eq!(store.dequantize_at("fc1", bits).unwrap(), want);
        let assignment: BTreeMap<String, u32> = BTreeMap::new();
        let derived = store.model_at(model.clone(), &assignment, bits);
        switch.set_all(bits);
        let fake = values(model.forward(x.clone()));
        let real = values(derived.forward(x.clone()));
        for (a, b) in fake.iter().zip(&real) {
            assert!(
                (a - b).abs() <= 1e-5 * (1.0 + a.abs()),
                "{bits} bits: {a} vs {b}"
            );
        }
    }
    assert_eq!(
        derive_codes(&[127, -128, 8, 24, -8, 7], 8, 4),
        vec![7, -8, 0, 2, 0, 0]
    );
    assert_eq!(
        derive_codes(&[40, -40, 32, 96, -96], 8, 2),
        vec![1, -1, 0, 1, -2]
    );
    let mut alrs = Alrs::new(8);
    alrs.observe(8, 1.0);
    assert!((alrs.observe(2, 8.0) - 0.125).abs() < 1e-12);
    assert_eq!(alrs.observe(8, 1.0), 1.0);
    let hasb = Hasb::new(&[10.0, 0.0], vec![2, 4, 8], 3.0);
    assert!(hasb.probabilities[0][2] > 0.8 && (hasb.probabilities[1][0] - 1.0 / 3.0).abs() < 1e-12);
}

/// HAWQ-V2's activation sensitivity: for `L(a) = c·Σ a²/2` the Hessian is `c·I`, so the trace is
/// `c·n` (exact for a quadratic up to f32 rounding), whatever the probes.
#[test]
fn activation_trace_is_exact_on_a_quadratic() {
    let device = Device::flex().autodiff();
    device.seed(9);
    let a = normal([4, 8], &device);
    let trace = firebox_quant::hawq::activation_trace(a, 3, |x| x.square().sum().mul_scalar(1.5));
    assert!((trace - 3.0 * 32.0).abs() < 1e-2 * 96.0, "trace {trace}");
}

/// Activation sensitivities: size per sample, per-element trace, and a perturbation that falls
/// with the bit width; an activation without a batch axis is an error naming it.
#[test]
fn activation_sensitivity_counts_per_sample_and_orders_widths() {
    let device = Device::flex();
    device.seed(10);
    let a = normal([8, 12], &device);
    let spec = QuantSpec::int8().affine();
    let s = firebox_quant::hawq::activation_sensitivity("h", a.clone(), 96.0, &spec, &[2, 4, 8])
        .unwrap();
    assert_eq!((s.n_params, s.avg_hessian_trace), (12, 1.0));
    assert!(
        s.perturbation[0] > s.perturbation[1] && s.perturbation[1] > s.perturbation[2],
        "{:?}",
        s.perturbation
    );
    let one = Tensor::<1>::zeros([0], &device);
    let e = firebox_quant::hawq::activation_sensitivity("h", one, 1.0, &spec, &[8])
        .unwrap_err()
        .to_string();
    assert!(e.contains("`h`"), "{e}");
}
