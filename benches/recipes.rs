//! The recipes against etcd, each with a baseline from the same run: semaphore
//! handoffs against the semaphore's own uncontended rate, a 90/10 read-write mix
//! against a plain lock, counter increments against raw compare-and-set, and many
//! distinct lock names against raw claim transactions.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use coordkit::Coordinator;
use etcd_client::{Compare, CompareOp, Txn, TxnOp};

use crate::etcd::{raw_claim, Env, Sizes};
use crate::handoffs::Handoffs;
use crate::measure::{Row, Samples, Target};

const TTL: Duration = Duration::from_secs(60);

pub(crate) async fn run(env: &Env, sizes: &Sizes) -> Vec<Row> {
    let mut rows = semaphores(env, sizes).await;
    rows.push(rw_mix(env, sizes).await);
    rows.push(counter_increments(env, sizes).await);
    rows.push(many_names(env, sizes).await);
    rows.push(failover(env, sizes).await);
    rows
}

/// The semaphore rows alone (`COORD_BENCH_ONLY=semaphores`).
pub(crate) async fn semaphores(env: &Env, sizes: &Sizes) -> Vec<Row> {
    let mut rows = semaphore_rows(env, sizes, 2, &sizes.contenders).await;
    // One permit: the lock's exclusion with the semaphore's waiting (a watch of
    // the `permits` keys nearest before its own, admission by their permits).
    rows.extend(semaphore_rows(env, sizes, 1, &sizes.contenders).await);
    rows
}

/// A semaphore of `permits` at each number of contenders, against the same
/// semaphore with one contender, measured around each row (see
/// [`crate::handoffs`]).
async fn semaphore_rows(env: &Env, sizes: &Sizes, permits: u32, contenders: &[usize]) -> Vec<Row> {
    let mut rows = Vec::new();
    for &c in contenders {
        let m = semaphore_handoffs(env, sizes, c, permits, &format!("p{permits}-{c}")).await;
        let plural = if permits == 1 { "permit" } else { "permits" };
        rows.push(
            Row::new(
                format!("semaphore ({permits} {plural}) acquire+release, {c} contenders"),
                m.contended.clone(),
                Target::Handoffs {
                    of_uncontended: 0.9,
                    share: m.share(),
                },
            )
            .against(
                "the same semaphore, 1 contender, around this row",
                m.alone.clone(),
            )
            .note(format!(
                "{:.0}% of its uncontended rate; {}; alone: {}",
                m.share() * 100.0,
                m.cpu,
                m.alone_cpu
            )),
        );
    }
    rows
}

/// The environment variable that makes the bench binary a lock holder:
/// `<endpoints>|<namespace>|<lock name>|<ttl seconds>`.
pub const HOLD_ENV: &str = "COORD_BENCH_HOLD";

/// Child mode: take the lock, say `held`, and hold it until killed.
pub fn hold_until_killed(spec: &str) {
    let parts: Vec<&str> = spec.split('|').collect();
    let [endpoints, namespace, name, ttl] = parts[..] else {
        panic!("{HOLD_ENV} must be endpoints|namespace|name|ttl, got {spec:?}");
    };
    let ttl = Duration::from_secs(ttl.parse().expect("ttl seconds"));
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let backend = coordkit_etcd::EtcdBackend::connect(
            coordkit_etcd::EtcdConfig::from_endpoint_list(endpoints),
        )
        .await
        .expect("etcd");
        let c = coordkit::Coordinator::builder(Arc::new(backend))
            .namespace(namespace)
            .build()
            .expect("coordinator");
        let guard = c.lock().acquire(name, ttl).await.expect("acquire");
        println!("held {}", guard.fencing_token());
        std::future::pending::<()>().await;
    });
}

/// Read the child's first line of output (blocking, off the runtime).
async fn first_line(stdout: std::process::ChildStdout) -> String {
    tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let mut line = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        line
    })
    .await
    .expect("reader")
}

/// Failover: a holder in a child process is SIGKILLed while a waiter is
/// queued; the time from the kill until the waiter holds, with a 2 s TTL, for
/// coordkit and for etcd's lock service (`etcdctl lock --ttl 2` as the holder).
async fn failover(env: &Env, sizes: &Sizes) -> Row {
    const TTL_SECS: u64 = 2;
    let ttl = Duration::from_secs(TTL_SECS);
    let endpoints = env.endpoints.join(",");
    let mut coord = Vec::new();
    let mut service = Vec::new();
    for run in 0..sizes.failovers {
        // coordkit: the child holds, a waiter queues, the child dies.
        let name = format!("failover{run}");
        let mut child = std::process::Command::new(std::env::current_exe().expect("exe"))
            .env(
                HOLD_ENV,
                format!("{endpoints}|{}|{name}|{TTL_SECS}", env.ns),
            )
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("child");
        let line = first_line(child.stdout.take().expect("stdout")).await;
        assert!(
            line.starts_with("held"),
            "the child did not take the lock: {line:?}"
        );
        let waiter = env.coordinator().await;
        let queued = {
            let (waiter, name) = (waiter.clone(), name.clone());
            tokio::spawn(async move {
                let g = waiter.lock().acquire(&name, ttl).await.expect("acquire");
                let at = Instant::now();
                g.unlock().await.expect("unlock");
                at
            })
        };
        while waiter
            .lock()
            .holders_and_waiters(&name)
            .await
            .expect("queue")
            .len()
            < 2
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let killed = Instant::now();
        child.kill().expect("kill");
        let _ = child.wait();
        coord.push(queued.await.expect("waiter") - killed);
        waiter.close().await.ok();

        // etcd's lock service: etcdctl holds, a raw client waits.
        let lock = format!("{}etcd-failover/{run}", env.ns);
        let mut child = std::process::Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args([
                "--endpoints",
                &endpoints,
                "lock",
                "--ttl",
                &TTL_SECS.to_string(),
                &lock,
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("etcdctl");
        let line = first_line(child.stdout.take().expect("stdout")).await;
        assert!(
            line.starts_with(&lock),
            "etcdctl did not take the lock: {line:?}"
        );
        let mut raw = env.raw().await;
        let lease = raw.lease_grant(60, None).await.expect("lease").id();
        let queued = {
            let (mut raw, lock) = (raw.clone(), lock.clone());
            tokio::spawn(async move {
                let k = raw
                    .lock(
                        lock,
                        Some(etcd_client::LockOptions::new().with_lease(lease)),
                    )
                    .await
                    .expect("lock");
                let at = Instant::now();
                raw.unlock(k.key().to_vec()).await.expect("unlock");
                at
            })
        };
        loop {
            let n = raw
                .get(
                    format!("{lock}/"),
                    Some(
                        etcd_client::GetOptions::new()
                            .with_prefix()
                            .with_count_only(),
                    ),
                )
                .await
                .expect("count")
                .count();
            if n >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let killed = Instant::now();
        child.kill().expect("kill");
        let _ = child.wait();
        service.push(queued.await.expect("waiter") - killed);
        let _ = raw.lease_revoke(lease).await;
    }
    let elapsed = |v: &Vec<Duration>| v.iter().sum();
    let (ce, se) = (elapsed(&coord), elapsed(&service));
    Row::new(
        format!("failover: holder SIGKILLed until the waiter holds (TTL {TTL_SECS} s)"),
        Samples::new(coord, ce),
        Target::ReportLatency,
    )
    .against(
        format!("etcd lock service (etcdctl lock --ttl {TTL_SECS} killed)"),
        Samples::new(service, se),
    )
}

/// `contenders` coordinators (own connections, sessions granted beforehand)
/// each running `op` (given its coordinator and a per-task count) until the
/// contention window ends: the total rate of completed ops.
async fn contend<F, Fut>(env: &Env, sizes: &Sizes, contenders: usize, op: F) -> Samples
where
    F: Fn(Coordinator, usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let mut coordinators = Vec::new();
    for _ in 0..contenders {
        let c = env.coordinator().await;
        c.session(TTL).await.expect("session");
        coordinators.push(c);
    }
    let count = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + sizes.contention;
    let mut tasks = Vec::new();
    for (i, c) in coordinators.iter().enumerate() {
        let (c, count, op) = (c.clone(), count.clone(), op.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = i;
            while Instant::now() < deadline {
                n += 1;
                op(c.clone(), n).await;
                count.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.expect("contender");
    }
    let ops = count.load(Ordering::Relaxed);
    let rate = Samples::rate(ops, start.elapsed());
    for c in coordinators {
        c.close().await.ok();
    }
    rate
}

/// Acquire+release of a `permits`-permit semaphore by `contenders` coordinators,
/// and by the first of them alone, in alternating phases.
async fn semaphore_handoffs(
    env: &Env,
    sizes: &Sizes,
    contenders: usize,
    permits: u32,
    name: &str,
) -> Handoffs {
    let mut coordinators = Vec::new();
    for _ in 0..contenders {
        let c = env.coordinator().await;
        c.session(TTL).await.expect("session");
        coordinators.push(c);
    }
    let name = name.to_string();
    let measured = crate::handoffs::measure(&coordinators, sizes.handoff_window, move |c| {
        let name = name.clone();
        async move {
            let p = c
                .semaphore()
                .acquire(&name, permits, TTL)
                .await
                .expect("acquire");
            p.unlock().await.expect("release");
        }
    })
    .await;
    for c in coordinators {
        c.close().await.ok();
    }
    measured
}

/// 4 coordinators, each op a read hold 9 times in 10 and a write hold else,
/// against the same ops all taking a plain lock.
async fn rw_mix(env: &Env, sizes: &Sizes) -> Row {
    let window = |rw: bool| {
        contend(env, sizes, 4, move |c, n| async move {
            let guard = if !rw {
                c.lock().acquire("mix", TTL).await
            } else if n % 10 == 0 {
                c.rw_lock().write("mix", TTL).await
            } else {
                c.rw_lock().read("mix", TTL).await
            };
            guard.expect("hold").unlock().await.expect("release");
        })
    };
    let rw = window(true).await;
    let plain = window(false).await;
    Row::new(
        "read-write lock, 90% reads / 10% writes, 4 contenders",
        rw,
        Target::Report,
    )
    .against("a plain lock, same ops", plain)
}

/// 4 tasks incrementing one counter for the window, against 4 tasks doing the
/// same with raw etcd-client (get, then a compare-and-set on the mod revision).
async fn counter_increments(env: &Env, sizes: &Sizes) -> Row {
    let counted = {
        let c = env.coordinator().await;
        let count = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let deadline = start + sizes.contention;
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let (c, count) = (c.clone(), count.clone());
                tokio::spawn(async move {
                    while Instant::now() < deadline {
                        c.counter().add("bench", 1).await.expect("add");
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("adder");
        }
        c.close().await.ok();
        Samples::rate(count.load(Ordering::Relaxed), start.elapsed())
    };
    let raw_rate = {
        let raw = env.raw().await;
        let key = format!("{}raw-counter", env.ns);
        let count = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let deadline = start + sizes.contention;
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let (mut raw, count, key) = (raw.clone(), count.clone(), key.clone());
                tokio::spawn(async move {
                    while Instant::now() < deadline {
                        loop {
                            let r = raw.get(key.as_str(), None).await.expect("get");
                            let (n, rev) = r.kvs().first().map_or((0i64, 0), |kv| {
                                (
                                    std::str::from_utf8(kv.value())
                                        .ok()
                                        .and_then(|s| s.parse().ok())
                                        .unwrap_or(0),
                                    kv.mod_revision(),
                                )
                            });
                            let cas = Txn::new()
                                .when([Compare::mod_revision(key.as_str(), CompareOp::Equal, rev)])
                                .and_then([TxnOp::put(key.as_str(), (n + 1).to_string(), None)]);
                            if raw.txn(cas).await.expect("cas").succeeded() {
                                break;
                            }
                        }
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("adder");
        }
        Samples::rate(count.load(Ordering::Relaxed), start.elapsed())
    };
    Row::new("counter increments, 4 tasks", counted, Target::Report)
        .against("raw etcd-client get + compare-and-set, 4 tasks", raw_rate)
}

/// `names` distinct locks acquired and released once each by 64 tasks (each task
/// takes every 64th name), against the same with raw claim and guarded unlock
/// transactions on one lease.
async fn many_names(env: &Env, sizes: &Sizes) -> Row {
    let names = sizes.locks.clamp(64, 1_000);
    let coord = {
        let c = env.coordinator().await;
        c.session(TTL).await.expect("session");
        let start = Instant::now();
        let tasks: Vec<_> = (0..64)
            .map(|t| {
                let c = c.clone();
                tokio::spawn(async move {
                    for i in (t..names).step_by(64) {
                        let g = c
                            .lock()
                            .acquire(&format!("n{i}"), TTL)
                            .await
                            .expect("acquire");
                        g.unlock().await.expect("unlock");
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("task");
        }
        let rate = Samples::rate(names as u64, start.elapsed());
        c.close().await.ok();
        rate
    };
    let raw_rate = {
        let raw = env.raw().await;
        let lease = raw.clone().lease_grant(60, None).await.expect("lease").id();
        let start = Instant::now();
        let tasks: Vec<_> = (0..64)
            .map(|t| {
                let (mut raw, ns) = (raw.clone(), env_ns(env));
                tokio::spawn(async move {
                    for i in (t..names).step_by(64) {
                        let queue = format!("{ns}raw-names/n{i}/");
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
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("task");
        }
        let rate = Samples::rate(names as u64, start.elapsed());
        let _ = raw.clone().lease_revoke(lease).await;
        rate
    };
    Row::new(
        format!("{names} distinct locks, acquire+release by 64 tasks"),
        coord,
        Target::Report,
    )
    .against("raw claim + guarded unlock txns, same names", raw_rate)
}

fn env_ns(env: &Env) -> String {
    env.ns.clone()
}
