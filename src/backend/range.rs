//! Reads: one key or a prefix, now or at a past revision.

use super::kv::{KeyRange, KeyValue, Revision};

/// Order of a range's results by create revision (oldest first = `Ascend`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortOrder {
    /// Smallest create revision first.
    Ascend,
    /// Largest create revision first.
    Descend,
}

/// A read of one key or a prefix.
///
/// Without a sort order, results come in key order. With a limit, at most that many
/// key-values are returned (after sorting) and `more` tells whether others matched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeRequest {
    /// The keys to read.
    pub keys: KeyRange,
    /// Read as of this revision instead of now. Must not be compacted nor in the future.
    pub revision: Option<Revision>,
    /// At most this many key-values; `None` for all.
    pub limit: Option<u64>,
    /// Sort by create revision instead of by key.
    pub sort_by_create_revision: Option<SortOrder>,
    /// Return only key-values created at or before this revision. As on etcd, the
    /// filter applies to the returned key-values (and `more`), while `count` counts
    /// every key of the range.
    pub max_create_revision: Option<Revision>,
    /// Return only the count, no key-values.
    pub count_only: bool,
}

impl RangeRequest {
    /// Read one key.
    pub fn key(key: impl Into<Vec<u8>>) -> Self {
        Self::new(KeyRange::Key(key.into()))
    }

    /// Read every key under a prefix.
    pub fn prefix(prefix: impl Into<Vec<u8>>) -> Self {
        Self::new(KeyRange::Prefix(prefix.into()))
    }

    /// Read a key range.
    pub fn new(keys: KeyRange) -> Self {
        RangeRequest {
            keys,
            revision: None,
            limit: None,
            sort_by_create_revision: None,
            max_create_revision: None,
            count_only: false,
        }
    }

    /// Read as of a past revision.
    pub fn at_revision(mut self, revision: Revision) -> Self {
        self.revision = Some(revision);
        self
    }

    /// Return at most `limit` key-values (at least 1: a limit of 0 is
    /// `InvalidArgument`, since etcd would read it as "no limit").
    pub fn with_limit(mut self, limit: u64) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Sort results by create revision.
    pub fn sort_by_create_revision(mut self, order: SortOrder) -> Self {
        self.sort_by_create_revision = Some(order);
        self
    }

    /// Return only key-values whose create revision is at most `revision` (how a lock
    /// waiter finds the claim just before its own).
    pub fn with_max_create_revision(mut self, revision: Revision) -> Self {
        self.max_create_revision = Some(revision);
        self
    }

    /// Return only the number of matching keys.
    pub fn count_only(mut self) -> Self {
        self.count_only = true;
        self
    }
}

/// The result of a range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeResponse {
    /// The key-values read (empty when `count_only`).
    pub kvs: Vec<KeyValue>,
    /// How many keys matched, regardless of the limit.
    pub count: i64,
    /// Whether more keys matched than were returned.
    pub more: bool,
    /// The store's revision when the read was served.
    pub revision: Revision,
}
