//! AdamW with a fused flex step (Loshchilov & Hutter 2019, Algorithm 2; Burn's `AdamW` update,
//! operation for operation in f32).

use burn::config::Config;
use burn::optim::{AdamW, AdamWConfig, AdamWState, LearningRate, Optimizer};
use burn::tensor::{Device, Tensor};

use super::count;

/// [`FusedAdamW`]'s configuration: Burn's `AdamWConfig` fields and defaults (β = 0.9 / 0.999,
/// ε = 1e-5, weight decay 1e-4). AMSGrad and cautious weight decay run on Burn's path.
#[derive(Config, Debug)]
pub struct FusedAdamWConfig {
    /// β1.
    #[config(default = 0.9)]
    pub beta_1: f32,
    /// β2.
    #[config(default = 0.999)]
    pub beta_2: f32,
    /// ε added to `√v̂`.
    #[config(default = 1e-5)]
    pub epsilon: f32,
    /// Decoupled weight decay (`θ ← θ·(1 − lr·wd)`).
    #[config(default = 1e-4)]
    pub weight_decay: f32,
    /// AMSGrad (Burn's path).
    #[config(default = false)]
    pub amsgrad: bool,
    /// Cautious weight decay (Burn's path).
    #[config(default = false)]
    pub cautious_weight_decay: bool,
}

impl FusedAdamWConfig {
    /// The optimizer.
    pub fn build(&self) -> FusedAdamW {
        let burn = AdamWConfig::new()
            .with_beta_1(self.beta_1)
            .with_beta_2(self.beta_2)
            .with_epsilon(self.epsilon)
            .with_weight_decay(self.weight_decay)
            .with_amsgrad(self.amsgrad)
            .with_cautious_weight_decay(self.cautious_weight_decay)
            .build();
        FusedAdamW {
            config: self.clone(),
            fallback: burn,
        }
    }

    /// A `ModuleOptimizer` over a whole module.
    pub fn init(&self) -> burn::optim::ModuleOptimizer {
        burn::optim::ModuleOptimizer::from(self.build())
    }
}

/// AdamW with a fused step on flex (see the [module docs](super)).
#[derive(Clone)]
pub struct FusedAdamW {
    config: FusedAdamWConfig,
    fallback: AdamW,
}

impl Optimizer for FusedAdamW {
    type State<const D: usize> = AdamWState<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        #[cfg(feature = "flex")]
        if !self.config.amsgrad && !self.config.cautious_weight_decay {
            match flex::step(&self.config, lr, tensor, grad, state) {
                Ok(done) => {
                    count(true);
                    return done;
                }
                Err(declined) => {
                    let (tensor, grad, state) = *declined;
                    count(false);
                    return self.fallback.step(lr, tensor, grad, state);
                }
            }
        }
        count(false);
        self.fallback.step(lr, tensor, grad, state)
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &Device) -> Self::State<D> {
        AdamW::to_device(state, device)
    }
}

#[cfg(feature = "flex")]
mod flex {
    use burn::optim::{AdamWState, AdaptiveMomentumState, LearningRate};
    use burn::tensor::{DType, Tensor};
    use burn_flex::{Flex, FlexTensor};

    use super::FusedAdamWConfig;

    type Step<const D: usize> = (Tensor<D>, Option<AdamWState<D>>);
    type Declined<const D: usize> = Box<(Tensor<D>, Tensor<D>, Option<AdamWState<D>>)>;

    fn is_plain_flex<const D: usize>(t: &Tensor<D>) -> bool {
        let device = t.device();
        !device.is_autodiff()
            && format!("{device:?}").to_lowercase().contains("flex")
            && t.dtype() == DType::F32
    }

    fn into_flex<const D: usize>(t: Tensor<D>) -> FlexTensor {
        t.try_into_primitive::<Flex>()
            .expect("a flex device holds a flex primitive")
    }

    fn from_flex<const D: usize>(t: FlexTensor) -> Tensor<D> {
        Tensor::from_primitive::<Flex>(t)
    }

    /// One fused AdamW step, or the inputs back when the fast path does not apply.
    pub(super) fn step<const D: usize>(
        c: &FusedAdamWConfig,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<AdamWState<D>>,
    ) -> Result<Step<D>, Declined<D>> {
        let moments_ok = state.as_ref().is_none_or(|s| {
            s.momentum.max_moment_2.is_none()
                && is_plain_flex(&s.momentum.moment_1)
                && is_plain_flex(&s.momentum.moment_2)
        });
        if !(is_plain_flex(&tensor) && is_plain_flex(&grad) && moments_ok) {
            return Err(Box::new((tensor, grad, state)));
        }
        let shape = tensor.shape();
        let (time, m, v) = match state {
            Some(s) => (
                s.momentum.time + 1,
                Some(s.momentum.moment_1),
                Some(s.momentum.moment_2),
            ),
            None => (1, None, None),
        };
        let n = shape.num_elements();
        let mut p = into_flex(tensor);
        let g = into_flex(grad);
        // The fast path reads elements 0..n of each buffer in order.
        let contiguous = |t: &FlexTensor| t.layout().contiguous_offsets() == Some((0, n));
        let mut m = m.map(into_flex);
        let mut v = v.map(into_flex);
        if !contiguous(&p)
            || !contiguous(&g)
            || m.as_ref().is_some_and(|t| !contiguous(t))
            || v.as_ref().is_some_and(|t| !contiguous(t))
        {
            let back = |t: Option<FlexTensor>| t.map(from_flex::<D>);
            let state = match (back(m), back(v)) {
                (Some(moment_1), Some(moment_2)) => Some(AdamWState::new(AdaptiveMomentumState {
                    time: time - 1,
                    moment_1,
                    moment_2,
                    max_moment_2: None,
                })),
                _ => None,
            };
            return Err(Box::new((from_flex(p), from_flex(g), state)));
        }
        let (b1, b2, eps) = (c.beta_1, c.beta_2, c.epsilon);
        let (f1, f2) = (1.0 - b1, 1.0 - b2);
        let t = time as i32;
        let (bc1, bc2) = (1f32 - b1.powi(t), 1f32 - b2.powi(t));
        let decay = (1.0 - lr * c.weight_decay as f64) as f32;
        let lr32 = lr as f32;
        let decays = lr * c.weight_decay as f64 != 0.0;
        let mut new_m = match m.take() {
            Some(t) => t,
            None => zeros_like(&g),
        };
        let mut new_v = match v.take() {
            Some(t) => t,
            None => zeros_like(&g),
        };
        {
            let ms = new_m.storage_mut::<f32>();
            let vs = new_v.storage_mut::<f32>();
            let ps = p.storage_mut::<f32>();
            let gs = &g.storage::<f32>()[..n];
            for i in 0..n {
                let gi = gs[i];
                let mi = if time == 1 {
                    gi * f1
                } else {
                    ms[i] * b1 + gi * f1
                };
                let vi = if time == 1 {
                    gi * gi * f2
                } else {
                    vs[i] * b2 + gi * gi * f2
                };
                ms[i] = mi;
                vs[i] = vi;
                let delta = (mi / bc1) / ((vi / bc2).sqrt() + eps);
                let base = if decays { ps[i] * decay } else { ps[i] };
                ps[i] = base - delta * lr32;
            }
        }
        let state = AdamWState::new(AdaptiveMomentumState {
            time,
            moment_1: from_flex(new_m),
            moment_2: from_flex(new_v),
            max_moment_2: None,
        });
        Ok((from_flex(p), Some(state)))
    }

    fn zeros_like(t: &FlexTensor) -> FlexTensor {
        FlexTensor::zeros(t.layout().shape().clone(), DType::F32)
    }
}
