//! Helpers shared by the integration tests: the devices to test on, and skip reports that reach
//! the terminal even though the test harness captures `println!`.
#![allow(dead_code)]

use std::io::Write;

use burn::tensor::Device;
use firebox::device::{Availability, BackendName, probe};

/// Writes a line straight to the process's stderr, bypassing the test harness's output capture,
/// so a skipped backend is always visible in the test log.
pub fn report(line: &str) {
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "{line}");
}

/// The backends the tests exercise: the CPU backends always, wgpu when compiled in and when an
/// adapter exists. An absent one is reported with its reason, never silently dropped.
///
/// `FIREBOX_REQUIRE_BACKENDS=flex,ndarray,wgpu` (set by CI) turns an absent backend into a test
/// failure, so CI cannot pass without really running the GPU code path.
pub fn devices() -> Vec<(BackendName, Device)> {
    static DEVICES: std::sync::OnceLock<Vec<(BackendName, Device)>> = std::sync::OnceLock::new();
    DEVICES.get_or_init(probe_all).clone()
}

fn probe_all() -> Vec<(BackendName, Device)> {
    let required = std::env::var("FIREBOX_REQUIRE_BACKENDS").unwrap_or_default();
    let required: Vec<&str> = required.split(',').map(str::trim).collect();
    let mut devices = Vec::new();
    for backend in [BackendName::Flex, BackendName::Ndarray, BackendName::Wgpu] {
        match probe(backend) {
            Availability::Ready(device, adapter) => {
                if backend.needs_adapter() {
                    report(&format!(
                        "[firebox tests] {backend}: using adapter {adapter}"
                    ));
                }
                devices.push((backend, device));
            }
            Availability::Unavailable(reason) => {
                assert!(
                    !required.contains(&backend.as_str()),
                    "backend {backend} is required by FIREBOX_REQUIRE_BACKENDS but unavailable: {reason}"
                );
                report(&format!("[firebox tests] SKIP {backend}: {reason}"));
            }
        }
    }
    assert!(
        !devices.is_empty(),
        "no backend available at all: build with --features flex or ndarray"
    );
    devices
}

/// Serialises the tests of one test binary that seed and draw from the device RNG: the RNG is
/// global per device, so a concurrent `device.seed(..)` in another test would restart the stream
/// mid-way and correlate the draws a statistical test relies on.
pub fn rng_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
