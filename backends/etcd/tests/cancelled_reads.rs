//! etcd 3.5.0–3.5.4 panic when the client cancels a read-only transaction while
//! etcd applies it (etcd-io/etcd#14110, fixed in 3.5.5): coordkit's recipes drop
//! such reads when a caller's future is dropped or a request times out, so the
//! etcd backend lets a read-only transaction finish on the server once sent.
//! Here thousands of slow read-only transactions are dropped mid-flight, on a
//! private etcd of whatever version is on PATH (CI: 3.4.23, then 3.5.1), and
//! etcd must still answer.

mod common;

use std::time::Duration;

use common::process::{etcd_binary_available, EtcdProcess};
use coordkit::{Backend, BackendExt, RangeRequest, ReadConsistency, Txn};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs etcd (./scripts/test.sh runs it)"]
async fn read_only_transactions_dropped_mid_flight_leave_etcd_running() {
    assert!(etcd_binary_available());
    let mut etcd = EtcdProcess::start();
    let backend = EtcdProcess::connect_to(etcd.client_port).await;
    // A read etcd takes a while to apply: 2,000 keys of 1 KiB.
    let value = vec![b'v'; 1024];
    for i in 0..2000 {
        backend
            .put(format!("slow/{i:05}"), value.clone())
            .await
            .expect("put");
    }
    for consistency in [ReadConsistency::Observed, ReadConsistency::Latest] {
        let read = Txn::new()
            .and_then([RangeRequest::prefix("slow/")])
            .with_consistency(consistency);
        for i in 0..400u64 {
            // Dropped after 0 to 3 ms: some before they are sent, some while
            // etcd applies them, some after.
            let wait = Duration::from_micros((i * 7919) % 3000);
            let _ = tokio::time::timeout(wait, backend.txn(read.clone())).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        etcd.is_running(),
        "etcd exited after read-only transactions were dropped mid-flight"
    );
    let n = backend
        .range(RangeRequest::prefix("slow/").count_only())
        .await
        .expect("etcd still answers");
    assert_eq!(n.count, 2000);
}
