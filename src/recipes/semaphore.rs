//! Counting semaphores: at most N holders of a name at once.

use std::sync::Arc;
use std::time::Duration;

use crate::claim::QueueEntry;
use crate::claim::{Kind, Wait};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::queue_name::QueueName;
use crate::recipes::lock::LockGuard;

/// Distributed semaphores of one [`Coordinator`](crate::Coordinator) (see
/// [`Coordinator::semaphore`](crate::Coordinator::semaphore)): at most `permits`
/// holders of a name at once.
///
/// A semaphore named `x` is the key prefix `<namespace>semaphore/x/`; each
/// acquisition writes `<namespace>semaphore/x/<lease hex>-<n>` (value
/// `permits=<N>`) on its session's lease, and the `permits` keys with the smallest
/// create revisions hold permits. `<n>` (hex) is the lowest number the session's
/// other claims of `x` leave free, so a session claiming again reuses its key
/// (with a new create revision, hence a new fencing token): a busy semaphore's
/// keys stay as many as its holders and waiters.
///
/// # Behavior
/// - A permit is a [`LockGuard`], with the same guarantees as a lock: a fencing
///   token (its key's create revision, distinct for each permit and increasing
///   in arrival order), [`LockGuard::compare`], [`LockGuard::lost`], release on
///   drop, and no key left behind by a cancelled call.
/// - Waiters are admitted in arrival order (FIFO). A waiter watches the
///   `permits` claims nearest before its own and reads the store again only when
///   one of them ends, so a release wakes at most `permits` waiters, never the
///   whole queue.
/// - After waiting, a waiter re-checks in one transaction that its own key still
///   exists with its create revision and lease (else `LockExpired`).
/// - Every client must give the same `permits` for a name: a client that finds
///   earlier keys made with another number fails with `InvalidArgument` naming
///   `permits`, and leaves no key; nobody is over-admitted.
/// - Tasks of one coordinator each get their own key (one session may hold several
///   permits), so they queue in the store, not locally.
///
/// # Example
///
/// ```
/// # use std::{sync::Arc, time::Duration};
/// # use coordkit::Coordinator;
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> coordkit::Result<()> {
/// let coordinator = Coordinator::new(Arc::new(coordkit_memory::MemoryBackend::new()));
/// let ttl = Duration::from_secs(10);
/// let semaphore = coordinator.semaphore();
/// let first = semaphore.acquire("encoders", 2, ttl).await?;
/// let second = semaphore.acquire("encoders", 2, ttl).await?;
/// // Both permits are held: a third is refused at once by try_acquire.
/// assert!(semaphore.try_acquire("encoders", 2, ttl).await.is_err());
/// first.unlock().await?;
/// let third = semaphore.try_acquire("encoders", 2, ttl).await?;
/// second.unlock().await?;
/// third.unlock().await?;
/// # coordinator.close().await }
/// ```
#[derive(Clone)]
pub struct SemaphoreService {
    coord: Arc<Context>,
}

impl SemaphoreService {
    pub(crate) fn new(coord: Arc<Context>) -> Self {
        SemaphoreService { coord }
    }

    /// Wait until one of the `permits` permits of semaphore `name` is held, on a
    /// session of `ttl` (whole seconds, rounded up).
    ///
    /// Errors: `InvalidArgument` for a bad name (as for locks), `permits` of 0, a
    /// `permits` that differs from the other clients', or a TTL outside the
    /// backend's bounds; `LockExpired` if the session was lost while queued;
    /// `Closed` after the coordinator was closed; store errors once retries are
    /// exhausted. Dropping this future at any await leaves no key.
    pub async fn acquire(
        &self,
        name: impl Into<QueueName>,
        permits: u32,
        ttl: Duration,
    ) -> Result<LockGuard> {
        self.claim(name.into(), permits, ttl, Wait::UntilOwner)
            .await
    }

    /// Take a permit only if one is free now: `LockConflict` at once otherwise,
    /// leaving no key. Errors and cancellation as for [`SemaphoreService::acquire`].
    pub async fn try_acquire(
        &self,
        name: impl Into<QueueName>,
        permits: u32,
        ttl: Duration,
    ) -> Result<LockGuard> {
        self.claim(name.into(), permits, ttl, Wait::No).await
    }

    /// The semaphore's queue in order: the first `permits` entries hold permits,
    /// the others wait. A read only.
    pub async fn holders_and_waiters(&self, name: impl Into<QueueName>) -> Result<Vec<QueueEntry>> {
        let kind = Kind::Semaphore { permits: 1 };
        self.coord.claims.queue(kind, &name.into()).await
    }

    async fn claim(
        &self,
        name: QueueName,
        permits: u32,
        ttl: Duration,
        wait: Wait,
    ) -> Result<LockGuard> {
        if permits == 0 {
            return Err(Error::invalid("permits", "must be at least 1"));
        }
        let kind = Kind::Semaphore { permits };
        let claim = self
            .coord
            .claim(kind, &name, ttl, kind.value(), wait)
            .await?;
        Ok(LockGuard::from_claim(claim))
    }
}

impl std::fmt::Debug for SemaphoreService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SemaphoreService")
            .field("namespace", &self.coord.keys.namespace())
            .finish_non_exhaustive()
    }
}
