//! Service registry on the in-memory backend: instances register, a cache follows
//! them from memory, one instance is replaced by its restarted self, and one whose
//! keep-alives stop disappears and comes back when they work again.
//!
//! Run with `cargo run --example registry`, or on etcd with
//! `COORD_ETCD_ENDPOINTS` set (the stalled keep-alives need the memory
//! backend's fault injection: on etcd that part is skipped).

use std::time::Duration;

use coordkit::ServiceInfo;

async fn show(cache: &coordkit::ServiceCache, when: &str) {
    // Let the cache's watch catch up (it answers from memory).
    tokio::time::sleep(Duration::from_millis(50)).await;
    let ids: Vec<String> = cache
        .instances()
        .iter()
        .map(|i| format!("{}@{}", i.id, i.authority()))
        .collect();
    println!("{when}: {ids:?}");
}

#[tokio::main]
async fn main() -> coordkit::Result<()> {
    let store = coordkit_examples::Store::from_env();
    let ttl = Duration::from_secs(3);
    let flaky_link = store.memory().map(|m| m.client());
    let node_a = store.coordinator().await?;
    let node_b = match &flaky_link {
        Some(link) => coordkit::Coordinator::new(std::sync::Arc::new(link.clone())),
        None => store.coordinator().await?,
    };
    let client = store.coordinator().await?;

    let cache = client.registry().cache("orders").await?;
    let mut events = cache.subscribe();
    let a = node_a
        .registry()
        .register(
            ServiceInfo::new("a", "orders", "10.0.0.1", 7001).with_metadata("zone", "eu-1"),
            ttl,
        )
        .await?;
    let _b = node_b
        .registry()
        .register(ServiceInfo::new("b", "orders", "10.0.0.2", 7001), ttl)
        .await?;
    show(&cache, "two instances registered").await;
    println!(
        "discover() reads the store: {} instances",
        client.registry().discover("orders").await?.len()
    );

    // Instance a restarts elsewhere before its old lease ran out: the new
    // registration replaces the old one, which notices and stops.
    let restarted = store.coordinator().await?;
    let a2 = restarted
        .registry()
        .register(ServiceInfo::new("a", "orders", "10.0.0.9", 7001), ttl)
        .await?;
    let mut a_state = a.watch_state();
    a_state.wait_for(|s| s.is_final()).await.ok();
    println!("old registration of a: {:?}", a.state());
    show(&cache, "after a restarted").await;

    // Instance b's keep-alives stop: it leaves the registry within its TTL and
    // is not re-advertised until its keep-alives work again.
    match &flaky_link {
        Some(link) => {
            link.stall_keep_alives();
            while cache.instances().len() == 2 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            show(&cache, "b's keep-alives stalled").await;
            link.resume_keep_alives();
            while cache.instances().len() < 2 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            show(&cache, "b's keep-alives work again").await;
        }
        None => println!(
            "(stalled keep-alives need the memory backend's faults: skipped on etcd and Postgres)"
        ),
    }

    // A persistent instance: an endpoint that runs no client (a database).
    // It needs no keep-alive and outlives the process that wrote it.
    client
        .registry()
        .register_persistent(ServiceInfo::new("legacy", "orders", "10.0.0.9", 7001))
        .await?;
    show(&cache, "a persistent instance registered").await;

    a2.deregister().await?;
    show(&cache, "a deregistered").await;
    client.registry().deregister("legacy").await?;
    show(&cache, "the persistent instance deregistered by id").await;
    while let Ok(e) = events.try_recv() {
        println!("  cache event: {:?} {}", e.kind, e.service.id);
    }
    for c in [node_a, node_b, restarted, client] {
        c.close().await?;
    }
    Ok(())
}
