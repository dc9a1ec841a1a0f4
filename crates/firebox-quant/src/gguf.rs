//! llama.cpp / GGUF block quantization: `Q8_0`, `Q4_0`, `Q4_1`, `Q5_0`, `Q5_1`, bit-exact with
//! gguf-py (`gguf.quants.quantize` / `gguf.quants.dequantize`, package 0.19.0).
//!
//! Pure host code (std only). A tensor `[rows, cols]` is cut into blocks of 32 consecutive
//! elements of a row (`cols` must be a multiple of 32; rows are independent). Each block stores one
//! or two IEEE binary16 parameters and 32 integer codes.
//!
//! # Block layouts (little endian, blocks concatenated row after row)
//!
//! | type   | bytes | layout                                 | bits/weight |
//! |--------|-------|----------------------------------------|-------------|
//! | `Q8_0` | 34    | `d: f16, qs: [i8; 32]`                 | 8.5         |
//! | `Q4_0` | 18    | `d: f16, qs: [u8; 16]`                 | 4.5         |
//! | `Q4_1` | 20    | `d: f16, m: f16, qs: [u8; 16]`         | 5.0         |
//! | `Q5_0` | 22    | `d: f16, qh: u32, qs: [u8; 16]`        | 5.5         |
//! | `Q5_1` | 24    | `d: f16, m: f16, qh: u32, qs: [u8; 16]`| 6.0         |
//!
//! For the 4/5-bit types the low nibbles are split in halves: `qs[j] = (code[j] & 15) |
//! (code[j + 16] & 15) << 4` for `j < 16`, and bit `j` of `qh` is bit 4 of `code[j]`.
//!
//! # Quantization (float32, one rounding per operation, no fused multiply-add)
//!
//! With `id = if d == 0 { 0 } else { 1 / d }`:
//!
//! ```text
//! Q8_0: d = max|x| / 127;           code = round_half_away(x·id)               ∈ [-127, 127]
//! Q4_0: d = x[argmax |x|] / -8;     code = min(15, trunc(x·id + 8.5))          ∈ [0, 15]
//! Q5_0: d = x[argmax |x|] / -16;    code = min(31, trunc(x·id + 16.5))         ∈ [0, 31]
//! Q4_1: d = (max x - min x) / 15;   code = min(15, trunc((x - min x)·id + 0.5)), m = min x
//! Q5_1: d = (max x - min x) / 31;   code = min(31, trunc((x - min x)·id + 0.5)), m = min x
//! ```
//!
//! Rounding therefore differs per type: `Q8_0` rounds half away from zero (C `roundf`: 2.5 → 3,
//! -2.5 → -3); the 4/5-bit types truncate `v + offset` with `v + offset >= 0`, i.e. round half
//! *up* in the scaled domain (which is half toward -∞ in `x` when `d < 0`). `argmax |x|` takes the
//! first index among equal magnitudes and keeps the sign, so an all-zero `Q4_0`/`Q5_0` block
//! stores `d = -0.0` (bits `0x8000`).
//!
//! # Dequantization (with the stored binary16 values widened to float32)
//!
//! ```text
//! Q8_0: x̂ = code · d          Q4_0: x̂ = d · (code - 8)      Q5_0: x̂ = d · (code - 16)
//! Q4_1, Q5_1: x̂ = (d · code) + m     (two roundings, as gguf-py; llama.cpp's C may use an FMA)
//! ```
//!
//! A binary16 `d` has an 11-bit significand and a code at most 8 bits, so every product above is
//! exact in float32 (barring underflow): the only rounding is the `+ m`, and an FMA gives the same
//! result.
//!
//! # Why fp16 scales
//!
//! The codes are computed with the float32 `d`, but only `fp16(d)` (round to nearest even) is
//! stored: two bytes per 32 weights instead of four keep the overhead at 0.5 bit per weight. The
//! price is that the grid used for dequantization is not exactly the one used for quantization:
//! `|x - x̂| <= |d|/2 + |q|·|d - fp16(d)|` (plus `|min - fp16(min)|` for the `_1` types), where
//! `|d - fp16(d)| <= 2⁻¹¹·|d|` for normal halves; tiny scales fall into binary16 subnormals
//! (absolute step 2⁻²⁴) and scales above 65504 overflow to infinity. This module carries its own
//! [`f32_to_f16`] / [`f16_to_f32`] conversions (no `half` crate).
//!
//! # Example
//!
//! ```
//! use firebox_quant::gguf::{GgufBlocks, GgufType, quantize};
//!
//! let x: Vec<f32> = (0..64).map(|i| (i as f32 - 31.5) / 8.0).collect();
//! let blocks = quantize(GgufType::Q4_0, &x, 1, 64).unwrap();
//! let bytes = blocks.to_bytes();
//! assert_eq!(bytes.len(), 2 * 18);
//! let back = GgufBlocks::from_bytes(GgufType::Q4_0, &bytes, 1, 64).unwrap();
//! assert_eq!(back, blocks);
//! let y = back.dequantize();
//! assert!(x.iter().zip(&y).all(|(a, b)| (a - b).abs() <= 0.5));
//! ```

use std::error::Error;
use std::fmt;
use std::str::FromStr;

/// Elements per block, for every type of this module.
pub const BLOCK_SIZE: usize = 32;

/// A llama.cpp block-quantization type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GgufType {
    /// 8-bit symmetric codes, one fp16 scale per block.
    Q8_0,
    /// 4-bit codes with implicit offset 8, one fp16 scale per block.
    Q4_0,
    /// 4-bit codes, fp16 scale and fp16 minimum per block.
    Q4_1,
    /// 5-bit codes with implicit offset 16, one fp16 scale per block.
    Q5_0,
    /// 5-bit codes, fp16 scale and fp16 minimum per block.
    Q5_1,
}

impl GgufType {
    /// Every type, in llama.cpp's order of this list.
    pub const ALL: [GgufType; 5] = [
        GgufType::Q8_0,
        GgufType::Q4_0,
        GgufType::Q4_1,
        GgufType::Q5_0,
        GgufType::Q5_1,
    ];

    /// Elements per block (32 for every type here).
    pub fn block_size(self) -> usize {
        BLOCK_SIZE
    }

    /// Bytes per block: `2` (d) `+ 2` (m, `_1` types) `+ 4` (qh, 5-bit types) `+ 32·bits/8`.
    pub fn type_size(self) -> usize {
        match self {
            GgufType::Q8_0 => 34,
            GgufType::Q4_0 => 18,
            GgufType::Q4_1 => 20,
            GgufType::Q5_0 => 22,
            GgufType::Q5_1 => 24,
        }
    }

    /// Bits per code (8, 4 or 5).
    pub fn bits(self) -> u32 {
        match self {
            GgufType::Q8_0 => 8,
            GgufType::Q4_0 | GgufType::Q4_1 => 4,
            GgufType::Q5_0 | GgufType::Q5_1 => 5,
        }
    }

    /// Whether blocks store a minimum `m` besides the scale (`Q4_1`, `Q5_1`).
    pub fn has_min(self) -> bool {
        matches!(self, GgufType::Q4_1 | GgufType::Q5_1)
    }

    /// The llama.cpp name (`"Q4_0"`, …).
    pub fn name(self) -> &'static str {
        match self {
            GgufType::Q8_0 => "Q8_0",
            GgufType::Q4_0 => "Q4_0",
            GgufType::Q4_1 => "Q4_1",
            GgufType::Q5_0 => "Q5_0",
            GgufType::Q5_1 => "Q5_1",
        }
    }

    /// Storage cost including the per-block fp16 parameters: `type_size · 8 / 32`.
    pub fn bits_per_weight(self) -> f64 {
        (self.type_size() * 8) as f64 / BLOCK_SIZE as f64
    }

    /// Largest stored code (127 for `Q8_0`, 15, 31).
    fn max_code(self) -> i32 {
        match self {
            GgufType::Q8_0 => 127,
            GgufType::Q4_0 | GgufType::Q4_1 => 15,
            GgufType::Q5_0 | GgufType::Q5_1 => 31,
        }
    }

    /// The code of zero for the symmetric 4/5-bit types (`q = code - offset`), else 0.
    fn offset(self) -> i32 {
        match self {
            GgufType::Q4_0 => 8,
            GgufType::Q5_0 => 16,
            _ => 0,
        }
    }
}

impl fmt::Display for GgufType {
    /// The llama.cpp name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for GgufType {
    type Err = GgufError;

    /// Parses a type name, ignoring ASCII case (`"Q4_0"`, `"q4_0"`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        GgufType::ALL
            .into_iter()
            .find(|ty| ty.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| GgufError::UnknownType {
                name: s.to_string(),
            })
    }
}

/// Why a GGUF block operation refused its input.
#[derive(Clone, Debug, PartialEq)]
pub enum GgufError {
    /// A type name that is not one of [`GgufType::ALL`].
    UnknownType {
        /// The name given.
        name: String,
    },
    /// A row length that is not a multiple of the block size.
    RowLength {
        /// The type.
        ty: GgufType,
        /// The row length (`cols`).
        cols: usize,
    },
    /// `data.len()` differs from `rows · cols` (or that product overflows).
    DataLength {
        /// Rows asked for.
        rows: usize,
        /// Columns asked for.
        cols: usize,
        /// Elements given.
        len: usize,
    },
    /// A byte stream whose length is not `rows · (cols / 32) · type_size`.
    ByteLength {
        /// The type.
        ty: GgufType,
        /// Rows asked for.
        rows: usize,
        /// Columns asked for.
        cols: usize,
        /// Bytes given.
        len: usize,
    },
    /// A NaN or infinite input element.
    NonFinite {
        /// Flat (row-major) index of the element.
        index: usize,
        /// Its row.
        row: usize,
        /// Its column.
        col: usize,
        /// The value.
        value: f32,
    },
}

impl fmt::Display for GgufError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GgufError::UnknownType { name } => {
                let known: Vec<&str> = GgufType::ALL.iter().map(|t| t.name()).collect();
                write!(
                    f,
                    "unknown GGUF type `{name}`; known types: {}",
                    known.join(", ")
                )
            }
            GgufError::RowLength { ty, cols } => write!(
                f,
                "row length {cols} is not a multiple of the {ty} block size {BLOCK_SIZE}"
            ),
            GgufError::DataLength { rows, cols, len } => match rows.checked_mul(*cols) {
                Some(n) => write!(
                    f,
                    "data has {len} elements, but rows × cols = {rows} × {cols} = {n}"
                ),
                None => write!(
                    f,
                    "data has {len} elements, but rows × cols = {rows} × {cols} overflows usize"
                ),
            },
            GgufError::ByteLength {
                ty,
                rows,
                cols,
                len,
            } => {
                let blocks = cols / BLOCK_SIZE;
                let size = ty.type_size();
                match rows.checked_mul(blocks).and_then(|b| b.checked_mul(size)) {
                    Some(n) => write!(
                        f,
                        "{ty} byte stream has {len} bytes, but {rows} rows × {blocks} blocks × \
                         {size} bytes = {n}"
                    ),
                    None => write!(
                        f,
                        "{ty} byte stream has {len} bytes, but {rows} rows × {blocks} blocks × \
                         {size} bytes overflows usize"
                    ),
                }
            }
            GgufError::NonFinite {
                index,
                row,
                col,
                value,
            } => write!(
                f,
                "input element {index} (row {row}, column {col}) is {value}; GGUF quantization \
                 needs finite values"
            ),
        }
    }
}

impl Error for GgufError {}

/// A quantized `[rows, cols]` tensor: per-block scales (and minima) and per-element codes.
///
/// Built by [`quantize`] or decoded by [`GgufBlocks::from_bytes`]; the two agree byte for byte
/// ([`GgufBlocks::to_bytes`]). Blocks are in row-major block order (`row · cols/32 + block`).
#[derive(Clone, Debug, PartialEq)]
pub struct GgufBlocks {
    ty: GgufType,
    rows: usize,
    cols: usize,
    d: Vec<f32>,
    d_bits: Vec<u16>,
    m: Vec<f32>,
    m_bits: Vec<u16>,
    codes: Vec<i32>,
}

impl GgufBlocks {
    /// The block type.
    pub fn ty(&self) -> GgufType {
        self.ty
    }

    /// Rows of the tensor.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns of the tensor (a multiple of 32).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Number of blocks, `rows · cols / 32`.
    pub fn n_blocks(&self) -> usize {
        self.d_bits.len()
    }

    /// Per-block scales: the stored binary16 values widened to f32 (exactly).
    pub fn d(&self) -> &[f32] {
        &self.d
    }

    /// Per-block scales as IEEE binary16 bit patterns.
    pub fn d_bits(&self) -> &[u16] {
        &self.d_bits
    }

    /// Per-block minima (binary16 values as f32) for `Q4_1`/`Q5_1`, `None` for the other types.
    pub fn m(&self) -> Option<&[f32]> {
        self.ty.has_min().then_some(self.m.as_slice())
    }

    /// Per-block minima as binary16 bit patterns for `Q4_1`/`Q5_1`, `None` otherwise.
    pub fn m_bits(&self) -> Option<&[u16]> {
        self.ty.has_min().then_some(self.m_bits.as_slice())
    }

    /// Stored codes, one per element, row-major: the int8 value for `Q8_0`, `0..=15` for
    /// `Q4_x`, `0..=31` for `Q5_x`.
    pub fn codes(&self) -> &[i32] {
        &self.codes
    }

    /// Integer multipliers of `d`, one per element: the code for `Q8_0`, `Q4_1`, `Q5_1`;
    /// `code - 8` for `Q4_0`; `code - 16` for `Q5_0`.
    pub fn q(&self) -> Vec<i32> {
        let offset = self.ty.offset();
        self.codes.iter().map(|&c| c - offset).collect()
    }

    /// Storage cost in bits per weight (see [`GgufType::bits_per_weight`]).
    pub fn bits_per_weight(&self) -> f64 {
        self.ty.bits_per_weight()
    }

    /// Dequantized values, row-major `[rows, cols]`, with gguf-py's float32 arithmetic:
    /// `code·d` (`Q8_0`), `d·(code - offset)` (`Q4_0`, `Q5_0`), `(d·code) + m` (`_1` types).
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.codes.len());
        for (b, codes) in self.codes.chunks_exact(BLOCK_SIZE).enumerate() {
            let d = self.d[b];
            match self.ty {
                GgufType::Q8_0 => out.extend(codes.iter().map(|&c| c as f32 * d)),
                GgufType::Q4_0 | GgufType::Q5_0 => {
                    let offset = self.ty.offset();
                    out.extend(codes.iter().map(|&c| d * (c - offset) as f32));
                }
                GgufType::Q4_1 | GgufType::Q5_1 => {
                    let m = self.m[b];
                    out.extend(codes.iter().map(|&c| d * c as f32 + m));
                }
            }
        }
        out
    }

    /// The raw GGUF byte stream: `rows · cols/32` blocks of [`GgufType::type_size`] bytes, rows
    /// concatenated (layouts in the module docs).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.n_blocks() * self.ty.type_size());
        for (b, codes) in self.codes.chunks_exact(BLOCK_SIZE).enumerate() {
            out.extend_from_slice(&self.d_bits[b].to_le_bytes());
            if self.ty.has_min() {
                out.extend_from_slice(&self.m_bits[b].to_le_bytes());
            }
            match self.ty {
                GgufType::Q8_0 => out.extend(codes.iter().map(|&c| c as i8 as u8)),
                _ => {
                    if self.ty.bits() == 5 {
                        let qh = codes
                            .iter()
                            .enumerate()
                            .fold(0u32, |qh, (j, &c)| qh | ((((c >> 4) & 1) as u32) << j));
                        out.extend_from_slice(&qh.to_le_bytes());
                    }
                    let half = BLOCK_SIZE / 2;
                    out.extend(
                        (0..half).map(|j| ((codes[j] & 15) | ((codes[j + half] & 15) << 4)) as u8),
                    );
                }
            }
        }
        out
    }

    /// Decodes a raw GGUF byte stream of `rows` rows of `cols` elements (the inverse of
    /// [`GgufBlocks::to_bytes`]; every byte pattern is accepted, including non-finite scales).
    pub fn from_bytes(
        ty: GgufType,
        bytes: &[u8],
        rows: usize,
        cols: usize,
    ) -> Result<GgufBlocks, GgufError> {
        if !cols.is_multiple_of(BLOCK_SIZE) {
            return Err(GgufError::RowLength { ty, cols });
        }
        let n_blocks = rows.checked_mul(cols / BLOCK_SIZE);
        let expected = n_blocks.and_then(|n| n.checked_mul(ty.type_size()));
        let (Some(n_blocks), true) = (n_blocks, expected == Some(bytes.len())) else {
            return Err(GgufError::ByteLength {
                ty,
                rows,
                cols,
                len: bytes.len(),
            });
        };
        let mut blocks = GgufBlocks::with_capacity(ty, rows, cols, n_blocks);
        for block in bytes.chunks_exact(ty.type_size()) {
            let u16_at = |i: usize| u16::from_le_bytes([block[i], block[i + 1]]);
            blocks.push_params(u16_at(0), ty.has_min().then(|| u16_at(2)));
            let mut pos = if ty.has_min() { 4 } else { 2 };
            if ty == GgufType::Q8_0 {
                blocks
                    .codes
                    .extend(block[pos..].iter().map(|&b| i32::from(b as i8)));
                continue;
            }
            let mut qh = 0u32;
            if ty.bits() == 5 {
                qh = u32::from_le_bytes([
                    block[pos],
                    block[pos + 1],
                    block[pos + 2],
                    block[pos + 3],
                ]);
                pos += 4;
            }
            let qs = &block[pos..];
            let half = BLOCK_SIZE / 2;
            for j in 0..BLOCK_SIZE {
                let nibble = if j < half {
                    qs[j] & 15
                } else {
                    qs[j - half] >> 4
                };
                let high = ((qh >> j) & 1) as u8;
                blocks.codes.push(i32::from(nibble | (high << 4)));
            }
        }
        Ok(blocks)
    }

    fn with_capacity(ty: GgufType, rows: usize, cols: usize, n_blocks: usize) -> GgufBlocks {
        let n_min = if ty.has_min() { n_blocks } else { 0 };
        GgufBlocks {
            ty,
            rows,
            cols,
            d: Vec::with_capacity(n_blocks),
            d_bits: Vec::with_capacity(n_blocks),
            m: Vec::with_capacity(n_min),
            m_bits: Vec::with_capacity(n_min),
            codes: Vec::with_capacity(n_blocks * BLOCK_SIZE),
        }
    }

    fn push_params(&mut self, d_bits: u16, m_bits: Option<u16>) {
        self.d_bits.push(d_bits);
        self.d.push(f16_to_f32(d_bits));
        if let Some(m_bits) = m_bits {
            self.m_bits.push(m_bits);
            self.m.push(f16_to_f32(m_bits));
        }
    }
}

/// Quantizes `data` (row-major `[rows, cols]`, `cols` a multiple of 32, every value finite)
/// to `ty` blocks with gguf-py's float32 arithmetic (formulas in the module docs).
pub fn quantize(
    ty: GgufType,
    data: &[f32],
    rows: usize,
    cols: usize,
) -> Result<GgufBlocks, GgufError> {
    if !cols.is_multiple_of(BLOCK_SIZE) {
        return Err(GgufError::RowLength { ty, cols });
    }
    if rows.checked_mul(cols) != Some(data.len()) {
        return Err(GgufError::DataLength {
            rows,
            cols,
            len: data.len(),
        });
    }
    if let Some(index) = data.iter().position(|v| !v.is_finite()) {
        return Err(GgufError::NonFinite {
            index,
            row: index / cols,
            col: index % cols,
            value: data[index],
        });
    }
    let mut blocks = GgufBlocks::with_capacity(ty, rows, cols, data.len() / BLOCK_SIZE);
    for x in data.chunks_exact(BLOCK_SIZE) {
        quantize_block(ty, x, &mut blocks);
    }
    Ok(blocks)
}

/// `1 / d`, or 0 for a zero scale (gguf-py's `np.where(d == 0, 0, 1 / d)`).
fn inverse(d: f32) -> f32 {
    if d == 0.0 { 0.0 } else { 1.0 / d }
}

/// `min(max_code, trunc(v))` as a code. `v >= 0` for every finite scale; NaN (a zero times an
/// overflowed reciprocal of an f32-subnormal scale) gives 0 and out-of-range values saturate.
fn truncated_code(v: f32, max_code: i32) -> i32 {
    if v.is_nan() {
        0
    } else {
        (v.trunc() as i32).clamp(0, max_code)
    }
}

fn quantize_block(ty: GgufType, x: &[f32], blocks: &mut GgufBlocks) {
    let max_code = ty.max_code();
    match ty {
        GgufType::Q8_0 => {
            let amax = x.iter().fold(0.0f32, |a, v| a.max(v.abs()));
            let d = amax / 127.0;
            let id = inverse(d);
            blocks.push_params(f32_to_f16(d), None);
            blocks.codes.extend(x.iter().map(|&v| {
                let r = (v * id).round();
                if r.is_nan() {
                    0
                } else {
                    (r as i32).clamp(-128, 127)
                }
            }));
        }
        GgufType::Q4_0 | GgufType::Q5_0 => {
            let mut imax = 0;
            for (i, v) in x.iter().enumerate() {
                if v.abs() > x[imax].abs() {
                    imax = i;
                }
            }
            let offset = ty.offset() as f32;
            let d = x[imax] / -offset;
            let id = inverse(d);
            let shift = offset + 0.5;
            blocks.push_params(f32_to_f16(d), None);
            blocks
                .codes
                .extend(x.iter().map(|&v| truncated_code(v * id + shift, max_code)));
        }
        GgufType::Q4_1 | GgufType::Q5_1 => {
            let (mut mn, mut mx) = (x[0], x[0]);
            for &v in &x[1..] {
                if v < mn {
                    mn = v;
                }
                if v > mx {
                    mx = v;
                }
            }
            let d = (mx - mn) / max_code as f32;
            let id = inverse(d);
            blocks.push_params(f32_to_f16(d), Some(f32_to_f16(mn)));
            blocks.codes.extend(
                x.iter()
                    .map(|&v| truncated_code((v - mn) * id + 0.5, max_code)),
            );
        }
    }
}

/// Rounds an f32 to the nearest IEEE binary16 (ties to even), returning its bit pattern.
///
/// Subnormal halves are produced exactly (step 2⁻²⁴; values up to 2⁻²⁵ round to ±0), values
/// from 65520 up overflow to ±∞, infinities map to infinities, NaN to a quiet NaN keeping the
/// sign and the top payload bits, and the sign of zero is kept.
pub fn f32_to_f16(x: f32) -> u16 {
    let bits = x.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exp = ((bits >> 23) & 0xff) as i32;
    let man = bits & 0x007f_ffff;
    if exp == 0xff {
        return if man == 0 {
            sign | 0x7c00
        } else {
            sign | 0x7e00 | (man >> 13) as u16
        };
    }
    let e = exp - 127;
    if e > 15 {
        return sign | 0x7c00;
    }
    // Significand with the implicit bit (f32 subnormals are far below half the smallest half
    // subnormal and end up as zero through the shift below).
    let sig = if exp == 0 { man } else { man | 0x0080_0000 };
    let (mut half, shift) = if e >= -14 {
        // Normal half: keep 10 of 23 mantissa bits; a carry out of the mantissa correctly
        // bumps the exponent (up to infinity).
        ((((e + 15) as u32) << 10) | (man >> 13), 13u32)
    } else {
        // Subnormal half: the value in units of 2⁻²⁴ is sig · 2^(e + 1).
        let shift = (-(e + 1)) as u32;
        if shift > 24 {
            return sign;
        }
        (sig >> shift, shift)
    };
    let rem = sig & ((1u32 << shift) - 1);
    let halfway = 1u32 << (shift - 1);
    if rem > halfway || (rem == halfway && half & 1 == 1) {
        half += 1;
    }
    sign | half as u16
}

/// Widens an IEEE binary16 bit pattern to f32 (exact for every value, NaN payloads kept).
pub fn f16_to_f32(bits: u16) -> f32 {
    let sign = u32::from(bits & 0x8000) << 16;
    let exp = u32::from((bits >> 10) & 0x1f);
    let man = u32::from(bits & 0x03ff);
    let magnitude = match exp {
        // ±0 and subnormals: man · 2⁻²⁴, exact in f32.
        0 => (man as f32 * f32::from_bits(0x3380_0000)).to_bits(),
        0x1f => 0x7f80_0000 | (man << 13),
        _ => ((exp + 112) << 23) | (man << 13),
    };
    f32::from_bits(sign | magnitude)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_rng::SplitMix64 as Rng;

    // ---- f16 conversions ----

    #[test]
    fn f16_edge_values() {
        assert_eq!(f32_to_f16(0.0), 0x0000);
        assert_eq!(f32_to_f16(-0.0), 0x8000);
        assert_eq!(f16_to_f32(0x8000).to_bits(), (-0.0f32).to_bits());
        assert_eq!(f32_to_f16(1.0), 0x3c00);
        assert_eq!(f32_to_f16(-2.0), 0xc000);
        // Largest finite half, and the overflow threshold (the tie with 65536 goes to "even" ∞).
        assert_eq!(f32_to_f16(65504.0), 0x7bff);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert_eq!(f32_to_f16(65519.996), 0x7bff);
        assert_eq!(f32_to_f16(65520.0), 0x7c00);
        assert_eq!(f32_to_f16(-1.0e6), 0xfc00);
        assert_eq!(f32_to_f16(f32::INFINITY), 0x7c00);
        assert_eq!(f32_to_f16(f32::NEG_INFINITY), 0xfc00);
        assert!(f16_to_f32(f32_to_f16(f32::NAN)).is_nan());
        assert!(f16_to_f32(0x7c00).is_infinite());
        // Subnormals: smallest 2⁻²⁴, largest 1023·2⁻²⁴, smallest normal 2⁻¹⁴.
        let tiny = 2f32.powi(-24);
        assert_eq!(f32_to_f16(tiny), 0x0001);
        assert_eq!(f16_to_f32(0x0001), tiny);
        assert_eq!(f32_to_f16(1023.0 * tiny), 0x03ff);
        assert_eq!(f32_to_f16(2f32.powi(-14)), 0x0400);
        // Subnormal ties to even: 0.5, 1.5, 2.5 units of 2⁻²⁴.
        assert_eq!(f32_to_f16(0.5 * tiny), 0x0000);
        assert_eq!(f32_to_f16(-0.5 * tiny), 0x8000);
        assert_eq!(f32_to_f16(1.5 * tiny), 0x0002);
        assert_eq!(f32_to_f16(2.5 * tiny), 0x0002);
        assert_eq!(f32_to_f16(0.500001 * tiny), 0x0001);
        // Rounding from the largest subnormal up into the smallest normal.
        assert_eq!(f32_to_f16(1023.5 * tiny), 0x0400);
        // f32 subnormals and far-below-range values flush to signed zero.
        assert_eq!(f32_to_f16(f32::from_bits(1)), 0x0000);
        assert_eq!(f32_to_f16(-1.0e-30), 0x8000);
        // Normal ties: 1 + 2⁻¹¹ lies halfway between 1 and 1 + 2⁻¹⁰ → even (1.0);
        // 1 + 3·2⁻¹¹ lies between 1 + 2⁻¹⁰ (odd) and 1 + 2·2⁻¹⁰ → even (0x3c02).
        assert_eq!(f32_to_f16(1.0 + 2f32.powi(-11)), 0x3c00);
        assert_eq!(f32_to_f16(1.0 + 3.0 * 2f32.powi(-11)), 0x3c02);
        assert_eq!(f32_to_f16(1.0 + 2f32.powi(-11) + 2f32.powi(-20)), 0x3c01);
        // Mantissa carry into the exponent: 2 - 2⁻¹² rounds up to 2.0.
        assert_eq!(f32_to_f16(2.0 - 2f32.powi(-12)), 0x4000);
    }

    #[test]
    fn f16_round_trips_every_half() {
        for h in 0..=u16::MAX {
            let x = f16_to_f32(h);
            if x.is_nan() {
                assert!(f16_to_f32(f32_to_f16(x)).is_nan());
            } else {
                assert_eq!(f32_to_f16(x), h, "half {h:#06x} = {x:e}");
            }
        }
    }

    #[test]
    fn f16_rounds_to_nearest_even() {
        // Property check against the two neighbouring halves, on values over the whole range.
        let mut rng = Rng(7);
        for _ in 0..200_000 {
            let x = f32::from_bits((rng.next_u64() as u32) & 0x7fff_ffff);
            if !x.is_finite() || x >= 65520.0 {
                continue;
            }
            let h = f32_to_f16(x);
            let got = f64::from(f16_to_f32(h));
            let below = if h == 0 {
                None
            } else {
                Some(f64::from(f16_to_f32(h - 1)))
            };
            let above = (h < 0x7bff).then(|| f64::from(f16_to_f32(h + 1)));
            let err = (got - f64::from(x)).abs();
            for n in [below, above].into_iter().flatten() {
                let other = (n - f64::from(x)).abs();
                assert!(
                    err < other || (err == other && h & 1 == 0),
                    "{x:e} → {h:#06x}"
                );
            }
        }
    }

    // ---- metadata and errors ----

    #[test]
    fn type_metadata_and_parsing() {
        let sizes: Vec<_> = GgufType::ALL.iter().map(|t| t.type_size()).collect();
        assert_eq!(sizes, [34, 18, 20, 22, 24]);
        for ty in GgufType::ALL {
            // d, then m, then qh (the fifth bits), then 8-bit codes or packed nibbles.
            let expected = 2
                + if ty.has_min() { 2 } else { 0 }
                + if ty.bits() == 5 { 4 } else { 0 }
                + if ty.bits() == 8 { 32 } else { 16 };
            assert_eq!(ty.type_size(), expected, "{ty}");
            assert_eq!(ty.name().parse::<GgufType>(), Ok(ty));
            assert_eq!(ty.name().to_lowercase().parse::<GgufType>(), Ok(ty));
            assert_eq!(ty.block_size(), 32);
        }
        assert_eq!(GgufType::Q4_0.bits_per_weight(), 4.5);
        assert_eq!(GgufType::Q8_0.bits_per_weight(), 8.5);
        assert_eq!(GgufType::Q5_1.bits_per_weight(), 6.0);
        let err = "Q3_K".parse::<GgufType>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown GGUF type `Q3_K`; known types: Q8_0, Q4_0, Q4_1, Q5_0, Q5_1"
        );
    }

    #[test]
    fn error_messages_name_the_value() {
        let e = quantize(GgufType::Q4_0, &[0.0; 100], 1, 100).unwrap_err();
        assert_eq!(
            e.to_string(),
            "row length 100 is not a multiple of the Q4_0 block size 32"
        );
        let e = quantize(GgufType::Q8_0, &[0.0; 95], 3, 32).unwrap_err();
        assert_eq!(
            e.to_string(),
            "data has 95 elements, but rows × cols = 3 × 32 = 96"
        );
        let mut x = vec![0.5; 64];
        x[37] = f32::NAN;
        let e = quantize(GgufType::Q5_1, &x, 2, 32).unwrap_err();
        assert_eq!(
            e.to_string(),
            "input element 37 (row 1, column 5) is NaN; GGUF quantization needs finite values"
        );
        x[37] = f32::NEG_INFINITY;
        let e = quantize(GgufType::Q5_1, &x, 2, 32).unwrap_err();
        assert!(
            e.to_string()
                .contains("element 37 (row 1, column 5) is -inf"),
            "{e}"
        );
        let e = GgufBlocks::from_bytes(GgufType::Q4_1, &[0; 39], 2, 32).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Q4_1 byte stream has 39 bytes, but 2 rows × 1 blocks × 20 bytes = 40"
        );
        let e = GgufBlocks::from_bytes(GgufType::Q5_0, &[0; 22], 1, 33).unwrap_err();
        assert_eq!(
            e.to_string(),
            "row length 33 is not a multiple of the Q5_0 block size 32"
        );
        // Empty tensors are fine.
        let empty = quantize(GgufType::Q4_0, &[], 0, 64).unwrap();
        assert!(empty.to_bytes().is_empty() && empty.dequantize().is_empty());
    }

    // ---- byte layout ----

    #[test]
    fn bytes_round_trip() {
        let mut rng = Rng(11);
        for ty in GgufType::ALL {
            let (rows, cols) = (3, 96);
            let x = rng.data(rows * cols, 3.0);
            let blocks = quantize(ty, &x, rows, cols).unwrap();
            let bytes = blocks.to_bytes();
            assert_eq!(bytes.len(), rows * cols / 32 * ty.type_size(), "{ty}");
            let back = GgufBlocks::from_bytes(ty, &bytes, rows, cols).unwrap();
            assert_eq!(back, blocks, "{ty}");
            assert_eq!(back.to_bytes(), bytes, "{ty}");
            // Every byte pattern decodes and re-encodes to itself.
            let noise: Vec<u8> = (0..bytes.len()).map(|_| rng.next_u64() as u8).collect();
            let decoded = GgufBlocks::from_bytes(ty, &noise, rows, cols).unwrap();
            assert_eq!(decoded.to_bytes(), noise, "{ty}");
        }
    }

    #[test]
    fn byte_layout_by_hand() {
        // Q5_0 block with codes j (0..32): d = fp16, qh = bits 4 of codes 16..31, nibbles split.
        let codes: Vec<i32> = (0..32).collect();
        let blocks = GgufBlocks {
            ty: GgufType::Q5_0,
            rows: 1,
            cols: 32,
            d: vec![1.0],
            d_bits: vec![0x3c00],
            m: vec![],
            m_bits: vec![],
            codes,
        };
        let bytes = blocks.to_bytes();
        assert_eq!(&bytes[..2], &[0x00, 0x3c]);
        assert_eq!(&bytes[2..6], &[0x00, 0x00, 0xff, 0xff]);
        // qs[j] = code[j] & 15 | (code[j + 16] & 15) << 4.
        assert_eq!(&bytes[6..9], &[0x00, 0x11, 0x22]);
        assert_eq!(bytes[21], 0xff);
        assert_eq!(bytes.len(), 22);
        assert_eq!(blocks.q()[0], -16);
        assert_eq!(blocks.dequantize()[31], 15.0);

        // Q8_0: d, then the codes as two's-complement bytes.
        let mut x = [0.0f32; 32];
        x[0] = -127.0;
        x[1] = 1.0;
        let bytes = quantize(GgufType::Q8_0, &x, 1, 32).unwrap().to_bytes();
        assert_eq!(&bytes[..4], &[0x00, 0x3c, 0x81, 0x01]);
    }

    // ---- accuracy ----

    /// The float32 scale (and minimum) the codes were computed with, recomputed from the block.
    fn f32_params(ty: GgufType, x: &[f32]) -> (f32, f32) {
        let mn = x.iter().copied().fold(f32::INFINITY, f32::min);
        let mx = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let amax = x.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        match ty {
            GgufType::Q8_0 => (amax / 127.0, 0.0),
            GgufType::Q4_0 | GgufType::Q5_0 => (amax / ty.offset() as f32, 0.0),
            _ => ((mx - mn) / ty.max_code() as f32, mn),
        }
    }

    #[test]
    fn dequantize_within_half_a_step() {
        let mut rng = Rng(3);
        for ty in GgufType::ALL {
            for scale in [1e-3f32, 0.7, 40.0, 3000.0] {
                let x = rng.data(8 * 64, scale);
                let blocks = quantize(ty, &x, 8, 64).unwrap();
                let y = blocks.dequantize();
                let q = blocks.q();
                for (b, xb) in x.chunks_exact(32).enumerate() {
                    let (d32, m32) = f32_params(ty, xb);
                    let d16 = blocks.d()[b].abs();
                    let m16 = blocks.m().map_or(0.0, |m| m[b]);
                    for i in 0..32 {
                        let k = b * 32 + i;
                        // Half a step of the f32 grid, the fp16 rounding of d (times |q|) and of
                        // the minimum, and a few ulps of float32 arithmetic.
                        let mut bound = d32 / 2.0
                            + q[k].abs() as f32 * (d32 - d16).abs()
                            + (m32 - m16).abs()
                            + 4.0 * f32::EPSILON * (x[k].abs() + m32.abs() + d32);
                        // Q4_0/Q5_0 clamp +offset to offset-1: the opposite end of the range
                        // is a full step away.
                        if blocks.codes()[k] == ty.max_code() && ty.offset() != 0 {
                            bound += d32 / 2.0;
                        }
                        let err = (x[k] - y[k]).abs();
                        assert!(
                            err <= bound,
                            "{ty} scale {scale} element {k}: x {} x̂ {} err {err:e} > {bound:e}",
                            x[k],
                            y[k]
                        );
                    }
                    // Exactly half a step when d is representable in fp16 is tested on the grid
                    // below; here the fp16 d must be within 2⁻¹¹ (relative) of the f32 one.
                    assert!((d32 - d16).abs() <= d32 * 2f32.powi(-11) + 2f32.powi(-25));
                }
            }
        }
    }

    #[test]
    fn half_step_when_the_scale_is_a_half() {
        // max |x| = 127·0.03125 makes d exactly representable: the error is at most d/2.
        let mut rng = Rng(5);
        let d = 0.03125f32;
        let mut x = rng.data(64, 127.0 * d);
        x[3] = 127.0 * d;
        x[40] = -127.0 * d;
        let blocks = quantize(GgufType::Q8_0, &x, 2, 32).unwrap();
        assert_eq!(blocks.d(), &[d, d]);
        for (a, b) in x.iter().zip(blocks.dequantize()) {
            assert!((a - b).abs() <= d / 2.0, "{a} {b}");
        }
    }

    #[test]
    fn values_on_the_grid_round_trip_exactly() {
        for d in [0.75f32, 0.125, 3.0] {
            // Q8_0: q·d for q in -127..=127, with both ends present.
            let q8: Vec<f32> = (0..64).map(|i| ((i * 37) % 255 - 127) as f32 * d).collect();
            let mut q8 = q8;
            q8[0] = 127.0 * d;
            q8[32] = -127.0 * d;
            check_grid(GgufType::Q8_0, &q8);
            for ty in [GgufType::Q4_0, GgufType::Q5_0] {
                let off = ty.offset();
                let mut x: Vec<f32> = (0..64)
                    .map(|i| ((i * 7) % (2 * off) - off) as f32 * d)
                    .collect();
                // First block: the signed max is -off·d, so the stored d is +d. Second block:
                // only +off·d reaches the max magnitude, so d is negative there.
                x[5] = -(off as f32) * d;
                for v in &mut x[32..] {
                    *v = v.clamp(-(off - 1) as f32 * d, (off - 1) as f32 * d);
                }
                x[33] = off as f32 * d;
                check_grid(ty, &x);
            }
            for ty in [GgufType::Q4_1, GgufType::Q5_1] {
                let top = ty.max_code();
                let mn = -1.5f32;
                let mut x: Vec<f32> = (0..64)
                    .map(|i| mn + ((i * 11) % (top + 1)) as f32 * d)
                    .collect();
                x[0] = mn;
                x[1] = mn + top as f32 * d;
                x[32] = mn;
                x[33] = mn + top as f32 * d;
                check_grid(ty, &x);
            }
        }
    }

    fn check_grid(ty: GgufType, x: &[f32]) {
        let blocks = quantize(ty, x, 2, 32).unwrap();
        assert_eq!(blocks.dequantize(), x, "{ty}");
        if ty.offset() != 0 {
            assert!(
                blocks.d()[0] > 0.0 && blocks.d()[1] < 0.0,
                "{ty}: {:?}",
                blocks.d()
            );
        }
    }

    // ---- ties and signs ----

    fn codes_of(ty: GgufType, x: &[f32]) -> GgufBlocks {
        let mut block = x.to_vec();
        block.resize(32, 0.0);
        quantize(ty, &block, 1, 32).unwrap()
    }

    #[test]
    fn q8_0_ties_round_away_from_zero() {
        // amax 127 → d = 1, id = 1.
        let b = codes_of(GgufType::Q8_0, &[127.0, 2.5, -2.5, 0.5, -0.5, 1.5, -126.5]);
        assert_eq!(&b.codes()[..7], &[127, 3, -3, 1, -1, 2, -127]);
        assert_eq!(b.d_bits()[0], 0x3c00);
    }

    #[test]
    fn q4_q5_ties_round_up_in_the_scaled_domain() {
        // Signed max -8 → d = 1: x = 2.5 → 3, x = -2.5 → -2 (up), 0.5 → 1, -0.5 → 0.
        let b = codes_of(GgufType::Q4_0, &[-8.0, 2.5, -2.5, 0.5, -0.5, 7.5]);
        assert_eq!(&b.q()[..6], &[-8, 3, -2, 1, 0, 7]);
        // Signed max +8 → d = -1: the scaled values are negated, so ties go toward -∞ in x.
        let b = codes_of(GgufType::Q4_0, &[8.0, 2.5, -2.5, 0.5, -7.5]);
        assert_eq!(b.d()[0], -1.0);
        assert_eq!(&b.dequantize()[..5], &[8.0, 2.0, -3.0, 0.0, -7.0]);
        // Q5_0: max -16 → d = 1.
        let b = codes_of(GgufType::Q5_0, &[-16.0, 2.5, -2.5, 15.5]);
        assert_eq!(&b.q()[..4], &[-16, 3, -2, 15]);
        // Q4_1 / Q5_1: min 0, step 1 → x = 2.5 → 3, 14.5 → 15.
        let b = codes_of(GgufType::Q4_1, &[0.0, 15.0, 2.5, 0.5, 14.5]);
        assert_eq!(&b.codes()[..5], &[0, 15, 3, 1, 15]);
        let mut x = vec![-3.0f32, 31.0 * 0.25 - 3.0, -3.0 + 0.125, -3.0 + 0.375];
        x.resize(32, -3.0);
        let b = quantize(GgufType::Q5_1, &x, 1, 32).unwrap();
        assert_eq!(b.d()[0], 0.25);
        assert_eq!(b.m().unwrap()[0], -3.0);
        assert_eq!(&b.codes()[..4], &[0, 31, 1, 2]);
    }

    #[test]
    fn first_of_equal_magnitudes_sets_the_sign() {
        let b = codes_of(GgufType::Q4_0, &[0.0, 4.0, -4.0]);
        assert_eq!(b.d()[0], -0.5);
        let b = codes_of(GgufType::Q4_0, &[-4.0, 4.0]);
        assert_eq!(b.d()[0], 0.5);
        assert_eq!(&b.q()[..2], &[-8, 7]);
    }

    #[test]
    fn all_zero_blocks() {
        let zeros = [0.0f32; 32];
        let q8 = quantize(GgufType::Q8_0, &zeros, 1, 32).unwrap();
        assert_eq!((q8.d_bits()[0], q8.codes()[0]), (0, 0));
        for ty in [GgufType::Q4_0, GgufType::Q5_0] {
            let b = quantize(ty, &zeros, 1, 32).unwrap();
            assert_eq!(b.d_bits()[0], 0x8000, "{ty}: d = -0.0");
            assert!(b.q().iter().all(|&q| q == 0));
            assert!(b.dequantize().iter().all(|v| *v == 0.0));
        }
        for ty in [GgufType::Q4_1, GgufType::Q5_1] {
            let b = quantize(ty, &zeros, 1, 32).unwrap();
            assert_eq!((b.d_bits()[0], b.m_bits().unwrap()[0]), (0, 0), "{ty}");
            assert!(b.codes().iter().all(|&c| c == 0));
        }
        assert!(q8.m().is_none() && q8.m_bits().is_none());
    }

    #[test]
    fn fp16_scale_extremes() {
        // A scale in the fp16 subnormal range is stored with 2⁻²⁴ resolution.
        let mut x = [0.0f32; 32];
        x[0] = 3.0e-4;
        let b = quantize(GgufType::Q8_0, &x, 1, 32).unwrap();
        assert!(b.d_bits()[0] < 0x0400);
        assert_eq!(b.d()[0], f16_to_f32(f32_to_f16(3.0e-4 / 127.0)));
        // A scale above 65504 overflows to infinity, as in gguf-py.
        x[0] = 1.0e7;
        let b = quantize(GgufType::Q8_0, &x, 1, 32).unwrap();
        assert_eq!(b.d_bits()[0], 0x7c00);
    }
}
