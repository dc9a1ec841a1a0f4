//! Adapter files: only the adapter tensors, as safetensors written through Burn's store (keys
//! are module paths, `blocks.0.attn.q.weight.lora.default.a`, `pools.0.a`), plus a JSON config
//! beside them, in one directory (as peft's `save_pretrained`):
//!
//! - `adapter_model.safetensors`: the tensors (Burn's store writes it atomically: a scratch
//!   file renamed into place);
//! - `adapter_config.json`: [`AdapterFile`] (written to a scratch file and renamed, too).
//!
//! Loading onto a freshly built base model re-attaches the adapters from the config, then
//! checks every tensor against the model before touching it: a missing or unexpected tensor, or
//! one whose shape differs (a base model of another size), is an error naming the layer and
//! both shapes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleDisplay, ModuleMapper, Param};
use burn::tensor::{Tensor, TensorData};
use burn_store::{ModuleSnapshot, ModuleStore, SafetensorsStore};
use serde::{Deserialize, Serialize};

use crate::AdapterError;
use crate::control::inspect;
use crate::lora::{LoraAdapters, float_params};
use crate::mos::{MosConfig, MosLayer, MosModel, ShardPool};

/// File name of the adapter tensors inside an adapter directory.
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";
/// File name of the adapter config inside an adapter directory.
pub const CONFIG_FILE: &str = "adapter_config.json";
/// The `format` field of [`AdapterFile`].
pub const FORMAT: &str = "firebox-adapters/1";

/// What `adapter_config.json` holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdapterFile {
    /// Always [`FORMAT`].
    pub format: String,
    /// The adapters.
    pub adapters: AdapterKind,
}

/// LoRA or MoS, with everything needed to rebuild the adapter on a base model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum AdapterKind {
    /// Named LoRA adapters.
    Lora(LoraAdapters),
    /// MoS: its config, scaling and every layer's routing.
    Mos {
        /// The hyperparameters.
        config: MosConfig,
        /// `alpha / r`.
        scaling: f64,
        /// Routing of each adapted layer.
        layers: Vec<MosLayer>,
    },
}

fn io_error(path: &Path, message: impl std::fmt::Display) -> AdapterError {
    AdapterError::Io {
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

fn write_config(dir: &Path, file: &AdapterFile) -> Result<(), AdapterError> {
    std::fs::create_dir_all(dir).map_err(|e| io_error(dir, format!("cannot create: {e}")))?;
    let path = dir.join(CONFIG_FILE);
    let scratch = dir.join(format!(".{CONFIG_FILE}.{}.tmp", std::process::id()));
    let text = serde_json::to_string_pretty(file).map_err(|e| io_error(&path, e))?;
    std::fs::write(&scratch, text).map_err(|e| io_error(&scratch, format!("cannot write: {e}")))?;
    std::fs::rename(&scratch, &path)
        .map_err(|e| io_error(&path, format!("cannot rename into place: {e}")))
}

/// Reads `adapter_config.json` of an adapter directory.
pub fn read_config(dir: impl AsRef<Path>) -> Result<AdapterFile, AdapterError> {
    let path = dir.as_ref().join(CONFIG_FILE);
    let text =
        std::fs::read_to_string(&path).map_err(|e| io_error(&path, format!("cannot read: {e}")))?;
    let file: AdapterFile = serde_json::from_str(&text)
        .map_err(|e| io_error(&path, format!("not an adapter config: {e}")))?;
    if file.format != FORMAT {
        return Err(io_error(
            &path,
            format!("format `{}`, expected `{FORMAT}`", file.format),
        ));
    }
    Ok(file)
}

fn save_tensors<M: Module>(model: &M, pattern: &str, dir: &Path) -> Result<PathBuf, AdapterError> {
    std::fs::create_dir_all(dir).map_err(|e| io_error(dir, format!("cannot create: {e}")))?;
    let path = dir.join(WEIGHTS_FILE);
    let mut store = SafetensorsStore::from_file(&path)
        .with_regex(pattern)
        .overwrite(true)
        .metadata("firebox", FORMAT);
    model
        .save_into(&mut store)
        .map_err(|e| io_error(&path, e))?;
    Ok(path)
}

/// Loads every float parameter of `model` selected by `select` from the directory's tensor file,
/// after checking names and shapes; `split` turns a key into (layer, tensor) for messages.
fn load_tensors<M: Module>(
    model: M,
    dir: &Path,
    select: impl Fn(&str) -> bool,
    split: impl Fn(&str) -> (String, String),
) -> Result<M, AdapterError> {
    let path = dir.join(WEIGHTS_FILE);
    if !path.exists() {
        return Err(io_error(&path, "no such adapter file"));
    }
    let mut store = SafetensorsStore::from_file(&path);
    let stored = store.get_all_tensors().map_err(|e| io_error(&path, e))?;
    let mut data = HashMap::new();
    for (key, tensor) in stored {
        if select(key) {
            let values = burn_store::bridge::to_data(tensor)
                .map_err(|e| io_error(&path, format!("{key}: {e}")))?;
            data.insert(key.clone(), values);
        }
    }
    let expected: Vec<(String, Vec<usize>)> = float_params(&model)
        .into_iter()
        .filter(|(p, _)| select(p))
        .collect();
    if let Some(key) = expected
        .iter()
        .map(|(k, _)| k)
        .find(|k| !data.contains_key(*k))
    {
        let (layer, tensor) = split(key);
        return Err(AdapterError::MissingTensor(format!(
            "{}: layer `{layer}` has adapter tensor `{tensor}` but the file lacks `{key}`",
            path.display()
        )));
    }
    assign_checked(model, expected, data, split, |extra| {
        AdapterError::MissingTensor(format!(
            "{}: the file holds `{extra}` but the model has no such adapter tensor (built with other targets?)",
            path.display()
        ))
    })
}

/// Replaces float parameters of `model` by path (e.g. adapter factors converted from another
/// library): every key must name a float parameter of the model with the same shape, else an
/// error names it, and the model is untouched. Gradient tracking of each parameter is kept.
pub fn assign_tensors<M: Module>(
    model: M,
    tensors: HashMap<String, TensorData>,
) -> Result<M, AdapterError> {
    let params = float_params(&model);
    assign_checked(model, params, tensors, split_lora_key, |key| {
        AdapterError::MissingTensor(format!("the model has no float parameter `{key}`"))
    })
}

/// Checks `tensors` against `params` (`(path, shape)` in module order: the first shape mismatch
/// in that order is reported, `split` naming its layer; a key outside `params` is `unknown`),
/// then writes them into `model`.
fn assign_checked<M: Module>(
    model: M,
    params: Vec<(String, Vec<usize>)>,
    tensors: HashMap<String, TensorData>,
    split: impl Fn(&str) -> (String, String),
    unknown: impl Fn(&str) -> AdapterError,
) -> Result<M, AdapterError> {
    for (key, shape) in &params {
        if let Some(data) = tensors.get(key)
            && data.shape().as_slice() != shape.as_slice()
        {
            let (layer, tensor) = split(key);
            return Err(AdapterError::ShapeMismatch {
                layer,
                tensor,
                model: shape.clone(),
                file: data.shape().as_slice().to_vec(),
            });
        }
    }
    if let Some(extra) = tensors
        .keys()
        .find(|k| !params.iter().any(|(p, _)| p == *k))
    {
        return Err(unknown(extra));
    }
    Ok(model.map(&mut Loader {
        path: Vec::new(),
        data: tensors,
    }))
}

struct Loader {
    path: Vec<String>,
    data: HashMap<String, TensorData>,
}

impl ModuleMapper for Loader {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(data) = self.data.remove(&self.path.join(".")) else {
            return param;
        };
        param.map(|old| {
            let require_grad = old.is_require_grad();
            Tensor::<D>::from_data(data, &old.device())
                .cast(old.dtype())
                .set_require_grad(require_grad)
        })
    }
}

fn is_lora_key(key: &str) -> bool {
    key.contains(".lora.") || key.starts_with("lora.")
}

fn split_lora_key(key: &str) -> (String, String) {
    match key.find("weight.lora.") {
        Some(at) => (
            key[..at].trim_end_matches('.').to_string(),
            key[at + "weight.".len()..].to_string(),
        ),
        None => (key.to_string(), String::new()),
    }
}

/// Saves the LoRA adapters of `model` (described by `adapters`, as attached) into `dir`.
pub fn save_lora<M: Module>(
    model: &M,
    adapters: &LoraAdapters,
    dir: impl AsRef<Path>,
) -> Result<(), AdapterError> {
    let dir = dir.as_ref();
    let layers = inspect(model);
    if layers.is_empty() {
        return Err(AdapterError::AdapterState(
            "the model carries no LoRA adapters to save".into(),
        ));
    }
    for a in &adapters.adapters {
        if !layers.iter().any(|l| l.names.contains(&a.name)) {
            return Err(AdapterError::UnknownAdapter {
                name: a.name.clone(),
                known: layers.iter().flat_map(|l| l.names.clone()).collect(),
            });
        }
    }
    save_tensors(model, r"(^|\.)lora\.", dir)?;
    write_config(
        dir,
        &AdapterFile {
            format: FORMAT.into(),
            adapters: AdapterKind::Lora(adapters.clone()),
        },
    )
}

/// Loads LoRA adapters from `dir` onto `model`: a model without adapters gets them attached from
/// the stored config first; one that has them gets their values replaced. Returns the model and
/// the adapters' description.
pub fn load_lora<M: Module>(
    model: M,
    dir: impl AsRef<Path>,
) -> Result<(M, LoraAdapters), AdapterError> {
    let dir = dir.as_ref();
    let AdapterFile {
        adapters: AdapterKind::Lora(adapters),
        ..
    } = read_config(dir)?
    else {
        return Err(io_error(
            &dir.join(CONFIG_FILE),
            "holds MoS adapters; use load_mos",
        ));
    };
    let model = if inspect(&model).is_empty() {
        adapters.attach(model)?
    } else {
        model
    };
    Ok((
        load_tensors(model, dir, is_lora_key, split_lora_key)?,
        adapters,
    ))
}

impl<M: Module + ModuleDisplay> MosModel<M> {
    /// Saves the pools and the routing (not the base model) into `dir`.
    pub fn save_adapter(
        &self,
        config: &MosConfig,
        dir: impl AsRef<Path>,
    ) -> Result<(), AdapterError> {
        let dir = dir.as_ref();
        save_tensors(self, r"^pools\.", dir)?;
        write_config(
            dir,
            &AdapterFile {
                format: FORMAT.into(),
                adapters: AdapterKind::Mos {
                    config: config.clone(),
                    scaling: self.scaling,
                    layers: self.layers.clone(),
                },
            },
        )
    }

    /// Rebuilds a MoS model from `dir` on a freshly built `base` (same routing, stored pools).
    pub fn load_adapter(base: M, dir: impl AsRef<Path>) -> Result<(Self, MosConfig), AdapterError> {
        let dir = dir.as_ref();
        let AdapterFile {
            adapters:
                AdapterKind::Mos {
                    config,
                    scaling,
                    layers,
                },
            ..
        } = read_config(dir)?
        else {
            return Err(io_error(
                &dir.join(CONFIG_FILE),
                "holds LoRA adapters; use load_lora",
            ));
        };
        // Check the base against the stored routing before building pools for it.
        let params = float_params(&base);
        for layer in &layers {
            let shape = params
                .iter()
                .find(|(p, _)| *p == layer.param)
                .map(|(_, s)| s.clone());
            match shape {
                None => {
                    return Err(AdapterError::MissingTensor(format!(
                        "the base model has no weight `{}` that the MoS adapter in {} adapts",
                        layer.param,
                        dir.display()
                    )));
                }
                Some(s) if s != [layer.d_in, layer.d_out] => {
                    return Err(AdapterError::ShapeMismatch {
                        layer: layer.param.trim_end_matches(".weight").to_string(),
                        tensor: "weight".into(),
                        model: s,
                        file: vec![layer.d_in, layer.d_out],
                    });
                }
                Some(_) => {}
            }
        }
        let device =
            base.devices().first().cloned().ok_or_else(|| {
                AdapterError::BadConfig("the base model has no parameters".into())
            })?;
        let n_pools = layers.iter().map(|l| l.pool + 1).max().unwrap_or(0);
        let pools = (0..n_pools)
            .map(|p| {
                let l = layers
                    .iter()
                    .find(|l| l.pool == p)
                    .expect("every pool has a layer");
                let per_type = layers.iter().filter(|m| m.pool == p).count();
                let rows = config.equivalent_rank * per_type * config.shards_per_vector;
                ShardPool {
                    a: Param::from_tensor(Tensor::zeros(
                        [rows, l.d_in / config.shards_per_vector],
                        &device,
                    )),
                    b: Param::from_tensor(Tensor::zeros(
                        [rows, l.d_out / config.shards_per_vector],
                        &device,
                    )),
                }
            })
            .collect();
        let model = MosModel::from_parts(base, scaling, pools, layers);
        let split = |key: &str| match key.rsplit_once('.') {
            Some((pool, t)) => (pool.to_string(), t.to_string()),
            None => (key.to_string(), String::new()),
        };
        let model = load_tensors(model, dir, |k| k.starts_with("pools."), split)?;
        Ok((model, config))
    }
}
