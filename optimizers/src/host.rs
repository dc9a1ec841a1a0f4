//! Reductions finished on the host: per-tensor partial sums computed on the device are read back
//! together (one synchronisation) and added in f64.

use burn::tensor::Tensor;

/// The f64 sum of one-element (or any 1-D) partial sums, with a single device read-back; 0 for
/// none. Parts on different devices are moved to the first one's device.
pub(crate) fn host_sum(parts: Vec<Tensor<1>>) -> f64 {
    if parts.is_empty() {
        return 0.0;
    }
    let device = parts[0].device();
    let parts: Vec<_> = parts.into_iter().map(|t| t.to_device(&device)).collect();
    let values: Vec<f32> = Tensor::cat(parts, 0)
        .into_data()
        .try_into_vec_as()
        .expect("f32 partial sums");
    values.iter().map(|&v| v as f64).sum()
}
