//! Storing a quantized weight as a Burn-native quantized tensor where Burn can execute it.
//!
//! Burn 0.22.1's `QuantScheme` has symmetric values only (no zero point) on the grids
//! Q8F `[-128, 127]`, Q4F `[-8, 7]`, Q2F `[-2, 1]`, with one f32 scale per tensor or per block
//! of at most 255 elements along each axis. A [`Quantized`] weight whose scheme fits (symmetric,
//! signed full grid, per tensor; or per channel / per group of a matrix with blocks ≤ 255) is
//! stored with `Tensor::quantize` and **our** calibrated scales, so the model runs on Burn's
//! quantized kernels and stores 8/4/2-bit codes. Everything else (zero points, wider blocks,
//! 3/5/6/7 bits) is stored as its exact dequantized float values (simulated quantization) and
//! reported as such.
//!
//! **Checked on the device, per weight.** What Burn can hold differs by backend (ndarray has no
//! Q4/Q2 blocks, wgpu packs codes into `u32` along the last axis, so that axis must be a multiple
//! of 4/8/16), and Burn 0.22.1's `linear` (hence `nn::Linear::forward`) returns wrong results for
//! *block*-scaled weights on flex (about 5 % off; `x.matmul(w)` and `w.dequantize()` are right).
//! So [`store`] quantizes natively (trying the device's default storage, then `Native`), and
//! keeps the result only if Burn accepted it, its dequantized values equal ours bit for bit, and
//! `linear` on a two-row probe equals the float matmul with our values; otherwise the weight is
//! stored as its dequantized floats, with the reason in [`Stored::Simulated`]. The model's outputs
//! are therefore always the quantized model's, and the native path comes back by itself where
//! Burn gains support. (Panics raised by Burn while trying are caught and their messages
//! suppressed for the duration of the attempt.)
//!
//! Burn rounds `x·(1/s)` half away from zero where PyTorch (and [`affine`](crate::affine))
//! rounds half to even, so the codes can differ at exact ties only.

use burn::tensor::Tensor;
use burn::tensor::quantization::{
    QuantScheme, QuantStore, QuantValue, QuantizationParameters, ScaleDtype,
};

use crate::affine::Quantized;
use crate::spec::{Granularity, Mode};

/// How a quantized weight ended up stored.
#[derive(Clone, Debug, PartialEq)]
pub enum Stored {
    /// A Burn quantized tensor (`QFloat`) with this scheme.
    Native(QuantScheme),
    /// Dequantized f32 values; the reason Burn cannot hold the scheme natively.
    Simulated(String),
}

impl Stored {
    /// `burn Q8F block[32,1]`-style label, or `f32 (…)`.
    pub fn label(&self) -> String {
        match self {
            Stored::Native(scheme) => {
                let block = scheme
                    .block_size()
                    .map(|b| format!(" block{:?}", b.as_slice()))
                    .unwrap_or_default();
                format!("burn {:?}{block}", scheme.value)
            }
            Stored::Simulated(why) => format!("f32 ({why})"),
        }
    }
}

/// The Burn scheme (and block shape) a quantized tensor fits, or why none does.
pub fn native_scheme<const D: usize>(q: &Quantized<D>) -> Result<QuantScheme, String> {
    let spec = &q.spec;
    if spec.mode != Mode::Symmetric || spec.range.min >= 0 {
        return Err("zero point".to_string());
    }
    let value = match spec.bits {
        8 => QuantValue::Q8F,
        4 => QuantValue::Q4F,
        2 => QuantValue::Q2F,
        b => return Err(format!("{b}-bit")),
    };
    let device = q.codes.device();
    let base = device.settings().quantization.scheme.with_value(value);
    let dims = q.layout.dims;
    let block: Vec<usize> = match spec.granularity {
        Granularity::PerTensor => return Ok(base),
        _ if D > 2 => return Err(format!("rank-{D} blocks")),
        Granularity::PerChannel { axis } => (0..D)
            .map(|d| if d == axis { 1 } else { dims[d] })
            .collect(),
        Granularity::PerGroup { axis, size } => {
            (0..D).map(|d| if d == axis { size } else { 1 }).collect()
        }
    };
    if block.iter().any(|&b| b > 255) {
        return Err(format!("block {block:?} exceeds Burn's 255"));
    }
    let block: Vec<u8> = block.into_iter().map(|b| b as u8).collect();
    Ok(base.per_block(block, ScaleDtype::F32))
}

/// Stores `q` natively when Burn can hold and execute it (see the module docs), else as its
/// dequantized floats.
pub fn store<const D: usize>(q: &Quantized<D>) -> (Tensor<D>, Stored) {
    let scheme = match native_scheme(q) {
        Ok(scheme) => scheme,
        Err(why) => return (q.dequantize(), Stored::Simulated(why)),
    };
    let reference = q.dequantize();
    // Storage layouts a GPU backend would reject by panicking inside a (fused, asynchronous)
    // kernel are ruled out up front: a failed kernel poisons later work on that device.
    let bits = scheme.value.size_bits();
    let dims = q.layout.dims;
    let host_backend = {
        let name = format!("{:?}", q.codes.device()).to_lowercase();
        name.contains("flex") || name.contains("ndarray")
    };
    let storable = |store: &QuantStore| match store {
        // The CPU backends refuse synchronously (caught below); they hold any width natively.
        _ if host_backend => true,
        QuantStore::Native => bits == 8,
        QuantStore::PackedU32(packed) => {
            let axis = D.checked_sub(1 + packed);
            axis.is_some_and(|a| dims[a].is_multiple_of(32 / bits))
        }
        QuantStore::PackedNative(_) => false,
    };
    let mut stores = vec![scheme.store];
    if scheme.store != QuantStore::Native {
        stores.push(QuantStore::Native);
    }
    let mut why = format!(
        "no storage of {:?} fits shape {dims:?} on this backend",
        scheme.value
    );
    for store in stores.iter().filter(|s| storable(s)) {
        let scheme = scheme.with_store(*store);
        match quietly(|| try_native(q, &reference, &scheme)) {
            Ok(tensor) => return (tensor, Stored::Native(scheme)),
            Err(e) => why = e,
        }
    }
    (reference, Stored::Simulated(why))
}

/// Quantizes natively and checks the result (values and `linear`), or says what went wrong.
fn try_native<const D: usize>(
    q: &Quantized<D>,
    reference: &Tensor<D>,
    scheme: &QuantScheme,
) -> Result<Tensor<D>, String> {
    let tensor = reference.clone().quantize(
        scheme,
        QuantizationParameters {
            scales: block_scales(q),
            global: None,
        },
    );
    let got = tensor.clone().dequantize().try_into_data().map_err(|e| {
        format!(
            "Burn cannot run {:?} here ({})",
            scheme.value,
            first_line(&e)
        )
    })?;
    if got != reference.clone().into_data() {
        return Err(format!(
            "Burn's {:?} dequantizes differently here",
            scheme.value
        ));
    }
    if D == 2 {
        let dims = q.layout.dims;
        let w2: Tensor<2> = tensor.clone().reshape([dims[0], dims[1]]);
        let r2: Tensor<2> = reference.clone().reshape([dims[0], dims[1]]);
        let x = Tensor::<2>::ones([2, dims[0]], &r2.device())
            .cumsum(1)
            .div_scalar(dims[0] as f32);
        let diff = (burn::tensor::module::linear(x.clone(), w2, None) - x.matmul(r2))
            .abs()
            .max()
            .try_into_data()
            .map_err(|e| {
                format!(
                    "Burn cannot run {:?} matmul here ({})",
                    scheme.value,
                    first_line(&e)
                )
            })?
            .convert::<f32>()
            .try_into_vec::<f32>()
            .map_err(|e| format!("{e:?}"))?[0];
        if diff.is_nan() || diff > 1e-4 {
            return Err(format!(
                "Burn's linear with {:?} {} is wrong here",
                scheme.value,
                if scheme.block_size().is_some() {
                    "block scales"
                } else {
                    "per-tensor scale"
                }
            ));
        }
    }
    Ok(tensor)
}

/// Runs `f`, turning a panic into an error and keeping its message off stderr.
fn quietly<T>(f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    use std::panic::{AssertUnwindSafe, catch_unwind, set_hook, take_hook};
    let hook = take_hook();
    set_hook(Box::new(|_| {}));
    let out = catch_unwind(AssertUnwindSafe(f));
    set_hook(hook);
    match out {
        Ok(result) => result,
        Err(payload) => Err(payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .map(|m| format!("Burn refused: {m}"))
            .unwrap_or_else(|| "Burn refused the scheme".to_string())),
    }
}

/// One scale per Burn block, in Burn's row-major block-grid order.
fn block_scales<const D: usize>(q: &Quantized<D>) -> Tensor<1> {
    match q.spec.granularity {
        Granularity::PerTensor => q.params.scale.clone().reshape([1]),
        _ => {
            let full = q.scales();
            let dims = q.layout.dims;
            match (D, q.spec.granularity) {
                (1, _) => {
                    let [_, per] = q.layout.row_shape();
                    full.reshape([dims[0] / per, per])
                        .slice([0..dims[0] / per, 0..1])
                        .reshape([dims[0] / per])
                }
                (_, Granularity::PerChannel { axis }) => {
                    let full: Tensor<2> = full.reshape([dims[0], dims[1]]);
                    let picked = if axis == 0 {
                        full.slice([0..dims[0], 0..1])
                    } else {
                        full.slice([0..1, 0..dims[1]])
                    };
                    picked.reshape([dims[axis]])
                }
                (_, Granularity::PerGroup { axis, size }) => {
                    let full: Tensor<2> = full.reshape([dims[0], dims[1]]);
                    if axis == 0 {
                        full.reshape([dims[0] / size, size, dims[1]])
                            .slice([0..dims[0] / size, 0..1, 0..dims[1]])
                            .reshape([dims[0] / size * dims[1]])
                    } else {
                        full.reshape([dims[0], dims[1] / size, size])
                            .slice([0..dims[0], 0..dims[1] / size, 0..1])
                            .reshape([dims[0] * dims[1] / size])
                    }
                }
                _ => unreachable!("per-tensor handled above"),
            }
        }
    }
}

fn first_line(e: &impl std::fmt::Debug) -> String {
    format!("{e:?}")
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}
