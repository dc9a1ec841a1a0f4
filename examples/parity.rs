//! Parity runner: replays fixture files recorded from the reference implementations.
//!
//! ```text
//! cargo run --release --example parity -- [--device flex|ndarray|wgpu|...] [--path auto|fallback] FILE_OR_DIR...
//! ```
//!
//! `--path fallback` turns the fused optimizer steps off (`firebox::optim::fused::with_fallback`),
//! so every optimizer runs as tensor ops; the last line counts the tensor steps that took each
//! path, which shows whether the fused path ran.
//!
//! Prints one line per file, `<file> <subject> max_abs=<e> max_rel=<e> PASS|FAIL` or
//! `<file> <subject> SKIP <reason>`, and exits with code 1 if any file fails (a malformed file is a
//! failure too). Directories are expanded to the `*.json` files they contain. The tolerance is the
//! one each file states (`|got − expected| <= abs + rel·|expected|`, element-wise), derived from
//! the reference's own float32-vs-float64 deviation; see `tests/fixtures/optim/README.md`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use firebox::device::parse_device;
use firebox::fixtures::run_file;
use firebox::optim::fused::{path_counts, with_fallback};

/// Replay parity fixtures through firebox.
#[derive(Parser)]
struct Args {
    /// Backend to run on (among those compiled in).
    #[arg(long, default_value = "flex")]
    device: String,
    /// Optimizer step path: `auto` (fused where it applies) or `fallback` (tensor ops only).
    #[arg(long, default_value = "auto", value_parser = ["auto", "fallback"])]
    path: String,
    /// Fixture files or directories of fixture files.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
}

fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut found: Vec<_> = std::fs::read_dir(path)
                .map_err(|e| format!("cannot list {}: {e}", path.display()))?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|ext| ext == "json"))
                .collect();
            found.sort();
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let device = match parse_device(&args.device) {
        Ok(device) => device,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let files = match expand(&args.paths) {
        Ok(files) => files,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let (mut pass, mut fail, mut skip) = (0, 0, 0);
    let before = path_counts();
    for file in &files {
        let outcome = if args.path == "fallback" {
            with_fallback(|| run_file(file, &device))
        } else {
            run_file(file, &device)
        };
        match outcome {
            Ok(outcome) => {
                println!("{} {outcome}", file.display());
                match outcome.verdict() {
                    "PASS" => pass += 1,
                    "FAIL" => fail += 1,
                    _ => skip += 1,
                }
            }
            Err(e) => {
                println!("{} FAIL {e}", file.display());
                fail += 1;
            }
        }
    }
    let steps = path_counts() - before;
    println!(
        "parity ({}, path {}): {pass} PASS, {fail} FAIL, {skip} SKIP; optimizer tensor steps: {} fused, {} fallback",
        args.device, args.path, steps.fused, steps.fallback
    );
    if fail > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
