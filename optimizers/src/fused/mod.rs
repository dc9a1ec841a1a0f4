//! Fused optimizer steps (issue #8, first slice): one pass over the parameter, gradient and
//! moment buffers instead of a chain of tensor ops that each read and write the whole buffer.
//!
//! [`FusedAdamW`] is a drop-in for Burn's `AdamW` (same hyperparameters, defaults, state type
//! `AdamWState` and therefore the same records). On the flex backend (feature `flex`) with
//! contiguous f32 tensors it updates the moments and the parameter in one loop over their raw
//! storage (copy-on-write: in place when a buffer is uniquely owned, copied first when shared, so
//! a parameter also held elsewhere is never changed behind its holder's back). Every other case
//! (other backends, autodiff tensors, non-contiguous or non-f32 tensors, AMSGrad, cautious weight
//! decay) takes Burn's own `AdamW` step, with the same numbers. [`path_counts`] tells which path
//! ran, so tests can assert the fast path was taken.

mod adamw;

pub use adamw::{FusedAdamW, FusedAdamWConfig};

use std::sync::atomic::{AtomicUsize, Ordering};

static FUSED_STEPS: AtomicUsize = AtomicUsize::new(0);
static FALLBACK_STEPS: AtomicUsize = AtomicUsize::new(0);

/// How many tensor steps took the fused path and the tensor-op fallback so far (process-wide).
pub fn path_counts() -> (usize, usize) {
    (
        FUSED_STEPS.load(Ordering::Relaxed),
        FALLBACK_STEPS.load(Ordering::Relaxed),
    )
}

pub(crate) fn count(fused: bool) {
    let counter = if fused { &FUSED_STEPS } else { &FALLBACK_STEPS };
    counter.fetch_add(1, Ordering::Relaxed);
}
