//! The facade: one store, one namespace, shared sessions, and the recipes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::cleanup::Cleanup;
use crate::config::ConfigCenter;
use crate::election::ElectionService;
use crate::health::{Followers, Health, SessionHealth};
use crate::local_queue::LocalQueues;
use crate::lock::LockService;
use crate::registry::RegistryService;
use crate::session::ttl_seconds;
use crate::{Backend, Error, Result, RetryPolicy, Session};

/// How many sessions of distinct TTLs a coordinator keeps before it drops those
/// nobody holds.
const IDLE_SESSIONS_KEPT: usize = 8;

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
    pub(crate) inner: Arc<CoordinatorInner>,
}

pub(crate) struct CoordinatorInner {
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) namespace: String,
    pub(crate) retry: RetryPolicy,
    pub(crate) local: LocalQueues,
    /// The numbers in use in shared claims' keys.
    pub(crate) slots: crate::key_hold::ClaimSlots,
    /// Deletes keys whose owner is gone (dropped or cancelled handles).
    pub(crate) cleanup: Cleanup,
    /// The caches and config managers, for `health()`.
    pub(crate) followers: Arc<Followers>,
    /// Registry entries skipped as malformed.
    pub(crate) malformed_entries: std::sync::atomic::AtomicU64,
    /// How fast the queues this coordinator waits in move (for waiters' glances).
    pub(crate) pace: crate::pace::QueuePace,
    /// Watches kept after waits, for the next wait behind the same key.
    pub(crate) watches: crate::watch_pool::WatchPool,
    sessions: tokio::sync::Mutex<HashMap<i64, Session>>,
    /// Sessions taken over by `ElectionService::resume`, revoked by `close`
    /// while anything still holds them.
    adopted: std::sync::Mutex<Vec<crate::session::WeakSession>>,
    closed: AtomicBool,
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
            inner: Arc::new(CoordinatorInner {
                cleanup: Cleanup::new(backend.clone(), self.retry.clone()),
                followers: Arc::default(),
                backend,
                namespace: self.namespace,
                retry: self.retry,
                local: LocalQueues::default(),
                slots: Default::default(),
                malformed_entries: std::sync::atomic::AtomicU64::new(0),
                pace: Default::default(),
                watches: Default::default(),
                sessions: tokio::sync::Mutex::new(HashMap::new()),
                adopted: std::sync::Mutex::new(Vec::new()),
                closed: AtomicBool::new(false),
            }),
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
    pub fn semaphore(&self) -> crate::SemaphoreService {
        crate::SemaphoreService::new(self.inner.clone())
    }

    /// Read-write locks: many readers or one writer.
    pub fn rw_lock(&self) -> crate::RwLockService {
        crate::RwLockService::new(self.inner.clone())
    }

    /// Distributed counters (keys under `<namespace>counter/`).
    pub fn counter(&self) -> crate::CounterService {
        crate::CounterService::new(self.inner.clone())
    }

    /// Barriers and double barriers.
    pub fn barrier(&self) -> crate::BarrierService {
        crate::BarrierService::new(self.inner.clone())
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
        &self.inner.namespace
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
        self.inner.closed.store(true, Ordering::SeqCst);
        let mut sessions: Vec<Session> = self
            .inner
            .sessions
            .lock()
            .await
            .drain()
            .map(|(_, s)| s)
            .collect();
        sessions.extend(self.inner.adopted_sessions());
        let mut first = Ok(());
        for s in sessions {
            if let Err(e) = s.close().await {
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        self.inner.watches.clear();
        self.inner.cleanup.drain().await;
        first
    }

    /// A snapshot for readiness probes, with no side effect but one read: the
    /// round trip of that read (or why it failed), each session's state and time
    /// to its deadline, and whether each live [`ServiceCache`](crate::ServiceCache)
    /// and [`ConfigManager`](crate::ConfigManager) made through this coordinator
    /// follows its keys or serves stale data. [`Health::is_ready`] sums it up.
    pub async fn health(&self) -> Health {
        let started = tokio::time::Instant::now();
        let probe =
            crate::RangeRequest::key(format!("{}health", self.inner.namespace)).count_only();
        let backend = match self.inner.backend.range(probe).await {
            Ok(_) => Ok(started.elapsed()),
            Err(e) => Err(e.to_string()),
        };
        let now = tokio::time::Instant::now();
        let mut sessions: Vec<SessionHealth> = self
            .inner
            .sessions
            .lock()
            .await
            .values()
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

impl CoordinatorInner {
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
    pub(crate) async fn live_session(&self, lease: crate::LeaseId) -> Option<Session> {
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

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator")
            .field("backend", &self.inner.backend.name())
            .field("namespace", &self.inner.namespace)
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
