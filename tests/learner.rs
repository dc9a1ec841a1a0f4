//! Every optimizer of the registry trains the example MLP for one epoch through burn-train's
//! `Learner` (the path a Burn user takes), on every available backend.

mod common;

use firebox::models::train::learner_digits_epoch;
use firebox::registry::{build_optimizer, optimizer_names};

/// Cross-entropy of a uniform guess over the 10 digit classes: ln 10.
const CHANCE_LOSS: f64 = std::f64::consts::LN_10;

#[test]
fn one_learner_epoch_with_every_optimizer() {
    for (backend, device) in common::devices() {
        for name in optimizer_names() {
            let (optim, lr) = build_optimizer(name).unwrap();
            let loss = learner_digits_epoch(optim, lr, &device, 7)
                .unwrap_or_else(|e| panic!("{name} on {backend}: {e}"));
            common::report(&format!(
                "[firebox tests] Learner epoch {backend} {name}: mean train loss {loss:.3}"
            ));
            // The epoch's mean loss includes the first batches near chance; a working optimizer
            // still brings the mean clearly below it (a broken one stays at ln 10 or diverges).
            // The slowest starter is AdaBelief: its RAdam rectification scales the step by
            // r_t <= 0.14 during these 45 steps (measured mean loss 1.88 on flex; Adam 1.03).
            assert!(
                loss.is_finite() && loss < 0.9 * CHANCE_LOSS,
                "{name} on {backend}: mean train loss {loss} after one epoch"
            );
        }
    }
}
