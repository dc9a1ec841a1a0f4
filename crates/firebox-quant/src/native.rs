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
//! **Burn 0.22.1 bug, detected at run time.** `burn::tensor::module::linear` (hence
//! `nn::Linear::forward`) with a *block*-scaled quantized weight returns wrong results on flex
//! (about 5 % off at int8; `x.matmul(w)` and `w.dequantize()` are right, so the fault is in
//! `linear`'s reshaping of the quantized weight). Before storing a block-scaled weight natively,
//! [`blocks_are_reliable`] checks `linear` against the dequantized matmul once per device kind
//! on a small probe; where it fails, per-channel / per-group weights are stored as dequantized
//! floats (reported as `f32 (Burn linear with block scales is wrong on this backend)`), so the
//! model's outputs are always right and the native path comes back by itself when Burn is fixed.
//!
//! Burn rounds `x·(1/s)` half away from zero where PyTorch (and [`affine`](crate::affine))
//! rounds half to even, so the codes can differ at exact ties only.

use burn::tensor::Tensor;
use burn::tensor::quantization::{QuantScheme, QuantValue, QuantizationParameters, ScaleDtype};

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
    if !blocks_are_reliable(&device) {
        return Err("Burn linear with block scales is wrong on this backend".to_string());
    }
    let block: Vec<u8> = block.into_iter().map(|b| b as u8).collect();
    Ok(base.per_block(block, ScaleDtype::F32))
}

/// Stores `q` natively when possible (see the module docs), else as dequantized floats.
pub fn store<const D: usize>(q: &Quantized<D>) -> (Tensor<D>, Stored) {
    match native_scheme(q) {
        Ok(scheme) => {
            let scales = block_scales(q);
            let values = q.dequantize();
            let tensor = values.quantize(
                &scheme,
                QuantizationParameters {
                    scales,
                    global: None,
                },
            );
            (tensor, Stored::Native(scheme))
        }
        Err(why) => (q.dequantize(), Stored::Simulated(why)),
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

/// Whether Burn's `linear` computes block-scaled quantized weights correctly on `device`'s
/// backend (see the [module docs](self)); probed once per device kind and cached.
pub fn blocks_are_reliable(device: &burn::tensor::Device) -> bool {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static CACHE: OnceLock<Mutex<HashMap<String, bool>>> = OnceLock::new();
    let key = format!("{:?}", device.clone().inner());
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(&known) = cache.lock().expect("probe cache").get(&key) {
        return known;
    }
    let reliable = probe_blocks(device);
    cache.lock().expect("probe cache").insert(key, reliable);
    reliable
}

fn probe_blocks(device: &burn::tensor::Device) -> bool {
    use burn::tensor::TensorData;
    let device = device.clone().inner();
    let w: Vec<f32> = (0..24)
        .map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.25 * (1 + i / 6) as f32)
        .collect();
    let w = Tensor::<2>::from_data(TensorData::new(w, [4, 6]), &device);
    let x: Vec<f32> = (0..8).map(|i| (i as f32 - 3.5) * 0.5).collect();
    let x = Tensor::<2>::from_data(TensorData::new(x, [2, 4]), &device);
    let scales = Tensor::<1>::from_data(
        TensorData::new(vec![0.01f32, 0.02, 0.03, 0.04, 0.05, 0.06], [6]),
        &device,
    );
    let scheme = device
        .settings()
        .quantization
        .scheme
        .with_value(QuantValue::Q8F)
        .per_block([4u8, 1], ScaleDtype::F32);
    let q = w.quantize(
        &scheme,
        QuantizationParameters {
            scales,
            global: None,
        },
    );
    let reference = x.clone().matmul(q.clone().dequantize());
    let got = burn::tensor::module::linear(x, q, None);
    let diff = (got - reference).abs().max().into_data();
    diff.convert::<f32>()
        .try_into_vec::<f32>()
        .map(|v| v[0] <= 1e-5)
        .unwrap_or(false)
}
