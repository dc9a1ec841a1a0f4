//! Fused optimizer steps: one pass over the parameter, gradient and state buffers instead of a
//! chain of tensor ops that each read and write the whole buffer (issue #8).
//!
//! # Which optimizers
//! - firebox's own first-order optimizers take the fused path by themselves, with no change to
//!   their API or state: [`DiffGrad`](crate::DiffGrad), [`AdaBelief`](crate::AdaBelief),
//!   [`AdaGradInit`](crate::AdaGradInit) (which is also the fused AdaGrad: with
//!   `initial_accumulator_value = 0` it computes Burn's `AdaGrad`; Burn's `AdaGradState` has
//!   private fields, so a drop-in with Burn's state type cannot be written outside Burn).
//! - Drop-ins for Burn's optimizers, with Burn's config fields, defaults and state types (so
//!   records, burnpack checkpoints and resume are unchanged): [`FusedAdam`], [`FusedAdamW`] and
//!   [`FusedAdan`]. Where the fused path does not apply they run Burn's own step, so they are
//!   never worse than Burn's.
//! - The elementwise update of the module-level optimizers: [`SophiaG`](crate::sophia::SophiaG)
//!   and [`SophiaH`](crate::sophia::SophiaH) (with their count of unclipped coordinates, summed
//!   in the loop) and [`AdaHessian`](crate::adahessian::AdaHessian) (power 1, on steps whose
//!   Hessian estimate enters v), from their second step on (the first creates the state), and
//!   [`AdaGradNorm`](crate::adagrad_norm::AdaGradNorm): global (its norm is a reduction over all
//!   parameters first) and per-row (the row norms are a reduction first; the update then reads
//!   the per-row `sqrt(acc) + eps` broadcast over the rows or columns, `try_step_broadcast`;
//!   parameters with per-element accumulators fold `acc += g²` into the pass), and the elementwise
//!   passes of [`Mfac`](crate::mfac::Mfac): the coupled decay `g + wd·θ`, the direction
//!   `(g − c)/λ` with its momentum EMA, and `θ −= lr·x` per parameter (reading its slice of x in
//!   place). Their reductions and products stay tensor ops: Hessian estimation (Hutchinson
//!   products, sampled-label gradients), per-row squared norms, M-FAC's O(d·m) window products.
//!   All of these are bit-identical to their tensor-op paths.
//!
//! # When the fused path runs
//! On the CPU backends compiled into firebox-optim (features `flex` and `ndarray`, which the
//! umbrella crate's features of the same name enable), for plain f32 tensors (not autodiff-held)
//! that are contiguous in row-major order. The loop runs in chunks on rayon's thread pool, with an
//! AVX2 copy picked at run time ([`kernel`]). Buffers are copy-on-write: in place when uniquely
//! owned, copied first when another tensor shares them. Every other case (other backends, f16/bf16,
//! transposed or sliced tensors, options a fused loop does not cover) takes the tensor-op path
//! with the same numbers: each fused loop performs the tensor-op path's f32 operations in the
//! same order, so the two agree to f32 rounding (bit for bit where both use correctly rounded
//! operations; `exp` may differ by an ulp).
//!
//! On wgpu and cuda (features `wgpu` / `cuda`) the per-tensor optimizers (Adam, AdamW with or
//! without cautious decay, Adan, diffGrad, AdaBelief and AdaGrad, AMSGrad included), AdaHessian (power 1),
//! Sophia-G/H, AdaGrad-Norm (global and per-row, its `den` read broadcast by row or column) and
//! M-FAC's elementwise passes run one CubeCL kernel per tensor step instead (`cube`): a Burn
//! backend extension that joins Burn's fusion stream as one operation, in place when the buffers
//! are not shared. It agrees with the tensor-op path to f32 rounding (the device's `sqrt`, `exp`
//! and division need not be correctly rounded); Sophia's unclipped count is then a reduction of
//! the new state.
//!
//! # Observing and forcing the path
//! [`path_counts`] counts, on the calling thread, how many tensor steps took each path, so tests
//! can assert that the fast path ran. [`with_fallback`] runs a closure with the fused path turned
//! off (on the calling thread), to compare both paths on the same inputs.

#[cfg(any(feature = "flex", feature = "ndarray"))]
mod host;
#[cfg(any(feature = "flex", feature = "ndarray"))]
pub(crate) mod kernel;

#[cfg(feature = "cube")]
mod cube;

mod adamw;
mod adan;
pub(crate) mod math;
pub(crate) mod rule;

pub(crate) use rule::DeviceRule;

pub use adamw::{FusedAdam, FusedAdamConfig, FusedAdamW, FusedAdamWConfig};
pub use adan::{FusedAdan, FusedAdanConfig};

use std::cell::Cell;

use burn::tensor::Tensor;

thread_local! {
    static COUNTS: Cell<PathCounts> = const {
        Cell::new(PathCounts {
            fused: 0,
            fallback: 0,
            copied: 0,
        })
    };
    static FORCE_FALLBACK: Cell<bool> = const { Cell::new(false) };
}

/// How many tensor steps took each path on the calling thread so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PathCounts {
    /// Steps that ran as one fused loop over raw buffers.
    pub fused: usize,
    /// Steps that ran as tensor ops (the fused path did not apply or was turned off).
    pub fallback: usize,
    /// Buffers the fused path copied before writing because another tensor shared them
    /// (copy-on-write). Steady-state training should show none.
    pub copied: usize,
}

impl std::ops::Sub for PathCounts {
    type Output = PathCounts;

    fn sub(self, before: PathCounts) -> PathCounts {
        PathCounts {
            fused: self.fused - before.fused,
            fallback: self.fallback - before.fallback,
            copied: self.copied - before.copied,
        }
    }
}

/// Path counters of the calling thread (see the [module docs](self)).
pub fn path_counts() -> PathCounts {
    COUNTS.with(Cell::get)
}

/// Runs `f` with the fused path turned off on the calling thread: every optimizer takes its
/// tensor-op path. Restored afterwards, also when `f` panics.
pub fn with_fallback<T>(f: impl FnOnce() -> T) -> T {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            FORCE_FALLBACK.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(FORCE_FALLBACK.with(|c| c.replace(true)));
    f()
}

/// Whether [`with_fallback`] is in force on the calling thread.
pub fn fallback_forced() -> bool {
    FORCE_FALLBACK.with(Cell::get)
}

pub(crate) fn count(fused: bool) {
    COUNTS.with(|c| {
        let mut n = c.get();
        if fused {
            n.fused += 1;
        } else {
            n.fallback += 1;
        }
        c.set(n);
    });
}

#[cfg(any(feature = "flex", feature = "ndarray"))]
fn count_copies(copies: usize) {
    COUNTS.with(|c| {
        let mut n = c.get();
        n.copied += copies;
        c.set(n);
    });
}

/// The tensors of one elementwise step: the parameter, `R` read-only inputs of its shape (the
/// gradient first) and `K` states (`None` before the first step).
pub(crate) struct StepInputs<const D: usize, const R: usize, const K: usize> {
    pub param: Tensor<D>,
    pub reads: [Tensor<D>; R],
    pub states: [Option<Tensor<D>>; K],
}

impl<const D: usize, const R: usize, const K: usize> StepInputs<D, R, K> {
    /// Whether `fits` holds for the parameter, every read and every given state.
    pub(crate) fn all_fit(&self, fits: impl Fn(&Tensor<D>) -> bool) -> bool {
        fits(&self.param) && self.reads.iter().all(&fits) && self.states.iter().flatten().all(&fits)
    }
}

/// The outcome of [`try_step_on`].
pub(crate) enum Fused<const D: usize, const R: usize, const K: usize> {
    /// The updated parameter and the `K` states.
    Done(Tensor<D>, [Tensor<D>; K]),
    /// The fused path did not apply: the inputs, untouched, for the tensor-op path.
    Declined(StepInputs<D, R, K>),
}

/// Runs `update` on every element as one fused loop on the host, or `rule`'s kernel on the
/// CubeCL backends (wgpu, cuda) when firebox-optim is built with them (`update` and `rule` must
/// describe the same step), or hands the inputs back
/// ([`Fused::Declined`]) when the fused path does not apply; counts the path either way, so a
/// caller that gets them back must run its tensor-op path. States that are `None` start at
/// `init[k]`.
pub(crate) fn try_step_on<const D: usize, const R: usize, const K: usize>(
    inputs: StepInputs<D, R, K>,
    init: [f32; K],
    update: &(impl Fn(&mut f32, [f32; R], &mut [f32; K]) + Sync + Copy),
    rule: DeviceRule,
) -> Fused<D, R, K> {
    let update = *update;
    let counting = move |p: &mut f32, r: [f32; R], s: &mut [f32; K]| {
        update(p, r, s);
        0
    };
    try_step_counting_on(inputs, init, &counting, rule).0
}

/// [`try_step_on`] with an update that counts elements (returns 1 for those it counts): the
/// count of the host loop, 0 when the step was declined, `None` when a device kernel ran (it
/// does not count; the caller counts from the new state with tensor ops).
pub(crate) fn try_step_counting_on<const D: usize, const R: usize, const K: usize>(
    inputs: StepInputs<D, R, K>,
    init: [f32; K],
    update: &(impl Fn(&mut f32, [f32; R], &mut [f32; K]) -> u32 + Sync + Copy),
    rule: DeviceRule,
) -> (Fused<D, R, K>, Option<usize>) {
    let result = if fallback_forced() {
        (Fused::Declined(inputs), Some(0))
    } else {
        match on_device(inputs, init, rule) {
            Ok(done) => (done, None),
            Err(inputs) => {
                let (fused, counted) = run(*inputs, init, update);
                (fused, Some(counted))
            }
        }
    };
    count(matches!(result.0, Fused::Done(..)));
    result
}

/// The device kernel of `rule` ([`cube`]), or the inputs back (always, without a device kernel
/// in the build).
// `return` ends the body only when the device kernel is compiled in.
#[allow(clippy::needless_return)]
fn on_device<const D: usize, const R: usize, const K: usize>(
    inputs: StepInputs<D, R, K>,
    init: [f32; K],
    rule: DeviceRule,
) -> Result<Fused<D, R, K>, Box<StepInputs<D, R, K>>> {
    #[cfg(feature = "cube")]
    return cube::try_step(inputs, init, rule);
    #[cfg(not(feature = "cube"))]
    {
        let _ = (init, rule);
        Err(Box::new(inputs))
    }
}

/// [`try_step_on`] with one more read-only input broadcast over the row-major 2-D view `view` of the
/// parameter, as Burn broadcasts `vector` (`[view[0], 1]`: one value per row, or `[1, view[1]]`:
/// one value per column) against the parameter reshaped to `view`. `update` gets the element's
/// broadcast value as its third argument. The vector is only read (pass a clone to keep it).
/// `rule`'s kernel runs instead on the CubeCL backends, as in [`try_step_on`].
///
/// # Panics
/// If `view` does not hold the parameter's elements or `vector` has neither shape.
pub(crate) fn try_step_broadcast<const D: usize, const R: usize, const K: usize>(
    inputs: StepInputs<D, R, K>,
    view: [usize; 2],
    vector: Tensor<2>,
    init: [f32; K],
    update: &(impl Fn(&mut f32, [f32; R], f32, &mut [f32; K]) + Sync + Copy),
    rule: DeviceRule,
) -> Fused<D, R, K> {
    assert_eq!(
        view[0] * view[1],
        inputs.param.shape().num_elements(),
        "fused step: the view {view:?} must hold the parameter's elements"
    );
    let dims = vector.dims();
    assert!(
        dims == [view[0], 1] || dims == [1, view[1]],
        "fused step: a {dims:?} vector does not broadcast over {view:?} along one axis"
    );
    // One value per row, else per column: `[1, C]` over `[1, C]` is per column (and `[1, 1]`
    // over `[1, 1]` is either). Decided here once for the host loop and the device kernel.
    let along_rows = dims == [view[0], 1];
    let result = if fallback_forced() {
        Fused::Declined(inputs)
    } else {
        match on_device_broadcast(inputs, view, vector, along_rows, init, rule) {
            Ok(done) => done,
            Err(back) => {
                let (inputs, vector) = *back;
                run_broadcast(inputs, view, vector, along_rows, init, update)
            }
        }
    };
    count(matches!(result, Fused::Done(..)));
    result
}

/// The inputs and the broadcast vector, handed back when a device kernel does not apply.
type DeclinedBroadcast<const D: usize, const R: usize, const K: usize> =
    Box<(StepInputs<D, R, K>, Tensor<2>)>;

/// The broadcast kernel of `rule` ([`cube`]), or the inputs back (always, without a device
/// kernel in the build).
// `return` ends the body only when the device kernel is compiled in.
#[allow(clippy::needless_return)]
fn on_device_broadcast<const D: usize, const R: usize, const K: usize>(
    inputs: StepInputs<D, R, K>,
    view: [usize; 2],
    vector: Tensor<2>,
    along_rows: bool,
    init: [f32; K],
    rule: DeviceRule,
) -> Result<Fused<D, R, K>, DeclinedBroadcast<D, R, K>> {
    #[cfg(feature = "cube")]
    return cube::try_step_broadcast(inputs, view, vector, along_rows, init, rule);
    #[cfg(not(feature = "cube"))]
    {
        let _ = (view, along_rows, init, rule);
        Err(Box::new((inputs, vector)))
    }
}

#[cfg(not(any(feature = "flex", feature = "ndarray")))]
fn run<const D: usize, const R: usize, const K: usize>(
    inputs: StepInputs<D, R, K>,
    _init: [f32; K],
    _update: &(impl Fn(&mut f32, [f32; R], &mut [f32; K]) -> u32 + Sync + Copy),
) -> (Fused<D, R, K>, usize) {
    (Fused::Declined(inputs), 0)
}

#[cfg(not(any(feature = "flex", feature = "ndarray")))]
fn run_broadcast<const D: usize, const R: usize, const K: usize>(
    inputs: StepInputs<D, R, K>,
    _view: [usize; 2],
    _vector: Tensor<2>,
    _along_rows: bool,
    _init: [f32; K],
    _update: &(impl Fn(&mut f32, [f32; R], f32, &mut [f32; K]) + Sync + Copy),
) -> Fused<D, R, K> {
    Fused::Declined(inputs)
}

/// The raw buffers of one step: the parameter and the states writable, the reads read-only.
#[cfg(any(feature = "flex", feature = "ndarray"))]
struct Buffers<const R: usize, const K: usize> {
    param: host::HostBuffer,
    reads: [host::HostBuffer; R],
    states: [host::HostBuffer; K],
}

#[cfg(any(feature = "flex", feature = "ndarray"))]
impl<const R: usize, const K: usize> Buffers<R, K> {
    /// The buffers of `inputs` when all of them are host buffers of one backend and the
    /// parameter's shape (states that are `None` start at `init[k]`), the inputs back otherwise.
    /// Counts the buffers that writing will copy.
    fn take<const D: usize>(
        inputs: StepInputs<D, R, K>,
        kind: host::HostKind,
        init: [f32; K],
    ) -> Result<Self, Box<StepInputs<D, R, K>>> {
        use host::{HostBuffer, Taken, host_kind};

        let shape = inputs.param.shape();
        let fits = |t: &Tensor<D>| host_kind(t) == Some(kind) && t.shape() == shape;
        if !inputs.all_fit(fits) {
            return Err(Box::new(inputs));
        }
        let StepInputs {
            param,
            reads,
            states,
        } = inputs;
        let take = |t: Tensor<D>| HostBuffer::take(t, kind);
        let param = take(param);
        // Reads may be contiguous slices of a larger tensor.
        let reads = reads.map(|t| HostBuffer::take_read(t, kind));
        let states = states.map(|s| s.map(take));
        let is_host = |t: &Taken<D>| matches!(t, Taken::Host(_));
        let all_taken =
            is_host(&param) && reads.iter().all(is_host) && states.iter().flatten().all(is_host);
        if !all_taken {
            return Err(Box::new(StepInputs {
                param: param.into_tensor(),
                reads: reads.map(Taken::into_tensor),
                states: states.map(|s| s.map(Taken::into_tensor)),
            }));
        }
        let unwrap = |t: Taken<D>| match t {
            Taken::Host(host) => host,
            Taken::Tensor(_) => unreachable!("checked above"),
        };
        let param = unwrap(param);
        let reads = reads.map(unwrap);
        let mut k = 0;
        let states = states.map(|s| {
            let b = match s {
                Some(b) => unwrap(b),
                None => param.filled(init[k]),
            };
            k += 1;
            b
        });
        count_copies(
            usize::from(param.is_shared()) + states.iter().filter(|s| s.is_shared()).count(),
        );
        Ok(Self {
            param,
            reads,
            states,
        })
    }

    /// The updated parameter and states.
    fn done<const D: usize>(self) -> Fused<D, R, K> {
        use host::HostBuffer;
        Fused::Done(
            self.param.into_tensor(),
            self.states.map(HostBuffer::into_tensor),
        )
    }
}

#[cfg(any(feature = "flex", feature = "ndarray"))]
fn run<const D: usize, const R: usize, const K: usize>(
    inputs: StepInputs<D, R, K>,
    init: [f32; K],
    update: &(impl Fn(&mut f32, [f32; R], &mut [f32; K]) -> u32 + Sync + Copy),
) -> (Fused<D, R, K>, usize) {
    use host::{HostBuffer, host_kind};

    let Some(kind) = host_kind(&inputs.param) else {
        return (Fused::Declined(inputs), 0);
    };
    let mut buffers = match Buffers::take(inputs, kind, init) {
        Ok(buffers) => buffers,
        Err(inputs) => return (Fused::Declined(*inputs), 0),
    };
    let counted = kernel::for_each(
        buffers.param.slice_mut(),
        buffers.reads.each_ref().map(HostBuffer::slice),
        buffers.states.each_mut().map(HostBuffer::slice_mut),
        update,
    );
    (buffers.done(), counted)
}

#[cfg(any(feature = "flex", feature = "ndarray"))]
fn run_broadcast<const D: usize, const R: usize, const K: usize>(
    inputs: StepInputs<D, R, K>,
    view: [usize; 2],
    vector: Tensor<2>,
    along_rows: bool,
    init: [f32; K],
    update: &(impl Fn(&mut f32, [f32; R], f32, &mut [f32; K]) + Sync + Copy),
) -> Fused<D, R, K> {
    use host::{HostBuffer, Taken, host_kind};

    let Some(kind) = host_kind(&inputs.param) else {
        return Fused::Declined(inputs);
    };
    let along = if along_rows {
        kernel::Along::Rows
    } else {
        kernel::Along::Columns
    };
    let Taken::Host(vector) = HostBuffer::take_read(vector, kind) else {
        return Fused::Declined(inputs);
    };
    let mut buffers = match Buffers::take(inputs, kind, init) {
        Ok(buffers) => buffers,
        Err(inputs) => return Fused::Declined(*inputs),
    };
    let update = *update;
    let counting = move |p: &mut f32, r: [f32; R], b: f32, s: &mut [f32; K]| {
        update(p, r, b, s);
        0
    };
    kernel::for_each_broadcast(
        buffers.param.slice_mut(),
        buffers.reads.each_ref().map(HostBuffer::slice),
        buffers.states.each_mut().map(HostBuffer::slice_mut),
        view[1],
        vector.slice(),
        along,
        &counting,
    );
    buffers.done()
}
