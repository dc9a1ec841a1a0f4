//! Finding the parameter whose gradient went non-finite.
//!
//! A NaN or Inf gradient silently poisons every optimizer's state. Call
//! [`find_non_finite_grad`] (or [`check_finite_grads`]) after `backward` to get the parameter's
//! module path, e.g. `encoder.fc1.weight`, and skip or abort the step.

use std::fmt;

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::Tensor;

/// A parameter whose gradient holds NaN or ±Inf values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NonFiniteGrad {
    /// The parameter's path in the module, dot-separated (e.g. `fc.weight`).
    pub path: String,
    /// Number of NaN elements in its gradient.
    pub nan: usize,
    /// Number of ±Inf elements in its gradient.
    pub inf: usize,
}

impl fmt::Display for NonFiniteGrad {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "non-finite gradient for parameter `{}`: {} NaN and {} Inf values",
            self.path, self.nan, self.inf
        )
    }
}

impl std::error::Error for NonFiniteGrad {}

/// The first parameter of `module` (in visiting order) whose gradient has a NaN or Inf element.
pub fn find_non_finite_grad<M: Module>(
    module: &M,
    grads: &GradientsParams,
) -> Option<NonFiniteGrad> {
    let mut visitor = FirstNonFinite {
        grads,
        path: Vec::new(),
        found: None,
    };
    module.visit(&mut visitor);
    visitor.found
}

/// `Ok(())` when every gradient is finite, else the first offending parameter as an error.
pub fn check_finite_grads<M: Module>(
    module: &M,
    grads: &GradientsParams,
) -> Result<(), NonFiniteGrad> {
    match find_non_finite_grad(module, grads) {
        Some(bad) => Err(bad),
        None => Ok(()),
    }
}

struct FirstNonFinite<'a> {
    grads: &'a GradientsParams,
    path: Vec<String>,
    found: Option<NonFiniteGrad>,
}

fn count(mask: Tensor<1, burn::tensor::Bool>) -> usize {
    mask.int().sum().into_scalar::<i64>() as usize
}

impl ModuleVisitor for FirstNonFinite<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if self.found.is_some() {
            return;
        }
        let Some(grad) = self.grads.get::<D>(param.id) else {
            return;
        };
        let flat = grad.flatten::<1>(0, D.saturating_sub(1));
        if flat.clone().is_finite().all().into_scalar::<bool>() {
            return;
        }
        self.found = Some(NonFiniteGrad {
            path: self.path.join("."),
            nan: count(flat.clone().is_nan()),
            inf: count(flat.is_inf()),
        });
    }
}
