//! A tour of coordkit on the in-memory backend: the primitive (puts and revisions, a
//! compare-and-swap transaction, a lease that expires, a watch that sees it all,
//! history and compaction), then the recipes built on it (a lock, an election, a
//! config value hot-reloaded by a ConfigManager that refuses an invalid update, a
//! service coming and going in a watching cache).
//!
//! Run with `cargo run --example tour` (nothing but Rust needed).

use std::sync::Arc;
use std::time::Duration;

use coordkit::{
    Backend, BackendExt, Compare, CompareOp, Coordinator, Error, EventKind, PutRequest,
    RangeRequest, Txn, WatchRequest,
};
use coordkit_memory::MemoryBackend;
use futures::StreamExt;

#[tokio::main(flavor = "current_thread")]
async fn main() -> coordkit::Result<()> {
    let store = MemoryBackend::new();

    // 1. A watch on everything under "app/", from now on.
    let mut watch = store
        .watch(WatchRequest::prefix("app/").with_prev_kv())
        .await?;

    // 2. Puts: every write advances the one global revision.
    let r1 = store.put("app/color", "blue").await?;
    let r2 = store.put("app/color", "green").await?;
    let kv = store.get("app/color").await?.expect("just written");
    println!(
        "put twice: revisions {r1} and {r2}; create_revision={} version={}",
        kv.create_revision, kv.version
    );

    // 3. A transaction: change the color only if nobody changed it since we read it.
    let txn = Txn::new()
        .when([Compare::mod_revision(
            "app/color",
            CompareOp::Equal,
            kv.mod_revision,
        )])
        .and_then([
            PutRequest::new("app/color", "red"),
            PutRequest::new("app/size", "L"),
        ]);
    let resp = store.txn(txn).await?;
    println!(
        "txn succeeded={} at revision {} (two keys, one revision)",
        resp.succeeded, resp.revision
    );
    match store
        .compare_and_swap("app/color", kv.mod_revision, "stale")
        .await
    {
        Err(Error::VersionConflict { current, .. }) => {
            println!("a stale compare-and-swap is refused: current version is {current}")
        }
        other => println!("unexpected: {other:?}"),
    }

    // 4. A lease: keys attached to it vanish when it is not kept alive.
    let lease = store.lease_grant(2).await?; // etcd's shortest lease, as here
    store.put_with_lease("app/owner", "me", lease.id).await?;
    println!(
        "lease {} granted for {} s; app/owner attached",
        lease.id, lease.ttl
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    println!(
        "after 2.5 s: app/owner present = {}",
        store.get("app/owner").await?.is_some()
    );

    // 5. The watch saw every change, one response per revision, in order.
    for _ in 0..5 {
        let resp = watch.next().await.expect("watch is open")?;
        for e in &resp.events {
            let what = match e.kind {
                EventKind::Put => format!("put {}", String::from_utf8_lossy(&e.kv.value)),
                EventKind::Delete => "delete".to_string(),
            };
            println!("  watch @{}: {} {}", resp.revision, e.kv.key_str(), what);
        }
    }

    // 6. History: read the past, until it is compacted away.
    let then = store
        .range(RangeRequest::key("app/color").at_revision(r1))
        .await?;
    println!(
        "app/color at revision {r1}: {}",
        String::from_utf8_lossy(&then.kvs[0].value)
    );
    let now = store.compact_now();
    match store
        .range(RangeRequest::key("app/color").at_revision(r1))
        .await
    {
        Err(Error::Compacted { compact_revision }) => {
            println!("after compacting at {now}: revision {r1} is gone (history from {compact_revision})")
        }
        other => println!("unexpected: {other:?}"),
    }

    // 7. Recipes: a lock and an election, each coordinator acting as one process.
    let node_a = Coordinator::new(Arc::new(store.client()));
    let node_b = Coordinator::new(Arc::new(store.client()));
    let ttl = Duration::from_secs(5);
    let guard = node_a.lock().acquire("report", ttl).await?;
    println!(
        "node a holds lock report: key {}, fencing token {}",
        guard.key(),
        guard.fencing_token()
    );
    match node_b.lock().try_acquire("report", ttl).await {
        Err(Error::LockConflict { name }) => {
            println!("node b's try_acquire({name}): held elsewhere")
        }
        other => println!("unexpected: {other:?}"),
    }
    guard.unlock().await?;
    let guard = node_b.lock().try_acquire("report", ttl).await?;
    println!(
        "after node a unlocked, node b holds it with token {}",
        guard.fencing_token()
    );
    guard.unlock().await?;

    let leadership = node_a.election().campaign("primary", "node-a").await?;
    let leader = node_b
        .election()
        .leader("primary")
        .await?
        .expect("a leader");
    println!(
        "election primary: node b sees leader {} (token {})",
        leader.value_str(),
        leader.fencing_token
    );
    leadership.resign().await?;
    println!(
        "after resigning: leader = {:?}",
        node_b.election().leader("primary").await?
    );

    // 8. Config: a typed value kept current in memory, validated before use.
    let manager =
        coordkit::ConfigManager::builder(&node_a.config(), "prod", "web", "workers", 4u32)
            .validator(|n: &u32| {
                if *n == 0 {
                    Err("workers must be at least 1".into())
                } else {
                    Ok(())
                }
            })
            .start()
            .await?;
    let mut updates = manager.subscribe();
    node_b.config().set("prod/web/workers", &16u32).await?;
    updates.changed().await.expect("manager running");
    println!("config hot reload: workers = {}", manager.current());
    node_b.config().set("prod/web/workers", &0u32).await?;
    while manager.last_error().is_none() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!(
        "invalid update refused ({}); workers still = {}",
        manager
            .last_error()
            .map(|e| e.to_string())
            .unwrap_or_default(),
        manager.current()
    );
    manager.stop();

    // 9. Registry: a service instance comes and goes in a watching cache.
    // Protection off: the default cache would keep serving the last instance
    // of a service when it goes (empty-push protection, see docs/registry.md).
    let cache = node_b
        .registry()
        .cache_with(
            "search",
            coordkit::CacheOptions::new().protection(coordkit::EmptyPushProtection::Off),
        )
        .await?;
    let mut seen = cache.subscribe();
    let instance = coordkit::ServiceInfo::new("search-1", "search", "10.0.0.7", 9200);
    let registration = node_a
        .registry()
        .register(instance, Duration::from_secs(5))
        .await?;
    let came = seen.recv().await.expect("cache running");
    println!(
        "cache: {:?} {} at {}; instances now {}",
        came.kind,
        came.service.id,
        came.service.authority(),
        cache.instances().len()
    );
    registration.deregister().await?;
    let went = seen.recv().await.expect("cache running");
    println!(
        "cache: {:?} {}; instances now {}",
        went.kind,
        went.service.id,
        cache.instances().len()
    );
    node_a.close().await?;
    node_b.close().await?;
    Ok(())
}
