//! What a quantizer produces: the integer grid ([`IntRange`]), symmetric or affine
//! ([`Mode`]), how many scales ([`Granularity`]) and how the range is chosen ([`Clipping`]).
//!
//! Conventions follow PyTorch's `torch.ao.quantization` observers (the `affine` fixtures replay
//! them bit for bit): a signed `b`-bit grid is `[-2^(b-1), 2^(b-1)-1]`, an unsigned one
//! `[0, 2^b-1]`; symmetric mode divides `max(|min|, |max|)` by half the grid width
//! (`(q_max - q_min) / 2`, i.e. 127.5 for int8, not Burn's 127).

use serde::{Deserialize, Serialize};

use crate::QuantError;

/// The integer grid codes are clamped to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntRange {
    /// Smallest code.
    pub min: i32,
    /// Largest code.
    pub max: i32,
    /// Whether the range was chosen explicitly rather than being PyTorch's default 8-bit range.
    /// It only matters for unsigned symmetric grids: PyTorch's default `quint8` puts the zero
    /// point at 128, an explicit `[q_min, q_max]` at `(q_min + q_max) div 2`.
    pub customized: bool,
}

impl IntRange {
    /// The `bits`-wide grid, signed (`[-2^(b-1), 2^(b-1)-1]`) or unsigned (`[0, 2^b-1]`).
    pub fn new(bits: u32, signed: bool) -> Self {
        let levels = 1i64 << bits;
        let (min, max) = if signed {
            (-(levels / 2), levels / 2 - 1)
        } else {
            (0, levels - 1)
        };
        Self {
            min: min as i32,
            max: max as i32,
            customized: bits != 8,
        }
    }

    /// The zero point of a symmetric grid: 0 when signed; PyTorch's 128 for the default `quint8`,
    /// else `(min + max) div 2`.
    pub fn symmetric_zero_point(&self) -> i32 {
        if self.min < 0 {
            0
        } else if !self.customized {
            128
        } else {
            (self.min + self.max).div_euclid(2)
        }
    }

    /// Number of representable codes.
    pub fn levels(&self) -> u32 {
        (self.max - self.min + 1) as u32
    }
}

/// Symmetric (zero point fixed, scale from `max|x|`) or affine (zero point from the range).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// `scale = max(|min|, |max|) / ((q_max - q_min) / 2)`, fixed zero point.
    Symmetric,
    /// `scale = (max - min) / (q_max - q_min)`, `zero_point = q_min - round(min / scale)`.
    Affine,
}

/// How many scales a tensor gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Granularity {
    /// One scale (and zero point) for the whole tensor.
    PerTensor,
    /// One per index of `axis` (over all other axes). For Burn's `Linear` weight `[d_in, d_out]`
    /// the output channel is axis 1 (PyTorch's `[out, in]` uses axis 0).
    PerChannel {
        /// The channel axis.
        axis: usize,
    },
    /// One per run of `size` consecutive elements along `axis`, for every index of the other
    /// axes. For Burn's `Linear` weight, groups of input features are `axis: 0` (the
    /// GPTQ/AWQ/llama.cpp grouping of PyTorch's `[out, in]` rows). `size` must divide the axis.
    PerGroup {
        /// The grouped axis.
        axis: usize,
        /// Elements per group.
        size: usize,
    },
}

/// How the range `[min, max]` that the grid covers is chosen from the observed values.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Clipping {
    /// The observed minimum and maximum (PyTorch's `MinMaxObserver`): no clipping error, the
    /// largest rounding error.
    MinMax,
    /// The given percentile of the values (`99.99` keeps 0.01 % outliers out of the range);
    /// for a symmetric grid, of `|x|`; for an affine one, `100 - p` and `p` of `x`.
    Percentile(f64),
    /// The clipping ratio `α ∈ {1, 1 - 1/grid, …, min_ratio}` of the min-max range that minimises
    /// the squared quantization error `‖Q_α(x) - x‖²` (per scale group), as in
    /// Banner et al. 2019 / the MSE observers of TensorRT and OpenVINO.
    Mse {
        /// Number of candidate ratios.
        grid: usize,
        /// Smallest ratio tried.
        min_ratio: f64,
    },
}

impl Clipping {
    /// MSE search over 100 ratios down to 0.2 (a common default).
    pub fn mse() -> Self {
        Clipping::Mse {
            grid: 100,
            min_ratio: 0.2,
        }
    }
}

/// A complete integer quantization scheme for one tensor.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct QuantSpec {
    /// Bits per code (2..=8).
    pub bits: u32,
    /// The integer grid.
    pub range: IntRange,
    /// Symmetric or affine.
    pub mode: Mode,
    /// One scale per tensor, channel or group.
    pub granularity: Granularity,
    /// How the range is calibrated.
    pub clipping: Clipping,
    /// The smallest scale (PyTorch's `eps`, 2^-23): an all-zero tensor gets this scale.
    pub eps: f32,
}

impl QuantSpec {
    /// A signed, symmetric, per-tensor, min-max `bits`-bit scheme (`int8()` is `new(8)`).
    pub fn new(bits: u32) -> Self {
        Self {
            bits,
            range: IntRange::new(bits, true),
            mode: Mode::Symmetric,
            granularity: Granularity::PerTensor,
            clipping: Clipping::MinMax,
            eps: f32::EPSILON,
        }
    }

    /// Signed symmetric int8, per tensor.
    pub fn int8() -> Self {
        Self::new(8)
    }

    /// Signed symmetric int4, per tensor.
    pub fn int4() -> Self {
        Self::new(4)
    }

    /// Affine with a zero point, on the unsigned grid `[0, 2^b-1]` (PyTorch's `quint8` style).
    pub fn affine(mut self) -> Self {
        self.mode = Mode::Affine;
        self.range = IntRange::new(self.bits, false);
        self
    }

    /// Symmetric on the signed grid.
    pub fn symmetric(mut self) -> Self {
        self.mode = Mode::Symmetric;
        self.range = IntRange::new(self.bits, true);
        self
    }

    /// One scale per index of `axis`.
    pub fn per_channel(mut self, axis: usize) -> Self {
        self.granularity = Granularity::PerChannel { axis };
        self
    }

    /// One scale per `size` consecutive elements along `axis`.
    pub fn per_group(mut self, axis: usize, size: usize) -> Self {
        self.granularity = Granularity::PerGroup { axis, size };
        self
    }

    /// The calibration rule.
    pub fn clipping(mut self, clipping: Clipping) -> Self {
        self.clipping = clipping;
        self
    }

    /// The same scheme at another bit width (grid rebuilt, signedness kept).
    pub fn with_bits(mut self, bits: u32) -> Self {
        let signed = self.range.min < 0;
        self.bits = bits;
        self.range = IntRange::new(bits, signed);
        self
    }

    /// A short label, e.g. `int4 sym group(0,32) mse`.
    pub fn label(&self) -> String {
        let mode = match self.mode {
            Mode::Symmetric => "sym",
            Mode::Affine => "asym",
        };
        let gran = match self.granularity {
            Granularity::PerTensor => "tensor".to_string(),
            Granularity::PerChannel { axis } => format!("channel({axis})"),
            Granularity::PerGroup { axis, size } => format!("group({axis},{size})"),
        };
        let clip = match self.clipping {
            Clipping::MinMax => "minmax".to_string(),
            Clipping::Percentile(p) => format!("p{p}"),
            Clipping::Mse { .. } => "mse".to_string(),
        };
        format!("int{} {mode} {gran} {clip}", self.bits)
    }

    /// Checks the options against a tensor of shape `dims` belonging to `layer`.
    pub fn validate(&self, layer: &str, dims: &[usize]) -> Result<(), QuantError> {
        if !(2..=8).contains(&self.bits) || self.range.levels() != 1 << self.bits {
            return Err(QuantError::UnsupportedBits {
                layer: layer.to_string(),
                bits: self.bits,
                supported: "integer grids of 2 to 8 bits".to_string(),
            });
        }
        let axis_ok = |axis: usize| {
            if axis < dims.len() {
                Ok(())
            } else {
                Err(QuantError::Axis {
                    layer: layer.to_string(),
                    axis,
                    rank: dims.len(),
                })
            }
        };
        match self.granularity {
            Granularity::PerTensor => {}
            Granularity::PerChannel { axis } => axis_ok(axis)?,
            Granularity::PerGroup { axis, size } => {
                axis_ok(axis)?;
                if size == 0 || !dims[axis].is_multiple_of(size) {
                    return Err(QuantError::GroupSize {
                        layer: layer.to_string(),
                        group: size,
                        axis,
                        dim: dims[axis],
                    });
                }
            }
        }
        let bad = |message: String| {
            Err(QuantError::Calibration {
                layer: layer.to_string(),
                message,
            })
        };
        match self.clipping {
            Clipping::MinMax => {}
            Clipping::Percentile(p) if !(p > 0.0 && p <= 100.0) => {
                return bad(format!("percentile {p} is outside (0, 100]"));
            }
            Clipping::Percentile(_) => {}
            Clipping::Mse { grid, min_ratio } => {
                if grid == 0 || !(min_ratio > 0.0 && min_ratio <= 1.0) {
                    return bad(format!(
                        "MSE clipping needs grid >= 1 and min_ratio in (0, 1], got grid {grid}, min_ratio {min_ratio}"
                    ));
                }
            }
        }
        Ok(())
    }
}
