//! The primitive every recipe is written against: a key-value store with revisions,
//! transactions, leases and watches (etcd's v3 data model).
//!
//! A backend implements the small [`Backend`] trait; conveniences live in
//! [`BackendExt`], implemented for every backend and never overridden. The
//! `coordkit-conformance` crate holds the contract each backend must pass.

mod ext;
mod kv;
mod lease;
mod limits;
mod namespace;
mod range;
mod shared;
mod txn;
pub mod validate;
mod watch;

use async_trait::async_trait;

pub use ext::{BackendExt, Created};
pub use kv::{KeyRange, KeyValue, LeaseId, Revision};
pub use lease::{LeaseGrant, LeaseInfo};
pub use limits::{Capabilities, Limits};
pub use namespace::Namespaced;
pub use range::{RangeRequest, RangeResponse, SortOrder};
pub use txn::{
    Compare, CompareOp, CompareTarget, DeleteRequest, PutRequest, ReadConsistency, Txn, TxnOp,
    TxnOpResponse, TxnResponse,
};
pub use watch::{Event, EventKind, Live, WatchRequest, WatchResponse, WatchStart, WatchStream};

use crate::error::Result;

/// A key-value store with global revisions, atomic transactions, leases and watches.
///
/// Implementations are shared as `Arc<dyn Backend>`; every method may be called
/// concurrently. Each method validates its input with [`validate`] and returns
/// [`crate::Error::InvalidArgument`] (never a panic) for bad input.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// A short name for messages ("etcd", "memory").
    fn name(&self) -> &'static str;

    /// The bounds this backend enforces.
    fn limits(&self) -> Limits;

    /// What this backend can do.
    fn capabilities(&self) -> Capabilities;

    /// Read one key or a prefix.
    ///
    /// # Behavior
    /// - Missing keys are simply absent from `kvs`; reading them is not an error.
    /// - With `revision`, reads the store as it was then; a compacted revision is
    ///   `Compacted`, a future one `InvalidArgument`.
    /// - A `limit` of 0 is `InvalidArgument` (no limit is `None`); `more` and the
    ///   limit apply after the `max_create_revision` filter; `count` ignores both;
    ///   a `count_only` range returns no key-value and `more` false.
    async fn range(&self, request: RangeRequest) -> Result<RangeResponse>;

    /// Run a transaction atomically.
    ///
    /// # Behavior
    /// - All writes of the branch that runs share one new revision; a branch without
    ///   effective writes leaves the revision unchanged.
    /// - A put naming a lease that does not exist fails with `LeaseNotFound` and
    ///   applies nothing.
    /// - A range inside the transaction sees the writes of the operations before
    ///   it, and reports the transaction's revision (`TxnResponse::revision`).
    /// - A read-only transaction with [`ReadConsistency::Observed`] is answered
    ///   from a committed state no older than any revision this handle has
    ///   observed; its `revision` is that state's. A backend may always answer
    ///   from the newest state. With a write it is `InvalidArgument`.
    async fn txn(&self, txn: Txn) -> Result<TxnResponse>;

    /// Grant a lease of `ttl` seconds.
    ///
    /// # Behavior
    /// - A lease ends no earlier than its TTL after its grant or last keep-alive
    ///   (recipes rely on that for their local deadline). It may end later: etcd
    ///   checks expiry every 500 ms and restarts every TTL after a leader change,
    ///   so callers must not assume it ends *at* its deadline. A backend should end
    ///   it within about 1 s of its deadline; the conformance suite's model accepts
    ///   an end anywhere in `[deadline, deadline + 1 s)` (its `EXPIRY_TOLERANCE`).
    /// - Lease ids are never reused by one store.
    async fn lease_grant(&self, ttl: i64) -> Result<LeaseGrant>;

    /// Renew a lease to its granted TTL; returns that TTL in seconds.
    /// A lease that has ended is `LeaseNotFound`.
    async fn lease_keep_alive(&self, id: LeaseId) -> Result<i64>;

    /// End a lease now, deleting its keys in one revision. Unknown: `LeaseNotFound`.
    async fn lease_revoke(&self, id: LeaseId) -> Result<()>;

    /// A live lease's TTL and keys. An ended or unknown lease is `LeaseNotFound`.
    async fn lease_time_to_live(&self, id: LeaseId) -> Result<LeaseInfo>;

    /// Watch a key or prefix; see [`WatchStream`] for the guarantees. Without a
    /// start revision the watch starts "now": every change committed after this
    /// call returns is delivered.
    async fn watch(&self, request: WatchRequest) -> Result<WatchStream>;

    /// [`Backend::watch`], also saying where the watch starts: with
    /// `Some(start)`, every change committed at a revision above `start.after` is
    /// delivered (with a start revision `s` in the request, `after` is `s - 1`),
    /// and `start.live` says whether as they commit. A caller that read the store
    /// at a revision of at least `after` has then missed nothing between its read
    /// and the watch, and need not read again.
    ///
    /// # Behavior
    /// - For a watch from now, `after` is at least the revision of every change
    ///   committed before the call (as for `watch`, nothing committed after it
    ///   returns is missed).
    /// - `None`: the backend cannot tell (the default, which calls `watch`); the
    ///   caller reads again after the watch exists.
    /// - Dropping the future before it returns leaves no watch open, as with
    ///   `watch`.
    async fn watch_reporting_start(
        &self,
        request: WatchRequest,
    ) -> Result<(WatchStream, Option<WatchStart>)> {
        Ok((self.watch(request).await?, None))
    }

    /// Discard history before `revision`; reads and watches from earlier revisions
    /// then fail with `Compacted`. A revision already compacted is `Compacted`; a
    /// future one `InvalidArgument`; a backend without the capability `Unsupported`.
    ///
    /// # Behavior
    /// - A fresh store has compacted nothing: every revision from 1 on is readable.
    /// - Every `Compacted` error (from `range`, `watch` or `compact`) carries the
    ///   compaction revision in force, which is the oldest revision still readable.
    async fn compact(&self, revision: Revision) -> Result<()>;
}
