//! Figures against etcd, each paired with a baseline measured in the same run on
//! the same etcd: raw etcd-client calls doing the same work, and for locks etcd's
//! own lock service (`Client::lock` / `unlock` with a pre-granted lease).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use coordkit::{Coordinator, ServiceInfo};
use coordkit_etcd::{EtcdBackend, EtcdConfig};
use etcd_client::{
    Client, Compare, CompareOp, GetOptions, LockOptions, PutOptions, SortOrder, SortTarget, Txn,
    TxnOp,
};
use futures::StreamExt;
use serde_json::json;

use crate::measure::{sequential_sync, CpuMeter, Row, Samples, Target};

/// Sizes of one run (smaller for the smoke run under `cargo test`).
pub struct Sizes {
    pub sequential: usize,
    pub locks: usize,
    pub contention: Duration,
    /// The window of a contended-handoff row, split into alternating phases
    /// (see `handoffs`). Longer than `contention`: the share compares phases of
    /// one row, and the host's speed drifts by 15–30% within seconds.
    pub handoff_window: Duration,
    pub contenders: Vec<usize>,
    pub concurrent_sets: usize,
    pub propagation: usize,
    pub instances_reads: usize,
    pub current_reads: usize,
    /// Holders killed per side in the failover benchmark.
    pub failovers: usize,
}

pub(crate) struct Env {
    config: EtcdConfig,
    pub(crate) endpoints: Vec<String>,
    pub(crate) ns: String,
}

impl Env {
    pub(crate) async fn backend(&self) -> Arc<EtcdBackend> {
        Arc::new(
            EtcdBackend::connect(self.config.clone())
                .await
                .expect("etcd"),
        )
    }

    pub(crate) async fn coordinator(&self) -> Coordinator {
        Coordinator::builder(self.backend().await)
            .namespace(self.ns.clone())
            .build()
            .expect("coordinator")
    }

    pub(crate) async fn raw(&self) -> Client {
        Client::connect(self.endpoints.clone(), None)
            .await
            .expect("etcd")
    }
}

/// Run `a` and `b` one after the other, `n` times each, op by op and taking turns
/// to go first, so that drift and background load hit both alike. Each side's
/// rate is over its own busy time.
pub(crate) async fn paired<A, B, FA, FB>(n: usize, mut a: A, mut b: B) -> (Samples, Samples)
where
    A: FnMut(usize) -> FA,
    B: FnMut(usize) -> FB,
    FA: std::future::Future<Output = ()>,
    FB: std::future::Future<Output = ()>,
{
    let (mut la, mut lb) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n {
        // Alternate who goes first, so neither always follows the other.
        if i % 2 == 1 {
            let t = Instant::now();
            b(i).await;
            lb.push(t.elapsed());
        }
        let t = Instant::now();
        a(i).await;
        la.push(t.elapsed());
        if i % 2 == 0 {
            let t = Instant::now();
            b(i).await;
            lb.push(t.elapsed());
        }
    }
    let (ea, eb): (Duration, Duration) = (la.iter().sum(), lb.iter().sum());
    (Samples::new(la, ea), Samples::new(lb, eb))
}

fn merge(x: Samples, y: Samples) -> Samples {
    let elapsed = x.elapsed + y.elapsed;
    let mut latencies = x.latencies().to_vec();
    latencies.extend_from_slice(y.latencies());
    if latencies.is_empty() {
        Samples::rate(x.ops + y.ops, elapsed)
    } else {
        Samples::new(latencies, elapsed)
    }
}

pub async fn run(endpoints: &[String], sizes: &Sizes) -> Vec<Row> {
    let mut config = EtcdConfig::with_endpoints(endpoints.iter().cloned());
    config.request_timeout = Duration::from_secs(30);
    let env = Env {
        config,
        endpoints: endpoints.to_vec(),
        ns: format!("bench-{}-{}/", std::process::id(), now_nanos()),
    };
    // COORD_BENCH_ONLY=locks,recipes,config,watch,reads runs only those groups
    // (semaphores: the recipes' semaphore rows alone).
    let only = std::env::var("COORD_BENCH_ONLY").unwrap_or_default();
    let wanted = |group: &str| only.is_empty() || only.split(',').any(|g| g.trim() == group);
    let mut rows = Vec::new();
    if wanted("locks") {
        let uncontended = locks_uncontended(&env, sizes).await;
        let own_rate = uncontended.first().map_or(0.0, |r| r.coord.per_second());
        rows.extend(uncontended);
        for &c in &sizes.contenders {
            rows.push(lock_handoffs(&env, sizes, c, own_rate).await);
        }
    }
    if wanted("recipes") {
        rows.extend(crate::recipes::run(&env, sizes).await);
    } else if wanted("semaphores") {
        rows.extend(crate::recipes::semaphores(&env, sizes).await);
    }
    if wanted("config") {
        rows.extend(config_sequential(&env, sizes).await);
        rows.push(config_concurrent_sets(&env, sizes).await);
    }
    if wanted("watch") {
        rows.push(watch_propagation(&env, sizes).await);
    }
    if wanted("reads") {
        rows.push(cache_reads(&env, sizes).await);
        rows.push(manager_reads(&env, sizes).await);
    }
    let _ = env
        .raw()
        .await
        .delete(
            env.ns.clone(),
            Some(etcd_client::DeleteOptions::new().with_prefix()),
        )
        .await;
    rows
}

fn now_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// One measured operation of [`interleaved`].
type Op<'a> = Box<dyn FnMut() -> futures::future::BoxFuture<'static, ()> + 'a>;

/// Run every op `n` times, op by op, starting each round with the next one, so
/// that drift, background load and "who went just before" hit all alike. Each
/// op's rate is over its own busy time.
async fn interleaved(n: usize, ops: &mut [Op<'_>]) -> Vec<Samples> {
    let k = ops.len();
    let mut latencies = vec![Vec::with_capacity(n); k];
    for round in 0..n {
        for j in 0..k {
            let which = (round + j) % k;
            let t = Instant::now();
            (ops[which])().await;
            latencies[which].push(t.elapsed());
        }
    }
    latencies
        .into_iter()
        .map(|l| {
            let busy = l.iter().sum();
            Samples::new(l, busy)
        })
        .collect()
}

/// coordkit's calls for one uncontended acquire, made with raw etcd-client: create
/// the key if absent and read the two newest keys of the queue, in one txn.
/// Returns the key's create revision.
pub(crate) async fn raw_claim(raw: &mut Client, queue: &str, key: &str, lease: i64) -> i64 {
    let newest = GetOptions::new()
        .with_prefix()
        .with_sort(SortTarget::Create, SortOrder::Descend)
        .with_limit(2);
    let owner = GetOptions::new()
        .with_prefix()
        .with_sort(SortTarget::Create, SortOrder::Ascend)
        .with_limit(1);
    let claim = Txn::new()
        .when([Compare::create_revision(key, CompareOp::Equal, 0)])
        .and_then([
            TxnOp::put(key, "", Some(PutOptions::new().with_lease(lease))),
            TxnOp::get(queue, Some(newest)),
        ])
        .or_else([TxnOp::get(key, None), TxnOp::get(queue, Some(owner))]);
    let r = raw.txn(claim).await.expect("claim");
    assert!(r.succeeded(), "the raw claim found its key present");
    r.header().expect("header").revision()
}

/// coordkit's uncontended acquire+release, interleaved with three baselines on the
/// same etcd: etcd's lock service (the target's baseline), coordkit's own calls made
/// with raw etcd-client (claim txn, then the unlock guarded by the create revision:
/// the floor for any client that keeps the unlock guarded), and the same claim
/// with the lock service's unguarded unlock, a plain `Delete` (what the guard
/// costs).
async fn locks_uncontended(env: &Env, sizes: &Sizes) -> Vec<Row> {
    let coordinator = env.coordinator().await;
    let ttl = Duration::from_secs(60);
    let raw = env.raw().await;
    let lease = raw.clone().lease_grant(60, None).await.expect("lease").id();
    let service_name = format!("{}etcd-lock/u", env.ns);
    let guarded_queue = format!("{}raw-lock/u/", env.ns);
    let plain_queue = format!("{}raw-plain-lock/u/", env.ns);
    let mut ops: Vec<Op<'_>> = vec![
        Box::new(|| {
            let coordinator = coordinator.clone();
            Box::pin(async move {
                let g = coordinator.lock().acquire("u", ttl).await.expect("acquire");
                g.unlock().await.expect("unlock");
            })
        }),
        Box::new(|| {
            let (mut raw, name) = (raw.clone(), service_name.clone());
            Box::pin(async move {
                let k = raw
                    .lock(name, Some(LockOptions::new().with_lease(lease)))
                    .await
                    .expect("lock");
                raw.unlock(k.key().to_vec()).await.expect("unlock");
            })
        }),
        Box::new(|| {
            let (mut raw, queue) = (raw.clone(), guarded_queue.clone());
            Box::pin(async move {
                let key = format!("{queue}{lease:x}");
                let token = raw_claim(&mut raw, &queue, &key, lease).await;
                let unlock = Txn::new()
                    .when([Compare::create_revision(
                        key.as_str(),
                        CompareOp::Equal,
                        token,
                    )])
                    .and_then([TxnOp::delete(key.as_str(), None)]);
                assert!(raw.txn(unlock).await.expect("unlock").succeeded());
            })
        }),
        Box::new(|| {
            let (mut raw, queue) = (raw.clone(), plain_queue.clone());
            Box::pin(async move {
                let key = format!("{queue}{lease:x}");
                raw_claim(&mut raw, &queue, &key, lease).await;
                raw.delete(key, None).await.expect("unlock");
            })
        }),
    ];
    // Warm every path (session grant, connections).
    interleaved(3, &mut ops).await;
    let mut samples = interleaved(sizes.locks, &mut ops).await.into_iter();
    let mut next = || samples.next().unwrap_or_default();
    let (coord, service, guarded, plain) = (next(), next(), next(), next());
    // CPU per uncontended acquire+release, coord alone (the interleaved run mixes
    // in the baselines).
    let alone = (sizes.locks / 4).max(1);
    let mut cpu = CpuMeter::start();
    for _ in 0..alone {
        let g = coordinator.lock().acquire("u", ttl).await.expect("acquire");
        g.unlock().await.expect("unlock");
    }
    let cpu = cpu.per_op(alone as u64);
    // The same for coord's calls made with raw etcd-client.
    let mut raw_cpu = CpuMeter::start();
    for _ in 0..alone {
        (ops[2])().await;
    }
    let raw_cpu = raw_cpu.per_op(alone as u64);
    drop(ops);
    coordinator.close().await.ok();
    let _ = raw.clone().lease_revoke(lease).await;
    let vs_service = |s: &Samples| s.per_second() / service.per_second();
    let (guarded_floor, plain_floor) = (vs_service(&guarded), vs_service(&plain));
    vec![
        Row::new(
            "lock acquire+release, uncontended",
            coord.clone(),
            Target::RateAtLeast(1.0),
        )
        .note(cpu)
        .against("etcd lock service, same lease", service),
        Row::new(
            "lock acquire+release, uncontended",
            coord.clone(),
            Target::Report,
        )
        .note(format!(
            "these calls alone run at {guarded_floor:.2}× the lock service; {raw_cpu}"
        ))
        .against(
            "raw etcd-client, coord's calls (claim txn, unlock txn guarded by the create revision)",
            guarded,
        ),
        Row::new("lock acquire+release, uncontended", coord, Target::Report)
            .note(format!(
                "with the unguarded unlock: {plain_floor:.2}× the lock service"
            ))
            .against(
                "raw etcd-client, coord's claim txn, then the lock service's plain Delete",
                plain,
            ),
    ]
}

async fn lock_handoffs(env: &Env, sizes: &Sizes, contenders: usize, own_rate: f64) -> Row {
    let name = format!("h{contenders}");
    let ttl = Duration::from_secs(60);
    // coord: one coordinator (own connection) per contender.
    let mut coordinators = Vec::new();
    for _ in 0..contenders {
        let c = env.coordinator().await;
        c.session(ttl).await.expect("session");
        coordinators.push(c);
    }
    // coord's own uncontended rate around this row: the first contender alone,
    // in phases before, between and after the contended ones.
    let op_name = name.clone();
    let measured = crate::handoffs::measure(&coordinators, sizes.handoff_window, move |c| {
        let name = op_name.clone();
        async move {
            let g = c.lock().acquire(&name, ttl).await.expect("acquire");
            g.unlock().await.expect("unlock");
        }
    })
    .await;
    for c in coordinators {
        c.close().await.ok();
    }

    // Baseline: etcd's lock service, one client and lease per contender.
    let key = format!("{}etcd-lock/{name}", env.ns);
    let mut clients = Vec::new();
    for _ in 0..contenders {
        let mut raw = env.raw().await;
        let lease = raw.lease_grant(60, None).await.expect("lease").id();
        clients.push((raw, lease));
    }
    let count = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + sizes.contention;
    let mut tasks = Vec::new();
    for (raw, lease) in &clients {
        let (mut raw, lease, count, key) = (raw.clone(), *lease, count.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let k = raw
                    .lock(key.clone(), Some(LockOptions::new().with_lease(lease)))
                    .await
                    .expect("lock");
                count.fetch_add(1, Ordering::Relaxed);
                raw.unlock(k.key().to_vec()).await.expect("unlock");
            }
        }));
    }
    for t in tasks {
        t.await.expect("contender");
    }
    let base = Samples::rate(count.load(Ordering::Relaxed), start.elapsed());
    for (mut raw, lease) in clients {
        let _ = raw.lease_revoke(lease).await;
    }
    let share = measured.share();
    Row::new(
        format!("lock handoffs, {contenders} contenders"),
        measured.contended.clone(),
        Target::Handoffs {
            of_uncontended: 0.9,
            share,
        },
    )
    .against("etcd lock service, same contention", base)
    .note(format!(
        "{:.0}% of coord's uncontended rate around this row, {:.0}/s; {:.0}% of the uncontended row's; {}; alone: {}",
        share * 100.0,
        measured.alone.per_second(),
        measured.contended.per_second() / own_rate * 100.0,
        measured.cpu,
        measured.alone_cpu,
    ))
}

async fn config_sequential(env: &Env, sizes: &Sizes) -> Vec<Row> {
    let coordinator = env.coordinator().await;
    let config = coordinator.config();
    let mut raw = env.raw().await;
    let value =
        json!({"url": "postgres://db.internal:5432/orders", "pool": 32, "timeout_ms": 2500});
    let bytes = serde_json::to_vec(&value).expect("json");
    let raw_key = format!("{}raw/cfg", env.ns);
    config.set("cfg", &value).await.expect("set");
    raw.put(raw_key.clone(), bytes.clone(), None)
        .await
        .expect("put");
    let (set, put) = paired(
        sizes.sequential,
        |_| {
            let (config, value) = (config.clone(), value.clone());
            async move {
                config.set("cfg", &value).await.expect("set");
            }
        },
        |_| {
            let (mut raw, key, bytes) = (raw.clone(), raw_key.clone(), bytes.clone());
            async move {
                raw.put(key, bytes, None).await.expect("put");
            }
        },
    )
    .await;
    let (get, raw_get) = paired(
        sizes.sequential,
        |_| {
            let config = config.clone();
            async move {
                config.get::<serde_json::Value>("cfg").await.expect("get");
            }
        },
        |_| {
            let (mut raw, key) = (raw.clone(), raw_key.clone());
            async move {
                raw.get(key, None).await.expect("get");
            }
        },
    )
    .await;
    // A control: raw get against itself. Its p99 ratio is the noise of the p99
    // ratios above in this run (etcd's periodic stalls land on either side).
    let (control, raw_get_again) = paired(
        sizes.sequential,
        |_| {
            let (mut raw, key) = (raw.clone(), raw_key.clone());
            async move {
                raw.get(key, None).await.expect("get");
            }
        },
        |_| {
            let (mut raw, key) = (raw.clone(), raw_key.clone());
            async move {
                raw.get(key, None).await.expect("get");
            }
        },
    )
    .await;
    coordinator.close().await.ok();
    let p99 = |s: &Samples| s.quantile(0.99).unwrap_or_default().as_secs_f64();
    let control_p99 = p99(&control) / p99(&raw_get_again).max(f64::MIN_POSITIVE);
    vec![
        Row::new("config get, sequential", get, Target::LatencyAtMost(1.1))
            .against("raw get", raw_get),
        Row::new(
            "control: raw get against itself, the noise of a p99 ratio in this run",
            control,
            Target::Report,
        )
        .note(format!("p99 ratio {control_p99:.2}×"))
        .against("raw get", raw_get_again),
        Row::new("config set, sequential", set, Target::LatencyAtMost(1.1)).against("raw put", put),
    ]
}

async fn config_concurrent_sets(env: &Env, sizes: &Sizes) -> Row {
    const TASKS: usize = 64;
    let per_task = (sizes.concurrent_sets / TASKS).max(1);
    let coordinator = env.coordinator().await;
    let config = coordinator.config();
    let raw = env.raw().await;
    let value = json!({"pool": 32, "timeout_ms": 2500});
    let bytes = serde_json::to_vec(&value).expect("json");
    let mut coord_total = Samples::default();
    let mut raw_total = Samples::default();
    for _round in 0..2 {
        let start = Instant::now();
        let tasks: Vec<_> = (0..TASKS)
            .map(|t| {
                let (config, value) = (config.clone(), value.clone());
                tokio::spawn(async move {
                    for _ in 0..per_task {
                        config.set(&format!("t/{t}"), &value).await.expect("set");
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("task");
        }
        coord_total = merge(
            coord_total,
            Samples::rate((TASKS * per_task) as u64, start.elapsed()),
        );
        let start = Instant::now();
        let tasks: Vec<_> = (0..TASKS)
            .map(|t| {
                let (mut raw, bytes, key) =
                    (raw.clone(), bytes.clone(), format!("{}raw/t/{t}", env.ns));
                tokio::spawn(async move {
                    for _ in 0..per_task {
                        raw.put(key.clone(), bytes.clone(), None)
                            .await
                            .expect("put");
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("task");
        }
        raw_total = merge(
            raw_total,
            Samples::rate((TASKS * per_task) as u64, start.elapsed()),
        );
    }
    coordinator.close().await.ok();
    Row::new(
        "config set throughput, 64 tasks",
        coord_total,
        Target::RateAtLeast(0.9),
    )
    .against("raw put, 64 tasks", raw_total)
}

async fn watch_propagation(env: &Env, sizes: &Sizes) -> Row {
    let coordinator = env.coordinator().await;
    let config = coordinator.config();
    let mut watcher = config.watch::<serde_json::Value>("w").await.expect("watch");
    let mut raw = env.raw().await;
    let raw_key = format!("{}raw/w", env.ns);
    let mut raw_watch = raw.watch(raw_key.clone(), None).await.expect("watch");
    let (mut coord, mut base) = (Vec::new(), Vec::new());
    // Op by op, taking turns to go first, so both see the same conditions.
    for i in 0..sizes.propagation {
        for side in [i % 2, 1 - i % 2] {
            let t = Instant::now();
            if side == 0 {
                config.set("w", &i).await.expect("set");
                watcher.next().await.expect("open").expect("event");
                coord.push(t.elapsed());
            } else {
                raw.put(raw_key.clone(), i.to_string(), None)
                    .await
                    .expect("put");
                loop {
                    let resp = raw_watch.message().await.expect("watch").expect("open");
                    if !resp.events().is_empty() {
                        break;
                    }
                }
                base.push(t.elapsed());
            }
        }
    }
    let (coord_time, base_time): (Duration, Duration) = (coord.iter().sum(), base.iter().sum());
    coordinator.close().await.ok();
    Row::new(
        "watch propagation, set → watcher receives",
        Samples::new(coord, coord_time),
        Target::LatencyAtMost(1.2),
    )
    .against("raw put → raw watch event", Samples::new(base, base_time))
}

async fn cache_reads(env: &Env, sizes: &Sizes) -> Row {
    let coordinator = env.coordinator().await;
    let mut registrations = Vec::new();
    for i in 0..100 {
        let info = ServiceInfo::new(format!("i-{i}"), "svc", "10.0.0.1", 8000 + i as u16);
        registrations.push(
            coordinator
                .registry()
                .register(info, Duration::from_secs(60))
                .await
                .expect("register"),
        );
    }
    let cache = coordinator.registry().cache("svc").await.expect("cache");
    assert_eq!(cache.instances().len(), 100);
    let mut total = 0usize;
    let reads = sequential_sync(sizes.instances_reads, |_| {
        total += std::hint::black_box(cache.instances()).len();
    });
    std::hint::black_box(total);
    coordinator.close().await.ok();
    Row::new(
        "discovery: ServiceCache::instances(), 100 instances",
        reads,
        Target::P99Below(Duration::from_micros(20)),
    )
}

async fn manager_reads(env: &Env, sizes: &Sizes) -> Row {
    let coordinator = env.coordinator().await;
    let config = coordinator.config();
    config
        .set("prod/app/pool", &json!({"size": 8}))
        .await
        .expect("set");
    let manager =
        coordkit::ConfigManager::builder(&config, "prod", "app", "pool", json!({"size": 1}))
            .start()
            .await
            .expect("manager");
    let reads = sequential_sync(sizes.current_reads, |_| {
        std::hint::black_box(manager.current());
    });
    manager.stop();
    coordinator.close().await.ok();
    Row::new(
        "ConfigManager::current()",
        reads,
        Target::P99Below(Duration::from_micros(1)),
    )
}
