//! The elementwise loop behind every fused step: one pass over the parameter, the read-only inputs
//! (the gradient, a Hessian estimate) and the state buffers, split into chunks that rayon runs on
//! its thread pool, each chunk compiled twice (baseline x86-64 and AVX2) and picked at run time.
//!
//! The per-element update is a closure; it is inlined into the chunk loop, so the compiler sees a
//! plain loop over slices and vectorises it. No fast-math: the same f32 operations in the same
//! order give the same bits whichever copy runs (AVX2 only widens the vectors; FMA contraction is
//! never applied by rustc).

use rayon::prelude::*;

/// Elements per parallel job: large enough that rayon's overhead (a few µs) is noise, small enough
/// that 1M elements split over several threads.
const CHUNK: usize = 1 << 16;

/// The per-element update: the parameter (in place), the `R` read-only inputs, the `K` states (in
/// place); it returns 1 for an element it counts (Sophia's unclipped coordinates), 0 otherwise.
/// A `move` closure over plain numbers, so that it is `Copy` and its captures are values.
pub(crate) trait Update<const R: usize, const K: usize>:
    Fn(&mut f32, [f32; R], &mut [f32; K]) -> u32 + Sync + Copy
{
}

impl<const R: usize, const K: usize, F> Update<R, K> for F where
    F: Fn(&mut f32, [f32; R], &mut [f32; K]) -> u32 + Sync + Copy
{
}

/// Applies `update` to every element and returns how many elements it counted. All slices must
/// have `param`'s length (checked).
pub(crate) fn for_each<const R: usize, const K: usize>(
    param: &mut [f32],
    reads: [&[f32]; R],
    states: [&mut [f32]; K],
    update: &impl Update<R, K>,
) -> usize {
    let n = param.len();
    assert!(
        reads.iter().all(|r| r.len() == n) && states.iter().all(|s| s.len() == n),
        "fused step: every buffer must hold the parameter's {n} elements"
    );
    if n < 2 * CHUNK || rayon::current_num_threads() == 1 {
        return run_chunk(param, reads, states, update);
    }
    let mut read_chunks = reads.map(|r| r.chunks(CHUNK));
    let mut state_chunks = states.map(|s| s.chunks_mut(CHUNK));
    let jobs: Vec<_> = param
        .chunks_mut(CHUNK)
        .map(|p| {
            let r: [&[f32]; R] =
                std::array::from_fn(|j| read_chunks[j].next().expect("same length"));
            let s: [&mut [f32]; K] =
                std::array::from_fn(|k| state_chunks[k].next().expect("same length"));
            (p, r, s)
        })
        .collect();
    jobs.into_par_iter()
        .map(|(p, r, s)| run_chunk(p, r, s, update))
        .sum()
}

/// One chunk, on the widest instruction set the CPU has.
fn run_chunk<const R: usize, const K: usize>(
    param: &mut [f32],
    reads: [&[f32]; R],
    states: [&mut [f32]; K],
    update: &impl Update<R, K>,
) -> usize {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        return unsafe { run_chunk_avx2(param, reads, states, update) };
    }
    run_chunk_portable(param, reads, states, update)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn run_chunk_avx2<const R: usize, const K: usize>(
    param: &mut [f32],
    reads: [&[f32]; R],
    states: [&mut [f32]; K],
    update: &impl Update<R, K>,
) -> usize {
    run_chunk_portable(param, reads, states, update)
}

#[inline(always)]
fn run_chunk_portable<const R: usize, const K: usize>(
    param: &mut [f32],
    reads: [&[f32]; R],
    mut states: [&mut [f32]; K],
    update: &impl Update<R, K>,
) -> usize {
    // A local copy of the closure (its captures are plain numbers): the compiler then knows no
    // store to the buffers can change them, keeps them in registers and vectorises the loop.
    // Read through the caller's reference instead, the loop stays scalar (measured 6x slower).
    let update = *update;
    let n = param.len();
    // Re-slicing to exactly `n` lets the compiler drop the bounds checks inside the loop.
    let reads: [&[f32]; R] = reads.map(|r| &r[..n]);
    for s in states.iter_mut() {
        let _ = &s[..n];
    }
    let mut counted = 0usize;
    for i in 0..n {
        let r: [f32; R] = std::array::from_fn(|j| reads[j][i]);
        let mut s: [f32; K] = std::array::from_fn(|k| states[k][i]);
        counted += update(&mut param[i], r, &mut s) as usize;
        for k in 0..K {
            states[k][i] = s[k];
        }
    }
    counted
}

/// The per-element update of a step with a broadcast read ([`for_each_broadcast`]): as
/// [`Update`], with the element's entry of the broadcast vector as an extra argument.
pub(crate) trait BroadcastUpdate<const R: usize, const K: usize>:
    Fn(&mut f32, [f32; R], f32, &mut [f32; K]) -> u32 + Sync + Copy
{
}

impl<const R: usize, const K: usize, F> BroadcastUpdate<R, K> for F where
    F: Fn(&mut f32, [f32; R], f32, &mut [f32; K]) -> u32 + Sync + Copy
{
}

/// How a broadcast vector lies over the row-major `[rows, cols]` view of the buffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Along {
    /// One entry per row (`rows` entries, Burn's broadcasting of a `[rows, 1]` tensor).
    Rows,
    /// One entry per column (`cols` entries, Burn's broadcasting of a `[1, cols]` tensor).
    Columns,
}

/// [`for_each`] with one more read-only input, `vector`, broadcast over the `[n / cols, cols]`
/// view of the buffers as `along` says: element `i` gets `vector[i / cols]` ([`Along::Rows`]) or
/// `vector[i % cols]` ([`Along::Columns`]). Jobs are whole rows. All lengths are checked.
#[allow(clippy::too_many_arguments)]
pub(crate) fn for_each_broadcast<const R: usize, const K: usize>(
    param: &mut [f32],
    reads: [&[f32]; R],
    states: [&mut [f32]; K],
    cols: usize,
    vector: &[f32],
    along: Along,
    update: &impl BroadcastUpdate<R, K>,
) -> usize {
    let n = param.len();
    assert!(
        reads.iter().all(|r| r.len() == n) && states.iter().all(|s| s.len() == n),
        "fused step: every buffer must hold the parameter's {n} elements"
    );
    if n == 0 {
        return 0;
    }
    assert!(
        cols > 0 && n.is_multiple_of(cols),
        "fused step: {n} elements are not rows of {cols}"
    );
    let rows = n / cols;
    let expected = match along {
        Along::Rows => rows,
        Along::Columns => cols,
    };
    assert_eq!(
        vector.len(),
        expected,
        "fused step: the broadcast vector must have one entry per {along:?} of [{rows}, {cols}]"
    );
    let rows_per_job = (CHUNK / cols).max(1);
    if rows <= rows_per_job || rayon::current_num_threads() == 1 {
        return run_rows(param, reads, states, 0, cols, vector, along, update);
    }
    let job = rows_per_job * cols;
    let mut read_chunks = reads.map(|r| r.chunks(job));
    let mut state_chunks = states.map(|s| s.chunks_mut(job));
    let jobs: Vec<_> = param
        .chunks_mut(job)
        .enumerate()
        .map(|(j, p)| {
            let r: [&[f32]; R] =
                std::array::from_fn(|k| read_chunks[k].next().expect("same length"));
            let s: [&mut [f32]; K] =
                std::array::from_fn(|k| state_chunks[k].next().expect("same length"));
            (p, r, s, j * rows_per_job)
        })
        .collect();
    jobs.into_par_iter()
        .map(|(p, r, s, first_row)| run_rows(p, r, s, first_row, cols, vector, along, update))
        .sum()
}

/// Whole rows starting at row `first_row`, on the widest instruction set the CPU has.
#[allow(clippy::too_many_arguments)]
fn run_rows<const R: usize, const K: usize>(
    param: &mut [f32],
    reads: [&[f32]; R],
    states: [&mut [f32]; K],
    first_row: usize,
    cols: usize,
    vector: &[f32],
    along: Along,
    update: &impl BroadcastUpdate<R, K>,
) -> usize {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        return unsafe {
            run_rows_avx2(param, reads, states, first_row, cols, vector, along, update)
        };
    }
    run_rows_portable(param, reads, states, first_row, cols, vector, along, update)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
fn run_rows_avx2<const R: usize, const K: usize>(
    param: &mut [f32],
    reads: [&[f32]; R],
    states: [&mut [f32]; K],
    first_row: usize,
    cols: usize,
    vector: &[f32],
    along: Along,
    update: &impl BroadcastUpdate<R, K>,
) -> usize {
    run_rows_portable(param, reads, states, first_row, cols, vector, along, update)
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn run_rows_portable<const R: usize, const K: usize>(
    param: &mut [f32],
    reads: [&[f32]; R],
    mut states: [&mut [f32]; K],
    first_row: usize,
    cols: usize,
    vector: &[f32],
    along: Along,
    update: &impl BroadcastUpdate<R, K>,
) -> usize {
    // A local copy of the closure, as in `run_chunk_portable`.
    let update = *update;
    let mut counted = 0usize;
    for (row, p) in param.chunks_mut(cols).enumerate() {
        let start = row * cols;
        let r: [&[f32]; R] = reads.map(|x| &x[start..start + cols]);
        let s: [&mut [f32]; K] = states.each_mut().map(|x| &mut x[start..start + cols]);
        counted += match along {
            Along::Rows => {
                let value = first_row + row;
                row_loop::<R, K, false>(p, r, s, &vector[value..value + 1], update)
            }
            Along::Columns => row_loop::<R, K, true>(p, r, s, vector, update),
        };
    }
    counted
}

/// One row: the broadcast value is `vector[i]` (`COLUMNS`) or the row's `vector[0]`, a constant
/// the compiler keeps in a register; both loops vectorise like `run_chunk_portable`'s.
#[inline(always)]
fn row_loop<const R: usize, const K: usize, const COLUMNS: bool>(
    param: &mut [f32],
    reads: [&[f32]; R],
    mut states: [&mut [f32]; K],
    vector: &[f32],
    update: impl BroadcastUpdate<R, K>,
) -> usize {
    let n = param.len();
    let reads: [&[f32]; R] = reads.map(|r| &r[..n]);
    for s in states.iter_mut() {
        let _ = &s[..n];
    }
    let vector = if COLUMNS { &vector[..n] } else { &vector[..1] };
    let constant = vector[0];
    let mut counted = 0usize;
    for i in 0..n {
        let r: [f32; R] = std::array::from_fn(|j| reads[j][i]);
        let mut s: [f32; K] = std::array::from_fn(|k| states[k][i]);
        let b = if COLUMNS { vector[i] } else { constant };
        counted += update(&mut param[i], r, b, &mut s) as usize;
        for k in 0..K {
            states[k][i] = s[k];
        }
    }
    counted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_element_is_updated_once_in_parallel_and_serial() {
        for n in [0, 1, 7, CHUNK + 3, 5 * CHUNK + 11] {
            let mut p: Vec<f32> = (0..n).map(|i| i as f32).collect();
            let g: Vec<f32> = (0..n).map(|i| 2.0 * i as f32).collect();
            let mut m = vec![1.0f32; n];
            let counted = for_each(
                &mut p,
                [&g],
                [&mut m],
                &|p: &mut f32, [g]: [f32; 1], [m]: &mut [f32; 1]| {
                    *m += g;
                    *p -= 0.5 * g;
                    u32::from(g >= 10.0)
                },
            );
            assert_eq!(
                counted,
                n.saturating_sub(5),
                "elements with 2i >= 10 of {n}"
            );
            for i in 0..n {
                assert_eq!(p[i], i as f32 - i as f32, "p[{i}] of {n}");
                assert_eq!(m[i], 1.0 + 2.0 * i as f32, "m[{i}] of {n}");
            }
        }
    }

    #[test]
    #[should_panic(expected = "every buffer must hold the parameter's 3 elements")]
    fn a_short_buffer_is_refused() {
        let mut p = vec![0.0f32; 3];
        let g = vec![0.0f32; 2];
        for_each(
            &mut p,
            [&g],
            [],
            &|_: &mut f32, _: [f32; 1], _: &mut [f32; 0]| 0,
        );
    }

    #[test]
    fn a_broadcast_vector_reaches_its_row_or_column() {
        // One small job, and 2 rows per job at cols = CHUNK / 3 + 1 (20 jobs).
        for (rows, cols) in [(2, 3), (40, CHUNK / 3 + 1)] {
            let n = rows * cols;
            for along in [Along::Rows, Along::Columns] {
                let len = if along == Along::Rows { rows } else { cols };
                let vector: Vec<f32> = (0..len).map(|k| 1.0 + k as f32).collect();
                let g: Vec<f32> = (0..n).map(|i| (i % 7) as f32).collect();
                let mut p = vec![0.0f32; n];
                let mut m = vec![1.0f32; n];
                let counted = for_each_broadcast(
                    &mut p,
                    [&g],
                    [&mut m],
                    cols,
                    &vector,
                    along,
                    &|p: &mut f32, [g]: [f32; 1], b: f32, [m]: &mut [f32; 1]| {
                        *m += g;
                        *p = b;
                        u32::from(b == 1.0)
                    },
                );
                let ones = if along == Along::Rows { cols } else { rows };
                assert_eq!(counted, ones, "{along:?} [{rows}, {cols}]");
                for i in 0..n {
                    let k = if along == Along::Rows {
                        i / cols
                    } else {
                        i % cols
                    };
                    assert_eq!(p[i], vector[k], "{along:?} [{rows}, {cols}] p[{i}]");
                    assert_eq!(m[i], 1.0 + g[i], "{along:?} [{rows}, {cols}] m[{i}]");
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "one entry per Rows of [2, 3]")]
    fn a_broadcast_vector_of_the_wrong_length_is_refused() {
        let mut p = vec![0.0f32; 6];
        for_each_broadcast(
            &mut p,
            [],
            [],
            3,
            &[1.0; 3],
            Along::Rows,
            &|_: &mut f32, _: [f32; 0], _: f32, _: &mut [f32; 0]| 0,
        );
    }
}
