//! Hutchinson's estimator of the Hessian diagonal and of per-parameter traces.
//!
//! For Rademacher `z` (independent ±1 entries), `E[z ⊙ Hz] = diag(H)` and `E[zᵀHz] = tr(H)`
//! (Hutchinson 1989; Bekas, Kokiopoulou & Saad 2007 for the diagonal). With `n` probes the
//! estimate is the mean over probes. For a separable objective (diagonal `H`) every probe gives
//! the exact diagonal, since `z_i² = 1`. `Hz` comes from [`hvp`](super::hvp::hvp).

use burn::module::Module;
use burn::optim::GradientsParams;

use super::directions::{hadamard, lincomb, rademacher};
use super::hvp::{StepSize, hvp};

/// The mean of `z ⊙ Hz` over `probes` Rademacher probes: an unbiased estimate of `diag(H)`,
/// one tensor per trainable parameter. Probes are drawn from the device RNG (seed it with
/// `Device::seed` for reproducibility). `grad` is as in [`hvp`].
///
/// # Panics
/// If `probes` is 0.
pub fn hutchinson_diagonal<M, F>(
    module: &M,
    probes: usize,
    rule: StepSize,
    mut grad: F,
) -> GradientsParams
where
    M: Module,
    F: FnMut(&M) -> GradientsParams,
{
    assert!(
        probes > 0,
        "hutchinson_diagonal: `probes` must be at least 1"
    );
    let mut sum: Option<GradientsParams> = None;
    for _ in 0..probes {
        let z = rademacher(module);
        let hz = hvp(module, &z, rule, &mut grad);
        let sample = hadamard(module, &z, &hz);
        sum = Some(match sum {
            None => sample,
            Some(acc) => lincomb(module, 1.0, &acc, 1.0, &sample),
        });
    }
    let sum = sum.expect("at least one probe");
    lincomb(module, 1.0 / probes as f64, &sum, 0.0, &sum)
}

/// Hutchinson's estimate of one parameter's Hessian-block trace `tr(H_pp)`.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamTrace {
    /// The parameter.
    pub id: burn::module::ParamId,
    /// Its number of elements (HAWQ-V2 ranks blocks by the average `trace / numel`).
    pub numel: usize,
    /// The estimated trace: the sum of the block's entries of the mean `z ⊙ Hz`.
    pub trace: f64,
}

/// Per-parameter Hessian traces, in module visit order: `tr(H_pp) ≈ mean over probes of
/// z_pᵀ(Hz)_p` with one Rademacher `z` over all parameters (the cross-block terms vanish in
/// expectation). This is the sensitivity HAWQ-V2 uses (Dong et al. 2020, Eq. 4–5). Same
/// arguments and requirements as [`hutchinson_diagonal`]; one device read-back.
pub fn hutchinson_traces<M, F>(
    module: &M,
    probes: usize,
    rule: StepSize,
    grad: F,
) -> Vec<ParamTrace>
where
    M: Module,
    F: FnMut(&M) -> GradientsParams,
{
    let diagonal = hutchinson_diagonal(module, probes, rule, grad);
    let mut sums = BlockSums {
        diagonal: &diagonal,
        blocks: Vec::new(),
        sums: Vec::new(),
    };
    module.visit(&mut sums);
    let BlockSums { blocks, sums, .. } = sums;
    let values = crate::host::host_values(sums);
    blocks
        .into_iter()
        .zip(values)
        .map(|((id, numel), trace)| ParamTrace { id, numel, trace })
        .collect()
}

struct BlockSums<'a> {
    diagonal: &'a GradientsParams,
    blocks: Vec<(burn::module::ParamId, usize)>,
    sums: Vec<burn::tensor::Tensor<1>>,
}

impl burn::module::ModuleVisitor for BlockSums<'_> {
    fn visit_float<const D: usize>(
        &mut self,
        param: &burn::module::Param<burn::tensor::Tensor<D>>,
    ) {
        if let Some(diag) = self.diagonal.get::<D>(param.id) {
            self.blocks.push((param.id, diag.shape().num_elements()));
            self.sums.push(diag.sum().reshape([1]));
        }
    }
}
