//! Long fault runs that measure instead of assert: `scripts/chaos.sh` runs them
//! (`cargo test --release -p coordkit-etcd --test chaos -- --ignored`) and writes
//! a Markdown report. Ignored in `./scripts/test.sh`: the short versions of the
//! same faults are asserted in `tests/cluster.rs`.
//!
//! Each scenario starts a fresh 3-member cluster behind fault proxies and runs
//! the same load on two coordinators: a fenced counter incremented under a lock
//! taken in turn by both, a config writer whose every acknowledged version is
//! timed until a watcher on the other coordinator sees it, a registration
//! followed by the other coordinator's cache, and a count of sessions lost.
//! Figures are printed with their ratio to the no-fault baseline of the same run.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use coordkit::{
    Backend, BackendExt, Coordinator, Error, KeyValue, PutRequest, RangeRequest, ServiceInfo, Txn,
    TxnOp, WatchRequest,
};
use coordkit_etcd::{EtcdBackend, EtcdConfig};
use coordkit_testkit::{etcd_available, Cluster, Mode};
use futures::StreamExt;

const TTL: Duration = Duration::from_secs(10);
/// Samples of the registration cache are taken this often.
const SAMPLE: Duration = Duration::from_millis(50);

fn secs_env(name: &str, default: u64) -> Duration {
    Duration::from_secs(
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default),
    )
}

/// How long a member stays sick (`COORD_CHAOS_SICK_SECS`, default 10).
fn sick() -> Duration {
    secs_env("COORD_CHAOS_SICK_SECS", 10)
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    None,
    /// Each follower SIGSTOPped for `sick()`, the leader for 5 s (etcd#15247).
    PauseEach,
    BlackholeEach,
    KillLeader,
    QuorumLost,
    /// Every proxy blackholed for 1.5 TTL: sessions are lost by design.
    AllCutOff,
}

impl Fault {
    fn describe(self) -> String {
        let s = sick().as_secs();
        match self {
            Fault::None => "baseline: no fault".into(),
            Fault::PauseEach => format!("each member SIGSTOPped in turn ({s} s; the leader 5 s)"),
            Fault::BlackholeEach => format!("each member's proxy blackholed in turn ({s} s)"),
            Fault::KillLeader => format!("leader SIGKILLed, restarted after {s} s"),
            Fault::QuorumLost => format!("two of three members killed for {s} s"),
            Fault::AllCutOff => "every proxy blackholed for 15 s (TTL 10 s)".into(),
        }
    }
}

/// What one scenario measured.
#[derive(Default)]
struct Figures {
    name: String,
    window: Duration,
    lock_stall: Duration,
    write_stall: Duration,
    watch_stall: Duration,
    delays: Vec<Duration>,
    errors: BTreeMap<String, u64>,
    sessions_lost: u64,
    registration_missing: Duration,
    writes_acked: usize,
    writes_never_watched: usize,
    fenced_acked: u64,
    fenced_ambiguous: u64,
    counter: u64,
}

impl Figures {
    fn fenced_ok(&self) -> bool {
        self.counter >= self.fenced_acked
            && self.counter <= self.fenced_acked + self.fenced_ambiguous
    }
}

#[derive(Default)]
struct Probe {
    stop: AtomicBool,
    increments: Mutex<Vec<Instant>>,
    ambiguous: AtomicU64,
    acked: Mutex<HashMap<i64, Instant>>,
    ack_times: Mutex<Vec<Instant>>,
    seen: Mutex<Vec<(i64, Instant)>>,
    errors: Mutex<BTreeMap<String, u64>>,
    sessions_lost: AtomicU64,
    missing_samples: AtomicU64,
}

impl Probe {
    fn error(&self, what: &str, e: &Error) {
        let mut kind = format!("{e:?}")
            .split([' ', '{', '('])
            .next()
            .unwrap_or("")
            .to_string();
        if matches!(e, Error::Unavailable { .. }) && e.to_string().contains("connect") {
            kind.push_str(" (connect)");
        }
        *self
            .errors
            .lock()
            .unwrap()
            .entry(format!("{what}: {kind}"))
            .or_default() += 1;
    }
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

async fn connect(cluster: &Cluster) -> Coordinator {
    let mut config = EtcdConfig::with_endpoints(cluster.proxy_urls());
    config.request_timeout = Duration::from_secs(3);
    coordkit_etcd::connect(config).await.expect("connect")
}

/// Take the lock, read the counter, write it + 1 fenced by the guard, release.
async fn lock_loop(c: Coordinator, probe: Arc<Probe>) {
    while !probe.stopped() {
        let guard = match tokio::time::timeout(TTL * 3, c.lock().acquire("chaos-lock", TTL)).await {
            Ok(Ok(g)) => g,
            Ok(Err(e)) => {
                probe.error("lock", &e);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Err(_) => {
                *probe
                    .errors
                    .lock()
                    .unwrap()
                    .entry("lock: acquire hung 30 s".into())
                    .or_default() += 1;
                continue;
            }
        };
        let current = match c.backend().get("chaos/counter").await {
            Ok(kv) => kv.map_or(0, |kv: KeyValue| {
                String::from_utf8_lossy(&kv.value)
                    .parse::<u64>()
                    .unwrap_or(0)
            }),
            Err(e) => {
                probe.error("counter read", &e);
                let _ = guard.unlock().await;
                continue;
            }
        };
        let txn = Txn::new()
            .when([guard.compare()])
            .and_then([TxnOp::Put(PutRequest::new(
                "chaos/counter",
                (current + 1).to_string(),
            ))]);
        match c.backend().txn(txn).await {
            Ok(r) if r.succeeded => probe.increments.lock().unwrap().push(Instant::now()),
            Ok(_) => {
                *probe
                    .errors
                    .lock()
                    .unwrap()
                    .entry("counter write: fenced out".into())
                    .or_default() += 1;
            }
            Err(e) => {
                if matches!(e, Error::Timeout { .. } | Error::Unavailable { .. }) {
                    probe.ambiguous.fetch_add(1, Ordering::SeqCst);
                }
                probe.error("counter write", &e);
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        if let Err(e) = guard.unlock().await {
            probe.error("unlock", &e);
        }
    }
}

async fn session_monitor(c: Coordinator, probe: Arc<Probe>) {
    while !probe.stopped() {
        match c.session(TTL).await {
            Ok(s) => {
                tokio::select! {
                    _ = s.lost() => {
                        if !probe.stopped() {
                            probe.sessions_lost.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    _ = async { while !probe.stopped() { tokio::time::sleep(SAMPLE).await } } => {}
                }
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

fn longest_gap(mut times: Vec<Instant>, from: Instant, to: Instant) -> Duration {
    times.retain(|t| *t >= from && *t <= to);
    times.sort();
    let mut last = from;
    let mut longest = Duration::ZERO;
    for t in times.into_iter().chain([to]) {
        longest = longest.max(t - last);
        last = t;
    }
    longest
}

async fn run(fault: Fault) -> Figures {
    let mut cluster = Cluster::start(3).await;
    let (a, b) = (connect(&cluster).await, connect(&cluster).await);
    let probe = Arc::new(Probe::default());
    let mut tasks = vec![
        tokio::spawn(lock_loop(a.clone(), probe.clone())),
        tokio::spawn(lock_loop(b.clone(), probe.clone())),
        tokio::spawn(session_monitor(a.clone(), probe.clone())),
        tokio::spawn(session_monitor(b.clone(), probe.clone())),
    ];
    let registration = a
        .registry()
        .register(ServiceInfo::new("i1", "chaos-svc", "127.0.0.1", 8080), TTL)
        .await
        .expect("register");
    let cache = b.registry().cache("chaos-svc").await.expect("cache");
    let mut watcher = b
        .config()
        .watch_prefix::<u64>("chaos/x")
        .await
        .expect("watch");
    {
        let probe = probe.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(event) = watcher.next().await {
                match event {
                    Ok(e) => probe.seen.lock().unwrap().push((e.version, Instant::now())),
                    Err(e) => probe.error("watch", &e),
                }
            }
        }));
    }
    let writer = {
        let (config, probe) = (a.config(), probe.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            while !probe.stopped() {
                n += 1;
                match config.set("chaos/x", &n).await {
                    Ok(v) => {
                        let now = Instant::now();
                        probe.acked.lock().unwrap().insert(v, now);
                        probe.ack_times.lock().unwrap().push(now);
                    }
                    Err(e) => probe.error("config write", &e),
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    let start = Instant::now();
    let sampler = {
        let probe = probe.clone();
        tokio::spawn(async move {
            while !probe.stopped() {
                if !cache.instances().iter().any(|s| s.id == "i1") {
                    probe.missing_samples.fetch_add(1, Ordering::SeqCst);
                }
                tokio::time::sleep(SAMPLE).await;
            }
        })
    };
    let sick = sick();
    match fault {
        Fault::None => tokio::time::sleep(sick * 3).await,
        Fault::PauseEach => {
            for i in 0..3 {
                let leader = cluster.leader().await;
                cluster.members[i].pause();
                let pause = if leader == Some(i) {
                    Duration::from_secs(5)
                } else {
                    sick
                };
                tokio::time::sleep(pause).await;
                cluster.members[i].resume();
                cluster.wait_healthy(i).await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        Fault::BlackholeEach => {
            for m in &cluster.members {
                m.proxy.set(Mode::Blackhole);
                tokio::time::sleep(sick).await;
                m.proxy.set(Mode::Pass);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        Fault::KillLeader => {
            let leader = cluster.leader().await.expect("a leader");
            cluster.members[leader].kill();
            tokio::time::sleep(sick).await;
            cluster.restart(leader).await;
        }
        Fault::QuorumLost => {
            cluster.members[0].kill();
            cluster.members[1].kill();
            tokio::time::sleep(sick).await;
            cluster.restart(0).await;
            cluster.restart(1).await;
        }
        Fault::AllCutOff => {
            for m in &cluster.members {
                m.proxy.set(Mode::Blackhole);
            }
            tokio::time::sleep(TTL + TTL / 2).await;
            for m in &cluster.members {
                m.proxy.set(Mode::Pass);
            }
        }
    }
    // A tail for recovery, then stop and let the watcher catch up.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let end = Instant::now();
    probe.stop.store(true, Ordering::SeqCst);
    let _ = writer.await;
    let _ = sampler.await;
    let last = probe
        .acked
        .lock()
        .unwrap()
        .keys()
        .max()
        .copied()
        .unwrap_or(0);
    for _ in 0..200 {
        if probe.seen.lock().unwrap().iter().any(|(v, _)| *v >= last) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut counter = None;
    for _ in 0..100 {
        if let Ok(r) = a.backend().range(RangeRequest::key("chaos/counter")).await {
            counter = Some(r.kvs.first().map_or(0, |kv| {
                String::from_utf8_lossy(&kv.value)
                    .parse::<u64>()
                    .unwrap_or(0)
            }));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for t in &tasks {
        t.abort();
    }
    drop(registration);
    let acked = probe.acked.lock().unwrap().clone();
    let seen = probe.seen.lock().unwrap().clone();
    let seen_at: HashMap<i64, Instant> = seen.iter().copied().collect();
    let mut delays = Vec::new();
    let mut never = 0;
    for (v, at) in &acked {
        match seen_at.get(v) {
            Some(s) => delays.push(s.saturating_duration_since(*at)),
            None => never += 1,
        }
    }
    delays.sort();
    let increments = probe.increments.lock().unwrap().clone();
    let figures = Figures {
        name: fault.describe(),
        window: end - start,
        lock_stall: longest_gap(increments.clone(), start, end),
        write_stall: longest_gap(probe.ack_times.lock().unwrap().clone(), start, end),
        watch_stall: longest_gap(seen.iter().map(|(_, t)| *t).collect(), start, end),
        delays,
        errors: probe.errors.lock().unwrap().clone(),
        sessions_lost: probe.sessions_lost.load(Ordering::SeqCst),
        registration_missing: SAMPLE * probe.missing_samples.load(Ordering::SeqCst) as u32,
        writes_acked: acked.len(),
        writes_never_watched: never,
        fenced_acked: increments.len() as u64,
        fenced_ambiguous: probe.ambiguous.load(Ordering::SeqCst),
        counter: counter.unwrap_or(0),
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), a.close()).await;
    let _ = tokio::time::timeout(Duration::from_secs(10), b.close()).await;
    figures
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn ratio(d: Duration, base: Duration) -> String {
    if base.is_zero() {
        return "–".into();
    }
    format!("×{:.1}", d.as_secs_f64() / base.as_secs_f64())
}

fn report_path() -> std::path::PathBuf {
    std::env::var_os("COORD_CHAOS_REPORT")
        .map(Into::into)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/chaos-report.md")
        })
}

fn vm_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Figures of the 10,000-watch scenario.
struct Crowd {
    watches: usize,
    before: Vec<Duration>,
    during: Vec<Duration>,
    rss_before_kib: u64,
    rss_during_kib: u64,
    stalls: u64,
    hot_acked: usize,
    hot_delivered: usize,
    hot_in_order: bool,
    hot_compacted: bool,
}

/// 10,000 watches read promptly while one consumer of a busy prefix stops
/// reading for `COORD_CHAOS_STALL_SECS` (default 60): the others' delivery
/// delay and the process's memory, before and during; what the stalled
/// consumer gets once it reads again.
async fn crowd() -> Crowd {
    let watches = std::env::var("COORD_CHAOS_WATCHES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000usize);
    let stall = secs_env("COORD_CHAOS_STALL_SECS", 60);
    let cluster = Cluster::start(3).await;
    let backend = Arc::new(
        EtcdBackend::connect(EtcdConfig::with_endpoints(cluster.proxy_urls()))
            .await
            .expect("connect"),
    );
    let epoch = Instant::now();
    let delays: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let mut tasks = Vec::new();
    for i in 0..watches {
        let mut stream = backend
            .watch(WatchRequest::key(format!("w/{i}")))
            .await
            .expect("watch");
        let delays = delays.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(Ok(resp)) = stream.next().await {
                for e in resp.events {
                    let micros: u64 = String::from_utf8_lossy(&e.kv.value).parse().unwrap_or(0);
                    let sent = epoch + Duration::from_micros(micros);
                    delays
                        .lock()
                        .unwrap()
                        .push(Instant::now().saturating_duration_since(sent));
                }
            }
        }));
    }
    let hot = backend
        .watch(WatchRequest::prefix("hot/"))
        .await
        .expect("hot watch");
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (backend, stop) = (backend.clone(), stop.clone());
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let key = format!("w/{}", fastrand::usize(..watches));
                let micros = epoch.elapsed().as_micros() as u64;
                let _ = backend.put(key, micros.to_string()).await;
                if i.is_multiple_of(2) {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        })
    };
    let phase = (stall / 3).max(Duration::from_secs(10));
    tokio::time::sleep(phase).await;
    let before = std::mem::take(&mut *delays.lock().unwrap());
    let rss_before_kib = vm_rss_kib();
    // The hot prefix: 1 KiB values, as fast as the store takes them, nobody reading.
    let hot_writer = {
        let (backend, stop) = (backend.clone(), stop.clone());
        tokio::spawn(async move {
            let mut revisions = Vec::new();
            let t0 = Instant::now();
            while t0.elapsed() < stall && !stop.load(Ordering::SeqCst) {
                if let Ok(r) = backend.put("hot/x", vec![b'h'; 1024]).await {
                    revisions.push(r);
                }
            }
            revisions
        })
    };
    let mut rss_during_kib = 0;
    let t0 = Instant::now();
    while t0.elapsed() < stall {
        rss_during_kib = rss_during_kib.max(vm_rss_kib());
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let hot_revisions = hot_writer.await.unwrap();
    let during = std::mem::take(&mut *delays.lock().unwrap());
    stop.store(true, Ordering::SeqCst);
    let _ = writer.await;
    // Now the stalled consumer reads: everything, in order, or `Compacted`.
    let last = hot_revisions.last().copied().unwrap_or(0);
    let mut got = Vec::new();
    let mut compacted = false;
    let mut hot = hot;
    while got.last().copied().unwrap_or(0) < last {
        match tokio::time::timeout(Duration::from_secs(30), hot.next()).await {
            Ok(Some(Ok(resp))) => got.push(resp.revision),
            Ok(Some(Err(Error::Compacted { .. }))) => {
                compacted = true;
                break;
            }
            _ => break,
        }
    }
    let stalls = backend.stream_stats().watch_stalls;
    for t in tasks {
        t.abort();
    }
    let mut before = before;
    let mut during = during;
    before.sort();
    during.sort();
    Crowd {
        watches,
        before,
        during,
        rss_before_kib,
        rss_during_kib,
        stalls,
        hot_acked: hot_revisions.len(),
        hot_delivered: got.iter().filter(|r| hot_revisions.contains(r)).count(),
        hot_in_order: got.windows(2).all(|w| w[0] < w[1]),
        hot_compacted: compacted,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "long (minutes): run by scripts/chaos.sh"]
async fn chaos_report() {
    assert!(
        etcd_available(),
        "no etcd binary here (scripts/chaos.sh installs it)"
    );
    let version = std::process::Command::new(coordkit_testkit::cluster::etcd_bin())
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let mut out = String::new();
    out.push_str("# coordkit chaos report\n\n");
    out.push_str(&format!(
        "3-member etcd on loopback behind fault proxies; session TTL {} s; request timeout 3 s. {}\n\n",
        TTL.as_secs(),
        version.lines().next().unwrap_or("")
    ));
    out.push_str("Stalls are the longest time without a success in the measured window; ratios are to the baseline of this run.\n\n");
    out.push_str("| scenario | lock stall | write stall | watch stall | watch delay p50 / p99 / max | sessions lost | registration missing | writes acked / never watched | fenced counter |\n|---|---|---|---|---|---|---|---|---|\n");
    let mut base: Option<Figures> = None;
    let mut errors = String::new();
    for fault in [
        Fault::None,
        Fault::PauseEach,
        Fault::BlackholeEach,
        Fault::KillLeader,
        Fault::QuorumLost,
        Fault::AllCutOff,
    ] {
        eprintln!("== {}", fault.describe());
        let f = run(fault).await;
        let b = base.as_ref().unwrap_or(&f);
        let row = format!(
            "| {} | {} ({}) | {} ({}) | {} ({}) | {} / {} / {} ({} p99) | {} | {} | {} / {} | {} ({} acked, {} ambiguous, counter {}) |\n",
            f.name,
            ms(f.lock_stall),
            ratio(f.lock_stall, b.lock_stall),
            ms(f.write_stall),
            ratio(f.write_stall, b.write_stall),
            ms(f.watch_stall),
            ratio(f.watch_stall, b.watch_stall),
            ms(pct(&f.delays, 0.5)),
            ms(pct(&f.delays, 0.99)),
            ms(pct(&f.delays, 1.0)),
            ratio(pct(&f.delays, 0.99), pct(&b.delays, 0.99)),
            f.sessions_lost,
            ms(f.registration_missing),
            f.writes_acked,
            f.writes_never_watched,
            if f.fenced_ok() { "ok" } else { "VIOLATED" },
            f.fenced_acked,
            f.fenced_ambiguous,
            f.counter,
        );
        eprint!("{row}");
        out.push_str(&row);
        errors.push_str(&format!(
            "- {} ({:.0} s): {}\n",
            f.name,
            f.window.as_secs_f64(),
            if f.errors.is_empty() {
                "none".to_string()
            } else {
                f.errors
                    .iter()
                    .map(|(k, n)| format!("{k} ×{n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ));
        if base.is_none() {
            base = Some(f);
        }
    }
    out.push_str("\nErrors surfaced to callers, by call and kind:\n\n");
    out.push_str(&errors);
    eprintln!("== 10,000 watches and one stalled consumer");
    let c = crowd().await;
    out.push_str(&format!(
        "\n## {} watches, one consumer not reading for {} s\n\n",
        c.watches,
        secs_env("COORD_CHAOS_STALL_SECS", 60).as_secs()
    ));
    out.push_str("| | before the stall | during the stall | ratio |\n|---|---|---|---|\n");
    for (label, p) in [("p50", 0.5), ("p99", 0.99), ("max", 1.0)] {
        let (x, y) = (pct(&c.before, p), pct(&c.during, p));
        out.push_str(&format!(
            "| other watches' delivery delay {label} | {} | {} | {} |\n",
            ms(x),
            ms(y),
            ratio(y, x)
        ));
    }
    out.push_str(&format!(
        "| events delivered to the other watches | {} | {} | |\n",
        c.before.len(),
        c.during.len()
    ));
    out.push_str(&format!(
        "| process RSS | {} MiB | {} MiB (max) | ×{:.2} |\n",
        c.rss_before_kib / 1024,
        c.rss_during_kib / 1024,
        c.rss_during_kib as f64 / c.rss_before_kib.max(1) as f64
    ));
    out.push_str(&format!(
        "\nThe stalled consumer's watch was cut {} time(s); once it read again it got {} of the {} writes made while it did not read, in order: {}{}.\n",
        c.stalls,
        c.hot_delivered,
        c.hot_acked,
        c.hot_in_order,
        if c.hot_compacted {
            " (then `Compacted`)"
        } else {
            ""
        }
    ));
    let path = report_path();
    std::fs::write(&path, &out).expect("write the report");
    println!("{out}");
    eprintln!("report written to {}", path.display());
}
