//! Shared claims reuse their keys (`<prefix><lease hex>-<n>`), but a number is
//! taken again only once no earlier write or delete of its key by this process
//! can still land. The conformance case `shared_claims_of_one_session_reuse_their_keys`
//! covers reuse on every backend; these cover the cases only a held write shows.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use coordkit::testing::{Intercept, Intercepted};
use coordkit::{Backend, Coordinator, RangeRequest};
use coordkit_memory::MemoryBackend;

const TTL: Duration = Duration::from_secs(6);

async fn keys(store: &MemoryBackend, prefix: &str) -> Vec<String> {
    store
        .range(RangeRequest::prefix(prefix))
        .await
        .unwrap()
        .kvs
        .iter()
        .map(|kv| kv.key_str())
        .collect()
}

/// A claim cancelled while its write is on its way leaves a cleanup that
/// deletes whatever key of its session it finds at that key (its create
/// revision is unknown). The next claim of the same session and name must not
/// take that key until the cleanup is done: it takes another, and it survives
/// the cleanup.
#[tokio::test(start_paused = true)]
async fn a_claim_cancelled_mid_write_keeps_its_key_until_its_cleanup_is_done() {
    for permits in [1, 2] {
        let store = MemoryBackend::new();
        let backend = Arc::new(HoldsNextTxn::over(store.client()));
        let c = Coordinator::new(backend.clone());
        c.session(TTL).await.unwrap();
        let prefix = "coord/semaphore/s/";

        // The claim's write is held on its way; the call is dropped.
        backend.intercept().hold_next();
        {
            let semaphore = c.semaphore();
            let acquire = semaphore.acquire("s", permits, TTL);
            let mut acquire = std::pin::pin!(acquire);
            for _ in 0..4 {
                assert!(matches!(futures::poll!(acquire.as_mut()), Poll::Pending));
                tokio::task::yield_now().await;
            }
        }
        assert!(keys(&store, prefix).await.is_empty());

        // The next claim, while the cancelled one's write and cleanup are pending.
        let next = c.semaphore().acquire("s", permits, TTL).await.unwrap();
        let next_key = next.key().to_string();
        assert!(
            next_key.ends_with("-1"),
            "{permits} permits: the next claim took {next_key}, not the number after the cancelled one's"
        );

        // The held write lands (creating the cancelled claim's key), then the
        // cleanup deletes that key.
        backend.intercept().release();
        // Time (paused) for the write and the cleanup: neither fails, so neither retries.
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(
            keys(&store, prefix).await,
            std::slice::from_ref(&next_key),
            "{permits} permits: the queue settles at the next claim's key"
        );
        assert!(
            next.is_held().await.unwrap(),
            "{permits} permits: the cancelled claim's cleanup deleted the next claim's key"
        );
        next.unlock().await.unwrap();
        // With the cleanup done, the cancelled claim's number is free again.
        let again = c.semaphore().acquire("s", permits, TTL).await.unwrap();
        assert!(again.key().ends_with("-0"), "{}", again.key());
        again.unlock().await.unwrap();
        c.close().await.unwrap();
    }
}

/// Holds the next transaction, when asked, until released.
struct HoldsNextTxn {
    armed: AtomicBool,
    gate: tokio::sync::Semaphore,
}

impl HoldsNextTxn {
    /// `store`, holding no transaction until asked.
    fn over(store: MemoryBackend) -> Intercepted<MemoryBackend, Self> {
        let holds = HoldsNextTxn {
            armed: AtomicBool::new(false),
            gate: tokio::sync::Semaphore::new(0),
        };
        Intercepted::new(store, holds)
    }

    fn hold_next(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    fn release(&self) {
        self.gate.add_permits(1);
    }
}

#[async_trait::async_trait]
impl Intercept<MemoryBackend> for HoldsNextTxn {
    async fn txn(
        &self,
        inner: &MemoryBackend,
        txn: coordkit::Txn,
    ) -> coordkit::Result<coordkit::TxnResponse> {
        if self.armed.swap(false, Ordering::SeqCst) {
            self.gate.acquire().await.expect("gate").forget();
        }
        inner.txn(txn).await
    }
}

/// A double barrier's participant keys reuse numbers as claims do: a session
/// that enters and leaves again and again takes `-0` each time; two entries of
/// one session at once take `-0` and `-1`; an entry dropped without leaving
/// keeps its number while its key may stand (until the session ends).
#[tokio::test(start_paused = true)]
async fn double_barrier_keys_reuse_their_numbers() {
    let store = MemoryBackend::new();
    let c = Coordinator::new(Arc::new(store.client()));
    let barriers = c.barrier();
    for _ in 0..3 {
        let entry = barriers.enter("b", 1, TTL).await.unwrap();
        assert!(entry.key().ends_with("-0"), "{}", entry.key());
        entry.leave().await.unwrap();
    }
    let (a, b) = tokio::join!(barriers.enter("two", 2, TTL), barriers.enter("two", 2, TTL));
    let (a, b) = (a.unwrap(), b.unwrap());
    let mut numbers = [a.key().to_string(), b.key().to_string()];
    numbers.sort();
    assert!(
        numbers[0].ends_with("-0") && numbers[1].ends_with("-1"),
        "{numbers:?}"
    );
    drop(a); // its key stands until the session ends
    let waiters = "coord/double-barrier/two/waiters/";
    assert_eq!(keys(&store, waiters).await.len(), 2);
    let again = tokio::spawn({
        let barriers = c.barrier();
        async move { barriers.enter("two", 2, TTL).await }
    });
    tokio::task::yield_now().await;
    let taken = keys(&store, waiters).await;
    assert_eq!(
        taken.len(),
        3,
        "a new number, not the dropped entry's: {taken:?}"
    );
    assert!(taken.iter().any(|k| k.ends_with("-2")), "{taken:?}");
    again.abort();
    let _ = b;
    c.close().await.unwrap();
}
