//! DGQ — Dual Grained Quantization (A8W4), a host reference implementation.
//!
//! Zhang et al., "Dual Grained Quantization: Efficient Fine-Grained Quantization for LLM",
//! arXiv 2310.04836 (2023). Reference code: ilur98/DGQ @ `141eef7e`,
//! `dgq/quant/quantizer_helper.py`, `QuantizerHelper.searchquant(groupsize, W4W8)`.
//!
//! # A8W4
//!
//! Fine-grained (group-wise) INT4 weights are accurate, but a separate floating-point scale per
//! group breaks the accumulation axis of an integer matrix multiplication. DGQ (the paper's
//! method: the dual-grained weight format) keeps the INT4 codes `W_u4` and zero points `ZP` per group, but
//! quantizes each group's scale against one coarse per-output-channel scale `s⁽¹⁾` (here
//! `scale8`): the group scale becomes a small integer `S⁽²⁾` (here `group_scale_int`). The
//! weight then dequantizes to an INT8 matrix
//!
//! ```text
//! W_s8[r, k] = S⁽²⁾[r, g(k)] · (W_u4[r, k] − ZP[r, g(k)])      |W_s8| ≤ 127 (see below)
//! W[r, k]    ≈ s⁽¹⁾[r] · W_s8[r, k]
//! ```
//!
//! so with INT8 activations `X ≈ s_X · X_s8` a layer is one INT8 GEMM with INT32 accumulation
//! followed by a per-channel rescale: `Y[t, r] ≈ s_X · s⁽¹⁾[r] · Σ_k X_s8[t, k] · W_s8[r, k]`
//! ([`DgqWeight::matmul_a8w4`], a CPU reference for the authors' CUTLASS kernel).
//!
//! # Why not Burn's two-level scheme
//!
//! Burn 0.22.1's two-level `QuantScheme` (`per_block(..).per_tensor(F32)`) is symmetric block
//! scales in a narrow float type (FP8/F16) under **one** f32 scale per tensor. DGQ needs
//! integer group scales under a **per-output-channel** scale, and asymmetric 4-bit codes with a
//! zero point per group: neither the per-channel coarse level nor the zero points exist there,
//! and no Burn backend runs an INT8×INT8→INT32 GEMM. So the format lives on the host, with the
//! reference kernel [`DgqWeight::matmul_a8w4`]; [`DgqWeight::dequantize`] gives the float weight
//! for running the layer on any Burn backend (simulated A8W4).
//!
//! # Two-phase grid search (the paper's "two-phase grid search")
//!
//! [`dgq_quantize`] reproduces `searchquant` operation by operation (float32 weights and
//! activations, the scale/zero buffers in bfloat16 as in the reference):
//!
//! 1. **Stage 1** (fine grain), per row `r` and group `g` of [`DgqConfig::group_size`] columns:
//!    [`STAGE1_GRID`] asymmetric 4-bit candidates with the range `[wmin·a, wmax·a]`,
//!    `a = 1.02 − (i+1)/20·0.22`; the clamp of the group is cumulative over `i`. The loss of a
//!    candidate is the output MSE `mean_t (X_g·W_g − X_g·Wq_g)²` over the calibration tokens; the
//!    first minimum wins. Its scale is stored as bfloat16 (`stage1_scale`), its zero point as
//!    `stage1_zero`.
//! 2. **Stage 2** (coarse grain, only when [`DgqConfig::w4w8`]), per row: [`STAGE2_GRID`]
//!    candidates `s8 = amax·a/127`, `a = 1.02 − (i+1)/80·0.82`; each group scale is rounded to an
//!    integer multiple `gs = max(round(stage1_scale / s8), 1)` of it, the code range is narrowed
//!    to `zero ± floor(127/gs)` (so that `gs·(q − zero)` fits INT8) and the row is clamped to
//!    `±a·amax`. Loss: output MSE of the whole row; first minimum wins.
//! 3. **Final** quantization with `scale8 = bf16(s8)`, redone in the reference's bfloat16
//!    arithmetic (its effective group scale `bf16(gs·scale8)` is not the float32 product used
//!    during the stage-2 search; that is reproduced).
//!
//! Rounding is round-half-to-even everywhere (`torch.round`); bfloat16 rounding is
//! round-to-nearest-even from float32. Losses are evaluated in float64 (the reference uses
//! float32 matrix products; the candidates it compares differ by far more than that rounding).
//!
//! # Degenerate inputs
//!
//! A group whose every stage-1 candidate has a NaN loss (a constant group: zero range, zero
//! scale) keeps the reference's initial buffers, scale 1 and zero point 1, and reports no ratio
//! index. A row whose every stage-2 candidate has a NaN loss (an all-zero row) has `scale8 = 0`
//! as in the reference; where the reference then produces NaN weights, this implementation
//! uses `group_scale_int = 1`, effective scale 0 and codes equal to the zero point (clamped to
//! `[lower, upper]`), i.e. an exactly zero row.
//!
//! The code range `[lower, upper] = [max(zero − imax, 0), min(zero + imax, 15)]` keeps
//! `|W_s8| ≤ 127` whenever it is non-empty. For a one-signed group whose zero point lies more
//! than `imax` outside `0..=15` it is empty; `torch.clamp` then returns `upper`, which is
//! reproduced (bit-exact dequantization), and [`DgqWeight::int8_weight`] reports that the
//! weight has no INT8 form.
//!
//! # Activations
//!
//! [`quantize_activations_int8`] is a per-tensor symmetric INT8 quantizer with percentile
//! clipping of outliers, in the spirit of the paper's "percentile clipping smoothing": the clip
//! threshold is a percentile of `|x|` instead of its maximum.

use std::fmt;

/// Number of stage-1 (group scale) candidates: ratios `1.02 − (i+1)/20·0.22`, `i = 0..20`.
pub const STAGE1_GRID: usize = 20;

/// Number of stage-2 (channel INT8 scale) candidates: ratios `1.02 − (i+1)/80·0.82`,
/// `i = 0..80`.
pub const STAGE2_GRID: usize = 80;

/// Largest INT4 code (`2⁴ − 1`); codes of stage 1 lie in `0..=15`.
pub const INT4_MAX: i32 = 15;

/// Largest magnitude of the INT8 weights and activations (symmetric range `−127..=127`).
pub const INT8_MAX: i32 = 127;

/// The largest `in_features` for which [`DgqWeight::matmul_a8w4`]'s INT32 accumulator cannot
/// overflow: `⌊(2³¹ − 1) / (128 · 127)⌋` (an activation may be −128).
pub const MAX_I32_ACCUMULATION_COLS: usize = (i32::MAX as usize) / (128 * 127);

/// The search configuration (the `groupsize` and `W4W8` arguments of `searchquant`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DgqConfig {
    /// Number of consecutive input columns sharing one INT4 scale and zero point; must divide
    /// `in_features`. (The reference treats `groupsize ≤ 0` as the whole row; here pass
    /// `group_size = in_features` for that.)
    pub group_size: usize,
    /// Whether to run stage 2 and produce A8W4 weights (INT8 group scales against an INT8
    /// channel scale). When false the result is plain group-wise INT4 (`stage1_*`).
    pub w4w8: bool,
}

impl Default for DgqConfig {
    /// `group_size = 128`, `w4w8 = true`: the setting of the reference repository's scripts
    /// (`--groupsize 128 --wbits 4 --w4w8`, README and `llama7b.sh`).
    fn default() -> Self {
        Self {
            group_size: 128,
            w4w8: true,
        }
    }
}

/// Why a DGQ call was rejected; every variant names the offending value.
#[derive(Clone, Debug, PartialEq)]
pub enum DgqError {
    /// The group size is 0.
    ZeroGroupSize,
    /// The group size does not divide `in_features`.
    GroupSizeMismatch {
        /// The requested group size.
        group_size: usize,
        /// The weight's column count.
        in_features: usize,
    },
    /// The weight has no rows or no columns.
    EmptyWeight {
        /// Requested rows (`out_features`).
        rows: usize,
        /// Requested columns (`in_features`).
        cols: usize,
    },
    /// The weight slice does not hold `rows × cols` values.
    WeightLength {
        /// Requested rows.
        rows: usize,
        /// Requested columns.
        cols: usize,
        /// Length of the slice.
        len: usize,
    },
    /// No calibration tokens.
    ZeroTokens,
    /// The activation slice does not hold `tokens × in_features` values.
    ActivationLength {
        /// Number of tokens given.
        tokens: usize,
        /// The weight's column count.
        in_features: usize,
        /// Length of the slice.
        len: usize,
    },
    /// A weight is NaN or infinite.
    NonFiniteWeight {
        /// Its row.
        row: usize,
        /// Its column.
        col: usize,
        /// The value.
        value: f32,
    },
    /// A calibration activation is NaN or infinite.
    NonFiniteActivation {
        /// Its token (row of the activations).
        token: usize,
        /// Its column.
        col: usize,
        /// The value.
        value: f32,
    },
    /// An input of [`quantize_activations_int8`] is NaN or infinite.
    NonFiniteInput {
        /// Its flat index.
        index: usize,
        /// The value.
        value: f32,
    },
    /// [`quantize_activations_int8`] was given no values.
    EmptyInput,
    /// The percentile is not in `(0, 100]`.
    InvalidPercentile(f32),
    /// An INT8 operation was requested from a weight quantized without stage 2.
    NotW4W8,
    /// The INT8 activations passed to [`DgqWeight::matmul_a8w4`] do not hold
    /// `tokens × in_features` values.
    InputLength {
        /// Number of tokens given.
        tokens: usize,
        /// The weight's column count.
        in_features: usize,
        /// Length of the slice.
        len: usize,
    },
    /// A weight's INT8 value `group_scale_int · (q − zero)` lies outside `−127..=127` (only
    /// possible where the reference's clamp range `[lower, upper]` was empty, see
    /// [`DgqW4W8::q`]).
    Int8OutOfRange {
        /// Its row.
        row: usize,
        /// Its column.
        col: usize,
        /// The INT8 value it would need.
        value: i32,
    },
    /// `in_features` is too large for an INT32 accumulator
    /// ([`MAX_I32_ACCUMULATION_COLS`]).
    AccumulatorOverflow {
        /// The weight's column count.
        in_features: usize,
    },
}

impl fmt::Display for DgqError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            DgqError::ZeroGroupSize => write!(f, "group size must be positive, got 0"),
            DgqError::GroupSizeMismatch {
                group_size,
                in_features,
            } => write!(
                f,
                "group size {group_size} does not divide in_features {in_features}"
            ),
            DgqError::EmptyWeight { rows, cols } => write!(
                f,
                "weight is empty: {rows} rows (out_features) × {cols} columns (in_features)"
            ),
            DgqError::WeightLength { rows, cols, len } => write!(
                f,
                "weight has {len} values, expected rows × cols = {rows} × {cols} = {}",
                rows.saturating_mul(cols)
            ),
            DgqError::ZeroTokens => write!(f, "activations have 0 tokens; at least one is needed"),
            DgqError::ActivationLength {
                tokens,
                in_features,
                len,
            } => {
                write!(
                    f,
                    "activations have {len} values, expected tokens × in_features = \
                     {tokens} × {in_features} = {}",
                    tokens.saturating_mul(in_features)
                )?;
                if tokens > 0 && len.is_multiple_of(tokens) {
                    write!(
                        f,
                        " ({} columns per token, but the weight has in_features {in_features})",
                        len / tokens
                    )?;
                }
                Ok(())
            }
            DgqError::NonFiniteWeight { row, col, value } => {
                write!(f, "weight[{row}, {col}] is {value}, not finite")
            }
            DgqError::NonFiniteActivation { token, col, value } => {
                write!(f, "activations[{token}, {col}] is {value}, not finite")
            }
            DgqError::NonFiniteInput { index, value } => {
                write!(f, "input[{index}] is {value}, not finite")
            }
            DgqError::EmptyInput => write!(f, "no values to quantize"),
            DgqError::InvalidPercentile(p) => {
                write!(f, "percentile {p} is not in (0, 100]")
            }
            DgqError::NotW4W8 => write!(
                f,
                "the weight was quantized without stage 2 (w4w8 = false), it has no INT8 form"
            ),
            DgqError::InputLength {
                tokens,
                in_features,
                len,
            } => write!(
                f,
                "INT8 input has {len} values, expected tokens × in_features = \
                 {tokens} × {in_features} = {}",
                tokens.saturating_mul(in_features)
            ),
            DgqError::Int8OutOfRange { row, col, value } => write!(
                f,
                "weight[{row}, {col}] needs INT8 value {value}, outside -127..=127"
            ),
            DgqError::AccumulatorOverflow { in_features } => write!(
                f,
                "in_features {in_features} exceeds {MAX_I32_ACCUMULATION_COLS}, \
                 an INT32 accumulator could overflow"
            ),
        }
    }
}

impl std::error::Error for DgqError {}

/// The stage-2 (A8W4) part of a [`DgqWeight`]. Per-group arrays are `[rows, n_groups]`,
/// per-element arrays `[rows, cols]`, all row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct DgqW4W8 {
    /// Index `i` of the chosen stage-2 ratio per row (`None`: every candidate's loss was NaN).
    pub stage2_ratio_index: Vec<Option<usize>>,
    /// Output MSE of every stage-2 candidate, `[STAGE2_GRID, rows]` (the reference's layout).
    pub stage2_loss: Vec<f64>,
    /// The channel scale `s⁽¹⁾ = bf16(amax·a/127)` per row (a bfloat16 value; 0 when no
    /// candidate had a finite loss).
    pub scale8: Vec<f32>,
    /// The integer group scale `S⁽²⁾ = max(round(bf16(stage1_scale / scale8)), 1)`.
    pub group_scale_int: Vec<i32>,
    /// `bf16(group_scale_int · scale8)`, the float scale of the dequantized group (a bfloat16
    /// value).
    pub effective_group_scale: Vec<f32>,
    /// Lowest allowed code `max(zero − ⌊bf16(127/S⁽²⁾)⌋, 0)`.
    pub lower: Vec<i32>,
    /// Highest allowed code `min(zero + ⌊bf16(127/S⁽²⁾)⌋, 15)`.
    pub upper: Vec<i32>,
    /// The final INT4 codes `clamp(round(W_c / effective) + zero, lower, upper)`. Usually in
    /// `0..=15`; where `lower > upper` (a zero point far outside `0..=15`) the reference's
    /// `torch.clamp` yields `upper`, which is reproduced and may be negative.
    pub q: Vec<i32>,
    /// The A8W4 layer weight `effective · (q − zero)`, `[rows, cols]`.
    pub dequant: Vec<f32>,
}

/// The result of [`dgq_quantize`]: every quantity the reference computes.
///
/// Per-group arrays are `[rows, n_groups]`, per-element arrays `[rows, cols]`, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct DgqWeight {
    /// `out_features`.
    pub rows: usize,
    /// `in_features`.
    pub cols: usize,
    /// Columns per group.
    pub group_size: usize,
    /// Index `i` of the chosen stage-1 ratio per group (`None`: every candidate's loss was NaN,
    /// the reference's initial scale 1 / zero 1 are kept).
    pub stage1_ratio_index: Vec<Option<usize>>,
    /// The group scale, rounded to bfloat16 (as stored by the reference).
    pub stage1_scale: Vec<f32>,
    /// The group zero point (an integer stored as bfloat16 by the reference; exact for
    /// `|zero| ≤ 256`). It can lie outside `0..=15` for one-signed groups.
    pub stage1_zero: Vec<i32>,
    /// Output MSE of every stage-1 candidate, `[n_groups, STAGE1_GRID, rows]` (the
    /// reference's layout).
    pub stage1_loss: Vec<f64>,
    /// Stage-1 INT4 codes `clamp(round(W / scale) + zero, 0, 15)` of the unclamped weight.
    pub stage1_q: Vec<u8>,
    /// `scale · (q − zero)`: the layer weight when `w4w8` is off.
    pub stage1_dequant: Vec<f32>,
    /// The stage-2 results, present when the config's `w4w8` was set.
    pub w4w8: Option<DgqW4W8>,
}

impl DgqWeight {
    /// Number of groups per row (`cols / group_size`).
    pub fn n_groups(&self) -> usize {
        self.cols / self.group_size
    }

    /// The quantized layer weight `[rows, cols]`: the A8W4 dequantization when stage 2 ran,
    /// the stage-1 INT4 dequantization otherwise (what the reference writes into the layer).
    pub fn dequantize(&self) -> Vec<f32> {
        match &self.w4w8 {
            Some(stage2) => stage2.dequant.clone(),
            None => self.stage1_dequant.clone(),
        }
    }

    /// The INT8 weight `W_s8 = group_scale_int · (q − zero)`, `[rows, cols]`.
    ///
    /// These integers are exact. The float weight they stand for is `scale8[r] · W_s8`, which
    /// differs from [`dequantize`](Self::dequantize) only by the bfloat16 rounding of the
    /// effective group scale: `dequant = bf16(gs·scale8)·(q − zero)` exactly (the product of a
    /// bfloat16 and a small integer is exact in float32), so
    /// `|dequant − scale8·W_s8| ≤ 2⁻⁸·|scale8·W_s8|`, with equality of the two whenever
    /// `gs·scale8` is itself a bfloat16 value (e.g. `gs` a power of two).
    ///
    /// `None` when stage 2 did not run, or when some value falls outside `−127..=127` (possible
    /// only where a group's clamp range `[lower, upper]` was empty; see [`DgqW4W8::q`]).
    pub fn int8_weight(&self) -> Option<Vec<i8>> {
        self.int8_weight_checked().ok()
    }

    fn int8_weight_checked(&self) -> Result<Vec<i8>, DgqError> {
        let stage2 = self.w4w8.as_ref().ok_or(DgqError::NotW4W8)?;
        let n_groups = self.n_groups();
        let mut out = Vec::with_capacity(self.rows * self.cols);
        for row in 0..self.rows {
            for col in 0..self.cols {
                let group = row * n_groups + col / self.group_size;
                let value = stage2.group_scale_int[group]
                    .saturating_mul(stage2.q[row * self.cols + col] - self.stage1_zero[group]);
                let int8 = i8::try_from(value)
                    .ok()
                    .filter(|v| *v >= -(INT8_MAX as i8))
                    .ok_or(DgqError::Int8OutOfRange { row, col, value })?;
                out.push(int8);
            }
        }
        Ok(out)
    }

    /// Reference A8W4 matrix product on the CPU: `Y = X · Wᵀ`, `[tokens, rows]`.
    ///
    /// `x_int8` is `[tokens, cols]` row-major with `X ≈ x_scale · x_int8` (e.g. from
    /// [`quantize_activations_int8`]). Each output is one INT8 × INT8 dot product with INT32
    /// accumulation against [`int8_weight`](Self::int8_weight), rescaled once per output
    /// channel: `Y[t, r] = f32(acc) · f32(x_scale · scale8[r])` (the conversion of `acc` is exact
    /// below 2²⁴). This is the computation the authors' CUTLASS kernel performs and Burn cannot
    /// express natively.
    ///
    /// Errors: no stage 2 ([`DgqError::NotW4W8`]), a length other than `tokens × cols`, a weight
    /// not representable in INT8, or `cols` above [`MAX_I32_ACCUMULATION_COLS`].
    pub fn matmul_a8w4(
        &self,
        x_int8: &[i8],
        x_scale: f32,
        tokens: usize,
    ) -> Result<Vec<f32>, DgqError> {
        let stage2 = self.w4w8.as_ref().ok_or(DgqError::NotW4W8)?;
        if tokens.checked_mul(self.cols) != Some(x_int8.len()) {
            return Err(DgqError::InputLength {
                tokens,
                in_features: self.cols,
                len: x_int8.len(),
            });
        }
        if self.cols > MAX_I32_ACCUMULATION_COLS {
            return Err(DgqError::AccumulatorOverflow {
                in_features: self.cols,
            });
        }
        let weight = self.int8_weight_checked()?;
        let mut out = vec![0.0f32; tokens * self.rows];
        for (t, x_row) in x_int8.chunks_exact(self.cols).enumerate() {
            for (r, w_row) in weight.chunks_exact(self.cols).enumerate() {
                let acc: i32 = x_row
                    .iter()
                    .zip(w_row)
                    .map(|(&x, &w)| i32::from(x) * i32::from(w))
                    .sum();
                out[t * self.rows + r] = acc as f32 * (x_scale * stage2.scale8[r]);
            }
        }
        Ok(out)
    }
}

/// Runs DGQ's two-phase grid search (`searchquant`) on one linear layer.
///
/// `weight` is `[rows = out_features, cols = in_features]` row-major (the `nn.Linear` layout),
/// `activations` the calibration inputs `[tokens, cols]` row-major. Stage 1 always runs; stage 2
/// and the final A8W4 quantization run when `config.w4w8` is set. See the module docs for the
/// algorithm, and the parity fixtures' `README.md` (section `dgq`) for the float32 operation
/// order, which is followed exactly.
///
/// Errors name the problem: group size 0 or not dividing `cols`, an empty weight, slice lengths
/// inconsistent with the shapes, zero tokens, a non-finite weight or activation (with its
/// position).
pub fn dgq_quantize(
    weight: &[f32],
    rows: usize,
    cols: usize,
    activations: &[f32],
    tokens: usize,
    config: &DgqConfig,
) -> Result<DgqWeight, DgqError> {
    validate(weight, rows, cols, activations, tokens, config)?;
    let group_size = config.group_size;
    let problem = Problem {
        weight,
        rows,
        cols,
        activations,
        tokens,
        group_size,
    };

    let stage1 = problem.stage1();
    let (stage1_q, stage1_dequant) = problem.stage1_quantize(&stage1);
    let w4w8 = config.w4w8.then(|| problem.stage2(&stage1));

    Ok(DgqWeight {
        rows,
        cols,
        group_size,
        stage1_ratio_index: stage1.index,
        stage1_scale: stage1.scale,
        // Integers held in bfloat16; |zero| < 2³¹ for any finite chosen candidate.
        stage1_zero: stage1.zero.iter().map(|&z| z as i32).collect(),
        stage1_loss: stage1.loss,
        stage1_q,
        stage1_dequant,
        w4w8,
    })
}

fn validate(
    weight: &[f32],
    rows: usize,
    cols: usize,
    activations: &[f32],
    tokens: usize,
    config: &DgqConfig,
) -> Result<(), DgqError> {
    if config.group_size == 0 {
        return Err(DgqError::ZeroGroupSize);
    }
    if rows == 0 || cols == 0 {
        return Err(DgqError::EmptyWeight { rows, cols });
    }
    if rows.checked_mul(cols) != Some(weight.len()) {
        return Err(DgqError::WeightLength {
            rows,
            cols,
            len: weight.len(),
        });
    }
    if !cols.is_multiple_of(config.group_size) {
        return Err(DgqError::GroupSizeMismatch {
            group_size: config.group_size,
            in_features: cols,
        });
    }
    if tokens == 0 {
        return Err(DgqError::ZeroTokens);
    }
    if tokens.checked_mul(cols) != Some(activations.len()) {
        return Err(DgqError::ActivationLength {
            tokens,
            in_features: cols,
            len: activations.len(),
        });
    }
    if let Some(index) = weight.iter().position(|v| !v.is_finite()) {
        return Err(DgqError::NonFiniteWeight {
            row: index / cols,
            col: index % cols,
            value: weight[index],
        });
    }
    if let Some(index) = activations.iter().position(|v| !v.is_finite()) {
        return Err(DgqError::NonFiniteActivation {
            token: index / cols,
            col: index % cols,
            value: activations[index],
        });
    }
    Ok(())
}

/// Validated inputs of one search.
struct Problem<'a> {
    weight: &'a [f32],
    rows: usize,
    cols: usize,
    activations: &'a [f32],
    tokens: usize,
    group_size: usize,
}

/// Stage-1 search results, `[rows, n_groups]` except `loss`.
struct Stage1 {
    index: Vec<Option<usize>>,
    /// bfloat16 values.
    scale: Vec<f32>,
    /// bfloat16 values (integers).
    zero: Vec<f32>,
    /// `[n_groups, STAGE1_GRID, rows]`.
    loss: Vec<f64>,
}

impl Problem<'_> {
    fn n_groups(&self) -> usize {
        self.cols / self.group_size
    }

    /// Output MSE `mean_t (Σ_k X[t, col0 + k] · (w[k] − wq[k]))²`, in float64.
    fn output_mse(&self, col0: usize, w: &[f32], wq: &[f32]) -> f64 {
        let diff: Vec<f64> = w
            .iter()
            .zip(wq)
            .map(|(&a, &b)| f64::from(a) - f64::from(b))
            .collect();
        let total: f64 = self
            .activations
            .chunks_exact(self.cols)
            .map(|x| {
                let out: f64 = x[col0..col0 + diff.len()]
                    .iter()
                    .zip(&diff)
                    .map(|(&x, &d)| f64::from(x) * d)
                    .sum();
                out * out
            })
            .sum();
        total / self.tokens as f64
    }

    /// Stage 1: the per-group search over [`STAGE1_GRID`] clipping ratios.
    fn stage1(&self) -> Stage1 {
        let (rows, g_size, n_groups) = (self.rows, self.group_size, self.n_groups());
        let mut out = Stage1 {
            index: vec![None; rows * n_groups],
            // The reference's buffers start as torch.ones (bfloat16).
            scale: vec![1.0; rows * n_groups],
            zero: vec![1.0; rows * n_groups],
            loss: vec![0.0; n_groups * STAGE1_GRID * rows],
        };
        let mut clamped = vec![0.0f32; g_size];
        let mut wq = vec![0.0f32; g_size];
        for g in 0..n_groups {
            let col0 = g * g_size;
            for r in 0..rows {
                let wg = &self.weight[r * self.cols + col0..][..g_size];
                let wmax = wg.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let wmin = wg.iter().copied().fold(f32::INFINITY, f32::min);
                clamped.copy_from_slice(wg);
                let mut best = f64::INFINITY;
                let slot = r * n_groups + g;
                for i in 0..STAGE1_GRID {
                    let a = stage1_ratio(i);
                    let lo = wmin * a;
                    let hi = wmax * a;
                    // Cumulative: the clamped group of step i feeds step i + 1.
                    for v in clamped.iter_mut() {
                        *v = torch_clamp(*v, lo, hi);
                    }
                    let s = (hi - lo) / INT4_MAX as f32;
                    let z = ((-wmin * a) / s).round_ties_even();
                    for (q, &v) in wq.iter_mut().zip(clamped.iter()) {
                        let code = torch_clamp((v / s).round_ties_even() + z, 0.0, 15.0);
                        *q = s * (code - z);
                    }
                    let loss = self.output_mse(col0, wg, &wq);
                    out.loss[(g * STAGE1_GRID + i) * rows + r] = loss;
                    // Strict `<`: the first minimum wins; NaN never does.
                    if loss < best {
                        best = loss;
                        out.index[slot] = Some(i);
                        out.scale[slot] = bf16(s);
                        out.zero[slot] = bf16(z);
                    }
                }
            }
        }
        out
    }

    /// `Quantizer.quantize` with the stage-1 bfloat16 scale/zero on the unclamped weight.
    fn stage1_quantize(&self, stage1: &Stage1) -> (Vec<u8>, Vec<f32>) {
        let n_groups = self.n_groups();
        let mut codes = Vec::with_capacity(self.weight.len());
        let mut dequant = Vec::with_capacity(self.weight.len());
        for (index, &w) in self.weight.iter().enumerate() {
            let slot = (index / self.cols) * n_groups + (index % self.cols) / self.group_size;
            let (scale, zero) = (stage1.scale[slot], stage1.zero[slot]);
            let code = torch_clamp((w / scale).round_ties_even() + zero, 0.0, 15.0);
            codes.push(code as u8);
            dequant.push(scale * (code - zero));
        }
        (codes, dequant)
    }

    /// Stage 2 (the per-row INT8 channel-scale search) and the final A8W4 quantization.
    fn stage2(&self, stage1: &Stage1) -> DgqW4W8 {
        let (rows, cols, g_size, n_groups) =
            (self.rows, self.cols, self.group_size, self.n_groups());
        let mut out = DgqW4W8 {
            stage2_ratio_index: vec![None; rows],
            stage2_loss: vec![0.0; STAGE2_GRID * rows],
            // The reference's buffer starts as torch.zeros (bfloat16).
            scale8: vec![0.0; rows],
            group_scale_int: Vec::with_capacity(rows * n_groups),
            effective_group_scale: Vec::with_capacity(rows * n_groups),
            lower: Vec::with_capacity(rows * n_groups),
            upper: Vec::with_capacity(rows * n_groups),
            q: Vec::with_capacity(rows * cols),
            dequant: Vec::with_capacity(rows * cols),
        };
        let mut wq = vec![0.0f32; cols];
        for r in 0..rows {
            let w_row = &self.weight[r * cols..][..cols];
            let scales = &stage1.scale[r * n_groups..][..n_groups];
            let zeros = &stage1.zero[r * n_groups..][..n_groups];
            let amax = w_row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let mut best = f64::INFINITY;
            for i in 0..STAGE2_GRID {
                let wm = amax * stage2_ratio(i);
                let s8 = wm / INT8_MAX as f32;
                for g in 0..n_groups {
                    let gs = torch_clamp_min((scales[g] / s8).round_ties_even(), 1.0);
                    // `127 / t` is `t.reciprocal() * 127` in PyTorch.
                    let imax = ((1.0 / gs) * INT8_MAX as f32).floor();
                    let upper = torch_clamp_max(zeros[g] + imax, 15.0);
                    let lower = torch_clamp_min(zeros[g] - imax, 0.0);
                    let sq = gs * s8;
                    let range = g * g_size..(g + 1) * g_size;
                    for (q, &w) in wq[range.clone()].iter_mut().zip(&w_row[range]) {
                        let code = torch_clamp(
                            (torch_clamp(w, -wm, wm) / sq).round_ties_even() + zeros[g],
                            lower,
                            upper,
                        );
                        *q = sq * (code - zeros[g]);
                    }
                }
                let loss = self.output_mse(0, w_row, &wq);
                out.stage2_loss[i * rows + r] = loss;
                if loss < best {
                    best = loss;
                    out.stage2_ratio_index[r] = Some(i);
                    out.scale8[r] = bf16(s8);
                }
            }

            // Final quantization in the reference's bfloat16 arithmetic.
            let scale8 = out.scale8[r];
            let degenerate = out.stage2_ratio_index[r].is_none();
            let clip_hi = bf16(scale8 * INT8_MAX as f32);
            let clip_lo = bf16(scale8 * -(INT8_MAX as f32));
            for g in 0..n_groups {
                let gs = if degenerate {
                    1.0
                } else {
                    torch_clamp_min(bf16(bf16(scales[g] / scale8).round_ties_even()), 1.0)
                };
                let imax = bf16(bf16(1.0 / gs) * INT8_MAX as f32).floor();
                let effective = bf16(gs * scale8);
                let zero = zeros[g];
                let upper = torch_clamp_max(bf16(zero + imax), 15.0);
                let lower = torch_clamp_min(bf16(zero - imax), 0.0);
                out.group_scale_int.push(gs as i32);
                out.effective_group_scale.push(effective);
                out.lower.push(lower as i32);
                out.upper.push(upper as i32);
                for &w in &w_row[g * g_size..(g + 1) * g_size] {
                    let code = if degenerate {
                        // The reference divides 0 by 0 here; the code is the zero point.
                        torch_clamp(zero, lower, upper)
                    } else {
                        let wc = torch_clamp(w, clip_lo, clip_hi);
                        torch_clamp((wc / effective).round_ties_even() + zero, lower, upper)
                    };
                    out.q.push(code as i32);
                    out.dequant.push(effective * (code - zero));
                }
            }
        }
        out
    }
}

/// Per-tensor symmetric INT8 quantization with percentile clipping of outliers.
///
/// The clip threshold is the `percentile`-th percentile (in percent, `(0, 100]`) of `|x|`,
/// linearly interpolated between order statistics exactly like
/// `torch.quantile(x.abs(), percentile / 100)` (computed in float64, then rounded to float32):
/// with `|x|` sorted ascending as `a₀ ≤ … ≤ a_{n−1}`, `pos = percentile/100 · (n − 1)`,
/// `threshold = a_⌊pos⌋ + (pos − ⌊pos⌋) · (a_⌊pos⌋+1 − a_⌊pos⌋)`. `percentile = 100` is the
/// plain absmax. If the threshold is 0 (more than the percentile of values are zero) the absmax
/// is used instead, so nonzero values are not all flushed to zero; if every value is zero the
/// scale is 1.
///
/// Returns `(q, scale)` with `scale = f32(threshold / 127)` and
/// `q = clamp(round_half_even(f32(x / scale)), −127, 127)`, so `x ≈ scale · q` and values beyond
/// the threshold saturate at ±127. The range is symmetric (−128 is never produced).
///
/// Errors: no values, a percentile outside `(0, 100]` or NaN, a non-finite value (its index).
pub fn quantize_activations_int8(x: &[f32], percentile: f32) -> Result<(Vec<i8>, f32), DgqError> {
    if x.is_empty() {
        return Err(DgqError::EmptyInput);
    }
    if !(percentile > 0.0 && percentile <= 100.0) {
        return Err(DgqError::InvalidPercentile(percentile));
    }
    if let Some(index) = x.iter().position(|v| !v.is_finite()) {
        return Err(DgqError::NonFiniteInput {
            index,
            value: x[index],
        });
    }
    let mut sorted: Vec<f64> = x.iter().map(|v| f64::from(v.abs())).collect();
    sorted.sort_by(f64::total_cmp);
    let last = sorted.len() - 1;
    let pos = f64::from(percentile) / 100.0 * last as f64;
    let below = (pos.floor() as usize).min(last);
    let above = (below + 1).min(last);
    let frac = pos - below as f64;
    let mut threshold = (sorted[below] + frac * (sorted[above] - sorted[below])) as f32;
    if threshold == 0.0 {
        threshold = sorted[last] as f32;
    }
    if threshold == 0.0 {
        return Ok((vec![0; x.len()], 1.0));
    }
    let scale = threshold / INT8_MAX as f32;
    let limit = INT8_MAX as f32;
    let q = x
        .iter()
        .map(|&v| (v / scale).round_ties_even().clamp(-limit, limit) as i8)
        .collect();
    Ok((q, scale))
}

/// The stage-1 ratio `f32(1.02 − (i+1)/20·0.22)`, evaluated in float64 as Python does.
fn stage1_ratio(i: usize) -> f32 {
    (1.02 - (i + 1) as f64 / STAGE1_GRID as f64 * 0.22) as f32
}

/// The stage-2 ratio `f32(1.02 − (i+1)/80·0.82)`, evaluated in float64 as Python does.
fn stage2_ratio(i: usize) -> f32 {
    (1.02 - (i + 1) as f64 / STAGE2_GRID as f64 * 0.82) as f32
}

/// Rounds a float32 to the nearest bfloat16 (ties to even), returned as float32. NaN stays NaN.
pub(crate) fn bf16(x: f32) -> f32 {
    if x.is_nan() {
        return x;
    }
    let bits = x.to_bits();
    let rounded = bits.wrapping_add(0x7fff + ((bits >> 16) & 1));
    f32::from_bits(rounded & 0xffff_0000)
}

/// `torch.clamp(x, lo, hi)`: `min(max(x, lo), hi)`, NaN propagates; `lo > hi` gives `hi`.
fn torch_clamp(x: f32, lo: f32, hi: f32) -> f32 {
    torch_clamp_max(torch_clamp_min(x, lo), hi)
}

/// `torch.clamp(x, min=lo)` (NaN propagates).
fn torch_clamp_min(x: f32, lo: f32) -> f32 {
    if x < lo { lo } else { x }
}

/// `torch.clamp(x, max=hi)` (NaN propagates).
fn torch_clamp_max(x: f32, hi: f32) -> f32 {
    if x > hi { hi } else { x }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (xorshift64*), uniform in [-1, 1).
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> f32 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let bits = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40;
            bits as f32 / (1u64 << 23) as f32 - 1.0
        }

        fn vec(&mut self, n: usize) -> Vec<f32> {
            (0..n).map(|_| self.next()).collect()
        }
    }

    fn config(group_size: usize, w4w8: bool) -> DgqConfig {
        DgqConfig { group_size, w4w8 }
    }

    #[test]
    fn bf16_rounds_to_nearest_even() {
        assert_eq!(bf16(1.0), 1.0);
        // 1 + 2⁻⁸ is halfway between 1 and 1 + 2⁻⁷: ties to the even mantissa (1.0).
        assert_eq!(bf16(1.0 + 2f32.powi(-8)), 1.0);
        // 1 + 3·2⁻⁸ is halfway between 1 + 2⁻⁷ (odd) and 1 + 2⁻⁶ (even).
        assert_eq!(bf16(1.0 + 3.0 * 2f32.powi(-8)), 1.0 + 2f32.powi(-6));
        assert_eq!(
            bf16(1.0 + 2f32.powi(-8) + 2f32.powi(-20)),
            1.0 + 2f32.powi(-7)
        );
        assert_eq!(bf16(-1.0 - 2f32.powi(-8)), -1.0);
        assert!(bf16(f32::NAN).is_nan());
        assert_eq!(bf16(f32::MAX), f32::INFINITY);
    }

    #[test]
    fn torch_clamp_semantics() {
        assert_eq!(torch_clamp(5.0, 0.0, 3.0), 3.0);
        assert_eq!(torch_clamp(-1.0, 0.0, 3.0), 0.0);
        // An empty range yields the upper bound, like torch.clamp.
        assert_eq!(torch_clamp(-9.0, 4.0, 2.0), 2.0);
        assert_eq!(torch_clamp(9.0, 4.0, 2.0), 2.0);
        assert!(torch_clamp(f32::NAN, 0.0, 1.0).is_nan());
    }

    #[test]
    fn ratios_follow_the_reference_grid() {
        assert_eq!(stage1_ratio(0), 1.009f64 as f32);
        assert_eq!(stage1_ratio(19), (1.02f64 - 0.22) as f32);
        assert_eq!(stage2_ratio(79), (1.02f64 - 0.82) as f32);
    }

    #[test]
    fn error_messages_name_the_problem() {
        let w = vec![0.5f32; 8 * 100];
        let x = vec![0.25f32; 4 * 100];
        let err = dgq_quantize(&w, 8, 100, &x, 4, &config(48, true)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "group size 48 does not divide in_features 100"
        );
        let err = dgq_quantize(&w, 8, 100, &x, 4, &config(0, true)).unwrap_err();
        assert_eq!(err, DgqError::ZeroGroupSize);
        assert!(err.to_string().contains("got 0"));

        let err = dgq_quantize(&w[1..], 8, 100, &x, 4, &config(10, true)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "weight has 799 values, expected rows × cols = 8 × 100 = 800"
        );
        let err = dgq_quantize(&w, 8, 100, &x, 0, &config(10, true)).unwrap_err();
        assert_eq!(err, DgqError::ZeroTokens);
        let x_wide = vec![0.25f32; 4 * 120];
        let err = dgq_quantize(&w, 8, 100, &x_wide, 4, &config(10, true)).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("480 values"), "{msg}");
        assert!(
            msg.contains("120 columns per token, but the weight has in_features 100"),
            "{msg}"
        );
        let err = dgq_quantize(&[], 0, 4, &[], 1, &config(2, true)).unwrap_err();
        assert_eq!(err, DgqError::EmptyWeight { rows: 0, cols: 4 });

        let mut w_nan = w.clone();
        w_nan[2 * 100 + 7] = f32::NAN;
        let err = dgq_quantize(&w_nan, 8, 100, &x, 4, &config(10, true)).unwrap_err();
        assert_eq!(err.to_string(), "weight[2, 7] is NaN, not finite");
        let mut x_inf = x.clone();
        x_inf[3 * 100 + 99] = f32::NEG_INFINITY;
        let err = dgq_quantize(&w, 8, 100, &x_inf, 4, &config(10, true)).unwrap_err();
        assert_eq!(err.to_string(), "activations[3, 99] is -inf, not finite");
        let boxed: Box<dyn std::error::Error> = Box::new(err);
        assert!(boxed.to_string().contains("activations[3, 99]"));
    }

    /// Checks the A8W4 representation of a result and returns how many groups had an empty
    /// clamp range.
    fn check_int8_invariant(result: &DgqWeight) -> usize {
        let stage2 = result.w4w8.as_ref().expect("w4w8 result");
        let n_groups = result.n_groups();
        let mut empty_ranges = 0;
        for r in 0..result.rows {
            for g in 0..n_groups {
                let slot = r * n_groups + g;
                let (gs, zero) = (stage2.group_scale_int[slot], result.stage1_zero[slot]);
                let (lower, upper) = (stage2.lower[slot], stage2.upper[slot]);
                let effective = stage2.effective_group_scale[slot];
                assert!(gs >= 1);
                assert_eq!(effective, bf16(effective), "effective scale is a bfloat16");
                assert_eq!(
                    effective,
                    bf16(gs as f32 * stage2.scale8[r]),
                    "effective = bf16(gs·scale8)"
                );
                let imax = (INT8_MAX as f32 / gs as f32).floor() as i32;
                if lower > upper {
                    empty_ranges += 1;
                    continue;
                }
                for k in g * result.group_size..(g + 1) * result.group_size {
                    let i = r * result.cols + k;
                    let q = stage2.q[i];
                    assert!((lower..=upper).contains(&q));
                    assert!((q - zero).abs() <= imax);
                    assert!((q - zero).abs() * gs <= INT8_MAX, "row {r} col {k}");
                    assert_eq!(
                        stage2.dequant[i].to_bits(),
                        (effective * (q - zero) as f32).to_bits(),
                        "dequant == effective·(q − zero) at row {r} col {k}"
                    );
                }
            }
        }
        if empty_ranges == 0 {
            let int8 = result.int8_weight().expect("representable");
            for (i, &v) in int8.iter().enumerate() {
                let (r, k) = (i / result.cols, i % result.cols);
                let slot = r * n_groups + k / result.group_size;
                assert_eq!(
                    i32::from(v),
                    stage2.group_scale_int[slot] * (stage2.q[i] - result.stage1_zero[slot])
                );
                let approx = stage2.scale8[r] as f64 * f64::from(v);
                let dequant = f64::from(stage2.dequant[i]);
                assert!(
                    (dequant - approx).abs() <= 2f64.powi(-8) * approx.abs(),
                    "scale8·int8 = {approx} vs dequant {dequant}"
                );
            }
        }
        empty_ranges
    }

    #[test]
    fn w4w8_weights_are_int8_times_channel_scale() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let (rows, cols, tokens) = (12, 64, 20);
        let w = rng.vec(rows * cols);
        let x = rng.vec(tokens * cols);
        let result = dgq_quantize(&w, rows, cols, &x, tokens, &config(16, true)).unwrap();
        assert_eq!(check_int8_invariant(&result), 0);
        assert_eq!(result.dequantize(), result.w4w8.as_ref().unwrap().dequant);
        // Every group scale is an integer multiple of the channel scale; the search picks
        // non-trivial multiples for 16-wide groups.
        assert!(
            result
                .w4w8
                .as_ref()
                .unwrap()
                .group_scale_int
                .iter()
                .any(|&g| g > 1)
        );
        // The quantized weight is close to the original (4-bit: within a few percent of the
        // row range after clipping).
        let dq = result.dequantize();
        let err: f32 = w
            .iter()
            .zip(&dq)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(err < 0.5, "max weight error {err}");
    }

    #[test]
    fn w4_only_result_has_no_int8_form() {
        let mut rng = Rng(7);
        let w = rng.vec(4 * 32);
        let x = rng.vec(8 * 32);
        let result = dgq_quantize(&w, 4, 32, &x, 8, &config(8, false)).unwrap();
        assert!(result.w4w8.is_none());
        assert_eq!(result.int8_weight(), None);
        assert_eq!(result.dequantize(), result.stage1_dequant);
        assert_eq!(
            result.matmul_a8w4(&[0; 32], 1.0, 1).unwrap_err(),
            DgqError::NotW4W8
        );
        // Stage-1 codes and dequantization agree exactly.
        for (i, (&q, &d)) in result
            .stage1_q
            .iter()
            .zip(&result.stage1_dequant)
            .enumerate()
        {
            let slot = (i / 32) * 4 + (i % 32) / 8;
            let (s, z) = (result.stage1_scale[slot], result.stage1_zero[slot]);
            assert!(q <= 15);
            assert_eq!(d.to_bits(), (s * (f32::from(q) - z as f32)).to_bits());
            assert_eq!(s, bf16(s));
        }
    }

    #[test]
    fn stage1_picks_the_first_minimum_of_its_losses() {
        let mut rng = Rng(42);
        let (rows, cols, tokens) = (3, 24, 10);
        let w = rng.vec(rows * cols);
        let x = rng.vec(tokens * cols);
        let result = dgq_quantize(&w, rows, cols, &x, tokens, &config(8, true)).unwrap();
        let n_groups = 3;
        for r in 0..rows {
            for g in 0..n_groups {
                let losses: Vec<f64> = (0..STAGE1_GRID)
                    .map(|i| result.stage1_loss[(g * STAGE1_GRID + i) * rows + r])
                    .collect();
                let min = losses.iter().copied().fold(f64::INFINITY, f64::min);
                let first = losses.iter().position(|&l| l == min);
                assert_eq!(result.stage1_ratio_index[r * n_groups + g], first);
            }
            let stage2 = result.w4w8.as_ref().unwrap();
            let losses: Vec<f64> = (0..STAGE2_GRID)
                .map(|i| stage2.stage2_loss[i * rows + r])
                .collect();
            let min = losses.iter().copied().fold(f64::INFINITY, f64::min);
            assert_eq!(
                stage2.stage2_ratio_index[r],
                losses.iter().position(|&l| l == min)
            );
        }
    }

    #[test]
    fn ragged_shape_with_single_group_per_row() {
        // 5 × 7 weight, one 7-wide group per row, 3 tokens; one row is one-signed so its zero
        // point leaves 0..=15.
        let mut rng = Rng(3);
        let mut w = rng.vec(5 * 7);
        for v in &mut w[14..21] {
            *v = v.abs() + 0.5;
        }
        let x = rng.vec(3 * 7);
        let result = dgq_quantize(&w, 5, 7, &x, 3, &config(7, true)).unwrap();
        assert_eq!(result.stage1_scale.len(), 5);
        assert_eq!(result.stage1_loss.len(), STAGE1_GRID * 5);
        assert_eq!(
            result.w4w8.as_ref().unwrap().stage2_loss.len(),
            STAGE2_GRID * 5
        );
        assert_eq!(result.dequantize().len(), 35);
        assert!(
            result.stage1_zero[2] < 0,
            "positive group: negative zero point"
        );
        check_int8_invariant(&result);
    }

    #[test]
    fn constant_and_zero_rows_stay_finite() {
        // Row 0 constant (every stage-1 candidate has a 0/0 scale), row 1 all zero.
        let mut w = vec![0.3f32; 8];
        w.extend([0.0f32; 8]);
        let mut rng = Rng(11);
        let x = rng.vec(4 * 8);
        let result = dgq_quantize(&w, 2, 8, &x, 4, &config(4, true)).unwrap();
        assert_eq!(result.stage1_ratio_index, vec![None; 4]);
        assert_eq!(result.stage1_scale, vec![1.0; 4]);
        assert_eq!(result.stage1_zero, vec![1; 4]);
        let stage2 = result.w4w8.as_ref().unwrap();
        assert_eq!(stage2.stage2_ratio_index[1], None);
        assert_eq!(stage2.scale8[1], 0.0);
        assert!(stage2.dequant.iter().all(|v| v.is_finite()));
        assert!(stage2.dequant[8..].iter().all(|&v| v == 0.0));
        assert_eq!(result.int8_weight().unwrap()[8..], [0; 8]);
    }

    #[test]
    fn int8_weight_rejects_values_outside_int8() {
        let mut rng = Rng(5);
        let w = rng.vec(2 * 16);
        let x = rng.vec(6 * 16);
        let mut result = dgq_quantize(&w, 2, 16, &x, 6, &config(8, true)).unwrap();
        assert!(result.int8_weight().is_some());
        // Force a code whose INT8 value cannot be stored (as an empty clamp range can).
        let stage2 = result.w4w8.as_mut().unwrap();
        stage2.group_scale_int[1] = 100;
        stage2.q[8] = result.stage1_zero[1] + 2;
        assert_eq!(result.int8_weight(), None);
        assert_eq!(
            result.matmul_a8w4(&[1; 16], 1.0, 1).unwrap_err(),
            DgqError::Int8OutOfRange {
                row: 0,
                col: 8,
                value: 200
            }
        );
    }

    #[test]
    fn a8w4_kernel_matches_float_matmul_of_dequantized_tensors() {
        let mut rng = Rng(0xdead_beef);
        let (rows, cols, tokens) = (6, 48, 9);
        let w = rng.vec(rows * cols);
        let calib = rng.vec(16 * cols);
        let result = dgq_quantize(&w, rows, cols, &calib, 16, &config(16, true)).unwrap();
        let x: Vec<f32> = rng.vec(tokens * cols).iter().map(|v| 3.0 * v).collect();
        let (x_int8, x_scale) = quantize_activations_int8(&x, 100.0).unwrap();
        let y = result.matmul_a8w4(&x_int8, x_scale, tokens).unwrap();
        assert_eq!(y.len(), tokens * rows);
        let dq = result.dequantize();
        for t in 0..tokens {
            for r in 0..rows {
                let (mut reference, mut magnitude) = (0.0f64, 0.0f64);
                for k in 0..cols {
                    let term = f64::from(x_int8[t * cols + k])
                        * f64::from(x_scale)
                        * f64::from(dq[r * cols + k]);
                    reference += term;
                    magnitude += term.abs();
                }
                let got = f64::from(y[t * rows + r]);
                // bfloat16 rounding of the effective group scales (2⁻⁸) plus float32 rounding.
                let tol = 2f64.powi(-8) * magnitude + 1e-6 * reference.abs() + 1e-12;
                assert!(
                    (got - reference).abs() <= tol,
                    "y[{t}, {r}] = {got}, float reference {reference} (tol {tol})"
                );
            }
        }
        // And against the original float product: quantization error only.
        let y_float: f64 = (0..cols).map(|k| f64::from(x[k]) * f64::from(w[k])).sum();
        assert!((f64::from(y[0]) - y_float).abs() < 0.1 * (1.0 + y_float.abs()) * 4.0);
        assert_eq!(
            result
                .matmul_a8w4(&x_int8[1..], x_scale, tokens)
                .unwrap_err(),
            DgqError::InputLength {
                tokens,
                in_features: cols,
                len: tokens * cols - 1
            }
        );
    }

    #[test]
    fn percentile_clipping_saturates_outliers() {
        // 100 values k/100 (k = 0..100) and one outlier 50.
        let mut x: Vec<f32> = (0..100).map(|k| k as f32 / 100.0).collect();
        x.push(-50.0);
        // pos = 0.99·100 = 99: the threshold is the 100th smallest |x|, 0.99.
        let (q, scale) = quantize_activations_int8(&x, 99.0).unwrap();
        assert_eq!(scale, 0.99f32 / 127.0);
        assert_eq!(q[100], -127, "the outlier saturates");
        assert_eq!(q[99], 127);
        assert_eq!(q[50], (0.5f32 / scale).round_ties_even() as i8);
        assert_eq!(q[50], 64);
        // 100 % keeps the outlier: absmax scaling, the bulk loses resolution.
        let (q, scale) = quantize_activations_int8(&x, 100.0).unwrap();
        assert_eq!(scale, 50.0f32 / 127.0);
        assert_eq!(q[100], -127);
        assert_eq!(q[50], 1);
        // Between order statistics the threshold is interpolated linearly.
        let (_, scale) = quantize_activations_int8(&x, 99.5).unwrap();
        assert_eq!(scale, ((0.99f32 as f64 + 50.0) / 2.0) as f32 / 127.0);
    }

    #[test]
    fn percentile_quantizer_edge_cases() {
        assert_eq!(
            quantize_activations_int8(&[1.0], 0.0).unwrap_err(),
            DgqError::InvalidPercentile(0.0)
        );
        assert!(quantize_activations_int8(&[1.0], f32::NAN).is_err());
        assert!(quantize_activations_int8(&[1.0], 100.5).is_err());
        assert_eq!(
            quantize_activations_int8(&[], 99.0).unwrap_err(),
            DgqError::EmptyInput
        );
        assert_eq!(
            quantize_activations_int8(&[1.0, f32::INFINITY], 99.0)
                .unwrap_err()
                .to_string(),
            "input[1] is inf, not finite"
        );
        assert_eq!(
            quantize_activations_int8(&[0.0; 4], 50.0).unwrap(),
            (vec![0; 4], 1.0)
        );
        // Mostly zeros: the 50th percentile is 0, the absmax is used instead.
        let (q, scale) = quantize_activations_int8(&[0.0, 0.0, 0.0, -2.0], 50.0).unwrap();
        assert_eq!(scale, 2.0 / 127.0);
        assert_eq!(q, vec![0, 0, 0, -127]);
    }
}
