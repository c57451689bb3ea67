//! A config manager's snapshot on disk: its last applied value, so that it
//! can start with the store down.

use tracing::warn;

use crate::config::Version;

/// How a manager encodes its value for the snapshot (`None`: not encodable).
pub(super) type Encoder<T> = Box<dyn Fn(&T) -> Option<Vec<u8>> + Send + Sync>;

/// Where a manager keeps its last applied value on disk, and how it encodes it.
pub(super) struct Snapshot<T> {
    pub(super) path: std::path::PathBuf,
    pub(super) encode: Encoder<T>,
}

/// The file's contents: which key, which version, the value as JSON.
#[derive(serde::Serialize, serde::Deserialize)]
struct SnapshotFile {
    key: String,
    version: Version,
    value: serde_json::Value,
}

impl<T> Snapshot<T> {
    /// Write the applied value (temp file + rename: never a torn file). A
    /// failure is logged, never fatal.
    pub(super) fn save(&self, key: &str, version: Version, value: &T) {
        let Some(bytes) = (self.encode)(value) else {
            return;
        };
        let Ok(value) = serde_json::from_slice(&bytes) else {
            return;
        };
        let file = SnapshotFile {
            key: key.to_string(),
            version,
            value,
        };
        if let Err(e) = crate::snapshot_file::write_json(&self.path, &file) {
            warn!(key, path = %self.path.display(), error = %e, "config snapshot not written");
        }
    }

    /// Forget the value (the key was deleted: the default is in force).
    pub(super) fn clear(&self) {
        let _ = std::fs::remove_file(&self.path);
    }

    /// The snapshot's version and value, if the file is there and is `key`'s.
    pub(super) fn load(&self, key: &str) -> Option<(Version, serde_json::Value)> {
        let bytes = std::fs::read(&self.path).ok()?;
        match serde_json::from_slice::<SnapshotFile>(&bytes) {
            Ok(f) if f.key == key => Some((f.version, f.value)),
            Ok(f) => {
                warn!(key, other = %f.key, path = %self.path.display(), "config snapshot is of another key; ignored");
                None
            }
            Err(e) => {
                warn!(key, path = %self.path.display(), error = %e, "config snapshot unreadable; ignored");
                None
            }
        }
    }
}
