//! A claim write held by the store past its caller: an acquire cancelled while
//! its write was held leaves no key once that write lands (the cleanup watches
//! for it), and the next acquire of the same name takes the key over.

use std::sync::Arc;
use std::time::Duration;

use coordkit::testing::{AmbiguousWrites, Intercepted, WriteFault};
use coordkit::{Backend, Coordinator, RangeRequest};
use coordkit_memory::MemoryBackend;

const TTL: Duration = Duration::from_secs(10);

async fn keys(store: &MemoryBackend, prefix: &str) -> usize {
    store
        .range(RangeRequest::prefix(prefix))
        .await
        .unwrap()
        .kvs
        .len()
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_acquire_whose_write_lands_late_leaves_no_key() {
    let store = MemoryBackend::new();
    let faulty = Arc::new(Intercepted::new(store.client(), AmbiguousWrites::new()));
    let c = Coordinator::new(faulty.clone() as Arc<dyn Backend>);
    faulty.intercept().arm(1, WriteFault::Held);
    // Dropped during the retry's backoff, after the first try got no answer.
    let cancelled =
        tokio::time::timeout(Duration::from_millis(50), c.lock().acquire("l", TTL)).await;
    assert!(cancelled.is_err(), "the acquire was cancelled");
    assert!(faulty.intercept().fired());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        keys(&store, "coord/lock/l/").await,
        0,
        "the cleanup removed its key"
    );
    // The held write lands now, on the coordinator's live lease.
    faulty.intercept().settle(faulty.inner()).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        keys(&store, "coord/lock/l/").await,
        0,
        "the late write is removed too"
    );
    // The name is free for anyone, and this coordinator takes it again.
    let guard = c.lock().try_acquire("l", TTL).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        guard.is_held().await.unwrap(),
        "the watch of late writes stopped"
    );
    guard.unlock().await.unwrap();
    c.close().await.unwrap();
}
