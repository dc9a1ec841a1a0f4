//! LoRA and MoS on every backend (flex, ndarray, wgpu): a training step moves only the adapter,
//! merge equals the unmerged forward, unmerge restores the base, save → load onto a fresh base
//! reproduces the outputs. (Exact numbers against peft and the MoS code: `tests/parity.rs`
//! replays `tests/fixtures/adapters` on every backend.)

mod common;

use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::{Device, Distribution, Tensor, Tolerance};
use firebox::adapters::{
    AdapterControl, LoraAdapters, LoraConfig, MosConfig, MosModel, Targets, load_lora, save_lora,
};
use firebox::models::{Mlp, MlpConfig};

fn max_abs(a: Tensor<2>, b: Tensor<2>) -> f32 {
    (a - b).abs().max().into_scalar::<f32>()
}

fn step<M: Module>(model: M, loss: Tensor<1>) -> M {
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    AdamWConfig::new().init().step(1e-2, model, grads)
}

fn inputs(device: &Device) -> Tensor<2> {
    Tensor::random([16, 64], Distribution::Default, device)
}

#[test]
fn lora_trains_merges_and_reloads_on_every_backend() {
    for (backend, device) in common::devices() {
        let device = device.autodiff();
        let base: Mlp = MlpConfig::new(64).init(&device);
        let fresh = base.clone();
        let x = inputs(&device);
        let y_base = base.forward_flat(x.clone());
        let adapters = LoraAdapters::new().with(
            "digits",
            LoraConfig::new(4, 8.0, Targets::names(["hidden", "output"])),
        );
        let model = adapters.attach(base).unwrap();
        let w0 = model.hidden.weight.base();
        assert!(
            max_abs(model.forward_flat(x.clone()), y_base.clone()) < 1e-6,
            "{backend}: init != base"
        );
        let mut model = model;
        for _ in 0..3 {
            let loss = model.forward_flat(x.clone()).powi_scalar(2).mean();
            model = step(model, loss);
        }
        let y = model.forward_flat(x.clone());
        assert!(
            max_abs(y.clone(), y_base.clone()) > 1e-3,
            "{backend}: training changed nothing"
        );
        assert_eq!(
            max_abs(model.hidden.weight.base(), w0.clone()),
            0.0,
            "{backend}: base moved"
        );
        let merged = model.clone().merge_adapter().unwrap();
        assert!(
            max_abs(merged.forward_flat(x.clone()), y.clone()) < 1e-4,
            "{backend}: merge"
        );
        let restored = merged.unmerge_adapter().unwrap();
        assert!(
            max_abs(restored.hidden.weight.base(), w0) < 1e-5,
            "{backend}: unmerge"
        );
        let dir =
            std::env::temp_dir().join(format!("firebox-adapters-{backend}-{}", std::process::id()));
        save_lora(&model, &adapters, &dir).unwrap();
        let (loaded, _) = load_lora(fresh, &dir).unwrap();
        loaded
            .forward_flat(x.clone())
            .into_data()
            .assert_approx_eq::<f32>(&y.into_data(), Tolerance::absolute(1e-6));
        std::fs::remove_dir_all(dir).unwrap();
        let plain = model.merge_and_unload().unwrap();
        assert_eq!(
            plain.num_params(),
            MlpConfig::new(64).init(&device).num_params()
        );
    }
}

#[derive(Module, Debug)]
struct Deep {
    layers: Vec<burn::nn::Linear>,
}

impl Deep {
    fn forward(&self, mut x: Tensor<2>) -> Tensor<2> {
        for l in &self.layers {
            x = x.clone() + l.forward(x).tanh();
        }
        x
    }
}

#[test]
fn mos_trains_only_its_pools_on_every_backend() {
    for (backend, device) in common::devices() {
        let device = device.autodiff();
        let base = Deep {
            layers: (0..4)
                .map(|_| burn::nn::LinearConfig::new(64, 64).init(&device))
                .collect(),
        };
        let x = inputs(&device);
        let y_base = base.forward(x.clone());
        let model = MosConfig::new(4, 1, 0, 2, 8.0, Targets::glob(["layers.*"]))
            .attach(base)
            .unwrap();
        assert!(
            max_abs(model.adapted().forward(x.clone()), y_base.clone()) < 1e-6,
            "{backend}"
        );
        let w0 = model.base.layers[2].weight.val();
        let mut model: MosModel<Deep> = model;
        for _ in 0..3 {
            let loss = model.adapted().forward(x.clone()).powi_scalar(2).mean();
            model = step(model, loss);
        }
        let y = model.adapted().forward(x.clone());
        assert!(
            max_abs(y.clone(), y_base) > 1e-3,
            "{backend}: training changed nothing"
        );
        assert_eq!(
            max_abs(model.base.layers[2].weight.val(), w0),
            0.0,
            "{backend}: base moved"
        );
        assert!(
            max_abs(model.merge().forward(x), y) < 1e-4,
            "{backend}: merge"
        );
    }
}
