//! HAWQ-V2 bit allocation: the exact Pareto frontier of model size against the trace-weighted
//! quantization perturbation, and the best allocation under a size budget.
//!
//! Dong, Yao, Arfeen, Gholami, Mahoney, Keutzer, "HAWQ-V2: Hessian Aware trace-Weighted
//! Quantization of Neural Networks", NeurIPS 2020 (arXiv:1911.03852). In its Pareto-frontier
//! bit-precision selection (§3.3, see also the [`hawq`](super) module docs) the paper scores a
//! mixed-precision configuration `b = (b_1, …, b_L)` by the trace-weighted perturbation
//!
//! ```text
//! Ω(b) = Σ_i Ω_i = Σ_i Tr(H_i)/n_i · ‖Q_{b_i}(W_i) − W_i‖²₂          size(b) = Σ_i n_i · b_i
//! ```
//!
//! and, instead of choosing bit widths by hand (HAWQ-V1's limitation (ii) in the abstract),
//! takes the configuration on the Pareto frontier of (`size`, `Ω`) with the smallest `Ω` that
//! meets the size constraint. The average traces `Tr(H_i)/n_i` and the perturbations are inputs
//! here ([`LayerSensitivity`]); this module is only the selection step, host code with std only.
//!
//! # Definitions used (exactly)
//!
//! * `Ω(b)` is summed in float64 over layers `0, 1, …, L−1` in that order, each term the rounded
//!   product `avg_hessian_trace[i] · perturbation[i][j]`; `size(b)` is an exact integer.
//! * The **frontier** ([`pareto_frontier`]) lists, by increasing size, every configuration whose
//!   `Ω` is strictly below that of *every other* configuration of smaller or equal size. Two
//!   configurations with identical size and identical `Ω` therefore both stay off it.
//! * [`allocate`] returns `argmin Ω` subject to `size <= budget` (inclusive). Among equal `Ω` it
//!   returns the smallest size; among configurations identical in both size and `Ω` (off the
//!   frontier by the definition above) a deterministic representative.
//!
//! # Algorithm
//!
//! Enumerating `B^L` configurations is hopeless beyond a dozen layers, so both functions run an
//! exact sequential Pareto merge (the dynamic program of the multiple-choice knapsack): after
//! layer `k` it keeps the *staircase* of partial configurations over layers `0..=k`, i.e. for
//! each size the smallest partial `Ω`, and only if that is strictly below the `Ω` of every
//! smaller size. A partial configuration `p` that another one `p'` weakly dominates
//! (`size(p') <= size(p)`, `Ω(p') <= Ω(p)`) is dropped: integer addition and correctly rounded
//! float addition are monotone, so `p' + t` weakly dominates `p + t` for every completion `t`, and
//! no completion of `p` can be strictly better than all other configurations.
//!
//! Rounding makes one case subtle: two partial sums that differ can become equal once later terms
//! are added (`1 + 2⁻⁵²` and `1` both give `2` after adding `1`). To keep the frontier exact, each
//! staircase entry carries the smallest partial `Ω` among the *other* partial configurations of
//! its size that it displaced, extended with the same later terms; an entry whose carried value
//! ends equal to its own `Ω` is tied with another configuration and is left off the frontier
//! (it is still a valid [`allocate`] answer). The cost is `O(Σ_k |staircase_k| · B · log)`; the
//! staircase is small in practice (thousands of entries for 50 layers × 4 bit widths).

use std::error::Error;
use std::fmt;

/// One layer's inputs to the allocation.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerSensitivity {
    /// The layer's name (used in error messages).
    pub name: String,
    /// Number of weights `n_i` (the size of the layer at `b` bits is `n_i · b`).
    pub n_params: usize,
    /// The average Hessian trace `Tr(H_i) / n_i` (e.g. from Hutchinson's estimator).
    pub avg_hessian_trace: f64,
    /// `‖Q_b(W_i) − W_i‖²₂`, one per candidate bit width, in the order of `candidate_bits`.
    pub perturbation: Vec<f64>,
}

/// A bit width per layer, with the resulting size and trace-weighted perturbation.
#[derive(Clone, Debug, PartialEq)]
pub struct Allocation {
    /// Bit width of each layer, in layer order.
    pub bits: Vec<u32>,
    /// `Σ_i n_i · bits_i`.
    pub size_bits: u64,
    /// `Ω = Σ_i avg_hessian_trace_i · perturbation_i(bits_i)`, summed in layer order.
    pub omega: f64,
}

/// Why an allocation could not be computed; every variant names the offending value.
#[derive(Clone, Debug, PartialEq)]
pub enum AllocationError {
    /// No layers were given.
    NoLayers,
    /// No candidate bit widths were given.
    NoCandidateBits,
    /// Candidate bit widths that are not strictly increasing (a duplicate or out of order).
    CandidateBitsOrder {
        /// Index of the offending entry.
        index: usize,
        /// The entry before it.
        previous: u32,
        /// The offending entry.
        bits: u32,
    },
    /// A layer whose perturbation list does not have one entry per candidate bit width.
    PerturbationLength {
        /// The layer.
        layer: String,
        /// Entries given.
        len: usize,
        /// Number of candidate bit widths.
        expected: usize,
    },
    /// A negative or non-finite average Hessian trace.
    InvalidTrace {
        /// The layer.
        layer: String,
        /// The value.
        value: f64,
    },
    /// A negative or non-finite perturbation.
    InvalidPerturbation {
        /// The layer.
        layer: String,
        /// The candidate bit width it belongs to.
        bits: u32,
        /// The value.
        value: f64,
    },
    /// The largest model size does not fit in a `u64` number of bits.
    SizeOverflow {
        /// The layer at which the running total overflowed.
        layer: String,
    },
    /// A budget below the smallest possible model.
    BudgetTooSmall {
        /// The budget.
        budget_bits: u64,
        /// The smallest possible size.
        min_size_bits: u64,
        /// The smallest candidate bit width.
        min_bits: u32,
    },
}

impl fmt::Display for AllocationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllocationError::NoLayers => write!(f, "no layers to allocate bit widths to"),
            AllocationError::NoCandidateBits => write!(f, "no candidate bit widths given"),
            AllocationError::CandidateBitsOrder {
                index,
                previous,
                bits,
            } => {
                if bits == previous {
                    write!(
                        f,
                        "candidate bit widths must be strictly increasing: {bits} appears twice \
                         (indices {} and {index})",
                        index - 1
                    )
                } else {
                    write!(
                        f,
                        "candidate bit widths must be strictly increasing: {bits} at index \
                         {index} follows {previous}"
                    )
                }
            }
            AllocationError::PerturbationLength {
                layer,
                len,
                expected,
            } => write!(
                f,
                "layer `{layer}` has {len} perturbation values, but there are {expected} \
                 candidate bit widths"
            ),
            AllocationError::InvalidTrace { layer, value } => write!(
                f,
                "layer `{layer}` has average Hessian trace {value}; it must be finite and \
                 non-negative"
            ),
            AllocationError::InvalidPerturbation { layer, bits, value } => write!(
                f,
                "layer `{layer}` has perturbation {value} at {bits} bits; it must be finite and \
                 non-negative"
            ),
            AllocationError::SizeOverflow { layer } => {
                write!(f, "the model size in bits overflows u64 at layer `{layer}`")
            }
            AllocationError::BudgetTooSmall {
                budget_bits,
                min_size_bits,
                min_bits,
            } => write!(
                f,
                "budget {budget_bits} bits is below the smallest possible model, {min_size_bits} \
                 bits (every layer at {min_bits} bits)"
            ),
        }
    }
}

impl Error for AllocationError {}

/// The exact Pareto frontier of (size, Ω), by increasing size: every configuration whose Ω is
/// strictly below that of every other configuration of smaller or equal size (so Ω strictly
/// decreases along it). The first entry is the smallest model (every layer at the smallest
/// bit width, unless that Ω ties another configuration of the same size).
pub fn pareto_frontier(
    layers: &[LayerSensitivity],
    candidate_bits: &[u32],
) -> Result<Vec<Allocation>, AllocationError> {
    let staircase = Staircase::build(layers, candidate_bits)?;
    Ok(staircase
        .entries
        .iter()
        .filter(|e| e.shadow != Some(e.omega))
        .map(|e| staircase.allocation(e, candidate_bits))
        .collect())
}

/// The configuration of smallest Ω among those with `size_bits <= budget_bits` (inclusive),
/// the smallest such size among equal Ω.
pub fn allocate(
    layers: &[LayerSensitivity],
    candidate_bits: &[u32],
    budget_bits: u64,
) -> Result<Allocation, AllocationError> {
    let staircase = Staircase::build(layers, candidate_bits)?;
    let fitting = staircase.entries.partition_point(|e| e.size <= budget_bits);
    if fitting == 0 {
        return Err(AllocationError::BudgetTooSmall {
            budget_bits,
            min_size_bits: staircase.entries[0].size,
            min_bits: candidate_bits[0],
        });
    }
    Ok(staircase.allocation(&staircase.entries[fitting - 1], candidate_bits))
}

/// Checks the inputs; returns the largest possible size (which then bounds every sum).
fn validate(layers: &[LayerSensitivity], candidate_bits: &[u32]) -> Result<u64, AllocationError> {
    if layers.is_empty() {
        return Err(AllocationError::NoLayers);
    }
    let Some(&max_bits) = candidate_bits.last() else {
        return Err(AllocationError::NoCandidateBits);
    };
    for (index, pair) in candidate_bits.windows(2).enumerate() {
        if pair[1] <= pair[0] {
            return Err(AllocationError::CandidateBitsOrder {
                index: index + 1,
                previous: pair[0],
                bits: pair[1],
            });
        }
    }
    let mut max_size = 0u64;
    for layer in layers {
        if layer.perturbation.len() != candidate_bits.len() {
            return Err(AllocationError::PerturbationLength {
                layer: layer.name.clone(),
                len: layer.perturbation.len(),
                expected: candidate_bits.len(),
            });
        }
        let trace = layer.avg_hessian_trace;
        if !trace.is_finite() || trace < 0.0 {
            return Err(AllocationError::InvalidTrace {
                layer: layer.name.clone(),
                value: trace,
            });
        }
        if let Some((&bits, &value)) = candidate_bits
            .iter()
            .zip(&layer.perturbation)
            .find(|(_, v)| !v.is_finite() || **v < 0.0)
        {
            return Err(AllocationError::InvalidPerturbation {
                layer: layer.name.clone(),
                bits,
                value,
            });
        }
        max_size = u64::try_from(layer.n_params)
            .ok()
            .and_then(|n| n.checked_mul(u64::from(max_bits)))
            .and_then(|s| s.checked_add(max_size))
            .ok_or_else(|| AllocationError::SizeOverflow {
                layer: layer.name.clone(),
            })?;
    }
    Ok(max_size)
}

/// A link of a configuration's path: the choice made at one layer and the link of the layers
/// before it.
#[derive(Clone, Copy, Debug)]
struct Node {
    parent: u32,
    choice: u32,
}

/// The parent of a first-layer node.
const ROOT: u32 = u32::MAX;

/// A (partial) configuration on the staircase.
#[derive(Clone, Copy, Debug)]
struct Entry {
    size: u64,
    omega: f64,
    /// The smallest Ω among other configurations of the same size that this entry displaced,
    /// carried along with the same terms; equal to `omega` exactly when it is tied.
    shadow: Option<f64>,
    /// Its last link (`ROOT` before the first layer).
    node: u32,
}

/// The staircase after the last layer and the links to read the configurations back.
struct Staircase {
    entries: Vec<Entry>,
    nodes: Vec<Node>,
    n_layers: usize,
}

impl Staircase {
    fn build(
        layers: &[LayerSensitivity],
        candidate_bits: &[u32],
    ) -> Result<Staircase, AllocationError> {
        validate(layers, candidate_bits)?;
        let mut nodes: Vec<Node> = Vec::new();
        let mut entries = vec![Entry {
            size: 0,
            omega: 0.0,
            shadow: None,
            node: ROOT,
        }];
        // (entry, choice) candidates for the next staircase.
        let mut candidates: Vec<(Entry, u32)> = Vec::new();
        for layer in layers {
            candidates.clear();
            candidates.reserve(entries.len() * candidate_bits.len());
            let n = layer.n_params as u64;
            let terms: Vec<(u64, f64)> = candidate_bits
                .iter()
                .zip(&layer.perturbation)
                .map(|(&b, &p)| (n * u64::from(b), layer.avg_hessian_trace * p))
                .collect();
            for entry in &entries {
                for (choice, &(size, term)) in terms.iter().enumerate() {
                    let next = Entry {
                        size: entry.size + size,
                        omega: entry.omega + term,
                        shadow: entry.shadow.map(|s| s + term),
                        node: entry.node,
                    };
                    candidates.push((next, choice as u32));
                }
            }
            // Stable: identical (size, Ω) keep their generation order, so the representative
            // of a tie is deterministic.
            candidates
                .sort_by(|(a, _), (b, _)| a.size.cmp(&b.size).then(a.omega.total_cmp(&b.omega)));
            entries.clear();
            let mut start = 0;
            while start < candidates.len() {
                let (best, choice) = candidates[start];
                let mut end = start + 1;
                while end < candidates.len() && candidates[end].0.size == best.size {
                    end += 1;
                }
                let improves = entries.last().is_none_or(|last| best.omega < last.omega);
                if improves {
                    // The runner-up of this size bounds every other displaced configuration
                    // (their Ω and carried values are all >= its Ω).
                    let shadow = match (best.shadow, candidates.get(start + 1)) {
                        (s, Some((second, _))) if end > start + 1 => {
                            Some(s.map_or(second.omega, |s| s.min(second.omega)))
                        }
                        (s, _) => s,
                    };
                    let parent = best.node;
                    nodes.push(Node { parent, choice });
                    entries.push(Entry {
                        size: best.size,
                        omega: best.omega,
                        shadow,
                        node: (nodes.len() - 1) as u32,
                    });
                }
                start = end;
            }
        }
        Ok(Staircase {
            entries,
            nodes,
            n_layers: layers.len(),
        })
    }

    /// Reads an entry's configuration back from its links.
    fn allocation(&self, entry: &Entry, candidate_bits: &[u32]) -> Allocation {
        let mut bits = vec![0; self.n_layers];
        let mut node = entry.node;
        for slot in bits.iter_mut().rev() {
            let link = self.nodes[node as usize];
            *slot = candidate_bits[link.choice as usize];
            node = link.parent;
        }
        debug_assert_eq!(node, ROOT);
        Allocation {
            bits,
            size_bits: entry.size,
            omega: entry.omega,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_rng::SplitMix64 as Rng;

    fn layer(name: &str, n_params: usize, trace: f64, perturbation: &[f64]) -> LayerSensitivity {
        LayerSensitivity {
            name: name.to_string(),
            n_params,
            avg_hessian_trace: trace,
            perturbation: perturbation.to_vec(),
        }
    }

    /// A random instance. `coarse` draws small integers everywhere so that equal sizes and
    /// exactly equal Ω (ties) are frequent.
    fn instance(rng: &mut Rng, coarse: bool) -> (Vec<LayerSensitivity>, Vec<u32>) {
        let n_layers = 1 + rng.below(5) as usize;
        let pool = [2u32, 3, 4, 6, 8];
        let mut bits: Vec<u32> = pool.iter().copied().filter(|_| rng.below(3) != 0).collect();
        if bits.is_empty() {
            bits.push(4);
        }
        let layers = (0..n_layers)
            .map(|i| {
                let (n, trace) = if coarse {
                    (rng.below(4) as usize, rng.below(3) as f64)
                } else {
                    (64 * (1 + rng.below(40)) as usize, rng.unit())
                };
                // Decreasing in the bit width, like real quantization error (not required).
                let mut p: Vec<f64> = (0..bits.len())
                    .map(|_| {
                        if coarse {
                            rng.below(4) as f64
                        } else {
                            rng.unit() * 10.0
                        }
                    })
                    .collect();
                if rng.below(4) != 0 {
                    p.sort_by(|a, b| b.total_cmp(a));
                }
                layer(&format!("l{i}"), n, trace, &p)
            })
            .collect();
        (layers, bits)
    }

    /// Every configuration with its size and Ω (summed in layer order).
    fn enumerate(layers: &[LayerSensitivity], bits: &[u32]) -> Vec<Allocation> {
        let mut all = vec![Allocation {
            bits: vec![],
            size_bits: 0,
            omega: 0.0,
        }];
        for layer in layers {
            let mut next = Vec::new();
            for a in &all {
                for (j, &b) in bits.iter().enumerate() {
                    let mut chosen = a.bits.clone();
                    chosen.push(b);
                    next.push(Allocation {
                        bits: chosen,
                        size_bits: a.size_bits + layer.n_params as u64 * u64::from(b),
                        omega: a.omega + layer.avg_hessian_trace * layer.perturbation[j],
                    });
                }
            }
            all = next;
        }
        all
    }

    /// The frontier straight from its definition.
    fn brute_frontier(all: &[Allocation]) -> Vec<Allocation> {
        let mut frontier: Vec<Allocation> = all
            .iter()
            .enumerate()
            .filter(|(i, c)| {
                all.iter()
                    .enumerate()
                    .all(|(k, o)| k == *i || o.size_bits > c.size_bits || c.omega < o.omega)
            })
            .map(|(_, c)| c.clone())
            .collect();
        frontier.sort_by_key(|c| c.size_bits);
        frontier
    }

    #[test]
    fn frontier_matches_brute_force() {
        let mut rng = Rng(2020);
        let mut ties_seen = 0;
        for round in 0..300 {
            let coarse = round % 2 == 1;
            let (layers, bits) = instance(&mut rng, coarse);
            let all = enumerate(&layers, &bits);
            let expected = brute_frontier(&all);
            let got = pareto_frontier(&layers, &bits).unwrap();
            assert_eq!(got, expected, "round {round}: {layers:?} {bits:?}");
            let staircase = Staircase::build(&layers, &bits).unwrap();
            ties_seen += staircase.entries.len() - got.len();
            // allocate() against brute force at random budgets (and every frontier size).
            let min = all.iter().map(|a| a.size_bits).min().unwrap();
            let max = all.iter().map(|a| a.size_bits).max().unwrap();
            let mut budgets: Vec<u64> = got.iter().map(|a| a.size_bits).collect();
            budgets.extend((0..5).map(|_| min + rng.below(max - min + 1)));
            for budget in budgets {
                let best = all
                    .iter()
                    .filter(|a| a.size_bits <= budget)
                    .map(|a| a.omega)
                    .fold(f64::INFINITY, f64::min);
                let smallest = all
                    .iter()
                    .filter(|a| a.size_bits <= budget && a.omega == best)
                    .map(|a| a.size_bits)
                    .min()
                    .unwrap();
                let a = allocate(&layers, &bits, budget).unwrap();
                assert_eq!((a.omega, a.size_bits), (best, smallest), "round {round}");
                assert!(
                    all.contains(&a),
                    "round {round}: {a:?} is not a configuration"
                );
            }
            if min > 0 {
                assert!(matches!(
                    allocate(&layers, &bits, min - 1),
                    Err(AllocationError::BudgetTooSmall { .. })
                ));
            }
        }
        assert!(
            ties_seen > 20,
            "the coarse instances must exercise ties ({ties_seen})"
        );
    }

    #[test]
    fn ties_created_by_rounding_stay_off_the_frontier() {
        // Layer 0 has no weights, so its two choices have the same size; their partial Ω differ
        // by one ulp of 1.0 (2⁻⁵²), but after adding 1.0 both round to 2.0 (ties to even).
        let layers = [
            layer("free", 0, 1.0, &[1.0 + f64::EPSILON, 1.0]),
            layer("w", 10, 1.0, &[1.0, 0.5]),
        ];
        let bits = [2, 4];
        let all = enumerate(&layers, &bits);
        assert_eq!(all[0].omega, all[2].omega);
        assert_eq!(all[0].omega, 2.0);
        let expected = brute_frontier(&all);
        let got = pareto_frontier(&layers, &bits).unwrap();
        assert_eq!(got, expected);
        assert_eq!(
            got.len(),
            1,
            "only 1.5 vs 1.5 + 2^-52 distinguish at size 40: {got:?}"
        );
        assert_eq!(got[0].bits, [4, 4]);
        // allocate() still answers at the tied size, with a tied configuration.
        let a = allocate(&layers, &bits, 20).unwrap();
        assert_eq!((a.size_bits, a.omega), (20, 2.0));
    }

    #[test]
    fn budget_equal_to_a_frontier_size_is_feasible() {
        let mut rng = Rng(9);
        let (layers, bits) = loop {
            let (l, b) = instance(&mut rng, false);
            if l.len() >= 3 && b.len() >= 2 {
                break (l, b);
            }
        };
        let frontier = pareto_frontier(&layers, &bits).unwrap();
        assert!(frontier.len() >= 3);
        for pair in frontier.windows(2) {
            assert_eq!(
                allocate(&layers, &bits, pair[1].size_bits).unwrap(),
                pair[1]
            );
            assert_eq!(
                allocate(&layers, &bits, pair[1].size_bits - 1).unwrap(),
                pair[0]
            );
        }
        let top = frontier.last().unwrap();
        assert_eq!(allocate(&layers, &bits, u64::MAX).unwrap(), *top);
    }

    #[test]
    fn larger_trace_gets_more_bits_at_equal_size() {
        let p = [0.8, 0.05];
        for (t0, t1, expected) in [(1.0, 3.0, [2, 4]), (3.0, 1.0, [4, 2])] {
            let layers = [layer("a", 100, t0, &p), layer("b", 100, t1, &p)];
            let a = allocate(&layers, &[2, 4], 600).unwrap();
            assert_eq!(a.bits, expected);
            assert_eq!(a.size_bits, 600);
            assert_eq!(
                a.omega,
                t0 * p[expected[0] as usize / 2 - 1] + t1 * p[expected[1] as usize / 2 - 1]
            );
        }
    }

    #[test]
    fn frontier_shape_and_scale() {
        // 50 layers × 4 bit widths: exact, and fast enough for a debug-build test.
        let mut rng = Rng(50);
        let bits = [2, 3, 4, 8];
        let layers: Vec<_> = (0..50)
            .map(|i| {
                let n = 1024 * (1 + rng.below(64) as usize);
                let base = rng.unit() * 4.0 + 0.1;
                let p: Vec<f64> = bits
                    .iter()
                    .map(|&b| base * 4f64.powi(-(b as i32)))
                    .collect();
                layer(&format!("l{i}"), n, rng.unit(), &p)
            })
            .collect();
        let frontier = pareto_frontier(&layers, &bits).unwrap();
        assert!(frontier.len() > 100);
        assert_eq!(frontier[0].bits, vec![2; 50]);
        assert_eq!(frontier.last().unwrap().bits, vec![8; 50]);
        for pair in frontier.windows(2) {
            assert!(pair[0].size_bits < pair[1].size_bits);
            assert!(pair[0].omega > pair[1].omega);
        }
        for a in &frontier {
            let size: u64 = layers
                .iter()
                .zip(&a.bits)
                .map(|(l, &b)| l.n_params as u64 * u64::from(b))
                .sum();
            let omega = layers.iter().zip(&a.bits).fold(0.0, |acc, (l, &b)| {
                let j = bits.iter().position(|&c| c == b).unwrap();
                acc + l.avg_hessian_trace * l.perturbation[j]
            });
            assert_eq!((size, omega), (a.size_bits, a.omega));
        }
        let mid = frontier[frontier.len() / 2].size_bits + 1;
        let a = allocate(&layers, &bits, mid).unwrap();
        assert_eq!(a, frontier[frontier.len() / 2]);
    }

    #[test]
    fn errors_name_the_problem() {
        let p = [1.0, 0.5, 0.1];
        let good = vec![layer("conv1", 256, 1.0, &p), layer("fc", 512, 0.5, &p)];
        let bits = [2, 4, 8];
        let msg = |e: AllocationError| e.to_string();
        assert_eq!(
            msg(allocate(&good, &bits, 1000).unwrap_err()),
            "budget 1000 bits is below the smallest possible model, 1536 bits (every layer at \
             2 bits)"
        );
        assert_eq!(allocate(&good, &bits, 1536).unwrap().bits, [2, 2]);
        assert_eq!(
            msg(pareto_frontier(&[], &bits).unwrap_err()),
            "no layers to allocate bit widths to"
        );
        assert_eq!(
            msg(pareto_frontier(&good, &[]).unwrap_err()),
            "no candidate bit widths given"
        );
        assert_eq!(
            msg(pareto_frontier(&good, &[2, 4, 4]).unwrap_err()),
            "candidate bit widths must be strictly increasing: 4 appears twice (indices 1 and 2)"
        );
        assert_eq!(
            msg(pareto_frontier(&good, &[2, 8, 4]).unwrap_err()),
            "candidate bit widths must be strictly increasing: 4 at index 2 follows 8"
        );
        let mut bad = good.clone();
        bad[1].perturbation.pop();
        assert_eq!(
            msg(pareto_frontier(&bad, &bits).unwrap_err()),
            "layer `fc` has 2 perturbation values, but there are 3 candidate bit widths"
        );
        let mut bad = good.clone();
        bad[0].avg_hessian_trace = -0.25;
        assert_eq!(
            msg(allocate(&bad, &bits, 10_000).unwrap_err()),
            "layer `conv1` has average Hessian trace -0.25; it must be finite and non-negative"
        );
        bad[0].avg_hessian_trace = f64::NAN;
        assert!(msg(allocate(&bad, &bits, 10_000).unwrap_err()).contains("trace NaN"));
        let mut bad = good.clone();
        bad[1].perturbation[2] = f64::INFINITY;
        assert_eq!(
            msg(pareto_frontier(&bad, &bits).unwrap_err()),
            "layer `fc` has perturbation inf at 8 bits; it must be finite and non-negative"
        );
        bad[1].perturbation[2] = -1.0;
        assert!(msg(pareto_frontier(&bad, &bits).unwrap_err()).contains("perturbation -1 at 8"));
        let huge = vec![layer("big", usize::MAX, 1.0, &p)];
        assert_eq!(
            msg(pareto_frontier(&huge, &bits).unwrap_err()),
            "the model size in bits overflows u64 at layer `big`"
        );
    }

    #[test]
    fn overflowing_omega_is_still_ordered() {
        // Finite inputs whose products overflow: Ω = ∞ ties at equal size, and sizes still order.
        let layers = [
            layer("a", 1, 1e300, &[1e300, 1.0]),
            layer("b", 1, 1e300, &[1e300, 1e300]),
        ];
        let frontier = pareto_frontier(&layers, &[2, 4]).unwrap();
        assert_eq!(frontier.len(), 1, "{frontier:?}");
        assert_eq!(frontier[0].bits, [2, 2]);
        let a = allocate(&layers, &[2, 4], 8).unwrap();
        assert_eq!(a.omega, f64::INFINITY);
    }
}
