//! The linearizability checker can fail: a planted stale read and a planted lost
//! write, each in a wrapper backend over the memory store, are reported with the
//! operations that show them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use coordkit::testing::{Intercept, Intercepted};
use coordkit::{Backend, RangeRequest, RangeResponse, Result, Txn, TxnOp, TxnResponse};
use coordkit_conformance::linearizability::{check, run_history};
use coordkit_memory::MemoryBackend;

/// Which bug the wrapper plants.
#[derive(Clone, Copy)]
enum Bug {
    /// Every third read of a key answers the value it read the time before.
    StaleRead,
    /// Every fifth single put is acknowledged and not applied.
    LostWrite,
}

/// The bug planted, and what it needs to remember.
struct Planted {
    bug: Bug,
    calls: AtomicU64,
    last_read: Mutex<HashMap<Vec<u8>, RangeResponse>>,
}

#[async_trait]
impl Intercept<MemoryBackend> for Planted {
    async fn range(&self, inner: &MemoryBackend, request: RangeRequest) -> Result<RangeResponse> {
        let fresh = inner.range(request.clone()).await?;
        if let (Bug::StaleRead, coordkit::KeyRange::Key(key)) = (self.bug, &request.keys) {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            let mut last = self.last_read.lock().unwrap();
            let previous = last.insert(key.clone(), fresh.clone());
            if n % 3 == 2 {
                if let Some(stale) = previous {
                    return Ok(stale);
                }
            }
        }
        Ok(fresh)
    }
    async fn txn(&self, inner: &MemoryBackend, txn: Txn) -> Result<TxnResponse> {
        let single_put = txn.compares.is_empty()
            && txn.success.len() == 1
            && matches!(txn.success[0], TxnOp::Put(_));
        if let (Bug::LostWrite, true) = (self.bug, single_put) {
            if self.calls.fetch_add(1, Ordering::SeqCst) % 5 == 4 {
                // Acknowledged, not applied.
                let revision = inner.revision();
                return Ok(TxnResponse {
                    succeeded: true,
                    revision,
                    responses: vec![coordkit::TxnOpResponse::Put { prev_kv: None }],
                });
            }
        }
        inner.txn(txn).await
    }
}

async fn history_with(bug: Bug) -> Vec<coordkit_conformance::linearizability::Operation> {
    let store = MemoryBackend::new();
    let mut clients: Vec<Arc<dyn Backend>> = Vec::new();
    for _ in 0..3 {
        let planted = Planted {
            bug,
            calls: AtomicU64::new(0),
            last_read: Mutex::default(),
        };
        clients.push(Arc::new(Intercepted::new(store.client(), planted)));
    }
    run_history(clients, 2, 80, 5, |_| {}).await
}

#[tokio::test]
async fn a_planted_stale_read_is_not_linearizable() {
    let violation =
        check(&history_with(Bug::StaleRead).await).expect_err("a stale read went unnoticed");
    eprintln!("{violation}");
    assert!(!violation.operations.is_empty());
}

#[tokio::test]
async fn a_planted_lost_write_is_not_linearizable() {
    let violation =
        check(&history_with(Bug::LostWrite).await).expect_err("a lost write went unnoticed");
    eprintln!("{violation}");
    assert!(!violation.operations.is_empty());
}

#[tokio::test]
async fn the_same_history_without_a_planted_bug_is_linearizable() {
    let store = MemoryBackend::new();
    let clients: Vec<Arc<dyn Backend>> = (0..3)
        .map(|_| Arc::new(store.client()) as Arc<dyn Backend>)
        .collect();
    let history = run_history(clients, 2, 80, 5, |_| {}).await;
    if let Err(v) = check(&history) {
        panic!("{v}");
    }
}
