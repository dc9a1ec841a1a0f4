//! LoRA as HF peft defines it ("LoRA: Low-Rank Adaptation of Large Language Models", Hu et al.
//! 2021, eq. 3: `h = W₀x + ΔWx = W₀x + B·A·x`, scaled by `α/r`; rsLoRA, Kalajdzievski 2023:
//! scale `α/√r`), attached to any Burn model by module path.
//!
//! ```
//! use burn::nn::{Linear, LinearConfig};
//! use burn::tensor::{Device, Tensor};
//! use firebox_adapters::{AdapterControl, LoraConfig, Targets};
//!
//! let device = Device::flex().autodiff();
//! let base = LinearConfig::new(8, 4).init(&device);
//! let x = Tensor::<2>::ones([2, 8], &device);
//! let before = base.forward(x.clone());
//! // Rank 2, alpha 4, on every layer whose path ends with "" (the model is the layer itself).
//! let model: Linear = LoraConfig::new(2, 4.0, Targets::regex(".*"))
//!     .attach(base)
//!     .unwrap();
//! // B starts at zero: the adapted model equals the base model.
//! let after = model.forward(x);
//! after.into_data().assert_approx_eq::<f32>(&before.into_data(), Default::default());
//! let merged = model.merge_and_unload().unwrap(); // plain Linear again
//! # let _ = merged;
//! ```

use burn::module::{Module, ModuleVisitor, Param, Reparameterizer};
use burn::tensor::{Distribution, Tensor};
use serde::{Deserialize, Serialize};

use crate::AdapterError;
use crate::lora_layer::{LoraFactors, LoraLayer, LoraSlot};
use crate::target::{TargetMatcher, Targets, layer_of_weight};

/// How a new adapter's factors are initialised.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, Default)]
pub enum LoraInit {
    /// peft's default (`init_lora_weights=True`): `A` Kaiming-uniform with `a = √5`, i.e.
    /// `U(−1/√d_in, 1/√d_in)`, and `B = 0`.
    #[default]
    PeftKaiming,
    /// Burn's [`burn::module::Lora`] default: `A ~ N(0, std²)`, `B = 0`.
    Gaussian {
        /// Standard deviation of `A` (Burn uses `1/r`).
        std: f64,
    },
}

/// One LoRA adapter's hyperparameters (peft's `LoraConfig`; `bias = "none"`,
/// `fan_in_fan_out = False`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    /// Rank `r` of `ΔW = B·A`.
    pub rank: usize,
    /// `lora_alpha`.
    pub alpha: f64,
    /// rsLoRA scaling `α/√r` instead of `α/r`.
    pub use_rslora: bool,
    /// `lora_dropout`: dropout probability on the adapter input (see [`LoraLayer`]).
    pub dropout: f64,
    /// The layers adapted.
    pub targets: Targets,
    /// Initialisation of `A` (and `B = 0`).
    pub init: LoraInit,
}

impl LoraConfig {
    /// Rank `r`, `alpha`, targets; peft's defaults otherwise (no rsLoRA, dropout 0, Kaiming `A`).
    pub fn new(rank: usize, alpha: f64, targets: Targets) -> Self {
        Self {
            rank,
            alpha,
            use_rslora: false,
            dropout: 0.0,
            targets,
            init: LoraInit::PeftKaiming,
        }
    }

    /// rsLoRA scaling `α/√r`.
    pub fn with_rslora(mut self, use_rslora: bool) -> Self {
        self.use_rslora = use_rslora;
        self
    }

    /// Dropout on the adapter input.
    pub fn with_dropout(mut self, dropout: f64) -> Self {
        self.dropout = dropout;
        self
    }

    /// Initialisation of `A`.
    pub fn with_init(mut self, init: LoraInit) -> Self {
        self.init = init;
        self
    }

    /// peft's `scaling`: `α/r`, or `α/√r` with rsLoRA.
    pub fn scaling(&self) -> f64 {
        if self.use_rslora {
            self.alpha / (self.rank as f64).sqrt()
        } else {
            self.alpha / self.rank as f64
        }
    }

    fn validate(&self, name: &str) -> Result<(), AdapterError> {
        let bad = |m: String| Err(AdapterError::BadConfig(format!("adapter `{name}`: {m}")));
        if self.rank == 0 {
            return bad("rank must be at least 1".into());
        }
        if !self.alpha.is_finite() {
            return bad(format!("alpha must be finite, got {}", self.alpha));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!("dropout must lie in [0, 1), got {}", self.dropout));
        }
        if let LoraInit::Gaussian { std } = self.init
            && !(std.is_finite() && std >= 0.0)
        {
            return bad(format!("init std must be finite and >= 0, got {std}"));
        }
        Ok(())
    }

    /// Attaches this adapter under the name `"default"` (peft's `get_peft_model`); see
    /// [`LoraAdapters::attach`].
    pub fn attach<M: Module>(&self, model: M) -> Result<M, AdapterError> {
        LoraAdapters::new()
            .with("default", self.clone())
            .attach(model)
    }
}

/// A named adapter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NamedLora {
    /// The adapter's name (path component of its parameters).
    pub name: String,
    /// Its hyperparameters.
    pub config: LoraConfig,
}

/// The set of named LoRA adapters of a model (peft's `get_peft_model` + `add_adapter`), attached
/// in one pass; this is also what an adapter file's config records.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LoraAdapters {
    /// Adapters in creation order; the first is active after [`attach`](Self::attach).
    pub adapters: Vec<NamedLora>,
}

impl LoraAdapters {
    /// No adapters yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a named adapter.
    pub fn with(mut self, name: impl Into<String>, config: LoraConfig) -> Self {
        self.adapters.push(NamedLora {
            name: name.into(),
            config,
        });
        self
    }

    /// Attaches every adapter to the layers its targets select, as a Burn
    /// [`Reparameterization`](burn::module::Reparameterization) of each selected weight
    /// ([`LoraLayer`]); the first adapter is active.
    ///
    /// Every existing float parameter is frozen (no gradient, no optimizer state); only the
    /// factors train. The model is checked before it is touched: an adapter whose targets match
    /// no layer, a targeted weight that is not 2-D, duplicate names, bad hyperparameters and a
    /// model that already carries adapters are errors (Burn keeps a parameter's first
    /// reparameterization, so all adapters of a model are attached together).
    pub fn attach<M: Module>(&self, model: M) -> Result<M, AdapterError> {
        let matchers = self.check(&model)?;
        let attacher = Attacher {
            adapters: self
                .adapters
                .iter()
                .zip(matchers)
                .map(|(a, m)| (a.clone(), m))
                .collect(),
        };
        Ok(model.apply_reparameterization(attacher))
    }

    /// The layers each adapter would attach to, checking everything [`attach`](Self::attach)
    /// checks.
    pub fn resolve<M: Module>(&self, model: &M) -> Result<Vec<Vec<String>>, AdapterError> {
        let matchers = self.check(model)?;
        let params = float_params(model);
        Ok(matchers
            .iter()
            .map(|m| {
                params
                    .iter()
                    .filter_map(|(path, _)| layer_of_weight(path))
                    .filter(|layer| m.matches(layer))
                    .map(str::to_string)
                    .collect()
            })
            .collect())
    }

    fn check<M: Module>(&self, model: &M) -> Result<Vec<TargetMatcher>, AdapterError> {
        if self.adapters.is_empty() {
            return Err(AdapterError::BadConfig("no adapters to attach".into()));
        }
        for (i, a) in self.adapters.iter().enumerate() {
            a.config.validate(&a.name)?;
            if a.name.is_empty() || a.name.contains('.') {
                return Err(AdapterError::BadConfig(format!(
                    "adapter name `{}` must be non-empty and contain no `.`",
                    a.name
                )));
            }
            if self.adapters[..i].iter().any(|b| b.name == a.name) {
                return Err(AdapterError::BadConfig(format!(
                    "adapter name `{}` is used twice",
                    a.name
                )));
            }
        }
        let params = float_params(model);
        if let Some((path, _)) = params.iter().find(|(p, _)| p.contains(".lora.")) {
            return Err(AdapterError::AdapterState(format!(
                "the model already carries LoRA adapters (`{path}`); attach every adapter in one LoraAdapters set, or merge_and_unload first"
            )));
        }
        let layers: Vec<(&str, usize)> = params
            .iter()
            .filter_map(|(p, shape)| layer_of_weight(p).map(|l| (l, shape.len())))
            .collect();
        let mut matchers = Vec::new();
        for a in &self.adapters {
            let matcher = a.config.targets.matcher()?;
            let hits: Vec<&(&str, usize)> =
                layers.iter().filter(|(l, _)| matcher.matches(l)).collect();
            if hits.is_empty() {
                return Err(AdapterError::NoMatch {
                    adapter: a.name.clone(),
                    targets: a.config.targets.to_string(),
                    available: layers
                        .iter()
                        .filter(|(_, r)| *r == 2)
                        .map(|(l, _)| l.to_string())
                        .collect(),
                });
            }
            if let Some((layer, rank)) = hits.iter().find(|(_, r)| *r != 2) {
                return Err(AdapterError::NotAMatrix {
                    layer: layer.to_string(),
                    rank: *rank,
                });
            }
            matchers.push(matcher);
        }
        Ok(matchers)
    }
}

/// `(path, shape)` of every float parameter, in module order.
pub(crate) fn float_params<M: Module>(model: &M) -> Vec<(String, Vec<usize>)> {
    struct Collect {
        path: Vec<String>,
        out: Vec<(String, Vec<usize>)>,
    }
    impl ModuleVisitor for Collect {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.out
                .push((self.path.join("."), param.lazy_shape().as_slice().to_vec()));
        }
    }
    let mut collect = Collect {
        path: Vec::new(),
        out: Vec::new(),
    };
    model.visit(&mut collect);
    collect.out
}

/// Freezes a parameter without touching other modules that share it.
///
/// Burn's lazily initialised parameters share their pending initialisation between clones, and
/// `Param::set_require_grad` on a parameter that is still lazy writes the flag into that shared
/// record: freezing the adapted copy would freeze the caller's original model as well (Burn
/// 0.22.1). Materialising the value first makes `set_require_grad` act on this copy only.
pub(crate) fn freeze<const D: usize>(param: Param<Tensor<D>>) -> Param<Tensor<D>> {
    let _ = param.base();
    param.set_require_grad(false)
}

struct Attacher {
    adapters: Vec<(NamedLora, TargetMatcher)>,
}

impl Reparameterizer for Attacher {
    type Reparam = LoraLayer;

    fn reparameterize<const D: usize>(
        &mut self,
        path: &str,
        param: Param<Tensor<D>>,
    ) -> (Param<Tensor<D>>, Option<LoraLayer>) {
        let param = freeze(param);
        let Some(layer) = layer_of_weight(path) else {
            return (param, None);
        };
        if D != 2 {
            return (param, None);
        }
        let selected: Vec<&NamedLora> = self
            .adapters
            .iter()
            .filter(|(_, m)| m.matches(layer))
            .map(|(a, _)| a)
            .collect();
        if selected.is_empty() {
            return (param, None);
        }
        let shape = param.lazy_shape();
        let (d_in, d_out) = (shape[0], shape[1]);
        let device = param.lazy_device();
        let first = self.adapters[0].0.name.clone();
        let slots: Vec<LoraSlot> = selected
            .into_iter()
            .map(|named| {
                let c = &named.config;
                let a = match c.init {
                    LoraInit::PeftKaiming => {
                        let bound = 1.0 / (d_in as f64).sqrt();
                        Tensor::<2>::random(
                            [d_in, c.rank],
                            Distribution::Uniform(-bound, bound),
                            &device,
                        )
                    }
                    LoraInit::Gaussian { std } => {
                        Tensor::<2>::random([d_in, c.rank], Distribution::Normal(0.0, std), &device)
                    }
                };
                let b = Tensor::<2>::zeros([c.rank, d_out], &device);
                LoraSlot {
                    name: named.name.clone(),
                    factors: LoraFactors {
                        a: Param::from_tensor(a),
                        b: Param::from_tensor(b),
                    },
                    scale: c.scaling(),
                    dropout: c.dropout,
                }
            })
            .collect();
        // peft: the adapter given to `get_peft_model` is the active one.
        let active = slots.iter().position(|s| s.name == first);
        (
            param,
            Some(LoraLayer {
                slots,
                active,
                merged: None,
            }),
        )
    }
}
