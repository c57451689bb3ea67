//! `RegistryService::deregister(id)` reads the id's index, never the registry:
//! a backend that records every range shows no read of `coord/service/` while
//! an id is removed from two of 50 services.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use coordkit::testing::{Intercept, Intercepted};
use coordkit::{
    Backend, Coordinator, KeyRange, RangeRequest, RangeResponse, Result, ServiceInfo, Txn, TxnOp,
    TxnResponse,
};
use coordkit_memory::MemoryBackend;

/// Records the key range of every read it lets through.
#[derive(Default)]
struct Recording {
    reads: Mutex<Vec<Vec<u8>>>,
}

impl Recording {
    fn record(&self, keys: &KeyRange) {
        self.reads.lock().unwrap().push(keys.start().to_vec());
    }
}

#[async_trait]
impl Intercept<MemoryBackend> for Recording {
    async fn range(&self, inner: &MemoryBackend, request: RangeRequest) -> Result<RangeResponse> {
        self.record(&request.keys);
        inner.range(request).await
    }
    async fn txn(&self, inner: &MemoryBackend, txn: Txn) -> Result<TxnResponse> {
        for op in txn.success.iter().chain(&txn.failure) {
            if let TxnOp::Range(r) = op {
                self.record(&r.keys);
            }
        }
        inner.txn(txn).await
    }
}

#[tokio::test(start_paused = true)]
async fn deregister_by_id_reads_only_the_id_index() {
    let store = MemoryBackend::new();
    let servers = Coordinator::new(Arc::new(store.client()));
    let ttl = Duration::from_secs(30);
    let mut kept = Vec::new();
    for s in 0..50 {
        let info = ServiceInfo::new(format!("i-{s}"), format!("svc-{s}"), "127.0.0.1", 9000);
        kept.push(servers.registry().register(info, ttl).await.unwrap());
    }
    for name in ["svc-3", "svc-7"] {
        let info = ServiceInfo::new("gone", name, "127.0.0.1", 9001);
        kept.push(servers.registry().register(info, ttl).await.unwrap());
    }
    let recording = Arc::new(Intercepted::new(store.client(), Recording::default()));
    let operator = Coordinator::new(recording.clone());
    assert_eq!(operator.registry().deregister("gone").await.unwrap(), 2);
    let reads = recording.intercept().reads.lock().unwrap().clone();
    let scans: Vec<String> = reads
        .iter()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .filter(|k| k == "coord/service/")
        .collect();
    assert!(
        scans.is_empty(),
        "deregister(id) scanned the registry: {reads:?}"
    );
    assert!(
        reads.len() <= 3,
        "one index read and one read per service the id is in, got {reads:?}"
    );
    assert_eq!(servers.registry().discover("svc-3").await.unwrap().len(), 1);
    assert_eq!(servers.registry().services().await.unwrap().len(), 50);
}
