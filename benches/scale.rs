//! The scale group: one process holding N registrations, N config watches (each
//! on its own key) and a number of service caches at once, at each N of the
//! run, on a single-member etcd of its own (so that it can be killed and
//! restarted; started with `--unsafe-no-fsync`, as the test clusters are) and on
//! the memory backend. What each figure measures:
//!
//! - memory per item: the live heap (a counting allocator) and the RSS the
//!   process gained while the items were made, divided by N;
//! - tasks per item: tokio's alive tasks gained; etcd watchers per item: etcd's
//!   `etcd_debugging_mvcc_watcher_total` gained;
//! - idle: process CPU over the idle window with everything live; then, apart
//!   (its wake-ups cost CPU), how late a 10 ms timer fires (p99);
//! - one write to each watched key (64 writers): write-to-delivery latency;
//! - reconnect (etcd): the member killed and restarted on its data with
//!   everything live; from the first answer after the restart, the time until
//!   every registration is back in the store, and until every watch delivered a
//!   value written after the restart (the writes themselves, 64 writers, timed
//!   alone beside it); errors the items surfaced, and the longest gap between
//!   answers of a `get` loop running throughout.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use coordkit::{Backend, BackendExt, Coordinator, RegistrationState, ServiceInfo};
use coordkit_etcd::{EtcdBackend, EtcdConfig};
use coordkit_memory::MemoryBackend;
use coordkit_testkit::Cluster;
use futures::StreamExt;

use crate::measure::{cpu_time, live_heap, rss_bytes};

/// Sizes of one run.
pub struct Sizes {
    /// The values of N.
    pub counts: Vec<usize>,
    /// Service caches made at each N (at most N).
    pub caches: usize,
    /// The idle window.
    pub idle: Duration,
    /// Only the etcd columns (`COORD_BENCH_SCALE_ETCD_ONLY=1`).
    pub etcd_only: bool,
}

const WRITERS: usize = 64;

/// One column of the table: a backend at one N.
struct Column {
    title: String,
    cells: BTreeMap<usize, String>,
}

impl Column {
    fn set(&mut self, row: usize, value: String) {
        self.cells.insert(row, value);
    }
}

const ROWS: &[&str] = &[
    "register N (64 tasks), per s",
    "heap per registration",
    "RSS per registration",
    "tasks per registration",
    "etcd watchers per registration",
    "open N config watches, per s",
    "heap per config watch",
    "RSS per config watch",
    "tasks per config watch",
    "etcd watchers per config watch",
    "service caches: heap per cache",
    "service caches: tasks per cache",
    "store reads per s while idle (all caches)",
    "idle CPU, % of a core",
    "10 ms timer late by, p99",
    "one write to each watched key: delivery p50 / p99",
    "heap per key of one watch_prefix over N keys",
    "restart: every registration back after",
    "restart: every watch got a fresh write after",
    "restart: the fresh writes alone took (128 keys per txn)",
    "restart: errors surfaced",
    "restart: longest gap between answers of a get loop",
];

fn row(name: &str) -> usize {
    ROWS.iter().position(|r| *r == name).expect("a known row")
}

fn kib(bytes: f64) -> String {
    format!("{:.2} KiB", bytes / 1024.0)
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// What the process gained while `make` ran (then settled for 500 ms).
struct Gain {
    heap: f64,
    rss: f64,
    tasks: f64,
    watchers: f64,
}

impl Gain {
    /// The rows "heap / RSS / tasks / etcd watchers per `what`".
    fn report(&self, column: &mut Column, what: &str) {
        column.set(row(&format!("heap per {what}")), kib(self.heap));
        column.set(row(&format!("RSS per {what}")), kib(self.rss));
        column.set(
            row(&format!("tasks per {what}")),
            format!("{:.3}", self.tasks),
        );
        column.set(
            row(&format!("etcd watchers per {what}")),
            format!("{:.3}", self.watchers),
        );
    }
}

struct Probe<'a> {
    etcd: Option<&'a str>,
}

impl Probe<'_> {
    async fn watchers(&self) -> f64 {
        match self.etcd {
            Some(url) => etcd_metric(url, "etcd_debugging_mvcc_watcher_total").await,
            None => 0.0,
        }
    }

    async fn reads(&self, memory: Option<&MemoryBackend>) -> f64 {
        match (self.etcd, memory) {
            (Some(url), _) => etcd_metric(url, "etcd_debugging_mvcc_range_total").await,
            (None, Some(m)) => m.stats().ranges as f64,
            (None, None) => 0.0,
        }
    }

    async fn gain<T, F: std::future::Future<Output = T>>(&self, n: usize, make: F) -> (T, Gain) {
        let (heap, rss, tasks, watchers) = (
            live_heap(),
            rss_bytes(),
            alive_tasks(),
            self.watchers().await,
        );
        let made = make.await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let n = n.max(1) as f64;
        let gain = Gain {
            heap: (live_heap() - heap) as f64 / n,
            rss: rss_bytes().saturating_sub(rss) as f64 / n,
            tasks: (alive_tasks() as f64 - tasks as f64) / n,
            watchers: (self.watchers().await - watchers) / n,
        };
        (made, gain)
    }
}

/// One gauge or counter from etcd's `/metrics` (plain HTTP on the client URL).
async fn etcd_metric(url: &str, name: &str) -> f64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = url.trim_start_matches("http://").to_string();
    let Ok(mut s) = tokio::net::TcpStream::connect(&addr).await else {
        return f64::NAN;
    };
    let req = format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return f64::NAN;
    }
    let mut body = String::new();
    let _ = s.read_to_string(&mut body).await;
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(f64::NAN)
}

/// Run the group: a table in Markdown.
pub async fn run(sizes: &Sizes, etcd_available: bool) -> String {
    let mut columns = Vec::new();
    for &n in &sizes.counts {
        if !sizes.etcd_only {
            columns.push(memory_column(n, sizes).await);
        }
        if etcd_available {
            columns.push(etcd_column(n, sizes).await);
        }
    }
    let mut out = String::from(
        "\n## Scale: N registrations, N config watches and service caches in one process\n\n",
    );
    out.push_str("| |");
    for c in &columns {
        out.push_str(&format!(" {} |", c.title));
    }
    out.push_str("\n|---|");
    out.push_str(&"---|".repeat(columns.len()));
    out.push('\n');
    for (i, name) in ROWS.iter().enumerate() {
        out.push_str(&format!("| {name} |"));
        for c in &columns {
            out.push_str(&format!(
                " {} |",
                c.cells.get(&i).map_or("–", |s| s.as_str())
            ));
        }
        out.push('\n');
    }
    out
}

async fn memory_column(n: usize, sizes: &Sizes) -> Column {
    let store = MemoryBackend::new();
    let backend: Arc<dyn Backend> = Arc::new(store.client());
    let mut column = Column {
        title: format!("memory, N = {n}"),
        cells: BTreeMap::new(),
    };
    let probe = Probe { etcd: None };
    let live = hold(&backend, n, sizes, &probe, &mut column, Some(&store)).await;
    live.end().await;
    column
}

async fn etcd_column(n: usize, sizes: &Sizes) -> Column {
    let mut cluster = Cluster::start(1).await;
    let url = cluster.members[0].direct_url();
    let backend: Arc<dyn Backend> = Arc::new(
        EtcdBackend::connect(EtcdConfig::with_endpoints(vec![url.clone()]))
            .await
            .expect("etcd"),
    );
    let mut column = Column {
        title: format!("etcd, N = {n}"),
        cells: BTreeMap::new(),
    };
    let probe = Probe { etcd: Some(&url) };
    let live = hold(&backend, n, sizes, &probe, &mut column, None).await;
    restart(&mut cluster, &backend, &live, &mut column).await;
    live.end().await;
    column
}

/// Everything a column keeps live.
struct Live {
    coordinator: Coordinator,
    registrations: Arc<Vec<coordkit::Registration>>,
    keys: Vec<String>,
    /// Per watch: the newest value it delivered (a write's nanos), and errors.
    delivered: Arc<Vec<AtomicU64>>,
    errors: Arc<AtomicUsize>,
    watch_tasks: Vec<tokio::task::JoinHandle<()>>,
    _caches: Vec<coordkit::ServiceCache>,
}

impl Live {
    /// Close everything while the store is up, so that nothing of this column
    /// is still running (retrying against a stopped etcd, say) during the next.
    async fn end(self) {
        let coordinator = self.coordinator.clone();
        // A dropped JoinHandle leaves its task running: the consumers would
        // keep their watches, and the backend re-creating them against a
        // stopped etcd, through every later column's idle window.
        for task in &self.watch_tasks {
            task.abort();
        }
        drop(self);
        coordinator.close().await.ok();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// What the consumers of the config watches saw: per watch the newest value
/// delivered (a write's nanos), every write-to-delivery latency, and errors.
struct Seen {
    delivered: Arc<Vec<AtomicU64>>,
    latencies: Arc<Mutex<Vec<u64>>>,
    errors: Arc<AtomicUsize>,
}

async fn hold(
    backend: &Arc<dyn Backend>,
    n: usize,
    sizes: &Sizes,
    probe: &Probe<'_>,
    column: &mut Column,
    memory: Option<&MemoryBackend>,
) -> Live {
    let coordinator = Coordinator::builder(backend.clone())
        .namespace("scale/")
        .build()
        .expect("coordinator");
    coordinator.session(TTL).await.expect("session");
    let registrations = register_all(&coordinator, n, probe, column).await;
    let config = coordinator.config();
    let keys: Vec<String> = (0..n).map(|i| format!("w/{i}")).collect();
    let watchers = watch_all(&config, &keys, probe, column).await;
    let seen = Seen {
        delivered: Arc::new((0..n).map(|_| AtomicU64::new(0)).collect()),
        latencies: Arc::new(Mutex::new(Vec::with_capacity(n))),
        errors: Arc::new(AtomicUsize::new(0)),
    };
    let watch_tasks = consume(watchers, &seen);
    let caches = cache_all(&coordinator, sizes.caches.min(n).max(1), probe, column).await;
    idle(sizes.idle, probe, memory, column).await;
    write_each_once(&config, &keys, &seen, column).await;
    let (prefix_watch, gain) = probe
        .gain(n, async { config.watch_prefix::<u64>("w/").await })
        .await;
    column.set(
        row("heap per key of one watch_prefix over N keys"),
        match prefix_watch {
            Ok(_) => kib(gain.heap),
            Err(e) => format!("failed: {e}"),
        },
    );
    Live {
        coordinator,
        registrations: Arc::new(registrations),
        keys,
        delivered: seen.delivered,
        errors: seen.errors,
        watch_tasks,
        _caches: caches,
    }
}

const TTL: Duration = Duration::from_secs(10);

/// N registrations of one service, 64 registering tasks.
async fn register_all(
    coordinator: &Coordinator,
    n: usize,
    probe: &Probe<'_>,
    column: &mut Column,
) -> Vec<coordkit::Registration> {
    let started = Instant::now();
    let (registrations, gain) = probe
        .gain(n, async {
            let tasks: Vec<_> = (0..WRITERS)
                .map(|t| {
                    let c = coordinator.clone();
                    tokio::spawn(async move {
                        let mut held = Vec::new();
                        for i in (t..n).step_by(WRITERS) {
                            let info =
                                ServiceInfo::new(format!("r-{i}"), "fleet", "10.1.0.1", 9000);
                            held.push(c.registry().register(info, TTL).await.expect("register"));
                        }
                        held
                    })
                })
                .collect();
            let mut all = Vec::new();
            for t in tasks {
                all.extend(t.await.expect("task"));
            }
            all
        })
        .await;
    let took = started.elapsed().saturating_sub(Duration::from_millis(500));
    column.set(
        row("register N (64 tasks), per s"),
        format!("{:.0}", n as f64 / took.as_secs_f64()),
    );
    gain.report(column, "registration");
    registrations
}

/// A config watch of each key (written first).
async fn watch_all(
    config: &coordkit::ConfigCenter,
    keys: &[String],
    probe: &Probe<'_>,
    column: &mut Column,
) -> Vec<coordkit::config::Watcher<u64>> {
    for chunk in keys.chunks(WRITERS * 16) {
        for r in futures::future::join_all(chunk.iter().map(|k| config.set(k, &0u64))).await {
            r.expect("set");
        }
    }
    let n = keys.len();
    let started = Instant::now();
    let (watchers, gain) = probe
        .gain(n, async {
            let mut all = Vec::with_capacity(n);
            for k in keys {
                let mut w = config.watch::<u64>(k).await.expect("watch");
                // A watcher opens its store watch when first polled: poll it
                // once here (its consumer task, made later, is not counted).
                let _ = futures::FutureExt::now_or_never(w.next());
                all.push(w);
            }
            all
        })
        .await;
    let took = started.elapsed().saturating_sub(Duration::from_millis(500));
    column.set(
        row("open N config watches, per s"),
        format!("{:.0}", n as f64 / took.as_secs_f64()),
    );
    gain.report(column, "config watch");
    watchers
}

/// A task per watch, recording what it delivers into `seen`.
fn consume(
    watchers: Vec<coordkit::config::Watcher<u64>>,
    seen: &Seen,
) -> Vec<tokio::task::JoinHandle<()>> {
    watchers
        .into_iter()
        .enumerate()
        .map(|(i, mut w)| {
            let (delivered, errors, latencies) = (
                seen.delivered.clone(),
                seen.errors.clone(),
                seen.latencies.clone(),
            );
            tokio::spawn(async move {
                while let Some(item) = w.next().await {
                    match item {
                        Ok(e) => {
                            let sent = e.value.unwrap_or(0);
                            if sent > 0 {
                                latencies
                                    .lock()
                                    .unwrap()
                                    .push(now_nanos().saturating_sub(sent));
                            }
                            delivered[i].store(sent, Ordering::SeqCst);
                        }
                        Err(_) => {
                            errors.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
            })
        })
        .collect()
}

/// `count` service caches, of services with no instance.
async fn cache_all(
    coordinator: &Coordinator,
    count: usize,
    probe: &Probe<'_>,
    column: &mut Column,
) -> Vec<coordkit::ServiceCache> {
    let (caches, gain) = probe
        .gain(count, async {
            let mut all = Vec::with_capacity(count);
            for i in 0..count {
                let cache = coordinator.registry().cache(&format!("c-{i}")).await;
                all.push(cache.expect("cache"));
            }
            all
        })
        .await;
    column.set(
        row("service caches: heap per cache"),
        format!("{} ({count} caches)", kib(gain.heap)),
    );
    column.set(
        row("service caches: tasks per cache"),
        format!("{:.3}", gain.tasks),
    );
    caches
}

/// The process's CPU and the store's reads over `window`, then (apart, as its
/// own wake-ups cost CPU) how late a 10 ms timer fires.
async fn idle(
    window: Duration,
    probe: &Probe<'_>,
    memory: Option<&MemoryBackend>,
    column: &mut Column,
) {
    let reads = probe.reads(memory).await;
    let (cpu, started) = (cpu_time(), Instant::now());
    tokio::time::sleep(window).await;
    let elapsed = started.elapsed().as_secs_f64();
    let share = cpu_time().saturating_sub(cpu).as_secs_f64() / elapsed * 100.0;
    let reads = (probe.reads(memory).await - reads) / elapsed;
    let late = timer_lateness(window / 3).await;
    column.set(
        row("store reads per s while idle (all caches)"),
        format!("{reads:.1}"),
    );
    column.set(
        row("idle CPU, % of a core"),
        format!("{share:.2}% over {window:?}"),
    );
    column.set(row("10 ms timer late by, p99"), ms(late));
}

/// One write to each watched key; write-to-delivery latency.
async fn write_each_once(
    config: &coordkit::ConfigCenter,
    keys: &[String],
    seen: &Seen,
    column: &mut Column,
) {
    seen.latencies.lock().unwrap().clear();
    write_each(config, keys).await;
    let all = wait_until(Duration::from_secs(120), || {
        seen.latencies.lock().unwrap().len() >= keys.len()
    })
    .await;
    let mut l = seen.latencies.lock().unwrap().clone();
    l.sort_unstable();
    let q = |p: f64| {
        let i = ((l.len() as f64 * p) as usize).min(l.len().saturating_sub(1));
        Duration::from_nanos(l.get(i).copied().unwrap_or(0))
    };
    let missing = if all {
        ""
    } else {
        " (not all delivered in 120 s)"
    };
    column.set(
        row("one write to each watched key: delivery p50 / p99"),
        format!("{} / {}{missing}", ms(q(0.5)), ms(q(0.99))),
    );
}

/// How late a 10 ms timer fires, p99, over `window`.
async fn timer_lateness(window: Duration) -> Duration {
    let mut late = Vec::new();
    let end = Instant::now() + window;
    while Instant::now() < end {
        let due = Instant::now() + Duration::from_millis(10);
        tokio::time::sleep_until(due.into()).await;
        late.push(Instant::now().saturating_duration_since(due));
    }
    late.sort_unstable();
    late.get(late.len() * 99 / 100).copied().unwrap_or_default()
}

/// Write the current time (nanos) to each key, 64 writers.
async fn write_each(config: &coordkit::ConfigCenter, keys: &[String]) {
    let next = AtomicUsize::new(0);
    let writers = (0..WRITERS).map(|_| async {
        loop {
            let i = next.fetch_add(1, Ordering::SeqCst);
            let Some(k) = keys.get(i) else { return };
            while config.set(k, &now_nanos()).await.is_err() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    futures::future::join_all(writers).await;
}

/// Write the current time (nanos) to each key in batches of [`BATCH`] keys per
/// transaction, 64 writers: the restart row measures the watches, not how fast
/// one process can send 100k single puts.
async fn write_each_batched(config: &coordkit::ConfigCenter, keys: &[String]) {
    const BATCH: usize = 128;
    let batches: Vec<&[String]> = keys.chunks(BATCH).collect();
    let next = AtomicUsize::new(0);
    let writers = (0..WRITERS).map(|_| async {
        loop {
            let i = next.fetch_add(1, Ordering::SeqCst);
            let Some(batch) = batches.get(i) else { return };
            loop {
                let now = now_nanos();
                let changes = batch
                    .iter()
                    .map(|k| coordkit::ConfigChange::set(k.as_str(), &now))
                    .collect::<Result<Vec<_>, _>>()
                    .expect("a number encodes");
                if config.update_many(changes).await.is_ok() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    futures::future::join_all(writers).await;
}

async fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    done()
}

async fn restart(
    cluster: &mut Cluster,
    backend: &Arc<dyn Backend>,
    live: &Live,
    column: &mut Column,
) {
    let n = live.keys.len();
    let errors_before = live.errors.load(Ordering::SeqCst);
    // A get loop throughout: the longest gap between answers.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let gap = {
        let (backend, stop) = (backend.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut last, mut longest) = (Instant::now(), Duration::ZERO);
            while !stop.load(Ordering::SeqCst) {
                if backend.get("scale/probe").await.is_ok() {
                    longest = longest.max(last.elapsed());
                    last = Instant::now();
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            longest
        })
    };
    cluster.members[0].kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.restart(0).await;
    let answered = Instant::now();
    while backend.get("scale/probe").await.is_err() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let answered = answered.max(Instant::now() - Duration::from_millis(10));
    let restarted_at = now_nanos();
    // Registrations back: every key of the service present, on a live lease.
    let prefix = "scale/service/fleet/";
    let registry_back = {
        let backend = backend.clone();
        tokio::spawn(async move {
            loop {
                let count = backend
                    .range(coordkit::RangeRequest::prefix(prefix).count_only())
                    .await
                    .map_or(0, |r| r.count);
                if count as usize >= n {
                    return Instant::now();
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    // COORD_BENCH_SCALE_PROGRESS=1: twice a second, watches with a fresh write,
    // etcd's watchers and lagging ("slow") watchers, registration states.
    let progress = std::env::var("COORD_BENCH_SCALE_PROGRESS").as_deref() == Ok("1");
    let progress = progress.then(|| {
        let (delivered, regs, url) = (
            live.delivered.clone(),
            live.registrations.clone(),
            cluster.members[0].direct_url(),
        );
        tokio::spawn(async move {
            let t = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let fresh = delivered
                    .iter()
                    .filter(|d| d.load(Ordering::SeqCst) >= restarted_at)
                    .count();
                let mut states = BTreeMap::new();
                for r in regs.iter() {
                    *states.entry(format!("{:?}", r.state())).or_insert(0) += 1;
                }
                let w = etcd_metric(&url, "etcd_debugging_mvcc_watcher_total").await;
                let slow = etcd_metric(&url, "etcd_debugging_mvcc_slow_watcher_total").await;
                eprintln!(
                    "[{:6.1}s] fresh {fresh}; etcd watchers {w}, slow {slow}; {states:?}",
                    t.elapsed().as_secs_f64()
                );
            }
        })
    });
    let writes_started = Instant::now();
    write_each_batched(&live.coordinator.config(), &live.keys).await;
    let writes_took = writes_started.elapsed();
    let fresh = wait_until(Duration::from_secs(300), || {
        live.delivered
            .iter()
            .all(|d| d.load(Ordering::SeqCst) >= restarted_at)
    })
    .await;
    let watches_back = answered.elapsed();
    if let Some(progress) = progress {
        progress.abort();
    }
    let registrations_back = tokio::time::timeout(Duration::from_secs(300), registry_back)
        .await
        .ok()
        .and_then(|r| r.ok())
        .map(|at| at.saturating_duration_since(answered));
    stop.store(true, Ordering::SeqCst);
    let longest = gap.await.unwrap_or_default();
    let not_registered = live
        .registrations
        .iter()
        .filter(|r| r.state() != RegistrationState::Registered)
        .count();
    column.set(
        row("restart: every registration back after"),
        registrations_back.map_or("not in 300 s".into(), |d| {
            format!("{:.2} s", d.as_secs_f64())
        }),
    );
    column.set(
        row("restart: every watch got a fresh write after"),
        if fresh {
            format!("{:.2} s", watches_back.as_secs_f64())
        } else {
            "not in 300 s".into()
        },
    );
    column.set(
        row("restart: the fresh writes alone took (128 keys per txn)"),
        format!("{:.2} s", writes_took.as_secs_f64()),
    );
    column.set(
        row("restart: errors surfaced"),
        format!(
            "{} watch errors; {not_registered} registrations not `Registered` at the end",
            live.errors.load(Ordering::SeqCst) - errors_before
        ),
    );
    column.set(
        row("restart: longest gap between answers of a get loop"),
        format!("{:.2} s", longest.as_secs_f64()),
    );
}
