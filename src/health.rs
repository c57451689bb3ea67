//! Health for readiness probes: is the store reachable, how are the sessions,
//! are the caches and config managers following their keys or serving stale data.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::time::Instant;
use tracing::{info, warn};

use crate::backend::{Backend, LeaseId, RangeRequest};
use crate::session::SessionState;

/// How often a coordinator confirms with the store, for all its followers (its
/// [`ServiceCache`](crate::ServiceCache)s and
/// [`ConfigManager`](crate::ConfigManager)s), that it answers: one read per
/// interval, whatever the number of followers.
pub const SYNC_PROBE_INTERVAL: Duration = Duration::from_secs(2);

/// A follower with no confirmed sync for this long is stale.
pub const STALE_AFTER: Duration = Duration::from_secs(5);

/// One follower's sync, as [`SyncHealth`] reports it.
pub(crate) struct SyncStatus {
    what: String,
    state: Mutex<SyncState>,
}

struct SyncState {
    /// A service cache holding instances that left: since, serving, live.
    holding: Option<(Instant, usize, usize)>,
    /// Serving a snapshot written at this time (a warm start), until the
    /// follower has read the store: the probe's answers do not count.
    snapshot: Option<std::time::SystemTime>,
    last_ok: Option<Instant>,
    last_error: Option<(Instant, String)>,
    stale_reported: bool,
}

impl SyncStatus {
    pub(crate) fn new(what: String) -> Arc<Self> {
        Arc::new(SyncStatus {
            what,
            state: Mutex::new(SyncState {
                holding: None,
                snapshot: None,
                last_ok: Some(Instant::now()),
                last_error: None,
                stale_reported: false,
            }),
        })
    }

    /// A follower that serves a snapshot written at `saved_at`, the store
    /// not read yet: stale until [`SyncStatus::caught_up`].
    pub(crate) fn from_snapshot(what: String, saved_at: std::time::SystemTime) -> Arc<Self> {
        let status = Self::new(what);
        {
            let mut s = status.lock();
            s.snapshot = Some(saved_at);
            s.last_ok = None;
        }
        status
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SyncState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The follower read the store after a warm start.
    pub(crate) fn caught_up(&self) {
        self.lock().snapshot = None;
        self.synced();
    }

    /// The follower read its keys or received a change just now (ignored
    /// while it serves a snapshot: the store answering does not make the
    /// snapshot fresh).
    pub(crate) fn synced(&self) {
        let mut s = self.lock();
        if s.snapshot.is_some() {
            return;
        }
        s.last_ok = Some(Instant::now());
        s.last_error = None;
        if s.stale_reported {
            s.stale_reported = false;
            info!(follower = %self.what, "following the store again");
        }
    }

    /// A service cache's empty-push protection now (`None`: not holding).
    pub(crate) fn holding(&self, holding: Option<(Instant, usize, usize)>) {
        self.lock().holding = holding;
    }

    /// The follower could not read or watch its keys.
    pub(crate) fn failed(&self, error: &crate::error::Error) {
        self.lock().last_error = Some((Instant::now(), error.to_string()));
    }

    /// Log (once) and count a change into or out of staleness.
    fn report(&self) {
        let health = self.health();
        crate::telemetry::follower_stale(&self.what, health.stale);
        let mut s = self.lock();
        if health.stale && !s.stale_reported {
            s.stale_reported = true;
            warn!(follower = %self.what, error = ?health.last_error, "cannot follow the store: serving the last known data");
        }
    }

    pub(crate) fn health(&self) -> SyncHealth {
        let s = self.lock();
        let now = Instant::now();
        let since = s.last_ok.map(|t| now.saturating_duration_since(t));
        let failing = match (&s.last_error, s.last_ok) {
            (Some((at, _)), Some(ok)) => *at > ok,
            (Some(_), None) => true,
            _ => false,
        };
        SyncHealth {
            name: self.what.clone(),
            since_last_sync: since,
            stale: since.is_none_or(|d| d > STALE_AFTER)
                || (failing && since.is_none_or(|d| d > SYNC_PROBE_INTERVAL)),
            last_error: s.last_error.as_ref().map(|(_, e)| e.clone()),
            snapshot_age: s.snapshot.map(|at| at.elapsed().unwrap_or_default()),
            protected: s.holding.map(|(since, serving, live)| Protected {
                since: now.saturating_duration_since(since),
                serving,
                live,
            }),
        }
    }
}

/// Whether one cache or config manager follows its keys.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SyncHealth {
    /// What follows: `service <name>` or `config <key>`.
    pub name: String,
    /// How long ago it last confirmed it follows the store (a change received, or
    /// the coordinator's probe at [`SYNC_PROBE_INTERVAL`] answered).
    pub since_last_sync: Option<Duration>,
    /// No confirmed sync for [`STALE_AFTER`], or the last attempt failed: it
    /// serves what it last knew.
    pub stale: bool,
    /// The last failure, if any since the last sync.
    pub last_error: Option<String>,
    /// A service cache started from its snapshot with the store down (a warm
    /// start): how old that snapshot is; `None` once the store was read (or
    /// for a follower that did not start so). Such a follower is stale.
    pub snapshot_age: Option<Duration>,
    /// A service cache holding on to instances that left, rather than serve
    /// too few (empty-push protection, [`CacheOptions`](crate::CacheOptions));
    /// `None` otherwise. It does not make the coordinator unready.
    pub protected: Option<Protected>,
}

/// One session of the coordinator.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionHealth {
    /// The session's TTL.
    pub ttl: Duration,
    /// Its lease.
    pub lease: LeaseId,
    /// Its state.
    pub state: SessionState,
    /// Time left until its local deadline (zero once past it).
    pub until_deadline: Duration,
}

/// What a readiness probe needs: [`Coordinator::health`](crate::Coordinator::health).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Health {
    /// The round trip of one read of the store, or why it failed.
    pub backend: std::result::Result<Duration, String>,
    /// The coordinator's sessions.
    pub sessions: Vec<SessionHealth>,
    /// The live service caches and config managers made through the coordinator.
    pub followers: Vec<SyncHealth>,
}

impl Health {
    /// Ready: the store answered, no session is `Lost`, no follower is stale.
    pub fn is_ready(&self) -> bool {
        self.backend.is_ok()
            && self.sessions.iter().all(|s| s.state != SessionState::Lost)
            && self.followers.iter().all(|f| !f.stale)
    }
}

/// The coordinator's followers, held weakly: a dropped cache leaves the list.
/// One probe for all of them confirms at [`SYNC_PROBE_INTERVAL`] that the store
/// answers (a count of one key, never written): a follower's own watch says the
/// rest, so a thousand caches cost the store one read per interval, not a thousand.
pub(crate) struct Followers {
    backend: Arc<dyn Backend>,
    probe_key: String,
    state: Mutex<FollowersState>,
}

struct FollowersState {
    list: Vec<Weak<SyncStatus>>,
    /// Dropped followers are swept out when the list reaches this length.
    sweep_at: usize,
    probing: bool,
}

impl Followers {
    pub(crate) fn new(backend: Arc<dyn Backend>, probe_key: String) -> Self {
        Followers {
            backend,
            probe_key,
            state: Mutex::new(FollowersState {
                list: Vec::new(),
                sweep_at: 64,
                probing: false,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FollowersState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Follow `status`; starts the probe if it is not running.
    pub(crate) fn add(self: &Arc<Self>, status: &Arc<SyncStatus>) {
        let mut state = self.lock();
        if state.list.len() >= state.sweep_at {
            state.list.retain(|w| w.strong_count() > 0);
            state.sweep_at = (state.list.len() * 2).max(64);
        }
        state.list.push(Arc::downgrade(status));
        if !state.probing {
            state.probing = true;
            tokio::spawn(probe(Arc::downgrade(self)));
        }
    }

    fn live(&self) -> Vec<Arc<SyncStatus>> {
        let mut state = self.lock();
        state.list.retain(|w| w.strong_count() > 0);
        let live: Vec<_> = state.list.iter().filter_map(|w| w.upgrade()).collect();
        if live.is_empty() {
            state.probing = false;
        }
        live
    }

    pub(crate) fn health(&self) -> Vec<SyncHealth> {
        self.live().iter().map(|s| s.health()).collect()
    }
}

/// Probe the store for every live follower until none is left (or the
/// coordinator is gone).
async fn probe(followers: Weak<Followers>) {
    loop {
        tokio::time::sleep(SYNC_PROBE_INTERVAL).await;
        let Some(f) = followers.upgrade() else { return };
        let live = f.live();
        if live.is_empty() {
            return;
        }
        let read = RangeRequest::key(f.probe_key.clone()).count_only();
        let backend = f.backend.clone();
        drop(f);
        let answer = backend.range(read).await;
        for status in live {
            match &answer {
                Ok(_) => status.synced(),
                Err(e) => status.failed(e),
            }
            status.report();
        }
    }
}

/// A cache holding instances that left, as
/// [`SyncHealth::protected`](crate::SyncHealth::protected) reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Protected {
    /// How long it has been holding.
    pub since: Duration,
    /// The instances it serves (those held and those live).
    pub serving: usize,
    /// The instances the store holds.
    pub live: usize,
}
