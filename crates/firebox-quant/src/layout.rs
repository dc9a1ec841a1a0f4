//! Scale groups as matrix rows: every granularity is handled by viewing the tensor as a matrix
//! `[groups, elements per group]`, computing one scale per row, and viewing the result back.
//!
//! - per tensor: `[1, N]`;
//! - per channel along `axis`: that axis first, the rest flattened: `[C, N / C]`;
//! - per group of `g` along `axis`: that axis last, then rows of `g`: `[N / g, g]`.

use burn::tensor::Tensor;

use crate::spec::Granularity;

/// How a tensor of shape `dims` maps to and from its scale-group rows.
#[derive(Clone, Debug, PartialEq)]
pub struct RowLayout<const D: usize> {
    /// The tensor's shape.
    pub dims: [usize; D],
    /// The granularity the rows stand for.
    pub granularity: Granularity,
}

impl<const D: usize> RowLayout<D> {
    /// The layout of `dims` under `granularity` (validated by [`QuantSpec::validate`](crate::QuantSpec::validate)).
    pub fn new(dims: [usize; D], granularity: Granularity) -> Self {
        Self { dims, granularity }
    }

    /// `[rows, elements per row]`.
    pub fn row_shape(&self) -> [usize; 2] {
        let n: usize = self.dims.iter().product();
        match self.granularity {
            Granularity::PerTensor => [1, n],
            Granularity::PerChannel { axis } => [self.dims[axis], n / self.dims[axis].max(1)],
            Granularity::PerGroup { size, .. } => [n / size, size],
        }
    }

    fn swapped(&self) -> Option<(usize, usize)> {
        match self.granularity {
            Granularity::PerTensor => None,
            Granularity::PerChannel { axis } => Some((axis, 0)),
            Granularity::PerGroup { axis, .. } => Some((axis, D - 1)),
        }
    }

    /// The tensor as rows.
    pub fn to_rows(&self, tensor: Tensor<D>) -> Tensor<2> {
        let tensor = match self.swapped() {
            Some((a, b)) if a != b => tensor.swap_dims(a, b),
            _ => tensor,
        };
        tensor.reshape(self.row_shape())
    }

    /// Rows back to the tensor's shape.
    pub fn from_rows(&self, rows: Tensor<2>) -> Tensor<D> {
        let mut swapped = self.dims;
        match self.swapped() {
            Some((a, b)) if a != b => {
                swapped.swap(a, b);
                rows.reshape(swapped).swap_dims(a, b)
            }
            _ => rows.reshape(swapped),
        }
    }

    /// A per-row quantity `[rows, 1]` broadcast to the tensor's shape (e.g. the scale of every
    /// element).
    pub fn broadcast(&self, per_row: Tensor<2>) -> Tensor<D> {
        let shape = self.row_shape();
        self.from_rows(per_row.expand(shape))
    }
}
