//! Dynamic thresholding (Saharia et al. 2022, "Imagen", §2.3), as diffusers'
//! `_threshold_sample`: per sample, `s` = the `ratio` quantile of |x̂0| over all non-batch
//! entries (linear interpolation, as `torch.quantile`), clamped to `[1, max_value]`; then
//! `x̂0 ← clamp(x̂0, −s, s)/s`. Note the division: values end in [−1, 1].

use burn::tensor::Tensor;

/// Imagen's dynamic thresholding settings (`thresholding=True`,
/// `dynamic_thresholding_ratio`, `sample_max_value`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DynamicThreshold {
    /// The quantile of |x̂0| (diffusers' default 0.995).
    pub ratio: f64,
    /// The largest threshold `s` (diffusers' default 1.0).
    pub max_value: f64,
}

impl Default for DynamicThreshold {
    fn default() -> Self {
        Self {
            ratio: 0.995,
            max_value: 1.0,
        }
    }
}

impl DynamicThreshold {
    /// Thresholds `x0` (first axis = batch).
    ///
    /// # Panics
    /// If `ratio` is outside [0, 1].
    pub fn apply<const D: usize>(&self, x0: Tensor<D>) -> Tensor<D> {
        assert!(
            (0.0..=1.0).contains(&self.ratio),
            "dynamic_thresholding_ratio = {} must be in [0, 1]",
            self.ratio
        );
        let dims = x0.dims();
        let batch = dims[0];
        let per_sample: usize = dims[1..].iter().product();
        let flat: Tensor<2> = x0.reshape([batch, per_sample]);
        let sorted = flat.clone().abs().sort(1);
        // torch.quantile: position ratio·(n−1), linear between its neighbours.
        let position = self.ratio * (per_sample - 1) as f64;
        let low = position.floor() as usize;
        let high = (low + 1).min(per_sample - 1);
        let w = position - low as f64;
        let lo = sorted.clone().slice([0..batch, low..low + 1]);
        let hi = sorted.slice([0..batch, high..high + 1]);
        // torch.clamp(s, min=1, max=max_value): the max wins when max_value < 1.
        let s = (lo.clone() + (hi - lo).mul_scalar(w))
            .clamp_min(1.0)
            .clamp_max(self.max_value);
        let s = s.expand([batch, per_sample]);
        let clamped = flat.max_pair(s.clone().neg()).min_pair(s.clone()) / s;
        clamped.reshape(dims)
    }
}
