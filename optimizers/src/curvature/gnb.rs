//! The Gauss-Newton-Bartlett (GNB) estimator of the Gauss-Newton diagonal for softmax /
//! cross-entropy heads, as used by Sophia-G.
//!
//! Liu, Li, Hall, Liang, Ma, *Sophia: A Scalable Stochastic Second-order Optimizer for Language
//! Model Pre-training*, ICLR 2024 (arXiv:2305.14342), Algorithm 2: sample labels `ŷ_b` from the
//! model's own predicted distribution `softmax(logits_b)`, take the gradient `ĝ` of the **mean**
//! cross-entropy on the sampled labels, and estimate `diag(GN) ≈ B · ĝ ⊙ ĝ`, where `B` is the number
//! of examples (tokens) in the mean. By Bartlett's identity `E_ŷ[∇ℓ(ŷ)] = 0` per example, so the
//! cross terms vanish in expectation and `E[B·ĝ⊙ĝ] = (1/B)·Σ_b diag(J_bᵀ (diag(p_b) − p_b p_bᵀ) J_b)`,
//! the Gauss-Newton diagonal of the mean loss.
//!
//! Use: `let labels = sample_labels(logits.clone().detach());` then compute the mean cross-entropy of
//! `logits` against `labels`, backward, and pass its [`GradientsParams`] to [`gnb_diagonal`].

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::{Distribution, Int, Tensor};

use super::directions::{hadamard, lincomb};

/// One label per row, drawn from `softmax(logits)` by the Gumbel-max trick:
/// `argmax_k(logits_k + G_k)` with `G = −ln(−ln U)`, `U ~ Uniform[ε_f32, 1)` (the lower bound only
/// keeps `ln` finite: it removes the Gumbel tail below `−ln(−ln ε_f32) ≈ −2.77`, an event of
/// probability ε_f32 ≈ 1.2e-7 per entry). Draws from the device RNG. Pass detached logits (`logits.clone().detach()`).
pub fn sample_labels(logits: Tensor<2>) -> Tensor<1, Int> {
    let uniform = Tensor::<2>::random(
        logits.shape(),
        Distribution::Uniform(f32::EPSILON as f64, 1.0),
        &logits.device(),
    );
    let gumbel = uniform.log().neg().log().neg();
    (logits + gumbel).argmax(1).squeeze_dim(1)
}

/// `B · ĝ ⊙ ĝ` per parameter of `module`, where `sampled_grads` is the gradient of the mean
/// cross-entropy over `batch_size` examples on labels from [`sample_labels`].
///
/// # Panics
/// If `batch_size` is 0.
pub fn gnb_diagonal<M: Module>(
    module: &M,
    sampled_grads: &GradientsParams,
    batch_size: usize,
) -> GradientsParams {
    assert!(
        batch_size > 0,
        "gnb_diagonal: `batch_size` must be at least 1"
    );
    let squared = hadamard(module, sampled_grads, sampled_grads);
    lincomb(module, batch_size as f64, &squared, 0.0, &squared)
}
