//! Read-write locks: many readers or one writer, writers not starved.

use std::sync::Arc;
use std::time::Duration;

use crate::claim::QueueEntry;
use crate::claim::{Kind, Wait};
use crate::context::Context;
use crate::error::Result;
use crate::queue_name::QueueName;
use crate::recipes::lock::LockGuard;

/// Distributed read-write locks of one [`Coordinator`](crate::Coordinator) (see
/// [`Coordinator::rw_lock`](crate::Coordinator::rw_lock)).
///
/// A read-write lock named `x` is one queue, the key prefix
/// `<namespace>rwlock/x/`: each reader or writer writes
/// `<namespace>rwlock/x/<lease hex>-<n>` with the value `read` or `write` on its
/// session's lease (the protocol of etcd's `recipes.RWMutex`); `<n>` is the lowest
/// number the session's other holds of `x` leave free, as for a semaphore.
///
/// # Behavior
/// - A writer holds when no key was created before its own; a reader holds when
///   no *writer's* key was created before its own. So readers share, a writer
///   excludes everyone, and a reader arriving after a waiting writer waits behind
///   it: writers are not starved by a stream of readers.
/// - A read or write hold is a [`LockGuard`] with the guarantees of a lock: a
///   fencing token, [`LockGuard::compare`], [`LockGuard::lost`], release on drop,
///   nothing left behind by a cancelled call, a re-check after waiting
///   (`LockExpired` if the key's lease ended while queued).
/// - A waiter looks at the store again only once every key that blocks it has
///   been seen deleted.
///
/// # Example
///
/// ```
/// # use std::{sync::Arc, time::Duration};
/// # use coordkit::Coordinator;
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> coordkit::Result<()> {
/// let coordinator = Coordinator::new(Arc::new(coordkit_memory::MemoryBackend::new()));
/// let ttl = Duration::from_secs(10);
/// let rw = coordinator.rw_lock();
/// let reader_a = rw.read("catalog", ttl).await?;
/// let reader_b = rw.read("catalog", ttl).await?; // readers share
/// assert!(rw.try_write("catalog", ttl).await.is_err()); // a writer waits for them
/// reader_a.unlock().await?;
/// reader_b.unlock().await?;
/// let writer = rw.try_write("catalog", ttl).await?;
/// writer.unlock().await?;
/// # coordinator.close().await }
/// ```
#[derive(Clone)]
pub struct RwLockService {
    coord: Arc<Context>,
}

impl RwLockService {
    pub(crate) fn new(coord: Arc<Context>) -> Self {
        RwLockService { coord }
    }

    /// Wait until `name` is held for reading, on a session of `ttl`.
    ///
    /// Errors as for [`LockService::acquire`](crate::LockService::acquire);
    /// dropping this future at any await leaves no key.
    pub async fn read(&self, name: impl Into<QueueName>, ttl: Duration) -> Result<LockGuard> {
        self.claim(Kind::Read, name.into(), ttl, Wait::UntilOwner)
            .await
    }

    /// Wait until `name` is held for writing, on a session of `ttl`.
    ///
    /// Errors and cancellation as for [`RwLockService::read`].
    pub async fn write(&self, name: impl Into<QueueName>, ttl: Duration) -> Result<LockGuard> {
        self.claim(Kind::Write, name.into(), ttl, Wait::UntilOwner)
            .await
    }

    /// Hold `name` for reading only if no writer holds or waits: `LockConflict`
    /// at once otherwise, leaving no key.
    pub async fn try_read(&self, name: impl Into<QueueName>, ttl: Duration) -> Result<LockGuard> {
        self.claim(Kind::Read, name.into(), ttl, Wait::No).await
    }

    /// Hold `name` for writing only if nobody holds or waits: `LockConflict` at
    /// once otherwise, leaving no key.
    pub async fn try_write(&self, name: impl Into<QueueName>, ttl: Duration) -> Result<LockGuard> {
        self.claim(Kind::Write, name.into(), ttl, Wait::No).await
    }

    /// The queue in order (value `read` or `write`): the holders are the first
    /// writer alone, or the readers before the first writer. A read only.
    pub async fn holders_and_waiters(&self, name: impl Into<QueueName>) -> Result<Vec<QueueEntry>> {
        self.coord.claims.queue(Kind::Read, &name.into()).await
    }

    async fn claim(
        &self,
        kind: Kind,
        name: QueueName,
        ttl: Duration,
        wait: Wait,
    ) -> Result<LockGuard> {
        let claim = self
            .coord
            .claim(kind, &name, ttl, kind.value(), wait)
            .await?;
        Ok(LockGuard::from_claim(claim))
    }
}

impl std::fmt::Debug for RwLockService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RwLockService")
            .field("namespace", &self.coord.keys.namespace())
            .finish_non_exhaustive()
    }
}
