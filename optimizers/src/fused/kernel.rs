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
}
