//! The LoRA state Burn attaches to one adapted weight: a [`Reparameterization`] holding the
//! factors of every named adapter of that layer, which one is active, and which one (if any) is
//! merged into the stored base.
//!
//! Burn materialises a reparameterised weight as `apply(base)` on every [`Param::val`], so the
//! user's layer code (`Linear::forward`, attention, …) runs unchanged on
//! `W_eff = W₀ + s·A·B` (Burn orientation: `A : [d_in, r]`, `B : [r, d_out]`,
//! peft's `ΔW = s·B·A` transposed).

use burn::module::{
    Content, Devices, Module, ModuleDisplay, ModuleDisplayDefault, ModuleMapper, ModuleVisitor,
    Param, Reparameterization,
};
use burn::tensor::{Device, Distribution, Tensor};

use crate::control;

/// The trainable factors of one named adapter on one layer.
#[derive(Module, Debug)]
pub struct LoraFactors {
    /// Down projection `A : [d_in, r]` (peft's `lora_A.weight` transposed).
    pub a: Param<Tensor<2>>,
    /// Up projection `B : [r, d_out]` (peft's `lora_B.weight` transposed).
    pub b: Param<Tensor<2>>,
}

/// One named adapter of a layer: its factors and the constants peft keeps beside them.
#[derive(Clone, Debug)]
pub struct LoraSlot {
    /// The adapter's name (`"default"`, …); the path component of its factors.
    pub name: String,
    /// The factors.
    pub factors: LoraFactors,
    /// `alpha / r`, or `alpha / √r` with rsLoRA.
    pub scale: f64,
    /// Dropout probability on the adapter input (see [`LoraLayer`]).
    pub dropout: f64,
}

/// Every LoRA adapter attached to one weight (a Burn [`Reparameterization`] named `lora`).
///
/// Parameter paths: `<layer>.weight.lora.<adapter>.{a,b}`, so records, optimizer state and adapter
/// files are keyed by module path and adapter name.
///
/// Effective weight: the base `W₀` when no adapter is active or when the active one is merged
/// into the base already; otherwise `W₀ + s·A·B`. **Dropout** in this weight-space form drops
/// whole input features of the adapter path (rows of `A`, one fresh mask per forward, scaled by
/// `1/(1−p)`), because a weight cannot depend on the individual input; peft's exact per-element
/// dropout on the adapter input is [`crate::LoraForward::forward_lora`], which computes the
/// adapter path on the activations. Dropout only acts while the factors track gradients
/// (training on an autodiff device), never in `valid()` models.
#[derive(Clone, Debug)]
pub struct LoraLayer {
    /// The named adapters, in creation order.
    pub slots: Vec<LoraSlot>,
    /// Index of the active adapter (at most one, as in peft), or `None` when disabled.
    pub active: Option<usize>,
    /// Index of the adapter merged into the stored base, if any.
    pub merged: Option<usize>,
}

impl LoraLayer {
    /// The active slot whose delta the effective weight adds (`None` when disabled or merged).
    pub fn contributing(&self) -> Option<&LoraSlot> {
        match (self.active, self.merged) {
            (Some(i), None) => Some(&self.slots[i]),
            _ => None,
        }
    }

    /// `s·A·B` of slot `i`, `[d_in, d_out]`, on the autodiff graph of the factors, with the
    /// weight-space dropout when training.
    pub fn delta(&self, i: usize) -> Tensor<2> {
        let slot = &self.slots[i];
        let mut a = slot.factors.a.val();
        if slot.dropout > 0.0 && a.is_require_grad() {
            let keep = 1.0 - slot.dropout;
            let [d_in, _] = a.dims();
            let mask = Tensor::<2>::random([d_in, 1], Distribution::Bernoulli(keep), &a.device());
            a = a * mask.div_scalar(keep);
        }
        a.matmul(slot.factors.b.val()).mul_scalar(slot.scale)
    }

    /// `s·A·B` of slot `i` without dropout, detached from any graph (what merging adds).
    pub fn delta_detached(&self, i: usize) -> Tensor<2> {
        let slot = &self.slots[i];
        slot.factors
            .a
            .val()
            .detach()
            .matmul(slot.factors.b.val().detach())
            .mul_scalar(slot.scale)
    }

    fn map_slots(self, mut f: impl FnMut(LoraFactors) -> LoraFactors) -> Self {
        let slots = self
            .slots
            .into_iter()
            .map(|slot| LoraSlot {
                factors: f(slot.factors),
                ..slot
            })
            .collect();
        Self { slots, ..self }
    }
}

impl Reparameterization for LoraLayer {
    const NAME: &'static str = "lora";

    fn apply<const D: usize>(&self, base: Tensor<D>) -> Tensor<D> {
        match (self.active, self.merged) {
            (Some(i), None) => {
                let delta = self.delta(i).reshape(base.shape());
                let delta = if base.dtype().is_float() && base.dtype() != delta.dtype() {
                    delta.cast(base.dtype())
                } else {
                    delta
                };
                base + delta
            }
            _ => base,
        }
    }
}

impl Module for LoraLayer {
    fn collect_devices(&self, devices: Devices) -> Devices {
        self.slots.iter().fold(devices, |devices, slot| {
            slot.factors.collect_devices(devices)
        })
    }

    fn fork(self, device: &Device) -> Self {
        self.map_slots(|factors| factors.fork(device))
    }

    fn to_device(self, device: &Device) -> Self {
        self.map_slots(|factors| factors.to_device(device))
    }

    fn train(self) -> Self {
        self.map_slots(Module::train)
    }

    fn valid(&self) -> Self {
        self.clone().map_slots(|factors| factors.valid())
    }

    fn materialize(self) -> Self {
        self
    }

    fn visit<V: ModuleVisitor>(&self, visitor: &mut V) {
        control::on_visit(self);
        for slot in &self.slots {
            visitor.enter_module(&slot.name, "LoraAdapter");
            slot.factors.visit(visitor);
            visitor.exit_module(&slot.name, "LoraAdapter");
        }
    }

    fn map<M: ModuleMapper>(mut self, mapper: &mut M) -> Self {
        control::on_map(&mut self);
        let slots = self
            .slots
            .into_iter()
            .map(|slot| {
                mapper.enter_module(&slot.name, "LoraAdapter");
                let factors = slot.factors.map(mapper);
                mapper.exit_module(&slot.name, "LoraAdapter");
                LoraSlot { factors, ..slot }
            })
            .collect();
        Self { slots, ..self }
    }
}

impl ModuleDisplayDefault for LoraLayer {
    fn content(&self, content: Content) -> Option<Content> {
        let active = self
            .active
            .map(|i| self.slots[i].name.as_str())
            .unwrap_or("none");
        self.slots
            .iter()
            .fold(content, |acc, slot| acc.add(&slot.name, &slot.factors))
            .add_formatted(&format!(
                "active: {active}, merged: {}",
                self.merged.is_some()
            ))
            .set_top_level_type("LoraLayer")
            .optional()
    }
}

impl ModuleDisplay for LoraLayer {}
