//! The one way snapshot files are written: JSON to a temporary file beside
//! the target, then renamed over it, so a reader never sees a torn file.

use std::path::Path;

use serde::Serialize;

/// Write `value` as JSON to `path` atomically (temp file + rename).
pub(crate) fn write_json(path: &Path, value: &impl Serialize) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec(value).map_err(std::io::Error::other)?,
    )?;
    std::fs::rename(&tmp, path)
}
