//! Reductions finished on the host: per-tensor partial sums computed on the device are read back
//! together (one synchronisation) and added in f64.

use burn::tensor::Tensor;

/// The f64 sum of one-element (or any 1-D) partial sums, with a single device read-back; 0 for
/// none. Parts on different devices are moved to the first one's device.
pub(crate) fn host_sum(parts: Vec<Tensor<1>>) -> f64 {
    host_values(parts).iter().sum()
}

/// Every value of `parts` (each 1-D), in order, with a single device read-back, as f64 (exact
/// for f32 tensors, lossless for f64 ones).
pub(crate) fn host_values(parts: Vec<Tensor<1>>) -> Vec<f64> {
    if parts.is_empty() {
        return Vec::new();
    }
    let device = parts[0].device();
    let parts: Vec<_> = parts.into_iter().map(|t| t.to_device(&device)).collect();
    Tensor::cat(parts, 0)
        .into_data()
        .try_into_vec_as::<f64>()
        .expect("float partial results")
}
