//! Raw f32 buffers of CPU tensors, for the fused loop: flex's `FlexTensor` (feature `flex`) and
//! ndarray's `ArcArray` (feature `ndarray`). Both are reference-counted and copy-on-write, so
//! writing through [`HostBuffer::slice_mut`] is in place when the buffer is uniquely owned and
//! copies it first when another tensor shares it: a parameter also held elsewhere is never
//! changed behind its holder's back.
//!
//! A tensor is taken only when it is a plain (non-autodiff) f32 tensor of one of these backends,
//! contiguous in row-major order from the start of its buffer (a read-only input may also start
//! further into its buffer: a contiguous slice of a larger tensor, see [`HostBuffer::take_read`]);
//! otherwise it is handed back untouched and the optimizer takes its tensor-op path.

// burn-ndarray 0.22.1 marks its items deprecated (in favour of flex); Burn still ships and runs it,
// and firebox supports it as a backend, so its raw storage is used here too.
#![allow(deprecated)]

use burn::tensor::{DType, Tensor};

/// Which CPU backend a buffer belongs to (a fused step never mixes them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HostKind {
    #[cfg(feature = "flex")]
    Flex,
    #[cfg(feature = "ndarray")]
    NdArray,
}

/// A tensor's storage, taken out of the tensor for one fused step.
pub(crate) enum HostBuffer {
    #[cfg(feature = "flex")]
    Flex(burn_flex::FlexTensor),
    #[cfg(feature = "ndarray")]
    NdArray(burn_ndarray::SharedArray<f32>),
}

/// A tensor's storage when the fused path can take it, the tensor untouched otherwise.
pub(crate) enum Taken<const D: usize> {
    Host(HostBuffer),
    Tensor(Tensor<D>),
}

impl<const D: usize> Taken<D> {
    /// Back into a tensor either way.
    pub(crate) fn into_tensor(self) -> Tensor<D> {
        match self {
            Taken::Host(host) => host.into_tensor(),
            Taken::Tensor(tensor) => tensor,
        }
    }
}

/// The backend of a tensor the fused path can take, or `None`.
pub(crate) fn host_kind<const D: usize>(t: &Tensor<D>) -> Option<HostKind> {
    if t.dtype() != DType::F32 {
        return None;
    }
    let device = t.device();
    if device.is_autodiff() {
        return None;
    }
    // Device equality compares the hardware identity (one flex device, one ndarray CPU device).
    #[cfg(feature = "flex")]
    if device == burn::tensor::Device::flex() {
        return Some(HostKind::Flex);
    }
    #[cfg(feature = "ndarray")]
    if device == burn::tensor::Device::ndarray() {
        return Some(HostKind::NdArray);
    }
    None
}

impl HostBuffer {
    /// Takes `t`'s storage if it is a contiguous f32 tensor of backend `kind` that starts at the
    /// beginning of its buffer (so that it can be written: [`slice_mut`](Self::slice_mut)).
    pub(crate) fn take<const D: usize>(t: Tensor<D>, kind: HostKind) -> Taken<D> {
        Self::take_at(t, kind, false)
    }

    /// Takes `t`'s storage if it is a contiguous f32 tensor of backend `kind`, wherever it starts
    /// in its buffer (a slice of a larger tensor); only to be read ([`slice`](Self::slice)).
    pub(crate) fn take_read<const D: usize>(t: Tensor<D>, kind: HostKind) -> Taken<D> {
        Self::take_at(t, kind, true)
    }

    fn take_at<const D: usize>(t: Tensor<D>, kind: HostKind, any_offset: bool) -> Taken<D> {
        if host_kind(&t) != Some(kind) {
            return Taken::Tensor(t);
        }
        let n = t.shape().num_elements();
        match kind {
            #[cfg(feature = "flex")]
            HostKind::Flex => {
                let p = t
                    .try_into_primitive::<burn_flex::Flex>()
                    .expect("a flex device holds a flex primitive");
                let fits = match p.layout().contiguous_offsets() {
                    Some((start, end)) => (any_offset || start == 0) && end - start == n,
                    None => false,
                };
                if fits {
                    Taken::Host(HostBuffer::Flex(p))
                } else {
                    Taken::Tensor(Tensor::from_primitive::<burn_flex::Flex>(p))
                }
            }
            #[cfg(feature = "ndarray")]
            HostKind::NdArray => {
                let p = t
                    .try_into_primitive::<burn_ndarray::NdArray>()
                    .expect("an ndarray device holds an ndarray primitive");
                match p {
                    burn_ndarray::NdArrayTensor::F32(storage) => {
                        let array = storage.into_shared();
                        if array.is_standard_layout() {
                            Taken::Host(HostBuffer::NdArray(array))
                        } else {
                            Taken::Tensor(Tensor::from_primitive::<burn_ndarray::NdArray>(
                                array.into(),
                            ))
                        }
                    }
                    other => Taken::Tensor(Tensor::from_primitive::<burn_ndarray::NdArray>(other)),
                }
            }
        }
    }

    /// A new buffer of the same backend and shape, every element `value`.
    pub(crate) fn filled(&self, value: f32) -> Self {
        match self {
            #[cfg(feature = "flex")]
            HostBuffer::Flex(t) => HostBuffer::Flex(burn_flex::FlexTensor::filled_typed(
                t.layout().shape().clone(),
                DType::F32,
                value,
            )),
            #[cfg(feature = "ndarray")]
            HostBuffer::NdArray(a) => {
                HostBuffer::NdArray(burn_ndarray::SharedArray::from_elem(a.raw_dim(), value))
            }
        }
    }

    /// The elements, read-only.
    pub(crate) fn slice(&self) -> &[f32] {
        match self {
            #[cfg(feature = "flex")]
            HostBuffer::Flex(t) => {
                let (start, end) = t
                    .layout()
                    .contiguous_offsets()
                    .expect("contiguous (checked in take)");
                &t.storage::<f32>()[start..end]
            }
            #[cfg(feature = "ndarray")]
            HostBuffer::NdArray(a) => a.as_slice().expect("standard layout (checked in take)"),
        }
    }

    /// Whether writing would copy the buffer first (another tensor shares it).
    pub(crate) fn is_shared(&self) -> bool {
        match self {
            #[cfg(feature = "flex")]
            HostBuffer::Flex(t) => !t.is_unique(),
            #[cfg(feature = "ndarray")]
            HostBuffer::NdArray(a) => !a.is_unique(),
        }
    }

    /// The elements, writable; copies the buffer first if it is shared (copy-on-write).
    pub(crate) fn slice_mut(&mut self) -> &mut [f32] {
        match self {
            #[cfg(feature = "flex")]
            HostBuffer::Flex(t) => {
                let n = t.layout().shape().num_elements();
                &mut t.storage_mut::<f32>()[..n]
            }
            #[cfg(feature = "ndarray")]
            HostBuffer::NdArray(a) => a.as_slice_mut().expect("standard layout (checked in take)"),
        }
    }

    /// Back into a tensor.
    pub(crate) fn into_tensor<const D: usize>(self) -> Tensor<D> {
        match self {
            #[cfg(feature = "flex")]
            HostBuffer::Flex(t) => Tensor::from_primitive::<burn_flex::Flex>(t),
            #[cfg(feature = "ndarray")]
            HostBuffer::NdArray(a) => Tensor::from_primitive::<burn_ndarray::NdArray>(a.into()),
        }
    }
}
