//! Searched step schedules: choose *which* noise levels a few-step sampler visits.
//!
//! - [`bellman_optimal_steps`]: BOSS (Nguyen et al., "Bellman Optimal Step-size Straightening of
//!   Flow-Matching Models", ICLR 2024, §3.1): on a fine grid `t_0 > … > t_N` with a one-step cost
//!   `c(i, j)` (the local error of one solver step from `t_i` to `t_j` against a many-step
//!   reference trajectory), dynamic programming finds the K-step path `0 = i_0 < … < i_K = N`
//!   minimising `Σ c(i_k, i_{k+1})` — the Bellman recursion `V_k(j) = min_i V_{k−1}(i) + c(i, j)`,
//!   exact in O(K·N²) cost evaluations. [`reference_step_costs`] builds `c` from a reference
//!   trajectory and any one-step map.
//! - [`EvolutionarySearch`]: the evolutionary timestep search of AutoDiffusion (Li et al., ICCV
//!   2023, §3.3) and USF/S³'s search over solver schedules (Liu et al. 2023): a population of
//!   K-subsets of candidate timesteps evolves by mutation (swap one member for a non-member) and
//!   crossover (a random K-subset of two parents' union); the best survive. It works with any
//!   sampler: the caller's `quality` function runs its sampler on a schedule and returns a loss
//!   (lower is better; FID, an error to a reference, …).

use burn::tensor::Tensor;

use crate::sampler::SeededNoise;

/// The result of [`bellman_optimal_steps`].
#[derive(Clone, Debug, PartialEq)]
pub struct OptimalPath {
    /// Indices into the fine grid, `0 = i_0 < i_1 < … < i_K = N` (K + 1 values).
    pub indices: Vec<usize>,
    /// The summed cost of the path.
    pub cost: f64,
}

/// BOSS's dynamic program: the `steps`-step path from fine-grid index 0 to `n` with the least
/// total `cost(i, j)` (`i < j`). `cost` is evaluated once per pair.
///
/// # Panics
/// If `steps` is 0 or larger than `n`.
pub fn bellman_optimal_steps(
    n: usize,
    steps: usize,
    mut cost: impl FnMut(usize, usize) -> f64,
) -> OptimalPath {
    assert!(
        steps >= 1 && steps <= n,
        "steps = {steps} must be between 1 and the fine grid's {n} intervals"
    );
    let mut c = vec![f64::INFINITY; (n + 1) * (n + 1)];
    for i in 0..n {
        for j in i + 1..=n {
            c[i * (n + 1) + j] = cost(i, j);
        }
    }
    // value[k][j]: least cost of reaching j in k steps; from[k][j]: the argmin predecessor.
    let mut value = vec![vec![f64::INFINITY; n + 1]; steps + 1];
    let mut from = vec![vec![usize::MAX; n + 1]; steps + 1];
    value[0][0] = 0.0;
    for k in 1..=steps {
        for j in k..=n {
            for i in (k - 1)..j {
                let v = value[k - 1][i] + c[i * (n + 1) + j];
                if v < value[k][j] {
                    value[k][j] = v;
                    from[k][j] = i;
                }
            }
        }
    }
    let mut indices = vec![n];
    let mut j = n;
    for k in (1..=steps).rev() {
        j = from[k][j];
        indices.push(j);
    }
    indices.reverse();
    OptimalPath {
        indices,
        cost: value[steps][n],
    }
}

/// BOSS's cost matrix from a reference trajectory: `c(i, j) = mean((step(x_i, i, j) − x_j)²)`,
/// the mean squared local error of one solver step from fine level `i` to `j`, starting on the
/// reference state `reference[i]` (a many-step solution at every fine level).
pub fn reference_step_costs<const D: usize>(
    reference: &[Tensor<D>],
    mut step: impl FnMut(Tensor<D>, usize, usize) -> Tensor<D>,
) -> impl FnMut(usize, usize) -> f64 {
    let reference = reference.to_vec();
    move |i, j| {
        let got = step(reference[i].clone(), i, j);
        let err = (got - reference[j].clone()).powf_scalar(2.0).mean();
        err.into_scalar::<f32>() as f64
    }
}

/// Settings of the evolutionary schedule search.
#[derive(Clone, Debug)]
pub struct EvolutionarySearch {
    /// Schedules per generation.
    pub population: usize,
    /// Generations after the initial population.
    pub generations: usize,
    /// Children made by mutation per generation (the rest of the new population by crossover).
    pub mutations: usize,
    /// Seed of the search's random choices.
    pub seed: u64,
}

impl Default for EvolutionarySearch {
    /// AutoDiffusion's proportions at a size that suits a quick search: 16 schedules, 10
    /// generations, half the children by mutation.
    fn default() -> Self {
        Self {
            population: 16,
            generations: 10,
            mutations: 8,
            seed: 0,
        }
    }
}

/// What [`EvolutionarySearch::search`] found.
#[derive(Clone, Debug)]
pub struct SearchResult {
    /// The best schedule (candidate values, in the candidates' order).
    pub best: Vec<f64>,
    /// Its quality (lower is better).
    pub score: f64,
    /// The best score after the initial population and after each generation.
    pub history: Vec<f64>,
    /// Quality evaluations made.
    pub evaluations: usize,
}

impl EvolutionarySearch {
    /// Searches `k`-subsets of `candidates` (kept in the candidates' order, e.g. decreasing
    /// timesteps) for the lowest `quality`. `initial` schedules (e.g. the uniform grid) are seeded
    /// into the first population, so the result is never worse than them.
    ///
    /// # Panics
    /// If `k` is 0 or above `candidates.len()`, an initial schedule has the wrong size or a value
    /// not among the candidates, or the population is smaller than 2.
    pub fn search(
        &self,
        candidates: &[f64],
        k: usize,
        initial: &[Vec<f64>],
        mut quality: impl FnMut(&[f64]) -> f64,
    ) -> SearchResult {
        let n = candidates.len();
        assert!(
            k >= 1 && k <= n,
            "k = {k} must be between 1 and the {n} candidates"
        );
        assert!(
            self.population >= 2,
            "the population needs at least 2 schedules"
        );
        let mut rng = SeededNoise::new(self.seed);
        let mut evaluations = 0;
        let mut score = |set: &[usize], evaluations: &mut usize| {
            *evaluations += 1;
            let values: Vec<f64> = set.iter().map(|&i| candidates[i]).collect();
            let q = quality(&values);
            if q.is_nan() { f64::INFINITY } else { q }
        };
        let mut population: Vec<(Vec<usize>, f64)> = Vec::new();
        for schedule in initial {
            assert_eq!(
                schedule.len(),
                k,
                "initial schedule {schedule:?} has not {k} values"
            );
            let mut set: Vec<usize> = schedule
                .iter()
                .map(|v| {
                    candidates
                        .iter()
                        .position(|c| c == v)
                        .unwrap_or_else(|| panic!("initial value {v} is not a candidate"))
                })
                .collect();
            set.sort_unstable();
            set.dedup();
            assert_eq!(
                set.len(),
                k,
                "initial schedule {schedule:?} repeats a value"
            );
            let q = score(&set, &mut evaluations);
            population.push((set, q));
        }
        while population.len() < self.population {
            let set = random_subset(&mut rng, &(0..n).collect::<Vec<_>>(), k);
            let q = score(&set, &mut evaluations);
            population.push((set, q));
        }
        let by_score = |a: &(Vec<usize>, f64), b: &(Vec<usize>, f64)| a.1.total_cmp(&b.1);
        population.sort_by(by_score);
        let mut history = vec![population[0].1];
        let parents = (self.population / 2).max(2);
        for _ in 0..self.generations {
            let mut children = Vec::new();
            for c in 0..self.population {
                let a = &population[rng.below(parents)].0;
                let child = if c < self.mutations || k == n {
                    mutate(&mut rng, a, n)
                } else {
                    let b = &population[rng.below(parents)].0;
                    let mut union: Vec<usize> = a.iter().chain(b).copied().collect();
                    union.sort_unstable();
                    union.dedup();
                    random_subset(&mut rng, &union, k)
                };
                if population.iter().chain(&children).any(|(s, _)| *s == child) {
                    continue;
                }
                let q = score(&child, &mut evaluations);
                children.push((child, q));
            }
            population.extend(children);
            population.sort_by(by_score);
            population.truncate(self.population);
            history.push(population[0].1);
        }
        let (best, score) = population.swap_remove(0);
        SearchResult {
            best: best.iter().map(|&i| candidates[i]).collect(),
            score,
            history,
            evaluations,
        }
    }
}

/// A sorted random `k`-subset of `pool` (partial Fisher–Yates).
fn random_subset(rng: &mut SeededNoise, pool: &[usize], k: usize) -> Vec<usize> {
    let mut pool = pool.to_vec();
    for i in 0..k {
        let j = i + rng.below(pool.len() - i);
        pool.swap(i, j);
    }
    let mut set = pool[..k].to_vec();
    set.sort_unstable();
    set
}

/// Replaces one member of `set` by a random non-member of `0..n`.
fn mutate(rng: &mut SeededNoise, set: &[usize], n: usize) -> Vec<usize> {
    let outside: Vec<usize> = (0..n).filter(|i| !set.contains(i)).collect();
    if outside.is_empty() {
        return set.to_vec();
    }
    let mut child = set.to_vec();
    let slot = rng.below(child.len());
    child[slot] = outside[rng.below(outside.len())];
    child.sort_unstable();
    child
}
