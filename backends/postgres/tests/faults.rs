//! coordkit-postgres under the faults a real server produces: concurrent and
//! rolled-back writers, a terminated listening connection, a lease whose
//! granting handle is gone, a pooler without LISTEN.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use coordkit::{
    Backend, BackendExt, Compare, CompareOp, CompareTarget, Error, LeaseId, PutRequest, Revision,
    Txn, WatchRequest, WatchResponse, WatchStream,
};
use coordkit_postgres::PostgresBackend;
use futures::StreamExt;

/// The next response of `w`, or a failure naming `what` after 10 s.
async fn next(w: &mut WatchStream, what: &str) -> WatchResponse {
    tokio::time::timeout(Duration::from_secs(10), w.next())
        .await
        .unwrap_or_else(|_| panic!("no watch response for {what} in 10 s"))
        .unwrap_or_else(|| panic!("the watch ended before {what}"))
        .unwrap_or_else(|e| panic!("the watch failed before {what}: {e}"))
}

/// Every revision a write took is one more than the last: 8 writers, some
/// of whose transactions fail their compare (no revision), name a missing
/// lease (rolled back) or delete nothing; a watch from the first revision
/// sees each write's revision exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs PostgreSQL (./scripts/test.sh runs it)"]
async fn revisions_have_no_gaps_under_concurrent_and_rolled_back_writers() {
    let schema = common::fresh_schema("gapless");
    let store = common::connect(&schema).await;
    let start = store.current_revision().await.unwrap();
    let mut watch = store
        .watch(WatchRequest::prefix("g/").from_revision(start + 1))
        .await
        .unwrap();
    let mut writers = Vec::new();
    for w in 0..8 {
        let store = common::connect(&schema).await;
        writers.push(tokio::spawn(async move {
            let mut revisions = Vec::new();
            for i in 0..40 {
                let key = format!("g/{w}/{i}");
                match i % 4 {
                    // A plain put: one revision.
                    0 | 1 => revisions.push(store.put(key, "v").await.unwrap()),
                    // A compare that fails, with no failure branch: none.
                    2 => {
                        let r = store
                            .txn(
                                Txn::new()
                                    .when([Compare {
                                        key: b"g/never".to_vec(),
                                        op: CompareOp::Equal,
                                        target: CompareTarget::Version(7),
                                    }])
                                    .and_then([PutRequest::new(key, "x")]),
                            )
                            .await
                            .unwrap();
                        assert!(!r.succeeded);
                    }
                    // A put on a lease that does not exist: rolled back.
                    _ => {
                        let r = store
                            .txn(Txn::new().and_then([
                                PutRequest::new(key.clone(), "a"),
                                PutRequest::new(format!("{key}/b"), "b").with_lease(LeaseId(1)),
                            ]))
                            .await;
                        assert!(matches!(r, Err(Error::LeaseNotFound { .. })), "{r:?}");
                        assert!(!store.delete(key).await.unwrap());
                    }
                }
            }
            revisions
        }));
    }
    let mut written = Vec::new();
    for w in writers {
        written.extend(w.await.unwrap());
    }
    written.sort_unstable();
    let expected: Vec<Revision> = (start + 1..=start + written.len() as i64).collect();
    assert_eq!(
        written, expected,
        "the writes' revisions have a gap or a repeat"
    );
    let mut seen = Vec::new();
    while seen.len() < written.len() {
        let r = next(&mut watch, "a write").await;
        assert_eq!(r.events.len(), 1);
        seen.push(r.revision);
    }
    assert_eq!(
        seen, expected,
        "the watch saw the revisions out of order, twice or not at all"
    );
}

/// A watch goes on across its feed's listening connection being terminated
/// (`pg_terminate_backend`): no event lost, none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL (./scripts/test.sh runs it)"]
async fn a_watch_survives_its_listener_being_terminated() {
    let schema = common::fresh_schema("listener");
    let store = common::connect(&schema).await;
    let writer = common::connect(&schema).await;
    let mut watch = store.watch(WatchRequest::prefix("w/")).await.unwrap();
    let first = writer.put("w/0", "0").await.unwrap();
    assert_eq!(next(&mut watch, "the first put").await.revision, first);
    let mut expected = Vec::new();
    for round in 0..3 {
        // The feed listens (again, after the last round's termination).
        common::wait_for_feed_listener(&schema).await;
        assert!(
            common::terminate_feed_listeners(&schema).await >= 1,
            "no listening connection of the feed was found to terminate"
        );
        for i in 0..5 {
            expected.push(writer.put(format!("w/{round}/{i}"), "v").await.unwrap());
        }
    }
    let mut seen = Vec::new();
    while seen.len() < expected.len() {
        seen.push(next(&mut watch, "a put after a termination").await.revision);
    }
    assert_eq!(seen, expected);
    // The feed listens again: a write after the last termination arrives.
    let last = writer.put("w/last", "v").await.unwrap();
    assert_eq!(next(&mut watch, "the last put").await.revision, last);
}

/// A lease whose granting handle is gone still ends (another handle reaps
/// it), in one revision with its keys; `LeaseNotFound` is never answered
/// while its key is readable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL (./scripts/test.sh runs it)"]
async fn a_lease_ends_when_its_granting_handle_is_gone() {
    let schema = common::fresh_schema("orphan");
    let survivor = common::connect(&schema).await;
    let lease = {
        let granter = common::connect(&schema).await;
        let lease = granter.lease_grant(2).await.unwrap();
        granter
            .txn(Txn::new().and_then([
                PutRequest::new("o/a", "1").with_lease(lease.id),
                PutRequest::new("o/b", "2").with_lease(lease.id),
            ]))
            .await
            .unwrap();
        lease
    };
    let mut watch = survivor.watch(WatchRequest::prefix("o/")).await.unwrap();
    let gone = next(&mut watch, "the lease's end").await;
    assert_eq!(
        gone.events.len(),
        2,
        "the keys went in one revision: {gone:?}"
    );
    assert!(matches!(
        survivor.lease_time_to_live(lease.id).await,
        Err(Error::LeaseNotFound { .. })
    ));
    assert!(survivor.get_prefix("o/").await.unwrap().is_empty());
}

/// A call that meets a lease past its deadline ends it before answering
/// `LeaseNotFound`: the keys are gone by then. The reaper is made slow here,
/// so the call, not the reaper, ends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL (./scripts/test.sh runs it)"]
async fn lease_not_found_never_comes_while_the_keys_are_readable() {
    let schema = common::fresh_schema("overdue");
    let slow = common::config(&schema).with_reap_interval(Duration::from_secs(3600));
    let store = PostgresBackend::connect(slow).await.unwrap();
    let lease = store.lease_grant(2).await.unwrap();
    store.put_with_lease("d/k", "v", lease.id).await.unwrap();
    // Past the deadline on the database clock (2 s), with no reaper running.
    tokio::time::sleep(Duration::from_millis(2600)).await;
    let answer = store.lease_keep_alive(lease.id).await;
    assert!(
        matches!(answer, Err(Error::LeaseNotFound { .. })),
        "{answer:?}"
    );
    assert!(
        store.get("d/k").await.unwrap().is_none(),
        "the key outlived the answer"
    );
}

/// Poll-only mode (no LISTEN, as behind PgBouncer in transaction mode)
/// still delivers every event, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL (./scripts/test.sh runs it)"]
async fn poll_only_watches_deliver_every_event() {
    let schema = common::fresh_schema("poll");
    let config = common::config(&schema)
        .poll_only()
        .with_poll_interval(Duration::from_millis(50));
    let store: Arc<dyn Backend> = Arc::new(PostgresBackend::connect(config).await.unwrap());
    let mut watch = store.watch(WatchRequest::prefix("p/")).await.unwrap();
    let mut expected = Vec::new();
    for i in 0..10 {
        expected.push(store.put(format!("p/{i}"), "v").await.unwrap());
    }
    let mut seen = BTreeSet::new();
    for _ in 0..10 {
        assert!(seen.insert(next(&mut watch, "a put").await.revision));
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), expected);
    assert_eq!(
        common::terminate_feed_listeners(&schema).await,
        0,
        "poll-only mode opened a listening connection"
    );
}

/// A call dropped at any point leaves the store usable: no meta row lock
/// held by a half-finished transaction, no connection returned to the pool
/// inside one. A write transaction dropped after its batch began applies or
/// not as a whole; a revoke dropped mid-way is rolled back or done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL (./scripts/test.sh runs it)"]
async fn calls_dropped_at_any_poll_leave_the_store_usable() {
    let schema = common::fresh_schema("dropped");
    let store = common::connect(&schema).await;
    for polls in 0..40 {
        // A write transaction, dropped after `polls` polls.
        let key = format!("c/{polls}");
        drop_after(polls, store.put(key.clone(), "v")).await;
        // A revoke of a lease with a key, dropped likewise.
        let lease = store.lease_grant(30).await.unwrap();
        store
            .put_with_lease(format!("c/lease/{polls}"), "v", lease.id)
            .await
            .unwrap();
        drop_after(polls, store.lease_revoke(lease.id)).await;
        // The store still answers writes at once, and what was dropped is
        // whole: the key is there or not; the lease and its key both are,
        // or neither.
        let after = tokio::time::timeout(Duration::from_secs(10), store.put("c/after", "x"))
            .await
            .unwrap_or_else(|_| panic!("a write hung after a call dropped at poll {polls}"));
        after.unwrap();
        let lease_alive = store.lease_time_to_live(lease.id).await.is_ok();
        let key_there = store
            .get(format!("c/lease/{polls}"))
            .await
            .unwrap()
            .is_some();
        assert_eq!(
            lease_alive, key_there,
            "a revoke dropped at poll {polls} left the lease and its key apart"
        );
    }
}

/// Poll `call` up to `polls` times (yielding between polls), then drop it.
async fn drop_after<F: std::future::Future>(polls: usize, call: F) {
    let mut call = std::pin::pin!(call);
    for _ in 0..polls {
        if futures::poll!(call.as_mut()).is_ready() {
            return;
        }
        tokio::task::yield_now().await;
    }
}

/// A write transaction whose range reads a compacted revision fails alone,
/// with `Compacted` and nothing of it applied, while a write batched with it
/// applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL (./scripts/test.sh runs it)"]
async fn a_range_at_a_compacted_revision_fails_its_transaction_alone() {
    let schema = common::fresh_schema("txnread");
    let store = common::connect(&schema).await;
    let old = store.put("r/a", "1").await.unwrap();
    let now = store.put("r/a", "2").await.unwrap();
    store.compact(now).await.unwrap();
    for round in 0..20 {
        let reading = Txn::new().and_then([
            coordkit::TxnOp::Put(PutRequest::new(format!("r/w/{round}"), "x")),
            coordkit::TxnOp::Range(coordkit::RangeRequest::key("r/a").at_revision(old)),
        ]);
        let (bad, good) = tokio::join!(
            store.txn(reading),
            store.put(format!("r/other/{round}"), "y")
        );
        assert!(
            matches!(bad, Err(Error::Compacted { compact_revision }) if compact_revision == now),
            "{bad:?}"
        );
        good.unwrap();
        assert!(store.get(format!("r/w/{round}")).await.unwrap().is_none());
    }
}
