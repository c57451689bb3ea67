//! Cancel-safety: every public call that writes is dropped after 0, 1, 2, …
//! polls (on the paused clock, with injected failures so its retries are await
//! points too), and what it leaves behind is checked: no key without an owner,
//! the lock or leadership free for the next comer, no loss faked.

use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use coordkit::{Backend, Coordinator, RangeRequest, ServiceInfo};
use coordkit_memory::MemoryBackend;

const TTL: Duration = Duration::from_secs(6);
/// Polls tried per call: more than any of them needs to finish.
const POLLS: usize = 24;

/// Poll `fut` up to `n` times, letting 50 ms of (paused) time pass between
/// polls; drop it unfinished, or return its output.
async fn poll_times<F: Future>(fut: F, n: usize) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    for _ in 0..n {
        if let Poll::Ready(v) = futures::poll!(fut.as_mut()) {
            return Some(v);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

async fn keys(store: &MemoryBackend, prefix: &str) -> i64 {
    store
        .range(RangeRequest::prefix(prefix).count_only())
        .await
        .unwrap()
        .count
}

/// Wait (bounded, on the paused clock) until `prefix` holds `n` keys.
async fn settles_at(store: &MemoryBackend, prefix: &str, n: i64, what: &str) {
    for _ in 0..600 {
        if keys(store, prefix).await == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "{what}: {prefix} has {} keys, not {n}",
        keys(store, prefix).await
    );
}

fn setup() -> (MemoryBackend, MemoryBackend, Coordinator, Coordinator) {
    let store = MemoryBackend::new();
    let client = store.client();
    let a = Coordinator::new(Arc::new(client.clone()));
    let b = Coordinator::new(Arc::new(store.client()));
    (store, client, a, b)
}

/// `acquire` dropped at any await leaves no key: another coordinator then takes
/// the lock at once.
#[tokio::test(start_paused = true)]
async fn acquire_dropped_at_any_await_leaves_no_key() {
    for n in 0..POLLS {
        let (store, client, a, b) = setup();
        let holder = b.lock().acquire("x", TTL).await.unwrap();
        client.fail_next(2);
        let waiting = {
            let a = a.clone();
            async move { a.lock().acquire("x", TTL).await }
        };
        let release = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            holder.unlock().await.unwrap();
        };
        let (got, ()) = tokio::join!(poll_times(waiting, n), release);
        if let Some(Ok(guard)) = got {
            guard.unlock().await.unwrap();
        }
        settles_at(
            &store,
            "coord/lock/x/",
            0,
            &format!("acquire dropped after {n} polls"),
        )
        .await;
        let next = tokio::time::timeout(Duration::from_secs(1), b.lock().try_acquire("x", TTL))
            .await
            .expect("try_acquire hung")
            .unwrap_or_else(|e| panic!("after {n} polls the lock is not free: {e}"));
        next.unlock().await.unwrap();
    }
}

/// `unlock` dropped at any await still releases the lock (in the background).
#[tokio::test(start_paused = true)]
async fn unlock_dropped_at_any_await_still_releases() {
    for n in 0..POLLS {
        let (store, client, a, b) = setup();
        let guard = a.lock().acquire("u", TTL).await.unwrap();
        client.fail_next(2);
        let _ = poll_times(guard.unlock(), n).await;
        settles_at(
            &store,
            "coord/lock/u/",
            0,
            &format!("unlock dropped after {n} polls"),
        )
        .await;
        b.lock()
            .try_acquire("u", TTL)
            .await
            .unwrap()
            .unlock()
            .await
            .unwrap();
        // The dropping coordinator is not blocked either.
        a.lock()
            .try_acquire("u", TTL)
            .await
            .unwrap()
            .unlock()
            .await
            .unwrap();
    }
}

/// `register` dropped at any await leaves no instance without a handle; a
/// finished one is deregistered by its drop.
#[tokio::test(start_paused = true)]
async fn register_dropped_at_any_await_leaves_no_instance() {
    for n in 0..POLLS {
        let (store, client, a, _b) = setup();
        a.session(TTL).await.unwrap();
        client.lose_next_response();
        client.fail_next(1);
        let info = ServiceInfo::new("i-1", "api", "127.0.0.1", 80);
        let registered = poll_times(a.registry().register(info, TTL), n).await;
        drop(registered);
        settles_at(
            &store,
            "coord/service/",
            0,
            &format!("register dropped after {n} polls"),
        )
        .await;
        // And it stays away (no keeper brings it back).
        tokio::time::sleep(TTL).await;
        assert_eq!(
            keys(&store, "coord/service/").await,
            0,
            "after {n} polls it came back"
        );
    }
}

/// `deregister` dropped at any await still removes the instance.
#[tokio::test(start_paused = true)]
async fn deregister_dropped_at_any_await_still_removes() {
    for n in 0..POLLS {
        let (store, client, a, _b) = setup();
        let info = ServiceInfo::new("i-1", "api", "127.0.0.1", 80);
        let registration = a.registry().register(info, TTL).await.unwrap();
        client.fail_next(2);
        let _ = poll_times(registration.deregister(), n).await;
        settles_at(
            &store,
            "coord/service/",
            0,
            &format!("deregister dropped after {n} polls"),
        )
        .await;
    }
}

/// `campaign` and `resign` dropped at any await leave no key: the other
/// candidate then leads.
#[tokio::test(start_paused = true)]
async fn campaign_and_resign_dropped_at_any_await_leave_no_key() {
    for n in 0..POLLS {
        let (store, client, a, b) = setup();
        client.fail_next(2);
        let won = poll_times(a.election().with_ttl(TTL).campaign("e", "a"), n).await;
        if let Some(Ok(leadership)) = won {
            client.fail_next(2);
            let _ = poll_times(leadership.resign(), n).await;
        }
        settles_at(
            &store,
            "coord/election/e/",
            0,
            &format!("campaign/resign dropped after {n} polls"),
        )
        .await;
        let next = tokio::time::timeout(
            Duration::from_secs(1),
            b.election().with_ttl(TTL).campaign("e", "b"),
        )
        .await
        .expect("the other candidate waits for a leader nobody is")
        .unwrap();
        next.resign().await.unwrap();
    }
}

/// `proclaim` dropped at any await (its tries failing or their responses lost)
/// never makes the leader take its own write for someone else's.
#[tokio::test(start_paused = true)]
async fn proclaim_dropped_at_any_await_fakes_no_loss() {
    for n in 0..POLLS {
        let (_store, client, a, _b) = setup();
        let leader = a
            .election()
            .with_ttl(TTL)
            .campaign("p", "one")
            .await
            .unwrap();
        client.lose_next_response();
        client.fail_next(1);
        let _ = poll_times(leader.proclaim("two"), n).await;
        let lost = tokio::time::timeout(Duration::from_secs(2), leader.lost()).await;
        assert!(lost.is_err(), "after {n} polls: {lost:?}");
        assert!(!leader.is_expired());
        leader.proclaim("three").await.unwrap();
        let lost = tokio::time::timeout(Duration::from_secs(2), leader.lost()).await;
        assert!(lost.is_err(), "after {n} polls, then a proclaim: {lost:?}");
        leader.resign().await.unwrap();
    }
}

/// `rollback_if_version` dropped at any await (its first tries failing, one
/// answer lost) leaves the key either restored once or as it was: never
/// written twice, never a third value.
#[tokio::test(start_paused = true)]
async fn rollback_if_version_dropped_at_any_await_restores_once_or_not_at_all() {
    for n in 0..POLLS {
        let (_store, client, a, b) = setup();
        let config = a.config();
        let old = config.set("k", &1).await.unwrap();
        let shown = config.set("k", &2).await.unwrap();
        client.fail_next(1);
        client.lose_next_response();
        let got = poll_times(config.rollback_if_version("k", old, shown), n).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let history = b.config().history::<i32>("k", 10).await.unwrap();
        let values: Vec<i32> = history.iter().map(|v| v.value).collect();
        match got {
            Some(Ok(v)) => assert_eq!(
                (values.as_slice(), history[0].version),
                (&[1, 2, 1][..], v),
                "after {n} polls"
            ),
            Some(Err(coordkit::Error::OutcomeUnknown { .. })) | None => assert!(
                values == [2, 1] || values == [1, 2, 1],
                "after {n} polls: {values:?}"
            ),
            Some(Err(e)) => panic!("after {n} polls: {e:?} ({values:?})"),
        }
    }
}

/// `apply_import` dropped at any await (its first tries failing, one answer
/// lost) leaves each batch applied whole or not at all: with two batches,
/// the keys of the first all new or all old, and the second never applied
/// before the first.
#[tokio::test(start_paused = true)]
async fn apply_import_dropped_at_any_await_leaves_each_batch_whole() {
    for n in 0..POLLS {
        let (store, client, a, b) = setup();
        let config = a.config();
        let per_txn = store.limits().max_txn_ops;
        let keys: Vec<serde_json::Value> = (0..per_txn + 2)
            .map(|i| serde_json::json!({"key": format!("imp/k-{i:04}"), "codec": "json", "version": 0, "text": "1"}))
            .collect();
        let document: coordkit::config::ConfigExport = serde_json::from_value(
            serde_json::json!({"prefix": "imp/", "revision": 0, "keys": keys}),
        )
        .unwrap();
        let plan = config.plan_import(&document, false).await.unwrap();
        client.fail_next(1);
        client.lose_next_response();
        let report = poll_times(config.apply_import(&plan), n).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let present = b.config().list("imp/").await.unwrap().len();
        assert!(
            present == 0 || present == per_txn || present == per_txn + 2,
            "after {n} polls: {present} keys ({report:?})"
        );
        if let Some(report) = report {
            if report.failed.is_none() {
                assert_eq!(present, per_txn + 2, "after {n} polls: reported applied");
            }
        }
    }
}

/// `register_persistent` dropped at any await (its first try failing, one
/// answer lost) leaves the instance and its index entry both written or
/// neither.
#[tokio::test(start_paused = true)]
async fn register_persistent_dropped_at_any_await_writes_whole_or_nothing() {
    for n in 0..POLLS {
        let (store, client, a, _b) = setup();
        client.fail_next(1);
        client.lose_next_response();
        let info = ServiceInfo::new("db-1", "api", "10.0.0.9", 5432);
        let got = poll_times(a.registry().register_persistent(info), n).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let instances = keys(&store, "coord/service/api/").await;
        let index = keys(&store, "coord/service-id/db-1/").await;
        assert_eq!(instances, index, "after {n} polls: whole or nothing");
        if let Some(Ok(_)) = got {
            assert_eq!(instances, 1, "after {n} polls: reported written");
        }
    }
}

/// `record_verdict` and `remove_probed` dropped at any await (a first try
/// failing, one answer lost) leave the verdict written or not, and the
/// instance with its index entry and verdict whole or removed whole.
#[tokio::test(start_paused = true)]
async fn probe_writes_dropped_at_any_await_are_whole() {
    use coordkit::{InstanceHealth, ProbeVerdict};
    for n in 0..POLLS {
        let (store, client, a, b) = setup();
        let info = ServiceInfo::new("db-1", "db", "10.0.0.9", 5432);
        b.registry().register_persistent(info).await.unwrap();
        let target = b.registry().probe_targets("db").await.unwrap().remove(0);
        let verdict = ProbeVerdict::new(
            InstanceHealth::Critical,
            target.create_revision,
            1,
            "refused",
            "p",
        );
        client.fail_next(1);
        client.lose_next_response();
        let got = poll_times(a.registry().record_verdict(&target, &verdict, None), n).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let read = b.registry().discover("db").await.unwrap();
        assert_eq!(read.len(), 1, "after {n} polls: the instance stays");
        assert!(
            read[0].probe.as_ref().is_none_or(|p| p == &verdict),
            "after {n} polls"
        );
        if let Some(Ok(true)) = got {
            assert_eq!(
                read[0].health,
                InstanceHealth::Critical,
                "after {n} polls: reported recorded"
            );
        }
        let target = b.registry().probe_targets("db").await.unwrap().remove(0);
        client.fail_next(1);
        client.lose_next_response();
        let got = poll_times(a.registry().remove_probed(&target, None), n).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let instance = keys(&store, "coord/service/db/").await;
        let index = keys(&store, "coord/service-id/db-1/").await;
        assert_eq!(instance.min(1), index, "after {n} polls: whole or nothing");
        if let Some(Ok(true)) = got {
            assert_eq!(
                instance, 0,
                "after {n} polls: reported removed, verdict included"
            );
        }
    }
}

/// `set_gray`, `promote_gray` and `drop_gray` dropped at any await (a first
/// try failing, one answer lost) leave each whole or undone: a release with
/// its value or none; after a promotion, the main value the gray one and the
/// release gone, or both as they were.
#[tokio::test(start_paused = true)]
async fn gray_release_writes_dropped_at_any_await_are_whole() {
    let zone = || coordkit::config::Labels::from([("zone".to_string(), "eu-1".to_string())]);
    for n in 0..POLLS {
        let (_store, client, a, b) = setup();
        let config = a.config();
        config.set("k", &1).await.unwrap();
        client.fail_next(1);
        client.lose_next_response();
        let _ = poll_times(config.set_gray("k", &2, zone()), n).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let gray = b.config().gray("k").await.unwrap();
        assert!(
            gray.as_ref().is_none_or(|g| g.value == b"2"),
            "after {n} polls: {gray:?}"
        );
        let Some(gray) = gray else { continue };
        client.lose_next_response();
        let _ = poll_times(config.promote_gray("k", gray.version), n).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let main = b.config().get::<i32>("k").await.unwrap();
        let left = b.config().gray("k").await.unwrap();
        assert!(
            (main == 2 && left.is_none()) || (main == 1 && left.is_some()),
            "after {n} polls: main {main}, release {left:?}"
        );
        if let Some(left) = left {
            client.lose_next_response();
            let _ = poll_times(config.drop_gray("k", left.version), n).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            assert_eq!(
                b.config().get::<i32>("k").await.unwrap(),
                1,
                "after {n} polls"
            );
        }
    }
}
