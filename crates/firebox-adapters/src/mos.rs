//! MoS, Mixture of Shards ("MoS: Unleashing Parameter Efficiency of Low-Rank Adaptation with
//! Mixture of Shards", Wang et al., ICLR 2025, arXiv:2410.00938; reference code Forence1999/MoS
//! `modules/Tied_LoRA.py`).
//!
//! LoRA gives every layer its own `A`, `B`. MoS keeps, per projection *type* (the layers that
//! repeat across blocks, e.g. every `blocks.*.attn.q`), one **global pool** of shards shared by
//! all `L` layers of that type, and builds each layer's rank-`r` factors from a subset of them:
//!
//! - **Vector sharding**: a rank vector of `A` (length `d_in`) is the concatenation of `l` shards
//!   of length `d_in / l`; likewise the columns of `B` (shards of `d_out / l`). Pools:
//!   `pool_A : [v·L·l, d_in/l]`, `pool_B : [v·L·l, d_out/l]` (the reference stores `pool_B`
//!   transposed, `[d_out/l, v·L·l]`).
//! - **Subset selection (router)**: layer `i` picks `(r − p)·l` shards from the shared region
//!   `[0, (v − p)·L·l)` (a fixed random index list drawn once, as in the reference code: no
//!   learned gating), followed by its private shards.
//! - **Shard privatisation**: layer `i` owns the `p·l` shards
//!   `(v − p)·L·l + [i·p·l, (i + 1)·p·l)`, used by no other layer.
//! - **Pair dissociation**: `A` and `B` draw their index lists independently.
//!
//! Materialisation (`transform_chunks`): rank row `j` of `A` concatenates pool-A rows
//! `mask_A[j·l .. j·l + l]`; row `j` of `Bᵀ` concatenates pool-B rows `mask_B[j·l .. j·l + l]`.
//! Delta (Burn orientation): `ΔW = s · Aᵀ·B`, `s = α / r`, added to the layer's frozen weight.
//!
//! **Parameter count** (only the pools train):
//! `P_MoS = v · L · Σ_types (d_in + d_out)`, the count of LoRA at rank `v`, independent of `r`,
//! `p` and `l`; LoRA at the rank `r` MoS materialises costs `P_LoRA = r · L · Σ_types (d_in +
//! d_out)`, so the saving is `r / v` (the paper's "about 8x" at `r = 8·v`). See
//! [`mos_trainable_params`], [`lora_trainable_params`].
//!
//! Shared pools do not fit Burn's reparameterization (one parameter must belong to one place of
//! the module tree, or the optimizer would update its copies apart), so MoS wraps the model:
//! [`MosModel`] owns the frozen base model and the pools, and [`MosModel::adapted`] returns the
//! base model with every target weight replaced by `W₀ + ΔW` on the pools' autodiff graph. Run
//! the forward on that; step the optimizer on the [`MosModel`].

use std::collections::BTreeMap;

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::AdapterError;
use crate::lora::float_params;
use crate::target::{Targets, layer_of_weight};

/// MoS hyperparameters (reference names in brackets).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MosConfig {
    /// `r` [`lora_r`]: rank of each layer's materialised `A`, `B`.
    pub rank: usize,
    /// `v` [`valid_param_lora_r`]: equivalent rank of the trainable budget.
    pub equivalent_rank: usize,
    /// `p` [`valid_param_private_r`]: private ranks per layer.
    pub private_rank: usize,
    /// `l` [`num_chunk_per_vec`]: shards per vector.
    pub shards_per_vector: usize,
    /// `lora_alpha`; the scaling is `alpha / rank`.
    pub alpha: f64,
    /// Draw `A`'s and `B`'s shard lists independently (pair dissociation); `false` shares one list.
    pub pair_dissociation: bool,
    /// Layers adapted; grouped into types by their path with numeric components as `*`.
    pub targets: Targets,
    /// Seed of the shard index lists.
    pub seed: u64,
}

impl MosConfig {
    /// The paper's main setting shape: `r`, `v`, `p`, `l`, `alpha`, targets; pair dissociation on.
    pub fn new(
        rank: usize,
        equivalent_rank: usize,
        private_rank: usize,
        shards_per_vector: usize,
        alpha: f64,
        targets: Targets,
    ) -> Self {
        Self {
            rank,
            equivalent_rank,
            private_rank,
            shards_per_vector,
            alpha,
            pair_dissociation: true,
            targets,
            seed: 0,
        }
    }

    /// Seed of the router's index lists.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Pair dissociation on or off.
    pub fn with_pair_dissociation(mut self, on: bool) -> Self {
        self.pair_dissociation = on;
        self
    }

    /// `alpha / rank`.
    pub fn scaling(&self) -> f64 {
        self.alpha / self.rank as f64
    }

    /// The reference code's constraints, for a type of `layers` layers with `d_in`, `d_out`.
    pub fn validate(
        &self,
        group: &str,
        layers: usize,
        d_in: usize,
        d_out: usize,
    ) -> Result<(), AdapterError> {
        let (r, v, p, l) = (
            self.rank,
            self.equivalent_rank,
            self.private_rank,
            self.shards_per_vector,
        );
        let bad = |m: String| Err(AdapterError::BadConfig(format!("MoS on `{group}`: {m}")));
        if r == 0 || v == 0 || l == 0 {
            return bad(format!(
                "rank r={r}, equivalent rank v={v} and shards l={l} must be >= 1"
            ));
        }
        if p > v {
            return bad(format!("private rank p={p} exceeds equivalent rank v={v}"));
        }
        if p > r {
            return bad(format!("private rank p={p} exceeds rank r={r}"));
        }
        if p == v && v != r {
            return bad(format!(
                "p = v = {v} leaves no shared shards, which needs v == r (r={r})"
            ));
        }
        if (r - p) > (v - p) * layers {
            return bad(format!(
                "(r - p) = {} shared ranks per layer exceed the shared pool (v - p)·L = {}",
                r - p,
                (v - p) * layers
            ));
        }
        if !d_in.is_multiple_of(l) || !d_out.is_multiple_of(l) {
            return bad(format!(
                "d_in={d_in} and d_out={d_out} must be divisible by l={l}"
            ));
        }
        if !self.alpha.is_finite() {
            return bad(format!("alpha must be finite, got {}", self.alpha));
        }
        Ok(())
    }

    /// Wraps `model` with MoS adapters on the targeted layers (pools: `A` Kaiming-uniform as an
    /// `nn.Linear(d_in/l, v·L·l)` weight, `U(−1/√(d_in/l), 1/√(d_in/l))`; `B = 0`, so the adapted
    /// model starts equal to the base). The base model's parameters are frozen.
    pub fn attach<M: Module>(&self, model: M) -> Result<MosModel<M>, AdapterError> {
        let groups = self.groups(&model)?;
        let device = model
            .devices()
            .first()
            .cloned()
            .ok_or_else(|| AdapterError::BadConfig("the model has no parameters".into()))?;
        let mut rng = StdRng::seed_from_u64(self.seed);
        let (mut pools, mut layers) = (Vec::new(), Vec::new());
        for (pool, group) in groups.into_iter().enumerate() {
            let (d_in, d_out) = (group.d_in, group.d_out);
            let n_layers = group.params.len();
            let size = self.equivalent_rank * n_layers * self.shards_per_vector;
            let (sa, sb) = (
                d_in / self.shards_per_vector,
                d_out / self.shards_per_vector,
            );
            let bound = 1.0 / (sa as f64).sqrt();
            pools.push(ShardPool {
                a: Param::from_tensor(Tensor::random(
                    [size, sa],
                    Distribution::Uniform(-bound, bound),
                    &device,
                )),
                b: Param::from_tensor(Tensor::zeros([size, sb], &device)),
            });
            for (index, param) in group.params.into_iter().enumerate() {
                let (mask_a, mask_b) = self.route(index, n_layers, &mut rng);
                layers.push(MosLayer {
                    param,
                    group: group.name.clone(),
                    pool,
                    index,
                    d_in,
                    d_out,
                    mask_a,
                    mask_b,
                });
            }
        }
        Ok(MosModel::from_parts(model, self.scaling(), pools, layers))
    }

    /// Layer `index`'s shard lists: `(r−p)·l` shared shards drawn without replacement from the
    /// shared region, then its `p·l` private ones; drawn separately for `A` and `B` with pair
    /// dissociation.
    fn route(&self, index: usize, layers: usize, rng: &mut StdRng) -> (Vec<usize>, Vec<usize>) {
        let (r, v, p, l) = (
            self.rank,
            self.equivalent_rank,
            self.private_rank,
            self.shards_per_vector,
        );
        let shared = (v - p) * layers * l;
        let private: Vec<usize> = (shared + index * p * l..shared + (index + 1) * p * l).collect();
        let draw = |rng: &mut StdRng| {
            let mut perm: Vec<usize> = (0..shared).collect();
            perm.shuffle(rng);
            perm.truncate((r - p) * l);
            perm.extend(&private);
            perm
        };
        let a = draw(rng);
        let b = if self.pair_dissociation {
            draw(rng)
        } else {
            a.clone()
        };
        (a, b)
    }

    fn groups<M: Module>(&self, model: &M) -> Result<Vec<Group>, AdapterError> {
        let matcher = self.targets.matcher()?;
        let params = float_params(model);
        let mut groups: BTreeMap<String, Group> = BTreeMap::new();
        let mut order = Vec::new();
        for (path, shape) in &params {
            let Some(layer) = layer_of_weight(path) else {
                continue;
            };
            if !matcher.matches(layer) {
                continue;
            }
            if shape.len() != 2 {
                return Err(AdapterError::NotAMatrix {
                    layer: layer.to_string(),
                    rank: shape.len(),
                });
            }
            let name = type_of(layer);
            let group = groups.entry(name.clone()).or_insert_with(|| {
                order.push(name.clone());
                Group {
                    name: name.clone(),
                    d_in: shape[0],
                    d_out: shape[1],
                    params: Vec::new(),
                }
            });
            if (group.d_in, group.d_out) != (shape[0], shape[1]) {
                return Err(AdapterError::BadConfig(format!(
                    "MoS type `{name}` mixes shapes: `{layer}` is {:?}, earlier layers [{}, {}]",
                    shape, group.d_in, group.d_out
                )));
            }
            group.params.push(path.clone());
        }
        if order.is_empty() {
            return Err(AdapterError::NoMatch {
                adapter: "mos".into(),
                targets: self.targets.to_string(),
                available: params
                    .iter()
                    .filter(|(_, s)| s.len() == 2)
                    .filter_map(|(p, _)| layer_of_weight(p).map(str::to_string))
                    .collect(),
            });
        }
        let groups: Vec<Group> = order
            .into_iter()
            .map(|n| groups.remove(&n).expect("inserted above"))
            .collect();
        for g in &groups {
            self.validate(&g.name, g.params.len(), g.d_in, g.d_out)?;
        }
        Ok(groups)
    }
}

struct Group {
    name: String,
    d_in: usize,
    d_out: usize,
    params: Vec<String>,
}

/// A layer path's projection type: numeric components become `*`
/// (`blocks.3.attn.q` → `blocks.*.attn.q`).
pub fn type_of(layer: &str) -> String {
    layer
        .split('.')
        .map(|c| {
            if !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit()) {
                "*"
            } else {
                c
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// The shared shard pool of one projection type (trainable).
#[derive(Module, Debug)]
pub struct ShardPool {
    /// `[v·L·l, d_in/l]`: rows are shards of `A`'s rank vectors.
    pub a: Param<Tensor<2>>,
    /// `[v·L·l, d_out/l]`: rows are shards of `B`'s rank vectors (reference `pool_B` transposed).
    pub b: Param<Tensor<2>>,
}

/// One adapted layer: where its weight is and which shards it uses.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MosLayer {
    /// Path of the adapted weight (`blocks.0.attn.q.weight`).
    pub param: String,
    /// Its projection type.
    pub group: String,
    /// Index of its pool in [`MosModel::pools`].
    pub pool: usize,
    /// Its index `i` among the layers of its type.
    pub index: usize,
    /// Input features.
    pub d_in: usize,
    /// Output features.
    pub d_out: usize,
    /// Pool-A rows, `r·l` of them (reference `lora_pair_mask`).
    pub mask_a: Vec<usize>,
    /// Pool-B rows, `r·l` of them (reference `lora_pair_mask_B`).
    pub mask_b: Vec<usize>,
}

/// A base model with MoS adapters (see the [module docs](self)).
#[derive(Module, Debug)]
pub struct MosModel<M: Module> {
    /// The frozen base model.
    pub base: M,
    /// One shard pool per projection type (the only trainable parameters).
    pub pools: Vec<ShardPool>,
    /// Routing of every adapted layer.
    #[module(skip)]
    pub layers: Vec<MosLayer>,
    /// `alpha / r`.
    #[module(skip)]
    pub scaling: f64,
}

impl<M: Module> MosModel<M> {
    /// Assembles a MoS model from its parts (e.g. recorded pools and index lists); the base is
    /// frozen. Panics if a layer's pool index or shard indices are out of range.
    pub fn from_parts(base: M, scaling: f64, pools: Vec<ShardPool>, layers: Vec<MosLayer>) -> Self {
        for layer in &layers {
            let pool = pools.get(layer.pool).unwrap_or_else(|| {
                panic!(
                    "MoS layer `{}` names pool {} of {}",
                    layer.param,
                    layer.pool,
                    pools.len()
                )
            });
            let rows = pool.a.lazy_shape()[0];
            if let Some(bad) = layer
                .mask_a
                .iter()
                .chain(&layer.mask_b)
                .find(|&&i| i >= rows)
            {
                panic!(
                    "MoS layer `{}`: shard index {bad} outside its pool of {rows}",
                    layer.param
                );
            }
        }
        struct Freeze;
        impl ModuleMapper for Freeze {
            fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
                crate::lora::freeze(param)
            }
        }
        Self {
            base: base.map(&mut Freeze),
            pools,
            layers,
            scaling,
        }
    }

    /// `A` of layer `k` in Burn orientation `[d_in, r]`.
    pub fn factor_a(&self, k: usize) -> Tensor<2> {
        let layer = &self.layers[k];
        let pool = self.pools[layer.pool].a.val();
        let rank = layer.mask_a.len() / self.shards(k);
        gather(pool, &layer.mask_a)
            .reshape([rank, layer.d_in])
            .transpose()
    }

    /// `B` of layer `k` in Burn orientation `[r, d_out]`.
    pub fn factor_b(&self, k: usize) -> Tensor<2> {
        let layer = &self.layers[k];
        let pool = self.pools[layer.pool].b.val();
        let rank = layer.mask_b.len() / self.shards(k);
        gather(pool, &layer.mask_b).reshape([rank, layer.d_out])
    }

    fn shards(&self, k: usize) -> usize {
        let layer = &self.layers[k];
        layer.d_in / self.pools[layer.pool].a.lazy_shape()[1]
    }

    /// `ΔW = s·A·B : [d_in, d_out]` of layer `k`, on the pools' autodiff graph.
    pub fn delta(&self, k: usize) -> Tensor<2> {
        self.factor_a(k)
            .matmul(self.factor_b(k))
            .mul_scalar(self.scaling)
    }

    /// The base model with every adapted weight replaced by `W₀ + ΔW` (gradients flow to the
    /// pools). Run the forward pass on this.
    pub fn adapted(&self) -> M {
        self.with_deltas(false)
    }

    /// The merged model: `W₀ + ΔW` as plain frozen weights, no adapter left (the reference's
    /// `save_tied_lora` followed by a LoRA merge).
    pub fn merge(&self) -> M {
        self.with_deltas(true)
    }

    fn with_deltas(&self, detach: bool) -> M {
        let deltas = (0..self.layers.len())
            .map(|k| (self.layers[k].param.clone(), self.delta(k)))
            .collect();
        crate::control::add_at_paths(self.base.clone(), deltas, !detach)
    }

    /// Trainable parameters (the pools).
    pub fn trainable_params(&self) -> usize {
        self.pools.num_params()
    }
}

fn gather(pool: Tensor<2>, rows: &[usize]) -> Tensor<2> {
    let device: Device = pool.device();
    let idx: Vec<i64> = rows.iter().map(|&i| i as i64).collect();
    let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [rows.len()]), &device);
    pool.select(0, idx)
}

/// Trainable parameters of MoS: `v · L · Σ_types (d_in + d_out)` for `dims` = `(d_in, d_out)` of
/// each projection type present in every one of the `layers` blocks.
pub fn mos_trainable_params(
    equivalent_rank: usize,
    layers: usize,
    dims: &[(usize, usize)],
) -> usize {
    equivalent_rank * layers * dims.iter().map(|(i, o)| i + o).sum::<usize>()
}

/// Trainable parameters of LoRA at rank `r` on the same layers: `r · L · Σ_types (d_in + d_out)`.
pub fn lora_trainable_params(rank: usize, layers: usize, dims: &[(usize, usize)]) -> usize {
    mos_trainable_params(rank, layers, dims)
}
