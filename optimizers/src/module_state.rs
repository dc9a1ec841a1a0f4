//! Per-parameter state for module-level optimizers (those that need more than Burn's
//! per-tensor [`Optimizer`](burn::optim::Optimizer) sees: Hessian estimates, batch sizes,
//! whole-step statistics). States are kept flattened to 1-D and keyed by [`ParamId`], so one map
//! holds parameters of every rank.

use std::collections::HashMap;

use burn::module::{Param, ParamId};
use burn::tensor::Tensor;

use crate::host::host_sum;

/// Flattened state tensors of every parameter seen so far.
#[derive(Clone, Debug, Default)]
pub(crate) struct FlatStates(HashMap<ParamId, Vec<Tensor<1>>>);

impl FlatStates {
    /// Replaces `param`'s value by `update(θ, state)`, where θ is the value without autodiff and
    /// `state` the parameter's state tensors reshaped to θ's shape (`None` on its first step).
    /// The new value keeps the parameter's id, autodiff association and `require_grad`; the
    /// returned state tensors are stored for the next step.
    pub fn update<const D: usize, F>(
        &mut self,
        param: Param<Tensor<D>>,
        update: F,
    ) -> Param<Tensor<D>>
    where
        F: FnOnce(Tensor<D>, Option<Vec<Tensor<D>>>) -> (Tensor<D>, Vec<Tensor<D>>),
    {
        let id = param.id;
        let previous = self.0.remove(&id);
        let mut stored = None;
        let param = map_value(param, |theta| {
            let shape = theta.shape();
            let state = previous.map(|tensors| {
                tensors
                    .into_iter()
                    .map(|t| t.reshape(shape.clone()))
                    .collect()
            });
            let (theta, state) = update(theta, state);
            let numel = shape.num_elements();
            stored = Some(state.into_iter().map(|t| t.reshape([numel])).collect());
            theta
        });
        if let Some(state) = stored {
            self.0.insert(id, state);
        }
        param
    }
}

/// Replaces a parameter's value by `f(θ)`, where θ is the value without autodiff. The new value is
/// a fresh leaf (no graph back to θ) that keeps the parameter's id, its autodiff association and
/// its `require_grad`.
pub(crate) fn map_value<const D: usize>(
    param: Param<Tensor<D>>,
    f: impl FnOnce(Tensor<D>) -> Tensor<D>,
) -> Param<Tensor<D>> {
    param.map(|value| {
        let (autodiff, require_grad) = (value.is_autodiff(), value.is_require_grad());
        let new = f(value.inner());
        match (autodiff, require_grad) {
            (true, true) => new.autodiff().require_grad(),
            (true, false) => new.autodiff(),
            _ => new,
        }
    })
}

impl FlatStates {
    /// The state tensors of `id`, if it has taken a step or been seeded.
    pub fn get_mut(&mut self, id: &ParamId) -> Option<&mut Vec<Tensor<1>>> {
        self.0.get_mut(id)
    }

    /// Inserts (or replaces) the state tensors of `id`.
    pub fn insert(&mut self, id: ParamId, state: Vec<Tensor<1>>) {
        self.0.insert(id, state);
    }
}

/// Counts of coordinates a clipped step left unclipped, summed over parameters with one device
/// read-back.
#[derive(Debug, Default)]
pub(crate) struct UnclippedCounter {
    counts: Vec<Tensor<1>>,
    total: usize,
}

impl UnclippedCounter {
    /// Adds the coordinates of `ratio` whose magnitude is below `limit`.
    pub fn add<const D: usize>(&mut self, ratio: Tensor<D>, limit: f64) {
        self.total += ratio.shape().num_elements();
        self.counts
            .push(ratio.abs().lower_elem(limit).float().sum());
    }

    /// `(unclipped, total)` coordinates.
    pub fn finish(self) -> (usize, usize) {
        // Each part is an exact integer below 2^24, so the f64 sum is exact.
        (host_sum(self.counts) as usize, self.total)
    }
}
