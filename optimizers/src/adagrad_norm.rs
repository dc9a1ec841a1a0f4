//! AdaGrad-Norm: step sizes adapted by accumulated squared gradient norms, for the whole model
//! ([`Granularity::Global`]) or per output row ([`Granularity::PerRow`], the AdAdaGrad authors'
//! `Adagradnorm` class).
//!
//! Ward, Wu, Bottou, *AdaGrad stepsizes: Sharp convergence over nonconvex landscapes*, JMLR 2020
//! (arXiv:1806.01811), Algorithm 1 (AdaGrad-Norm), with the conventions of the AdAdaGrad authors'
//! `adagradnorm.py` (Lau, Liu, Kolar, *AdAdaGrad: Adaptive Batch Size Schemes for Adaptive
//! Gradient Methods*, arXiv:2402.11215; timlautk/AdAdaGrad@cc126fb, class `Adagradnorm`) for the
//! initial value, eps, lr decay, momentum and weight decay.
//!
//! # Global granularity (the paper's algorithm)
//! ```text
//! b² = initial_accumulator_value                  (b0² = 1e-2)
//! b² += Σ over all parameters ‖g‖²                (updated first: the paper's b_{j+1})
//! clr = lr / (1 + (t−1)·lr_decay)
//! θ  −= clr · (momentum > 0 ? buf : g) / (sqrt(b²) + eps),  buf = μ·buf + (1−μ)·g
//! θ  −= clr · weight_decay · g                    (the authors' convention, see below)
//! ```
//! b² is accumulated on the host in f64 (one device read-back per step, via
//! [`grad_norm`](crate::clip::grad_norm)).
//!
//! # Per-row granularity (`adagradnorm.py`, the only variant the authors' code implements)
//! One accumulator per output row, processed **in module visit order** (for Burn's `Linear`: weight,
//! then bias, as PyTorch's `named_parameters`):
//! - 2-D parameter: `rows[o] = Σ_i g[o, i]²`; every element of row o uses `acc[o] += rows[o]`.
//!   Which axis holds the rows is [`MatrixRows`] (see below).
//! - 4-D parameter `[O, C, kh, kw]` (a convolution kernel, same layout in Burn and PyTorch): the
//!   same with rows over `C·kh·kw`, one accumulator per output channel.
//! - Any other rank (bias, 1-element scale): per element, `acc += mean-pooled prev` and then
//!   `acc += g²`, where `prev` is the `rows` vector of the **most recent 2-D/4-D parameter
//!   processed before it in the same step**. The reference keeps it in a leftover local variable
//!   (`grad_sqaure`) and adds `prev.view(n, -1).mean(1)` (`n` = the parameter's first dimension)
//!   inside a `try`; on any error only `g²` is added. So: no 2-D/4-D parameter before it in this
//!   step, or `prev.len()` not divisible by `n`, skips the first term. A bias right after its
//!   weight with matching O is thereby grouped with its weight's rows; a divisible mismatch averages
//!   consecutive groups of `prev`. For ranks ≥ 2 (3-D, 5-D) the `[n]` vector is broadcast as
//!   PyTorch's in-place `add_` does: onto every element when `n = 1`, along the last axis when `n`
//!   equals the last dimension, and otherwise the `add_` raises and the term is skipped.
//! - `den = sqrt(acc) + eps` (eps 1e-10, hard-coded in the reference), then the same update as
//!   above, with each parameter's own step count `t` (the reference's `state['step']`).
//!
//! ## Fused step
//! On flex and ndarray the elementwise part of the per-row step is one pass
//! ([`crate::fused`]), bit-identical to the tensor ops it replaces (the same f32 operations in the
//! same order): for a 2-D/4-D parameter, the momentum EMA, `θ −= (buf or g)/den · clr` and the
//! weight-decay term, reading `den = sqrt(acc) + eps` per row (or per column with
//! [`MatrixRows::Axis1`]); the row norms `Σ_i g²`, the accumulator and `den` (one entry per row)
//! stay tensor ops, since a reduction in the pass would sum in another order than the backends'
//! `sum_dim` and so not be bit-identical. For any other rank the pass also does `acc += g²` and
//! `den`; the pooled term of the previous rows is added first as tensor ops.
//!
//! State is saved and restored with [`ModuleState`]. Per-row state lives on the device; a step
//! reads back one number (the global gradient norm, to
//! reject NaN/Inf before anything is updated).
//!
//! ## [`MatrixRows`]: PyTorch `[out, in]` versus Burn `[d_input, d_output]`
//! The reference sums over axis 1 of PyTorch's `nn.Linear.weight`, `[out, in]`: one accumulator per
//! output unit, shared with that unit's bias. Burn's `nn::Linear` stores `[d_input, d_output]`, so
//! the same grouping needs the rows along axis 1 ([`MatrixRows::Axis1`]). The default,
//! [`MatrixRows::Axis0`], is the reference applied to the tensor as stored (right for PyTorch-layout
//! weights such as the parity fixtures and for `Embedding` tables); use `Axis1` for models built from
//! Burn's `Linear`, or the bias of each layer is coupled to per-*input* rows instead.
//!
//! # Departure from the paper: weight decay
//! `weight_decay` follows `adagradnorm.py`: `θ −= clr·weight_decay·g`, i.e. it scales the
//! **gradient** (an extra plain-SGD step), not θ. The default 0 leaves it out.

use std::collections::HashMap;

use burn::config::Config;
use burn::module::{Module, ModuleMapper, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor};

use crate::clip::grad_norm;
use crate::fused::rule::{AdaGradNormConstants, AdaGradNormRowConstants, DeviceRule};
use crate::fused::{Fused, StepInputs, try_step_broadcast, try_step_on};
use crate::module_state::{FlatStates, counted_record, from_counted_record, map_value};
use crate::record::{ModuleState, StateRecord};
use crate::validate::{Check, InvalidConfig, assert_finite_lr};

/// Which accumulators AdaGrad-Norm keeps.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum Granularity {
    /// One scalar b² for the whole model (Ward et al.'s Algorithm 1).
    Global,
    /// One accumulator per output row of each 2-D/4-D parameter, other parameters per element
    /// with the reference's coupling to the previous parameter's rows (`adagradnorm.py`).
    PerRow,
}

/// The axis of a 2-D parameter that indexes the rows of [`Granularity::PerRow`]; see the
/// [module docs](self).
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum MatrixRows {
    /// Rows along axis 0, squared norms over axis 1: the reference on the tensor as stored
    /// (PyTorch `[out, in]` weights, `Embedding` tables).
    Axis0,
    /// Rows along axis 1, squared norms over axis 0: Burn `nn::Linear`'s `[d_input, d_output]`
    /// layout, so that each output unit has one accumulator as in the reference on PyTorch.
    Axis1,
}

/// Configuration of [`AdaGradNorm`]; defaults are those of the authors' code.
#[derive(Config, Debug)]
pub struct AdaGradNormConfig {
    /// Learning-rate decay: step t uses `lr / (1 + (t−1)·lr_decay)`.
    #[config(default = 0.0)]
    pub lr_decay: f64,
    /// EMA momentum μ of the gradient (0 = none).
    #[config(default = 0.0)]
    pub momentum: f64,
    /// Starting value b0² of every accumulator.
    #[config(default = 1e-2)]
    pub initial_accumulator_value: f64,
    /// Added to `sqrt(b²)` (the reference hard-codes 1e-10 in the per-row class).
    #[config(default = 1e-10)]
    pub epsilon: f64,
    /// The reference's weight decay: `θ −= clr·weight_decay·g` (with the gradient, not θ).
    #[config(default = 0.0)]
    pub weight_decay: f64,
    /// One global accumulator, or the authors' per-row accumulators.
    #[config(default = "Granularity::Global")]
    pub granularity: Granularity,
    /// For [`Granularity::PerRow`]: which axis of a 2-D parameter holds the rows.
    #[config(default = "MatrixRows::Axis0")]
    pub matrix_rows: MatrixRows,
}

impl AdaGradNormConfig {
    /// The optimizer, or an error naming the first invalid field.
    pub fn try_init(&self) -> Result<AdaGradNorm, InvalidConfig> {
        let check = Check("AdaGradNorm");
        check.non_negative("lr_decay", self.lr_decay)?;
        check.beta("momentum", self.momentum as f32)?;
        check.non_negative("initial_accumulator_value", self.initial_accumulator_value)?;
        check.positive("epsilon", self.epsilon)?;
        check.non_negative("weight_decay", self.weight_decay)?;
        Ok(AdaGradNorm {
            config: self.clone(),
            time: 0,
            accumulator: self.initial_accumulator_value,
            states: FlatStates::default(),
            param_steps: HashMap::new(),
        })
    }

    /// The optimizer.
    ///
    /// # Panics
    /// If a hyperparameter is invalid; the message names the field.
    pub fn init(&self) -> AdaGradNorm {
        self.try_init().unwrap_or_else(|e| panic!("{e}"))
    }
}

/// AdaGrad-Norm over a whole module; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct AdaGradNorm {
    config: AdaGradNormConfig,
    time: usize,
    accumulator: f64,
    /// Per parameter: global `[buf]` when momentum is on; per-row `[acc]` or `[acc, buf]`.
    states: FlatStates,
    /// Per-row: each parameter's own step count (the reference's `state['step']`).
    param_steps: HashMap<ParamId, usize>,
}

impl AdaGradNorm {
    /// The accumulated squared norm b² so far ([`Granularity::Global`]; stays at its initial
    /// value with [`Granularity::PerRow`], whose accumulators are per parameter).
    pub fn accumulator(&self) -> f64 {
        self.accumulator
    }

    /// The configuration this optimizer was built from.
    pub fn config(&self) -> &AdaGradNormConfig {
        &self.config
    }

    /// One step.
    ///
    /// # Panics
    /// If the lr is not finite or the gradient norm is not finite.
    pub fn step<M: Module>(&mut self, lr: f64, module: M, mut grads: GradientsParams) -> M {
        assert_finite_lr("AdaGradNorm", lr);
        let norm = grad_norm(&module, &grads);
        assert!(
            norm.is_finite(),
            "AdaGradNorm: the gradient norm is {norm}; find the parameter with \
             firebox_optim::check::find_non_finite_grad"
        );
        self.time += 1;
        match self.config.granularity {
            Granularity::Global => {
                self.accumulator += norm * norm;
                let clr = lr / (1.0 + (self.time as f64 - 1.0) * self.config.lr_decay);
                let scale = clr / (self.accumulator.sqrt() + self.config.epsilon);
                module.map(&mut NormMapper {
                    momentum: self.config.momentum,
                    scale,
                    decay: clr * self.config.weight_decay,
                    grads: &mut grads,
                    states: &mut self.states,
                })
            }
            Granularity::PerRow => module.map(&mut PerRowMapper {
                config: &self.config,
                lr,
                grads: &mut grads,
                states: &mut self.states,
                steps: &mut self.param_steps,
                prev_rows: None,
            }),
        }
    }
}

impl ModuleState for AdaGradNorm {
    /// `time`, the global `accumulator`, every parameter's state tensors and, per row-wise
    /// parameter, its own step count `"{param_id}.step"`.
    fn to_record(&self) -> StateRecord {
        let mut record = counted_record(self.time, &self.states);
        record.push_float("accumulator", self.accumulator);
        for (id, steps) in &self.param_steps {
            record.push_count(&format!("{}.step", id.val()), *steps);
        }
        record
    }

    fn load_record(mut self, record: StateRecord, device: &Device) -> Result<Self, String> {
        self.accumulator = record.float("accumulator")?;
        self.param_steps = record
            .param_tensors()
            .into_iter()
            .filter_map(|(id, _)| {
                let steps = record.count(&format!("{}.step", id.val())).ok()?;
                Some((id, steps))
            })
            .collect();
        (self.time, self.states) = from_counted_record(record, device)?;
        Ok(self)
    }
}

struct NormMapper<'a> {
    momentum: f64,
    scale: f64,
    decay: f64,
    grads: &'a mut GradientsParams,
    states: &'a mut FlatStates,
}

impl ModuleMapper for NormMapper<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(grad) = self.grads.remove::<D>(param.id) else {
            return param;
        };
        let (momentum, scale, decay) = (self.momentum, self.scale, self.decay);
        self.states.update(param, |theta, state| {
            // The fused path: the same f32 operations as below, in one pass.
            let (theta, grad, state) =
                match fused_global(theta, grad, state, momentum, scale, decay) {
                    Ok(done) => return done,
                    Err(back) => *back,
                };
            let decayed = |theta: Tensor<D>| {
                if decay != 0.0 {
                    theta - grad.clone().mul_scalar(decay)
                } else {
                    theta
                }
            };
            if momentum > 0.0 {
                let buf = match state {
                    Some(mut s) => s.pop().expect("momentum buffer"),
                    None => grad.zeros_like(),
                };
                let buf = buf.mul_scalar(momentum) + grad.clone().mul_scalar(1.0 - momentum);
                (decayed(theta - buf.clone().mul_scalar(scale)), vec![buf])
            } else {
                (decayed(theta - grad.clone().mul_scalar(scale)), Vec::new())
            }
        })
    }
}

/// The inputs handed back when the fused global step does not apply.
type Declined<const D: usize> = Box<(Tensor<D>, Tensor<D>, Option<Vec<Tensor<D>>>)>;

/// `stepped − g·decay` when the weight decay `decays`, else `stepped`: the last operation of every
/// AdaGrad-Norm update on the host (the kernels' `cube::kernels::decayed`).
#[inline(always)]
fn decayed(stepped: f32, g: f32, decay: f32, decays: bool) -> f32 {
    if decays { stepped - g * decay } else { stepped }
}

/// The global AdaGrad-Norm update of one parameter as one fused pass (`[buf]` state with
/// momentum, none without), or the inputs back.
fn fused_global<const D: usize>(
    theta: Tensor<D>,
    grad: Tensor<D>,
    state: Option<Vec<Tensor<D>>>,
    momentum: f64,
    scale: f64,
    decay: f64,
) -> Result<(Tensor<D>, Vec<Tensor<D>>), Declined<D>> {
    let (scale_32, decay_32) = (scale as f32, decay as f32);
    let decays = decay != 0.0;
    if momentum > 0.0 {
        let (mu, fraction) = (momentum as f32, (1.0 - momentum) as f32);
        let update = move |p: &mut f32, [g]: [f32; 1], [buf]: &mut [f32; 1]| {
            *buf = *buf * mu + g * fraction;
            *p = decayed(*p - *buf * scale_32, g, decay_32, decays);
        };
        let buf = state.map(|mut s| s.pop().expect("momentum buffer"));
        let inputs = StepInputs {
            param: theta,
            reads: [grad],
            states: [buf],
        };
        let rule = DeviceRule::AdaGradNorm(AdaGradNormConstants {
            momentum: Some([mu, fraction]),
            scale: scale_32,
            decay: decay_32,
            decays,
        });
        match try_step_on(inputs, [0.0], &update, rule) {
            Fused::Done(theta, [buf]) => Ok((theta, vec![buf])),
            Fused::Declined(back) => {
                let [grad] = back.reads;
                let [buf] = back.states;
                Err(Box::new((back.param, grad, buf.map(|b| vec![b]))))
            }
        }
    } else {
        let update = move |p: &mut f32, [g]: [f32; 1], _: &mut [f32; 0]| {
            *p = decayed(*p - g * scale_32, g, decay_32, decays);
        };
        let inputs = StepInputs {
            param: theta,
            reads: [grad],
            states: [],
        };
        let rule = DeviceRule::AdaGradNorm(AdaGradNormConstants {
            momentum: None,
            scale: scale_32,
            decay: decay_32,
            decays,
        });
        match try_step_on(inputs, [], &update, rule) {
            Fused::Done(theta, []) => Ok((theta, Vec::new())),
            Fused::Declined(back) => {
                let [grad] = back.reads;
                Err(Box::new((back.param, grad, state)))
            }
        }
    }
}

/// The per-row step, parameter by parameter in visit order (the order matters: see `prev_rows`).
struct PerRowMapper<'a> {
    config: &'a AdaGradNormConfig,
    lr: f64,
    grads: &'a mut GradientsParams,
    states: &'a mut FlatStates,
    steps: &'a mut HashMap<ParamId, usize>,
    /// Squared row norms of the last 2-D/4-D parameter processed in this step: the reference's
    /// leftover local `grad_sqaure`.
    prev_rows: Option<Tensor<1>>,
}

impl PerRowMapper<'_> {
    /// The accumulator of a 2-D/4-D parameter (one entry per row) after adding this step's row
    /// norms, and the 2-D view `[R, C]` of the parameter in which it broadcasts (`[O, 1]` or
    /// `[1, O]`).
    fn row_accumulator<const D: usize>(
        &mut self,
        grad: &Tensor<D>,
        previous: Option<Tensor<1>>,
    ) -> (Tensor<1>, [usize; 2], [usize; 2]) {
        let dims = grad.dims();
        let numel: usize = dims.iter().product();
        let (view, rows_axis) = if D == 2 && self.config.matrix_rows == MatrixRows::Axis1 {
            ([dims[0], dims[1]], 1)
        } else {
            ([dims[0], numel / dims[0]], 0)
        };
        let rows_len = view[rows_axis];
        // Squared L2 norm of every row: the reference's `grad.norm(dim=1)**2`.
        let rows = grad
            .clone()
            .reshape(view)
            .square()
            .sum_dim(1 - rows_axis)
            .reshape([rows_len]);
        let acc = previous.unwrap_or_else(|| {
            Tensor::full(
                [rows_len],
                self.config.initial_accumulator_value,
                &grad.device(),
            )
        }) + rows.clone();
        self.prev_rows = Some(rows);
        let den_shape = if rows_axis == 0 {
            [rows_len, 1]
        } else {
            [1, rows_len]
        };
        (acc, view, den_shape)
    }

    /// The per-element accumulator of a parameter of any other rank before this step's `g²`:
    /// the previous one (or the initial value) after the reference's
    /// `try: acc += prev.view(n, -1).mean(1)` (with PyTorch's broadcasting); the caller adds `g²`.
    fn element_accumulator<const D: usize>(
        &self,
        grad: &Tensor<D>,
        previous: Option<Tensor<1>>,
    ) -> Tensor<1> {
        let dims = grad.dims();
        let numel: usize = dims.iter().product();
        let mut acc = previous.unwrap_or_else(|| {
            Tensor::full(
                [numel],
                self.config.initial_accumulator_value,
                &grad.device(),
            )
        });
        if let Some(prev) = &self.prev_rows {
            let (n, last) = (dims[0], dims[D - 1]);
            let p = prev.dims()[0];
            if n > 0 && p > 0 && p.is_multiple_of(n) {
                let pooled = prev.clone().reshape([n, p / n]).mean_dim(1).reshape([n]);
                if D == 1 {
                    acc = acc + pooled;
                } else if n == 1 {
                    acc = acc + pooled.expand([numel]);
                } else if n == last {
                    acc = (acc.reshape([numel / last, last]) + pooled.reshape([1, last]))
                        .reshape([numel]);
                }
                // Otherwise PyTorch's in-place add cannot broadcast [n] and the reference's
                // `except` adds only g².
            }
        }
        acc
    }
}

impl ModuleMapper for PerRowMapper<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(grad) = self.grads.remove::<D>(param.id) else {
            return param;
        };
        let id = param.id;
        let dims = grad.dims();
        let numel: usize = dims.iter().product();
        if numel == 0 {
            return param;
        }
        let t = self.steps.entry(id).or_insert(0);
        *t += 1;
        let clr = self.lr / (1.0 + (*t as f64 - 1.0) * self.config.lr_decay);
        let mut state = self
            .states
            .get_mut(&id)
            .map(std::mem::take)
            .unwrap_or_default()
            .into_iter();
        let (previous_acc, previous_buf) = (state.next(), state.next());
        let update = PerRowUpdate {
            clr,
            momentum: self.config.momentum,
            decay: clr * self.config.weight_decay,
            eps: self.config.epsilon,
        };

        let mut stored = Vec::new();
        let param = if D == 2 || D == 4 {
            // The row norms are a reduction (tensor ops); the accumulator and `den` have one entry
            // per row. The elementwise update reads `den` broadcast over the `[R, C]` view.
            let (acc, view, den_shape) = self.row_accumulator(&grad, previous_acc);
            let den = acc.clone().sqrt().add_scalar(update.eps).reshape(den_shape);
            map_value(param, |theta| {
                let buf = previous_buf.map(|b| b.reshape(dims));
                let (theta, buf) = match update.fused_rows(theta, grad, buf, view, den.clone()) {
                    Ok(done) => done,
                    Err(back) => {
                        let (theta, grad, buf) = *back;
                        update.tensor_ops(theta, grad, buf, view, den)
                    }
                };
                stored = [acc]
                    .into_iter()
                    .chain(buf.map(|b| b.reshape([numel])))
                    .collect();
                theta
            })
        } else {
            // Per element: the pooled term of the previous rows (if any) as tensor ops, then one
            // pass for `acc += g²`, `den` and the update.
            let acc = self.element_accumulator(&grad, previous_acc);
            map_value(param, |theta| {
                let (acc, buf) = (acc.reshape(dims), previous_buf.map(|b| b.reshape(dims)));
                let (theta, state) = match update.fused_elements(theta, grad, acc, buf) {
                    Ok(done) => done,
                    Err(back) => {
                        let (theta, grad, acc, buf) = *back;
                        let acc = acc + grad.clone().square();
                        let den = acc
                            .clone()
                            .sqrt()
                            .add_scalar(update.eps)
                            .reshape([1, numel]);
                        let (theta, buf) = update.tensor_ops(theta, grad, buf, [1, numel], den);
                        (theta, [acc].into_iter().chain(buf).collect())
                    }
                };
                stored = state.into_iter().map(|t| t.reshape([numel])).collect();
                theta
            })
        };
        self.states.insert(id, stored);
        param
    }
}

impl AdaGradNormRowConstants {
    /// The host loops' `θ − (dir/den)·clr`, then the decay (`cube::kernels::per_row_update` on
    /// the device): `dir` is the momentum buffer, or g without momentum.
    #[inline(always)]
    fn step(self, p: f32, g: f32, dir: f32, den: f32) -> f32 {
        decayed(p - (dir / den) * self.clr, g, self.decay, self.decays)
    }
}

/// The inputs handed back when a fused per-row step does not apply: θ, g and the momentum
/// buffer.
type DeclinedRows<const D: usize> = Box<(Tensor<D>, Tensor<D>, Option<Tensor<D>>)>;

/// The inputs handed back when a fused per-element step does not apply: θ, g, the accumulator
/// before `g²` and the momentum buffer.
type DeclinedElements<const D: usize> = Box<(Tensor<D>, Tensor<D>, Tensor<D>, Option<Tensor<D>>)>;

/// The elementwise part of one parameter's per-row step, after its accumulator: with
/// `den = sqrt(acc) + eps`,
/// `buf = μ·buf + (1−μ)·g` (when μ > 0), `θ −= (buf or g)/den · clr`, then `θ −= decay·g`.
#[derive(Clone, Copy)]
struct PerRowUpdate {
    clr: f64,
    momentum: f64,
    /// `clr·weight_decay`.
    decay: f64,
    eps: f64,
}

impl PerRowUpdate {
    /// The constants of the device kernels (the values the host loops close over).
    fn constants(self) -> AdaGradNormRowConstants {
        AdaGradNormRowConstants {
            momentum: (self.momentum > 0.0)
                .then_some([self.momentum as f32, (1.0 - self.momentum) as f32]),
            clr: self.clr as f32,
            eps: self.eps as f32,
            decay: self.decay as f32,
            decays: self.decay != 0.0,
            // Filled in from the view by the broadcast kernel's entry point.
            cols: 0,
            along_rows: false,
        }
    }

    /// The tensor-op path, in the `[R, C]` view in which `den` broadcasts; the new θ (in θ's
    /// shape) and the momentum buffer (when μ > 0).
    fn tensor_ops<const D: usize>(
        self,
        theta: Tensor<D>,
        grad: Tensor<D>,
        buf: Option<Tensor<D>>,
        view: [usize; 2],
        den: Tensor<2>,
    ) -> (Tensor<D>, Option<Tensor<D>>) {
        let dims = theta.dims();
        let grad_view = grad.reshape(view);
        let (direction, buf) = if self.momentum > 0.0 {
            let buf = match buf {
                Some(buf) => buf.reshape(view),
                None => grad_view.zeros_like(),
            };
            let buf =
                buf.mul_scalar(self.momentum) + grad_view.clone().mul_scalar(1.0 - self.momentum);
            (buf.clone(), Some(buf.reshape(dims)))
        } else {
            (grad_view.clone(), None)
        };
        let mut theta = theta.reshape(view) - (direction / den).mul_scalar(self.clr);
        if self.decay != 0.0 {
            theta = theta - grad_view.mul_scalar(self.decay);
        }
        (theta.reshape(dims), buf)
    }

    /// The same f32 operations as [`tensor_ops`](Self::tensor_ops) in one pass, `den` read
    /// broadcast over the `[R, C]` view (`[R, 1]` or `[1, C]`); or the inputs back.
    fn fused_rows<const D: usize>(
        self,
        theta: Tensor<D>,
        grad: Tensor<D>,
        buf: Option<Tensor<D>>,
        view: [usize; 2],
        den: Tensor<2>,
    ) -> Result<(Tensor<D>, Option<Tensor<D>>), DeclinedRows<D>> {
        let c = self.constants();
        let rule = DeviceRule::AdaGradNormRows(c);
        if let Some([mu, fraction]) = c.momentum {
            let update = move |p: &mut f32, [g]: [f32; 1], den: f32, [buf]: &mut [f32; 1]| {
                *buf = *buf * mu + g * fraction;
                *p = c.step(*p, g, *buf, den);
            };
            let inputs = StepInputs {
                param: theta,
                reads: [grad],
                states: [buf],
            };
            match try_step_broadcast(inputs, view, den, [0.0], &update, rule) {
                Fused::Done(theta, [buf]) => Ok((theta, Some(buf))),
                Fused::Declined(back) => {
                    let ([grad], [buf]) = (back.reads, back.states);
                    Err(Box::new((back.param, grad, buf)))
                }
            }
        } else {
            let update = move |p: &mut f32, [g]: [f32; 1], den: f32, _: &mut [f32; 0]| {
                *p = c.step(*p, g, g, den);
            };
            let inputs = StepInputs {
                param: theta,
                reads: [grad],
                states: [],
            };
            match try_step_broadcast(inputs, view, den, [], &update, rule) {
                Fused::Done(theta, []) => Ok((theta, None)),
                Fused::Declined(back) => {
                    let [grad] = back.reads;
                    Err(Box::new((back.param, grad, buf)))
                }
            }
        }
    }

    /// A per-element step in one pass: `acc += g·g` (the tensor-op path's `acc + g.square()`),
    /// `den = sqrt(acc) + eps`, then the update of [`tensor_ops`](Self::tensor_ops); the new θ
    /// and the state `[acc]` or `[acc, buf]`, or the inputs back.
    fn fused_elements<const D: usize>(
        self,
        theta: Tensor<D>,
        grad: Tensor<D>,
        acc: Tensor<D>,
        buf: Option<Tensor<D>>,
    ) -> Result<(Tensor<D>, Vec<Tensor<D>>), DeclinedElements<D>> {
        let c = self.constants();
        let rule = DeviceRule::AdaGradNormElements(c);
        if let Some([mu, fraction]) = c.momentum {
            let update = move |p: &mut f32, [g]: [f32; 1], [acc, buf]: &mut [f32; 2]| {
                *acc += g * g;
                let den = acc.sqrt() + c.eps;
                *buf = *buf * mu + g * fraction;
                *p = c.step(*p, g, *buf, den);
            };
            let inputs = StepInputs {
                param: theta,
                reads: [grad],
                states: [Some(acc), buf],
            };
            match try_step_on(inputs, [0.0; 2], &update, rule) {
                Fused::Done(theta, [acc, buf]) => Ok((theta, vec![acc, buf])),
                Fused::Declined(back) => {
                    let ([grad], [acc, buf]) = (back.reads, back.states);
                    Err(Box::new((back.param, grad, acc.expect("given"), buf)))
                }
            }
        } else {
            let update = move |p: &mut f32, [g]: [f32; 1], [acc]: &mut [f32; 1]| {
                *acc += g * g;
                let den = acc.sqrt() + c.eps;
                *p = c.step(*p, g, g, den);
            };
            let inputs = StepInputs {
                param: theta,
                reads: [grad],
                states: [Some(acc)],
            };
            match try_step_on(inputs, [0.0], &update, rule) {
                Fused::Done(theta, [acc]) => Ok((theta, vec![acc])),
                Fused::Declined(back) => {
                    let ([grad], [acc]) = (back.reads, back.states);
                    Err(Box::new((back.param, grad, acc.expect("given"), buf)))
                }
            }
        }
    }
}
