//! The quantization passes on every backend (flex, ndarray, wgpu): PTQ stores what the reference
//! quantizer computes, QAT trains and exports to the fake-quantized model's outputs, Double
//! Rounding's derived models equal its joint-training forward, activation quantization follows
//! its calibrated grid. (Bit-exact numbers against PyTorch, llama.cpp, the DGQ code and HAWQ-V2:
//! `tests/parity.rs` replays `tests/fixtures/quant` on every backend.)

mod common;

use std::collections::BTreeMap;

use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, Distribution, Tensor};
use firebox::models::{Mlp, MlpConfig};
use firebox::quant::double_rounding::{StoredModel, prepare_double_rounding};
use firebox::quant::native::Stored;
use firebox::quant::qat::export_qat;
use firebox::quant::{
    ActivationQuant, Observer, PtqConfig, QatConfig, QuantSpec, Quantized, Targets, prepare_qat,
    quantize_weights,
};

fn max_abs(a: Tensor<2>, b: Tensor<2>) -> f32 {
    (a - b).abs().max().into_scalar::<f32>()
}

fn inputs(device: &Device) -> Tensor<2> {
    Tensor::random([16, 64], Distribution::Default, device)
}

fn weights() -> Targets {
    Targets::names(["hidden", "output"])
}

#[test]
fn ptq_matches_the_reference_quantizer_on_every_backend() {
    for (backend, device) in common::devices() {
        device.seed(11);
        let model: Mlp = MlpConfig::new(64).init(&device);
        for spec in [
            QuantSpec::int8(),
            QuantSpec::int8().per_channel(1),
            QuantSpec::int4().per_group(0, 16).affine(),
        ] {
            let (q, report) = quantize_weights(&model, &PtqConfig::new(weights(), spec))
                .unwrap_or_else(|e| panic!("{backend}: {e}"));
            let reference = Quantized::calibrate(model.hidden.weight.val(), &spec);
            let stored = q.hidden.weight.val().dequantize();
            assert_eq!(
                max_abs(stored, reference.dequantize()),
                0.0,
                "{backend} {}",
                spec.label()
            );
            // Zero points are never native; per-tensor int8 always is on the CPU backends (what
            // else Burn holds natively is checked per weight, see `firebox_quant::native`).
            let native = matches!(report.layers[0].stored, Stored::Native(_));
            if spec.mode == firebox::quant::Mode::Affine {
                assert!(!native, "{backend} {}", spec.label());
            }
            if spec.granularity == firebox::quant::Granularity::PerTensor
                && backend.as_str() != "wgpu"
            {
                assert!(
                    native,
                    "{backend} {}: {:?}",
                    spec.label(),
                    report.layers[0].stored
                );
            }
            // Outputs stay close to the float model's (int8 per tensor: well under 1 %).
            let x = inputs(&device);
            let err = max_abs(q.forward_flat(x.clone()), model.forward_flat(x.clone()));
            assert!(err < 0.1, "{backend} {}: output error {err}", spec.label());
            for layer in &report.layers {
                common::report(&format!(
                    "{backend}: {} {} stored as {}",
                    layer.layer,
                    spec.label(),
                    layer.stored.label()
                ));
            }
        }
    }
}

#[test]
fn qat_export_equals_the_fake_quantized_model_on_every_backend() {
    for (backend, device) in common::devices() {
        let device = device.autodiff();
        device.seed(12);
        let model: Mlp = MlpConfig::new(64).init(&device);
        let mut model = prepare_qat(
            model,
            &QatConfig {
                targets: weights(),
                spec: QuantSpec::int4().per_channel(1),
                learned_scale: true,
            },
        )
        .unwrap();
        let x = inputs(&device);
        let target = Tensor::<2>::random([16, 10], Distribution::Default, &device);
        let mut optim = AdamConfig::new().init();
        let loss = |m: &Mlp| (m.forward_flat(x.clone()) - target.clone()).square().mean();
        let first = loss(&model).into_scalar::<f32>();
        for _ in 0..20 {
            let l = loss(&model);
            let grads = GradientsParams::from_grads(l.backward(), &model);
            model = optim.step(1e-2, model, grads);
        }
        let last = loss(&model).into_scalar::<f32>();
        assert!(last < first, "{backend}: QAT loss {first} -> {last}");
        let fake = model.forward_flat(x.clone());
        let (exported, stored) = export_qat(model);
        assert_eq!(stored.len(), 2, "{backend}");
        let err = max_abs(exported.forward_flat(x.clone()), fake);
        assert!(err <= 1e-5, "{backend}: exported vs fake-quantized {err}");
    }
}

#[test]
fn double_rounding_derives_every_width_on_every_backend() {
    for (backend, device) in common::devices() {
        let device = device.autodiff();
        device.seed(13);
        let model: Mlp = MlpConfig::new(64).init(&device);
        let (model, switch) =
            prepare_double_rounding(model, &weights(), QuantSpec::int8().per_channel(1)).unwrap();
        let store = StoredModel::capture(&model);
        let x = inputs(&device);
        for bits in [8, 6, 4, 2] {
            switch.set_all(bits);
            let derived = store.model_at(model.valid(), &BTreeMap::new(), bits);
            let fake = model.forward_flat(x.clone()).inner();
            let err = max_abs(derived.forward_flat(x.clone().inner()), fake);
            assert!(err <= 1e-5, "{backend} {bits} bits: {err}");
        }
    }
}

#[test]
fn activation_quantization_snaps_to_the_calibrated_grid_on_every_backend() {
    for (backend, device) in common::devices() {
        let mut observer = Observer::new("x", QuantSpec::int8().affine()).unwrap();
        let x = inputs(&device).mul_scalar(4.0).sub_scalar(1.0);
        observer.observe(&x);
        let aq = ActivationQuant::from_observer(&observer, false, &device);
        let y = aq.forward(x.clone());
        let scale = aq.scale.val().into_scalar::<f32>();
        let err = max_abs(y.clone(), x);
        assert!(
            err <= scale / 2.0 + 1e-6,
            "{backend}: error {err}, step {scale}"
        );
        let codes = y.div_scalar(scale).add(aq.zero_point.val());
        let off_grid = max_abs(codes.clone(), codes.round());
        assert!(off_grid < 1e-3, "{backend}: off grid by {off_grid}");
    }
}
