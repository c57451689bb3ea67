//! Deliberate bugs, one at a time, to measure what the conformance suite
//! catches (`scripts/sensitivity.sh`): [`PlantedClient`] wraps a store handle
//! and breaks one rule of the `Backend` contract or of the `Faults` switches
//! in what it sends or answers. The store itself carries no bug. Only with
//! the `planted-bugs` feature, and only when `COORD_PLANTED_BUG=<n>` names
//! one (see [`planted_bug`]); never in a normal build.
//!
//! A bug is written the way a broken backend would show it to its callers,
//! which is not always the way a broken store would cause it: "an expired
//! lease leaves its keys" attaches the keys to a second, endless lease, and
//! "a delete that deletes nothing advances the revision" reports the next
//! revision. What matters is that each breaks its rule where callers see it.

mod faults;
mod leases;
mod reads;
mod watches;
mod writes;

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use coordkit::{
    Backend, Capabilities, Error, KeyValue, LeaseGrant, LeaseId, LeaseInfo, Limits, RangeRequest,
    RangeResponse, Result, Revision, Txn, TxnResponse, WatchRequest, WatchStart, WatchStream,
};

use crate::MemoryBackend;
use leases::LeaseIds;

/// Every planted bug: its number and the rule it breaks (one per line:
/// `scripts/sensitivity.sh` reads them).
#[rustfmt::skip]
pub const BUGS: &[(u32, &str)] = &[
    (1, "a range at a past revision reads the latest state"),
    (2, "count is taken after the limit"),
    (3, "descending sort by create revision is ignored"),
    (4, "`more` is never set"),
    (5, "max_create_revision filter excludes the revision itself"),
    (6, "count_only still returns key-values"),
    (7, "a prefix range also returns the key after the prefix"),
    (8, "a read at a future revision is allowed"),
    (9, "a read at a compacted revision is allowed"),
    (10, "a txn's compares need only one to hold"),
    (11, "a txn whose compares fail runs no branch"),
    (12, "a put with an unknown lease applies"),
    (13, "an update resets create_revision"),
    (14, "an update does not bump version"),
    (15, "a put never returns prev_kv"),
    (16, "a delete never returns prev_kvs"),
    (17, "a writing txn reports the old revision"),
    (18, "a multi-write txn publishes only its first event"),
    (19, "a delete that deletes nothing answers a revision past the store's"),
    (20, "an expired lease leaves its keys"),
    (21, "a revoke leaves the keys"),
    (22, "lease time-to-live lists no keys"),
    (23, "a keep-alive does not extend the lease"),
    (24, "compaction at a future revision is accepted"),
    (25, "compacting an already compacted revision is accepted"),
    (26, "watch events never carry prev_kv"),
    (27, "a watch from a past revision does not replay"),
    (28, "a delete event carries the old value"),
    (29, "a watch from a compacted revision replays what is left"),
    (30, "a prefix watch also sees keys outside the prefix"),
    (31, "a watch from a future revision gets earlier revisions"),
    (32, "fail_next(n) fails n + 1 calls"),
    (33, "a lost response's write does not apply"),
    (34, "a stalled keep-alive hangs instead of failing"),
    (35, "a partition does not fail calls"),
    (36, "cut_watches does nothing"),
    (37, "a partition leaves watches connected"),
    (38, "lease grants below the minimum TTL are accepted"),
    (39, "a txn writing one key twice is accepted"),
    (40, "an empty key is accepted by range"),
    (41, "lease ids are reused after a revoke"),
    (42, "a range inside a txn does not see the txn's earlier writes"),
    (43, "an observed read is answered one revision behind the newest write"),
    (44, "an observed read with a write is accepted and applies"),
];

/// The bug `COORD_PLANTED_BUG` names, if any.
pub fn planted_bug() -> Option<u32> {
    std::env::var("COORD_PLANTED_BUG")
        .ok()
        .and_then(|v| v.parse().ok())
}

/// One planted bug over one store: hands out [`PlantedClient`]s that share
/// what the bug must remember across handles (lease ids).
#[derive(Debug)]
pub struct PlantedStore {
    bug: u32,
    leases: Arc<Mutex<LeaseIds>>,
}

impl PlantedStore {
    /// Bug `bug` (a number of [`BUGS`]), planted in every client made here.
    pub fn new(bug: u32) -> Self {
        PlantedStore {
            bug,
            leases: Arc::default(),
        }
    }

    /// `inner`, with the bug planted.
    pub fn client(&self, inner: MemoryBackend) -> PlantedClient {
        PlantedClient {
            inner,
            bug: self.bug,
            leases: self.leases.clone(),
            lose_next: AtomicBool::new(false),
            stalled: AtomicBool::new(false),
            partitioned: AtomicBool::new(false),
        }
    }
}

/// A store handle with one bug planted: a `Backend` and the conformance
/// suite's `Faults`, forwarding to the handle but where the bug changes a call.
#[derive(Debug)]
pub struct PlantedClient {
    inner: MemoryBackend,
    bug: u32,
    leases: Arc<Mutex<LeaseIds>>,
    /// Bug 33: the next write is lost before it applies.
    lose_next: AtomicBool,
    /// Keep-alives are stalled (bug 34 hangs on them).
    stalled: AtomicBool,
    /// Bug 37: calls fail, watches stay connected.
    partitioned: AtomicBool,
}

impl PlantedClient {
    /// Whether bug `n` is the one planted.
    fn is(&self, n: u32) -> bool {
        self.bug == n
    }

    /// Bug 37's partition: every call fails while it lasts.
    fn before_call(&self) -> Result<()> {
        if self.partitioned.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(Error::unavailable("partitioned (planted bug 37)"));
        }
        Ok(())
    }

    /// A key-value as this client shows it to its caller.
    fn shown(&self, kv: &mut KeyValue) {
        self.view().show(kv)
    }

    /// How key-values are shown, for a watch stream to keep.
    fn view(&self) -> View {
        View {
            bug: self.bug,
            leases: self.leases.clone(),
        }
    }
}

/// How a client shows key-values to its caller: bugs 13 and 14, and lease ids.
#[derive(Clone, Debug)]
struct View {
    bug: u32,
    leases: Arc<Mutex<LeaseIds>>,
}

impl View {
    fn show(&self, kv: &mut KeyValue) {
        if self.bug == 13 {
            // Bug 13: an update resets create_revision.
            kv.create_revision = kv.mod_revision;
        }
        if self.bug == 14 {
            // Bug 14: an update does not bump version.
            kv.version = 1;
        }
        if let Some(lease) = kv.lease {
            let ids = self.leases.lock().unwrap_or_else(|e| e.into_inner());
            kv.lease = Some(ids.shown(lease));
        }
    }
}

#[async_trait]
impl Backend for PlantedClient {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn limits(&self) -> Limits {
        self.inner.limits()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn range(&self, request: RangeRequest) -> Result<RangeResponse> {
        self.before_call()?;
        self.planted_range(request).await
    }
    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        self.before_call()?;
        self.planted_txn(txn).await
    }
    async fn lease_grant(&self, ttl: i64) -> Result<LeaseGrant> {
        self.before_call()?;
        self.planted_grant(ttl).await
    }
    async fn lease_keep_alive(&self, id: LeaseId) -> Result<i64> {
        self.before_call()?;
        self.planted_keep_alive(id).await
    }
    async fn lease_revoke(&self, id: LeaseId) -> Result<()> {
        self.before_call()?;
        self.planted_revoke(id).await
    }
    async fn lease_time_to_live(&self, id: LeaseId) -> Result<LeaseInfo> {
        self.before_call()?;
        self.planted_time_to_live(id).await
    }
    async fn watch(&self, request: WatchRequest) -> Result<WatchStream> {
        self.before_call()?;
        Ok(self.planted_watch(request).await?.0)
    }
    async fn watch_reporting_start(
        &self,
        request: WatchRequest,
    ) -> Result<(WatchStream, Option<WatchStart>)> {
        self.before_call()?;
        self.planted_watch(request).await
    }
    async fn compact(&self, revision: Revision) -> Result<()> {
        self.before_call()?;
        self.planted_compact(revision).await
    }
}
