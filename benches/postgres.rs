//! Figures on PostgreSQL, each beside a baseline measured in the same run on
//! the same server: raw SQL (tokio-postgres) doing the same work — a
//! versioned write under a row lock for a config set, a key read for a get,
//! LISTEN/NOTIFY for watch propagation, single-row upserts from 64
//! connections for write throughput, and Postgres's own advisory locks for
//! the lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use coordkit::{Backend, BackendExt, Coordinator};
use coordkit_postgres::{PostgresBackend, PostgresConfig};
use futures::StreamExt;
use serde_json::json;
use tokio_postgres::{AsyncMessage, Client, NoTls, Statement};

use crate::etcd::paired;
use crate::measure::{CpuMeter, Row, Samples, Target};

/// Sizes of one run (smaller for the smoke run under `cargo test`).
pub struct Sizes {
    pub sequential: usize,
    pub propagation: usize,
    pub locks: usize,
    pub handoff_window: std::time::Duration,
    pub contenders: Vec<usize>,
    pub writers: usize,
    pub write_window: std::time::Duration,
}

struct Env {
    url: String,
    schema: String,
    ns: String,
}

impl Env {
    async fn backend(&self, pool: usize) -> PostgresBackend {
        let config = PostgresConfig::new(self.url.clone())
            .with_schema(self.schema.clone())
            .with_pool_size(pool)
            .with_request_timeout(Duration::from_secs(30));
        PostgresBackend::connect(config).await.expect("postgres")
    }

    async fn coordinator(&self) -> Coordinator {
        Coordinator::builder(Arc::new(self.backend(2).await))
            .namespace(self.ns.clone())
            .build()
            .expect("coordinator")
    }

    async fn raw(&self) -> Client {
        let (client, connection) = tokio_postgres::connect(&self.url, NoTls)
            .await
            .expect("postgres");
        tokio::spawn(connection);
        client
    }
}

pub async fn run(url: &str, sizes: &Sizes) -> Vec<Row> {
    let stamp = std::process::id();
    let env = Env {
        url: url.to_string(),
        schema: format!("bench_{stamp}"),
        ns: format!("bench-{stamp}/"),
    };
    let raw = env.raw().await;
    raw.batch_execute(&format!(
        "CREATE SCHEMA raw_{stamp}; \
         CREATE TABLE raw_{stamp}.meta (revision bigint NOT NULL); \
         INSERT INTO raw_{stamp}.meta VALUES (1); \
         CREATE TABLE raw_{stamp}.kv (key bytea PRIMARY KEY, value bytea NOT NULL, \
             mod_revision bigint NOT NULL, version bigint NOT NULL)"
    ))
    .await
    .expect("raw tables");
    let only = std::env::var("COORD_BENCH_ONLY").unwrap_or_default();
    let wanted = |group: &str| only.is_empty() || only.split(',').any(|g| g.trim() == group);
    let mut rows = Vec::new();
    if wanted("config") {
        rows.extend(config_sequential(&env, sizes, stamp).await);
        rows.push(concurrent_writes(&env, sizes, stamp).await);
    }
    if wanted("watch") {
        rows.push(watch_propagation(&env, sizes).await);
    }
    if wanted("locks") {
        let uncontended = lock_uncontended(&env, sizes).await;
        rows.push(uncontended);
        for &c in &sizes.contenders {
            rows.push(lock_handoffs(&env, sizes, c).await);
        }
    }
    let _ = raw
        .batch_execute(&format!(
            "DROP SCHEMA raw_{stamp} CASCADE; DROP SCHEMA {} CASCADE",
            env.schema
        ))
        .await;
    rows
}

/// The statements of a versioned write, raw and prepared once: take the
/// next revision under the row lock, upsert the key with it, notify, commit.
struct RawSet {
    client: Client,
    revision: Statement,
    upsert: Statement,
    notify: Statement,
    get: Statement,
}

impl RawSet {
    async fn prepare(client: Client, stamp: u32) -> RawSet {
        let revision = client
            .prepare(&format!(
                "UPDATE raw_{stamp}.meta SET revision = revision + 1 RETURNING revision"
            ))
            .await
            .expect("prepare");
        let upsert = client
            .prepare(&format!(
                "INSERT INTO raw_{stamp}.kv VALUES ($1, $2, $3, 1) ON CONFLICT (key) DO UPDATE \
                 SET value = excluded.value, mod_revision = excluded.mod_revision, \
                     version = raw_{stamp}.kv.version + 1"
            ))
            .await
            .expect("prepare");
        let notify = client
            .prepare("SELECT pg_notify('raw_bench', $1)")
            .await
            .expect("prepare");
        let get = client
            .prepare(&format!("SELECT value FROM raw_{stamp}.kv WHERE key = $1"))
            .await
            .expect("prepare");
        RawSet {
            client,
            revision,
            upsert,
            notify,
            get,
        }
    }

    async fn set(&mut self, key: &[u8], value: &[u8]) {
        let tx = self.client.transaction().await.expect("begin");
        let rev: i64 = tx
            .query_one(&self.revision, &[])
            .await
            .expect("revision")
            .get(0);
        tx.execute(&self.upsert, &[&key, &value, &rev])
            .await
            .expect("upsert");
        tx.execute(&self.notify, &[&rev.to_string()])
            .await
            .expect("notify");
        tx.commit().await.expect("commit");
    }
}

async fn config_sequential(env: &Env, sizes: &Sizes, stamp: u32) -> Vec<Row> {
    let coordinator = env.coordinator().await;
    let config = coordinator.config();
    let raw = Arc::new(tokio::sync::Mutex::new(
        RawSet::prepare(env.raw().await, stamp).await,
    ));
    let value =
        json!({"url": "postgres://db.internal:5432/orders", "pool": 32, "timeout_ms": 2500});
    let bytes = serde_json::to_vec(&value).expect("json");
    config.set("cfg", &value).await.expect("set");
    raw.lock().await.set(b"cfg", &bytes).await;
    let (set, raw_set) = paired(
        sizes.sequential,
        |_| {
            let (config, value) = (config.clone(), value.clone());
            async move {
                config.set("cfg", &value).await.expect("set");
            }
        },
        |_| {
            let (raw, bytes) = (raw.clone(), bytes.clone());
            async move {
                raw.lock().await.set(b"cfg", &bytes).await;
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
            let raw = raw.clone();
            async move {
                let key: &[u8] = b"cfg";
                let raw = raw.lock().await;
                raw.client.query_opt(&raw.get, &[&key]).await.expect("get");
            }
        },
    )
    .await;
    coordinator.close().await.ok();
    vec![
        Row::new("postgres: config set", set, Target::Report)
            .against("raw SQL: revision row + upsert + notify", raw_set),
        Row::new("postgres: config get", get, Target::Report)
            .against("raw SQL: select by key", raw_get),
    ]
}

/// `writers` tasks writing distinct keys for the window: coordkit puts
/// through one handle whose pool has a connection per task, against as many
/// raw connections doing single-row upserts (each its own commit).
async fn concurrent_writes(env: &Env, sizes: &Sizes, stamp: u32) -> Row {
    let store: Arc<dyn Backend> = Arc::new(env.backend(sizes.writers).await);
    let coord = run_writers(sizes.writers, sizes.write_window, move |task, i| {
        let store = store.clone();
        async move {
            store
                .put(format!("w/{task}/{}", i % 64), "v")
                .await
                .expect("put");
        }
    })
    .await;
    let sql = format!(
        "INSERT INTO raw_{stamp}.kv VALUES ($1, 'v', 1, 1) ON CONFLICT (key) DO UPDATE \
         SET value = excluded.value"
    );
    let mut clients = Vec::new();
    for _ in 0..sizes.writers {
        let client = env.raw().await;
        let upsert = client.prepare(&sql).await.expect("prepare");
        clients.push(Arc::new((client, upsert)));
    }
    let clients = Arc::new(clients);
    let per_task = clients.clone();
    let base = run_writers(sizes.writers, sizes.write_window, move |task, i| {
        let raw = per_task[task].clone();
        async move {
            let key = format!("w/{task}/{}", i % 64).into_bytes();
            raw.0.execute(&raw.1, &[&key]).await.expect("upsert");
        }
    })
    .await;
    let settings = clients[0]
        .0
        .query_one(
            "SELECT current_setting('fsync'), current_setting('synchronous_commit')",
            &[],
        )
        .await
        .map(|r| {
            format!(
                "fsync={}, synchronous_commit={}",
                r.get::<_, String>(0),
                r.get::<_, String>(1)
            )
        })
        .unwrap_or_default();
    Row::new(
        format!("postgres: {}-task writes", sizes.writers),
        coord,
        Target::RateAtLeast(0.5),
    )
    .note(settings)
    .against(format!("raw upserts, {} connections", sizes.writers), base)
}

/// `tasks` tasks calling `op(task, i)` in a loop for `window`: the calls
/// finished and the time they took.
async fn run_writers<F, Fut>(tasks: usize, window: Duration, op: F) -> Samples
where
    F: Fn(usize, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let count = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + window;
    let handles: Vec<_> = (0..tasks)
        .map(|task| {
            let (count, op) = (count.clone(), op.clone());
            tokio::spawn(async move {
                let mut i = 0;
                while Instant::now() < deadline {
                    op(task, i).await;
                    i += 1;
                    count.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for h in handles {
        h.await.expect("writer");
    }
    Samples::rate(count.load(Ordering::Relaxed), start.elapsed())
}

async fn watch_propagation(env: &Env, sizes: &Sizes) -> Row {
    let coordinator = env.coordinator().await;
    let writer = env.coordinator().await;
    let mut watcher = coordinator
        .config()
        .watch::<serde_json::Value>("w")
        .await
        .expect("watch");
    let config = writer.config();
    // Raw: LISTEN on one connection, NOTIFY from another.
    let (listener, mut connection) = tokio_postgres::connect(&env.url, NoTls)
        .await
        .expect("postgres");
    let (tx, mut notes) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(m)) = messages.next().await {
            if let AsyncMessage::Notification(n) = m {
                let _ = tx.send(n);
            }
        }
    });
    listener
        .batch_execute("LISTEN raw_watch")
        .await
        .expect("listen");
    let notifier = env.raw().await;
    let (mut coord, mut base) = (Vec::new(), Vec::new());
    for i in 0..sizes.propagation {
        for side in [i % 2, 1 - i % 2] {
            let t = Instant::now();
            if side == 0 {
                config.set("w", &i).await.expect("set");
                watcher.next().await.expect("open").expect("event");
                coord.push(t.elapsed());
            } else {
                notifier
                    .execute("SELECT pg_notify('raw_watch', $1)", &[&i.to_string()])
                    .await
                    .expect("notify");
                notes.recv().await.expect("notification");
                base.push(t.elapsed());
            }
        }
    }
    let (coord_time, base_time): (Duration, Duration) = (coord.iter().sum(), base.iter().sum());
    coordinator.close().await.ok();
    writer.close().await.ok();
    Row::new(
        "postgres: watch propagation, set → watcher receives",
        Samples::new(coord, coord_time),
        Target::P99Below(Duration::from_secs(1)),
    )
    .against("raw NOTIFY → LISTEN", Samples::new(base, base_time))
}

async fn lock_uncontended(env: &Env, sizes: &Sizes) -> Row {
    let coordinator = env.coordinator().await;
    let ttl = Duration::from_secs(60);
    coordinator.session(ttl).await.expect("session");
    let raw = env.raw().await;
    let lock = raw
        .prepare("SELECT pg_advisory_lock(42)")
        .await
        .expect("prepare");
    let unlock = raw
        .prepare("SELECT pg_advisory_unlock(42)")
        .await
        .expect("prepare");
    let raw = Arc::new((raw, lock, unlock));
    let mut cpu = CpuMeter::start();
    let (coord, base) = paired(
        sizes.locks,
        |_| {
            let c = coordinator.clone();
            async move {
                let g = c.lock().acquire("u", ttl).await.expect("acquire");
                g.unlock().await.expect("unlock");
            }
        },
        |_| {
            let raw = raw.clone();
            async move {
                raw.0.execute(&raw.1, &[]).await.expect("lock");
                raw.0.execute(&raw.2, &[]).await.expect("unlock");
            }
        },
    )
    .await;
    let note = cpu.per_op(2 * sizes.locks as u64);
    coordinator.close().await.ok();
    Row::new(
        "postgres: lock uncontended, acquire + unlock",
        coord,
        Target::Report,
    )
    .against("pg_advisory_lock + unlock", base)
    .note(format!("{note}, both sides"))
}

async fn lock_handoffs(env: &Env, sizes: &Sizes, contenders: usize) -> Row {
    let ttl = Duration::from_secs(60);
    let mut coordinators = Vec::new();
    for _ in 0..contenders {
        let c = env.coordinator().await;
        c.session(ttl).await.expect("session");
        coordinators.push(c);
    }
    let name = format!("h{contenders}");
    let measured = crate::handoffs::measure(&coordinators, sizes.handoff_window, move |c| {
        let name = name.clone();
        async move {
            let g = c.lock().acquire(&name, ttl).await.expect("acquire");
            g.unlock().await.expect("unlock");
        }
    })
    .await;
    for c in coordinators {
        c.close().await.ok();
    }
    let share = measured.share();
    Row::new(
        format!("postgres: lock handoffs, {contenders} contenders"),
        measured.contended,
        Target::Handoffs {
            of_uncontended: 0.9,
            share,
        },
    )
    .against("the same lock, first contender alone", measured.alone)
    .note(format!(
        "{:.0}% of alone; CPU {} per op contended, {} alone",
        share * 100.0,
        measured.cpu,
        measured.alone_cpu
    ))
}
