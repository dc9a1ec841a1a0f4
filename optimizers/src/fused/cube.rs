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
    AdaBeliefConstants, AdaGradConstants, AdaGradNormConstants, AdaHessianConstants, AdamConstants,
    AdanConstants, AdanDecay, DeviceRule, DiffGradConstants, SophiaConstants,
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

    /// diffGrad with `[m, v, g_prev]`.
    #[fusion(meta = |p, _g, m, v, prev, _c| (p.clone(), m.clone(), v.clone(), prev.clone()))]
    fn fused_diffgrad(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        m: FloatTensor<Self>,
        v: FloatTensor<Self>,
        prev: FloatTensor<Self>,
        constants: DiffGradConstants,
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

    /// Global AdaGrad-Norm with momentum, `[buf]`.
    #[fusion(meta = |p, _g, buf, _c| (p.clone(), buf.clone()))]
    fn fused_adagrad_norm(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        buf: FloatTensor<Self>,
        constants: AdaGradNormConstants,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// A stateless step reading one tensor (`rule`: AdaGrad-Norm without momentum, M-FAC's
    /// first direction, `Axpy`).
    #[fusion(meta = |p, _r, _rule| p.clone())]
    fn fused_one_read(
        param: FloatTensor<Self>,
        read: FloatTensor<Self>,
        rule: DeviceRule,
    ) -> FloatTensor<Self>;

    /// M-FAC's momentum EMA of the direction, reading `g` and `c`.
    #[fusion(meta = |v, _g, _c, _rule| v.clone())]
    fn fused_mfac_ema(
        v: FloatTensor<Self>,
        g: FloatTensor<Self>,
        c: FloatTensor<Self>,
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

impl FusedStepBackend for CubeBackend {
    fn fused_adam(
        param: CubeTensor,
        grad: CubeTensor,
        m: CubeTensor,
        v: CubeTensor,
        c: AdamConstants,
    ) -> (CubeTensor, CubeTensor, CubeTensor) {
        let (param, grad, m, v) = (writable(param), readable(grad), writable(m), writable(v));
        let (count, dim, vs) = grid(&param);
        let [b1, b2, f1, f2] = c.moments;
        // SAFETY: each buffer holds exactly the parameter's elements (shapes checked, see `arg`)
        // and every unit checks its index against the parameter's length.
        unsafe {
            kernels::adam::launch_unchecked(
                &param.client,
                count,
                dim,
                vs,
                arg(&param, vs),
                arg(&grad, vs),
                arg(&m, vs),
                arg(&v, vs),
                b1,
                b2,
                f1,
                f2,
                c.scale_1,
                c.scale_2,
                c.eps,
                c.lr,
                c.decay,
                c.decays,
                c.decoupled,
            )
        };
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
        let (count, dim, vs) = grid(&param);
        let [b1, b2, f1, f2] = c.moments;
        // SAFETY: each buffer holds exactly the parameter's elements (shapes checked, see `arg`)
        // and every unit checks its index against the parameter's length.
        unsafe {
            kernels::adabelief::launch_unchecked(
                &param.client,
                count,
                dim,
                vs,
                arg(&param, vs),
                arg(&grad, vs),
                arg(&m, vs),
                arg(&s, vs),
                b1,
                b2,
                f1,
                f2,
                c.eps,
                c.coupled,
                c.theta_scale,
                c.denom_scale,
                c.adaptive_size,
                c.sgd_size,
            )
        };
        (param, m, s)
    }

    fn fused_diffgrad(
        param: CubeTensor,
        grad: CubeTensor,
        m: CubeTensor,
        v: CubeTensor,
        prev: CubeTensor,
        c: DiffGradConstants,
    ) -> (CubeTensor, CubeTensor, CubeTensor, CubeTensor) {
        let (param, grad) = (writable(param), readable(grad));
        let (m, v, prev) = (writable(m), writable(v), writable(prev));
        let (count, dim, vs) = grid(&param);
        let [b1, b2, f1, f2] = c.moments;
        // SAFETY: each buffer holds exactly the parameter's elements (shapes checked, see `arg`)
        // and every unit checks its index against the parameter's length.
        unsafe {
            kernels::diffgrad::launch_unchecked(
                &param.client,
                count,
                dim,
                vs,
                arg(&param, vs),
                arg(&grad, vs),
                arg(&m, vs),
                arg(&v, vs),
                arg(&prev, vs),
                b1,
                b2,
                f1,
                f2,
                c.eps,
                c.weight_decay,
                c.step_size,
                c.decays,
            )
        };
        (param, m, v, prev)
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
        let [b1, b2, f1, f2] = c.moments;
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
                b1,
                b2,
                f1,
                f2,
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
        buf: CubeTensor,
        c: AdaGradNormConstants,
    ) -> (CubeTensor, CubeTensor) {
        let (param, grad, buf) = (writable(param), readable(grad), writable(buf));
        let (count, dim, vs) = grid(&param);
        let [mu, fraction] = c.momentum.expect("the momentum kernel");
        // SAFETY: each buffer holds exactly the parameter's elements (shapes checked, see `arg`)
        // and every unit checks its index against the parameter's length.
        unsafe {
            kernels::adagrad_norm_momentum::launch_unchecked(
                &param.client,
                count,
                dim,
                vs,
                arg(&param, vs),
                arg(&grad, vs),
                arg(&buf, vs),
                mu,
                fraction,
                c.scale,
                c.decay,
                c.decays,
            )
        };
        (param, buf)
    }

    fn fused_one_read(param: CubeTensor, read: CubeTensor, rule: DeviceRule) -> CubeTensor {
        let (param, read) = (writable(param), readable(read));
        let (count, dim, vs) = grid(&param);
        let (client, p, r) = (&param.client, arg(&param, vs), arg(&read, vs));
        // SAFETY: as above (both buffers hold exactly the parameter's elements).
        unsafe {
            match rule {
                DeviceRule::AdaGradNorm(c) => kernels::adagrad_norm::launch_unchecked(
                    client, count, dim, vs, p, r, c.scale, c.decay, c.decays,
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

    fn fused_mfac_ema(v: CubeTensor, g: CubeTensor, c: CubeTensor, rule: DeviceRule) -> CubeTensor {
        let DeviceRule::MfacEma {
            momentum: [mu, fraction],
            damp,
        } = rule
        else {
            unreachable!("{rule:?} is not M-FAC's EMA")
        };
        let (v, g, c) = (writable(v), readable(g), readable(c));
        let (count, dim, vs) = grid(&v);
        // SAFETY: as above.
        unsafe {
            kernels::mfac_ema::launch_unchecked(
                &v.client,
                count,
                dim,
                vs,
                arg(&v, vs),
                arg(&g, vs),
                arg(&c, vs),
                mu,
                fraction,
                damp,
            )
        };
        v
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

    /// Adam (Burn's `Adam`: coupled L2 penalty, ε scaled by `√(1−β2ᵗ)`) or, with `decoupled`,
    /// AdamW (Burn's `AdamW`: `θ·(1 − lr·wd) − lr·m̂/(√v̂ + ε)`); `fused::adamw`'s loops.
    #[cube(launch_unchecked)]
    #[allow(clippy::too_many_arguments)]
    pub fn adam<N: Size>(
        param: &mut [Vector<f32, N>],
        grad: &[Vector<f32, N>],
        m: &mut [Vector<f32, N>],
        v: &mut [Vector<f32, N>],
        b1: f32,
        b2: f32,
        f1: f32,
        f2: f32,
        scale_1: f32,
        scale_2: f32,
        eps: f32,
        lr: f32,
        decay: f32,
        #[comptime] decays: bool,
        #[comptime] decoupled: bool,
    ) {
        let i = ABSOLUTE_POS;
        if i < param.len() {
            let b1 = Vector::<f32, N>::new(b1);
            let b2 = Vector::<f32, N>::new(b2);
            let f1 = Vector::<f32, N>::new(f1);
            let f2 = Vector::<f32, N>::new(f2);
            let scale_1 = Vector::<f32, N>::new(scale_1);
            let scale_2 = Vector::<f32, N>::new(scale_2);
            let eps = Vector::<f32, N>::new(eps);
            let lr = Vector::<f32, N>::new(lr);
            let decay = Vector::<f32, N>::new(decay);
            let p = param[i];
            let mut g = grad[i];
            if decays && !decoupled {
                g = p * decay + g;
            }
            let m_i = m[i] * b1 + g * f1;
            let v_i = v[i] * b2 + g * g * f2;
            m[i] = m_i;
            v[i] = v_i;
            if decoupled {
                let delta = (m_i / scale_1) / (Vector::sqrt(v_i / scale_2) + eps);
                let mut kept = p;
                if decays {
                    kept = p * decay;
                }
                param[i] = kept - delta * lr;
            } else {
                let delta = (m_i * scale_1) / (Vector::sqrt(v_i) + eps);
                param[i] = p - delta * lr;
            }
        }
    }

    /// AdaBelief without AMSGrad (`AdaBelief`'s branch-free host loop).
    #[cube(launch_unchecked)]
    #[allow(clippy::too_many_arguments)]
    pub fn adabelief<N: Size>(
        param: &mut [Vector<f32, N>],
        grad: &[Vector<f32, N>],
        m: &mut [Vector<f32, N>],
        s: &mut [Vector<f32, N>],
        b1: f32,
        b2: f32,
        f1: f32,
        f2: f32,
        eps: f32,
        coupled: f32,
        theta_scale: f32,
        denom_scale: f32,
        adaptive_size: f32,
        sgd_size: f32,
    ) {
        let i = ABSOLUTE_POS;
        if i < param.len() {
            let b1 = Vector::<f32, N>::new(b1);
            let b2 = Vector::<f32, N>::new(b2);
            let f1 = Vector::<f32, N>::new(f1);
            let f2 = Vector::<f32, N>::new(f2);
            let eps = Vector::<f32, N>::new(eps);
            let coupled = Vector::<f32, N>::new(coupled);
            let theta_scale = Vector::<f32, N>::new(theta_scale);
            let denom_scale = Vector::<f32, N>::new(denom_scale);
            let adaptive_size = Vector::<f32, N>::new(adaptive_size);
            let sgd_size = Vector::<f32, N>::new(sgd_size);
            let theta = param[i];
            let g = grad[i] + theta * coupled;
            let m_i = m[i] * b1 + g * f1;
            let belief = (g - m_i) * (g - m_i);
            let s_i = (s[i] * b2 + belief * f2) + eps;
            m[i] = m_i;
            s[i] = s_i;
            let denom = Vector::sqrt(s_i) * denom_scale + eps;
            param[i] = theta * theta_scale - (m_i / denom) * adaptive_size - m_i * sgd_size;
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
        b1: f32,
        b2: f32,
        f1: f32,
        f2: f32,
        eps: f32,
        weight_decay: f32,
        step_size: f32,
        #[comptime] decays: bool,
    ) {
        let i = ABSOLUTE_POS;
        if i < param.len() {
            let b1 = Vector::<f32, N>::new(b1);
            let b2 = Vector::<f32, N>::new(b2);
            let f1 = Vector::<f32, N>::new(f1);
            let f2 = Vector::<f32, N>::new(f2);
            let eps = Vector::<f32, N>::new(eps);
            let weight_decay = Vector::<f32, N>::new(weight_decay);
            let step_size = Vector::<f32, N>::new(step_size);
            let p = param[i];
            let mut g = grad[i];
            if decays {
                g += p * weight_decay;
            }
            let m_i = m[i] * b1 + g * f1;
            let v_i = v[i] * b2 + g * g * f2;
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
        b1: f32,
        b2: f32,
        f1: f32,
        f2: f32,
        bias_2: f32,
        eps: f32,
        step: f32,
        keep: f32,
        #[comptime] decays: bool,
    ) {
        let i = ABSOLUTE_POS;
        if i < param.len() {
            let b1 = Vector::<f32, N>::new(b1);
            let b2 = Vector::<f32, N>::new(b2);
            let f1 = Vector::<f32, N>::new(f1);
            let f2 = Vector::<f32, N>::new(f2);
            let bias_2 = Vector::<f32, N>::new(bias_2);
            let eps = Vector::<f32, N>::new(eps);
            let step = Vector::<f32, N>::new(step);
            let keep = Vector::<f32, N>::new(keep);
            let mut theta = param[i];
            if decays {
                theta *= keep;
            }
            let h_i = h[i];
            let m_i = m[i] * b1 + grad[i] * f1;
            let v_i = v[i] * b2 + h_i * h_i * f2;
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
            let beta = Vector::<f32, N>::new(beta);
            let fraction = Vector::<f32, N>::new(fraction);
            let a = Vector::<f32, N>::new(a);
            let b = Vector::<f32, N>::new(b);
            let c = Vector::<f32, N>::new(c);
            let d = Vector::<f32, N>::new(d);
            let e = Vector::<f32, N>::new(e);
            let lr = Vector::<f32, N>::new(lr);
            let g = grad[i];
            let p = param[i];
            if hessian_scaled {
                let mu = g * fraction + m[i] * beta;
                m[i] = mu;
                let u = (mu / a) / max(h[i] * b, c);
                let u = clamp(u, -d, d);
                param[i] = p - (u + p * e) * lr;
            } else {
                let theta = p * a;
                let m_i = m[i] * beta + g * fraction;
                m[i] = m_i;
                let ratio = m_i / (h[i] * b + Vector::new(1e-15));
                param[i] = theta - clamp(ratio, Vector::new(-1.0), Vector::new(1.0)) * lr;
            }
        }
    }

    /// Global AdaGrad-Norm with momentum (`adagrad_norm::fused_global`'s host loop).
    #[cube(launch_unchecked)]
    #[allow(clippy::too_many_arguments)]
    pub fn adagrad_norm_momentum<N: Size>(
        param: &mut [Vector<f32, N>],
        grad: &[Vector<f32, N>],
        buf: &mut [Vector<f32, N>],
        mu: f32,
        fraction: f32,
        scale: f32,
        decay: f32,
        #[comptime] decays: bool,
    ) {
        let i = ABSOLUTE_POS;
        if i < param.len() {
            let mu = Vector::<f32, N>::new(mu);
            let fraction = Vector::<f32, N>::new(fraction);
            let scale = Vector::<f32, N>::new(scale);
            let decay = Vector::<f32, N>::new(decay);
            let g = grad[i];
            let b = buf[i] * mu + g * fraction;
            buf[i] = b;
            let stepped = param[i] - b * scale;
            if decays {
                param[i] = stepped - g * decay;
            } else {
                param[i] = stepped;
            }
        }
    }

    /// Global AdaGrad-Norm without momentum.
    #[cube(launch_unchecked)]
    pub fn adagrad_norm<N: Size>(
        param: &mut [Vector<f32, N>],
        grad: &[Vector<f32, N>],
        scale: f32,
        decay: f32,
        #[comptime] decays: bool,
    ) {
        let i = ABSOLUTE_POS;
        if i < param.len() {
            let scale = Vector::<f32, N>::new(scale);
            let decay = Vector::<f32, N>::new(decay);
            let g = grad[i];
            let stepped = param[i] - g * scale;
            if decays {
                param[i] = stepped - g * decay;
            } else {
                param[i] = stepped;
            }
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
            let mu = Vector::<f32, N>::new(mu);
            let fraction = Vector::<f32, N>::new(fraction);
            let damp = Vector::<f32, N>::new(damp);
            v[i] = v[i] * mu + ((g[i] - c[i]) / damp) * fraction;
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
            let b1 = Vector::<f32, N>::new(b1);
            let b2 = Vector::<f32, N>::new(b2);
            let b3 = Vector::<f32, N>::new(b3);
            let f1 = Vector::<f32, N>::new(f1);
            let f2 = Vector::<f32, N>::new(f2);
            let f3 = Vector::<f32, N>::new(f3);
            let bias_1 = Vector::<f32, N>::new(bias_1);
            let bias_2 = Vector::<f32, N>::new(bias_2);
            let bias_3_sqrt = Vector::<f32, N>::new(bias_3_sqrt);
            let eps = Vector::<f32, N>::new(eps);
            let lr = Vector::<f32, N>::new(lr);
            let factor = Vector::<f32, N>::new(factor);
            let g = grad[i];
            let mut m_i = g * f1;
            let mut v_i = g * g * f3;
            let mut d_i = Vector::<f32, N>::new(0.0);
            if !first {
                let diff = neg[i] + g;
                let nesterov = diff * b2 + g;
                m_i = m[i] * b1 + g * f1;
                d_i = d[i] * b2 + diff * f2;
                v_i = v[i] * b3 + nesterov * nesterov * f3;
            }
            m[i] = m_i;
            v[i] = v_i;
            d[i] = d_i;
            neg[i] = -g;
            let denom = Vector::sqrt(v_i) / bias_3_sqrt + eps;
            let u = (m_i / bias_1) / denom + ((d_i * b2) / bias_2) / denom;
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
    if rule == DeviceRule::None {
        return Err(Box::new(inputs));
    }
    let shape = inputs.param.shape();
    let fits = |t: &Tensor<D>| on_cube(t) && t.shape() == shape;
    if rule.arity() != (R, K) || !inputs.all_fit(fits) {
        return Err(Box::new(inputs));
    }
    let StepInputs {
        param,
        reads,
        states,
    } = inputs;
    let device = param.device();
    let mut reads = reads.into_iter().map(Tensor::into_dispatch);
    let grad = reads.next().expect("the gradient");
    let second = reads.next();
    let states: Vec<DispatchTensor> = states
        .into_iter()
        .zip(init)
        .map(|(s, init)| {
            s.unwrap_or_else(|| Tensor::full(shape.clone(), init, &device))
                .into_dispatch()
        })
        .collect();
    let param = param.into_dispatch();
    let (param, states) = match rule {
        DeviceRule::None => unreachable!("declined above"),
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
        DeviceRule::DiffGrad(c) => {
            let [m, v, prev] = exactly(states);
            let (p, m, v, prev) = Dispatch::fused_diffgrad(param, grad, m, v, prev, c);
            (p, vec![m, v, prev])
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
        DeviceRule::AdaGradNorm(c) if c.momentum.is_some() => {
            let [buf] = exactly(states);
            let (p, buf) = Dispatch::fused_adagrad_norm(param, grad, buf, c);
            (p, vec![buf])
        }
        DeviceRule::AdaGradNorm(_) | DeviceRule::MfacFirst { .. } | DeviceRule::Axpy { .. } => {
            (Dispatch::fused_one_read(param, grad, rule), vec![])
        }
        DeviceRule::MfacEma { .. } => {
            let c = second.expect("arity checked");
            (Dispatch::fused_mfac_ema(param, grad, c, rule), vec![])
        }
        DeviceRule::Adan(c) => {
            let [m, v, d, neg] = exactly(states);
            let (p, (m, v, d, neg)) = Dispatch::fused_adan(param, grad, m, v, d, neg, c);
            (p, vec![m, v, d, neg])
        }
    };
    let states = exactly(states.into_iter().map(Tensor::from_dispatch).collect());
    Ok(Fused::Done(Tensor::from_dispatch(param), states))
}

/// The `N` elements of `v` as an array (the lengths were checked against the rule).
fn exactly<T, const N: usize>(v: Vec<T>) -> [T; N] {
    let len = v.len();
    v.try_into()
        .unwrap_or_else(|_| unreachable!("{len} tensors where {N} were checked"))
}
