//! What a case runs against: a harness opening connections, and a namespace per case.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use coordkit::{
    Backend, Coordinator, Error, Namespaced, RangeRequest, Result, RetryPolicy, WatchResponse,
    WatchStream,
};
use futures::{FutureExt, StreamExt};
use tokio::sync::{RwLock, RwLockWriteGuard};

pub use coordkit::testing::Faults;

/// One connection to the store under test.
#[derive(Clone)]
pub struct TestClient {
    /// The connection.
    pub backend: Arc<dyn Backend>,
    /// Its fault switches, if the harness can inject faults.
    pub faults: Option<Arc<dyn Faults>>,
}

/// How the suite reaches a backend.
#[async_trait]
pub trait Harness: Send + Sync + 'static {
    /// A new connection to the (one) store under test.
    async fn client(&self) -> TestClient;
}

/// A case's context: the harness, and the case's own namespace.
pub struct Ctx {
    harness: Arc<dyn Harness>,
    paused_clock: bool,
    compacting: bool,
    namespace: Vec<u8>,
    first: TestClient,
}

/// The cases that compact the store, or need no other writer; they run alone
/// (see [`Ctx::compaction`]).
const COMPACTING: [&str; 12] = [
    "ambiguous_random_runs_under_partitions_compaction_and_expiry",
    "config_watch_from_a_compacted_version_is_compacted",
    "delete_of_missing_key_changes_nothing",
    "compaction_past_an_idle_holder_does_not_blind_it",
    "observer_catches_up_after_compaction_while_cut_off",
    "cache_converges_after_compaction_while_cut_off",
    "config_history_after_compaction_is_shorter",
    "config_watch_resyncs_after_compaction",
    "watch_from_compacted_revision_yields_compacted",
    "range_at_compacted_revision_is_compacted",
    "compact_rules",
    "cut_watch_after_compaction_yields_compacted",
];

/// Serializes compaction (which affects the whole store) against cases that read
/// history, across the concurrently running cases of one test binary.
static HISTORY: RwLock<()> = RwLock::const_new(());

/// Held for the whole of a compacting case, so that no other compacting case
/// compacts past the revisions it wrote before it compacts them itself.
static COMPACTIONS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

static NEXT_CASE: AtomicU64 = AtomicU64::new(0);

impl Ctx {
    async fn new(harness: Arc<dyn Harness>, case: &str, paused_clock: bool) -> Self {
        let unique = format!(
            "{}-{}-{}",
            std::process::id(),
            NEXT_CASE.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        );
        let namespace = format!("conformance/{case}/{unique}/").into_bytes();
        let raw = harness.client().await;
        let first = TestClient {
            backend: Arc::new(Namespaced::new(raw.backend, namespace.clone())),
            faults: raw.faults,
        };
        Ctx {
            harness,
            paused_clock,
            compacting: COMPACTING.contains(&case),
            namespace,
            first,
        }
    }

    /// The case's first connection, inside its namespace.
    pub fn backend(&self) -> Arc<dyn Backend> {
        self.first.backend.clone()
    }

    /// The first connection's faults; panics if the harness has none.
    pub fn faults(&self) -> Arc<dyn Faults> {
        self.first
            .faults
            .clone()
            .expect("this case injects faults: the harness's clients must carry Faults")
    }

    /// A new connection inside the case's namespace.
    pub async fn client(&self) -> TestClient {
        let raw = self.harness.client().await;
        TestClient {
            backend: Arc::new(Namespaced::new(raw.backend, self.namespace.clone())),
            faults: raw.faults,
        }
    }

    /// A new connection outside any namespace (raw keys).
    pub async fn raw_client(&self) -> TestClient {
        self.harness.client().await
    }

    /// The case's namespace prefix.
    pub fn namespace(&self) -> &[u8] {
        &self.namespace
    }

    /// Whether the case runs on tokio's paused clock (time passes only when idle, and
    /// the backend's leases follow that clock).
    pub fn paused_clock(&self) -> bool {
        self.paused_clock
    }

    /// A coordinator (namespace `coord/`) on the case's first connection, the one
    /// [`Ctx::faults`] acts on.
    pub fn coordinator(&self) -> Coordinator {
        Coordinator::new(self.backend())
    }

    /// A coordinator on the case's first connection, with its own retry policy.
    pub fn coordinator_with_retry(&self, retry: RetryPolicy) -> Coordinator {
        Coordinator::builder(self.backend())
            .retry(retry)
            .build()
            .expect("a valid retry policy")
    }

    /// A coordinator (namespace `coord/`) on a new connection: another process.
    pub async fn other_coordinator(&self) -> Coordinator {
        Coordinator::new(self.client().await.backend)
    }

    /// The TTL recipe cases use: 6 s, or the backend's minimum if larger.
    pub fn recipe_ttl(&self) -> Duration {
        Duration::from_secs(self.min_ttl().max(6) as u64)
    }

    /// The shortest TTL the backend accepts.
    pub fn min_ttl(&self) -> i64 {
        self.first.backend.limits().min_lease_ttl
    }

    /// Hold while compacting: waits until no other case of this process runs (every
    /// other case relies on history, pinned watch revisions included). Only the
    /// cases listed in `COMPACTING` may call it.
    pub async fn compaction(&self) -> RwLockWriteGuard<'static, ()> {
        assert!(
            self.compacting,
            "a case that compacts must be listed in coordkit_conformance's COMPACTING"
        );
        HISTORY.write().await
    }
}

/// How long one case may run, on the wall clock, before it fails: a case that
/// hangs fails instead of holding up the test binary. `COORD_CASE_TIMEOUT_SECS`
/// overrides it.
pub const CASE_TIMEOUT: Duration = Duration::from_secs(300);

/// How long a case waits for something the backend owes it before failing. Long
/// enough for etcd's lease expiry on a loaded machine; free on a paused clock.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// The next response of a watch, or a panic naming what was awaited.
pub async fn next_response(stream: &mut WatchStream, what: &str) -> Result<WatchResponse> {
    match tokio::time::timeout(PATIENCE, stream.next()).await {
        Ok(Some(item)) => item,
        Ok(None) => panic!("watch ended while waiting for {what}"),
        Err(_) => panic!("no watch response within {PATIENCE:?} while waiting for {what}"),
    }
}

/// Assert that no response is ready on the stream now.
pub async fn assert_quiet(stream: &mut WatchStream, what: &str) {
    // Give in-flight deliveries a chance first.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    if let Some(item) = futures::FutureExt::now_or_never(stream.next()) {
        panic!("expected no watch response ({what}), got {item:?}");
    }
}

/// Run one case against a harness from `factory`; fail when it gives none (a
/// case that cannot run is to be ignored, not passed).
pub async fn run<F>(harness: Option<Arc<dyn Harness>>, case: &str, paused_clock: bool, body: F)
where
    F: FnOnce(Ctx) -> Pin<Box<dyn Future<Output = Result<()>> + Send>>,
{
    let Some(harness) = harness else {
        panic!("{case}: the harness factory gave no backend (see the message above); mark the cases `ignore = \"...\"` instead of skipping them");
    };
    // Every case but the compacting ones relies on history not being compacted
    // under it, so it holds the history lock for reading while it runs.
    // The compacting ones run one at a time, and hold the lock for writing only
    // while they compact (`Ctx::compaction`).
    let (_one_compacting, _history) = if COMPACTING.contains(&case) {
        (Some(COMPACTIONS.lock().await), None)
    } else {
        (None, Some(HISTORY.read().await))
    };
    let ctx = Ctx::new(harness, case, paused_clock).await;
    // A watchdog on the wall clock (the case's own clock may be paused, and a
    // compacting case may wait its turn for a while).
    let limit = std::env::var("COORD_CASE_TIMEOUT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(CASE_TIMEOUT, Duration::from_secs);
    let (expired, watchdog) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        let _ = expired.send(());
    });
    // A failed assertion is caught so that the message can name the case's rule.
    let body = std::panic::AssertUnwindSafe(body(ctx)).catch_unwind();
    let outcome = tokio::select! {
        outcome = body => Ok(outcome),
        Ok(()) = watchdog => Err(()),
    };
    let rule = || crate::rules::rule_of(case).unwrap_or_else(|| "(rule not found)".into());
    match outcome {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => panic!("{case} failed with an error: {e}\n  the rule: {}", rule()),
        Ok(Err(payload)) => panic!(
            "{case} broke its rule: {}\n  what failed: {}",
            rule(),
            crate::rules::panic_message(&*payload)
        ),
        Err(()) => panic!(
            "{case} did not finish within {limit:?}: something it awaits never happens (a hang is a failure, not a wait)"
        ),
    }
}

/// Poll `check` every 10 ms until it holds; panic naming `what` after [`PATIENCE`].
pub async fn wait_until<F, Fut>(what: &str, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !check().await? {
        if tokio::time::Instant::now() >= deadline {
            panic!("gave up after {PATIENCE:?} waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// How many keys are under `prefix` now.
pub async fn count_keys(backend: &dyn Backend, prefix: &str) -> Result<i64> {
    Ok(backend
        .range(RangeRequest::prefix(prefix).count_only())
        .await?
        .count)
}

/// Wait until exactly `n` keys are under `prefix`.
pub async fn wait_for_keys(backend: &dyn Backend, prefix: &str, n: i64) -> Result<()> {
    wait_until(&format!("{n} keys are under {prefix}"), || async move {
        Ok(count_keys(backend, prefix).await? == n)
    })
    .await
}

/// Bytes as text, for assertions whose failure should print keys and values
/// readably.
pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Assert that `result` is `Err(InvalidArgument)` naming `argument`.
pub fn assert_invalid<T: std::fmt::Debug>(result: Result<T>, argument: &str) {
    match result {
        Err(Error::InvalidArgument { argument: a, .. }) if a == argument => {}
        other => panic!("expected InvalidArgument naming `{argument}`, got {other:?}"),
    }
}

impl std::fmt::Debug for TestClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestClient")
            .field("backend", &self.backend.name())
            .field("faults", &self.faults.is_some())
            .finish()
    }
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("namespace", &String::from_utf8_lossy(&self.namespace))
            .field("paused_clock", &self.paused_clock)
            .finish_non_exhaustive()
    }
}
