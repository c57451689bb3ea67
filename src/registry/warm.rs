//! A service cache's snapshot on disk: the instances it last served, so that
//! it can start with the store down (a warm start).

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::warn;

use super::ServiceInfo;

/// The file's contents: which service, when it was written, what was served.
#[derive(serde::Serialize, serde::Deserialize)]
struct SnapshotFile {
    service: String,
    /// Milliseconds since the Unix epoch.
    saved_at_ms: u64,
    instances: Vec<ServiceInfo>,
}

/// Where a cache keeps the instances it serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Snapshot {
    path: PathBuf,
}

/// A snapshot read back: its instances and its age.
pub(crate) struct Saved {
    pub(crate) instances: Vec<ServiceInfo>,
    pub(crate) saved_at: SystemTime,
}

impl Snapshot {
    pub(crate) fn new(path: PathBuf) -> Self {
        Snapshot { path }
    }

    /// Write what is served (temp file + rename: never a torn file). A
    /// failure is logged, never fatal.
    pub(crate) fn save(&self, service: &str, instances: &[ServiceInfo]) {
        let saved_at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let file = SnapshotFile {
            service: service.to_string(),
            saved_at_ms,
            instances: instances.to_vec(),
        };
        if let Err(e) = crate::snapshot_file::write_json(&self.path, &file) {
            warn!(service, path = %self.path.display(), error = %e, "service snapshot not written");
        }
    }

    /// The snapshot, if the file is there, readable and `service`'s.
    pub(crate) fn load(&self, service: &str) -> Option<Saved> {
        let bytes = std::fs::read(&self.path).ok()?;
        match serde_json::from_slice::<SnapshotFile>(&bytes) {
            Ok(f) if f.service == service => Some(Saved {
                instances: f.instances,
                saved_at: UNIX_EPOCH + Duration::from_millis(f.saved_at_ms),
            }),
            Ok(f) => {
                warn!(service, other = %f.service, path = %self.path.display(), "service snapshot is of another service; ignored");
                None
            }
            Err(e) => {
                warn!(service, path = %self.path.display(), error = %e, "service snapshot unreadable; ignored");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_round_trips_and_is_only_its_services() {
        let dir = std::env::temp_dir().join(format!("coordkit-warm-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let snapshot = Snapshot::new(dir.join("api.json"));
        assert!(snapshot.load("api").is_none(), "no file yet");
        let instances = vec![ServiceInfo::new("a", "api", "10.0.0.1", 80)];
        snapshot.save("api", &instances);
        let saved = snapshot.load("api").unwrap();
        assert_eq!(saved.instances, instances);
        assert!(saved.saved_at.elapsed().unwrap_or_default() < Duration::from_secs(60));
        assert!(snapshot.load("web").is_none(), "another service's");
        std::fs::write(&snapshot.path, b"{torn").unwrap();
        assert!(snapshot.load("api").is_none(), "unreadable");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
