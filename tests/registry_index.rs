//! `RegistryService::deregister(id)` reads the id's index, never the registry:
//! a backend that records every range shows no read of `coord/service/` while
//! an id is removed from two of 50 services.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use coordkit::{
    Backend, Capabilities, Coordinator, KeyRange, LeaseGrant, LeaseId, LeaseInfo, Limits,
    RangeRequest, RangeResponse, Result, Revision, ServiceInfo, Txn, TxnOp, TxnResponse,
    WatchRequest, WatchStream,
};
use coordkit_memory::MemoryBackend;

/// Delegates to the memory backend, recording the key range of every read.
struct Recording {
    inner: MemoryBackend,
    reads: Mutex<Vec<Vec<u8>>>,
}

impl Recording {
    fn record(&self, keys: &KeyRange) {
        self.reads.lock().unwrap().push(keys.start().to_vec());
    }
}

#[async_trait]
impl Backend for Recording {
    fn name(&self) -> &'static str {
        "recording"
    }
    fn limits(&self) -> Limits {
        self.inner.limits()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn range(&self, request: RangeRequest) -> Result<RangeResponse> {
        self.record(&request.keys);
        self.inner.range(request).await
    }
    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        for op in txn.success.iter().chain(&txn.failure) {
            if let TxnOp::Range(r) = op {
                self.record(&r.keys);
            }
        }
        self.inner.txn(txn).await
    }
    async fn lease_grant(&self, ttl: i64) -> Result<LeaseGrant> {
        self.inner.lease_grant(ttl).await
    }
    async fn lease_keep_alive(&self, id: LeaseId) -> Result<i64> {
        self.inner.lease_keep_alive(id).await
    }
    async fn lease_revoke(&self, id: LeaseId) -> Result<()> {
        self.inner.lease_revoke(id).await
    }
    async fn lease_time_to_live(&self, id: LeaseId) -> Result<LeaseInfo> {
        self.inner.lease_time_to_live(id).await
    }
    async fn watch(&self, request: WatchRequest) -> Result<WatchStream> {
        self.inner.watch(request).await
    }
    async fn compact(&self, revision: Revision) -> Result<()> {
        self.inner.compact(revision).await
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
    let recording = Arc::new(Recording {
        inner: store.client(),
        reads: Mutex::new(Vec::new()),
    });
    let operator = Coordinator::new(recording.clone());
    assert_eq!(operator.registry().deregister("gone").await.unwrap(), 2);
    let reads = recording.reads.lock().unwrap().clone();
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
