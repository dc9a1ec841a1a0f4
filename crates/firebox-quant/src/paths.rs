//! Module traversal by parameter path (`blocks.0.fc1.weight`), the one place that tracks it.
//!
//! Burn's `ModuleMapper` / `ModuleVisitor` report the path piecewise (`enter_module` /
//! `exit_module`); the passes of this crate only want "this parameter, at this path". They
//! implement [`MapAtPath`] or [`VisitAtPath`] and run through [`map_at_paths`] /
//! [`visit_at_paths`].

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::Tensor;

/// Replaces float parameters given their path.
pub(crate) trait MapAtPath {
    /// The parameter at `path` (joined with `.`), mapped.
    fn map_at<const D: usize>(&mut self, path: &str, param: Param<Tensor<D>>) -> Param<Tensor<D>>;
}

/// Reads float parameters given their path.
pub(crate) trait VisitAtPath {
    /// The parameter at `path` (joined with `.`).
    fn visit_at<const D: usize>(&mut self, path: &str, param: &Param<Tensor<D>>);
}

struct Tracked<'a, T> {
    path: Vec<String>,
    inner: &'a mut T,
}

impl<T: MapAtPath> ModuleMapper for Tracked<'_, T> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let path = self.path.join(".");
        self.inner.map_at(&path, param)
    }
}

impl<T: VisitAtPath> ModuleVisitor for Tracked<'_, T> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let path = self.path.join(".");
        self.inner.visit_at(&path, param);
    }
}

/// `model` with every float parameter passed through `mapper` with its path.
pub(crate) fn map_at_paths<M: Module, T: MapAtPath>(model: M, mapper: &mut T) -> M {
    model.map(&mut Tracked {
        path: Vec::new(),
        inner: mapper,
    })
}

/// Shows every float parameter of `model` to `visitor` with its path.
pub(crate) fn visit_at_paths<M: Module, T: VisitAtPath>(model: &M, visitor: &mut T) {
    model.visit(&mut Tracked {
        path: Vec::new(),
        inner: visitor,
    });
}
