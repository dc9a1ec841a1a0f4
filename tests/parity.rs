//! The public parity fixtures (copied from the reference runs into `tests/fixtures/`) replayed
//! through the same code as `cargo run --example parity`, on every available backend.
//!
//! Implemented algorithms must PASS within each file's own tolerance; optimizers of later issues
//! must be reported as SKIP (never PASS, never an error).

mod common;

use std::path::{Path, PathBuf};

use firebox::device::BackendName;
use firebox::fixtures::optim::PENDING;
use firebox::fixtures::{Outcome, run_file};
use firebox::optim::fused::{path_counts, with_fallback};

fn fixture_files(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no fixtures in {}", dir.display());
    files
}

/// Shipped files of implemented optimizers that still SKIP, each for a variant not implemented yet
/// (none at present).
const KNOWN_SKIPS: [&str; 0] = [];

fn key_of(file: &Path) -> String {
    let stem = file.file_stem().unwrap().to_string_lossy();
    stem.split("__").next().unwrap().to_string()
}

/// Replays every fixture in `dir` on every backend. `expected(key, file name, outcome)` says
/// whether the outcome is the right one; the others are listed in one panic. Returns the number
/// of PASSes.
fn replay_all(dir: &str, expected: impl Fn(&str, &str, &Outcome) -> bool) -> usize {
    let files = fixture_files(dir);
    let mut problems = Vec::new();
    let mut passed = 0;
    for (backend, device) in common::devices() {
        for file in &files {
            let outcome = run_file(file, &device)
                .unwrap_or_else(|e| panic!("{} on {backend}: {e}", file.display()));
            let file_name = file.file_name().unwrap().to_string_lossy();
            if !expected(&key_of(file), &file_name, &outcome) {
                problems.push(format!("{backend} {} {outcome}", file.display()));
            } else if matches!(outcome, Outcome::Pass { .. }) {
                passed += 1;
            }
        }
    }
    assert!(
        problems.is_empty(),
        "parity problems in {dir}:\n{}",
        problems.join("\n")
    );
    passed
}

/// Every optimizer fixture passes on every backend, on the fused path where it applies (flex,
/// ndarray) and with the fused path turned off (tensor ops only).
#[test]
fn optimizer_fixtures_pass_on_every_backend_and_both_paths() {
    let replay = || {
        replay_all("tests/fixtures/optim", |key, file_name, outcome| {
            let expected_skip = PENDING.contains(&key) || KNOWN_SKIPS.contains(&file_name);
            match outcome {
                Outcome::Pass { .. } => !expected_skip,
                Outcome::Skip { .. } => expected_skip,
                Outcome::Fail { .. } => false,
            }
        })
    };
    let before = path_counts();
    let passed = replay();
    let auto = path_counts() - before;
    assert!(passed >= 30, "only {passed} fixture replays passed");
    let passed_fallback = with_fallback(replay);
    let fallback = path_counts() - before - auto;
    assert_eq!(
        passed_fallback, passed,
        "the tensor-op path passes fewer fixtures"
    );
    let cpu = common::devices()
        .iter()
        .any(|(b, _)| matches!(b, BackendName::Flex | BackendName::Ndarray));
    assert!(
        !cpu || auto.fused > 0,
        "the fused path never ran on a CPU backend: {auto:?}"
    );
    assert_eq!(fallback.fused, 0, "with_fallback still ran fused steps");
    assert!(fallback.fallback > 0);
    common::report(&format!(
        "[firebox tests] optimizer fixtures: {passed} PASS per path; tensor steps {auto:?} (auto), {fallback:?} (fallback)"
    ));
}

/// Every sampler fixture (diffusers, research and oracle files) must PASS on every backend.
#[test]
fn sampler_fixtures_pass() {
    let passed = replay_all("tests/fixtures/samplers", |_, _, outcome| {
        matches!(outcome, Outcome::Pass { .. })
            || matches!(outcome, Outcome::Skip { reason, .. } if reason.contains("#4"))
    });
    assert!(passed >= 9, "only {passed} sampler replays passed");
}

/// Every adapter fixture (peft LoRA, MoS, default init, parameter counts) must PASS on every
/// backend.
#[test]
fn adapter_fixtures_pass() {
    let passed = replay_all("tests/fixtures/adapters", |_, _, outcome| {
        matches!(outcome, Outcome::Pass { .. })
    });
    assert!(passed >= 11, "only {passed} adapter replays passed");
}

/// Every quantization fixture (PyTorch affine quantization, GGUF blocks, DGQ, HAWQ-V2) must
/// PASS on every backend.
#[test]
fn quant_fixtures_pass() {
    let passed = replay_all("tests/fixtures/quant", |_, _, outcome| {
        matches!(outcome, Outcome::Pass { .. })
    });
    assert!(passed >= 21, "only {passed} quantization replays passed");
}

/// The replays can fail: one integer code and one scale changed in a copy of a shipped file must
/// each give a FAIL that names the case and field.
#[test]
fn a_corrupted_quant_fixture_fails_naming_the_field() {
    let device = common::devices().remove(0).1;
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/quant/affine__per_channel_affine_quint8.json");
    let original: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    for field in ["q", "scale"] {
        let mut value = original.clone();
        let slot = &mut value["cases"][0]["expected"][field][1];
        *slot = match field {
            "q" => serde_json::json!(slot.as_i64().unwrap() + 1),
            _ => serde_json::json!(slot.as_f64().unwrap() * (1.0 + 1e-6)),
        };
        let outcome = firebox::fixtures::run_value(&value, &device).unwrap();
        assert_eq!(outcome.verdict(), "FAIL", "{outcome}");
        assert!(
            outcome.to_string().contains(&format!("{field}[1]")),
            "{outcome}"
        );
    }
}

#[test]
fn an_unknown_quant_key_is_an_error_naming_it() {
    let device = common::devices().remove(0).1;
    let value: serde_json::Value =
        serde_json::from_str(r#"{"format":"firebox-quant-fixture/1","key":"awq"}"#).unwrap();
    let err = firebox::fixtures::run_value(&value, &device).unwrap_err();
    assert!(err.contains("awq") && err.contains("gguf_blocks"), "{err}");
}

#[test]
fn an_unknown_adapter_key_is_an_error_naming_it() {
    let device = common::devices().remove(0).1;
    let value: serde_json::Value =
        serde_json::from_str(r#"{"format":"firebox-adapter-fixture/1","key":"dora"}"#).unwrap();
    let err = firebox::fixtures::run_value(&value, &device).unwrap_err();
    assert!(err.contains("dora") && err.contains("lora"), "{err}");
}

#[test]
fn an_unknown_sampler_key_is_an_error_naming_it() {
    let device = common::devices().remove(0).1;
    let value: serde_json::Value =
        serde_json::from_str(r#"{"format":"firebox-sampler-fixture/1","sampler":"warp_drive"}"#)
            .unwrap();
    let err = firebox::fixtures::run_value(&value, &device).unwrap_err();
    assert!(err.contains("warp_drive") && err.contains("ddim"), "{err}");
}

#[test]
fn malformed_fixtures_are_errors_naming_the_problem() {
    let device = common::devices().remove(0).1;
    let original: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/optim/diffgrad__default.json"),
        )
        .unwrap(),
    )
    .unwrap();

    let mut unknown_format = original.clone();
    unknown_format["format"] = "firebox-optim-fixture/9".into();
    let err = firebox::fixtures::run_value(&unknown_format, &device).unwrap_err();
    assert!(err.contains("unknown fixture format"), "{err}");

    let mut short_grad = original.clone();
    short_grad["steps"][0]["grads"]["conv.bias"] = serde_json::json!([1.0]);
    let err = firebox::fixtures::run_value(&short_grad, &device).unwrap_err();
    assert!(
        err.contains("steps[0].grads.conv.bias has 1 values"),
        "{err}"
    );

    let mut unknown_hyper = original.clone();
    unknown_hyper["hyperparams"]["amsgrad"] = true.into();
    let outcome = firebox::fixtures::run_value(&unknown_hyper, &device).unwrap();
    assert_eq!(outcome.verdict(), "SKIP");
    assert!(outcome.to_string().contains("amsgrad"), "{outcome}");

    let mut wrong_expected = original;
    wrong_expected["steps"][3]["expected"]["fc.bias"][2] = 123.0.into();
    let outcome = firebox::fixtures::run_value(&wrong_expected, &device).unwrap();
    assert!(outcome.is_fail(), "{outcome}");
    assert!(
        outcome.to_string().contains("step 3, fc.bias[2]"),
        "{outcome}"
    );
}
