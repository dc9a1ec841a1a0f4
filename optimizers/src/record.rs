//! Saving and restoring the state of the module-level optimizers (AdaHessian, Sophia, M-FAC,
//! AdaGrad-Norm), which keep state Burn's per-tensor [`OptimizerRecord`](burn::optim::OptimizerRecord)
//! cannot be built from outside Burn.
//!
//! A [`StateRecord`] uses the same burnpack layout as Burn's optimizer records: per-parameter
//! tensors are named `"{param_id}.{field}"` and carry the parameter id, whole-model tensors are
//! named by their field, and counters are typed scalars. [`ModuleState::save`] writes it
//! atomically (temporary file, fsync, rename: see [`crate::checkpoint`]); [`ModuleState::load`]
//! reads the whole file before returning.
//!
//! ```no_run
//! # use firebox_optim::record::ModuleState;
//! # use firebox_optim::sophia::SophiaGConfig;
//! # let device = burn::tensor::Device::flex();
//! let optimizer = SophiaGConfig::new().init();
//! // ... training steps ...
//! optimizer.save("checkpoints/optim.bpk")?;
//! let resumed = SophiaGConfig::new().init().load("checkpoints/optim.bpk", &device)?;
//! # Ok::<(), String>(())
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::ParamId;
use burn::tensor::{Bytes, Device, Tensor, TensorData};
use burn_pack::{Reader, Scalar, Writer};

use crate::checkpoint::write_atomic;

/// Named tensors and scalars of one optimizer's state, in burnpack form.
#[derive(Debug, Default)]
pub struct StateRecord {
    tensors: BTreeMap<String, (Option<u64>, TensorData)>,
    scalars: BTreeMap<String, Scalar>,
}

impl StateRecord {
    /// Adds a tensor named `name`, tagged with the parameter it belongs to (if any).
    pub fn push_tensor<const D: usize>(
        &mut self,
        name: impl Into<String>,
        param: Option<ParamId>,
        tensor: Tensor<D>,
    ) {
        self.tensors
            .insert(name.into(), (param.map(|id| id.val()), tensor.into_data()));
    }

    /// Adds an unsigned counter.
    pub fn push_count(&mut self, name: &str, value: usize) {
        self.scalars.insert(name.into(), Scalar::UInt(value as u64));
    }

    /// Adds a float scalar.
    pub fn push_float(&mut self, name: &str, value: f64) {
        self.scalars.insert(name.into(), Scalar::Float(value));
    }

    /// Removes and returns the tensor `name` on `device`; the error names a missing tensor or a
    /// rank mismatch.
    pub fn take_tensor<const D: usize>(
        &mut self,
        name: &str,
        device: &Device,
    ) -> Result<Tensor<D>, String> {
        let (_, data) = self
            .tensors
            .remove(name)
            .ok_or_else(|| format!("optimizer record has no tensor `{name}`"))?;
        if data.shape().len() != D {
            return Err(format!(
                "optimizer record tensor `{name}` has rank {}, expected {D}",
                data.shape().len()
            ));
        }
        Ok(Tensor::from_data(data, device))
    }

    /// The counter `name`; the error names a missing or non-integer scalar.
    pub fn count(&self, name: &str) -> Result<usize, String> {
        match self.scalars.get(name) {
            Some(Scalar::UInt(v)) => Ok(*v as usize),
            Some(other) => Err(format!(
                "optimizer record scalar `{name}` is {other:?}, expected a count"
            )),
            None => Err(format!("optimizer record has no scalar `{name}`")),
        }
    }

    /// The float scalar `name`; the error names a missing or non-float scalar.
    pub fn float(&self, name: &str) -> Result<f64, String> {
        match self.scalars.get(name) {
            Some(Scalar::Float(v)) => Ok(*v),
            Some(other) => Err(format!(
                "optimizer record scalar `{name}` is {other:?}, expected a float"
            )),
            None => Err(format!("optimizer record has no scalar `{name}`")),
        }
    }

    /// Every per-parameter tensor: `(param_id, name)` pairs, in name order.
    pub fn param_tensors(&self) -> Vec<(ParamId, String)> {
        self.tensors
            .iter()
            .filter_map(|(name, (id, _))| id.map(|id| (ParamId::from(id), name.clone())))
            .collect()
    }

    /// Serializes to burnpack bytes.
    pub fn into_bytes(self) -> Result<Bytes, String> {
        let tensors = self
            .tensors
            .into_iter()
            .map(|(name, (param_id, data))| {
                let (bytes, shape, dtype) = data.into_parts();
                burn_pack::Tensor::new(name, dtype, shape, param_id, bytes)
            })
            .collect();
        let mut writer = Writer::new(tensors);
        for (key, value) in &self.scalars {
            writer = writer.with_scalar(key, *value);
        }
        writer
            .into_bytes()
            .map_err(|e| format!("cannot serialize optimizer record: {e}"))
    }

    /// Parses burnpack bytes.
    pub fn from_bytes(bytes: Bytes) -> Result<Self, String> {
        let reader =
            Reader::from_bytes(bytes).map_err(|e| format!("invalid optimizer record: {e}"))?;
        let scalars = reader.scalars().clone();
        let mut tensors = BTreeMap::new();
        for tensor in reader
            .into_tensors()
            .map_err(|e| format!("invalid optimizer record: {e}"))?
        {
            let (name, dtype, shape, param_id, bytes) = tensor
                .into_parts()
                .map_err(|e| format!("invalid optimizer record tensor: {e}"))?;
            tensors.insert(
                name,
                (param_id, TensorData::from_bytes(bytes, shape, dtype)),
            );
        }
        Ok(Self { tensors, scalars })
    }
}

/// State save/restore for an optimizer that steps a whole module.
pub trait ModuleState: Sized {
    /// The state as a record.
    fn to_record(&self) -> StateRecord;

    /// This optimizer with the state of `record` on `device`; the error names what is missing or
    /// malformed. The configuration is the receiver's, as with Burn's `load_record`.
    fn load_record(self, record: StateRecord, device: &Device) -> Result<Self, String>;

    /// Saves the state to `path` atomically; on error the previous file is left as it was.
    fn save(&self, path: impl AsRef<Path>) -> Result<(), String> {
        let bytes = self.to_record().into_bytes()?;
        write_atomic(path.as_ref(), &bytes)
    }

    /// Loads the state saved by [`save`](Self::save), reading the file completely first.
    fn load(self, path: impl AsRef<Path>, device: &Device) -> Result<Self, String> {
        let path = path.as_ref();
        let bytes = std::fs::read(path)
            .map_err(|e| format!("cannot read optimizer checkpoint {}: {e}", path.display()))?;
        let record = StateRecord::from_bytes(Bytes::from_bytes_vec(bytes))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        self.load_record(record, device)
            .map_err(|e| format!("{}: {e}", path.display()))
    }
}
