//! MoS: parameter counts against the paper's settings, routing invariants, init = base,
//! gradients only on the pools, merge = adapted forward, save → load.

use burn::module::{Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Distribution, Tensor, Tolerance};
use firebox_adapters::{MosConfig, MosModel, Targets, lora_trainable_params, mos_trainable_params};

#[derive(Module, Debug)]
struct Block {
    q: Linear,
    v: Linear,
    up: Linear,
}

#[derive(Module, Debug)]
struct Stack {
    layers: Vec<Block>,
}

impl Stack {
    fn new(n: usize, d: usize, h: usize, device: &Device) -> Self {
        Self {
            layers: (0..n)
                .map(|_| Block {
                    q: LinearConfig::new(d, d).init(device),
                    v: LinearConfig::new(d, d / 2).init(device),
                    up: LinearConfig::new(d, h).init(device),
                })
                .collect(),
        }
    }
    fn forward(&self, mut x: Tensor<2>) -> Tensor<2> {
        let mut out = Vec::new();
        for b in &self.layers {
            x = b.q.forward(x).tanh();
            out.push(b.v.forward(x.clone()).sum() + b.up.forward(x.clone()).sum());
        }
        Tensor::cat(out, 0).reshape([1, self.layers.len()])
    }
}

fn device() -> Device {
    Device::flex().autodiff()
}

/// Llama shapes `(hidden, intermediate, heads, kv_heads, layers)` and the paper's seven
/// projection types q, k, v, o (k, v: hidden·kv/heads outputs), gate, up, down.
fn llama_dims(h: usize, i: usize, heads: usize, kv: usize) -> Vec<(usize, usize)> {
    let kv_out = h * kv / heads;
    vec![
        (h, h),
        (h, kv_out),
        (h, kv_out),
        (h, h),
        (h, i),
        (h, i),
        (i, h),
    ]
}

#[test]
fn parameter_counts_follow_the_formulas_for_the_papers_models() {
    // Values printed by the authors' model_param_summary.txt (Forence1999/MoS@612a314).
    let llama2_7b = llama_dims(4096, 11008, 32, 32);
    assert_eq!(mos_trainable_params(2, 32, &llama2_7b), 4_997_120);
    assert_eq!(mos_trainable_params(8, 32, &llama2_7b), 19_988_480);
    assert_eq!(mos_trainable_params(64, 32, &llama2_7b), 159_907_840);
    let llama3_8b = llama_dims(4096, 14336, 32, 8);
    assert_eq!(mos_trainable_params(1, 32, &llama3_8b), 2_621_440);
    assert_eq!(mos_trainable_params(2, 32, &llama3_8b), 5_242_880);
    // The paper's headline: MoS materialising rank 16 from an equivalent rank of 2 costs 1/8 of
    // LoRA at rank 16.
    let lora = lora_trainable_params(16, 32, &llama2_7b);
    let mos = mos_trainable_params(2, 32, &llama2_7b);
    assert_eq!(lora, 8 * mos);
}

#[test]
fn the_model_trains_exactly_the_pools_and_counts_them_by_the_formula() {
    let device = device();
    let (n, d, h) = (4, 8, 12);
    // r = 5 materialised ranks from v = 2 (p = 1 private), l = 2 shards per vector, L = 4:
    // (r - p) = 4 <= (v - p)·L = 4, the reference's limit.
    let config = MosConfig::new(5, 2, 1, 2, 16.0, Targets::names(["q", "v", "up"]));
    let model = config.attach(Stack::new(n, d, h, &device)).unwrap();
    let dims = [(d, d), (d, d / 2), (d, h)];
    assert_eq!(model.trainable_params(), mos_trainable_params(2, n, &dims));
    assert_eq!(
        2 * lora_trainable_params(5, n, &dims),
        5 * model.trainable_params()
    );
    assert_eq!(model.layers.len(), 3 * n);
    // Routing: r·l indices per factor, private shards owned by one layer, pair dissociation.
    let (r, v, p, l) = (5, 2, 1, 2);
    let shared = (v - p) * n * l;
    for layer in &model.layers {
        assert_eq!(layer.mask_a.len(), r * l);
        assert_eq!(layer.mask_b.len(), r * l);
        let private: Vec<usize> =
            (shared + layer.index * p * l..shared + (layer.index + 1) * p * l).collect();
        assert_eq!(&layer.mask_a[(r - p) * l..], private.as_slice());
        assert!(layer.mask_a[..(r - p) * l].iter().all(|&i| i < shared));
        let mut distinct = layer.mask_a.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), r * l, "shards drawn without replacement");
    }
    assert!(model.layers.iter().any(|l| l.mask_a != l.mask_b));
    let q_types: Vec<&str> = model.layers.iter().map(|l| l.group.as_str()).collect();
    assert_eq!(q_types[0], "layers.*.q");

    let x = Tensor::<2>::random([3, d], Distribution::Default, &device);
    let base = model.base.forward(x.clone());
    model
        .adapted()
        .forward(x.clone())
        .into_data()
        .assert_approx_eq::<f32>(&base.into_data(), Tolerance::absolute(1e-6));

    // Give B values, then only the pools receive gradients.
    let model = randomize_pools(model);
    let loss = model.adapted().forward(x.clone()).sum();
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    assert_eq!(grads.len(), 2 * 3, "one gradient per pool factor");
    for pool in &model.pools {
        assert!(grads.get::<2>(pool.a.id).is_some() && grads.get::<2>(pool.b.id).is_some());
    }
    // Merge = adapted forward.
    let merged = model.merge();
    merged
        .forward(x.clone())
        .into_data()
        .assert_approx_eq::<f32>(
            &model.adapted().forward(x).into_data(),
            Tolerance::absolute(1e-5),
        );
}

fn randomize_pools(mut model: MosModel<Stack>) -> MosModel<Stack> {
    model.pools = model
        .pools
        .into_iter()
        .map(|mut p| {
            let shape = p.b.val().shape();
            let device = p.b.val().device();
            p.b = Param::from_tensor(Tensor::random(
                shape,
                Distribution::Normal(0.0, 0.3),
                &device,
            ));
            p
        })
        .collect();
    model
}

#[test]
fn save_then_load_on_a_fresh_base_gives_identical_outputs() {
    let device = device();
    let base = Stack::new(3, 8, 12, &device);
    let fresh = base.clone();
    let config = MosConfig::new(4, 2, 1, 2, 8.0, Targets::glob(["*.q", "*.up"])).with_seed(7);
    let model = randomize_pools(config.attach(base).unwrap());
    let dir = std::env::temp_dir().join(format!("firebox-mos-{}", std::process::id()));
    model.save_adapter(&config, &dir).unwrap();
    let (loaded, loaded_config) = MosModel::load_adapter(fresh, &dir).unwrap();
    assert_eq!(loaded_config, config);
    assert_eq!(loaded.layers, model.layers);
    let x = Tensor::<2>::random([2, 8], Distribution::Default, &device);
    loaded
        .adapted()
        .forward(x.clone())
        .into_data()
        .assert_eq(&model.adapted().forward(x).into_data(), true);
    let err = MosModel::load_adapter(Stack::new(3, 6, 12, &device), &dir).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("layers.0.q") && text.contains("[6, 6]") && text.contains("[8, 8]"),
        "{text}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_reference_constraints_are_errors_naming_the_values() {
    let device = device();
    let stack = || Stack::new(2, 8, 12, &device);
    let err = MosConfig::new(4, 2, 3, 1, 8.0, Targets::names(["q"]))
        .attach(stack())
        .unwrap_err();
    assert!(err.to_string().contains("p=3"), "{err}");
    let err = MosConfig::new(8, 2, 1, 1, 8.0, Targets::names(["q"]))
        .attach(stack())
        .unwrap_err();
    assert!(err.to_string().contains("shared pool"), "{err}");
    let err = MosConfig::new(2, 1, 0, 3, 8.0, Targets::names(["q"]))
        .attach(stack())
        .unwrap_err();
    assert!(err.to_string().contains("l=3"), "{err}");
    let err = MosConfig::new(2, 1, 0, 1, 8.0, Targets::names(["k"]))
        .attach(stack())
        .unwrap_err();
    assert!(err.to_string().contains("layers.0.q"), "{err}");
}
