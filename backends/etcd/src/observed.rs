//! The newest revision this backend has observed: the floor of a
//! [`ReadConsistency::Observed`](coordkit::ReadConsistency::Observed) read.
//!
//! Every response that carries a header (reads, writes, transactions, watch
//! creations, events and progress reports) raises it before its caller or the
//! watch's consumer sees the response, so a read with this floor sees everything
//! the caller could have learned from this backend.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

#[derive(Default)]
pub(crate) struct Observed {
    revision: AtomicI64,
    /// Observed reads that a member behind the floor answered, sent again
    /// linearizably.
    pub(crate) resent: AtomicU64,
}

impl Observed {
    /// A response from a state at `revision`.
    pub(crate) fn see(&self, revision: i64) {
        self.revision.fetch_max(revision, Ordering::AcqRel);
    }

    /// The newest revision seen so far.
    pub(crate) fn revision(&self) -> i64 {
        self.revision.load(Ordering::Acquire)
    }
}
