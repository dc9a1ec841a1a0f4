//! M-FAC: matrix-free approximation of the inverse of the dampened empirical Fisher, over the
//! whole model.
//!
//! Frantar, Kurtic, Alistarh, *M-FAC: Efficient Matrix-Free Approximations of Second-Order
//! Information*, NeurIPS 2021 (arXiv:2107.03356), §3 ("sliding window" dynamic algorithm),
//! following the official `IST-DASLab/M-FAC` `optim.py` (`MFAC` with `HInvFastUpMulti`).
//!
//! The gradients of all parameters are concatenated (in module visit order) into one vector
//! `g ∈ R^d`. The optimizer keeps a window `G ∈ R^{m×d}` of the last m gradients (a ring buffer,
//! zero-initialised) and preconditions with the inverse of the dampened empirical Fisher
//! `F = λ·I + (1/m)·GᵀG` (λ = `damp`):
//!
//! ```text
//! g   = concat(∇θ) + wd·concat(θ)                     coupled L2 (only when wd > 0)
//! G[(t−1) mod m] = g                                   the gradient enters BEFORE the product
//! x   = F⁻¹g = (1/λ)·[g − Gᵀ (m·λ·I + GGᵀ)⁻¹ G g]      Woodbury identity
//! v   = μ·v + (1−μ)·x ;  x = v                         EMA of the direction (when μ > 0)
//! θ   = θ − lr·x
//! ```
//!
//! Conventions of the reference kept here: the factor is the full 1/m even before m gradients
//! have been seen (the unfilled rows are zeros), the gradient in the window includes the
//! `wd·θ` term, and momentum averages the preconditioned direction.
//!
//! **Cost per step: O(d·m) on the device plus O(m²) on the host (amortised).** `G·g` (one
//! matrix-vector product) gives both the new row/column of the Gram matrix `GGᵀ` and the
//! right-hand side; the inverse of the m×m matrix `m·λ·I + GGᵀ` is kept in f64 on the host and
//! updated with a rank-2 Woodbury correction when one row/column changes (O(m²)). It is
//! re-factorised from the Gram matrix (Cholesky, O(m³)) every m steps so rounding cannot
//! accumulate. The reference instead re-runs an LU set-up each step (O(m³)). Then
//! `x = (g − Gᵀc)/λ` is one more O(d·m) product on the device. Memory: `m·d` floats for the
//! window, `d` for the momentum, plus `2m²` f64 on the host.
//!
//! The elementwise work (the coupled decay, `x` with its momentum EMA, and `θ −= lr·x` per
//! parameter) runs as fused passes on flex and ndarray ([`crate::fused`]), bit-identical to the
//! tensor ops elsewhere.
//!
//! The reference's `sparse` mode (pruned weights) is not provided. Defaults are the reference's:
//! `ngrads` 1024, `damp` 1e-5, no momentum, no weight decay (its `main_optim.py` trains with lr
//! 1e-3).

use burn::config::Config;
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor, TensorData};

use crate::fused::rule::DeviceRule;
use crate::fused::{Fused, StepInputs, try_step_on};
use crate::module_state::map_value;
use crate::record::{ModuleState, StateRecord};
use crate::validate::{Check, InvalidConfig, assert_finite_lr};

/// Configuration of [`Mfac`]; defaults are those of the official `MFAC` class.
#[derive(Config, Debug)]
pub struct MfacConfig {
    /// Window size m: the number of past gradients kept (`ngrads`).
    #[config(default = 1024)]
    pub ngrads: usize,
    /// Dampening λ of the Fisher `λ·I + (1/m)·GᵀG` (`damp`).
    #[config(default = 1e-5)]
    pub damp: f64,
    /// EMA momentum μ of the preconditioned direction (0 = none).
    #[config(default = 0.0)]
    pub momentum: f64,
    /// Coupled L2 weight decay: `wd·θ` is added to the gradient before it enters the window.
    #[config(default = 0.0)]
    pub weight_decay: f64,
}

impl MfacConfig {
    /// The optimizer, or an error naming the first invalid field.
    pub fn try_init(&self) -> Result<Mfac, InvalidConfig> {
        let check = Check("Mfac");
        check.positive("ngrads", self.ngrads as f64)?;
        check.positive("damp", self.damp)?;
        check.beta("momentum", self.momentum as f32)?;
        check.non_negative("weight_decay", self.weight_decay)?;
        Ok(Mfac {
            config: self.clone(),
            state: None,
        })
    }

    /// The optimizer.
    ///
    /// # Panics
    /// If a hyperparameter is invalid; the message names the field.
    pub fn init(&self) -> Mfac {
        self.try_init().unwrap_or_else(|e| panic!("{e}"))
    }
}

/// The M-FAC optimizer over a whole module; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct Mfac {
    config: MfacConfig,
    state: Option<MfacState>,
}

#[derive(Clone, Debug)]
struct MfacState {
    /// Parameters in concatenation order, with their sizes.
    layout: Vec<(ParamId, usize)>,
    /// The gradient window G (m × d).
    window: Tensor<2>,
    /// Momentum buffer v (d), when μ > 0.
    momentum: Option<Tensor<1>>,
    /// Steps taken.
    time: usize,
    /// The Gram matrix GGᵀ (m × m, row-major, f64).
    gram: Vec<f64>,
    /// The inverse of `m·λ·I + GGᵀ` (m × m, row-major, f64).
    inverse: Vec<f64>,
}

impl Mfac {
    /// Number of steps taken.
    pub fn time(&self) -> usize {
        self.state.as_ref().map_or(0, |s| s.time)
    }

    /// Number of parameter values d the window spans (0 before the first step).
    pub fn dim(&self) -> usize {
        self.state
            .as_ref()
            .map_or(0, |s| s.layout.iter().map(|(_, n)| n).sum())
    }

    /// One step over every parameter of `module` that has a gradient in `grads`.
    ///
    /// # Panics
    /// If the lr is not finite, the set of parameters with gradients differs from the first
    /// step's (the window spans a fixed vector), or the gradient holds NaN/Inf (the window would be
    /// corrupted for the next m steps; [`crate::check::find_non_finite_grad`] names the parameter).
    pub fn step<M: Module>(&mut self, lr: f64, module: M, mut grads: GradientsParams) -> M {
        assert_finite_lr("Mfac", lr);
        let mut flatten = Flatten {
            grads: &mut grads,
            weight_decay: self.config.weight_decay,
            layout: Vec::new(),
            parts: Vec::new(),
        };
        module.visit(&mut flatten);
        let Flatten { layout, parts, .. } = flatten;
        assert!(
            !parts.is_empty(),
            "Mfac: no parameter of the module has a gradient"
        );
        let g = Tensor::cat(parts, 0);
        let device = g.device();
        let m = self.config.ngrads;
        let damp = self.config.damp;
        let state = self
            .state
            .get_or_insert_with(|| MfacState::new(layout.clone(), m, damp, &device));
        assert!(
            state.layout == layout,
            "Mfac: the parameters with gradients changed since the first step ({} tensors, d = {}, \
             now {} tensors, d = {}); M-FAC's window spans one fixed vector",
            state.layout.len(),
            state.layout.iter().map(|(_, n)| n).sum::<usize>(),
            layout.len(),
            layout.iter().map(|(_, n)| n).sum::<usize>(),
        );
        let direction = state.direction(g, self.config.damp, self.config.momentum);
        let mut apply = Apply {
            flat: direction,
            lr,
            offset: 0,
            layout: &state.layout,
        };
        module.map(&mut apply)
    }
}

impl MfacState {
    fn new(layout: Vec<(ParamId, usize)>, m: usize, damp: f64, device: &Device) -> Self {
        let d = layout.iter().map(|(_, n)| n).sum();
        let mut state = Self {
            layout,
            window: Tensor::zeros([m, d], device),
            momentum: None,
            time: 0,
            gram: vec![0.0; m * m],
            inverse: Vec::new(),
        };
        state.refactor_damped(m, damp);
        state
    }

    /// Puts `g` into the window and returns the (momentum-averaged) direction `F⁻¹g`.
    fn direction(&mut self, g: Tensor<1>, damp: f64, momentum: f64) -> Tensor<1> {
        let [m, d] = self.window.dims();
        let slot = self.time % m;
        self.time += 1;
        self.window = self
            .window
            .clone()
            .slice_assign([slot..slot + 1, 0..d], g.clone().reshape([1, d]));
        // One product gives the new Gram row (⟨G_k, g⟩, with ⟨g, g⟩ at `slot`) and G·g.
        let dots = self.window.clone().matmul(g.clone().reshape([d, 1]));
        let dots: Vec<f64> = dots
            .into_data()
            .try_into_vec_as::<f32>()
            .expect("f32 dot products")
            .into_iter()
            .map(f64::from)
            .collect();
        assert!(
            dots.iter().all(|v| v.is_finite()),
            "Mfac: the gradient holds NaN/Inf; find the parameter with \
             firebox_optim::check::find_non_finite_grad"
        );
        self.replace_gram_row(slot, &dots, damp);
        let coefficients = mat_vec(&self.inverse, &dots, m);
        let coefficients = Tensor::<2>::from_data(
            TensorData::new(
                coefficients.iter().map(|&c| c as f32).collect::<Vec<_>>(),
                [1, m],
            ),
            &g.device(),
        );
        let correction = coefficients.matmul(self.window.clone()).reshape([d]);
        let previous = if momentum > 0.0 {
            self.momentum.take()
        } else {
            None
        };
        let direction = ema_direction(g, correction, previous, damp, momentum);
        if momentum > 0.0 {
            self.momentum = Some(direction.clone());
        }
        direction
    }

    /// Sets row and column `slot` of the Gram matrix to `row` and updates the inverse of
    /// `A = m·λ·I + GGᵀ`: the change is `e_s·δᵀ + δ·e_sᵀ` (δ_s halved so the diagonal changes by
    /// δ_s once), a rank-2 Woodbury update `A'⁻¹ = B − B·U·(I + VᵀBU)⁻¹·VᵀB` with `U = [e_s, δ]`,
    /// `V = [δ, e_s]`. Every m steps the inverse is recomputed from the Gram matrix instead.
    fn replace_gram_row(&mut self, slot: usize, row: &[f64], damp: f64) {
        let m = row.len();
        let mut delta: Vec<f64> = (0..m).map(|k| row[k] - self.gram[slot * m + k]).collect();
        for (k, &value) in row.iter().enumerate() {
            self.gram[slot * m + k] = value;
            self.gram[k * m + slot] = value;
        }
        if self.time.is_multiple_of(m) {
            self.refactor_damped(m, damp);
            return;
        }
        delta[slot] *= 0.5;
        let b = &self.inverse;
        // B·U = [B e_s, B δ] and VᵀB = [δᵀB, e_sᵀB] = (B symmetric) [(Bδ)ᵀ, (B e_s)ᵀ].
        let b_e: Vec<f64> = (0..m).map(|k| b[k * m + slot]).collect();
        let b_d = mat_vec(b, &delta, m);
        // K = I + VᵀB U  (2×2): [[1 + δᵀBe_s, δᵀBδ], [e_sᵀBe_s, 1 + e_sᵀBδ]].
        let d_b_e: f64 = delta.iter().zip(&b_e).map(|(a, c)| a * c).sum();
        let d_b_d: f64 = delta.iter().zip(&b_d).map(|(a, c)| a * c).sum();
        let k = [[1.0 + d_b_e, d_b_d], [b_e[slot], 1.0 + b_d[slot]]];
        let det = k[0][0] * k[1][1] - k[0][1] * k[1][0];
        if !det.is_finite() || det.abs() < 1e-12 {
            self.refactor_damped(m, damp);
            return;
        }
        let inv = [
            [k[1][1] / det, -k[0][1] / det],
            [-k[1][0] / det, k[0][0] / det],
        ];
        // B' = B − [Be, Bδ]·inv·[(Bδ)ᵀ; (Be)ᵀ]
        let inverse = &mut self.inverse;
        for i in 0..m {
            let left = [
                b_e[i] * inv[0][0] + b_d[i] * inv[1][0],
                b_e[i] * inv[0][1] + b_d[i] * inv[1][1],
            ];
            for j in 0..m {
                inverse[i * m + j] -= left[0] * b_d[j] + left[1] * b_e[j];
            }
        }
    }

    /// Recomputes the inverse of `m·λ·I + GGᵀ` by Cholesky factorisation (O(m³)).
    fn refactor_damped(&mut self, m: usize, damp: f64) {
        let mut a = self.gram.clone();
        for k in 0..m {
            a[k * m + k] += m as f64 * damp;
        }
        self.inverse = spd_inverse(a, m);
    }
}

/// `x = (g − c)/λ` and, when μ > 0, the EMA `v = μ·v + (1−μ)·x` (`(1−μ)·x` on the first step):
/// the direction (v or x). One fused pass over the d values where the fused path applies (writing
/// into v, or into the correction's fresh buffer on the first step), the same f32 operations as
/// tensor ops elsewhere; `c = Gᵀ·coefficients` stays a matrix product.
fn ema_direction(
    g: Tensor<1>,
    correction: Tensor<1>,
    previous: Option<Tensor<1>>,
    damp: f64,
    momentum: f64,
) -> Tensor<1> {
    let damp_32 = damp as f32;
    let (mu, fraction) = (momentum as f32, (1.0 - momentum) as f32);
    let averages = momentum > 0.0;
    let (g, correction, previous) = match previous {
        Some(v) => {
            let update = move |v: &mut f32, [g, c]: [f32; 2], _: &mut [f32; 0]| {
                *v = *v * mu + ((g - c) / damp_32) * fraction;
            };
            let inputs = StepInputs {
                param: v,
                reads: [g, correction],
                states: [],
            };
            let rule = DeviceRule::MfacEma {
                momentum: [mu, fraction],
                damp: damp_32,
            };
            match try_step_on(inputs, [], &update, rule) {
                Fused::Done(v, []) => return v,
                Fused::Declined(back) => {
                    let [g, correction] = back.reads;
                    (g, correction, Some(back.param))
                }
            }
        }
        None => {
            let update = move |c: &mut f32, [g]: [f32; 1], _: &mut [f32; 0]| {
                let x = (g - *c) / damp_32;
                *c = if averages { x * fraction } else { x };
            };
            let inputs = StepInputs {
                param: correction,
                reads: [g],
                states: [],
            };
            let rule = DeviceRule::MfacFirst {
                damp: damp_32,
                fraction,
                averages,
            };
            match try_step_on(inputs, [], &update, rule) {
                Fused::Done(x, []) => return x,
                Fused::Declined(back) => {
                    let [g] = back.reads;
                    (g, back.param, None)
                }
            }
        }
    };
    // The tensor-op path.
    let x = (g - correction).div_scalar(damp);
    match previous {
        Some(v) => v.mul_scalar(momentum) + x.mul_scalar(1.0 - momentum),
        None if averages => x.mul_scalar(1.0 - momentum),
        None => x,
    }
}

/// `A·x` for a row-major m×m matrix.
fn mat_vec(a: &[f64], x: &[f64], m: usize) -> Vec<f64> {
    (0..m)
        .map(|i| {
            a[i * m..(i + 1) * m]
                .iter()
                .zip(x)
                .map(|(p, q)| p * q)
                .sum()
        })
        .collect()
}

/// Inverse of a symmetric positive-definite row-major matrix by Cholesky (`A = LLᵀ`,
/// `A⁻¹ = L⁻ᵀL⁻¹`).
fn spd_inverse(mut a: Vec<f64>, m: usize) -> Vec<f64> {
    // In-place Cholesky: the lower triangle of `a` becomes L.
    for j in 0..m {
        let mut diag = a[j * m + j];
        for k in 0..j {
            diag -= a[j * m + k] * a[j * m + k];
        }
        assert!(
            diag > 0.0,
            "Mfac: m·damp·I + GGᵀ lost positive definiteness (pivot {diag:e}); is damp too small?"
        );
        let diag = diag.sqrt();
        a[j * m + j] = diag;
        for i in j + 1..m {
            let mut value = a[i * m + j];
            for k in 0..j {
                value -= a[i * m + k] * a[j * m + k];
            }
            a[i * m + j] = value / diag;
        }
    }
    // L⁻¹ by forward substitution, column by column.
    let mut l_inv = vec![0.0; m * m];
    for c in 0..m {
        for i in c..m {
            let mut value = if i == c { 1.0 } else { 0.0 };
            for k in c..i {
                value -= a[i * m + k] * l_inv[k * m + c];
            }
            l_inv[i * m + c] = value / a[i * m + i];
        }
    }
    // A⁻¹ = L⁻ᵀ L⁻¹.
    let mut inverse = vec![0.0; m * m];
    for i in 0..m {
        for j in 0..=i {
            let value: f64 = (i..m).map(|k| l_inv[k * m + i] * l_inv[k * m + j]).sum();
            inverse[i * m + j] = value;
            inverse[j * m + i] = value;
        }
    }
    inverse
}

struct Flatten<'a> {
    /// Taken out one by one (each gradient is then owned here, so the decay below writes into it
    /// in place).
    grads: &'a mut GradientsParams,
    weight_decay: f64,
    layout: Vec<(ParamId, usize)>,
    parts: Vec<Tensor<1>>,
}

impl ModuleVisitor for Flatten<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let Some(grad) = self.grads.remove::<D>(param.id) else {
            return;
        };
        let numel = grad.shape().num_elements();
        let grad = if self.weight_decay > 0.0 {
            coupled_decay(grad, param.val().inner(), self.weight_decay)
        } else {
            grad
        };
        self.layout.push((param.id, numel));
        self.parts.push(grad.reshape([numel]));
    }
}

/// `g + wd·θ` (coupled L2), as one fused pass into g's buffer where the fused path applies.
fn coupled_decay<const D: usize>(
    grad: Tensor<D>,
    theta: Tensor<D>,
    weight_decay: f64,
) -> Tensor<D> {
    axpy(grad, theta, weight_decay, false)
}

/// `p + factor·r` (`p − factor·r` when `subtract`) as one fused pass into p's buffer where the
/// fused path applies, tensor ops otherwise.
fn axpy<const D: usize>(p: Tensor<D>, r: Tensor<D>, factor: f64, subtract: bool) -> Tensor<D> {
    let factor_32 = factor as f32;
    let update = move |p: &mut f32, [r]: [f32; 1], _: &mut [f32; 0]| {
        if subtract {
            *p -= r * factor_32;
        } else {
            *p += r * factor_32;
        }
    };
    let inputs = StepInputs {
        param: p,
        reads: [r],
        states: [],
    };
    let rule = DeviceRule::Axpy {
        factor: factor_32,
        subtract,
    };
    match try_step_on(inputs, [], &update, rule) {
        Fused::Done(p, []) => p,
        Fused::Declined(back) => {
            let [r] = back.reads;
            let scaled = r.mul_scalar(factor);
            if subtract {
                back.param - scaled
            } else {
                back.param + scaled
            }
        }
    }
}

struct Apply<'a> {
    /// The direction x, concatenated in layout order.
    flat: Tensor<1>,
    lr: f64,
    offset: usize,
    layout: &'a [(ParamId, usize)],
}

impl ModuleMapper for Apply<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(&(_, numel)) = self.layout.iter().find(|(id, _)| *id == param.id) else {
            return param;
        };
        // Parameters are visited in the same order as they were flattened.
        let start = self.offset;
        self.offset += numel;
        let x = self.flat.clone().slice(start..start + numel);
        let lr = self.lr;
        map_value(param, |theta| {
            // θ − lr·x, reading this parameter's slice of x in place.
            let shape = theta.shape();
            axpy(theta, x.reshape(shape), lr, true)
        })
    }
}

impl ModuleState for Mfac {
    fn to_record(&self) -> StateRecord {
        let mut record = StateRecord::default();
        let Some(state) = &self.state else {
            return record;
        };
        record.push_count("time", state.time);
        record.push_count("layout.len", state.layout.len());
        for (i, (id, numel)) in state.layout.iter().enumerate() {
            record.push_count(&format!("layout.{i}.id"), id.val() as usize);
            record.push_count(&format!("layout.{i}.numel"), *numel);
        }
        record.push_tensor("window", None, state.window.clone());
        if let Some(v) = &state.momentum {
            record.push_tensor("momentum", None, v.clone());
        }
        record
    }

    fn load_record(mut self, mut record: StateRecord, device: &Device) -> Result<Self, String> {
        let Ok(len) = record.count("layout.len") else {
            // An empty record: the optimizer has not stepped yet.
            self.state = None;
            return Ok(self);
        };
        let layout = (0..len)
            .map(|i| {
                Ok((
                    ParamId::from(record.count(&format!("layout.{i}.id"))? as u64),
                    record.count(&format!("layout.{i}.numel"))?,
                ))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let window: Tensor<2> = record.take_tensor("window", device)?;
        let [m, d] = window.dims();
        if m != self.config.ngrads || d != layout.iter().map(|(_, n)| n).sum::<usize>() {
            return Err(format!(
                "M-FAC record has a {m}×{d} window; this optimizer has ngrads = {} and the \
                 record's layout spans {} values",
                self.config.ngrads,
                layout.iter().map(|(_, n)| n).sum::<usize>()
            ));
        }
        let momentum = record.take_tensor::<1>("momentum", device).ok();
        let gram: Vec<f64> = window
            .clone()
            .matmul(window.clone().transpose())
            .into_data()
            .try_into_vec_as::<f32>()
            .map_err(|e| format!("M-FAC record window: {e:?}"))?
            .into_iter()
            .map(f64::from)
            .collect();
        let mut state = MfacState {
            layout,
            window,
            momentum,
            time: record.count("time")?,
            gram,
            inverse: Vec::new(),
        };
        state.refactor_damped(m, self.config.damp);
        self.state = Some(state);
        Ok(self)
    }
}
