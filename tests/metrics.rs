//! Every documented metric moves when its event happens (feature `metrics`), read
//! through the metrics ecosystem's debugging recorder, on the memory backend.

use std::sync::Arc;
use std::time::Duration;

use coordkit::{
    BackendExt, ConfigManager, Coordinator, ServiceInfo, STALE_AFTER, SYNC_PROBE_INTERVAL,
};
use coordkit_memory::MemoryBackend;
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_util::registry::{AtomicStorage, Registry};

/// A recorder over metrics-util's atomic registry, read without draining.
#[derive(Clone)]
struct Recording(Arc<Registry<Key, AtomicStorage>>);

impl Recorder for Recording {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        self.0
            .get_or_create_counter(key, |c| Counter::from_arc(c.clone()))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        self.0
            .get_or_create_gauge(key, |g| Gauge::from_arc(g.clone()))
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        self.0
            .get_or_create_histogram(key, |h| Histogram::from_arc(h.clone()))
    }
}

fn matches(key: &Key, name: &str, labels: &[(&str, &str)]) -> bool {
    let mut have: Vec<(String, String)> = key
        .labels()
        .map(|l| (l.key().to_string(), l.value().to_string()))
        .collect();
    let mut want: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    have.sort();
    want.sort();
    key.name() == name && have == want
}

fn counter(r: &Recording, name: &str, labels: &[(&str, &str)]) -> u64 {
    r.0.get_counter_handles()
        .into_iter()
        .find(|(k, _)| matches(k, name, labels))
        .map_or(0, |(_, c)| c.load(std::sync::atomic::Ordering::SeqCst))
}

fn gauge(r: &Recording, name: &str, labels: &[(&str, &str)]) -> f64 {
    r.0.get_gauge_handles()
        .into_iter()
        .find(|(k, _)| matches(k, name, labels))
        .map_or(f64::NAN, |(_, g)| {
            f64::from_bits(g.load(std::sync::atomic::Ordering::SeqCst))
        })
}

fn samples(r: &Recording, name: &str, labels: &[(&str, &str)]) -> usize {
    r.0.get_histogram_handles()
        .into_iter()
        .find(|(k, _)| matches(k, name, labels))
        .map_or(0, |(_, h)| h.data().len())
}

async fn settle() {
    tokio::time::sleep(Duration::from_millis(100)).await;
}

#[tokio::test(start_paused = true)]
async fn each_documented_metric_moves_with_its_event() {
    let s = Recording(Arc::new(Registry::atomic()));
    metrics::set_global_recorder(s.clone()).expect("the only recorder of this binary");

    let store = MemoryBackend::new();
    let client = store.client();
    let a = Coordinator::new(Arc::new(client.clone()));
    let b = Coordinator::new(Arc::new(store.client()));
    let ttl = Duration::from_secs(6);

    // Claims: acquired with a wait, released, dropped, lost.
    let guard = a.lock().acquire("l", ttl).await.unwrap();
    assert_eq!(
        counter(&s, "coordkit_claims_acquired_total", &[("kind", "lock")]),
        1
    );
    assert_eq!(
        samples(&s, "coordkit_claim_wait_seconds", &[("kind", "lock")]),
        1
    );
    assert_eq!(gauge(&s, "coordkit_sessions_alive", &[]), 1.0);
    guard.unlock().await.unwrap();
    let ended = |reason| {
        counter(
            &s,
            "coordkit_claims_ended_total",
            &[("kind", "lock"), ("reason", reason)],
        )
    };
    assert_eq!(ended("released"), 1);
    assert_eq!(
        samples(&s, "coordkit_claim_hold_seconds", &[("kind", "lock")]),
        1
    );
    drop(a.lock().acquire("l", ttl).await.unwrap());
    assert_eq!(ended("dropped"), 1);
    let lost = b.lock().acquire("m", ttl).await.unwrap();
    b.backend().delete(lost.key()).await.unwrap();
    lost.lost().await;
    assert_eq!(ended("key_deleted"), 1);
    let leader = b.election().with_ttl(ttl).campaign("e", "v").await.unwrap();
    assert_eq!(
        counter(
            &s,
            "coordkit_claims_acquired_total",
            &[("kind", "election")]
        ),
        1
    );
    leader.resign().await.unwrap();

    // Backend requests, timed by operation.
    assert!(samples(&s, "coordkit_backend_request_seconds", &[("op", "txn")]) > 0);
    assert!(
        samples(
            &s,
            "coordkit_backend_request_seconds",
            &[("op", "lease_grant")]
        ) > 0
    );

    // Registry: registration, cache size, re-registration after the lease ends.
    let registration = a
        .registry()
        .register(ServiceInfo::new("i-1", "api", "127.0.0.1", 80), ttl)
        .await
        .unwrap();
    assert_eq!(counter(&s, "coordkit_registrations_total", &[]), 1);
    let cache = b.registry().cache("api").await.unwrap();
    assert_eq!(
        gauge(
            &s,
            "coordkit_service_cache_instances",
            &[("service", "api")]
        ),
        1.0
    );
    store.expire_lease(a.session(ttl).await.unwrap().lease());
    let mut states = registration.watch_state();
    states
        .wait_for(|s| *s == coordkit::RegistrationState::Reregistering)
        .await
        .unwrap();
    states
        .wait_for(|s| *s == coordkit::RegistrationState::Registered)
        .await
        .unwrap();
    assert_eq!(counter(&s, "coordkit_reregistrations_total", &[]), 1);
    assert!(
        counter(
            &s,
            "coordkit_sessions_lost_total",
            &[("reason", "lease_gone")]
        ) >= 1
    );

    // Empty-push protection: the last instance of a service leaves; the cache
    // holds it (gauge 1) until one is back (gauge 0).
    let pay = |id: &str| ServiceInfo::new(id, "pay", "127.0.0.1", 81);
    let protected = || {
        gauge(
            &s,
            "coordkit_service_cache_protected",
            &[("service", "pay")],
        )
    };
    let only = a.registry().register(pay("p-1"), ttl).await.unwrap();
    let pay_cache = b.registry().cache("pay").await.unwrap();
    only.deregister().await.unwrap();
    settle().await;
    assert_eq!(protected(), 1.0);
    assert_eq!(pay_cache.instances().len(), 1, "held");
    let _back = a.registry().register(pay("p-2"), ttl).await.unwrap();
    settle().await;
    assert_eq!(protected(), 0.0);
    assert_eq!(pay_cache.instances()[0].id, "p-2");

    // Config changes: applied, rejected, undecodable, panicked.
    let manager = ConfigManager::builder(&a.config(), "prod", "shop", "n", 1u32)
        .validator(|n| if *n == 0 { Err("zero".into()) } else { Ok(()) })
        .updater(|_, new| assert!(*new != 13, "13 is unlucky"))
        .start()
        .await
        .unwrap();
    let changes = |result| counter(&s, "coordkit_config_changes_total", &[("result", result)]);
    let writer = b.config();
    writer.set("prod/shop/n", &5u32).await.unwrap();
    settle().await;
    assert_eq!(changes("applied"), 1);
    writer.set("prod/shop/n", &0u32).await.unwrap();
    settle().await;
    assert_eq!(changes("rejected"), 1);
    writer
        .set_bytes("prod/shop/n", b"{".to_vec())
        .await
        .unwrap();
    settle().await;
    assert_eq!(changes("undecodable"), 1);
    writer.set("prod/shop/n", &13u32).await.unwrap();
    settle().await;
    assert_eq!(changes("panicked"), 1);

    // Watches: a compaction while cut off makes the follower reread (resync)
    // and open its watch again (resume); a cut the backend resumes by itself is
    // not the follower's to count.
    let resumes = counter(&s, "coordkit_watch_resumes_total", &[]);
    client.partition();
    writer.set("prod/shop/n", &7u32).await.unwrap();
    writer.set("prod/shop/other", &0u32).await.unwrap();
    store.compact_now();

    // A partition: keep-alives fail, requests fail by kind, followers go stale.
    tokio::time::sleep(STALE_AFTER + SYNC_PROBE_INTERVAL * 2).await;
    assert!(counter(&s, "coordkit_keep_alive_failures_total", &[]) >= 1);
    assert!(
        counter(
            &s,
            "coordkit_backend_errors_total",
            &[("op", "range"), ("kind", "unavailable")]
        ) >= 1
    );
    assert_eq!(
        gauge(
            &s,
            "coordkit_follower_stale",
            &[("follower", "config prod/shop/n")]
        ),
        1.0
    );
    client.heal();
    tokio::time::sleep(SYNC_PROBE_INTERVAL * 2).await;
    assert!(counter(&s, "coordkit_watch_resyncs_total", &[]) >= 1);
    assert!(counter(&s, "coordkit_watch_resumes_total", &[]) > resumes);
    assert_eq!(
        gauge(
            &s,
            "coordkit_follower_stale",
            &[("follower", "config prod/shop/n")]
        ),
        0.0
    );
    assert_eq!(*manager.current(), 7);

    // A clean close.
    drop(cache);
    drop(registration);
    let before = counter(&s, "coordkit_sessions_lost_total", &[("reason", "closed")]);
    a.close().await.unwrap();
    assert!(counter(&s, "coordkit_sessions_lost_total", &[("reason", "closed")]) > before);
}
