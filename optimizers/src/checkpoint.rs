//! Crash-safe saving of optimizer state.
//!
//! [`ModuleOptimizer::save`](burn::optim::ModuleOptimizer::save) writes the burnpack file in
//! place: a crash mid-write leaves a torn checkpoint and the previous one is gone.
//! [`save_atomic`] writes to a temporary file next to the target, flushes it to disk and renames
//! it over the target, so the path always holds either the old or the new complete state.
//!
//! Load with [`load`], which reads the whole file into memory first. Burn's own
//! [`ModuleOptimizer::load`](burn::optim::ModuleOptimizer::load) maps the file lazily and re-opens
//! it *by path* when a parameter's state is first used: if the file is replaced in between (by the
//! next checkpoint, say), the state would be read from the new file at the old offsets, or fail
//! if it was deleted.

use std::fs;
use std::io::Write;
use std::path::Path;

use burn::optim::ModuleOptimizer;
use burn::tensor::Bytes;

/// Saves `optimizer`'s state to `path` atomically (temporary file + fsync + rename).
///
/// Errors name the path and the failing operation; on error the previous file at `path`, if any,
/// is left as it was.
pub fn save_atomic(optimizer: &ModuleOptimizer, path: impl AsRef<Path>) -> Result<(), String> {
    let path = path.as_ref();
    let bytes = optimizer.into_bytes().map_err(|e| {
        format!(
            "cannot serialize optimizer state for {}: {e}",
            path.display()
        )
    })?;
    write_atomic(path, &bytes)
}

/// Writes `bytes` to `path` atomically: a sibling temporary file is written, synced and renamed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let file_name = path
        .file_name()
        .ok_or_else(|| format!("checkpoint path {} has no file name", path.display()))?;
    let tmp = path.with_file_name(format!(
        ".{}.tmp-{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        format!("cannot write checkpoint {}: {e}", path.display())
    })
}

/// Loads optimizer state written by [`save_atomic`] (or `ModuleOptimizer::save`) into
/// `optimizer`, reading the file completely before returning, so the file may be replaced or
/// deleted afterwards. Errors name the path.
pub fn load(optimizer: ModuleOptimizer, path: impl AsRef<Path>) -> Result<ModuleOptimizer, String> {
    let path = path.as_ref();
    let bytes = fs::read(path)
        .map_err(|e| format!("cannot read optimizer checkpoint {}: {e}", path.display()))?;
    optimizer
        .from_bytes(Bytes::from_bytes_vec(bytes))
        .map_err(|e| format!("invalid optimizer checkpoint {}: {e}", path.display()))
}
