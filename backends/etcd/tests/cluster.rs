//! A 3-member etcd cluster with one sick member at a time (paused, blackholed,
//! killed), and with a quorum lost: what a lock holder, a registration, a config
//! writer and a watcher on another coordinator see. Behaviour is asserted, never
//! wall-clock times; every wait is bounded.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coordkit::{
    BackendExt, Coordinator, Error, LockGuard, PutRequest, Registration, ServiceCache, ServiceInfo,
    SessionState, Txn, TxnOp,
};
use coordkit_etcd::EtcdConfig;
use coordkit_testkit::{etcd_available, Cluster, Mode};
use futures::StreamExt;
use tokio::task::JoinHandle;

const TTL: Duration = Duration::from_secs(10);
/// How long a member stays sick in the one-member cases.
const SICK: Duration = Duration::from_secs(10);
/// How long the leader stays paused: shorter than the TTL less a keep-alive
/// interval. etcd without the fix of etcd-io/etcd#16822 (3.4.23 and 3.5.1, the
/// versions tested here, lack it) revokes every lease it sees expired when a
/// leader paused longer than that resumes, keep-alives sent to the new leader
/// notwithstanding (etcd-io/etcd#15247). No client can keep its session through
/// that, so this case pauses the leader for less; the README names the bug.
const LEADER_PAUSE: Duration = Duration::from_secs(5);

/// One cluster at a time: three members each, on two cores, are load enough.
static ONE_CLUSTER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The tests are `#[ignore]`d; run, they fail without an etcd binary.
fn require_etcd() -> bool {
    assert!(
        etcd_available(),
        "no etcd binary here: these tests need one (./scripts/test.sh installs it)"
    );
    true
}

async fn connect(cluster: &Cluster) -> Coordinator {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let mut config = EtcdConfig::with_endpoints(cluster.proxy_urls());
    config.request_timeout = Duration::from_secs(3);
    coordkit_etcd::connect(config)
        .await
        .expect("connect to the cluster")
}

/// A fresh 3-member cluster and two coordinators on it, holding the one-cluster
/// lock for the test's life; `None` when no etcd is here (and not required).
struct Setup {
    // Bind `_serial` by name where a Setup is taken apart: `..` would drop it,
    // and the lock with it, at once.
    cluster: Cluster,
    a: Coordinator,
    b: Coordinator,
    _serial: tokio::sync::MutexGuard<'static, ()>,
}

async fn setup() -> Option<Setup> {
    if !require_etcd() {
        return None;
    }
    let serial = ONE_CLUSTER.lock().await;
    let cluster = Cluster::start(3).await;
    let (a, b) = (connect(&cluster).await, connect(&cluster).await);
    Some(Setup {
        cluster,
        a,
        b,
        _serial: serial,
    })
}

/// Poll `check` every 100 ms, up to `tries` times, until it holds.
async fn eventually<F, Fut>(tries: u32, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..tries {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Whether `key` is in the store (a failed read counts as not yet).
async fn present(c: &Coordinator, key: &str) -> bool {
    c.backend().get(key).await.ok().flatten().is_some()
}

/// What a sick member must not cost: a lock holder with its session, a
/// registration seen by another coordinator's cache, and a config writer whose
/// every acknowledged write reaches a watcher on another coordinator once, in
/// order.
struct Load {
    guard: Arc<LockGuard>,
    _registration: Registration,
    _cache: Arc<ServiceCache>,
    lock_lost: Arc<AtomicBool>,
    session_lost: Arc<AtomicBool>,
    cache_misses: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    writer: JoinHandle<(Vec<i64>, BTreeMap<String, u64>)>,
    seen: Arc<Mutex<Vec<(i64, u64)>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Load {
    async fn start(a: &Coordinator, b: &Coordinator) -> Load {
        let guard = Arc::new(a.lock().acquire("chaos", TTL).await.unwrap());
        let lock_lost = Arc::new(AtomicBool::new(false));
        let session_lost = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        {
            let (guard, lost) = (guard.clone(), lock_lost.clone());
            tasks.push(tokio::spawn(async move {
                let why = guard.lost().await;
                eprintln!("lock lost: {why:?}");
                lost.store(true, Ordering::SeqCst);
            }));
        }
        {
            let mut state = guard.session().watch_state();
            let lost = session_lost.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    let now = *state.borrow_and_update();
                    eprintln!("{:?} session {now:?}", std::time::SystemTime::now());
                    if now == SessionState::Lost {
                        lost.store(true, Ordering::SeqCst);
                        return;
                    }
                    if state.changed().await.is_err() {
                        return;
                    }
                }
            }));
        }
        let registration = a
            .registry()
            .register(ServiceInfo::new("i1", "chaos-svc", "127.0.0.1", 8080), TTL)
            .await
            .unwrap();
        let cache = Arc::new(b.registry().cache("chaos-svc").await.unwrap());
        for _ in 0..100 {
            if cache.instances().iter().any(|s| s.id == "i1") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(cache.instances().iter().any(|s| s.id == "i1"));
        let cache_misses = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        {
            let (cache, misses, stop) = (cache.clone(), cache_misses.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    if !cache.instances().iter().any(|s| s.id == "i1") {
                        misses.fetch_add(1, Ordering::SeqCst);
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }));
        }
        let seen = Arc::new(Mutex::new(Vec::new()));
        {
            let mut watcher = b.config().watch_prefix::<u64>("chaos/").await.unwrap();
            let seen = seen.clone();
            tasks.push(tokio::spawn(async move {
                while let Some(event) = watcher.next().await {
                    if let Ok(e) = event {
                        if let Some(v) = e.value {
                            seen.lock().unwrap().push((e.version, v));
                        }
                    }
                }
            }));
        }
        let writer = {
            let config = a.config();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut acked = Vec::new();
                let mut errors: BTreeMap<String, u64> = BTreeMap::new();
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    match config.set("chaos/x", &n).await {
                        Ok(version) => acked.push(version),
                        Err(e) => {
                            *errors.entry(kind(&e)).or_default() += 1;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                (acked, errors)
            })
        };
        Load {
            guard,
            _registration: registration,
            _cache: cache,
            lock_lost,
            session_lost,
            cache_misses,
            stop,
            writer,
            seen,
            tasks,
        }
    }

    /// Stop the load and check everything it must have kept.
    async fn finish(self, what: &str) {
        self.stop.store(true, Ordering::SeqCst);
        let (acked, errors) = self.writer.await.unwrap();
        eprintln!(
            "{what}: {} writes acknowledged, errors {errors:?}",
            acked.len()
        );
        // Let the watcher catch up with the last acknowledged write.
        let last = acked.last().copied().unwrap_or(0);
        for _ in 0..200 {
            if self
                .seen
                .lock()
                .unwrap()
                .last()
                .is_some_and(|(v, _)| *v >= last)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let seen = self.seen.lock().unwrap().clone();
        for pair in seen.windows(2) {
            assert!(
                pair[0].0 < pair[1].0,
                "{what}: watch events out of order or repeated: {pair:?}"
            );
        }
        let seen_versions: std::collections::BTreeSet<i64> = seen.iter().map(|(v, _)| *v).collect();
        let missing: Vec<_> = acked
            .iter()
            .filter(|v| !seen_versions.contains(v))
            .collect();
        assert!(
            missing.is_empty(),
            "{what}: acknowledged writes never watched: {missing:?}"
        );
        assert!(!acked.is_empty(), "{what}: no write went through");
        assert!(
            !self.session_lost.load(Ordering::SeqCst),
            "{what}: the session was lost while a quorum was reachable"
        );
        assert!(
            !self.lock_lost.load(Ordering::SeqCst),
            "{what}: the lock was lost while a quorum was reachable"
        );
        assert!(
            self.guard.is_held().await.unwrap(),
            "{what}: the lock is not held"
        );
        assert_eq!(
            self.cache_misses.load(Ordering::SeqCst),
            0,
            "{what}: the registration left the other coordinator's cache"
        );
        for t in self.tasks {
            t.abort();
        }
    }
}

fn kind(e: &Error) -> String {
    format!("{e:?}")
        .split([' ', '{', '('])
        .next()
        .unwrap_or("")
        .to_string()
}

/// The cases, under one name: `scripts/test.sh` runs this binary beside the
/// other tests (it starts its own members and uses no shared server) and skips
/// `three_members::` where it runs the others.
mod three_members {
    use super::*;

    /// Each member in turn SIGSTOPped (a member that stops answering with its
    /// sockets open): followers for 10 s, as long as the TTL, the leader for
    /// [`LEADER_PAUSE`]. No session, lock or registration lost, every acknowledged
    /// write watched once, in order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    #[ignore = "needs etcd (./scripts/test.sh runs it)"]
    async fn each_member_paused_in_turn_costs_nothing() {
        let Some(Setup {
            cluster,
            a,
            b,
            _serial,
        }) = setup().await
        else {
            return;
        };
        let load = Load::start(&a, &b).await;
        for i in 0..cluster.members.len() {
            let leader = cluster.leader().await;
            eprintln!(
                "{:?} pausing member {i} (leader: {leader:?})",
                std::time::SystemTime::now(),
            );
            cluster.members[i].pause();
            let pause = if leader == Some(i) {
                LEADER_PAUSE
            } else {
                SICK
            };
            tokio::time::sleep(pause).await;
            cluster.members[i].resume();
            cluster.wait_healthy(i).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        load.finish("members paused in turn").await;
    }

    /// Each member's proxy in turn blackholed for 10 s (accepts TCP, holds every
    /// byte): the same promises.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    #[ignore = "needs etcd (./scripts/test.sh runs it)"]
    async fn each_proxy_blackholed_in_turn_costs_nothing() {
        let Some(Setup {
            cluster,
            a,
            b,
            _serial,
        }) = setup().await
        else {
            return;
        };
        let load = Load::start(&a, &b).await;
        for m in &cluster.members {
            m.proxy.set(Mode::Blackhole);
            tokio::time::sleep(SICK).await;
            m.proxy.set(Mode::Pass);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        load.finish("proxies blackholed in turn").await;
    }

    /// The leader SIGKILLed under load and restarted: the same promises.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    #[ignore = "needs etcd (./scripts/test.sh runs it)"]
    async fn leader_killed_and_restarted_costs_nothing() {
        let Some(Setup {
            mut cluster,
            a,
            b,
            _serial,
        }) = setup().await
        else {
            return;
        };
        let load = Load::start(&a, &b).await;
        let leader = cluster.leader().await.expect("a leader");
        cluster.members[leader].kill();
        tokio::time::sleep(Duration::from_secs(5)).await;
        cluster.restart(leader).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        load.finish("leader killed").await;
    }

    /// Two of three members killed for ~10 s: every call returns (nothing hangs) with
    /// a retryable error, and once they are back, writes work again and the
    /// registration is in the store.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    #[ignore = "needs etcd (./scripts/test.sh runs it)"]
    async fn quorum_lost_fails_retryably_then_recovers() {
        let Some(Setup {
            mut cluster,
            a,
            _serial,
            ..
        }) = setup().await
        else {
            return;
        };
        let config = a.config();
        config.set("q/x", &0u64).await.unwrap();
        let registration = a
            .registry()
            .register(ServiceInfo::new("q1", "quorum-svc", "127.0.0.1", 8080), TTL)
            .await
            .unwrap();
        cluster.members[0].kill();
        cluster.members[1].kill();
        let mut kinds = BTreeMap::new();
        let until = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::time::Instant::now() < until {
            let set = tokio::time::timeout(Duration::from_secs(20), config.set("q/x", &1u64))
                .await
                .expect("a write hung with the quorum lost");
            let err = set.expect_err("a write succeeded without a quorum");
            assert!(
                err.is_retryable(),
                "not retryable without a quorum: {err:?}"
            );
            *kinds.entry(kind(&err)).or_insert(0) += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        eprintln!("errors without a quorum: {kinds:?}");
        cluster.restart(0).await;
        cluster.restart(1).await;
        let written = eventually(100, || async { config.set("q/x", &2u64).await.is_ok() }).await;
        assert!(written, "no write went through after the quorum came back");
        let back = eventually(200, || present(&a, registration.key())).await;
        assert!(back, "the registration is not back in the store");
    }

    /// Every proxy blackholed longer than the TTL, then healed: the holder learns of
    /// the loss (`lost()` fires), its fenced write fails afterwards, the registration
    /// comes back, and the watcher resumes with no gap.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    #[ignore = "needs etcd (./scripts/test.sh runs it)"]
    async fn all_members_cut_off_past_the_ttl_loses_then_recovers() {
        let Some(Setup {
            cluster,
            a,
            b,
            _serial,
        }) = setup().await
        else {
            return;
        };
        let ttl = Duration::from_secs(4);
        let guard = a.lock().acquire("cut", ttl).await.unwrap();
        let registration = a
            .registry()
            .register(ServiceInfo::new("c1", "cut-svc", "127.0.0.1", 8080), ttl)
            .await
            .unwrap();
        let mut watcher = b.config().watch_prefix::<u64>("cut/").await.unwrap();
        b.config().set("cut/x", &1u64).await.unwrap();
        let first = tokio::time::timeout(Duration::from_secs(10), watcher.next())
            .await
            .expect("the first event")
            .unwrap()
            .unwrap();
        for m in &cluster.members {
            m.proxy.set(Mode::Blackhole);
        }
        let why = tokio::time::timeout(ttl * 3, guard.lost())
            .await
            .expect("the holder was never told of the loss");
        eprintln!("lost: {why:?}");
        tokio::time::sleep(ttl).await;
        for m in &cluster.members {
            m.proxy.set(Mode::Pass);
        }
        // A write fenced by the old guard fails: its key is gone.
        let fenced = Txn::new()
            .when([guard.compare()])
            .and_then([TxnOp::Put(PutRequest::new("cut/fenced", "old holder"))]);
        let mut answered = None;
        for _ in 0..100 {
            match a.backend().txn(fenced.clone()).await {
                Ok(r) => {
                    answered = Some(r.succeeded);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        assert_eq!(answered, Some(false), "the old holder's fenced write");
        // The registration comes back on a new session.
        let back = eventually(200, || present(&a, registration.key())).await;
        assert!(back, "the registration did not come back");
        // The watcher resumes: the next write is its next event, nothing in between lost.
        let v = b.config().set("cut/x", &2u64).await.unwrap();
        let next = tokio::time::timeout(Duration::from_secs(20), watcher.next())
            .await
            .expect("the watcher resumed")
            .unwrap()
            .unwrap();
        assert!(next.version > first.version);
        assert_eq!(next.version, v, "the watcher skipped or repeated a change");
        assert_eq!(next.value, Some(2));
    }

    /// Four clients (each with all three endpoints) run random gets, puts, deletes
    /// and compare-and-sets while the leader is killed and restarted: the history is
    /// linearizable (calls that failed count as "may or may not have applied").
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    #[ignore = "needs etcd (./scripts/test.sh runs it)"]
    async fn history_stays_linearizable_while_the_leader_is_killed() {
        let Some(Setup {
            mut cluster,
            _serial,
            ..
        }) = setup().await
        else {
            return;
        };
        let mut clients: Vec<Arc<dyn coordkit::Backend>> = Vec::new();
        for _ in 0..4 {
            let mut config = EtcdConfig::with_endpoints(cluster.proxy_urls());
            config.request_timeout = Duration::from_secs(3);
            let backend = coordkit_etcd::EtcdBackend::connect(config)
                .await
                .expect("connect");
            clients.push(Arc::new(coordkit::Namespaced::new(
                Arc::new(backend),
                "linearizability/",
            )));
        }
        let leader = cluster.leader().await.expect("a leader");
        let history = {
            let run =
                coordkit_conformance::linearizability::run_history(clients, 3, 150, 31, |_| {});
            let fault = async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                cluster.members[leader].kill();
                tokio::time::sleep(Duration::from_secs(3)).await;
                cluster.restart(leader).await;
            };
            let (history, ()) = tokio::join!(run, fault);
            history
        };
        let unknown = history
            .iter()
            .filter(|o| o.outcome == coordkit_conformance::linearizability::Outcome::Unknown)
            .count();
        eprintln!(
            "{} operations, {unknown} with an unknown outcome",
            history.len()
        );
        if let Err(violation) = coordkit_conformance::linearizability::check(&history) {
            panic!("not linearizable with the leader killed: {violation}");
        }
    }
}
