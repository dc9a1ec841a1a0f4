//! Activation ranges from calibration data, and the fake-quantization point a model calls.
//!
//! An [`Observer`] watches the activations of calibration batches (PyTorch's `MinMaxObserver`:
//! running min and max over every batch; for percentile or MSE clipping it also keeps a sample
//! of up to [`Observer::MAX_SAMPLES`] values, evenly strided per batch) and turns them into
//! per-tensor parameters. [`ActivationQuant`] is the module a model calls where an activation is
//! quantized (PyTorch's `QuantStub` + `FakeQuantize`): a straight-through fake quantization with
//! the calibrated step, or LSQ with a learned one (see [`fake_quant`](crate::fake_quant)).
//! Activations use one scale per tensor: per-channel activation scales cannot be folded into an
//! integer matmul.

use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor, TensorData};

use crate::QuantError;
use crate::affine::{QParams, calibrated_range, host, qparams_from_range};
use crate::fake_quant::{fake_quant_lsq, fake_quant_ste};
use crate::layout::RowLayout;
use crate::spec::{Clipping, Granularity, Mode, QuantSpec};

/// Running statistics of one activation over calibration batches.
#[derive(Clone, Debug)]
pub struct Observer {
    /// The scheme the activation will be quantized with (per tensor).
    pub spec: QuantSpec,
    min: f32,
    max: f32,
    samples: Vec<f32>,
    batches: usize,
}

impl Observer {
    /// Largest number of kept values for percentile / MSE calibration.
    pub const MAX_SAMPLES: usize = 1 << 20;

    /// An observer for a per-tensor `spec`; `name` is the activation's name for errors.
    pub fn new(name: &str, spec: QuantSpec) -> Result<Self, QuantError> {
        if spec.granularity != Granularity::PerTensor {
            return Err(QuantError::Calibration {
                layer: name.to_string(),
                message: format!(
                    "activations are quantized per tensor, not {:?}",
                    spec.granularity
                ),
            });
        }
        spec.validate(name, &[1])?;
        Ok(Self {
            spec,
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
            samples: Vec::new(),
            batches: 0,
        })
    }

    /// Records one batch of the activation. A batch with NaN or ±∞ panics naming the observer's
    /// batch index (calibrating on it would silently corrupt every later quantized output).
    pub fn observe<const D: usize>(&mut self, x: &Tensor<D>) {
        let values = host(x.clone().detach().into_data());
        assert!(
            values.iter().all(|v| v.is_finite()),
            "observer: calibration batch {} holds NaN or infinite activations",
            self.batches
        );
        for &v in &values {
            self.min = self.min.min(v);
            self.max = self.max.max(v);
        }
        if self.spec.clipping != Clipping::MinMax {
            let room = Self::MAX_SAMPLES.saturating_sub(self.samples.len()).max(1);
            let stride = values.len().div_ceil(room).max(1);
            self.samples.extend(values.iter().step_by(stride));
        }
        self.batches += 1;
    }

    /// Number of batches seen.
    pub fn batches(&self) -> usize {
        self.batches
    }

    /// The observed `(min, max)`.
    pub fn range(&self) -> (f32, f32) {
        (self.min, self.max)
    }

    /// The calibrated per-tensor parameters (`[1, 1]`), on `device`.
    ///
    /// # Panics
    /// If no batch was observed.
    pub fn qparams(&self, device: &Device) -> QParams {
        assert!(
            self.batches > 0,
            "observer: no calibration batch was observed"
        );
        let s = &self.spec;
        let one = |v: f32| Tensor::<2>::from_data(TensorData::new(vec![v], [1, 1]), device);
        let (lo, hi) = match s.clipping {
            Clipping::MinMax => (one(self.min), one(self.max)),
            clipping => {
                let n = self.samples.len();
                let rows =
                    Tensor::<2>::from_data(TensorData::new(self.samples.clone(), [1, n]), device);
                calibrated_range(rows, s.range, s.mode, clipping, s.eps)
            }
        };
        qparams_from_range(lo, hi, s.range, s.mode, s.eps)
    }
}

/// A fake-quantization point for activations (see the [module docs](self)).
#[derive(Module, Debug)]
pub struct ActivationQuant {
    /// The step `[1, 1]`; trainable when `learned`.
    pub scale: Param<Tensor<2>>,
    /// The zero point `[1, 1]` (never trained).
    pub zero_point: Param<Tensor<2>>,
    /// The scheme.
    #[module(skip)]
    pub spec: QuantSpec,
    /// Whether the step is learned (LSQ; symmetric only).
    #[module(skip)]
    pub learned: bool,
}

impl ActivationQuant {
    /// The quantization point calibrated by `observer`, on `device`. `learned` makes the step an
    /// LSQ parameter (it then needs a symmetric scheme; an affine one keeps a fixed step).
    pub fn from_observer(observer: &Observer, learned: bool, device: &Device) -> Self {
        let params = observer.qparams(device);
        let learned = learned && observer.spec.mode == Mode::Symmetric;
        Self {
            // Fresh leaves (calibration results are not).
            scale: Param::from_tensor(Tensor::from_data(params.scale.into_data(), device))
                .set_require_grad(learned),
            zero_point: Param::from_tensor(Tensor::from_data(
                params.zero_point.into_data(),
                device,
            ))
            .set_require_grad(false),
            spec: observer.spec,
            learned,
        }
    }

    /// The fake-quantized activation, with straight-through gradients.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let layout = RowLayout::new(x.dims(), Granularity::PerTensor);
        if self.learned {
            let step = self.scale.val().abs().clamp_min(self.spec.eps);
            fake_quant_lsq(x, step, &layout, self.spec.range)
        } else {
            let params = QParams {
                scale: self.scale.val().detach(),
                zero_point: self.zero_point.val().detach(),
            };
            fake_quant_ste(x, &params, &layout, self.spec.range)
        }
    }
}
