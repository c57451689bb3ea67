//! coordkit-postgres across a server restart (its own binary: the restart
//! would fail the calls of any test running beside it).

mod common;

use std::time::Duration;

use coordkit::{Backend, BackendExt, WatchRequest};
use futures::StreamExt;

/// A watch and a lease survive `pg_ctl restart`: calls fail with retryable
/// errors meanwhile, the watch resumes with nothing lost or duplicated, and
/// the lease (TTL longer than the outage) is still alive after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL (./scripts/test.sh runs it)"]
async fn a_watch_and_a_lease_survive_a_server_restart() {
    let schema = common::fresh_schema("restart");
    let store = common::connect(&schema).await;
    let lease = store.lease_grant(30).await.unwrap();
    let mut watch = store.watch(WatchRequest::prefix("r/")).await.unwrap();
    let before = store.put("r/before", "1").await.unwrap();
    common::restart_server();
    // The first calls may meet connections the restart closed.
    let failed = store.put("r/probe", "x").await;
    if let Err(e) = &failed {
        assert!(
            e.is_retryable(),
            "a call across the restart failed for good: {e}"
        );
    }
    let after = common::eventually("a put after the restart", || store.put("r/after", "2")).await;
    common::eventually("a keep-alive after the restart", || {
        store.lease_keep_alive(lease.id)
    })
    .await;
    // The probe may or may not have applied (its answer may be lost): read
    // until the last put's event.
    let mut seen: Vec<(i64, String)> = Vec::new();
    while seen.last().map(|(_, k)| k.as_str()) != Some("r/after") {
        let r = tokio::time::timeout(Duration::from_secs(10), watch.next())
            .await
            .expect("no event within 10 s of the restart")
            .expect("the watch ended")
            .expect("the watch failed");
        seen.push((r.revision, r.events[0].kv.key_str()));
    }
    assert_eq!(seen.first(), Some(&(before, "r/before".to_string())));
    assert_eq!(seen.last(), Some(&(after, "r/after".to_string())));
    let revisions: Vec<_> = seen.iter().map(|(r, _)| *r).collect();
    let mut sorted = revisions.clone();
    sorted.dedup();
    assert_eq!(revisions, sorted, "an event came twice or out of order");
}
