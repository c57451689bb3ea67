//! What a coordinator's recipes share: the store, the namespace, the retry
//! policy, the cleanup, the followers, the claim machinery, and the sessions
//! (one per TTL, plus those taken over by resumes).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::backend::Backend;
use crate::claim::{Claim, Claims, Kind, Wait};
use crate::cleanup::Cleanup;
use crate::error::{Error, Result};
use crate::health::Followers;
use crate::keepers::Keepers;
use crate::keys::KeyLayout;
use crate::queue_name::QueueName;
use crate::retry::RetryPolicy;
use crate::session::ttl_seconds;
use crate::session::Session;

/// How many sessions of distinct TTLs a coordinator keeps before it drops those
/// nobody holds.
const IDLE_SESSIONS_KEPT: usize = 8;

/// A coordinator's shared state; every recipe service holds it.
pub(crate) struct Context {
    pub(crate) backend: Arc<dyn Backend>,
    /// Where the recipes keep their keys (the namespace in it).
    pub(crate) keys: KeyLayout,
    pub(crate) retry: RetryPolicy,
    /// Deletes keys whose owner is gone (dropped or cancelled handles).
    pub(crate) cleanup: Cleanup,
    /// The claim machinery (locks, elections, semaphores, read-write locks).
    pub(crate) claims: Claims,
    /// The caches and config managers, for `health()`.
    pub(crate) followers: Arc<Followers>,
    /// The keepers of this coordinator's registrations.
    pub(crate) registrations: Keepers,
    /// Registry entries skipped as malformed.
    pub(crate) malformed_entries: std::sync::atomic::AtomicU64,
    sessions: tokio::sync::Mutex<HashMap<i64, Session>>,
    /// Sessions taken over by `ElectionService::resume`, revoked by `close`
    /// while anything still holds them.
    adopted: std::sync::Mutex<Vec<crate::session::WeakSession>>,
    /// Set by `close`; shared with the claim machinery.
    closed: Arc<AtomicBool>,
}

impl Context {
    pub(crate) fn new(backend: Arc<dyn Backend>, namespace: String, retry: RetryPolicy) -> Self {
        let cleanup = Cleanup::new(backend.clone(), retry.clone());
        let closed = Arc::new(AtomicBool::new(false));
        Context {
            claims: Claims::new(
                backend.clone(),
                retry.clone(),
                cleanup.clone(),
                KeyLayout::new(namespace.clone()),
                closed.clone(),
            ),
            cleanup,
            followers: Arc::new(Followers::new(
                backend.clone(),
                KeyLayout::new(namespace.clone()).health_probe(),
            )),
            registrations: Keepers::new(backend.clone(), retry.clone()),
            backend,
            keys: KeyLayout::new(namespace),
            retry,
            malformed_entries: std::sync::atomic::AtomicU64::new(0),
            sessions: tokio::sync::Mutex::new(HashMap::new()),
            adopted: std::sync::Mutex::new(Vec::new()),
            closed,
        }
    }

    /// See `Coordinator::close`.
    pub(crate) async fn close(&self) -> Result<()> {
        self.closed.store(true, Ordering::SeqCst);
        let mut sessions: Vec<Session> =
            self.sessions.lock().await.drain().map(|(_, s)| s).collect();
        sessions.extend(self.adopted_sessions());
        let mut first = Ok(());
        for s in sessions {
            if let Err(e) = s.close().await {
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        self.claims.forget_watches();
        self.cleanup.drain().await;
        first
    }

    /// Claim queue `name` of `kind` with `value`, on this coordinator's session
    /// of `ttl` (taken once the claim's local turn has come): see
    /// `Claims::claim`.
    pub(crate) async fn claim(
        &self,
        kind: Kind,
        name: &QueueName,
        ttl: Duration,
        value: Vec<u8>,
        wait: Wait,
    ) -> Result<Claim> {
        self.claims
            .claim(kind, name, self.session(ttl), value, wait)
            .await
    }

    /// The sessions of distinct TTLs this coordinator keeps now.
    pub(crate) async fn sessions(&self) -> Vec<Session> {
        self.sessions.lock().await.values().cloned().collect()
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    pub(crate) fn check_open(&self) -> Result<()> {
        if self.is_closed() {
            return Err(Error::Closed {
                what: "coordinator",
            });
        }
        Ok(())
    }

    /// A session of this coordinator keeping `lease`, if any (its own, or one
    /// taken over before).
    pub(crate) async fn live_session(&self, lease: crate::backend::LeaseId) -> Option<Session> {
        let own = self.sessions.lock().await;
        let found = own
            .values()
            .find(|s| s.lease() == lease && !s.is_lost())
            .cloned();
        drop(own);
        found.or_else(|| {
            self.adopted_sessions()
                .into_iter()
                .find(|s| s.lease() == lease && !s.is_lost())
        })
    }

    /// Keep `session` (taken over by a resume) among those `close` revokes.
    pub(crate) fn adopt_session(&self, session: &Session) {
        let mut adopted = self.adopted.lock().unwrap_or_else(|e| e.into_inner());
        adopted.retain(|s| s.upgrade().is_some());
        adopted.push(session.downgrade());
    }

    /// The sessions taken over by resumes that something still holds.
    fn adopted_sessions(&self) -> Vec<Session> {
        let adopted = self.adopted.lock().unwrap_or_else(|e| e.into_inner());
        adopted.iter().filter_map(|s| s.upgrade()).collect()
    }

    pub(crate) async fn session(&self, ttl: Duration) -> Result<Session> {
        self.check_open()?;
        let secs = ttl_seconds(self.backend.as_ref(), ttl)?;
        let mut sessions = self.sessions.lock().await;
        if let Some(s) = sessions.get(&secs) {
            if !s.is_lost() {
                return Ok(s.clone());
            }
        }
        // Bounded: lost sessions go, and past a few TTLs, so do sessions nobody
        // holds (their drop revokes their lease; the next user grants anew).
        sessions.retain(|_, s| !s.is_lost());
        if sessions.len() >= IDLE_SESSIONS_KEPT {
            sessions.retain(|_, s| s.handles() > 1);
        }
        let session = Session::start(
            self.backend.clone(),
            Duration::from_secs(secs as u64),
            self.retry.clone(),
        )
        .await?;
        // Closed while granting: give the lease back rather than leak it.
        if self.is_closed() {
            let _ = session.close().await;
            return Err(Error::Closed {
                what: "coordinator",
            });
        }
        sessions.insert(secs, session.clone());
        Ok(session)
    }
}
