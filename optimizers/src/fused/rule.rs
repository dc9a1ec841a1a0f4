//! What a device kernel needs to run one fused step: which update rule, with the constants of
//! this step computed on the host (the same values the host loop closes over). Always compiled,
//! so the optimizers describe their step the same way whether or not a device kernel is built
//! (features `wgpu` / `cuda`, module `cube`).

// Without a device kernel in the build the constants are built but never read.
#![cfg_attr(not(feature = "cube"), allow(dead_code))]

/// A fused update as a device kernel sees it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum DeviceRule {
    /// Adam / AdamW with `[m, v]`.
    Adam(AdamConstants),
    /// Adam / AdamW with AMSGrad, `[m, v, v_max]`.
    AdamAmsgrad(AdamConstants),
    /// AdaBelief with `[m, s]`.
    AdaBelief(AdaBeliefConstants),
    /// AdaBelief with AMSGrad, `[m, s, max s]`.
    AdaBeliefAmsgrad {
        /// The step's constants (as without AMSGrad).
        constants: AdaBeliefConstants,
        /// Whether `max s` replaces `s` in the denominator (AMSGrad without rectification).
        max_in_denominator: bool,
    },
    /// diffGrad with `[m, v, g_prev]`.
    DiffGrad(DiffGradConstants),
    /// AdaGrad with `[sum]`.
    AdaGrad(AdaGradConstants),
    /// Adan with `[m, v, d, −g_prev]`.
    Adan(AdanConstants),
    /// AdaHessian (power 1) reading `[g, h]` with `[m, v]`.
    AdaHessian(AdaHessianConstants),
    /// Sophia-G or Sophia-H reading `[g, h]` with `[m]`.
    Sophia(SophiaConstants),
    /// Global AdaGrad-Norm reading `[g]`, with `[buf]` when it has momentum.
    AdaGradNorm(AdaGradNormConstants),
    /// Per-row AdaGrad-Norm of a 2-D/4-D parameter reading `[g]` and `den` broadcast over its
    /// rows or columns (`cube::try_step_broadcast`), with `[buf]` when it has momentum.
    AdaGradNormRows(AdaGradNormRowConstants),
    /// Per-row AdaGrad-Norm of a parameter of another rank (one accumulator entry per element)
    /// reading `[g]`, with `[acc]`, or `[acc, buf]` when it has momentum.
    AdaGradNormElements(AdaGradNormRowConstants),
    /// M-FAC's momentum EMA of the direction, `v = μ·v + ((g − c)/λ)·(1 − μ)`, reading `[g, c]`.
    MfacEma {
        /// μ, 1 − μ.
        momentum: [f32; 2],
        /// λ.
        damp: f32,
    },
    /// M-FAC's first direction, `c = (g − c)/λ` (times `fraction` when it averages), reading
    /// `[g]`.
    MfacFirst {
        /// λ.
        damp: f32,
        /// 1 − μ, applied when `averages`.
        fraction: f32,
        /// Whether momentum is on.
        averages: bool,
    },
    /// `p += r·factor` (`subtract`: `p −= r·factor`), reading `[r]`: M-FAC's coupled decay into
    /// the gradient and its `θ −= lr·x`.
    Axpy {
        /// The factor of the read.
        factor: f32,
        /// Subtract instead of add.
        subtract: bool,
    },
}

impl DeviceRule {
    /// The number of read-only inputs and of states of the rule's kernel.
    pub(crate) fn arity(&self) -> (usize, usize) {
        match self {
            DeviceRule::AdaGrad(_) => (1, 1),
            DeviceRule::Adam(_) | DeviceRule::AdaBelief(_) => (1, 2),
            DeviceRule::DiffGrad(_)
            | DeviceRule::AdaBeliefAmsgrad { .. }
            | DeviceRule::AdamAmsgrad(_) => (1, 3),
            DeviceRule::Adan(_) => (1, 4),
            DeviceRule::AdaHessian(_) => (2, 2),
            DeviceRule::Sophia(_) => (2, 1),
            DeviceRule::AdaGradNorm(c) => (1, usize::from(c.momentum.is_some())),
            DeviceRule::AdaGradNormRows(c) => (1, usize::from(c.momentum.is_some())),
            DeviceRule::AdaGradNormElements(c) => (1, 1 + usize::from(c.momentum.is_some())),
            DeviceRule::MfacEma { .. } => (2, 0),
            DeviceRule::MfacFirst { .. } | DeviceRule::Axpy { .. } => (1, 0),
        }
    }
}

/// Constants of one Adam/AdamW step (see [`kernels::adam`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct AdamConstants {
    /// β1, β2, 1 − β1, 1 − β2.
    pub moments: [f32; 4],
    /// Adam: `√(1−β2ᵗ)/(1−β1ᵗ)`; AdamW: `1 − β1ᵗ`.
    pub scale_1: f32,
    /// Adam: unused; AdamW: `1 − β2ᵗ`.
    pub scale_2: f32,
    /// ε (Adam: already multiplied by `√(1−β2ᵗ)`).
    pub eps: f32,
    /// The learning rate.
    pub lr: f32,
    /// Adam: the L2 penalty added to g; AdamW: the factor `1 − lr·wd` of θ (cautious: `lr·wd`).
    pub decay: f32,
    /// Whether `decay` applies.
    pub decays: bool,
    /// AdamW's form (decoupled decay, bias corrections inside) instead of Adam's.
    pub decoupled: bool,
    /// AdamW's cautious decay: `θ − θ·lr·wd` only where θ and m have the same sign.
    pub cautious: bool,
}

/// Constants of one AdaBelief step (see [`kernels::adabelief`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct AdaBeliefConstants {
    /// β1, β2, 1 − β1, 1 − β2.
    pub moments: [f32; 4],
    /// ε.
    pub eps: f32,
    /// Coupled L2 factor added to g (0 when none).
    pub coupled: f32,
    /// Factor of θ (decoupled decay; 1 when none).
    pub theta_scale: f32,
    /// Factor of `√s` in the denominator.
    pub denom_scale: f32,
    /// Step size of the adaptive update (0 when the step is SGD-like or skipped).
    pub adaptive_size: f32,
    /// Step size of the SGD-like update (0 when adaptive or skipped).
    pub sgd_size: f32,
}

/// Constants of one diffGrad step (see [`kernels::diffgrad`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct DiffGradConstants {
    /// β1, β2, 1 − β1, 1 − β2.
    pub moments: [f32; 4],
    /// ε.
    pub eps: f32,
    /// Coupled L2 weight decay.
    pub weight_decay: f32,
    /// Whether the weight decay applies.
    pub decays: bool,
    /// `lr·√(1−β2ᵗ)/(1−β1ᵗ)`.
    pub step_size: f32,
}

/// Constants of one AdaGrad step (see [`kernels::adagrad`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct AdaGradConstants {
    /// ε.
    pub eps: f32,
    /// Coupled L2 weight decay.
    pub weight_decay: f32,
    /// Whether the weight decay applies.
    pub decays: bool,
    /// The decayed learning rate.
    pub clr: f32,
}

/// How Adan's weight decay enters (see [`kernels::adan`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum AdanDecay {
    /// No decay.
    None,
    /// `θ·keep − δ` (`no_prox`).
    Scale(f32),
    /// `(θ − δ)/prox` (proximal).
    Proximal(f32),
}

/// Constants of one Adan step (see [`kernels::adan`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct AdanConstants {
    /// β1, β2, β3 (EMA decays) and 1 − β1, 1 − β2, 1 − β3.
    pub decays: [f32; 6],
    /// `1 − β1ᵗ`, `1 − β2ᵗ`, `√(1 − β3ᵗ)`.
    pub bias: [f32; 3],
    /// ε.
    pub eps: f32,
    /// The learning rate.
    pub lr: f32,
    /// The first step (the states are set, not updated).
    pub first: bool,
    /// The weight decay.
    pub decay: AdanDecay,
}

/// Constants of one AdaHessian step (power 1; see `cube::kernels::adahessian`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct AdaHessianConstants {
    /// β1, β2, 1 − β1, 1 − β2.
    pub moments: [f32; 4],
    /// `1 − β2ᵗ`.
    pub bias_2: f32,
    /// ε.
    pub eps: f32,
    /// `lr/(1 − β1ᵗ)`.
    pub step: f32,
    /// The factor `1 − lr·wd` of θ.
    pub keep: f32,
    /// Whether `keep` applies.
    pub decays: bool,
}

/// Constants of one Sophia step (see `cube::kernels::sophia`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum SophiaConstants {
    /// Sophia-G: `θ·keep − lr·clamp(m/(h·scale + 1e-15), −1, 1)`.
    G {
        /// β1 and 1 − β1.
        beta: [f32; 2],
        /// The factor `1 − lr·wd` of θ.
        keep: f32,
        /// `ρ·batch size`.
        scale: f32,
        /// The learning rate.
        lr: f32,
    },
    /// Sophia-H: `θ − lr·(clamp((μ/bias)/max(γh, ε), ±limit) + wd·θ)`.
    H {
        /// β1 and 1 − β1.
        beta: [f32; 2],
        /// `1 − β1ᵗ`.
        bias: f32,
        /// γ.
        gamma: f32,
        /// ε.
        eps: f32,
        /// The clip threshold.
        limit: f32,
        /// The weight decay.
        wd: f32,
        /// The learning rate.
        lr: f32,
    },
}

/// Constants of one global AdaGrad-Norm step (see `cube::kernels::adagrad_norm`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct AdaGradNormConstants {
    /// μ and 1 − μ when momentum is on.
    pub momentum: Option<[f32; 2]>,
    /// `lr/√(acc) + …`: the step's scale of the direction.
    pub scale: f32,
    /// The weight decay's factor of g.
    pub decay: f32,
    /// Whether the decay applies.
    pub decays: bool,
}

/// Constants of one per-row AdaGrad-Norm step (see `cube::kernels::adagrad_norm_rows` and
/// `cube::kernels::adagrad_norm_elements`): `θ −= (dir/den)·clr`, then `θ −= decay·g`, with
/// `dir = buf = μ·buf + (1−μ)·g` under momentum and `dir = g` otherwise.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct AdaGradNormRowConstants {
    /// μ and 1 − μ when momentum is on.
    pub momentum: Option<[f32; 2]>,
    /// The step's learning rate after `lr_decay`.
    pub clr: f32,
    /// ε of `den = √acc + ε` (per-element accumulators; the broadcast `den` already has it).
    pub eps: f32,
    /// The weight decay's factor of g (`clr·weight_decay`).
    pub decay: f32,
    /// Whether the decay applies.
    pub decays: bool,
    /// The columns of the `[rows, cols]` view over which a per-row `den` is broadcast (set by
    /// `cube::try_step_broadcast`; unused per element).
    pub cols: usize,
    /// Whether `den` has one entry per row (else per column; set with `cols`).
    pub along_rows: bool,
}
