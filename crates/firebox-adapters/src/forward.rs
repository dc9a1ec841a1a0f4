//! peft's exact adapted forward for a Burn [`Linear`]: the adapter path runs on the
//! activations, `y = x·W₀ + b + s·(dropout(x)·A)·B`, instead of on the weight.
//!
//! [`Linear::forward`] on an adapted layer already gives the same output (Burn materialises
//! `W₀ + s·A·B`), so this is an opt-in for layer code that wants either peft's per-element
//! dropout on the adapter input, or to skip building the `[d_in, d_out]` delta (cheaper when
//! `r ≪ d_in, d_out` and the batch is small).

use burn::module::Param;
use burn::nn::Linear;
use burn::tensor::{Distribution, Tensor};

use crate::lora_layer::LoraLayer;

/// The adapter-path forward of an adapted layer.
pub trait LoraForward {
    /// `x·W₀ + b + s·(dropout(x)·A)·B` with the active, unmerged adapter; `x·W + b` otherwise.
    /// Dropout acts only while the factors track gradients (training on an autodiff device).
    fn forward_lora<const D: usize>(&self, x: Tensor<D>) -> Tensor<D>;
}

impl LoraForward for Linear {
    fn forward_lora<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let layer = self.weight.reparameterization::<LoraLayer>();
        let Some(slot) = layer.and_then(LoraLayer::contributing) else {
            return self.forward(x);
        };
        let bias = self.bias.as_ref().map(Param::val);
        let base = burn::tensor::module::linear(x.clone(), self.weight.base(), bias);
        let a = slot.factors.a.val();
        let x = if slot.dropout > 0.0 && a.is_require_grad() {
            let keep = 1.0 - slot.dropout;
            let mask = Tensor::<D>::random(x.shape(), Distribution::Bernoulli(keep), &x.device());
            x * mask.div_scalar(keep)
        } else {
            x
        };
        let low = burn::tensor::module::linear(x, a, None);
        base + burn::tensor::module::linear(low, slot.factors.b.val(), None).mul_scalar(slot.scale)
    }
}
