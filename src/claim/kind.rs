//! What a claim is of: a lock, a leadership, a semaphore's permit, a reader or
//! a writer — its key segment, the value its key carries, and which keys before
//! it keep it waiting.

use crate::backend::KeyValue;
use crate::error::{Error, Result};
use crate::keys::KeyLayout;
use crate::queue_name::QueueName;

/// What a claim is of, for keys, errors and logs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Lock,
    Election,
    /// One of `permits` permits.
    Semaphore {
        permits: u32,
    },
    /// A read-write lock's reader.
    Read,
    /// A read-write lock's writer.
    Write,
}

impl Kind {
    /// The key segment after the namespace.
    pub(super) fn segment(self) -> &'static str {
        match self {
            Kind::Lock => "lock",
            Kind::Election => "election",
            Kind::Semaphore { .. } => "semaphore",
            Kind::Read | Kind::Write => "rwlock",
        }
    }

    /// The name in logs and metrics.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Kind::Read => "read_lock",
            Kind::Write => "write_lock",
            other => other.segment(),
        }
    }

    /// Locks and elections: one owner, one key per session (etcd's protocol, so
    /// tasks of one process queue locally). Others: a key per claim held at once
    /// (see `key_hold`).
    pub(super) fn exclusive(self) -> bool {
        matches!(self, Kind::Lock | Kind::Election)
    }

    /// The value a shared claim's key carries, read by the others.
    pub(crate) fn value(self) -> Vec<u8> {
        match self {
            Kind::Semaphore { permits } => format!("permits={permits}").into_bytes(),
            Kind::Read => b"read".to_vec(),
            Kind::Write => b"write".to_vec(),
            Kind::Lock | Kind::Election => Vec::new(),
        }
    }

    /// Whether a shared claim is admitted given the keys created before its own
    /// (all of them, or for a semaphore at least the `permits` nearest: with
    /// that many it waits); `InvalidArgument` when one of them was made with
    /// another number of permits. Each claim is compared with the keys before
    /// it, so a queue holds one number of permits, and an admitted claim has
    /// been compared with every key before it.
    pub(super) fn admits(self, name: &str, before: &[&KeyValue]) -> Result<bool> {
        if let Kind::Semaphore { permits } = self {
            let ours = self.value();
            if let Some(other) = before.iter().find(|kv| kv.value != ours) {
                return Err(Error::invalid(
                    "permits",
                    format!(
                        "semaphore {name:?} is in use with {:?} (key {}), not {permits} permits: every client must give the same number",
                        String::from_utf8_lossy(&other.value),
                        other.key_str()
                    ),
                ));
            }
        }
        Ok(self.blocking(before).count() < self.room())
    }

    /// The earlier keys that keep a shared claim waiting: a reader waits for
    /// writers only (anything else is taken for a writer); the others for all.
    pub(super) fn blocking<'a>(
        self,
        before: &'a [&'a KeyValue],
    ) -> impl Iterator<Item = &'a KeyValue> + 'a {
        before
            .iter()
            .copied()
            .filter(move |kv| self != Kind::Read || kv.value != b"read")
    }

    /// How many blocking keys still admit the claim, plus one.
    pub(super) fn room(self) -> usize {
        match self {
            Kind::Semaphore { permits } => permits as usize,
            _ => 1,
        }
    }

    /// The key prefix of the queue for `name` under `namespace` (checked first).
    pub(crate) fn queue_prefix(self, keys: &KeyLayout, name: &QueueName) -> Result<String> {
        name.key_prefix(keys, self.segment())
    }
}
