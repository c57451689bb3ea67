//! `Coordinator::health`: what a readiness probe sees before, during and after a
//! partition of the coordinator's connection (memory backend, paused clock).

use std::sync::Arc;
use std::time::Duration;

use coordkit::{
    ConfigManager, Coordinator, ServiceInfo, SessionState, STALE_AFTER, SYNC_PROBE_INTERVAL,
};
use coordkit_memory::MemoryBackend;

#[tokio::test(start_paused = true)]
async fn health_reports_stale_followers_during_a_partition_and_fresh_after() {
    let store = MemoryBackend::new();
    let client = store.client();
    let a = Coordinator::new(Arc::new(client.clone()));
    let other = Coordinator::new(Arc::new(store.client()));
    let _registration = other
        .registry()
        .register(
            ServiceInfo::new("i-1", "api", "127.0.0.1", 80),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    let cache = a.registry().cache("api").await.unwrap();
    let manager = ConfigManager::builder(&a.config(), "prod", "shop", "limit", 1u32)
        .start()
        .await
        .unwrap();
    let _session = a.session(Duration::from_secs(60)).await.unwrap();

    tokio::time::sleep(SYNC_PROBE_INTERVAL * 2).await;
    let health = a.health().await;
    assert!(health.is_ready(), "{health:#?}");
    assert_eq!(health.followers.len(), 2);
    assert!(health.followers.iter().all(|f| !f.stale));
    assert_eq!(health.sessions.len(), 1);
    assert_eq!(health.sessions[0].state, SessionState::Alive);

    client.partition();
    tokio::time::sleep(STALE_AFTER + SYNC_PROBE_INTERVAL * 2).await;
    let health = a.health().await;
    assert!(!health.is_ready());
    assert!(health.backend.is_err(), "{health:#?}");
    let names: Vec<_> = health
        .followers
        .iter()
        .map(|f| (f.name.as_str(), f.stale))
        .collect();
    assert!(names.contains(&("service api", true)), "{health:#?}");
    assert!(
        names.contains(&("config prod/shop/limit", true)),
        "{health:#?}"
    );
    assert!(cache.health().stale && manager.health().stale);
    assert!(cache.health().last_error.is_some());
    // Meanwhile the cache serves what it last knew.
    assert_eq!(cache.instances().len(), 1);
    // No keep-alive was due yet (TTL/3 = 20 s): the session is alive, its
    // deadline nearer.
    assert_eq!(health.sessions[0].state, SessionState::Alive);
    assert!(health.sessions[0].until_deadline < Duration::from_secs(50));

    client.heal();
    tokio::time::sleep(SYNC_PROBE_INTERVAL * 2).await;
    let health = a.health().await;
    assert!(health.is_ready(), "{health:#?}");
    assert!(!cache.health().stale && !manager.health().stale);

    // A dropped cache leaves the list.
    drop(cache);
    tokio::time::sleep(Duration::from_millis(1)).await; // the aborted task ends
    assert_eq!(a.health().await.followers.len(), 1);
}

/// One probe serves every follower: 40 caches and managers cost the store one
/// read per interval, not 40 (a cache asked the store for its own keys every
/// interval: 10k caches made 5,000 reads a second).
#[tokio::test(start_paused = true)]
async fn every_follower_shares_one_probe_of_the_store() {
    let store = MemoryBackend::new();
    let client = store.client();
    let a = Coordinator::new(Arc::new(client.clone()));
    let mut caches = Vec::new();
    for i in 0..20 {
        caches.push(a.registry().cache(&format!("svc-{i}")).await.unwrap());
    }
    let mut managers = Vec::new();
    for i in 0..20 {
        let name = format!("limit-{i}");
        managers.push(
            ConfigManager::builder(&a.config(), "prod", "shop", &name, 1u32)
                .start()
                .await
                .unwrap(),
        );
    }
    let before = store.stats().ranges;
    let intervals = 10;
    tokio::time::sleep(SYNC_PROBE_INTERVAL * intervals + SYNC_PROBE_INTERVAL / 2).await;
    let reads = store.stats().ranges - before;
    assert!(
        (1..=u64::from(intervals) + 1).contains(&reads),
        "{reads} reads for 40 followers over {intervals} intervals"
    );
    let health = a.health().await;
    assert_eq!(health.followers.len(), 40);
    assert!(health.is_ready(), "{health:#?}");
    // The probe still tells a partition: every follower goes stale.
    client.partition();
    tokio::time::sleep(STALE_AFTER + SYNC_PROBE_INTERVAL * 2).await;
    let health = a.health().await;
    assert!(health.followers.iter().all(|f| f.stale), "{health:#?}");
    client.heal();
    tokio::time::sleep(SYNC_PROBE_INTERVAL * 2).await;
    assert!(a.health().await.followers.iter().all(|f| !f.stale));
    drop((caches, managers));
}
