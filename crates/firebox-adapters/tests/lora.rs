//! LoRA on a small Burn model: invariants (init = base, merge = unmerged forward, merge →
//! unmerge = base), peft's formulas on hand-computed numbers, gradients only on the factors,
//! named adapters, save → load, and the errors.

use burn::module::{Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, Distribution, Tensor, TensorData, Tolerance};
use firebox_adapters::{
    AdapterControl, AdapterError, LoraAdapters, LoraConfig, LoraForward, LoraInit, Targets,
    inspect, load_lora, save_lora,
};

#[derive(Module, Debug)]
struct Block {
    fc1: Linear,
    fc2: Linear,
}

#[derive(Module, Debug)]
struct Net {
    blocks: Vec<Block>,
    head: Linear,
}

impl Net {
    fn new(d: usize, hidden: usize, device: &Device) -> Self {
        let blocks = (0..2)
            .map(|_| Block {
                fc1: LinearConfig::new(d, hidden).init(device),
                fc2: LinearConfig::new(hidden, d).init(device),
            })
            .collect();
        Self {
            blocks,
            head: LinearConfig::new(d, 3).init(device),
        }
    }

    fn forward(&self, mut x: Tensor<2>) -> Tensor<2> {
        for b in &self.blocks {
            x = x.clone() + b.fc2.forward(b.fc1.forward(x).tanh());
        }
        self.head.forward(x)
    }
}

fn device() -> Device {
    Device::flex().autodiff()
}

fn close(a: Tensor<2>, b: Tensor<2>, tol: f32) {
    a.into_data()
        .assert_approx_eq::<f32>(&b.into_data(), Tolerance::absolute(tol));
}

/// Nonzero `B` so that adapters change the output.
fn perturb<M: Module>(model: M) -> M {
    struct Randomize;
    impl burn::module::ModuleMapper for Randomize {
        fn map_float<const D: usize>(&mut self, p: Param<Tensor<D>>) -> Param<Tensor<D>> {
            if p.is_require_grad() {
                p.map(|t| {
                    let r =
                        Tensor::<D>::random(t.shape(), Distribution::Normal(0.0, 0.5), &t.device());
                    // A fresh leaf: the sum computed off the autodiff graph.
                    Tensor::from_inner(t.inner() + r.inner()).require_grad()
                })
            } else {
                p
            }
        }
    }
    model.map(&mut Randomize)
}

fn config() -> LoraConfig {
    LoraConfig::new(2, 4.0, Targets::names(["fc1", "head"]))
}

#[test]
fn adapted_model_equals_base_at_init_and_b_is_zero() {
    let device = device();
    let base = Net::new(6, 10, &device);
    let x = Tensor::<2>::random([4, 6], Distribution::Default, &device);
    let want = base.forward(x.clone());
    let model = config().attach(base).unwrap();
    close(model.forward(x), want, 1e-6);
    let layers = inspect(&model);
    let names: Vec<&str> = layers.iter().map(|l| l.param.as_str()).collect();
    assert_eq!(
        names,
        ["blocks.0.fc1.weight", "blocks.1.fc1.weight", "head.weight"]
    );
    for l in &layers {
        assert_eq!(l.active.as_deref(), Some("default"));
    }
    // peft's Kaiming-uniform bound 1/sqrt(d_in), B = 0.
    let lora = model.blocks[0].fc1.weight.adapter_slot();
    let a = lora.0.into_data().try_to_vec::<f32>().unwrap();
    let bound = 1.0 / (6f32).sqrt();
    assert!(a.iter().all(|v| v.abs() <= bound) && a.iter().any(|v| *v != 0.0));
    assert!(
        lora.1
            .into_data()
            .try_to_vec::<f32>()
            .unwrap()
            .iter()
            .all(|v| *v == 0.0)
    );
}

trait SlotOf {
    fn adapter_slot(&self) -> (Tensor<2>, Tensor<2>);
}

impl SlotOf for Param<Tensor<2>> {
    fn adapter_slot(&self) -> (Tensor<2>, Tensor<2>) {
        let layer = self
            .reparameterization::<firebox_adapters::LoraLayer>()
            .expect("adapted");
        (
            layer.slots[0].factors.a.val(),
            layer.slots[0].factors.b.val(),
        )
    }
}

#[test]
fn merge_equals_unmerged_forward_and_unmerge_restores_the_base() {
    let device = device();
    let base = Net::new(6, 10, &device);
    let w0 = base.blocks[1].fc1.weight.val();
    let x = Tensor::<2>::random([4, 6], Distribution::Default, &device);
    let model = perturb(config().attach(base).unwrap());
    let unmerged = model.forward(x.clone());
    let merged_model = model.merge_adapter().unwrap();
    let w_merged = merged_model.blocks[1].fc1.weight.base();
    assert!(
        (w_merged.clone() - w0.clone())
            .abs()
            .max()
            .into_scalar::<f32>()
            > 1e-3,
        "merge changed nothing"
    );
    close(merged_model.forward(x.clone()), unmerged.clone(), 1e-5);
    // Merging twice is refused, the model is untouched.
    assert!(matches!(
        merged_model.clone().merge_adapter(),
        Err(AdapterError::AdapterState(_))
    ));
    let restored = merged_model.unmerge_adapter().unwrap();
    close(restored.blocks[1].fc1.weight.base(), w0, 1e-6);
    close(restored.forward(x.clone()), unmerged.clone(), 1e-5);
    // merge_and_unload: plain model, original parameter keys, same output.
    let plain = restored.merge_and_unload().unwrap();
    assert!(inspect(&plain).is_empty());
    assert_eq!(plain.num_params(), Net::new(6, 10, &device).num_params());
    close(plain.forward(x), unmerged, 1e-5);
}

/// peft's formulas on numbers small enough to check by hand.
/// W (torch [out, in]) = [[1, 2], [3, 4]], bias = [0.5, 0]; A (torch [r, in]) = [[0.5, -1], [2, 0.25]];
/// B (torch [out, r]) = [[1, 2], [0, -1]]; r = 2, alpha = 4.
/// B·A = [[4.5, -0.5], [-2, -0.25]].
/// LoRA: s = alpha / r = 2, W' = W + s·B·A = [[10, 1], [-1, 3.5]];
///   x = [1, -1]: y = x·W'ᵀ + b = [10 - 1 + 0.5, -1 - 3.5] = [9.5, -4.5].
/// rsLoRA: s = alpha / √r = 2√2, W' = [[1 + 9√2, 2 - √2], [3 - 4√2, 4 - √2/2]].
#[test]
fn merged_weight_and_output_follow_peft_formulas() {
    let device = device();
    for (rslora, s) in [(false, 2.0f64), (true, 2.0 * 2f64.sqrt())] {
        let base = Linear {
            // Burn orientation: W_burn = W_torchᵀ.
            weight: Param::from_data(TensorData::new(vec![1f32, 3., 2., 4.], [2, 2]), &device),
            bias: Some(Param::from_data(
                TensorData::new(vec![0.5f32, 0.], [2]),
                &device,
            )),
        };
        let cfg = LoraConfig::new(2, 4.0, Targets::regex(".*")).with_rslora(rslora);
        assert!(
            (cfg.scaling() - s).abs() < 1e-12,
            "{} vs {s}",
            cfg.scaling()
        );
        let model = cfg.attach(base).unwrap();
        let model = set_factors(
            model,
            // A_burn = Aᵀ : [in, r], B_burn = Bᵀ : [r, out].
            &[0.5, 2.0, -1.0, 0.25],
            &[1.0, 0.0, 2.0, -1.0],
        );
        let x = Tensor::<2>::from_data(TensorData::new(vec![1f32, -1.], [1, 2]), &device);
        let y = model.forward(x.clone());
        let merged = model.merge_adapter().unwrap();
        let w = merged
            .weight
            .base()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let r2 = 2f64.sqrt();
        let expected_torch = if rslora {
            [1. + 9. * r2, 2. - r2, 3. - 4. * r2, 4. - r2 / 2.]
        } else {
            [10., 1., -1., 3.5]
        };
        // w is Burn [in, out]: w[i][o] = W'_torch[o][i].
        let got_torch = [w[0], w[2], w[1], w[3]];
        for (g, e) in got_torch.iter().zip(expected_torch) {
            assert!(
                (*g as f64 - e).abs() < 1e-5,
                "rslora={rslora}: {got_torch:?} vs {expected_torch:?}"
            );
        }
        let y = y.into_data().try_to_vec::<f32>().unwrap();
        let e0 = expected_torch[0] - expected_torch[1] + 0.5;
        let e1 = expected_torch[2] - expected_torch[3];
        assert!(
            (y[0] as f64 - e0).abs() < 1e-5 && (y[1] as f64 - e1).abs() < 1e-5,
            "{y:?}"
        );
        close(
            merged.forward(x.clone()),
            Tensor::from_data(TensorData::new(vec![e0 as f32, e1 as f32], [1, 2]), &device),
            1e-5,
        );
        // The activation-space forward agrees.
        let unmerged = merged.unmerge_adapter().unwrap();
        close(unmerged.forward_lora(x.clone()), unmerged.forward(x), 1e-5);
    }
}

fn set_factors(model: Linear, a: &[f32], b: &[f32]) -> Linear {
    struct Set(Vec<f32>, Vec<f32>, Vec<String>);
    impl burn::module::ModuleMapper for Set {
        fn enter_module(&mut self, n: &str, _: &str) {
            self.2.push(n.into());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.2.pop();
        }
        fn map_float<const D: usize>(&mut self, p: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let values = match self.2.last().map(String::as_str) {
                Some("a") => self.0.clone(),
                Some("b") => self.1.clone(),
                _ => return p,
            };
            p.map(|t| {
                Tensor::from_data(TensorData::new(values, t.shape()), &t.device()).require_grad()
            })
        }
    }
    model.map(&mut Set(a.to_vec(), b.to_vec(), Vec::new()))
}

#[test]
fn gradients_reach_only_the_adapter_factors_and_training_moves_only_them() {
    let device = device();
    let base = Net::new(6, 10, &device);
    let model = perturb(config().attach(base).unwrap());
    let x = Tensor::<2>::random([8, 6], Distribution::Default, &device);
    let loss = model.forward(x.clone()).powi_scalar(2).mean();
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    let mut with_grad = Vec::new();
    struct Paths<'a>(&'a GradientsParams, Vec<String>, &'a mut Vec<String>);
    impl burn::module::ModuleVisitor for Paths<'_> {
        fn enter_module(&mut self, n: &str, _: &str) {
            self.1.push(n.into());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.1.pop();
        }
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            if self.0.get::<D>(p.id).is_some() {
                self.2.push(self.1.join("."));
            }
        }
    }
    model.visit(&mut Paths(&grads, Vec::new(), &mut with_grad));
    assert_eq!(with_grad.len(), 6, "{with_grad:?}");
    assert!(
        with_grad.iter().all(|p| p.contains(".lora.default.")),
        "{with_grad:?}"
    );

    let w_before = model.blocks[0].fc1.weight.base();
    let bias_before = model.blocks[0].fc2.bias.as_ref().unwrap().val();
    let a_before = model.blocks[0].fc1.weight.adapter_slot().0;
    let mut optim = AdamConfig::new().init();
    let model = optim.step(1e-2, model, grads);
    close(model.blocks[0].fc1.weight.base(), w_before, 0.0);
    let bias_after = model.blocks[0].fc2.bias.as_ref().unwrap().val();
    bias_after
        .into_data()
        .assert_eq(&bias_before.into_data(), true);
    let a_after = model.blocks[0].fc1.weight.adapter_slot().0;
    assert!((a_after - a_before).abs().max().into_scalar::<f32>() > 1e-4);
}

#[test]
fn named_adapters_switch_and_disable_like_peft() {
    let device = device();
    let base = Net::new(6, 10, &device);
    let x = Tensor::<2>::random([4, 6], Distribution::Default, &device);
    let y_base = base.forward(x.clone());
    let adapters = LoraAdapters::new()
        .with("first", LoraConfig::new(2, 4.0, Targets::names(["fc1"])))
        .with(
            "second",
            LoraConfig::new(4, 8.0, Targets::glob(["*.fc2", "head"])).with_rslora(true),
        );
    let model = perturb(adapters.attach(base).unwrap());
    let y_first = model.forward(x.clone());
    let model = model.set_adapter("second").unwrap();
    let y_second = model.forward(x.clone());
    assert!(
        (y_first.clone() - y_second.clone())
            .abs()
            .max()
            .into_scalar::<f32>()
            > 1e-3
    );
    for l in inspect(&model) {
        let expect = l
            .names
            .contains(&"second".to_string())
            .then(|| "second".to_string());
        assert_eq!(l.active, expect, "{}", l.param);
    }
    let disabled = model.disable_adapters().unwrap();
    close(disabled.forward(x.clone()), y_base, 1e-6);
    let back = disabled.set_adapter("first").unwrap();
    close(back.forward(x.clone()), y_first, 1e-6);
    let err = back.set_adapter("third").unwrap_err();
    assert!(
        err.to_string().contains("third") && err.to_string().contains("second"),
        "{err}"
    );
}

#[test]
fn valid_models_keep_the_adapter_and_drop_dropout() {
    let device = device();
    let base = Net::new(6, 10, &device);
    let x = Tensor::<2>::random([4, 6], Distribution::Default, &device);
    let model = perturb(config().with_dropout(0.5).attach(base).unwrap());
    let eval = model.valid();
    let y1 = eval.forward(x.clone().inner());
    let y2 = eval.forward(x.clone().inner());
    close(y1.clone(), y2, 0.0);
    // Training forward with dropout differs from the deterministic one.
    let y_train = model.forward(x.clone());
    assert!((y_train.inner() - y1).abs().max().into_scalar::<f32>() > 1e-4);
    // forward_lora (peft's per-element dropout) is deterministic in valid mode and equals forward.
    let layer = &eval.blocks[0].fc1;
    let h = Tensor::<2>::random([4, 6], Distribution::Default, &layer.weight.val().device());
    close(layer.forward_lora(h.clone()), layer.forward(h), 1e-5);
}

#[test]
fn save_then_load_on_a_fresh_base_gives_identical_outputs() {
    let device = device();
    let base = Net::new(6, 10, &device);
    let fresh_base = base.clone();
    let adapters = LoraAdapters::new().with("default", config()).with(
        "other",
        LoraConfig::new(3, 3.0, Targets::names(["fc2"])).with_init(LoraInit::Gaussian { std: 0.1 }),
    );
    let model = perturb(adapters.attach(base).unwrap())
        .set_adapter("other")
        .unwrap();
    let x = Tensor::<2>::random([4, 6], Distribution::Default, &device);
    let dir = std::env::temp_dir().join(format!("firebox-lora-{}", std::process::id()));
    save_lora(&model, &adapters, &dir).unwrap();
    let size = std::fs::metadata(dir.join(firebox_adapters::io::WEIGHTS_FILE))
        .unwrap()
        .len();
    // Only adapter tensors: 2 fc1 (6x2 + 2x10) + head (6x2 + 2x3) + 2 fc2 (10x3 + 3x6) floats.
    let floats = 2 * (12 + 20) + (12 + 6) + 2 * (30 + 18);
    assert!(
        size as usize >= floats * 4 && (size as usize) < floats * 4 + 4096,
        "{size}"
    );
    let (loaded, config) = load_lora(fresh_base, &dir).unwrap();
    assert_eq!(config, adapters);
    let loaded = loaded.set_adapter("other").unwrap();
    close(loaded.forward(x.clone()), model.forward(x.clone()), 0.0);
    let loaded = loaded.set_adapter("default").unwrap();
    let model = model.set_adapter("default").unwrap();
    close(loaded.forward(x.clone()), model.forward(x), 0.0);

    // A base model of another width: the error names the layer and both shapes.
    let err = load_lora(Net::new(5, 10, &device), &dir).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, AdapterError::ShapeMismatch { .. }), "{text}");
    assert!(
        text.contains("blocks.0.fc1") && text.contains("[5, 2]") && text.contains("[6, 2]"),
        "{text}"
    );
    // A missing directory names the file.
    let err = load_lora(Net::new(6, 10, &device), dir.join("nope")).unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_targets_and_configs_are_errors_naming_the_problem() {
    let device = device();
    let err = LoraConfig::new(2, 4.0, Targets::names(["query"]))
        .attach(Net::new(6, 10, &device))
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("query") && text.contains("blocks.0.fc1"),
        "{text}"
    );
    let err = LoraConfig::new(0, 4.0, Targets::names(["fc1"]))
        .attach(Net::new(6, 10, &device))
        .unwrap_err();
    assert!(err.to_string().contains("rank"), "{err}");
    let err = config()
        .with_dropout(1.0)
        .attach(Net::new(6, 10, &device))
        .unwrap_err();
    assert!(err.to_string().contains("dropout"), "{err}");
    let model = config().attach(Net::new(6, 10, &device)).unwrap();
    let err = config().attach(model).unwrap_err();
    assert!(err.to_string().contains("already carries"), "{err}");
    let plain = Net::new(6, 10, &device);
    assert!(
        plain
            .merge_adapter()
            .unwrap_err()
            .to_string()
            .contains("no LoRA adapters")
    );
}

/// Burn's lazily initialised parameters share their pending initialisation between clones;
/// attaching adapters to a clone of a never-run model must not freeze the original.
#[test]
fn attaching_to_a_clone_leaves_the_original_trainable() {
    let device = device();
    let original = Net::new(6, 10, &device);
    let _adapted = config().attach(original.clone()).unwrap();
    let _mos = firebox_adapters::MosConfig::new(1, 1, 0, 1, 1.0, Targets::names(["fc1"]))
        .attach(original.clone())
        .unwrap();
    let x = Tensor::<2>::random([4, 6], Distribution::Default, &device);
    let grads = GradientsParams::from_grads(original.forward(x).sum().backward(), &original);
    assert_eq!(grads.len(), original.num_params_tensors());
}

trait CountTensors {
    fn num_params_tensors(&self) -> usize;
}

impl<M: Module> CountTensors for M {
    fn num_params_tensors(&self) -> usize {
        struct Count(usize);
        impl burn::module::ModuleVisitor for Count {
            fn visit_float<const D: usize>(&mut self, _: &Param<Tensor<D>>) {
                self.0 += 1;
            }
        }
        let mut c = Count(0);
        self.visit(&mut c);
        c.0
    }
}
