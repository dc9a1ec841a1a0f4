//! BOSS's dynamic program and the evolutionary schedule search, on brute force and on DDIM with
//! Gaussian data, where the exact probability-flow ODE solution is known in closed form.

use burn::tensor::{Device, Tensor, TensorData};
use firebox_diffusion::ddim::{Ddim, DdimConfig};
use firebox_diffusion::grid::Spacing;
use firebox_diffusion::prediction::Prediction;
use firebox_diffusion::sampler::{Sampler, SeededNoise, sample};
use firebox_diffusion::schedule::{BetaSchedule, DiscreteSchedule, betas};
use firebox_diffusion::step_search::{
    EvolutionarySearch, bellman_optimal_steps, reference_step_costs,
};

const M: f64 = 1.5;
const S: f64 = 0.5;

fn schedule() -> DiscreteSchedule {
    DiscreteSchedule::from_betas(&betas(BetaSchedule::Linear, 1e-4, 0.02, 1000), false)
}

fn config() -> DdimConfig {
    DdimConfig {
        schedule: schedule(),
        prediction: Prediction::Epsilon,
        spacing: Spacing::Leading,
        steps_offset: 0,
        set_alpha_to_one: true,
        clip_sample: None,
    }
}

/// `(α, σ)` at timestep `t` (−1: the data end, α = 1).
fn level(t: i64) -> (f64, f64) {
    if t < 0 {
        return (1.0, 0.0);
    }
    let a = schedule().alphas_cumprod[t as usize];
    (a.sqrt(), (1.0 - a).sqrt())
}

/// The exact PF-ODE state at timestep `t` of the flow through `x` at 999 (per element).
fn exact(x: &[f32], t: i64) -> Vec<f32> {
    let (a0, s0) = level(999);
    let (a1, s1) = level(t);
    x.iter()
        .map(|&x| {
            let z = (x as f64 - a0 * M) / (a0 * a0 * S * S + s0 * s0).sqrt();
            (a1 * M + (a1 * a1 * S * S + s1 * s1).sqrt() * z) as f32
        })
        .collect()
}

fn denoiser(x: Tensor<1>, t: f64) -> Tensor<1> {
    let (a, s) = level(t as i64);
    (x - a * M).mul_scalar(s / (a * a * S * S + s * s))
}

fn x_t(device: &Device) -> (Vec<f32>, Tensor<1>) {
    let values = SeededNoise::new(3).normals(64);
    let t = Tensor::from_data(TensorData::new(values.clone(), [64]), device);
    (values, t)
}

fn rms(got: Tensor<1>, want: &[f32]) -> f64 {
    let got: Vec<f32> = got.into_data().try_into_vec_as().unwrap();
    (got.iter()
        .zip(want)
        .map(|(g, w)| ((g - w) as f64).powi(2))
        .sum::<f64>()
        / want.len() as f64)
        .sqrt()
}

/// DDIM on `timesteps`, from x at 999 (the list starts there).
fn ddim_error(timesteps: Vec<i64>, device: &Device) -> f64 {
    let (values, x) = x_t(device);
    let mut ddim = Ddim::with_timesteps(config(), timesteps);
    let got = sample(&mut ddim, &denoiser, x, &mut SeededNoise::new(0));
    rms(got, &exact(&values, -1))
}

#[test]
fn the_bellman_program_finds_the_brute_force_optimum() {
    let (n, steps) = (9, 3);
    let mut rng = SeededNoise::new(11);
    let table: Vec<f64> = (0..(n + 1) * (n + 1))
        .map(|_| rng.normals(1)[0].abs() as f64)
        .collect();
    let cost = |i: usize, j: usize| table[i * (n + 1) + j] + 0.1 * (j - i) as f64;
    let found = bellman_optimal_steps(n, steps, cost);
    let mut best = f64::INFINITY;
    for a in 1..n {
        for b in a + 1..n {
            best = best.min(cost(0, a) + cost(a, b) + cost(b, n));
        }
    }
    assert_eq!(found.indices.len(), steps + 1);
    assert_eq!((found.indices[0], found.indices[steps]), (0, n));
    let path_cost: f64 = found.indices.windows(2).map(|w| cost(w[0], w[1])).sum();
    assert!((path_cost - found.cost).abs() < 1e-12);
    assert!(
        (found.cost - best).abs() < 1e-12,
        "{} vs brute force {best}",
        found.cost
    );
}

/// BOSS on DDIM: the fine grid is every 20th timestep, the reference the exact flow. The
/// 5-step Bellman path has a smaller summed local error than the uniform 5-step path on the same
/// grid (the DP's guarantee) and, here, a smaller endpoint error too.
#[test]
fn boss_steps_beat_uniform_steps_for_ddim_on_gaussian_data() {
    let device = Device::flex();
    let fine: Vec<i64> = (0..50).map(|k| 999 - 20 * k).collect(); // 999 … 19, then the data end
    let n = fine.len(); // fine levels 0..n, level n = the data end (−1)
    let at = |i: usize| if i == n { -1 } else { fine[i] };
    let (values, _) = x_t(&device);
    let reference: Vec<Tensor<1>> = (0..=n)
        .map(|i| Tensor::from_data(TensorData::new(exact(&values, at(i)), [64]), &device))
        .collect();
    let step = |x: Tensor<1>, i: usize, j: usize| {
        let list = if j == n {
            vec![at(i)]
        } else {
            vec![at(i), at(j)]
        };
        let mut ddim = Ddim::with_timesteps(config(), list);
        let out = denoiser(x.clone(), at(i) as f64);
        ddim.step(out, x, None).prev_sample
    };
    let mut cost = reference_step_costs(&reference, step);
    let mut table = vec![0.0; (n + 1) * (n + 1)];
    for i in 0..n {
        for j in i + 1..=n {
            table[i * (n + 1) + j] = cost(i, j);
        }
    }
    let path = bellman_optimal_steps(n, 5, |i, j| table[i * (n + 1) + j]);
    let uniform: Vec<usize> = (0..=5).map(|k| k * n / 5).collect();
    let uniform_cost: f64 = uniform
        .windows(2)
        .map(|w| table[w[0] * (n + 1) + w[1]])
        .sum();
    assert!(path.cost <= uniform_cost, "{} > {uniform_cost}", path.cost);
    let schedule = |idx: &[usize]| idx[..idx.len() - 1].iter().map(|&i| at(i)).collect();
    let (boss, plain) = (
        ddim_error(schedule(&path.indices), &device),
        ddim_error(schedule(&uniform), &device),
    );
    assert!(
        boss < plain,
        "BOSS steps {:?}: error {boss:.4e}, uniform {plain:.4e}",
        path.indices
    );
}

/// The evolutionary search over 5-step DDIM schedules (from 999, among every 10th timestep)
/// never does worse than the uniform schedule it starts from, improves on it, and its best score
/// never increases between generations.
#[test]
fn the_evolutionary_search_improves_on_the_uniform_schedule() {
    let device = Device::flex();
    let candidates: Vec<f64> = (0..100).map(|k| (999 - 10 * k) as f64).collect();
    let uniform: Vec<f64> = vec![999.0, 799.0, 599.0, 399.0, 199.0];
    let quality = |schedule: &[f64]| {
        if schedule[0] != 999.0 {
            return f64::INFINITY; // the flow starts at 999
        }
        ddim_error(schedule.iter().map(|&t| t as i64).collect(), &device)
    };
    let search = EvolutionarySearch {
        population: 12,
        generations: 8,
        mutations: 6,
        seed: 5,
    };
    let found = search.search(&candidates, 5, std::slice::from_ref(&uniform), quality);
    let base = quality(&uniform);
    assert!(
        found.score < 0.9 * base,
        "{} vs uniform {base}",
        found.score
    );
    assert!(found.history.windows(2).all(|w| w[1] <= w[0]));
    assert_eq!(found.best.len(), 5);
    assert!((quality(&found.best) - found.score).abs() < 1e-12);
}
