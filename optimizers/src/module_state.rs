//! Per-parameter state for module-level optimizers (those that need more than Burn's
//! per-tensor [`Optimizer`](burn::optim::Optimizer) sees: Hessian estimates, batch sizes,
//! whole-step statistics). States are kept flattened to 1-D and keyed by [`ParamId`], so one map
//! holds parameters of every rank.

use std::collections::HashMap;

use burn::module::{Param, ParamId};
use burn::tensor::Tensor;

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

/// Counts of coordinates a clipped step left unclipped, summed over parameters on the device
/// (nothing is read back here). A disabled counter only counts the coordinates.
#[derive(Debug, Default)]
pub(crate) struct UnclippedCounter {
    enabled: bool,
    counts: Vec<Tensor<1>>,
    total: usize,
}

impl UnclippedCounter {
    /// A counter that counts (`enabled`) or only totals coordinates.
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            ..Self::default()
        }
    }

    /// Adds the coordinates of `ratio` whose magnitude is below `limit`.
    pub fn add<const D: usize>(&mut self, ratio: Tensor<D>, limit: f64) {
        self.total += ratio.shape().num_elements();
        if self.enabled {
            self.counts
                .push(ratio.abs().lower_elem(limit).float().sum());
        }
    }

    /// Adds `counted` unclipped coordinates out of `total`, counted on the host (the fused path).
    pub fn add_counted(&mut self, counted: usize, total: usize, device: &burn::tensor::Device) {
        self.total += total;
        if self.enabled {
            self.counts
                .push(Tensor::from_data([counted as f32], device));
        }
    }

    /// The unclipped count as a one-element device tensor (not read back: no synchronisation),
    /// or `None` when disabled or nothing was counted, and the total number of coordinates.
    pub fn finish(self) -> (Option<Tensor<1>>, usize) {
        let count = (!self.counts.is_empty()).then(|| Tensor::cat(self.counts, 0).sum());
        (count, self.total)
    }
}

impl FlatStates {
    /// Adds every parameter's state tensors to `record`, named `"{param_id}.{index}"`.
    pub fn push_into(&self, record: &mut crate::record::StateRecord) {
        for (id, tensors) in &self.0 {
            for (index, tensor) in tensors.iter().enumerate() {
                record.push_tensor(format!("{}.{index}", id.val()), Some(*id), tensor.clone());
            }
        }
    }

    /// Takes every per-parameter tensor out of `record` (written by [`push_into`](Self::push_into))
    /// onto `device`. The error names a tensor whose name has no index or whose indices have gaps.
    pub fn take_from(
        record: &mut crate::record::StateRecord,
        device: &burn::tensor::Device,
    ) -> Result<Self, String> {
        let mut indexed: HashMap<ParamId, Vec<(usize, Tensor<1>)>> = HashMap::new();
        for (id, name) in record.param_tensors() {
            let index = name
                .rsplit_once('.')
                .and_then(|(_, index)| index.parse::<usize>().ok())
                .ok_or_else(|| format!("optimizer record tensor `{name}` has no state index"))?;
            let tensor = record.take_tensor::<1>(&name, device)?;
            indexed.entry(id).or_default().push((index, tensor));
        }
        let mut states = HashMap::new();
        for (id, mut tensors) in indexed {
            tensors.sort_by_key(|(index, _)| *index);
            if tensors
                .iter()
                .enumerate()
                .any(|(i, (index, _))| i != *index)
            {
                return Err(format!(
                    "optimizer record: the state tensors of parameter {} are not numbered 0..{}",
                    id.val(),
                    tensors.len()
                ));
            }
            states.insert(id, tensors.into_iter().map(|(_, t)| t).collect());
        }
        Ok(Self(states))
    }
}

/// The record of an optimizer whose state is a step count plus per-parameter tensors.
pub(crate) fn counted_record(time: usize, states: &FlatStates) -> crate::record::StateRecord {
    let mut record = crate::record::StateRecord::default();
    record.push_count("time", time);
    states.push_into(&mut record);
    record
}

/// The step count (0 in a record of an optimizer that never stepped) and per-parameter tensors
/// of a record written by [`counted_record`].
pub(crate) fn from_counted_record(
    mut record: crate::record::StateRecord,
    device: &burn::tensor::Device,
) -> Result<(usize, FlatStates), String> {
    let time = record.count("time").unwrap_or(0);
    Ok((time, FlatStates::take_from(&mut record, device)?))
}
