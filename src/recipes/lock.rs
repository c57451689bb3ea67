//! Distributed locks, on the protocol of etcd's `concurrency.Mutex`.

use std::sync::Arc;
use std::time::Duration;

use crate::backend::{Compare, Revision};
use crate::claim::{Claim, Kind, OwnershipLost, Wait};
use crate::context::Context;
use crate::error::Result;
use crate::queue_name::QueueName;
use crate::session::Session;

/// Distributed locks of one [`Coordinator`](crate::Coordinator) (see
/// [`Coordinator::lock`](crate::Coordinator::lock)).
///
/// A lock named `x` is the key prefix `<namespace>lock/x/`; each contender writes
/// `<namespace>lock/x/<lease id in hex>` attached to its session's lease, and the
/// key with the smallest create revision holds the lock. This is etcd's own
/// `concurrency.Mutex` protocol, so `etcdctl lock coord/lock/x` and Go services using
/// that package exclude and are excluded by coordkit's lock `x` (namespace `coord/`).
///
/// # Behavior
/// - Waiters are served in the order their keys were created (FIFO by arrival);
///   each watches only the key just before its own, so a release wakes one waiter.
/// - After waiting, a waiter re-checks in one transaction that its own key still
///   exists with its create revision and lease; if not (its lease ended while it
///   was queued), `acquire` fails with `LockExpired` rather than report success.
/// - Tasks of one coordinator that want the same name queue locally first (they
///   share a lease, hence a key).
/// - A waiter's watch outlives its wait by one to two seconds (at most 8 per
///   coordinator): the next wait of this coordinator behind the same key — a
///   contender that claimed again — waits on it instead of opening a new one.
///   [`Coordinator::close`](crate::Coordinator::close) cancels them.
/// - A cancelled `acquire` (its future dropped) removes its key in the background,
///   so the next waiter is not held up until the TTL.
///
/// # Example
///
/// ```
/// # use std::{sync::Arc, time::Duration};
/// # use coordkit::Coordinator;
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> coordkit::Result<()> {
/// let coordinator = Coordinator::new(Arc::new(coordkit_memory::MemoryBackend::new()));
/// let ttl = Duration::from_secs(10);
/// let guard = coordinator.lock().acquire("nightly-report", ttl).await?;
/// // Another process's try_acquire now fails with LockConflict.
/// assert!(coordinator.lock().try_acquire("nightly-report", ttl).await.is_err());
/// // Hand the token to the resource; it refuses writes with older tokens.
/// let token = guard.fencing_token();
/// guard.unlock().await?;
/// let next = coordinator.lock().acquire("nightly-report", ttl).await?;
/// assert!(next.fencing_token() > token);
/// next.unlock().await?;
/// # coordinator.close().await }
/// ```
#[derive(Clone)]
pub struct LockService {
    coord: Arc<Context>,
}

impl LockService {
    pub(crate) fn new(coord: Arc<Context>) -> Self {
        LockService { coord }
    }

    /// Wait until the lock `name` is held, on a session of `ttl` (whole seconds,
    /// rounded up).
    ///
    /// Errors: `InvalidArgument` for an empty name, a name with `/` or control
    /// characters, or a TTL outside the backend's bounds; `LockExpired` if the
    /// session was lost while queued; `Closed` after the coordinator was closed;
    /// store errors once retries are exhausted. A TTL under 1 s is
    /// `InvalidArgument`.
    ///
    /// Dropping this future at any await leaves no key: one already written is
    /// deleted by the coordinator's cleanup (see the crate docs, "Cancellation").
    pub async fn acquire(&self, name: impl Into<QueueName>, ttl: Duration) -> Result<LockGuard> {
        let claim = self
            .coord
            .claim(Kind::Lock, &name.into(), ttl, Vec::new(), Wait::UntilOwner)
            .await?;
        Ok(LockGuard { claim })
    }

    /// Who holds the lock `name` and who waits, in order, each with its fencing
    /// token and its lease's time left (one read of the queue, then one lease
    /// query per key). Works on locks taken by `etcdctl lock` too. A read only:
    /// dropping it leaves nothing.
    pub async fn holders_and_waiters(
        &self,
        name: impl Into<QueueName>,
    ) -> Result<Vec<crate::claim::QueueEntry>> {
        self.coord.claims.queue(Kind::Lock, &name.into()).await
    }

    /// Take the lock `name` only if nobody holds it: `LockConflict` at once
    /// otherwise, leaving no key behind. Other errors, and cancellation, as for
    /// [`LockService::acquire`].
    pub async fn try_acquire(
        &self,
        name: impl Into<QueueName>,
        ttl: Duration,
    ) -> Result<LockGuard> {
        let claim = self
            .coord
            .claim(Kind::Lock, &name.into(), ttl, Vec::new(), Wait::No)
            .await?;
        Ok(LockGuard { claim })
    }
}

/// A held lock.
///
/// Dropping the guard without [`LockGuard::unlock`] releases the lock in the
/// background, promptly, not at the TTL: the coordinator's cleanup deletes the
/// key (only while it is still this holder's), retrying through store outages
/// until it is gone or the session is lost — then the lease's end removes it.
/// This coordinator's next local waiter for the name goes only after that. While held, the lock lives as long as its
/// session: see [`LockGuard::lost`] and [`LockGuard::is_expired`]. Work that must
/// not outlive the lock should write through a transaction carrying
/// [`LockGuard::compare`], or pass [`LockGuard::fencing_token`] to the resource.
///
/// A guard that is not kept is a warning (an error under `deny(unused_must_use)`),
/// because it would release the lock at once:
///
/// ```compile_fail
/// #[deny(unused_must_use)]
/// async fn forgot(c: coordkit::Coordinator) -> coordkit::Result<()> {
///     c.lock().acquire("jobs", std::time::Duration::from_secs(10)).await?;
///     Ok(())
/// }
/// ```
///
/// and `unlock` consumes the guard, so a second unlock does not compile:
///
/// ```compile_fail
/// async fn twice(guard: coordkit::LockGuard) {
///     let _ = guard.unlock().await;
///     let _ = guard.unlock().await;
/// }
/// ```
#[must_use = "dropping a LockGuard releases the lock at once"]
pub struct LockGuard {
    claim: Claim,
}

impl LockGuard {
    pub(crate) fn from_claim(claim: Claim) -> Self {
        LockGuard { claim }
    }

    /// Release the lock: delete the key, but only if it still has this holder's
    /// create revision — a retried release never deletes a later holder's key.
    ///
    /// Errors: `LockNotHeld` if the key was gone before this call (lease ended,
    /// deleted by someone); store errors if the store could not be reached after
    /// the policy's retries. The guard is consumed either way: after an error, and
    /// if this call is cancelled at any await, the release goes on in the
    /// background as for a dropped guard.
    pub async fn unlock(self) -> Result<()> {
        self.claim.release().await
    }

    /// The lock's key, as stored (namespace included).
    pub fn key(&self) -> &str {
        self.claim.key()
    }

    /// The lock's name.
    pub fn name(&self) -> &str {
        self.claim.name()
    }

    /// The remaining TTL of the lock's lease, as the store reports it.
    /// `LockExpired` if the lease is gone; `LockNotHeld` after unlock.
    pub async fn ttl(&self) -> Result<Duration> {
        self.claim.ttl().await
    }

    /// Renew the lock's lease now (the lease is shared with this coordinator's
    /// other holders of the same TTL). `Ok(false)` if the lock is lost;
    /// `LockNotHeld` after unlock.
    pub async fn renew(&self) -> Result<bool> {
        self.claim.renew().await
    }

    /// Whether the lock is no longer held, from local knowledge only (no store
    /// contact): released, its session lost or past its local deadline, or its key
    /// seen deleted or changed by [`LockGuard::lost`].
    pub fn is_expired(&self) -> bool {
        self.claim.is_expired()
    }

    /// The fencing token: the lock key's create revision, strictly increasing
    /// across successive holders of one lock.
    pub fn fencing_token(&self) -> Revision {
        self.claim.token()
    }

    /// A compare that holds only while this guard's key is the same key — put it in
    /// your own transaction to write "only if I still hold the lock".
    pub fn compare(&self) -> Compare {
        self.claim.compare()
    }

    /// Read the store: whether the key is still this holder's.
    pub async fn is_held(&self) -> Result<bool> {
        self.claim.still_held().await
    }

    /// Completes when ownership ends: the session is lost, the key is deleted or
    /// changed by anyone else, or the guard is unlocked. Says why.
    pub async fn lost(&self) -> OwnershipLost {
        self.claim.lost().await
    }

    /// The session holding the lock.
    pub fn session(&self) -> &Session {
        self.claim.session()
    }
}

impl std::fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockGuard")
            .field("key", &self.key())
            .field("fencing_token", &self.fencing_token())
            .field("expired", &self.is_expired())
            .finish()
    }
}

impl std::fmt::Debug for LockService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockService")
            .field("namespace", &self.coord.keys.namespace())
            .finish_non_exhaustive()
    }
}
