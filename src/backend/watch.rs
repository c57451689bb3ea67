//! Watches: ordered, resumable streams of changes.

use futures::stream::BoxStream;

use super::kv::{KeyRange, KeyValue, Revision};
use crate::Result;

/// What happened to a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// The key was written.
    Put,
    /// The key was deleted (explicitly, or because its lease ended).
    Delete,
}

/// One change to one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Put or delete.
    pub kind: EventKind,
    /// The key-value after a put; for a delete, the key with `mod_revision` set to the
    /// deleting revision and every other field zero or empty.
    pub kv: KeyValue,
    /// The key-value before the change, when the watch asked for it and it existed.
    pub prev_kv: Option<KeyValue>,
}

/// The changes of one revision that fall in a watch's range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchResponse {
    /// The revision of every event in this response.
    pub revision: Revision,
    /// The events, in the order the revision applied them. Never empty.
    pub events: Vec<Event>,
}

/// What to watch and from where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchRequest {
    /// The keys watched.
    pub keys: KeyRange,
    /// The first revision to deliver; `None` means changes after now.
    pub start_revision: Option<Revision>,
    /// Whether events carry the previous key-value.
    pub prev_kv: bool,
}

impl WatchRequest {
    /// Watch one key from now.
    pub fn key(key: impl Into<Vec<u8>>) -> Self {
        Self::new(KeyRange::Key(key.into()))
    }
    /// Watch every key under a prefix from now.
    pub fn prefix(prefix: impl Into<Vec<u8>>) -> Self {
        Self::new(KeyRange::Prefix(prefix.into()))
    }
    /// Watch a key range from now.
    pub fn new(keys: KeyRange) -> Self {
        WatchRequest {
            keys,
            start_revision: None,
            prev_kv: false,
        }
    }
    /// Deliver changes from this revision on (replaying history).
    pub fn from_revision(mut self, revision: Revision) -> Self {
        self.start_revision = Some(revision);
        self
    }
    /// Ask for previous key-values in events.
    pub fn with_prev_kv(mut self) -> Self {
        self.prev_kv = true;
        self
    }
}

/// A stream of watch responses.
///
/// # Behavior
/// - One item per revision that changed a watched key, in revision order, with no
///   duplicates and no gaps from the start revision.
/// - A broken connection is resumed by the backend from the last delivered revision + 1.
/// - When the start (or resume) revision has been compacted, the stream yields
///   [`crate::Error::Compacted`] once and ends.
/// - Dropping the stream cancels the watch.
pub type WatchStream = BoxStream<'static, Result<WatchResponse>>;
