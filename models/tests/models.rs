//! Model shapes and short training runs on the digits.

use burn::optim::AdamConfig;
use burn::tensor::{Device, Distribution, Int, Tensor};
use firebox_models::data::digits_split;
use firebox_models::train::{self, LearnerOptions};
use firebox_models::{Classifier, CnnConfig, MlpConfig, ResMlpConfig};

fn images(batch: usize, side: usize, device: &Device) -> Tensor<4> {
    Tensor::random([batch, 1, side, side], Distribution::Default, device)
}

#[test]
fn output_shapes_for_8x8_and_28x28() {
    let device = Device::flex();
    for side in [8, 28] {
        let mlp = MlpConfig::for_images(side, side).init(&device);
        assert_eq!(mlp.forward(images(5, side, &device)).dims(), [5, 10]);
        let cnn = CnnConfig::new().init(&device);
        assert_eq!(cnn.forward(images(5, side, &device)).dims(), [5, 10]);

        let targets = Tensor::<1, Int>::from_data([0, 1, 2, 3, 9], &device);
        let out = cnn.forward_classification(images(5, side, &device), targets.clone());
        assert_eq!(out.output.dims(), [5, 10]);
        assert_eq!(out.loss.dims(), [1]);
        let loss = out.loss.into_scalar::<f64>();
        assert!(loss.is_finite() && loss > 0.0, "{loss}");
        let out = mlp.forward_classification(images(5, side, &device), targets);
        assert_eq!(out.targets.dims(), [5]);
    }
    // Hidden size and classes follow the config.
    let mlp = MlpConfig::new(64)
        .with_hidden(7)
        .with_classes(3)
        .init(&device);
    assert_eq!(mlp.hidden.weight.dims(), [64, 7]);
    assert_eq!(mlp.forward(images(2, 8, &device)).dims(), [2, 3]);
}

#[test]
fn adam_lowers_the_loss_on_digits() {
    let device = Device::flex().autodiff();
    device.seed(0);
    let (train_set, test_set) = digits_split(0);
    let mut model = MlpConfig::for_images(8, 8).init(&device);
    let mut optim = AdamConfig::new().init();
    let before = train::evaluate_full(&model, &test_set);
    let mut losses = Vec::new();
    for epoch in 0..3 {
        let batches = train_set.batches(32, Some(epoch), &device);
        let (trained, loss) = train::train_epoch(model, &mut optim, 1e-2, batches);
        model = trained;
        losses.push(loss);
    }
    let after = train::evaluate_full(&model, &test_set);
    assert!(losses[2] < losses[0], "{losses:?}");
    assert!(after.loss < before.loss / 2.0, "{before:?} -> {after:?}");
    assert!(after.accuracy > 0.85, "{after:?}");
    assert_eq!(train::evaluate(&model, &test_set), after.accuracy);
}

#[test]
fn cnn_trains_on_digits() {
    let device = Device::flex().autodiff();
    device.seed(1);
    let (train_set, test_set) = digits_split(1);
    let mut model = CnnConfig::new().init(&device);
    let mut optim = AdamConfig::new().init();
    let before = train::evaluate_full(&model, &test_set);
    for epoch in 0..2 {
        let batches = train_set.batches(32, Some(epoch), &device);
        model = train::train_epoch(model, &mut optim, 1e-2, batches).0;
    }
    let after = train::evaluate_full(&model, &test_set);
    assert!(after.loss < before.loss, "{before:?} -> {after:?}");
    assert!(after.accuracy > 0.5, "{after:?}");
}

#[test]
fn learner_trains_with_adam_and_writes_nothing_here() {
    let cwd = std::env::current_dir().unwrap();
    let before: Vec<_> = std::fs::read_dir(&cwd).unwrap().collect();

    let loss = train::learner_digits_epoch(AdamConfig::new().init(), 1e-2, &Device::flex(), 3)
        .expect("Learner run");
    println!("one Learner epoch with Adam: train loss {loss:.4}");
    // ln(10) = 2.30 is chance level; one epoch of Adam gets well below.
    assert!(loss.is_finite() && loss < 1.5, "{loss}");

    let after: Vec<_> = std::fs::read_dir(&cwd).unwrap().collect();
    assert_eq!(
        before.len(),
        after.len(),
        "Learner wrote into {}",
        cwd.display()
    );
}

#[test]
fn learner_reports_every_epoch() {
    let device = Device::flex().autodiff();
    device.seed(5);
    let (train_set, test_set) = digits_split(5);
    let model = MlpConfig::for_images(8, 8).init(&device);
    let options = LearnerOptions {
        epochs: 2,
        batch_size: 64,
        seed: 5,
    };
    let report = train::fit_with_learner(
        model,
        AdamConfig::new().init(),
        1e-2,
        &train_set,
        &test_set,
        &options,
    )
    .unwrap();
    println!(
        "{:?} {:?} {:?}",
        report.train_loss, report.valid_loss, report.valid_accuracy
    );
    assert_eq!(report.train_loss.len(), 2);
    assert_eq!(report.valid_loss.len(), 2);
    assert_eq!(report.valid_accuracy.len(), 2);
    assert!(report.train_loss[1] < report.train_loss[0], "{report:?}");
    assert!(report.valid_accuracy[1] > 0.7, "{report:?}");
    // The returned model classifies as well as the last validation said.
    let accuracy = train::evaluate(&report.model, &test_set);
    assert!(
        (accuracy - report.valid_accuracy[1]).abs() < 1e-6,
        "{accuracy} {report:?}"
    );
}

/// The trait is object-safe enough to be used generically.
#[test]
fn classifier_trait_matches_inherent_forward() {
    let device = Device::flex();
    let mlp = MlpConfig::for_images(8, 8).init(&device);
    let x = images(3, 8, &device);
    let a = mlp.forward(x.clone()).into_data();
    let b = Classifier::logits(&mlp, x).into_data();
    assert_eq!(a, b);
}

#[test]
fn res_mlp_shapes_and_training_on_digits() {
    let device = Device::flex().autodiff();
    device.seed(1);
    let config = ResMlpConfig::new(64)
        .with_width(32)
        .with_blocks(3)
        .with_classes(10);
    let model = config.init(&device);
    assert_eq!(model.blocks.len(), 3);
    assert_eq!(model.blocks[2].fc.weight.dims(), [32, 32]);
    assert_eq!(model.logits(images(4, 8, &device)).dims(), [4, 10]);
    let (train_set, test_set) = digits_split(0);
    let mut model = model;
    let mut optim = AdamConfig::new().init();
    for epoch in 0..3 {
        let batches = train_set.batches(32, Some(epoch), &device);
        model = train::train_epoch(model, &mut optim, 3e-3, batches).0;
    }
    let accuracy = train::evaluate(&model, &test_set);
    assert!(accuracy > 0.85, "{accuracy}");
}
