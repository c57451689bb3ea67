//! # coordkit-memory
//!
//! A deterministic in-memory backend for coordkit: a real MVCC store (revisions, event
//! history, compaction, transactions, leases, watches), not a mock. Leases expire on
//! tokio's clock, so under `#[tokio::test(start_paused = true)]` a 60 s TTL passes in
//! microseconds and every run gives the same result. Nothing sleeps on the wall clock.
//!
//! [`MemoryBackend::new`] makes one store; [`MemoryBackend::client`] gives another
//! handle to it that behaves as a separate connection, with its own faults:
//! failing calls, lost responses, stalled keep-alives, cut watches, partitions.
//!
//! ```
//! use coordkit::{Backend, BackendExt};
//! use coordkit_memory::MemoryBackend;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> coordkit::Result<()> {
//! let store = MemoryBackend::new();
//! store.put("k", "v").await?;
//! let other = store.client();
//! other.fail_next(1);
//! assert!(other.get("k").await.unwrap_err().is_retryable());
//! assert_eq!(other.get("k").await?.unwrap().value, b"v");
//! # Ok(()) }
//! ```
//!
//! History is kept until [`Backend::compact`] is called, as on etcd without
//! auto-compaction. Lease expiry runs in a task spawned on the tokio runtime of the
//! first lease grant; a store is meant to live within one runtime.
//!
//! # Feature flags
//!
//! - `testing`: implements `coordkit::testing::Faults` for [`MemoryBackend`], so
//!   a test can hand it to the conformance suite (`coordkit-conformance`). The
//!   fault switches themselves (`fail_next`, `partition`, …) are plain methods and
//!   need no feature; a build for single-process use leaves `testing` off.

#![warn(missing_docs, missing_debug_implementations)]

mod faults;
#[cfg(feature = "planted-bugs")]
#[doc(hidden)]
pub mod planted;
mod store;
mod watch;
mod watchers;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use async_trait::async_trait;
use coordkit::backend::validate;
use coordkit::{
    Backend, Capabilities, LeaseGrant, LeaseId, LeaseInfo, Limits, RangeRequest, RangeResponse,
    Result, Revision, Txn, TxnResponse, WatchRequest, WatchStart, WatchStream,
};
use tokio::sync::Notify;
use tokio::time::Instant;

use faults::ClientFaults;
use store::State;

/// Counts of the calls a store has served, for tests that bound the work a recipe
/// causes (for example, that one lock release wakes one waiter).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Range calls.
    pub ranges: u64,
    /// Transaction calls (including every put and delete).
    pub txns: u64,
    /// Lease grants.
    pub lease_grants: u64,
    /// Lease keep-alives.
    pub keep_alives: u64,
    /// Watch registrations, including resumes after a cut.
    pub watches: u64,
}

#[derive(Default)]
struct Counters {
    ranges: AtomicU64,
    txns: AtomicU64,
    lease_grants: AtomicU64,
    keep_alives: AtomicU64,
    watches: AtomicU64,
}

/// What all handles of one store share.
pub(crate) struct Store {
    state: Mutex<State>,
    /// Woken whenever a lease deadline may have moved; the expiry task waits on it.
    leases_changed: Arc<Notify>,
    reaper_started: AtomicBool,
    next_client: AtomicU64,
    limits: Limits,
    counters: Counters,
}

impl Store {
    /// The state, with every lease past its deadline already ended.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.expire(Instant::now());
        state
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // Let the expiry task see that the store is gone and end.
        self.leases_changed.notify_one();
    }
}

/// Ends leases at their deadlines, so that watchers see the deletes without anyone
/// calling the store. Holds the store weakly and ends with it.
async fn expire_leases(store: Weak<Store>, changed: Arc<Notify>) {
    loop {
        let next = match store.upgrade() {
            Some(store) => store.lock().next_deadline(),
            None => return,
        };
        match next {
            Some(deadline) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => {}
                    _ = changed.notified() => {}
                }
            }
            None => changed.notified().await,
        }
    }
}

/// One handle (connection) to an in-memory store. Clones share the handle and its
/// faults; [`MemoryBackend::client`] makes a new handle to the same store.
#[derive(Clone)]
pub struct MemoryBackend {
    store: Arc<Store>,
    client: Arc<ClientFaults>,
}

impl std::fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBackend")
            .field("client", &self.client.id)
            .finish_non_exhaustive()
    }
}

impl Default for MemoryBackend {
    fn default() -> Self {
        Self::new()
    }
}

/// The in-memory backend's bounds: etcd's defaults ([`Limits::default`]: leases
/// of at least 2 s, values up to 1.5 MiB, 128 operations per transaction), so
/// code that works against it does not fail against etcd. Tests that want other
/// bounds use [`MemoryBackend::with_limits`].
pub fn default_limits() -> Limits {
    Limits::default()
}

impl MemoryBackend {
    /// A new, empty store (at revision 1) and a first handle to it.
    pub fn new() -> Self {
        Self::with_limits(default_limits())
    }

    /// A new store enforcing `limits`.
    pub fn with_limits(limits: Limits) -> Self {
        let store = Arc::new(Store {
            state: Mutex::new(State::new()),
            leases_changed: Arc::new(Notify::new()),
            reaper_started: AtomicBool::new(false),
            next_client: AtomicU64::new(1),
            limits,
            counters: Counters::default(),
        });
        MemoryBackend {
            client: Arc::new(ClientFaults::new(0)),
            store,
        }
    }

    /// Another handle to the same store, acting as a separate connection: its faults
    /// are its own.
    pub fn client(&self) -> MemoryBackend {
        let id = self.store.next_client.fetch_add(1, Ordering::Relaxed);
        MemoryBackend {
            store: self.store.clone(),
            client: Arc::new(ClientFaults::new(id)),
        }
    }

    // ---- faults of this handle ----

    /// The next `n` calls of this handle fail with `Unavailable` without reaching
    /// the store.
    pub fn fail_next(&self, n: u64) {
        self.client.fail_next(n);
    }

    /// The next write of this handle (transaction, lease grant, keep-alive, revoke)
    /// commits, but its caller gets `Unavailable`, as when a connection drops
    /// after the request was sent.
    pub fn lose_next_response(&self) {
        self.client.lose_next_response();
    }

    /// Keep-alives of this handle are not answered (they fail with `Timeout` and do
    /// not reach the store) until [`MemoryBackend::resume_keep_alives`].
    pub fn stall_keep_alives(&self) {
        self.client.set_keep_alives_stalled(true);
    }

    /// Undo [`MemoryBackend::stall_keep_alives`].
    pub fn resume_keep_alives(&self) {
        self.client.set_keep_alives_stalled(false);
    }

    /// Break this handle's open watch streams, as a dropped connection would. Each
    /// resumes from its last delivered revision + 1 (at once, or when a partition
    /// heals), or yields `Compacted` if that revision has been compacted meanwhile.
    pub fn cut_watches(&self) {
        self.store.lock().cut_watches(self.client.id);
    }

    /// Cut this handle off: every call fails with `Unavailable` and its watches are
    /// disconnected until [`MemoryBackend::heal`]. Leases it keeps alive run down.
    pub fn partition(&self) {
        self.client.set_partitioned(true);
        self.cut_watches();
    }

    /// End a partition.
    pub fn heal(&self) {
        self.client.set_partitioned(false);
    }

    /// Whether this handle is partitioned.
    pub fn is_partitioned(&self) -> bool {
        self.client.is_partitioned()
    }

    // ---- faults and views of the store ----

    /// Compact the store at its current revision; returns that revision.
    pub fn compact_now(&self) -> Revision {
        let mut state = self.store.lock();
        let rev = state.revision();
        // Compacting at an already compacted revision changes nothing.
        let _ = state.compact(rev);
        rev
    }

    /// End a lease now, as if its TTL had run out. Returns whether it existed.
    pub fn expire_lease(&self, id: LeaseId) -> bool {
        let ended = self.store.lock().revoke(id).is_ok();
        self.store.leases_changed.notify_one();
        ended
    }

    /// The store's current revision (no fault applies).
    pub fn revision(&self) -> Revision {
        self.store.lock().revision()
    }

    /// How many watch registrations are open on the store.
    pub fn open_watches(&self) -> usize {
        self.store.lock().watcher_count()
    }

    /// Watches this handle opens from now on (until `None`) deliver nothing until
    /// `lag` after they open, then all they owe: etcd's watch registered while a
    /// write commits, which its catch-up loop serves within 100 ms.
    pub fn lag_new_watches(&self, lag: Option<std::time::Duration>) {
        self.client.set_watch_lag(lag);
    }

    /// How many times this handle's watches registered again after a cut or a
    /// partition (a fault's proof that it happened).
    pub fn watch_resumes(&self) -> u64 {
        self.client.watch_resumes()
    }

    /// The calls served so far by the store (all handles).
    pub fn stats(&self) -> Stats {
        let c = &self.store.counters;
        Stats {
            ranges: c.ranges.load(Ordering::Relaxed),
            txns: c.txns.load(Ordering::Relaxed),
            lease_grants: c.lease_grants.load(Ordering::Relaxed),
            keep_alives: c.keep_alives.load(Ordering::Relaxed),
            watches: c.watches.load(Ordering::Relaxed),
        }
    }

    fn start_expiry(&self) {
        if self.store.reaper_started.swap(true, Ordering::SeqCst) {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(expire_leases(
                    Arc::downgrade(&self.store),
                    self.store.leases_changed.clone(),
                ));
            }
            // No runtime: leases still end, when the store is next called.
            Err(_) => self.store.reaper_started.store(false, Ordering::SeqCst),
        }
    }
}

#[async_trait]
impl Backend for MemoryBackend {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn limits(&self) -> Limits {
        self.store.limits
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::NONE
            .with_compaction(true)
            .with_watch_start(true)
    }

    async fn range(&self, request: RangeRequest) -> Result<RangeResponse> {
        validate::range(&request)?;
        self.client.before_call()?;
        self.store.counters.ranges.fetch_add(1, Ordering::Relaxed);
        self.store.lock().range(&request)
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        validate::txn(&txn, &self.store.limits)?;
        self.client.before_call()?;
        self.store.counters.txns.fetch_add(1, Ordering::Relaxed);
        let resp = self.store.lock().txn(txn)?;
        self.client.after_write()?;
        Ok(resp)
    }

    async fn lease_grant(&self, ttl: i64) -> Result<LeaseGrant> {
        validate::ttl(ttl, &self.store.limits)?;
        self.client.before_call()?;
        self.store
            .counters
            .lease_grants
            .fetch_add(1, Ordering::Relaxed);
        self.start_expiry();
        let grant = self.store.lock().grant(ttl, Instant::now());
        self.store.leases_changed.notify_one();
        self.client.after_write()?;
        Ok(grant)
    }

    async fn lease_keep_alive(&self, id: LeaseId) -> Result<i64> {
        self.client.before_call()?;
        self.client.keep_alive_answered()?;
        self.store
            .counters
            .keep_alives
            .fetch_add(1, Ordering::Relaxed);
        let ttl = self.store.lock().keep_alive(id, Instant::now())?;
        self.store.leases_changed.notify_one();
        self.client.after_write()?;
        Ok(ttl)
    }

    async fn lease_revoke(&self, id: LeaseId) -> Result<()> {
        self.client.before_call()?;
        self.store.lock().revoke(id)?;
        self.store.leases_changed.notify_one();
        self.client.after_write()
    }

    async fn lease_time_to_live(&self, id: LeaseId) -> Result<LeaseInfo> {
        self.client.before_call()?;
        self.store.lock().time_to_live(id, Instant::now())
    }

    async fn watch(&self, request: WatchRequest) -> Result<WatchStream> {
        validate::watch(&request)?;
        self.client.before_call()?;
        Ok(watch::open(self.store.clone(), self.client.clone(), request)?.0)
    }

    async fn watch_reporting_start(
        &self,
        request: WatchRequest,
    ) -> Result<(WatchStream, Option<WatchStart>)> {
        validate::watch(&request)?;
        self.client.before_call()?;
        let (stream, start) = watch::open(self.store.clone(), self.client.clone(), request)?;
        Ok((stream, Some(start)))
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        validate::compact(revision)?;
        self.client.before_call()?;
        self.store.lock().compact(revision)?;
        self.client.after_write()
    }
}

impl From<MemoryBackend> for Arc<dyn Backend> {
    fn from(b: MemoryBackend) -> Self {
        Arc::new(b)
    }
}

/// The conformance suite's fault switches, on this handle (feature `testing`).
#[cfg(feature = "testing")]
impl coordkit::testing::Faults for MemoryBackend {
    fn fail_next(&self, n: u64) {
        MemoryBackend::fail_next(self, n)
    }
    fn lose_next_response(&self) {
        MemoryBackend::lose_next_response(self)
    }
    fn stall_keep_alives(&self) {
        MemoryBackend::stall_keep_alives(self)
    }
    fn resume_keep_alives(&self) {
        MemoryBackend::resume_keep_alives(self)
    }
    fn cut_watches(&self) {
        MemoryBackend::cut_watches(self)
    }
    fn partition(&self) {
        MemoryBackend::partition(self)
    }
    fn heal(&self) {
        MemoryBackend::heal(self)
    }
    fn expire_lease(&self, id: LeaseId) {
        MemoryBackend::expire_lease(self, id);
    }
    fn lag_new_watches(&self, lag: Option<std::time::Duration>) {
        MemoryBackend::lag_new_watches(self, lag)
    }
    fn watch_resumes(&self) -> u64 {
        MemoryBackend::watch_resumes(self)
    }
}
