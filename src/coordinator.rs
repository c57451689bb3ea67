//! The facade: one store, one namespace, shared sessions, and the recipes.

use std::sync::Arc;
use std::time::Duration;

use crate::backend::Backend;
use crate::config::ConfigCenter;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::health::{Health, SessionHealth};
use crate::keys::KeyLayout;
use crate::recipes::barrier::BarrierService;
use crate::recipes::counter::CounterService;
use crate::recipes::election::ElectionService;
use crate::recipes::lock::LockService;
use crate::recipes::rw_lock::RwLockService;
use crate::recipes::semaphore::SemaphoreService;
use crate::registry::RegistryService;
use crate::retry::RetryPolicy;
use crate::session::Session;

/// The namespace a [`Coordinator`] works in unless told otherwise.
pub const DEFAULT_NAMESPACE: &str = "coord/";

/// Entry point to the recipes, over any [`Backend`].
///
/// Cheap to clone; clones share sessions. Keys live under the namespace (default
/// `coord/`): locks at `<namespace>lock/<name>/<lease>`, elections at
/// `<namespace>election/<name>/<lease>` — the keys etcd's own `concurrency` package
/// and `etcdctl lock` / `etcdctl elect` use for the names `<namespace>lock/<name>`
/// and `<namespace>election/<name>`.
///
/// ```
/// # async fn demo() -> coordkit::Result<()> {
/// use std::{sync::Arc, time::Duration};
/// let coordinator = coordkit::Coordinator::new(Arc::new(coordkit_memory::MemoryBackend::new()));
/// let guard = coordinator.lock().acquire("jobs", Duration::from_secs(10)).await?;
/// println!("holding {} with token {}", guard.key(), guard.fencing_token());
/// guard.unlock().await?;
/// coordinator.close().await?;
/// # Ok(()) }
/// # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
/// ```
#[derive(Clone)]
pub struct Coordinator {
    pub(crate) inner: Arc<Context>,
}

/// Options for a [`Coordinator`].
#[must_use = "a builder does nothing until `build`"]
pub struct CoordinatorBuilder {
    backend: Arc<dyn Backend>,
    namespace: String,
    retry: RetryPolicy,
}

impl CoordinatorBuilder {
    /// The key prefix of everything this coordinator writes (default `coord/`).
    /// A namespace that does not end with `/` gets one (`prod` is `prod/`), so
    /// one namespace is never a prefix of another's keys; `""` is the root.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// Retries for operations that are safe to repeat (default: 5 attempts,
    /// 200 ms doubling to at most 5 s).
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Build the coordinator. A bad retry policy or a namespace with control
    /// characters is `InvalidArgument`.
    pub fn build(mut self) -> Result<Coordinator> {
        self.retry.validate()?;
        if !self.namespace.is_empty() && !self.namespace.ends_with('/') {
            self.namespace.push('/');
        }
        if self.namespace.chars().any(char::is_control) {
            return Err(Error::invalid(
                "namespace",
                "must not contain control characters",
            ));
        }
        // With the `metrics` feature every request is timed and its errors counted.
        #[cfg(feature = "metrics")]
        let backend: Arc<dyn Backend> = Arc::new(crate::telemetry::Metered(self.backend));
        #[cfg(not(feature = "metrics"))]
        let backend = self.backend;
        Ok(Coordinator {
            inner: Arc::new(Context::new(backend, self.namespace, self.retry)),
        })
    }
}

impl Coordinator {
    /// A coordinator over `backend` with the default namespace and retry policy.
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        Coordinator::builder(backend)
            .build()
            .expect("the default options are valid")
    }

    /// Options: namespace and retry policy.
    pub fn builder(backend: Arc<dyn Backend>) -> CoordinatorBuilder {
        CoordinatorBuilder {
            backend,
            namespace: DEFAULT_NAMESPACE.to_string(),
            retry: RetryPolicy::default(),
        }
    }

    /// Distributed locks.
    pub fn lock(&self) -> LockService {
        LockService::new(self.inner.clone())
    }

    /// Counting semaphores: at most N holders of a name at once.
    pub fn semaphore(&self) -> SemaphoreService {
        SemaphoreService::new(self.inner.clone())
    }

    /// Read-write locks: many readers or one writer.
    pub fn rw_lock(&self) -> RwLockService {
        RwLockService::new(self.inner.clone())
    }

    /// Distributed counters (keys under `<namespace>counter/`).
    pub fn counter(&self) -> CounterService {
        CounterService::new(self.inner.clone())
    }

    /// Barriers and double barriers.
    pub fn barrier(&self) -> BarrierService {
        BarrierService::new(self.inner.clone())
    }

    /// Leader election.
    pub fn election(&self) -> ElectionService {
        ElectionService::new(self.inner.clone())
    }

    /// Service registry and discovery (keys under `<namespace>service/`).
    pub fn registry(&self) -> RegistryService {
        RegistryService::new(self.inner.clone())
    }

    /// The config center (keys under `<namespace>config/`).
    pub fn config(&self) -> ConfigCenter {
        ConfigCenter::new(&self.inner)
    }

    /// The store.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.inner.backend
    }

    /// The key prefix of everything this coordinator writes.
    pub fn namespace(&self) -> &str {
        self.inner.keys.namespace()
    }

    /// Where this coordinator's recipes keep their keys.
    pub fn keys(&self) -> &KeyLayout {
        &self.inner.keys
    }

    /// The retry policy.
    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.inner.retry
    }

    /// The session for `ttl` (rounded up to whole seconds): the live one shared by
    /// this coordinator's users of that TTL, or a new one if there is none or it was
    /// lost. `Closed` after [`Coordinator::close`].
    pub async fn session(&self, ttl: Duration) -> Result<Session> {
        self.inner.session(ttl).await
    }

    /// Revoke every session now, so the locks, leaderships and registrations held
    /// through this coordinator are released at once rather than after their TTL,
    /// then wait for the background cleanups of dropped handles to end (a lost
    /// session ends them: its keys go with its lease). Every clone is closed:
    /// later calls fail with `Closed`. Returns the first revoke error, after
    /// trying them all.
    ///
    /// Cancelling `close` leaves the coordinator closed and the sessions not yet
    /// revoked alive until their handles drop (which revokes them in the
    /// background) or their TTL passes.
    pub async fn close(&self) -> Result<()> {
        self.inner.close().await
    }

    /// A snapshot for readiness probes, with no side effect but one read: the
    /// round trip of that read (or why it failed), each session's state and time
    /// to its deadline, and whether each live [`ServiceCache`](crate::ServiceCache)
    /// and [`ConfigManager`](crate::ConfigManager) made through this coordinator
    /// follows its keys or serves stale data. [`Health::is_ready`] sums it up.
    pub async fn health(&self) -> Health {
        let started = tokio::time::Instant::now();
        let probe = crate::backend::RangeRequest::key(self.inner.keys.health_probe()).count_only();
        let backend = match self.inner.backend.range(probe).await {
            Ok(_) => Ok(started.elapsed()),
            Err(e) => Err(e.to_string()),
        };
        let now = tokio::time::Instant::now();
        let mut sessions: Vec<SessionHealth> = self
            .inner
            .sessions()
            .await
            .iter()
            .map(|s| SessionHealth {
                ttl: s.ttl(),
                lease: s.lease(),
                state: s.state(),
                until_deadline: s.deadline().saturating_duration_since(now),
            })
            .collect();
        sessions.sort_by_key(|s| s.ttl);
        Health {
            backend,
            sessions,
            followers: self.inner.followers.health(),
        }
    }

    /// Whether [`Coordinator::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator")
            .field("backend", &self.inner.backend.name())
            .field("namespace", &self.inner.keys.namespace())
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl std::fmt::Debug for CoordinatorBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoordinatorBuilder")
            .field("backend", &self.backend.name())
            .field("namespace", &self.namespace)
            .field("retry", &self.retry)
            .finish()
    }
}
