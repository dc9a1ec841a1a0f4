//! Parameter-shaped direction sets: one tensor per float parameter of a module, keyed by
//! [`ParamId`](burn::module::ParamId) in a [`GradientsParams`], like a gradient.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Distribution, Tensor};

use crate::host::host_sum;
use crate::module_state::map_value;

/// Rademacher probes (each element ±1 with probability ½) shaped like every trainable float
/// parameter of `module`, on the parameters' inner (non-autodiff) device. Draws from the device's
/// RNG: seed it with `Device::seed` for reproducible probes.
pub fn rademacher<M: Module>(module: &M) -> GradientsParams {
    let mut visitor = Rademacher {
        out: GradientsParams::new(),
    };
    module.visit(&mut visitor);
    visitor.out
}

struct Rademacher {
    out: GradientsParams,
}

impl ModuleVisitor for Rademacher {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let value = param.val();
        if !value.is_require_grad() {
            return;
        }
        let device = value.device().inner();
        let bits = Tensor::<D>::random(value.shape(), Distribution::Bernoulli(0.5), &device);
        self.out
            .register(param.id, bits.mul_scalar(2.0).sub_scalar(1.0));
    }
}

/// Σ over parameters of `Σ a ⊙ b`, for the parameters of `module` present in both sets, summed
/// on the host in f64.
pub fn dot<M: Module>(module: &M, a: &GradientsParams, b: &GradientsParams) -> f64 {
    let mut visitor = Combine {
        a,
        b,
        op: Op::Dot,
        out: GradientsParams::new(),
        sums: Vec::new(),
    };
    module.visit(&mut visitor);
    host_sum(visitor.sums)
}

/// `alpha·a + beta·b` per parameter, for the parameters of `module` present in both sets.
pub fn lincomb<M: Module>(
    module: &M,
    alpha: f64,
    a: &GradientsParams,
    beta: f64,
    b: &GradientsParams,
) -> GradientsParams {
    let mut visitor = Combine {
        a,
        b,
        op: Op::Lincomb(alpha, beta),
        out: GradientsParams::new(),
        sums: Vec::new(),
    };
    module.visit(&mut visitor);
    visitor.out
}

/// `a ⊙ b` per parameter, for the parameters of `module` present in both sets.
pub fn hadamard<M: Module>(
    module: &M,
    a: &GradientsParams,
    b: &GradientsParams,
) -> GradientsParams {
    let mut visitor = Combine {
        a,
        b,
        op: Op::Hadamard,
        out: GradientsParams::new(),
        sums: Vec::new(),
    };
    module.visit(&mut visitor);
    visitor.out
}

/// The L2 norm of `module`'s trainable float parameters, summed on the host in f64.
pub fn param_norm<M: Module>(module: &M) -> f64 {
    let mut visitor = ParamSquares { sums: Vec::new() };
    module.visit(&mut visitor);
    host_sum(visitor.sums).sqrt()
}

/// A copy of `module` with every parameter that has a direction moved to `θ + scale·v`.
/// Parameters keep their ids and their `require_grad` state, so gradients of the copy are keyed
/// like gradients of `module`.
pub fn perturbed<M: Module>(module: &M, direction: &GradientsParams, scale: f64) -> M {
    module.clone().map(&mut Perturb { direction, scale })
}

enum Op {
    Dot,
    Lincomb(f64, f64),
    Hadamard,
}

struct Combine<'a> {
    a: &'a GradientsParams,
    b: &'a GradientsParams,
    op: Op,
    out: GradientsParams,
    sums: Vec<Tensor<1>>,
}

impl ModuleVisitor for Combine<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let (Some(a), Some(b)) = (self.a.get::<D>(param.id), self.b.get::<D>(param.id)) else {
            return;
        };
        match self.op {
            Op::Dot => self.sums.push((a * b).sum()),
            Op::Lincomb(alpha, beta) => self
                .out
                .register(param.id, a.mul_scalar(alpha) + b.mul_scalar(beta)),
            Op::Hadamard => self.out.register(param.id, a * b),
        }
    }
}

struct ParamSquares {
    sums: Vec<Tensor<1>>,
}

impl ModuleVisitor for ParamSquares {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let value = param.val();
        if value.is_require_grad() {
            self.sums.push(value.inner().square().sum());
        }
    }
}

struct Perturb<'a> {
    direction: &'a GradientsParams,
    scale: f64,
}

impl ModuleMapper for Perturb<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(v) = self.direction.get::<D>(param.id) else {
            return param;
        };
        let scale = self.scale;
        map_value(param, |theta| theta + v.mul_scalar(scale))
    }
}
