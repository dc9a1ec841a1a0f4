//! Model-wide adapter control (peft's `set_adapter`, `disable_adapter`, `merge_adapter`,
//! `unmerge_adapter`, `merge_and_unload`) over any Burn module.
//!
//! Burn's module traversal only hands tensors to a mapper; the adapter state of a layer
//! ([`LoraLayer::active`], [`LoraLayer::merged`]) lives in the reparameterization itself. So each
//! operation installs a command in a thread-local context and runs one traversal; every
//! [`LoraLayer`] met on the way applies the command to itself and reports back (with the
//! parameter path the traversal tracks). Merging needs a second traversal, because Burn maps a
//! parameter's base before its reparameterization: the first records each layer's `s·A·B`, the
//! second adds it to the base at the recorded path. Every operation first inspects the model and
//! refuses (with the model untouched) when it cannot apply.

use std::cell::RefCell;
use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::Tensor;

use crate::AdapterError;
use crate::lora_layer::LoraLayer;

#[derive(Clone, Debug)]
enum Command {
    Inspect,
    Activate(Option<String>),
    Merge,
    Unmerge,
}

/// One adapted weight as seen by [`inspect`].
#[derive(Clone, Debug, PartialEq)]
pub struct LayerAdapters {
    /// Path of the adapted parameter (`blocks.0.attn.q.weight`).
    pub param: String,
    /// The adapter names on this layer, in creation order.
    pub names: Vec<String>,
    /// The active adapter, if any.
    pub active: Option<String>,
    /// The adapter merged into the base, if any.
    pub merged: Option<String>,
    /// `(A shape, B shape)` per adapter, Burn orientation.
    pub shapes: Vec<([usize; 2], [usize; 2])>,
}

struct Context {
    command: Command,
    path: Vec<String>,
    layers: Vec<LayerAdapters>,
    deltas: HashMap<String, Tensor<2>>,
}

thread_local! {
    static CONTEXT: RefCell<Option<Context>> = const { RefCell::new(None) };
}

/// Runs `f` with `command` installed, removing it afterwards (also on panic).
fn with_command<R>(command: Command, f: impl FnOnce() -> R) -> (R, Context) {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            CONTEXT.with(|c| c.borrow_mut().take());
        }
    }
    CONTEXT.with(|c| {
        *c.borrow_mut() = Some(Context {
            command,
            path: Vec::new(),
            layers: Vec::new(),
            deltas: HashMap::new(),
        })
    });
    let reset = Reset;
    let result = f();
    let context = CONTEXT
        .with(|c| c.borrow_mut().take())
        .expect("context installed above");
    drop(reset);
    (result, context)
}

/// The path of the parameter owning the layer currently traversed (`…weight`; the traversal is
/// inside `…weight.lora`).
fn owner_path(path: &[String]) -> String {
    let end = path.len().saturating_sub(1);
    path[..end].join(".")
}

fn describe(layer: &LoraLayer, param: String) -> LayerAdapters {
    let name = |i: Option<usize>| i.map(|i| layer.slots[i].name.clone());
    LayerAdapters {
        param,
        names: layer.slots.iter().map(|s| s.name.clone()).collect(),
        active: name(layer.active),
        merged: name(layer.merged),
        shapes: layer
            .slots
            .iter()
            .map(|s| {
                let a = s.factors.a.lazy_shape();
                let b = s.factors.b.lazy_shape();
                ([a[0], a[1]], [b[0], b[1]])
            })
            .collect(),
    }
}

pub(crate) fn on_visit(layer: &LoraLayer) {
    CONTEXT.with(|c| {
        if let Some(context) = c.borrow_mut().as_mut() {
            let param = owner_path(&context.path);
            context.layers.push(describe(layer, param));
        }
    });
}

pub(crate) fn on_map(layer: &mut LoraLayer) {
    CONTEXT.with(|c| {
        let mut guard = c.borrow_mut();
        let Some(context) = guard.as_mut() else {
            return;
        };
        let param = owner_path(&context.path);
        match context.command.clone() {
            Command::Inspect => {}
            Command::Activate(name) => {
                layer.active = name.and_then(|n| layer.slots.iter().position(|s| s.name == n));
            }
            Command::Merge => {
                if let (Some(i), None) = (layer.active, layer.merged) {
                    context
                        .deltas
                        .insert(param.clone(), layer.delta_detached(i));
                    layer.merged = Some(i);
                }
            }
            Command::Unmerge => {
                if let Some(i) = layer.merged.take() {
                    context
                        .deltas
                        .insert(param.clone(), layer.delta_detached(i).neg());
                }
            }
        }
        context.layers.push(describe(layer, param));
    });
}

/// Tracks the module path in the thread-local context; maps nothing itself.
struct PathTracker;

fn push_path(name: &str) {
    CONTEXT.with(|c| {
        if let Some(context) = c.borrow_mut().as_mut() {
            context.path.push(name.to_string());
        }
    });
}

fn pop_path() {
    CONTEXT.with(|c| {
        if let Some(context) = c.borrow_mut().as_mut() {
            context.path.pop();
        }
    });
}

impl ModuleVisitor for PathTracker {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        push_path(name);
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        pop_path();
    }
}

impl ModuleMapper for PathTracker {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        push_path(name);
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        pop_path();
    }
}

/// Adds `deltas[path]` (reshaped and cast to the weight) to the float parameter at each path.
///
/// With `keep_graph` the sum stays on the deltas' autodiff graph (MoS's pools), so gradients
/// flow back through it; without, the deltas are detached and the sum is a plain weight with the
/// parameter's own gradient setting (a merge).
pub(crate) fn add_at_paths<M: Module>(
    model: M,
    deltas: HashMap<String, Tensor<2>>,
    keep_graph: bool,
) -> M {
    struct AddAtPaths {
        path: Vec<String>,
        deltas: HashMap<String, Tensor<2>>,
        keep_graph: bool,
    }
    impl ModuleMapper for AddAtPaths {
        fn enter_module(&mut self, name: &str, _container_type: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.pop();
        }
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let Some(delta) = self.deltas.remove(&self.path.join(".")) else {
                return param;
            };
            let keep_graph = self.keep_graph;
            param.map(|w| {
                let require_grad = w.is_require_grad();
                let delta = delta.reshape(w.shape()).cast(w.dtype());
                if keep_graph {
                    w.detach() + delta
                } else {
                    (w.detach() + delta.detach()).set_require_grad(require_grad)
                }
            })
        }
    }
    model.map(&mut AddAtPaths {
        path: Vec::new(),
        deltas,
        keep_graph,
    })
}

/// Every adapted weight of `model` with its adapters, active and merged ones, in module order.
pub fn inspect<M: Module>(model: &M) -> Vec<LayerAdapters> {
    let ((), context) = with_command(Command::Inspect, || model.visit(&mut PathTracker));
    context.layers
}

fn run<M: Module>(model: M, command: Command) -> (M, Context) {
    with_command(command, || model.map(&mut PathTracker))
}

fn require_adapters(layers: &[LayerAdapters], what: &str) -> Result<(), AdapterError> {
    if layers.is_empty() {
        return Err(AdapterError::AdapterState(format!(
            "cannot {what}: the model carries no LoRA adapters (attach them with LoraAdapters::attach)"
        )));
    }
    Ok(())
}

fn refuse_merged(layers: &[LayerAdapters], what: &str) -> Result<(), AdapterError> {
    if let Some(layer) = layers.iter().find(|l| l.merged.is_some()) {
        return Err(AdapterError::AdapterState(format!(
            "cannot {what} while adapter `{}` is merged into `{}`; unmerge first",
            layer.merged.as_deref().unwrap_or_default(),
            layer.param
        )));
    }
    Ok(())
}

/// Makes `name` the active adapter of every layer that has one by that name (peft's
/// `set_adapter`); layers without it pass their base weight through. Errors when no layer has
/// it or when an adapter is merged.
pub fn set_adapter<M: Module>(model: M, name: &str) -> Result<M, AdapterError> {
    let layers = inspect(&model);
    require_adapters(&layers, "set an adapter")?;
    refuse_merged(&layers, &format!("switch to adapter `{name}`"))?;
    if !layers.iter().any(|l| l.names.iter().any(|n| n == name)) {
        let mut known: Vec<String> = layers.iter().flat_map(|l| l.names.clone()).collect();
        known.sort();
        known.dedup();
        return Err(AdapterError::UnknownAdapter {
            name: name.to_string(),
            known,
        });
    }
    Ok(run(model, Command::Activate(Some(name.to_string()))).0)
}

/// Bypasses every adapter (peft's `disable_adapter()`): the model computes with its base weights
/// until [`set_adapter`] is called. Errors when an adapter is merged.
pub fn disable_adapters<M: Module>(model: M) -> Result<M, AdapterError> {
    let layers = inspect(&model);
    require_adapters(&layers, "disable adapters")?;
    refuse_merged(&layers, "disable adapters")?;
    Ok(run(model, Command::Activate(None)).0)
}

/// Adds `s·A·B` of the active adapter into each base weight (peft's `merge_adapter`); the
/// adapters stay attached (and stop contributing separately) until [`unmerge`].
pub fn merge<M: Module>(model: M) -> Result<M, AdapterError> {
    let layers = inspect(&model);
    require_adapters(&layers, "merge")?;
    refuse_merged(&layers, "merge again")?;
    if layers.iter().all(|l| l.active.is_none()) {
        return Err(AdapterError::AdapterState(
            "cannot merge: every adapter is disabled; call set_adapter first".into(),
        ));
    }
    let (model, context) = run(model, Command::Merge);
    Ok(add_at_paths(model, context.deltas, false))
}

/// Subtracts the merged adapter's `s·A·B` from each base weight again (peft's
/// `unmerge_adapter`): the base returns to its value before [`merge`] up to f32 rounding.
pub fn unmerge<M: Module>(model: M) -> Result<M, AdapterError> {
    let layers = inspect(&model);
    require_adapters(&layers, "unmerge")?;
    if layers.iter().all(|l| l.merged.is_none()) {
        return Err(AdapterError::AdapterState(
            "cannot unmerge: no adapter is merged".into(),
        ));
    }
    let (model, context) = run(model, Command::Unmerge);
    Ok(add_at_paths(model, context.deltas, false))
}

/// Merges the active adapter and removes every adapter (peft's `merge_and_unload`): the result
/// has exactly the base model's parameters and keys, through Burn's [`Module::materialize`].
pub fn merge_and_unload<M: Module>(model: M) -> Result<M, AdapterError> {
    let layers = inspect(&model);
    require_adapters(&layers, "merge and unload")?;
    let merged_already = layers.iter().any(|l| l.merged.is_some());
    let model = if merged_already || layers.iter().all(|l| l.active.is_none()) {
        model
    } else {
        merge(model)?
    };
    Ok(model.materialize())
}

/// Adapter control as methods on any Burn module (`model.set_adapter("b")?`).
pub trait AdapterControl: Module + Sized {
    /// See [`set_adapter`].
    fn set_adapter(self, name: &str) -> Result<Self, AdapterError> {
        set_adapter(self, name)
    }
    /// See [`disable_adapters`].
    fn disable_adapters(self) -> Result<Self, AdapterError> {
        disable_adapters(self)
    }
    /// See [`merge`].
    fn merge_adapter(self) -> Result<Self, AdapterError> {
        merge(self)
    }
    /// See [`unmerge`].
    fn unmerge_adapter(self) -> Result<Self, AdapterError> {
        unmerge(self)
    }
    /// See [`merge_and_unload`].
    fn merge_and_unload(self) -> Result<Self, AdapterError> {
        merge_and_unload(self)
    }
    /// See [`inspect`].
    fn adapters(&self) -> Vec<LayerAdapters> {
        inspect(self)
    }
}

impl<M: Module> AdapterControl for M {}
