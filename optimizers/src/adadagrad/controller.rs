//! The batch-size schedule of a training loop: `main.py`'s test-driven ramp-up.

use burn::config::Config;

use super::AdaDaGradError;
use super::statistics::{
    BatchDecision, BatchStatistics, BatchTest, PerSampleGradients, TestConstants,
};
use crate::validate::InvalidConfig;

/// Configuration of a [`BatchSizeController`]; defaults are `main.py`'s command-line defaults.
#[derive(Config, Debug)]
pub struct BatchSizeControllerConfig {
    /// The test (`--test_type`, default `norm`). Parse the reference's names with
    /// `"ip+orth".parse::<BatchTest>()`.
    #[config(default = "BatchTest::Norm")]
    pub test: BatchTest,
    /// η of the norm test (`--eta`).
    #[config(default = 0.1)]
    pub eta: f64,
    /// θ of the inner-product test (`--theta`).
    #[config(default = 0.1)]
    pub theta: f64,
    /// ν of the orthogonality test (`--nu`).
    #[config(default = 0.1)]
    pub nu: f64,
    /// The first batch size (`--batch_size`); at least 2, since the tests need a variance.
    #[config(default = 64)]
    pub initial_batch_size: usize,
    /// The cap (`--max_batch_size`); once reached, no more tests are due.
    #[config(default = 50000)]
    pub max_batch_size: usize,
    /// Test every this many steps (`--test_interval`).
    #[config(default = 1)]
    pub test_interval: usize,
}

impl BatchSizeControllerConfig {
    /// The test constants η, θ, ν.
    pub fn constants(&self) -> TestConstants {
        TestConstants {
            eta: self.eta,
            theta: self.theta,
            nu: self.nu,
        }
    }

    /// The controller, or an error naming the first invalid field.
    pub fn try_init(&self) -> Result<BatchSizeController, InvalidConfig> {
        let invalid = |field, value: String, expected| InvalidConfig {
            optimizer: "BatchSizeController",
            field,
            value,
            expected,
        };
        for (field, value) in [("eta", self.eta), ("theta", self.theta), ("nu", self.nu)] {
            if !(value.is_finite() && value > 0.0) {
                return Err(invalid(field, format!("{value:e}"), "finite and > 0"));
            }
        }
        if self.initial_batch_size < 2 {
            return Err(invalid(
                "initial_batch_size",
                self.initial_batch_size.to_string(),
                ">= 2 (the tests need a sample variance)",
            ));
        }
        if self.max_batch_size < self.initial_batch_size {
            return Err(invalid(
                "max_batch_size",
                self.max_batch_size.to_string(),
                ">= initial_batch_size",
            ));
        }
        if self.test_interval == 0 {
            return Err(invalid("test_interval", "0".into(), ">= 1"));
        }
        Ok(BatchSizeController {
            config: self.clone(),
            batch_size: self.initial_batch_size,
            samples_seen: 0,
            steps: 0,
            last_decision: None,
        })
    }

    /// The controller.
    ///
    /// # Panics
    /// If a field is invalid; the message names it.
    pub fn init(&self) -> BatchSizeController {
        self.try_init().unwrap_or_else(|e| panic!("{e}"))
    }
}

/// Adaptive batch size for a training loop (AdAdaGrad, `main.py`): says how many samples the next
/// step takes, whether this step must provide per-sample gradients for a test, and grows the batch
/// when a test fails. See the [module docs](super) for a complete loop.
///
/// - The batch size only grows: after a test it becomes
///   `max(current, min(ceil(max(b, statistic)), max_batch_size))`, a direct jump to the batch size
///   at which the test would have passed (no doubling).
/// - A test is due on every `test_interval`-th step while the batch size is below
///   `max_batch_size` (`main.py`'s condition).
/// - It counts the samples seen, so a learning-rate schedule can be indexed by samples
///   (`main.py`'s `lr_decay_type = sample`): read [`samples_seen`](Self::samples_seen) after the
///   step for the next step's lr.
#[derive(Clone, Debug)]
pub struct BatchSizeController {
    config: BatchSizeControllerConfig,
    batch_size: usize,
    samples_seen: u64,
    steps: usize,
    last_decision: Option<BatchDecision>,
}

impl BatchSizeController {
    /// The batch size for the next step.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// Whether the next step should compute per-sample gradients and call
    /// [`observe`](Self::observe) (else a plain batch gradient and [`record`](Self::record)).
    pub fn test_due(&self) -> bool {
        self.steps.is_multiple_of(self.config.test_interval)
            && self.batch_size < self.config.max_batch_size
    }

    /// Samples consumed by the steps so far (`main.py`'s `samples_processed`).
    pub fn samples_seen(&self) -> u64 {
        self.samples_seen
    }

    /// Steps taken so far.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// The decision of the last test, if any.
    pub fn last_decision(&self) -> Option<&BatchDecision> {
        self.last_decision.as_ref()
    }

    /// The configuration.
    pub fn config(&self) -> &BatchSizeControllerConfig {
        &self.config
    }

    /// Records a step that used per-sample (or micro-batch) gradients: counts its
    /// `gradients.batch_size()` samples, runs the configured test on them and grows the batch size
    /// if the test fails. The test runs whenever this is called, due or not.
    ///
    /// # Errors
    /// A non-finite statistic (NaN/Inf gradients, or an all-zero gradient with zero variance).
    /// The step is still counted.
    pub fn observe(
        &mut self,
        gradients: &PerSampleGradients,
    ) -> Result<BatchDecision, AdaDaGradError> {
        self.count(gradients.batch_size());
        self.apply(gradients.statistics()?)
    }

    /// [`observe`](Self::observe) with statistics computed elsewhere (e.g. from
    /// [`BatchStatistics::from_blocks`], or reduced across devices).
    ///
    /// # Errors
    /// A NaN statistic.
    pub fn observe_statistics(
        &mut self,
        statistics: BatchStatistics,
    ) -> Result<BatchDecision, AdaDaGradError> {
        self.count(statistics.batch_size);
        self.apply(statistics)
    }

    /// Records a step without a test that used `samples` samples.
    pub fn record(&mut self, samples: usize) {
        self.count(samples);
    }

    fn count(&mut self, samples: usize) {
        self.steps += 1;
        self.samples_seen += samples as u64;
    }

    fn apply(&mut self, statistics: BatchStatistics) -> Result<BatchDecision, AdaDaGradError> {
        let decision = statistics.decide(
            self.config.test,
            self.config.constants(),
            self.config.max_batch_size,
        )?;
        self.batch_size = self
            .batch_size
            .max(decision.next_batch_size)
            .min(self.config.max_batch_size);
        self.last_decision = Some(decision);
        Ok(decision)
    }
}
