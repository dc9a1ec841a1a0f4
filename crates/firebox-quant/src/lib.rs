//! Quantization passes for any Burn model, on every Burn backend.
//!
//! Burn 0.22.1 quantizes tensors natively (`QuantScheme`: symmetric 8/4/2-bit values, per-tensor
//! or per-block scales, `Tensor::quantize`/`dequantize`, module-level `Quantizer` with min-max
//! calibration) but has no zero points, no clipping search, no activation calibration and no
//! quantization-aware training. This crate adds the passes on top, in Burn's tensor API so they
//! run unchanged on flex, ndarray, wgpu and cuda:
//!
//! | module | what | reference |
//! |---|---|---|
//! | [`spec`], [`layout`], [`affine`], [`capture`] | uniform integer grids: per tensor / channel / group, symmetric or affine, PyTorch's exact arithmetic | `torch.ao.quantization` |
//! | [`observer`] | activation ranges from calibration batches (min-max, percentile, MSE) | PyTorch observers |
//! | [`ptq`] | post-training quantization of a model's weights by module path, with per-layer SQNR | — |
//! | [`native`] | export to Burn's native quantized tensors where Burn can execute the scheme | Burn `QuantScheme` |
//! | [`fake_quant`], [`qat`] | straight-through fake quantization, LSQ learned scales, QAT of any model, export | Bengio et al. 2013; Esser et al. 2020 |
//! | [`dgq`] | DGQ A8W4: INT4 weights, INT8 group scales, INT8 matmul (CPU reference kernel) | Zhang et al. 2023 |
//! | [`hawq`] | HAWQ-V2: Hutchinson trace sensitivity, Pareto-frontier bit allocation under a budget | Dong et al. 2020 |
//! | [`double_rounding`] | one stored int8 model, 8/6/4/2-bit models by rounding, ALRS, Hessian-aware bit switching | Huang et al. 2025 |
//! | [`gguf`] | llama.cpp's Q8_0 / Q4_0 / Q4_1 / Q5_0 / Q5_1 blocks, byte-exact | llama.cpp gguf-py |
//!
//! Layers are selected by module path with [`Targets`] (the same selection adapters use:
//! peft-style names, a regular expression, or globs such as `"*.fc1"`).

#![warn(missing_docs)]

pub mod affine;
pub mod capture;
pub mod dgq;
pub mod double_rounding;
pub mod error;
pub mod fake_quant;
pub mod gguf;
pub mod hawq;
pub mod layout;
pub mod native;
pub mod observer;
mod paths;
pub mod ptq;
pub mod qat;
pub mod spec;
#[cfg(test)]
mod test_rng;

pub use affine::{QParams, Quantized, fake_quantize, sqnr_db};
pub use error::QuantError;
pub use firebox_adapters::Targets;
pub use observer::{ActivationQuant, Observer};
pub use ptq::{LayerReport, PtqConfig, PtqReport, quantize_weights};
pub use qat::{QatConfig, prepare_qat};
pub use spec::{Clipping, Granularity, IntRange, Mode, QuantSpec};
