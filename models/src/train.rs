//! Training and evaluation helpers: a plain training loop, and runs through burn-train's
//! [`Learner`].
//!
//! The plain loop ([`train_epoch`], [`evaluate`]) is what the `train` example uses; it is small
//! enough to read in one sitting and shows exactly what an optimizer sees. [`fit_with_learner`]
//! and [`learner_digits_epoch`] drive the same models through `SupervisedTraining` and `Learner`,
//! without writing into the working directory and without terminal output, to check that an
//! optimizer also works there.

use crate::Classifier;
use crate::data::{ClassificationBatch, ClassificationBatcher, ClassificationData, digits_split};
use crate::mlp::MlpConfig;
use burn::data::dataloader::DataLoaderBuilder;
use burn::lr_scheduler::constant::ConstantLr;
use burn::optim::ModuleOptimizer;
use burn::tensor::Device;
use burn::train::logger::{EvaluationProgressLogger, TrainingProgressLogger};
use burn::train::metric::{AccuracyMetric, LossMetric, MetricDefinition, MetricId, NumericEntry};
use burn::train::renderer::{
    EvaluationName, MetricState, MetricsRenderer, MetricsRendererEvaluation,
    MetricsRendererTraining,
};
use burn::train::{
    ClassificationOutput, InferenceStep, Learner, LearnerSummary, SupervisedTraining, TrainStep,
};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Batch size [`evaluate`] uses; it only affects speed and memory.
pub const EVAL_BATCH_SIZE: usize = 512;

/// Trains `model` for one pass over `batches` and returns it with the mean loss, weighted by
/// batch size.
///
/// `model` should live on an autodiff device, and the batches on the same device.
pub fn train_epoch<M: Classifier>(
    model: M,
    optim: &mut ModuleOptimizer,
    lr: f64,
    batches: impl IntoIterator<Item = ClassificationBatch>,
) -> (M, f64) {
    train_epoch_with(model, optim, lr, batches, |_, _| {})
}

/// [`train_epoch`], calling `on_batch(batch_index, batch_loss)` after every optimizer step (to
/// drive a progress bar, say).
pub fn train_epoch_with<M: Classifier>(
    mut model: M,
    optim: &mut ModuleOptimizer,
    lr: f64,
    batches: impl IntoIterator<Item = ClassificationBatch>,
    mut on_batch: impl FnMut(usize, f64),
) -> (M, f64) {
    let mut loss_sum = 0.0;
    let mut seen = 0usize;
    for (index, batch) in batches.into_iter().enumerate() {
        let size = batch.len();
        let output = model.classify(batch.images, batch.targets);
        let loss = output.loss.clone().into_scalar::<f64>();
        let grads = burn::optim::GradientsParams::from_grads(output.loss.backward(), &model);
        model = optim.step(lr, model, grads);
        loss_sum += loss * size as f64;
        seen += size;
        on_batch(index, loss);
    }
    let mean = if seen == 0 {
        f64::NAN
    } else {
        loss_sum / seen as f64
    };
    (model, mean)
}

/// Loss and accuracy of a model on a data set.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Evaluation {
    /// Mean cross-entropy loss.
    pub loss: f64,
    /// Share of correctly classified images, `0.0..=1.0`.
    pub accuracy: f64,
}

/// The share of `data` that `model` classifies correctly, `0.0..=1.0` (NaN for empty data).
///
/// Runs without autodiff ([`Module::valid`](burn::module::Module::valid)) on the device of the model's parameters.
pub fn evaluate<M: Classifier>(model: &M, data: &ClassificationData) -> f64 {
    evaluate_full(model, data).accuracy
}

/// Mean loss and accuracy of `model` on `data` (both NaN for empty data).
pub fn evaluate_full<M: Classifier>(model: &M, data: &ClassificationData) -> Evaluation {
    let model = model.valid();
    let device = model
        .devices()
        .first()
        .cloned()
        .unwrap_or_default()
        .without_autodiff();
    let mut correct = 0i64;
    let mut loss_sum = 0.0;
    for batch in data.batches(EVAL_BATCH_SIZE, None, &device) {
        let size = batch.len() as f64;
        let output = model.classify(batch.images, batch.targets);
        loss_sum += output.loss.into_scalar::<f64>() * size;
        let predicted = output.output.argmax(1).flatten::<1>(0, 1);
        correct += predicted
            .equal(output.targets)
            .int()
            .sum()
            .into_scalar::<i64>();
    }
    let n = data.len() as f64;
    Evaluation {
        loss: loss_sum / n,
        accuracy: correct as f64 / n,
    }
}

/// Settings of [`fit_with_learner`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LearnerOptions {
    /// Passes over the training data.
    pub epochs: usize,
    /// Images per batch.
    pub batch_size: usize,
    /// Seed of the data loader's shuffle.
    pub seed: u64,
}

impl Default for LearnerOptions {
    /// One epoch of batches of 32, seed 0.
    fn default() -> Self {
        Self {
            epochs: 1,
            batch_size: 32,
            seed: 0,
        }
    }
}

/// What [`fit_with_learner`] returns.
#[derive(Debug)]
pub struct LearnerReport<M> {
    /// The trained model, in validation mode as `Learner` returns it (call
    /// [`Module::train`](burn::module::Module::train) before training it further).
    pub model: M,
    /// Mean training loss of each epoch, as burn-train's loss metric computed it.
    pub train_loss: Vec<f64>,
    /// Mean validation loss of each epoch.
    pub valid_loss: Vec<f64>,
    /// Validation accuracy of each epoch, `0.0..=1.0`.
    pub valid_accuracy: Vec<f64>,
}

/// Trains `model` with `optim` at the constant learning rate `lr` through burn-train's
/// [`SupervisedTraining`] and [`Learner`], validating on `valid` after each epoch.
///
/// Nothing is written into the working directory: the run's directory is a fresh folder under
/// [`std::env::temp_dir`], removed afterwards; there are no checkpoints, no experiment log and no
/// terminal dashboard (a silent renderer collects the metrics instead). The model should live on
/// an autodiff device; the data loaders follow it.
///
/// Returns an error if training stopped on an error (a failed metric, say).
pub fn fit_with_learner<M>(
    model: M,
    optim: ModuleOptimizer,
    lr: f64,
    train: &ClassificationData,
    valid: &ClassificationData,
    options: &LearnerOptions,
) -> Result<LearnerReport<M>, String>
where
    M: Classifier
        + TrainStep<Input = ClassificationBatch, Output = ClassificationOutput>
        + InferenceStep<Input = ClassificationBatch, Output = ClassificationOutput>,
{
    let batcher = ClassificationBatcher::for_data(train);
    let loader_train = DataLoaderBuilder::new(batcher)
        .batch_size(options.batch_size)
        .shuffle(options.seed)
        .build(train.clone());
    let loader_valid = DataLoaderBuilder::new(ClassificationBatcher::for_data(valid))
        .batch_size(options.batch_size.max(EVAL_BATCH_SIZE))
        .build(valid.clone());

    let record = Arc::new(Mutex::new(MetricRecord::default()));
    let dir = ScratchDir::new()?;
    let result = SupervisedTraining::new(&dir.0, loader_train, loader_valid)
        .metrics((LossMetric::new(), AccuracyMetric::new()))
        .num_epochs(options.epochs)
        .with_application_logger(None)
        .with_metric_logger(burn::train::logger::InMemoryMetricLogger::new())
        .renderer(Box::new(RecordingRenderer::new(record.clone())))
        .launch(Learner::new(model, optim, ConstantLr::new(lr)));
    drop(dir);

    if let Some(error) = result.error {
        return Err(format!("training through Learner failed: {error}"));
    }
    let record = record.lock().expect("metric record lock").clone();
    let get = |name: &str, split: Split| record.finals.get(&(name.to_string(), split)).cloned();
    Ok(LearnerReport {
        model: result.model,
        train_loss: get("Loss", Split::Train).unwrap_or_default(),
        valid_loss: get("Loss", Split::Valid).unwrap_or_default(),
        valid_accuracy: get("Accuracy", Split::Valid)
            .unwrap_or_default()
            .into_iter()
            .map(|percent| percent / 100.0)
            .collect(),
    })
}

/// Trains a fresh [`Mlp`](crate::Mlp) on the 8x8 digits for one epoch through burn-train's
/// `Learner` with `optim` at learning rate `lr`, and returns the epoch's mean training loss.
///
/// `seed` fixes the weight initialization, the train/test split and the shuffle. `device` may
/// be plain or autodiff. Batches of 32 on the 1,438 training digits (45 steps); the run takes
/// about a second on a CPU. Meant for checking that an optimizer works under `Learner`.
pub fn learner_digits_epoch(
    optim: ModuleOptimizer,
    lr: f64,
    device: &Device,
    seed: u64,
) -> Result<f64, String> {
    let device = device.clone().autodiff();
    device.seed(seed);
    let (train, test) = digits_split(seed);
    let model = MlpConfig::for_images(train.height, train.width).init(&device);
    let options = LearnerOptions {
        epochs: 1,
        batch_size: 32,
        seed,
    };
    let report = fit_with_learner(model, optim, lr, &train, &test, &options)?;
    report
        .train_loss
        .last()
        .copied()
        .ok_or_else(|| "Learner reported no training loss".to_string())
}

/// A fresh directory under the system temp dir, removed on drop.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new() -> Result<Self, String> {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "firebox-learner-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        Ok(Self(path))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Split {
    Train,
    Valid,
}

/// Epoch-final metric values, by metric name and split.
#[derive(Clone, Debug, Default)]
struct MetricRecord {
    finals: HashMap<(String, Split), Vec<f64>>,
}

/// A renderer that prints nothing and keeps each epoch's final metric values.
///
/// The renderer runs on burn-train's event thread, in event order, and `launch` only returns
/// after it has seen every event, so the record is complete when `launch` returns.
struct RecordingRenderer {
    names: HashMap<MetricId, String>,
    record: Arc<Mutex<MetricRecord>>,
}

impl RecordingRenderer {
    fn new(record: Arc<Mutex<MetricRecord>>) -> Self {
        Self {
            names: HashMap::new(),
            record,
        }
    }

    fn keep(&mut self, state: MetricState, split: Split) {
        if let MetricState::Numeric(entry, Some(NumericEntry::Final(value))) = state
            && let Some(name) = self.names.get(&entry.metric_id)
        {
            self.record
                .lock()
                .expect("metric record lock")
                .finals
                .entry((name.clone(), split))
                .or_default()
                .push(value);
        }
    }
}

impl MetricsRendererTraining for RecordingRenderer {
    fn update_train(&mut self, state: MetricState) {
        self.keep(state, Split::Train);
    }

    fn update_valid(&mut self, state: MetricState) {
        self.keep(state, Split::Valid);
    }

    fn on_train_end(
        &mut self,
        _summary: Option<LearnerSummary>,
    ) -> Result<(), Box<dyn core::error::Error>> {
        Ok(())
    }
}

impl MetricsRendererEvaluation for RecordingRenderer {
    fn update_test(&mut self, _name: EvaluationName, _state: MetricState) {}

    fn on_test_end(
        &mut self,
        _summary: Option<LearnerSummary>,
    ) -> Result<(), Box<dyn core::error::Error>> {
        Ok(())
    }
}

impl TrainingProgressLogger for RecordingRenderer {
    fn start(&mut self, _: usize, _: usize, _: Option<usize>, _: Option<&str>) {}
    fn update_epoch(&mut self, _: usize) {}
    fn start_split(&mut self, _: &str, _: usize) {}
    fn update_split(&mut self, _: usize) {}
    fn end_split(&mut self) {}
    fn end(&mut self) {}
    fn log_event_training(&mut self, _: String) {}
}

impl EvaluationProgressLogger for RecordingRenderer {
    fn start_global_progress(&mut self, _: usize) {}
    fn start_test(&mut self, _: &str, _: usize) {}
    fn update_test_progress(&mut self, _: usize) {}
    fn end_test(&mut self) {}
    fn end_global_progress(&mut self) {}
    fn log_event_evaluation(&mut self, _: String) {}
}

impl MetricsRenderer for RecordingRenderer {
    fn manual_close(&mut self) {}

    fn register_metric(&mut self, definition: MetricDefinition) {
        self.names
            .insert(definition.metric_id, definition.name.to_string());
    }
}
