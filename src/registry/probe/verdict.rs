//! A prober's verdict on an instance: what is stored beside the instance, and
//! how a reader folds it into the instance it describes.

use serde::{Deserialize, Serialize};

use crate::backend::Revision;
use crate::registry::{InstanceHealth, ServiceInfo};

/// A prober's verdict on one registration of an instance, stored at
/// `<namespace>service/<name>/<id>/probe` (on the instance's lease, so it ends
/// with it) and read with the instance: [`ServiceInfo::probe`].
///
/// A verdict names the registration it judged by its key's create revision:
/// an instance deleted and registered again (a lost lease, a restart) is a new
/// registration, and a verdict on the old one is not applied to it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ProbeVerdict {
    /// What the prober saw: [`InstanceHealth::Passing`] or
    /// [`InstanceHealth::Critical`] (a reader takes the worse of it and the
    /// instance's own health).
    pub health: InstanceHealth,
    /// The create revision of the instance's key when it was judged.
    pub instance: Revision,
    /// Since when this health holds, in milliseconds since the Unix epoch (kept
    /// across verdicts of the same health, and across probers).
    pub since_unix_ms: u64,
    /// What the last check that changed it saw (`HTTP 200`, `connection
    /// refused`, `timed out after 1s`, ...).
    pub detail: String,
    /// The name of the prober that wrote it.
    pub prober: String,
}

impl ProbeVerdict {
    /// A verdict of `health` on the registration created at `instance`.
    pub fn new(
        health: InstanceHealth,
        instance: Revision,
        since_unix_ms: u64,
        detail: impl Into<String>,
        prober: impl Into<String>,
    ) -> Self {
        ProbeVerdict {
            health,
            instance,
            since_unix_ms,
            detail: detail.into(),
            prober: prober.into(),
        }
    }

    /// The stored value.
    pub(crate) fn encode(&self) -> Vec<u8> {
        // A struct of plain fields always serializes.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// A stored value, if it is a verdict.
    pub(crate) fn decode(value: &[u8]) -> Option<ProbeVerdict> {
        serde_json::from_slice(value).ok()
    }
}

impl ServiceInfo {
    /// This instance, as registered with its key created at `created`, as
    /// read with `verdict` (the verdict stored beside it, if any): the verdict
    /// attached and the health the worse of the two if the verdict judged this
    /// registration (its [`ProbeVerdict::instance`] is `created`); as
    /// registered otherwise. What every read of the registry shows.
    pub fn with_verdict(
        mut self,
        created: Revision,
        verdict: Option<&ProbeVerdict>,
    ) -> ServiceInfo {
        self.probe = None;
        if let Some(v) = verdict.filter(|v| v.instance == created) {
            self.health = self.health.max(v.health);
            self.probe = Some(v.clone());
        }
        self
    }
}

/// What a key under a service's prefix names: an instance (`<id>`), a verdict
/// on one (`<id>/probe`), or something else (deeper keys, for later use, are
/// not instances and not malformed).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Entry<'a> {
    Instance,
    Verdict { instance_key: &'a [u8] },
    Other,
}

/// What `key` (under `prefix`) is.
pub(crate) fn entry<'a>(prefix: &[u8], key: &'a [u8]) -> Entry<'a> {
    let Some(rest) = key.strip_prefix(prefix) else {
        return Entry::Other;
    };
    match rest.iter().position(|&b| b == b'/') {
        None => Entry::Instance,
        Some(i) if &rest[i..] == crate::keys::PROBE_SUFFIX.as_bytes() && i > 0 => Entry::Verdict {
            instance_key: &key[..prefix.len() + i],
        },
        Some(_) => Entry::Other,
    }
}

/// Milliseconds since the Unix epoch now (0 if the clock is before it).
#[cfg(feature = "probe")]
pub(crate) fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_under_a_service_are_told_apart() {
        let p = b"ns/service/api/";
        assert_eq!(entry(p, b"ns/service/api/i-1"), Entry::Instance);
        assert_eq!(
            entry(p, b"ns/service/api/i-1/probe"),
            Entry::Verdict {
                instance_key: b"ns/service/api/i-1"
            }
        );
        assert_eq!(entry(p, b"ns/service/api//probe"), Entry::Other);
        assert_eq!(entry(p, b"ns/service/api/i-1/other"), Entry::Other);
        assert_eq!(entry(p, b"ns/service/api/i-1/probe/x"), Entry::Other);
    }

    #[test]
    fn a_verdict_applies_only_to_the_registration_it_judged() {
        let info = ServiceInfo::new("i-1", "api", "10.0.0.1", 80);
        let critical = ProbeVerdict::new(InstanceHealth::Critical, 7, 0, "refused", "p");
        let read = info.clone().with_verdict(7, Some(&critical));
        assert_eq!(read.health, InstanceHealth::Critical);
        assert_eq!(read.probe.as_ref(), Some(&critical));
        let later = info.clone().with_verdict(9, Some(&critical));
        assert_eq!((later.health, later.probe), (InstanceHealth::Passing, None));
        // The instance's own worse health stands over a passing verdict.
        let own = info.with_health(InstanceHealth::Warning);
        let passing = ProbeVerdict::new(InstanceHealth::Passing, 7, 0, "HTTP 200", "p");
        assert_eq!(
            own.with_verdict(7, Some(&passing)).health,
            InstanceHealth::Warning
        );
    }
}
