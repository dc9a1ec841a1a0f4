//! Is Adan's fused step bound by memory or by arithmetic? (issue #8's "≤ 1.5x fused Adam" goal)
//!
//! Times three plain Rust loops over 16M f32 per buffer, split over the machine's threads, with
//! no Burn and no firebox in between: Adam's update (4 buffers read, 3 written), Adan's update as
//! `FusedAdan` computes it (Burn's four divisions; 6 read, 5 written) and the same Adan update with
//! one division. If the two Adan loops take the same time, the step is memory-bound and its floor
//! is the ratio of bytes moved (44 / 28 = 1.57x), whatever the arithmetic.
//!
//! ```sh
//! cargo run --release --example adan_probe            # FIREBOX_PROBE_MIB=64 (per buffer) by default
//! ```

use std::time::Instant;

/// A buffer shared by the threads, each writing only its own disjoint range.
struct Shared(*mut f32);
// SAFETY: every thread touches a disjoint range of the buffer (see `split`).
unsafe impl Sync for Shared {}

impl Shared {
    /// The range `[start, end)` as a slice.
    ///
    /// # Safety
    /// No other live slice may overlap the range.
    #[allow(clippy::mut_from_ref)]
    unsafe fn range(&self, start: usize, end: usize) -> &mut [f32] {
        // SAFETY: the caller keeps ranges disjoint; the buffer outlives the threads.
        unsafe { std::slice::from_raw_parts_mut(self.0.add(start), end - start) }
    }
}

/// Runs `f(start, end)` on `threads` disjoint ranges of `[0, n)` in parallel.
fn split(n: usize, threads: usize, f: impl Fn(usize, usize) + Sync) {
    std::thread::scope(|s| {
        let chunk = n.div_ceil(threads);
        for t in 0..threads {
            let f = &f;
            s.spawn(move || f(t * chunk, ((t + 1) * chunk).min(n)));
        }
    });
}

fn main() {
    let mib: usize = std::env::var("FIREBOX_PROBE_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let n = mib * (1 << 20) / 4;
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
    let mut buffers: Vec<Vec<f32>> = (0..6)
        .map(|k| {
            (0..n)
                .map(|i| ((i * 7 + k) % 13) as f32 * 0.01 + 0.1)
                .collect()
        })
        .collect();
    let b: Vec<Shared> = buffers.iter_mut().map(|v| Shared(v.as_mut_ptr())).collect();
    let (b1, b2, b3) = (0.98f32, 0.92f32, 0.99f32);
    let (f1, f2, f3) = (1.0 - b1, 1.0 - b2, 1.0 - b3);
    let (bias_1, bias_2, bias_3_sqrt, eps, lr) = (0.5f32, 0.4f32, 0.3f32, 1e-8f32, 1e-3f32);
    let (inv_1, nesterov_2, inv_3) = (1.0 / bias_1, b2 / bias_2, 1.0 / bias_3_sqrt);
    println!("{n} f32 per buffer, {threads} threads; ms per pass (best of 5)");
    let names = ["Adam", "Adan, four divisions", "Adan, one division"];
    let mut best = [f64::INFINITY; 3];
    for _ in 0..5 {
        for (variant, best) in best.iter_mut().enumerate() {
            let start = Instant::now();
            split(n, threads, |s, e| {
                // SAFETY: `split` hands each thread a disjoint range.
                let [p, g, m, v, d, neg] = std::array::from_fn(|k| unsafe { b[k].range(s, e) });
                // One loop per variant, so that each vectorises on its own.
                match variant {
                    0 => {
                        for i in 0..p.len() {
                            let g = g[i];
                            m[i] = m[i] * b1 + g * f1;
                            v[i] = v[i] * b3 + g * g * f3;
                            p[i] -= lr * (m[i] / bias_1) / (v[i].sqrt() / bias_3_sqrt + eps);
                        }
                    }
                    1 => {
                        for i in 0..p.len() {
                            let g = g[i];
                            let diff = neg[i] + g;
                            let nesterov = diff * b2 + g;
                            m[i] = m[i] * b1 + g * f1;
                            d[i] = d[i] * b2 + diff * f2;
                            v[i] = v[i] * b3 + nesterov * nesterov * f3;
                            neg[i] = -g;
                            let denom = v[i].sqrt() / bias_3_sqrt + eps;
                            let u = (m[i] / bias_1) / denom + ((d[i] * b2) / bias_2) / denom;
                            p[i] -= u * lr;
                        }
                    }
                    _ => {
                        for i in 0..p.len() {
                            let g = g[i];
                            let diff = neg[i] + g;
                            let nesterov = diff * b2 + g;
                            m[i] = m[i] * b1 + g * f1;
                            d[i] = d[i] * b2 + diff * f2;
                            v[i] = v[i] * b3 + nesterov * nesterov * f3;
                            neg[i] = -g;
                            let u =
                                (m[i] * inv_1 + d[i] * nesterov_2) / (v[i].sqrt() * inv_3 + eps);
                            p[i] -= u * lr;
                        }
                    }
                }
            });
            *best = best.min(start.elapsed().as_secs_f64() * 1e3);
        }
    }
    for (name, ms) in names.iter().zip(best) {
        println!("{name:<22} {ms:8.2} ms  {:.2}x Adam", ms / best[0]);
    }
    // Keeps the loops from being optimised away.
    println!("checksum {}", buffers[0][n / 2]);
}
