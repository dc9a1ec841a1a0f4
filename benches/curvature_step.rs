//! Amortised cost of a training step with the curvature-aware optimizers against Burn's Adam on
//! the same model, batch and backend, and the memory their state takes per parameter.
//!
//! Two workloads: the char-level transformer LM of `examples/lm_compare.rs` (2 layers, d_model 64,
//! context 64, 32 windows per batch; the model Sophia was designed for) and an MLP on digits
//! (64-1024-10, 128 images per batch; optimizer-step-heavy). One measured iteration is 10 full
//! training steps (forward, backward, optimizer step) on a fixed batch, so a Hessian refresh every
//! 10 steps is counted exactly once:
//! - `adam`: Burn's `AdamConfig` (the baseline).
//! - `sophia_g`: Sophia-G, GNB refresh every 10 steps (one extra forward + backward on sampled
//!   labels); `sophia_g_nocount` without counting the unclipped coordinates (the win rate).
//! - `sophia_h`, `adahessian`: a Hutchinson refresh every 10 steps with one probe (two extra
//!   gradient evaluations for the central finite-difference Hessian-vector product).
//! - `mfac`: M-FAC with a 32-gradient window (no refresh; O(d·m) per step).
//!
//! ```text
//! cargo bench --bench curvature_step                      # flex
//! cargo bench --features wgpu --bench curvature_step      # flex + wgpu
//! ```
//! After criterion's report, a summary table prints each optimizer's median step time, its ratio
//! to Adam (issue #3's goals: Sophia-G ≤ 1.15x, AdaHessian / Sophia-H with interval 10 ≤ 1.3x) and
//! its state size in bytes per parameter (the serialized state divided by the parameter count).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::Tensor;
use criterion::{BenchmarkId, Criterion};
use firebox::device::{Availability, BackendName, probe};
use firebox::models::data::{ClassificationBatch, digits_split};
use firebox::models::lm::{CharLm, CharLmConfig, LmBatch, WindowSampler, shakespeare_corpus};
use firebox::models::{Classifier, Mlp, MlpConfig};
use firebox::optim::adahessian::{AdaHessian, AdaHessianConfig};
use firebox::optim::curvature::gnb::sample_labels;
use firebox::optim::mfac::{Mfac, MfacConfig};
use firebox::optim::record::ModuleState;
use firebox::optim::sophia::{SophiaG, SophiaGConfig, SophiaH, SophiaHConfig};
use firebox::trainer::sampled_label_gradients;

/// Steps per measured iteration: one Hessian refresh interval.
const WINDOW: usize = 10;
const NAMES: [&str; 6] = [
    "adam",
    "sophia_g",
    "sophia_g_nocount",
    "sophia_h",
    "adahessian",
    "mfac",
];

/// A model with a fixed batch: its loss, the sampled-label loss of the GNB estimator, and the
/// batch size Sophia-G divides by.
trait Workload: Module + Clone + 'static {
    fn gradients(&self) -> GradientsParams;
    fn sampled_gradients(&self) -> GradientsParams;
    fn sophia_batch_size(&self) -> f64;
}

/// The digits MLP with its batch.
#[derive(Module, Debug)]
struct DigitsMlp {
    model: Mlp,
}

thread_local! {
    static DIGITS: RefCell<Option<ClassificationBatch>> = const { RefCell::new(None) };
    static TEXT: RefCell<Option<LmBatch>> = const { RefCell::new(None) };
}

fn digits_batch() -> ClassificationBatch {
    DIGITS.with(|b| b.borrow().clone().expect("digits batch set"))
}

fn text_batch() -> LmBatch {
    TEXT.with(|b| b.borrow().clone().expect("text batch set"))
}

impl Workload for DigitsMlp {
    fn gradients(&self) -> GradientsParams {
        let batch = digits_batch();
        let loss = self.model.classify(batch.images, batch.targets).loss;
        GradientsParams::from_grads(loss.backward(), self)
    }
    fn sampled_gradients(&self) -> GradientsParams {
        // The wrapper's parameters are the MLP's, with the same ids.
        sampled_label_gradients(&self.model, &digits_batch())
    }
    fn sophia_batch_size(&self) -> f64 {
        digits_batch().len() as f64
    }
}

/// The char-level LM with its batch.
#[derive(Module, Debug)]
struct TextLm {
    model: CharLm,
}

impl Workload for TextLm {
    fn gradients(&self) -> GradientsParams {
        let loss: Tensor<1> = self.model.loss(&text_batch());
        GradientsParams::from_grads(loss.backward(), self)
    }
    fn sampled_gradients(&self) -> GradientsParams {
        let loss = self.model.sampled_loss(text_batch().inputs, sample_labels);
        GradientsParams::from_grads(loss.backward(), self)
    }
    fn sophia_batch_size(&self) -> f64 {
        text_batch().num_tokens() as f64
    }
}

enum Optimizer {
    Adam(ModuleOptimizer),
    SophiaG(SophiaG, usize),
    SophiaH(SophiaH),
    AdaHessian(AdaHessian),
    Mfac(Box<Mfac>),
}

fn optimizer(name: &str) -> Optimizer {
    match name {
        "adam" => Optimizer::Adam(AdamConfig::new().init()),
        "sophia_g" => Optimizer::SophiaG(SophiaGConfig::new().init(), 0),
        "sophia_g_nocount" => {
            Optimizer::SophiaG(SophiaGConfig::new().with_count_unclipped(false).init(), 0)
        }
        "sophia_h" => Optimizer::SophiaH(SophiaHConfig::new().with_update_interval(WINDOW).init()),
        "adahessian" => Optimizer::AdaHessian(
            AdaHessianConfig::new()
                .with_update_interval(WINDOW)
                .with_num_samples(1)
                .init(),
        ),
        _ => Optimizer::Mfac(Box::new(
            MfacConfig::new().with_ngrads(32).with_damp(1e-2).init(),
        )),
    }
}

impl Optimizer {
    fn step<W: Workload>(&mut self, lr: f64, model: W) -> W {
        let grads = model.gradients();
        let same_batch = |m: &W| m.gradients();
        match self {
            Self::Adam(o) => o.step(lr, model, grads),
            Self::SophiaG(o, steps) => {
                let bs = model.sophia_batch_size();
                let (model, _) = o.step(lr, model, grads, bs);
                *steps += 1;
                if steps.is_multiple_of(WINDOW) {
                    o.update_hessian(&model, &model.sampled_gradients());
                }
                model
            }
            Self::SophiaH(o) => o.step_with_closure(lr, model, grads, same_batch).0,
            Self::AdaHessian(o) => o.step_with_closure(lr, model, grads, same_batch),
            Self::Mfac(o) => o.step(lr, model, grads),
        }
    }

    fn state_bytes(&self) -> usize {
        let len = |record: firebox::optim::StateRecord| record.into_bytes().map_or(0, |b| b.len());
        match self {
            Self::Adam(o) => o.into_bytes().map_or(0, |b| b.len()),
            Self::SophiaG(o, _) => len(o.to_record()),
            Self::SophiaH(o) => len(o.to_record()),
            Self::AdaHessian(o) => len(o.to_record()),
            Self::Mfac(o) => len(o.to_record()),
        }
    }
}

/// Median time per training step and state bytes per parameter, by optimizer.
type Summary = BTreeMap<&'static str, (Duration, f64)>;

fn bench_workload<W: Workload>(
    c: &mut Criterion,
    group_name: String,
    init: impl Fn() -> W,
    summary: &mut Summary,
) {
    let mut group = c.benchmark_group(group_name);
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(3));
    for name in NAMES {
        let initial = init();
        let params = initial.num_params();
        let state = RefCell::new((Some(initial.clone()), optimizer(name)));
        let timing = RefCell::new(Vec::<Duration>::new());
        let device = initial.devices()[0].clone();
        group.bench_function(BenchmarkId::new(name, WINDOW), |b| {
            b.iter_custom(|iterations| {
                let mut state = state.borrow_mut();
                let (model, optimizer) = &mut *state;
                let start = Instant::now();
                for _ in 0..iterations {
                    // Every window restarts from the initial weights (the optimizer state carries
                    // on): thousands of steps on one batch would overfit it until the gradients
                    // underflow to subnormals, which makes CPU matmuls many times slower and
                    // would time the arithmetic of subnormals rather than the optimizer.
                    *model = Some(initial.clone());
                    for _ in 0..WINDOW {
                        let current = model.take().expect("model");
                        *model = Some(optimizer.step(1e-3, current));
                    }
                    device.sync().expect("device sync");
                }
                let elapsed = start.elapsed();
                timing.borrow_mut().push(elapsed / iterations.max(1) as u32);
                elapsed
            })
        });
        // The median over criterion's calls (warm-up included, so the first compilation and
        // autotuning on wgpu do not count), per step.
        let mut per_window = timing.into_inner();
        per_window.sort();
        let per_step = per_window
            .get(per_window.len() / 2)
            .map_or(Duration::ZERO, |d| *d / WINDOW as u32);
        let bytes = state.borrow().1.state_bytes() as f64 / params as f64;
        summary.insert(name, (per_step, bytes));
    }
    group.finish();
}

fn print_summary(title: &str, summary: &Summary) {
    // Nothing to report when a criterion filter skipped the baseline.
    let Some(&(adam, _)) = summary.get("adam").filter(|(time, _)| !time.is_zero()) else {
        return;
    };
    println!("\n{title}");
    println!("| optimizer | step (median) | ratio to adam | state bytes/param |");
    println!("|---|---|---|---|");
    for name in NAMES {
        if let Some((time, bytes)) = summary.get(name).filter(|(time, _)| !time.is_zero()) {
            println!(
                "| {name} | {:.3} ms | {:.2}x | {bytes:.1} |",
                time.as_secs_f64() * 1e3,
                time.as_secs_f64() / adam.as_secs_f64()
            );
        }
    }
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    let corpus = shakespeare_corpus();
    let mut summaries = Vec::new();
    for backend in [BackendName::Flex, BackendName::Wgpu] {
        let device = match probe(backend) {
            Availability::Ready(device, adapter) => {
                eprintln!("curvature_step: {backend} on {adapter}");
                device.autodiff()
            }
            Availability::Unavailable(reason) => {
                eprintln!("curvature_step: SKIP {backend}: {reason}");
                continue;
            }
        };
        let mut sampler = WindowSampler::new(&corpus.train, 64, 1).expect("corpus windows");
        TEXT.with(|b| *b.borrow_mut() = Some(sampler.next_batch(32, &device)));
        let (train, _) = digits_split(1);
        DIGITS.with(|b| *b.borrow_mut() = train.batches(128, None, &device).next());

        let mut summary = Summary::new();
        let vocab = corpus.vocab.len();
        bench_workload(
            &mut criterion,
            format!("curvature_step/{backend}/char_lm"),
            || {
                device.seed(3);
                TextLm {
                    model: CharLmConfig::new(vocab, 64).init(&device),
                }
            },
            &mut summary,
        );
        summaries.push((
            format!(
                "{backend}: char LM (2 layers, d 64, context 64, 32 windows), mean training step"
            ),
            summary,
        ));
        let mut summary = Summary::new();
        bench_workload(
            &mut criterion,
            format!("curvature_step/{backend}/digits_mlp"),
            || {
                device.seed(3);
                DigitsMlp {
                    model: MlpConfig::for_images(8, 8).with_hidden(1024).init(&device),
                }
            },
            &mut summary,
        );
        summaries.push((
            format!("{backend}: digits MLP 64-1024-10, 128 images, mean training step"),
            summary,
        ));
    }
    criterion.final_summary();
    for (title, summary) in &summaries {
        print_summary(title, summary);
    }
}
