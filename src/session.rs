//! A session: a lease kept alive in the background, with a loss signal.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::backend::validate;
use crate::backend::{Backend, LeaseId};
use crate::error::{Error, Result};
use crate::retry::RetryPolicy;

/// What a session knows about its lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SessionState {
    /// The last keep-alive was acknowledged and the local deadline has not passed.
    Alive,
    /// A keep-alive failed: the lease may still be alive, or may be gone. Whatever
    /// the session owns is uncertain until the next keep-alive succeeds.
    Suspended,
    /// The lease is gone (the store said so, it was revoked, or the local deadline
    /// passed). Final: a lost session never comes back.
    Lost,
}

/// A lease kept alive in the background, shared by the locks, leaderships and
/// registrations of one [`Coordinator`](crate::Coordinator) that use the same TTL.
///
/// # Behavior
/// - A keep-alive is sent every TTL/3; after a failure, retries follow the
///   coordinator's [`RetryPolicy`] delays (at most TTL/6 apart), and at most a
///   third of the time left before the local deadline apart (at least 10 ms):
///   a store back just before the deadline is heard from in time.
/// - The *local deadline* is the send time of the last acknowledged keep-alive plus
///   the TTL, less a drift allowance of TTL/10 (at most 1 s), on a monotonic clock.
///   The store cannot expire the lease before that instant, so [`SessionState::Lost`]
///   is reported no later than anyone else could take over what the session owns.
/// - The first failed keep-alive reports `Suspended`; success reports `Alive` again.
///   `LeaseNotFound`, a revoke or the deadline passing report `Lost`, once and for
///   good. When lost at the deadline, the session still tries to revoke the lease so
///   that its keys go at once if the store is reachable.
/// - Dropping the last handle stops the keep-alives and revokes the lease in the
///   background; [`Session::close`] does it and waits.
#[derive(Clone)]
pub struct Session {
    inner: Arc<SessionInner>,
}

struct SessionInner {
    backend: Arc<dyn Backend>,
    lease: LeaseId,
    ttl: Duration,
    state: watch::Sender<SessionState>,
    deadline: Mutex<Instant>,
    keeper: Mutex<Option<JoinHandle<()>>>,
    retry: RetryPolicy,
    /// Whether dropping the last handle revokes the lease: not for a lease taken
    /// over until what it was taken over for is done (see `resume_unowned`).
    owned: AtomicBool,
}

/// A TTL as whole seconds (rounded up), checked against the backend's bounds.
/// Under a second (zero included) and too long for a lease are `InvalidArgument`,
/// never an overflow.
pub(crate) fn ttl_seconds(backend: &dyn Backend, ttl: Duration) -> Result<i64> {
    if ttl < Duration::from_secs(1) {
        return Err(Error::invalid(
            "ttl",
            format!("must be at least 1 s (leases count whole seconds), got {ttl:?}"),
        ));
    }
    let too_long = || Error::invalid("ttl", format!("{ttl:?} is too long for a lease"));
    let secs = ttl
        .as_secs()
        .checked_add(u64::from(ttl.subsec_nanos() > 0))
        .ok_or_else(too_long)?;
    let secs = i64::try_from(secs).map_err(|_| too_long())?;
    validate::ttl(secs, &backend.limits())?;
    Ok(secs)
}

/// `sent + ttl` less the drift allowance; a TTL the store reports too large for
/// the clock (a faulty store) gives a deadline ~30 years out, never an overflow.
fn local_deadline(sent: Instant, ttl: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(30 * 365 * 24 * 3600);
    sent.checked_add(ttl - drift_allowance(ttl))
        .unwrap_or_else(|| sent.checked_add(FAR).unwrap_or(sent))
}

/// The reason a session ends by [`Session::close`]: a clean end, logged at info.
const CLOSED: &str = "closed";

/// The reason a session ends at its local deadline.
const DEADLINE: &str = "local deadline passed without an acknowledged keep-alive";

/// How much earlier than send time + TTL the session gives up its lease.
fn drift_allowance(ttl: Duration) -> Duration {
    (ttl / 10).min(Duration::from_secs(1))
}

impl Session {
    /// Grant a lease of `ttl` (rounded up to whole seconds) and keep it alive.
    ///
    /// A TTL outside the backend's bounds is `InvalidArgument`. The grant is not
    /// retried (a lost response would leave an orphan lease). Keep-alive retries
    /// follow `retry`.
    pub async fn start(
        backend: Arc<dyn Backend>,
        ttl: Duration,
        retry: RetryPolicy,
    ) -> Result<Self> {
        let secs = ttl_seconds(backend.as_ref(), ttl)?;
        let sent = Instant::now();
        let grant = backend.lease_grant(secs).await?;
        Ok(Self::keep(backend, grant.id, grant.ttl, sent, retry))
    }

    /// Take over a lease granted earlier (by this process before a restart, say)
    /// and keep it alive from now on: one keep-alive first, which must find the
    /// lease alive (`LeaseNotFound` otherwise). The lease's TTL is the one it was
    /// granted with.
    ///
    /// Only one session may keep a lease: resuming a lease another live session
    /// keeps makes two keepers of one lease, and either's end revokes it.
    ///
    /// Cancelling this call leaves the lease as it was: kept by nobody, it ends
    /// at its TTL.
    pub async fn resume(
        backend: Arc<dyn Backend>,
        lease: LeaseId,
        retry: RetryPolicy,
    ) -> Result<Self> {
        let session = Self::resume_unowned(backend, lease, retry).await?;
        session.own();
        Ok(session)
    }

    /// [`Session::resume`], but dropping the session (before [`Session::own`])
    /// leaves the lease to its TTL instead of revoking it: a call that takes a
    /// lease over and is cancelled, or refused, before it is done must not end a
    /// lease it never came to own.
    pub(crate) async fn resume_unowned(
        backend: Arc<dyn Backend>,
        lease: LeaseId,
        retry: RetryPolicy,
    ) -> Result<Self> {
        let sent = Instant::now();
        let ttl = retry
            .run("resume lease", |_| backend.lease_keep_alive(lease))
            .await?;
        let session = Self::keep(backend, lease, ttl, sent, retry);
        session.inner.owned.store(false, Ordering::SeqCst);
        Ok(session)
    }

    /// From now on, dropping the last handle revokes the lease.
    pub(crate) fn own(&self) {
        self.inner.owned.store(true, Ordering::SeqCst);
    }

    /// The store said the lease is gone (a write on it was refused): the session
    /// is `Lost` from now on, and its coordinator grants a new one next time.
    pub(crate) fn lease_ended(&self) {
        self.inner
            .mark_lost("the store no longer has the lease", false);
    }

    /// A handle that does not keep the session alive.
    pub(crate) fn downgrade(&self) -> WeakSession {
        WeakSession(Arc::downgrade(&self.inner))
    }

    /// A session keeping `lease` alive, last renewed at `sent` for `ttl` seconds.
    fn keep(
        backend: Arc<dyn Backend>,
        lease: LeaseId,
        ttl: i64,
        sent: Instant,
        retry: RetryPolicy,
    ) -> Self {
        let ttl = Duration::from_secs(ttl.max(1) as u64);
        let inner = Arc::new(SessionInner {
            backend,
            lease,
            ttl,
            state: watch::Sender::new(SessionState::Alive),
            deadline: Mutex::new(local_deadline(sent, ttl)),
            keeper: Mutex::new(None),
            retry,
            owned: AtomicBool::new(true),
        });
        crate::telemetry::session_started();
        let keeper = tokio::spawn(keep_alive_loop(Arc::downgrade(&inner)));
        *inner.keeper.lock().unwrap_or_else(|e| e.into_inner()) = Some(keeper);
        debug!(lease = %inner.lease, ttl = ?ttl, "session started");
        Session { inner }
    }

    /// How many handles share this session (the coordinator's own included).
    pub(crate) fn handles(&self) -> usize {
        Arc::strong_count(&self.inner)
    }

    /// The session's lease.
    pub fn lease(&self) -> LeaseId {
        self.inner.lease
    }

    /// The lease's TTL as granted.
    pub fn ttl(&self) -> Duration {
        self.inner.ttl
    }

    /// The backend the session lives in.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.inner.backend
    }

    /// The current state; `Lost` as soon as the local deadline has passed, even if
    /// the background task has not noticed yet.
    pub fn state(&self) -> SessionState {
        if self.inner.expire_if_past_deadline() {
            return SessionState::Lost;
        }
        *self.inner.state.borrow()
    }

    /// Whether the session is lost (see [`Session::state`]).
    pub fn is_lost(&self) -> bool {
        self.state() == SessionState::Lost
    }

    /// Follow the state as it changes.
    pub fn watch_state(&self) -> watch::Receiver<SessionState> {
        self.inner.state.subscribe()
    }

    /// The local deadline: the lease is surely alive on the store until then.
    pub fn deadline(&self) -> Instant {
        self.inner.deadline()
    }

    /// Completes when the session is lost.
    pub async fn lost(&self) {
        let mut states = self.inner.state.subscribe();
        loop {
            if self.is_lost() {
                return;
            }
            let deadline = self.deadline();
            tokio::select! {
                _ = states.changed() => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    /// Send a keep-alive now: `Ok(true)` if the lease was renewed, `Ok(false)` if the
    /// session is lost, an error if the store could not be asked.
    pub async fn keep_alive(&self) -> Result<bool> {
        match self.inner.keep_alive_once().await {
            Ok(()) => Ok(true),
            Err(Error::LeaseNotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Revoke the lease now (deleting every key attached to it) and stop the
    /// keep-alives. The session is `Lost` afterwards, whatever the outcome.
    pub async fn close(&self) -> Result<()> {
        self.inner.stop_keeper();
        self.inner.mark_lost(CLOSED, false);
        match self.inner.backend.lease_revoke(self.inner.lease).await {
            Ok(()) | Err(Error::LeaseNotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// A [`Session`] that does not keep it alive (the coordinator's list of sessions
/// taken over by `resume`, which `close` revokes while they live).
#[derive(Clone)]
pub(crate) struct WeakSession(Weak<SessionInner>);

impl WeakSession {
    /// The session, if some handle still keeps it.
    pub(crate) fn upgrade(&self) -> Option<Session> {
        self.0.upgrade().map(|inner| Session { inner })
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("lease", &self.inner.lease)
            .field("ttl", &self.inner.ttl)
            .field("state", &*self.inner.state.borrow())
            .finish()
    }
}

impl SessionInner {
    fn deadline(&self) -> Instant {
        *self.deadline.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn current(&self) -> SessionState {
        *self.state.borrow()
    }

    /// Report `Lost` (once); with `revoke`, try to revoke the lease in the background
    /// so its keys go now rather than at the store's expiry.
    fn mark_lost(&self, reason: &str, revoke: bool) {
        let changed = self.state.send_if_modified(|s| {
            let was = *s;
            *s = SessionState::Lost;
            was != SessionState::Lost
        });
        if !changed {
            return;
        }
        crate::telemetry::session_lost(match reason {
            CLOSED => "closed",
            DEADLINE => "deadline",
            _ => "lease_gone",
        });
        if reason == CLOSED {
            tracing::info!(lease = %self.lease, "session closed");
        } else {
            warn!(lease = %self.lease, reason, "session lost");
        }
        if revoke {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                let backend = self.backend.clone();
                let lease = self.lease;
                rt.spawn(async move {
                    let _ = backend.lease_revoke(lease).await;
                });
            }
        }
    }

    /// Report `Lost` if the local deadline has passed; returns whether it is lost.
    fn expire_if_past_deadline(&self) -> bool {
        if self.current() == SessionState::Lost {
            return true;
        }
        if Instant::now() >= self.deadline() {
            self.mark_lost(DEADLINE, true);
            return true;
        }
        false
    }

    async fn keep_alive_once(&self) -> Result<()> {
        if self.expire_if_past_deadline() {
            return Err(Error::LeaseNotFound { id: self.lease.0 });
        }
        let sent = Instant::now();
        match self.backend.lease_keep_alive(self.lease).await {
            Ok(ttl) if ttl > 0 => {
                // A renewal acknowledged after the deadline does not revive the
                // session: `Lost` may already have been observed.
                if self.expire_if_past_deadline() {
                    return Err(Error::LeaseNotFound { id: self.lease.0 });
                }
                let ttl = Duration::from_secs(ttl as u64);
                {
                    let mut deadline = self.deadline.lock().unwrap_or_else(|e| e.into_inner());
                    *deadline = (*deadline).max(local_deadline(sent, ttl));
                }
                self.state.send_if_modified(|s| {
                    let revive = *s == SessionState::Suspended;
                    if revive {
                        *s = SessionState::Alive;
                    }
                    revive
                });
                Ok(())
            }
            Ok(_) | Err(Error::LeaseNotFound { .. }) => {
                self.mark_lost("the store no longer has the lease", false);
                Err(Error::LeaseNotFound { id: self.lease.0 })
            }
            Err(e) => {
                crate::telemetry::keep_alive_failed();
                let suspended = self.state.send_if_modified(|s| {
                    let suspend = *s == SessionState::Alive;
                    if suspend {
                        *s = SessionState::Suspended;
                    }
                    suspend
                });
                if suspended {
                    warn!(lease = %self.lease, error = %e, "session suspended: keep-alive failed");
                }
                Err(e)
            }
        }
    }

    fn stop_keeper(&self) {
        if let Some(keeper) = self.keeper.lock().unwrap_or_else(|e| e.into_inner()).take() {
            keeper.abort();
        }
    }
}

impl Drop for SessionInner {
    fn drop(&mut self) {
        self.stop_keeper();
        if self.current() != SessionState::Lost && self.owned.load(Ordering::SeqCst) {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                let backend = self.backend.clone();
                let lease = self.lease;
                rt.spawn(async move {
                    let _ = backend.lease_revoke(lease).await;
                });
            }
        }
    }
}

/// Keep-alive tries after a failure are never closer together than this.
const LAST_TRIES_APART: Duration = Duration::from_millis(10);

/// Keep the lease alive until the session is lost or dropped. Holds the session
/// only while talking to the store, so dropping the last handle ends the loop.
async fn keep_alive_loop(session: Weak<SessionInner>) {
    let (interval, mut backoff) = match session.upgrade() {
        Some(s) => (s.ttl / 3, s.retry.backoff().capped(s.ttl / 6)),
        None => return,
    };
    let mut next = Instant::now() + interval;
    loop {
        let deadline = match session.upgrade() {
            Some(s) => s.deadline(),
            None => return,
        };
        tokio::time::sleep_until(next.min(deadline)).await;
        let Some(s) = session.upgrade() else { return };
        if s.expire_if_past_deadline() {
            return;
        }
        let sent = Instant::now();
        match tokio::time::timeout_at(s.deadline(), s.keep_alive_once()).await {
            Err(_) => {
                s.expire_if_past_deadline();
                return;
            }
            Ok(Ok(())) => {
                backoff.succeeded();
                next = sent + interval;
            }
            Ok(Err(Error::LeaseNotFound { .. })) => return,
            Ok(Err(_)) => {
                // Tries come closer as the deadline nears: a store back just
                // before it (a restart that took most of the TTL) is heard in
                // time, not after one more full backoff.
                let now = Instant::now();
                let left = s.deadline().saturating_duration_since(now);
                next = now + backoff.failed().min(left / 3).max(LAST_TRIES_APART);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_ttl_from_the_store_never_overflows_the_deadline() {
        let now = Instant::now();
        let far = local_deadline(now, Duration::from_secs(i64::MAX as u64));
        assert!(far > now + Duration::from_secs(365 * 24 * 3600));
        let ten = local_deadline(now, Duration::from_secs(10));
        assert_eq!(ten, now + Duration::from_secs(9));
    }
}
