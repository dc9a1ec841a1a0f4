//! The fused step on the CubeCL backends (wgpu, cuda; features `wgpu` / `cuda`): one kernel
//! launch per tensor step that reads the parameter, the gradient and the states once and writes
//! the parameter and the states once, in place.
//!
//! The kernels ([`kernels`]) are `#[cube]` functions that repeat, per element, the f32
//! operations of the host loops in the optimizers' modules (the same order; the GPU's `sqrt`,
//! `exp` and division may round differently from the CPU's, so the two paths agree to f32
//! rounding rather than bit for bit). They are reached through a Burn backend extension
//! ([`FusedStepBackend`], `#[backend_extension(Cube, Fusion)]`): on a device with Burn's fusion
//! (the default for wgpu and cuda) the tensors are fusion handles, and the generated `Fusion`
//! implementation registers each step as one opaque operation in the fusion stream, with output
//! shapes known up front, and runs the kernel when the stream executes.
//!
//! A buffer is written in place when the step holds its only reference and copied first
//! otherwise (copy-on-write, as on the host); non-contiguous tensors are made contiguous first.
//! Buffer copies on a device are not counted in [`PathCounts::copied`](super::PathCounts).

use burn::backend::{
    Backend, Dispatch, DispatchDevice, DispatchTensor, backend_extension, tensor::FloatTensor,
};
use burn::tensor::{DType, Tensor};
use burn_cubecl::CubeBackend;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;
use cubecl::{CubeDim, calculate_cube_count_elemwise};

use super::rule::{
    AdaBeliefConstants, AdaGradConstants, AdaGradNormConstants, AdaGradNormRowConstants,
    AdaHessianConstants, AdamConstants, AdanConstants, AdanDecay, DeviceRule, SophiaConstants,
};
use super::{Fused, StepInputs};

/// The fused optimizer steps as a Burn backend extension of the CubeCL backend (and, generated,
/// of its fusion wrapper). Each method takes the parameter, the gradient and the states, and
/// returns the parameter and the states, updated.
#[backend_extension(Cube, Fusion)]
pub(crate) trait FusedStepBackend: Backend {
    /// Adam / AdamW with `[m, v]`.
    #[fusion(meta = |p, _g, m, v, _c| (p.clone(), m.clone(), v.clone()))]
    fn fused_adam(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        m: FloatTensor<Self>,
        v: FloatTensor<Self>,
        constants: AdamConstants,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);

    /// AdaBelief with `[m, s]`.
    #[fusion(meta = |p, _g, m, s, _c| (p.clone(), m.clone(), s.clone()))]
    fn fused_adabelief(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        m: FloatTensor<Self>,
        s: FloatTensor<Self>,
        constants: AdaBeliefConstants,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);

    /// A step with three states (`rule`: diffGrad with `[m, v, g_prev]`, AdaBelief with AMSGrad
    /// with `[m, s, max s]`, Adam / AdamW with AMSGrad with `[m, v, v_max]`).
    #[fusion(meta = |p, _g, a, b, c, _rule| (p.clone(), a.clone(), b.clone(), c.clone()))]
    fn fused_three_states(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        c: FloatTensor<Self>,
        rule: DeviceRule,
    ) -> (
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
    );

    /// AdaGrad with `[sum]`.
    #[fusion(meta = |p, _g, sum, _c| (p.clone(), sum.clone()))]
    fn fused_adagrad(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        sum: FloatTensor<Self>,
        constants: AdaGradConstants,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// AdaHessian (power 1) reading `h`, with `[m, v]`.
    #[fusion(meta = |p, _g, _h, m, v, _c| (p.clone(), m.clone(), v.clone()))]
    fn fused_adahessian(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        h: FloatTensor<Self>,
        m: FloatTensor<Self>,
        v: FloatTensor<Self>,
        constants: AdaHessianConstants,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);

    /// Sophia-G / Sophia-H reading `h`, with `[m]`.
    #[fusion(meta = |p, _g, _h, m, _c| (p.clone(), m.clone()))]
    fn fused_sophia(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        h: FloatTensor<Self>,
        m: FloatTensor<Self>,
        constants: SophiaConstants,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// AdaGrad-Norm with one state (`rule`: global with momentum, `[buf]`; per element without
    /// momentum, `[acc]`).
    #[fusion(meta = |p, _g, s, _rule| (p.clone(), s.clone()))]
    fn fused_adagrad_norm(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        state: FloatTensor<Self>,
        rule: DeviceRule,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// Per-row AdaGrad-Norm with momentum, reading `g` and `den` (broadcast), `[buf]`.
    #[fusion(meta = |p, _g, _den, buf, _rule| (p.clone(), buf.clone()))]
    fn fused_adagrad_norm_rows(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        den: FloatTensor<Self>,
        buf: FloatTensor<Self>,
        rule: DeviceRule,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// Per-element AdaGrad-Norm with momentum, `[acc, buf]`.
    #[fusion(meta = |p, _g, acc, buf, _rule| (p.clone(), acc.clone(), buf.clone()))]
    fn fused_adagrad_norm_elements(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        acc: FloatTensor<Self>,
        buf: FloatTensor<Self>,
        rule: DeviceRule,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);

    /// A stateless step reading one tensor (`rule`: AdaGrad-Norm without momentum, M-FAC's
    /// first direction, `Axpy`).
    #[fusion(meta = |p, _r, _rule| p.clone())]
    fn fused_one_read(
        param: FloatTensor<Self>,
        read: FloatTensor<Self>,
        rule: DeviceRule,
    ) -> FloatTensor<Self>;

    /// A stateless step reading two tensors (`rule`: M-FAC's momentum EMA of the direction,
    /// reading `g` and `c`; per-row AdaGrad-Norm without momentum, reading `g` and `den`).
    #[fusion(meta = |p, _a, _b, _rule| p.clone())]
    fn fused_two_reads(
        param: FloatTensor<Self>,
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        rule: DeviceRule,
    ) -> FloatTensor<Self>;

    /// Adan with `[m, v, d, −g_prev]`.
    #[allow(clippy::type_complexity)]
    #[fusion(meta = |p, _g, m, v, d, neg, _c| (
        p.clone(),
        (m.clone(), v.clone(), d.clone(), neg.clone()),
    ))]
    fn fused_adan(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        m: FloatTensor<Self>,
        v: FloatTensor<Self>,
        d: FloatTensor<Self>,
        neg: FloatTensor<Self>,
        constants: AdanConstants,
    ) -> (
        FloatTensor<Self>,
        (
            FloatTensor<Self>,
            FloatTensor<Self>,
            FloatTensor<Self>,
            FloatTensor<Self>,
        ),
    );
}

/// A tensor the kernel reads: contiguous, its buffer exactly its elements.
fn readable(t: CubeTensor) -> CubeTensor {
    let t = if t.is_contiguous() {
        t
    } else {
        into_contiguous(t)
    };
    if t.is_contiguous_buffer() {
        t
    } else {
        t.copy()
    }
}

/// A tensor the kernel writes in place: [`readable`] and held only here (copied otherwise).
fn writable(t: CubeTensor) -> CubeTensor {
    let t = readable(t);
    if t.can_mut() { t } else { t.copy() }
}

/// The kernel argument of a tensor prepared by [`readable`] / [`writable`].
fn arg(t: &CubeTensor, vector_size: usize) -> BufferArg {
    // SAFETY: the buffer holds exactly the tensor's f32 elements (`is_contiguous_buffer`), a
    // multiple of `vector_size` of them (see `grid`).
    unsafe { BufferArg::from_raw_parts(t.handle.clone(), t.meta.num_elements() / vector_size) }
}

/// The kernel argument of the moment constants `[β1, β2, 1 − β1, 1 − β2]`.
fn moments([b1, b2, f1, f2]: [f32; 4]) -> kernels::MomentsLaunch {
    kernels::MomentsLaunch::new(b1, b2, f1, f2)
}

/// The vector width (4 f32 per unit when the element count allows it, else 1) and one unit per
/// vector, in cubes sized for the device.
fn grid(t: &CubeTensor) -> (CubeCount, CubeDim, usize) {
    let n = t.meta.num_elements();
    let vector_size = if n.is_multiple_of(4) { 4 } else { 1 };
    let units = n / vector_size;
    let dim = CubeDim::new(&t.client, units);
    (
        calculate_cube_count_elemwise(&t.client, units, dim),
        dim,
        vector_size,
    )
}

/// Launches [`kernels::adam`] over the tensors prepared by [`readable`] / [`writable`], with
/// AMSGrad's running maximum `v_max` when given.
fn launch_adam(
    param: &CubeTensor,
    grad: &CubeTensor,
    m: &CubeTensor,
    v: &CubeTensor,
    v_max: Option<&CubeTensor>,
    c: AdamConstants,
) {
    let (count, dim, vs) = grid(param);
    // SAFETY: each buffer holds exactly the parameter's elements (shapes checked, see `arg`)
    // and every unit checks its index against the parameter's length.
    unsafe {
        kernels::adam::launch_unchecked(
            &param.client,
            count,
            dim,
            vs,
            arg(param, vs),
            arg(grad, vs),
            arg(m, vs),
            arg(v, vs),
            v_max.map(|t| arg(t, vs)).into(),
            moments(c.moments),
            c.scale_1,
            c.scale_2,
            c.eps,
            c.lr,
            c.decay,
            c.decays,
            c.decoupled,
            c.cautious,
        )
    }
}

/// Launches [`kernels::adabelief`] over the tensors prepared by [`readable`] / [`writable`], with
/// AMSGrad's running maximum of s when given (and whether it replaces s in the denominator).
fn launch_adabelief(
    param: &CubeTensor,
    grad: &CubeTensor,
    m: &CubeTensor,
    s: &CubeTensor,
    max_s: Option<(&CubeTensor, bool)>,
    c: AdaBeliefConstants,
) {
    let (count, dim, vs) = grid(param);
    let max_in_denominator = max_s.is_some_and(|(_, used)| used);
    // SAFETY: each buffer holds exactly the parameter's elements (shapes checked, see `arg`)
    // and every unit checks its index against the parameter's length.
    unsafe {
        kernels::adabelief::launch_unchecked(
            &param.client,
            count,
            dim,
            vs,
            arg(param, vs),
            arg(grad, vs),
            arg(m, vs),
            arg(s, vs),
            max_s.map(|(t, _)| arg(t, vs)).into(),
            moments(c.moments),
            c.eps,
            c.coupled,
            c.theta_scale,
            c.denom_scale,
            c.adaptive_size,
            c.sgd_size,
            max_in_denominator,
        )
    }
}

impl FusedStepBackend for CubeBackend {
    fn fused_adam(
        param: CubeTensor,
        grad: CubeTensor,
        m: CubeTensor,
        v: CubeTensor,
        c: AdamConstants,
    ) -> (CubeTensor, CubeTensor, CubeTensor) {
        let (param, grad, m, v) = (writable(param), readable(grad), writable(m), writable(v));
        launch_adam(&param, &grad, &m, &v, None, c);
        (param, m, v)
    }

    fn fused_adabelief(
        param: CubeTensor,
        grad: CubeTensor,
        m: CubeTensor,
        s: CubeTensor,
        c: AdaBeliefConstants,
    ) -> (CubeTensor, CubeTensor, CubeTensor) {
        let (param, grad, m, s) = (writable(param), readable(grad), writable(m), writable(s));
        launch_adabelief(&param, &grad, &m, &s, None, c);
        (param, m, s)
    }

    fn fused_three_states(
        param: CubeTensor,
        grad: CubeTensor,
        a: CubeTensor,
        b: CubeTensor,
        c: CubeTensor,
        rule: DeviceRule,
    ) -> (CubeTensor, CubeTensor, CubeTensor, CubeTensor) {
        let (param, grad) = (writable(param), readable(grad));
        let (a, b, c) = (writable(a), writable(b), writable(c));
        match rule {
            DeviceRule::DiffGrad(k) => {
                let (count, dim, vs) = grid(&param);
                // SAFETY: each buffer holds exactly the parameter's elements (shapes checked, see
                // `arg`) and every unit checks its index against the parameter's length.
                unsafe {
                    kernels::diffgrad::launch_unchecked(
                        &param.client,
                        count,
                        dim,
                        vs,
                        arg(&param, vs),
                        arg(&grad, vs),
                        arg(&a, vs),
                        arg(&b, vs),
                        arg(&c, vs),
                        moments(k.moments),
                        k.eps,
                        k.weight_decay,
                        k.step_size,
                        k.decays,
                    )
                }
            }
            // With AMSGrad the third state is the running maximum.
            DeviceRule::AdaBeliefAmsgrad {
                constants,
                max_in_denominator,
            } => launch_adabelief(
                &param,
                &grad,
                &a,
                &b,
                Some((&c, max_in_denominator)),
                constants,
            ),
            DeviceRule::AdamAmsgrad(k) => launch_adam(&param, &grad, &a, &b, Some(&c), k),
            other => unreachable!("{other:?} is not a three-state rule"),
        };
        (param, a, b, c)
    }

    fn fused_adagrad(
        param: CubeTensor,
        grad: CubeTensor,
        sum: CubeTensor,
        c: AdaGradConstants,
    ) -> (CubeTensor, CubeTensor) {
        let (param, grad, sum) = (writable(param), readable(grad), writable(sum));
        let (count, dim, vs) = grid(&param);
        // SAFETY: each buffer holds exactly the parameter's elements (shapes checked, see `arg`)
        // and every unit checks its index against the parameter's length.
        unsafe {
            kernels::adagrad::launch_unchecked(
                &param.client,
                count,
                dim,
                vs,
                arg(&param, vs),
                arg(&grad, vs),
                arg(&sum, vs),
                c.eps,
                c.weight_decay,
                c.clr,
                c.decays,
            )
        };
        (param, sum)
    }

    fn fused_adahessian(
        param: CubeTensor,
        grad: CubeTensor,
        h: CubeTensor,
        m: CubeTensor,
        v: CubeTensor,
        c: AdaHessianConstants,
    ) -> (CubeTensor, CubeTensor, CubeTensor) {
        let (param, grad, h) = (writable(param), readable(grad), readable(h));
        let (m, v) = (writable(m), writable(v));
        let (count, dim, vs) = grid(&param);
        // SAFETY: each buffer holds exactly the parameter's elements (shapes checked, see `arg`)
        // and every unit checks its index against the parameter's length.
        unsafe {
            kernels::adahessian::launch_unchecked(
                &param.client,
                count,
                dim,
                vs,
                arg(&param, vs),
                arg(&grad, vs),
                arg(&h, vs),
                arg(&m, vs),
                arg(&v, vs),
                moments(c.moments),
                c.bias_2,
                c.eps,
                c.step,
                c.keep,
                c.decays,
            )
        };
        (param, m, v)
    }

    fn fused_sophia(
        param: CubeTensor,
        grad: CubeTensor,
        h: CubeTensor,
        m: CubeTensor,
        c: SophiaConstants,
    ) -> (CubeTensor, CubeTensor) {
        let (param, grad, h, m) = (writable(param), readable(grad), readable(h), writable(m));
        let (count, dim, vs) = grid(&param);
        // One kernel for both variants: [β, 1 − β, a, b, c, d, e, lr] and the variant.
        let (values, hessian_scaled) = match c {
            SophiaConstants::G {
                beta,
                keep,
                scale,
                lr,
            } => ([beta[0], beta[1], keep, scale, 0.0, 0.0, 0.0, lr], false),
            SophiaConstants::H {
                beta,
                bias,
                gamma,
                eps,
                limit,
                wd,
                lr,
            } => ([beta[0], beta[1], bias, gamma, eps, limit, wd, lr], true),
        };
        let [beta, fraction, a, b, c, d, e, lr] = values;
        // SAFETY: each buffer holds exactly the parameter's elements (shapes checked, see `arg`)
        // and every unit checks its index against the parameter's length.
        unsafe {
            kernels::sophia::launch_unchecked(
                &param.client,
                count,
                dim,
                vs,
                arg(&param, vs),
                arg(&grad, vs),
                arg(&h, vs),
                arg(&m, vs),
                beta,
                fraction,
                a,
                b,
                c,
                d,
                e,
                lr,
                hessian_scaled,
            )
        };
        (param, m)
    }

    fn fused_adagrad_norm(
        param: CubeTensor,
        grad: CubeTensor,
        state: CubeTensor,
        rule: DeviceRule,
    ) -> (CubeTensor, CubeTensor) {
        let (param, grad, state) = (writable(param), readable(grad), writable(state));
        let (count, dim, vs) = grid(&param);
        let (client, p, g, s) = (
            &param.client,
            arg(&param, vs),
            arg(&grad, vs),
            arg(&state, vs),
        );
        // SAFETY: each buffer holds exactly the parameter's elements (shapes checked, see `arg`)
        // and every unit checks its index against the parameter's length.
        unsafe {
            match rule {
                DeviceRule::AdaGradNorm(c) => {
                    let [mu, fraction] = c.momentum.expect("the momentum kernel");
                    kernels::adagrad_norm::launch_unchecked(
                        client,
                        count,
                        dim,
                        vs,
                        p,
                        g,
                        Some(s).into(),
                        mu,
                        fraction,
                        c.scale,
                        c.decay,
                        c.decays,
                    )
                }
                DeviceRule::AdaGradNormElements(c) => {
                    kernels::adagrad_norm_elements::launch_unchecked(
                        client,
                        count,
                        dim,
                        vs,
                        p,
                        g,
                        s,
                        None.into(),
                        0.0,
                        0.0,
                        c.clr,
                        c.eps,
                        c.decay,
                        c.decays,
                    )
                }
                other => unreachable!("{other:?} is not AdaGrad-Norm with one state"),
            }
        };
        (param, state)
    }

    fn fused_adagrad_norm_rows(
        param: CubeTensor,
        grad: CubeTensor,
        den: CubeTensor,
        buf: CubeTensor,
        rule: DeviceRule,
    ) -> (CubeTensor, CubeTensor) {
        let DeviceRule::AdaGradNormRows(c) = rule else {
            unreachable!("{rule:?} is not per-row AdaGrad-Norm")
        };
        let [mu, fraction] = c.momentum.expect("the momentum kernel");
        let (param, grad) = (writable(param), readable(grad));
        let (den, buf) = (readable(den), writable(buf));
        let (count, dim, vs) = grid(&param);
        // SAFETY: param, grad and buf hold exactly the parameter's elements and every unit checks
        // its index against the parameter's length; `den` holds one entry per row (or column) of
        // the `[rows, cols]` view (checked by `try_step_broadcast`), which the index stays within.
        unsafe {
            kernels::adagrad_norm_rows::launch_unchecked(
                &param.client,
                count,
                dim,
                vs,
                arg(&param, vs),
                arg(&grad, vs),
                arg(&den, 1),
                Some(arg(&buf, vs)).into(),
                c.cols,
                mu,
                fraction,
                c.clr,
                c.decay,
                c.along_rows,
                c.decays,
            )
        };
        (param, buf)
    }

    fn fused_adagrad_norm_elements(
        param: CubeTensor,
        grad: CubeTensor,
        acc: CubeTensor,
        buf: CubeTensor,
        rule: DeviceRule,
    ) -> (CubeTensor, CubeTensor, CubeTensor) {
        let DeviceRule::AdaGradNormElements(c) = rule else {
            unreachable!("{rule:?} is not per-element AdaGrad-Norm")
        };
        let [mu, fraction] = c.momentum.expect("the momentum kernel");
        let (param, grad) = (writable(param), readable(grad));
        let (acc, buf) = (writable(acc), writable(buf));
        let (count, dim, vs) = grid(&param);
        // SAFETY: each buffer holds exactly the parameter's elements (shapes checked, see `arg`)
        // and every unit checks its index against the parameter's length.
        unsafe {
            kernels::adagrad_norm_elements::launch_unchecked(
                &param.client,
                count,
                dim,
                vs,
                arg(&param, vs),
                arg(&grad, vs),
                arg(&acc, vs),
                Some(arg(&buf, vs)).into(),
                mu,
                fraction,
                c.clr,
                c.eps,
                c.decay,
                c.decays,
            )
        };
        (param, acc, buf)
    }

    fn fused_one_read(param: CubeTensor, read: CubeTensor, rule: DeviceRule) -> CubeTensor {
        let (param, read) = (writable(param), readable(read));
        let (count, dim, vs) = grid(&param);
        let (client, p, r) = (&param.client, arg(&param, vs), arg(&read, vs));
        // SAFETY: as above (both buffers hold exactly the parameter's elements).
        unsafe {
            match rule {
                DeviceRule::AdaGradNorm(c) => kernels::adagrad_norm::launch_unchecked(
                    client,
                    count,
                    dim,
                    vs,
                    p,
                    r,
                    None.into(),
                    0.0,
                    0.0,
                    c.scale,
                    c.decay,
                    c.decays,
                ),
                DeviceRule::MfacFirst {
                    damp,
                    fraction,
                    averages,
                } => kernels::mfac_first::launch_unchecked(
                    client, count, dim, vs, p, r, damp, fraction, averages,
                ),
                DeviceRule::Axpy { factor, subtract } => {
                    kernels::axpy::launch_unchecked(client, count, dim, vs, p, r, factor, subtract)
                }
                other => unreachable!("{other:?} is not a stateless one-read rule"),
            }
        };
        param
    }

    fn fused_two_reads(
        param: CubeTensor,
        a: CubeTensor,
        b: CubeTensor,
        rule: DeviceRule,
    ) -> CubeTensor {
        let (param, a, b) = (writable(param), readable(a), readable(b));
        let (count, dim, vs) = grid(&param);
        let (client, p, a_arg) = (&param.client, arg(&param, vs), arg(&a, vs));
        // SAFETY: param and `a` hold exactly the parameter's elements and every unit checks its
        // index against the parameter's length; `b` holds the parameter's elements (M-FAC) or one
        // entry per row (or column) of the `[rows, cols]` view (checked by
        // `try_step_broadcast`), which the index stays within.
        unsafe {
            match rule {
                DeviceRule::MfacEma {
                    momentum: [mu, fraction],
                    damp,
                } => kernels::mfac_ema::launch_unchecked(
                    client,
                    count,
                    dim,
                    vs,
                    p,
                    a_arg,
                    arg(&b, vs),
                    mu,
                    fraction,
                    damp,
                ),
                DeviceRule::AdaGradNormRows(c) => kernels::adagrad_norm_rows::launch_unchecked(
                    client,
                    count,
                    dim,
                    vs,
                    p,
                    a_arg,
                    arg(&b, 1),
                    None.into(),
                    c.cols,
                    0.0,
                    0.0,
                    c.clr,
                    c.decay,
                    c.along_rows,
                    c.decays,
                ),
                other => unreachable!("{other:?} is not a stateless two-read rule"),
            }
        };
        param
    }

    fn fused_adan(
        param: CubeTensor,
        grad: CubeTensor,
        m: CubeTensor,
        v: CubeTensor,
        d: CubeTensor,
        neg: CubeTensor,
        c: AdanConstants,
    ) -> (CubeTensor, (CubeTensor, CubeTensor, CubeTensor, CubeTensor)) {
        let (param, grad) = (writable(param), readable(grad));
        let (m, v, d, neg) = (writable(m), writable(v), writable(d), writable(neg));
        let (count, dim, vs) = grid(&param);
        let [b1, b2, b3, f1, f2, f3] = c.decays;
        let [bias_1, bias_2, bias_3_sqrt] = c.bias;
        let (mode, factor) = match c.decay {
            AdanDecay::None => (0u32, 1.0),
            AdanDecay::Scale(keep) => (1, keep),
            AdanDecay::Proximal(prox) => (2, prox),
        };
        // SAFETY: each buffer holds exactly the parameter's elements (shapes checked, see `arg`)
        // and every unit checks its index against the parameter's length.
        unsafe {
            kernels::adan::launch_unchecked(
                &param.client,
                count,
                dim,
                vs,
                arg(&param, vs),
                arg(&grad, vs),
                arg(&m, vs),
                arg(&v, vs),
                arg(&d, vs),
                arg(&neg, vs),
                b1,
                b2,
                b3,
                f1,
                f2,
                f3,
                bias_1,
                bias_2,
                bias_3_sqrt,
                c.eps,
                c.lr,
                factor,
                c.first,
                mode,
            )
        };
        (param, (m, v, d, neg))
    }
}

/// The per-element kernels: each repeats the host loop of its optimizer (same f32 operations,
/// same order).
pub(crate) mod kernels {
    use cubecl::prelude::*;

    /// The constants of two exponential moving averages, `[β1, β2, 1 − β1, 1 − β2]`
    /// (`fused::math::Constants` on the host), passed to a kernel as one argument.
    #[derive(CubeLaunch, CubeType)]
    pub struct Moments {
        /// β1.
        pub b1: f32,
        /// β2.
        pub b2: f32,
        /// 1 − β1.
        pub f1: f32,
        /// 1 − β2.
        pub f2: f32,
    }

    /// One exponential moving average, `prev·β + x·fraction` (the hosts' order).
    #[cube]
    fn ema<N: Size>(
        prev: Vector<f32, N>,
        x: Vector<f32, N>,
        beta: f32,
        fraction: f32,
    ) -> Vector<f32, N> {
        prev * Vector::<f32, N>::new(beta) + x * Vector::<f32, N>::new(fraction)
    }

    /// Adam (Burn's `Adam`: coupled L2 penalty, ε scaled by `√(1−β2ᵗ)`) or, with `decoupled`,
    /// AdamW (Burn's `AdamW`: `θ·(1 − lr·wd) − lr·m̂/(√v̂ + ε)`, with `cautious` the decay only
    /// where θ and m have the same sign); `fused::adamw`'s loops. With `v_max` (AMSGrad) the
    /// running maximum of v is kept there and used in the denominator.
    #[cube(launch_unchecked)]
    #[allow(clippy::too_many_arguments)]
    pub fn adam<N: Size>(
        param: &mut [Vector<f32, N>],
        grad: &[Vector<f32, N>],
        m: &mut [Vector<f32, N>],
        v: &mut [Vector<f32, N>],
        v_max: ComptimeOption<&mut [Vector<f32, N>]>,
        k: Moments,
        scale_1: f32,
        scale_2: f32,
        eps: f32,
        lr: f32,
        decay: f32,
        #[comptime] decays: bool,
        #[comptime] decoupled: bool,
        #[comptime] cautious: bool,
    ) {
        let i = ABSOLUTE_POS;
        if i < param.len() {
            let p = param[i];
            let g = adam_grad::<N>(p, grad[i], decay, decays, decoupled);
            let m_i = ema::<N>(m[i], g, k.b1, k.f1);
            let v_i = ema::<N>(v[i], g * g, k.b2, k.f2);
            m[i] = m_i;
            v[i] = v_i;
            #[comptime]
            let v_used = match v_max {
                ComptimeOption::Some(v_max) => {
                    let max_i = max(v_max[i], v_i);
                    v_max[i] = max_i;
                    max_i
                }
                ComptimeOption::None => v_i,
            };
            param[i] = adam_param::<N>(
                p, m_i, v_used, scale_1, scale_2, eps, lr, decay, decays, decoupled, cautious,
            );
        }
    }

    /// Adam's gradient: `g + wd·θ` under the coupled penalty.
    #[cube]
    fn adam_grad<N: Size>(
        p: Vector<f32, N>,
        g: Vector<f32, N>,
        decay: f32,
        #[comptime] decays: bool,
        #[comptime] decoupled: bool,
    ) -> Vector<f32, N> {
        let mut out = g;
        if decays && !decoupled {
            out = p * Vector::<f32, N>::new(decay) + g;
        }
        out
    }

    /// The new θ of Adam / AdamW from the new m and the v of the denominator.
    #[cube]
    #[allow(clippy::too_many_arguments)]
    fn adam_param<N: Size>(
        p: Vector<f32, N>,
        m_i: Vector<f32, N>,
        v_i: Vector<f32, N>,
        scale_1: f32,
        scale_2: f32,
        eps: f32,
        lr: f32,
        decay: f32,
        #[comptime] decays: bool,
        #[comptime] decoupled: bool,
        #[comptime] cautious: bool,
    ) -> Vector<f32, N> {
        let scale_1 = Vector::<f32, N>::new(scale_1);
        let eps = Vector::<f32, N>::new(eps);
        let lr = Vector::<f32, N>::new(lr);
        // `decoupled` is comptime: the kernel keeps one of the two assignments of `delta`.
        let mut kept = p;
        let mut delta = (m_i * scale_1) / (Vector::sqrt(v_i) + eps);
        if decoupled {
            delta = (m_i / scale_1) / (Vector::sqrt(v_i / Vector::<f32, N>::new(scale_2)) + eps);
            if decays {
                if cautious {
                    // θ − θ·lr·wd where θ and m have the same sign (`≥ 0` alike), θ elsewhere.
                    let zero = Vector::<f32, N>::new(0.0);
                    let decayed = p * Vector::<f32, N>::new(decay);
                    let m_nonneg = m_i.greater_equal(&zero);
                    let same_sign = select_many(
                        p.greater_equal(&zero),
                        select_many(m_nonneg, decayed, zero),
                        select_many(m_nonneg, zero, decayed),
                    );
                    kept = p - same_sign;
                } else {
                    kept = p * Vector::<f32, N>::new(decay);
                }
            }
        }
        kept - delta * lr
    }

    /// AdaBelief (`AdaBelief`'s host loop). With `max_s` (AMSGrad) the running maximum of s is
    /// kept there, and used in the denominator when `max_in_denominator` (no rectification).
    #[cube(launch_unchecked)]
    #[allow(clippy::too_many_arguments)]
    pub fn adabelief<N: Size>(
        param: &mut [Vector<f32, N>],
        grad: &[Vector<f32, N>],
        m: &mut [Vector<f32, N>],
        s: &mut [Vector<f32, N>],
        max_s: ComptimeOption<&mut [Vector<f32, N>]>,
        k: Moments,
        eps: f32,
        coupled: f32,
        theta_scale: f32,
        denom_scale: f32,
        adaptive_size: f32,
        sgd_size: f32,
        #[comptime] max_in_denominator: bool,
    ) {
        let i = ABSOLUTE_POS;
        if i < param.len() {
            let eps = Vector::<f32, N>::new(eps);
            let theta = param[i];
            let g = grad[i] + theta * Vector::<f32, N>::new(coupled);
            let m_i = ema::<N>(m[i], g, k.b1, k.f1);
            let belief = (g - m_i) * (g - m_i);
            let s_i = ema::<N>(s[i], belief, k.b2, k.f2) + eps;
            m[i] = m_i;
            s[i] = s_i;
            #[comptime]
            let s_used = match max_s {
                ComptimeOption::Some(max_s) => {
                    let max_i = max(max_s[i], s_i);
                    max_s[i] = max_i;
                    let mut used = s_i;
                    if max_in_denominator {
                        used = max_i;
                    }
                    used
                }
                ComptimeOption::None => s_i,
            };
            let denom = Vector::sqrt(s_used) * Vector::<f32, N>::new(denom_scale) + eps;
            param[i] = theta * Vector::<f32, N>::new(theta_scale)
                - (m_i / denom) * Vector::<f32, N>::new(adaptive_size)
                - m_i * Vector::<f32, N>::new(sgd_size);
        }
    }

    /// diffGrad (`DiffGrad`'s host loop; the friction `1/(1 + e^{−|g_prev − g|})` folded into
    /// the denominator).
    #[cube(launch_unchecked)]
    #[allow(clippy::too_many_arguments)]
    pub fn diffgrad<N: Size>(
        param: &mut [Vector<f32, N>],
        grad: &[Vector<f32, N>],
        m: &mut [Vector<f32, N>],
        v: &mut [Vector<f32, N>],
        prev: &mut [Vector<f32, N>],
        k: Moments,
        eps: f32,
        weight_decay: f32,
        step_size: f32,
        #[comptime] decays: bool,
    ) {
        let i = ABSOLUTE_POS;
        if i < param.len() {
            let eps = Vector::<f32, N>::new(eps);
            let weight_decay = Vector::<f32, N>::new(weight_decay);
            let step_size = Vector::<f32, N>::new(step_size);
            let p = param[i];
            let mut g = grad[i];
            if decays {
                g += p * weight_decay;
            }
            let m_i = ema::<N>(m[i], g, k.b1, k.f1);
            let v_i = ema::<N>(v[i], g * g, k.b2, k.f2);
            let friction_inv = Vector::exp(-Vector::abs(prev[i] - g)) + Vector::new(1.0);
            m[i] = m_i;
            v[i] = v_i;
            prev[i] = g;
            param[i] = p - m_i / ((Vector::sqrt(v_i) + eps) * friction_inv) * step_size;
        }
    }

    /// AdaGrad with an initial accumulator (`AdaGradInit`'s host loop).
    #[cube(launch_unchecked)]
    pub fn adagrad<N: Size>(
        param: &mut [Vector<f32, N>],
        grad: &[Vector<f32, N>],
        sum: &mut [Vector<f32, N>],
        eps: f32,
        weight_decay: f32,
        clr: f32,
        #[comptime] decays: bool,
    ) {
        let i = ABSOLUTE_POS;
        if i < param.len() {
            let eps = Vector::<f32, N>::new(eps);
            let weight_decay = Vector::<f32, N>::new(weight_decay);
            let clr = Vector::<f32, N>::new(clr);
            let p = param[i];
            let mut g = grad[i];
            if decays {
                g += p * weight_decay;
            }
            let s = sum[i] + g * g;
            sum[i] = s;
            param[i] = p - g / (Vector::sqrt(s) + eps) * clr;
        }
    }

    /// AdaHessian with power 1 (`AdaHessian`'s host loop).
    #[cube(launch_unchecked)]
    #[allow(clippy::too_many_arguments)]
    pub fn adahessian<N: Size>(
        param: &mut [Vector<f32, N>],
        grad: &[Vector<f32, N>],
        h: &[Vector<f32, N>],
        m: &mut [Vector<f32, N>],
        v: &mut [Vector<f32, N>],
        k: Moments,
        bias_2: f32,
        eps: f32,
        step: f32,
        keep: f32,
        #[comptime] decays: bool,
    ) {
        let i = ABSOLUTE_POS;
        if i < param.len() {
            let bias_2 = Vector::<f32, N>::new(bias_2);
            let eps = Vector::<f32, N>::new(eps);
            let step = Vector::<f32, N>::new(step);
            let keep = Vector::<f32, N>::new(keep);
            let mut theta = param[i];
            if decays {
                theta *= keep;
            }
            let h_i = h[i];
            let m_i = ema::<N>(m[i], grad[i], k.b1, k.f1);
            let v_i = ema::<N>(v[i], h_i * h_i, k.b2, k.f2);
            m[i] = m_i;
            v[i] = v_i;
            let den = Vector::sqrt(v_i / bias_2) + eps;
            param[i] = theta - (m_i / den) * step;
        }
    }

    /// Sophia-G (`hessian_scaled` false: `a` = 1 − lr·wd, `b` = ρ·batch size) or Sophia-H
    /// (`a` = 1 − β1ᵗ, `b` = γ, `c` = ε, `d` = clip threshold, `e` = wd); the host loops of
    /// `SophiaG` / `SophiaH` without their count (done afterwards from the new state).
    #[cube(launch_unchecked)]
    #[allow(clippy::too_many_arguments)]
    pub fn sophia<N: Size>(
        param: &mut [Vector<f32, N>],
        grad: &[Vector<f32, N>],
        h: &[Vector<f32, N>],
        m: &mut [Vector<f32, N>],
        beta: f32,
        fraction: f32,
        a: f32,
        b: f32,
        c: f32,
        d: f32,
        e: f32,
        lr: f32,
        #[comptime] hessian_scaled: bool,
    ) {
        let i = ABSOLUTE_POS;
        if i < param.len() {
            let a = Vector::<f32, N>::new(a);
            let b = Vector::<f32, N>::new(b);
            let c = Vector::<f32, N>::new(c);
            let d = Vector::<f32, N>::new(d);
            let e = Vector::<f32, N>::new(e);
            let lr = Vector::<f32, N>::new(lr);
            let g = grad[i];
            let p = param[i];
            if hessian_scaled {
                let mu = g * Vector::<f32, N>::new(fraction) + m[i] * Vector::<f32, N>::new(beta);
                m[i] = mu;
                let u = (mu / a) / max(h[i] * b, c);
                let u = clamp(u, -d, d);
                param[i] = p - (u + p * e) * lr;
            } else {
                let theta = p * a;
                let m_i = ema::<N>(m[i], g, beta, fraction);
                m[i] = m_i;
                let ratio = m_i / (h[i] * b + Vector::new(1e-15));
                param[i] = theta - clamp(ratio, Vector::new(-1.0), Vector::new(1.0)) * lr;
            }
        }
    }

    /// Per-row AdaGrad-Norm's update (`PerRowUpdate`'s host loops): `θ − (dir/den)·clr`, then
    /// `− g·decay` when it `decays`.
    #[cube]
    fn per_row_update<N: Size>(
        p: Vector<f32, N>,
        g: Vector<f32, N>,
        dir: Vector<f32, N>,
        den: Vector<f32, N>,
        clr: f32,
        decay: f32,
        #[comptime] decays: bool,
    ) -> Vector<f32, N> {
        decayed::<N>(
            p - (dir / den) * Vector::<f32, N>::new(clr),
            g,
            decay,
            decays,
        )
    }

    /// `stepped − g·decay` when the weight decay `decays`, else `stepped`: the last operation of
    /// every AdaGrad-Norm update (`adagrad_norm::decayed` on the host).
    #[cube]
    fn decayed<N: Size>(
        stepped: Vector<f32, N>,
        g: Vector<f32, N>,
        decay: f32,
        #[comptime] decays: bool,
    ) -> Vector<f32, N> {
        let mut out = stepped;
        if decays {
            out = stepped - g * Vector::<f32, N>::new(decay);
        }
        out
    }

    /// The `den` of the `size` elements of unit `unit` in the row-major `[rows, cols]` view:
    /// `den[e / cols]` (`along_rows`) or `den[e % cols]` for element `e`.
    #[cube]
    fn broadcast_den<N: Size>(
        den: &[f32],
        unit: usize,
        cols: usize,
        #[comptime] size: usize,
        #[comptime] along_rows: bool,
    ) -> Vector<f32, N> {
        let mut out = Vector::<f32, N>::empty();
        #[unroll]
        for k in 0..size {
            let e = unit * size + k;
            if along_rows {
                out.insert(k, den[e / cols]);
            } else {
                out.insert(k, den[e % cols]);
            }
        }
        out
    }

    /// AdaGrad-Norm's update direction at `i`: with `buf` (momentum) the EMA
    /// `buf·μ + g·(1 − μ)`, written back; without, `g`.
    #[cube]
    // The `#[comptime]` marker that resolves the match at expansion sits on a `let`.
    #[allow(clippy::let_and_return)]
    fn direction<N: Size>(
        buf: ComptimeOption<&mut [Vector<f32, N>]>,
        i: usize,
        g: Vector<f32, N>,
        mu: f32,
        fraction: f32,
    ) -> Vector<f32, N> {
        #[comptime]
        let dir = match buf {
            ComptimeOption::Some(buf) => {
                let b = ema::<N>(buf[i], g, mu, fraction);
                buf[i] = b;
                b
            }
            ComptimeOption::None => g,
        };
        dir
    }

    /// Per-row AdaGrad-Norm, `den` broadcast over the rows or columns; with `buf`, momentum
    /// (the update's direction is its EMA `buf·μ + g·(1 − μ)`, written back), else `g`.
    #[cube(launch_unchecked)]
    #[allow(clippy::too_many_arguments)]
    pub fn adagrad_norm_rows<N: Size>(
        param: &mut [Vector<f32, N>],
        grad: &[Vector<f32, N>],
        den: &[f32],
        buf: ComptimeOption<&mut [Vector<f32, N>]>,
        cols: usize,
        mu: f32,
        fraction: f32,
        clr: f32,
        decay: f32,
        #[comptime] along_rows: bool,
        #[comptime] decays: bool,
    ) {
        let i = ABSOLUTE_POS;
        if i < param.len() {
            let size = grad.vector_size().comptime();
            let d = broadcast_den::<N>(den, i, cols, size, along_rows);
            let g = grad[i];
            let dir = direction::<N>(buf, i, g, mu, fraction);
            param[i] = per_row_update::<N>(param[i], g, dir, d, clr, decay, decays);
        }
    }

    /// Per-element AdaGrad-Norm: `acc += g·g`, `den = √acc + ε`; with `buf`, momentum as in
    /// [`adagrad_norm_rows`].
    #[cube(launch_unchecked)]
    #[allow(clippy::too_many_arguments)]
    pub fn adagrad_norm_elements<N: Size>(
        param: &mut [Vector<f32, N>],
        grad: &[Vector<f32, N>],
        acc: &mut [Vector<f32, N>],
        buf: ComptimeOption<&mut [Vector<f32, N>]>,
        mu: f32,
        fraction: f32,
        clr: f32,
        eps: f32,
        decay: f32,
        #[comptime] decays: bool,
    ) {
        let i = ABSOLUTE_POS;
        if i < param.len() {
            let g = grad[i];
            let a = acc[i] + g * g;
            acc[i] = a;
            let d = Vector::sqrt(a) + Vector::<f32, N>::new(eps);
            let dir = direction::<N>(buf, i, g, mu, fraction);
            param[i] = per_row_update::<N>(param[i], g, dir, d, clr, decay, decays);
        }
    }

    /// Global AdaGrad-Norm (`adagrad_norm::fused_global`'s host loop): `θ − dir·scale`, with
    /// momentum as in [`adagrad_norm_rows`] when `buf` is given.
    #[cube(launch_unchecked)]
    #[allow(clippy::too_many_arguments)]
    pub fn adagrad_norm<N: Size>(
        param: &mut [Vector<f32, N>],
        grad: &[Vector<f32, N>],
        buf: ComptimeOption<&mut [Vector<f32, N>]>,
        mu: f32,
        fraction: f32,
        scale: f32,
        decay: f32,
        #[comptime] decays: bool,
    ) {
        let i = ABSOLUTE_POS;
        if i < param.len() {
            let g = grad[i];
            let dir = direction::<N>(buf, i, g, mu, fraction);
            let stepped = param[i] - dir * Vector::<f32, N>::new(scale);
            param[i] = decayed::<N>(stepped, g, decay, decays);
        }
    }

    /// M-FAC's first direction `c = (g − c)/λ` (times `fraction` when it `averages`).
    #[cube(launch_unchecked)]
    pub fn mfac_first<N: Size>(
        c: &mut [Vector<f32, N>],
        g: &[Vector<f32, N>],
        damp: f32,
        fraction: f32,
        #[comptime] averages: bool,
    ) {
        let i = ABSOLUTE_POS;
        if i < c.len() {
            let damp = Vector::<f32, N>::new(damp);
            let fraction = Vector::<f32, N>::new(fraction);
            let x = (g[i] - c[i]) / damp;
            if averages {
                c[i] = x * fraction;
            } else {
                c[i] = x;
            }
        }
    }

    /// M-FAC's momentum EMA `v = μ·v + ((g − c)/λ)·(1 − μ)`.
    #[cube(launch_unchecked)]
    pub fn mfac_ema<N: Size>(
        v: &mut [Vector<f32, N>],
        g: &[Vector<f32, N>],
        c: &[Vector<f32, N>],
        mu: f32,
        fraction: f32,
        damp: f32,
    ) {
        let i = ABSOLUTE_POS;
        if i < v.len() {
            let damp = Vector::<f32, N>::new(damp);
            v[i] = ema::<N>(v[i], (g[i] - c[i]) / damp, mu, fraction);
        }
    }

    /// `p + r·factor`, or `p − r·factor` when `subtract`.
    #[cube(launch_unchecked)]
    // Written as plain assignments of indexed elements, the form every kernel here uses.
    #[allow(clippy::assign_op_pattern)]
    pub fn axpy<N: Size>(
        p: &mut [Vector<f32, N>],
        r: &[Vector<f32, N>],
        factor: f32,
        #[comptime] subtract: bool,
    ) {
        let i = ABSOLUTE_POS;
        if i < p.len() {
            let factor = Vector::<f32, N>::new(factor);
            if subtract {
                p[i] = p[i] - r[i] * factor;
            } else {
                p[i] = p[i] + r[i] * factor;
            }
        }
    }

    /// Adan (`FusedAdan`'s host loop); `mode` 0: no decay, 1: `θ·factor − δ`, 2:
    /// `(θ − δ)/factor`.
    #[cube(launch_unchecked)]
    #[allow(clippy::too_many_arguments)]
    pub fn adan<N: Size>(
        param: &mut [Vector<f32, N>],
        grad: &[Vector<f32, N>],
        m: &mut [Vector<f32, N>],
        v: &mut [Vector<f32, N>],
        d: &mut [Vector<f32, N>],
        neg: &mut [Vector<f32, N>],
        b1: f32,
        b2: f32,
        b3: f32,
        f1: f32,
        f2: f32,
        f3: f32,
        bias_1: f32,
        bias_2: f32,
        bias_3_sqrt: f32,
        eps: f32,
        lr: f32,
        factor: f32,
        #[comptime] first: bool,
        #[comptime] mode: u32,
    ) {
        let i = ABSOLUTE_POS;
        if i < param.len() {
            let b2_vector = Vector::<f32, N>::new(b2);
            let bias_1 = Vector::<f32, N>::new(bias_1);
            let bias_2 = Vector::<f32, N>::new(bias_2);
            let bias_3_sqrt = Vector::<f32, N>::new(bias_3_sqrt);
            let eps = Vector::<f32, N>::new(eps);
            let lr = Vector::<f32, N>::new(lr);
            let factor = Vector::<f32, N>::new(factor);
            let g = grad[i];
            let mut m_i = g * Vector::<f32, N>::new(f1);
            let mut v_i = g * g * Vector::<f32, N>::new(f3);
            let mut d_i = Vector::<f32, N>::new(0.0);
            if !first {
                let diff = neg[i] + g;
                let nesterov = diff * b2_vector + g;
                m_i = ema::<N>(m[i], g, b1, f1);
                d_i = ema::<N>(d[i], diff, b2, f2);
                v_i = ema::<N>(v[i], nesterov * nesterov, b3, f3);
            }
            m[i] = m_i;
            v[i] = v_i;
            d[i] = d_i;
            neg[i] = -g;
            let denom = Vector::sqrt(v_i) / bias_3_sqrt + eps;
            let u = (m_i / bias_1) / denom + ((d_i * b2_vector) / bias_2) / denom;
            let delta = u * lr;
            let p = param[i];
            if mode == 1 {
                param[i] = p * factor - delta;
            } else if mode == 2 {
                param[i] = (p - delta) / factor;
            } else {
                param[i] = p - delta;
            }
        }
    }
}

/// Whether `t` is a plain f32 tensor of a CubeCL device (not autodiff-held).
fn on_cube<const D: usize>(t: &Tensor<D>) -> bool {
    let device = t.device();
    t.dtype() == DType::F32
        && !device.is_autodiff()
        && matches!(device.as_dispatch(), DispatchDevice::Cube(_))
}

/// Runs `rule`'s kernel when every tensor is on a CubeCL device and has the parameter's shape;
/// hands the inputs back otherwise (or when `rule` has no kernel for this state layout).
pub(crate) fn try_step<const D: usize, const R: usize, const K: usize>(
    inputs: StepInputs<D, R, K>,
    init: [f32; K],
    rule: DeviceRule,
) -> Result<Fused<D, R, K>, Box<StepInputs<D, R, K>>> {
    // The broadcast rule runs from `try_step_broadcast` only (it needs the vector).
    if matches!(rule, DeviceRule::AdaGradNormRows(_)) || !fit(&inputs, rule) {
        return Err(Box::new(inputs));
    }
    let (param, mut reads, states) = dispatch(inputs, init);
    let grad = reads.remove(0);
    let second = reads.pop();
    let (param, states) = match rule {
        DeviceRule::AdaGradNormRows(_) => unreachable!("declined above"),
        DeviceRule::Adam(c) => {
            let [m, v] = exactly(states);
            let (p, m, v) = Dispatch::fused_adam(param, grad, m, v, c);
            (p, vec![m, v])
        }
        DeviceRule::AdaBelief(c) => {
            let [m, s] = exactly(states);
            let (p, m, s) = Dispatch::fused_adabelief(param, grad, m, s, c);
            (p, vec![m, s])
        }
        DeviceRule::DiffGrad(_)
        | DeviceRule::AdaBeliefAmsgrad { .. }
        | DeviceRule::AdamAmsgrad(_) => {
            let [a, b, c] = exactly(states);
            let (p, a, b, c) = Dispatch::fused_three_states(param, grad, a, b, c, rule);
            (p, vec![a, b, c])
        }
        DeviceRule::AdaGrad(c) => {
            let [sum] = exactly(states);
            let (p, sum) = Dispatch::fused_adagrad(param, grad, sum, c);
            (p, vec![sum])
        }
        DeviceRule::AdaHessian(c) => {
            let [m, v] = exactly(states);
            let h = second.expect("arity checked");
            let (p, m, v) = Dispatch::fused_adahessian(param, grad, h, m, v, c);
            (p, vec![m, v])
        }
        DeviceRule::Sophia(c) => {
            let [m] = exactly(states);
            let h = second.expect("arity checked");
            let (p, m) = Dispatch::fused_sophia(param, grad, h, m, c);
            (p, vec![m])
        }
        DeviceRule::AdaGradNorm(AdaGradNormConstants {
            momentum: Some(_), ..
        })
        | DeviceRule::AdaGradNormElements(AdaGradNormRowConstants { momentum: None, .. }) => {
            let [state] = exactly(states);
            let (p, state) = Dispatch::fused_adagrad_norm(param, grad, state, rule);
            (p, vec![state])
        }
        DeviceRule::AdaGradNormElements(_) => {
            let [acc, buf] = exactly(states);
            let (p, acc, buf) = Dispatch::fused_adagrad_norm_elements(param, grad, acc, buf, rule);
            (p, vec![acc, buf])
        }
        DeviceRule::AdaGradNorm(_) | DeviceRule::MfacFirst { .. } | DeviceRule::Axpy { .. } => {
            (Dispatch::fused_one_read(param, grad, rule), vec![])
        }
        DeviceRule::MfacEma { .. } => {
            let c = second.expect("arity checked");
            (Dispatch::fused_two_reads(param, grad, c, rule), vec![])
        }
        DeviceRule::Adan(c) => {
            let [m, v, d, neg] = exactly(states);
            let (p, (m, v, d, neg)) = Dispatch::fused_adan(param, grad, m, v, d, neg, c);
            (p, vec![m, v, d, neg])
        }
    };
    Ok(done(param, states))
}

/// [`try_step`] for per-row AdaGrad-Norm ([`DeviceRule::AdaGradNormRows`]), whose `den` (`vector`,
/// `[view[0], 1]` when `along_rows`, else `[1, view[1]]`, as `fused::try_step_broadcast` checked)
/// is broadcast over the row-major `[rows, cols]` view `view` of the parameter; the inputs and
/// the vector back when the kernel does not apply.
pub(crate) fn try_step_broadcast<const D: usize, const R: usize, const K: usize>(
    inputs: StepInputs<D, R, K>,
    view: [usize; 2],
    vector: Tensor<2>,
    along_rows: bool,
    init: [f32; K],
    rule: DeviceRule,
) -> Result<Fused<D, R, K>, Box<(StepInputs<D, R, K>, Tensor<2>)>> {
    let DeviceRule::AdaGradNormRows(c) = rule else {
        return Err(Box::new((inputs, vector)));
    };
    if !on_cube(&vector) || !fit(&inputs, rule) {
        return Err(Box::new((inputs, vector)));
    }
    let rule = DeviceRule::AdaGradNormRows(AdaGradNormRowConstants {
        cols: view[1],
        along_rows,
        ..c
    });
    let (param, mut reads, states) = dispatch(inputs, init);
    let (grad, den) = (reads.remove(0), vector.into_dispatch());
    let (param, states) = if c.momentum.is_some() {
        let [buf] = exactly(states);
        let (p, buf) = Dispatch::fused_adagrad_norm_rows(param, grad, den, buf, rule);
        (p, vec![buf])
    } else {
        (Dispatch::fused_two_reads(param, grad, den, rule), vec![])
    };
    Ok(done(param, states))
}

/// Whether `rule`'s kernel takes `inputs`: its arity, every tensor on a CubeCL device with the
/// parameter's shape.
fn fit<const D: usize, const R: usize, const K: usize>(
    inputs: &StepInputs<D, R, K>,
    rule: DeviceRule,
) -> bool {
    let shape = inputs.param.shape();
    rule.arity() == (R, K) && inputs.all_fit(|t| on_cube(t) && t.shape() == shape)
}

/// The dispatch tensors of `inputs`: the parameter, the reads and the states (those not given
/// yet filled with `init[k]`).
fn dispatch<const D: usize, const R: usize, const K: usize>(
    inputs: StepInputs<D, R, K>,
    init: [f32; K],
) -> (DispatchTensor, Vec<DispatchTensor>, Vec<DispatchTensor>) {
    let StepInputs {
        param,
        reads,
        states,
    } = inputs;
    let (device, shape) = (param.device(), param.shape());
    let reads = reads.into_iter().map(Tensor::into_dispatch).collect();
    let states = states
        .into_iter()
        .zip(init)
        .map(|(s, init)| {
            s.unwrap_or_else(|| Tensor::full(shape.clone(), init, &device))
                .into_dispatch()
        })
        .collect();
    (param.into_dispatch(), reads, states)
}

/// The step's result from the kernel's output tensors.
fn done<const D: usize, const R: usize, const K: usize>(
    param: DispatchTensor,
    states: Vec<DispatchTensor>,
) -> Fused<D, R, K> {
    let states = exactly(states.into_iter().map(Tensor::from_dispatch).collect());
    Fused::Done(Tensor::from_dispatch(param), states)
}

/// The `N` elements of `v` as an array (the lengths were checked against the rule).
fn exactly<T, const N: usize>(v: Vec<T>) -> [T; N] {
    let len = v.len();
    v.try_into()
        .unwrap_or_else(|_| unreachable!("{len} tensors where {N} were checked"))
}
