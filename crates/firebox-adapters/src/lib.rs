//! # firebox-adapters
//!
//! Parameter-efficient fine-tuning for **any** Burn model, selected by module path, without
//! changing the model's types:
//!
//! - [`lora`]: LoRA exactly as HF peft defines it (rank `r`, `alpha`, `α/r` or rsLoRA `α/√r`,
//!   dropout, Kaiming-uniform `A` and zero `B`), several named adapters with
//!   [`set_adapter`]/[`disable_adapters`], [`merge`]/[`unmerge`]/[`merge_and_unload`].
//! - [`mos`]: MoS (Mixture of Shards): global shard pools shared across layers, per-layer subset
//!   selection, pair dissociation, vector sharding and shard privatisation.
//! - [`io`]: save / load the adapters alone (safetensors through Burn's store + a JSON config).
//! - [`forward`]: peft's activation-space forward for `Linear` (exact per-element dropout).
//! - [`target`]: target selection (peft list, regex, globs).
//!
//! ## Design: LoRA as a Burn reparameterization
//!
//! Burn has no forward hooks, so an adapter must live either in the module tree's *types* (a
//! drop-in `LoraLinear` the user swaps into their model) or in its *parameters*. This crate
//! takes the second road, through the hook Burn 0.22 provides for it: each targeted weight
//! `Param` gets a [`LoraLayer`] [`Reparameterization`](burn::module::Reparameterization), and
//! every `weight.val()` (hence `Linear::forward`, attention, any user code) sees
//! `W₀ + s·A·B`. What users get:
//!
//! - no model rewrite: `LoraConfig::new(8, 16.0, Targets::names(["query", "value"])).attach(model)`
//!   on the model they already have, whatever its structure;
//! - the factors are ordinary Burn parameters (`<layer>.weight.lora.<adapter>.{a,b}`): every
//!   Burn or firebox optimizer, `ModuleOptimizer`, records, `valid()`/`train()`, device moves
//!   work unchanged, and the frozen base has no gradient and no optimizer state;
//! - `merge_and_unload` is Burn's own [`Module::materialize`](burn::module::Module::materialize),
//!   giving back the model's original parameters and keys.
//!
//! The cost: each forward builds `s·A·B` (`d_in·r·d_out` multiply-adds) and the effective weight
//! (`d_in·d_out` adds) per adapted layer, and its backward produces a weight-sized gradient before
//! reaching `A`, `B` (Burn's QLoRA docs note the same). That is cheap beside the layer's own
//! matmul when the batch has at least `r` rows, which is the training regime;
//! `benches/adapter_step.rs` measures it against the base and full fine-tuning. Layer code that
//! wants peft's exact per-element dropout, or to skip the delta, calls
//! [`LoraForward::forward_lora`] instead of `forward`.
//!
//! MoS cannot be a per-parameter reparameterization: its pools are shared by many layers, and
//! one Burn parameter must sit at one place of the tree (two copies would be stepped apart). So
//! [`MosModel`] wraps the model and owns the pools; [`MosModel::adapted`] hands out the model
//! with `W₀ + ΔW` weights on the pools' graph.
//!
//! Weight orientation: Burn's `Linear` stores `[d_in, d_out]`, PyTorch `[d_out, d_in]`; here
//! `A : [d_in, r]` and `B : [r, d_out]` are peft's `lora_A.weight`ᵀ and `lora_B.weight`ᵀ.

#![warn(missing_docs)]

pub mod control;
mod error;
pub mod forward;
pub mod io;
pub mod lora;
pub mod lora_layer;
pub mod mos;
pub mod target;

pub use control::{
    AdapterControl, LayerAdapters, disable_adapters, inspect, merge, merge_and_unload, set_adapter,
    unmerge,
};
pub use error::AdapterError;
pub use forward::LoraForward;
pub use io::{AdapterFile, AdapterKind, load_lora, save_lora};
pub use lora::{LoraAdapters, LoraConfig, LoraInit, NamedLora};
pub use lora_layer::{LoraFactors, LoraLayer, LoraSlot};
pub use mos::{
    MosConfig, MosLayer, MosModel, ShardPool, lora_trainable_params, mos_trainable_params,
};
pub use target::Targets;
