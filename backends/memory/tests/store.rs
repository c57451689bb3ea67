//! What only the in-memory backend offers: store-level faults and views.

use coordkit::{Backend, BackendExt, Error, RangeRequest, WatchRequest};
use coordkit_memory::MemoryBackend;
use futures::StreamExt;

/// `compact_now` compacts at the current revision: older reads and watches fail
/// with `Compacted`, the current state stays readable.
#[tokio::test(start_paused = true)]
async fn compact_now_compacts_at_the_current_revision() {
    let store = MemoryBackend::new();
    let old = store.put("k", "1").await.unwrap();
    let now = store.put("k", "2").await.unwrap();
    assert_eq!(store.compact_now(), now);
    let r = store.range(RangeRequest::key("k").at_revision(old)).await;
    assert!(matches!(r, Err(Error::Compacted { compact_revision }) if compact_revision == now));
    let mut w = store
        .watch(WatchRequest::key("k").from_revision(old))
        .await
        .unwrap();
    assert!(matches!(w.next().await, Some(Err(Error::Compacted { .. }))));
    assert!(w.next().await.is_none());
    assert_eq!(store.get("k").await.unwrap().unwrap().value, b"2");
    // Compacting again at the same revision changes nothing.
    assert_eq!(store.compact_now(), now);
}

/// A fresh store is at revision 1 and each write advances it by exactly one.
#[tokio::test]
async fn revisions_start_at_one_and_advance_by_one() {
    let store = MemoryBackend::new();
    assert_eq!(store.revision(), 1);
    assert_eq!(store.put("a", "1").await.unwrap(), 2);
    assert_eq!(store.put("b", "1").await.unwrap(), 3);
    assert!(!store.delete("missing").await.unwrap());
    assert_eq!(store.revision(), 3);
}

/// A fresh store has compacted nothing: revision 1 (the empty store) stays
/// readable and a watch from it replays every write.
#[tokio::test]
async fn a_fresh_store_has_compacted_nothing() {
    let store = MemoryBackend::new();
    store.put("k", "1").await.unwrap();
    let first = store
        .range(RangeRequest::key("k").at_revision(1))
        .await
        .unwrap();
    assert!(first.kvs.is_empty(), "revision 1 is the empty store");
    let mut w = store
        .watch(WatchRequest::key("k").from_revision(1))
        .await
        .unwrap();
    let r = w.next().await.unwrap().unwrap();
    assert_eq!(
        r.events.len(),
        1,
        "a watch from revision 1 replays the first write"
    );
    // Compacting at 1 is allowed: nothing was compacted before.
    store.compact(1).await.unwrap();
}

/// Stats count the calls served, and dropped watch streams stop being open.
#[tokio::test]
async fn stats_and_open_watches_follow_the_calls() {
    let store = MemoryBackend::new();
    let before = store.stats();
    store.put("a", "1").await.unwrap();
    store.get("a").await.unwrap();
    let w = store.watch(WatchRequest::key("a")).await.unwrap();
    let after = store.stats();
    assert_eq!(after.txns - before.txns, 1);
    assert_eq!(after.ranges - before.ranges, 1);
    assert_eq!(after.watches - before.watches, 1);
    assert_eq!(store.open_watches(), 1);
    drop(w);
    assert_eq!(store.open_watches(), 0);
}

/// A 60 s lease runs out on the paused clock without waiting, at its deadline and
/// not before.
#[tokio::test(start_paused = true)]
async fn leases_follow_tokios_clock() {
    let store = MemoryBackend::new();
    let grant = store.lease_grant(60).await.unwrap();
    store.put_with_lease("k", "v", grant.id).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(59_999)).await;
    assert!(store.get("k").await.unwrap().is_some());
    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    assert!(store.get("k").await.unwrap().is_none());
}

/// The default limits are etcd's: a 1 s lease is refused as etcd refuses it, so
/// code that works here does not fail in production; `with_limits` allows it.
#[tokio::test]
async fn default_limits_are_etcds() {
    assert_eq!(
        coordkit_memory::default_limits(),
        coordkit::Limits::default()
    );
    let b = MemoryBackend::new();
    let err = b.lease_grant(1).await.unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
    b.lease_grant(2).await.unwrap();
    let short = MemoryBackend::with_limits(coordkit::Limits::default().with_min_lease_ttl(1));
    short.lease_grant(1).await.unwrap();
}
