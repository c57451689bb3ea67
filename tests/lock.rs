//! Lock and session properties that need the in-memory store's view: the work a
//! release causes, the exact timing of a session's deadline on the paused clock,
//! retries through injected failures, and cancellation by timeout.

use std::sync::Arc;
use std::time::Duration;

use coordkit::testing::{Intercept, Intercepted};
use coordkit::{Backend, BackendExt, Coordinator, Error, RangeRequest, SessionState};
use coordkit_memory::MemoryBackend;
use tokio::sync::mpsc;
use tokio::time::Instant;

const TTL: Duration = Duration::from_secs(6);

async fn keys(store: &MemoryBackend, prefix: &str) -> i64 {
    store
        .range(RangeRequest::prefix(prefix).count_only())
        .await
        .unwrap()
        .count
}

async fn wait_for_keys(store: &MemoryBackend, prefix: &str, n: i64) {
    for _ in 0..1000 {
        if keys(store, prefix).await == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{prefix} never had {n} keys");
}

async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

/// One release wakes one waiter: 5 queued waiters, and a release costs two
/// transactions (the release, and the next waiter's look at the queue, which
/// re-checks its own key in the same read) and no range or new watch — not one
/// per waiter.
#[tokio::test(start_paused = true)]
async fn a_release_wakes_only_the_next_waiter() {
    let store = MemoryBackend::new();
    let holder = Coordinator::new(Arc::new(store.client()));
    let guard = holder.lock().acquire("herd", TTL).await.unwrap();
    let (acquired, mut acquisitions) = mpsc::unbounded_channel();
    let mut waiters = Vec::new();
    for i in 0..5 {
        let coordinator = Coordinator::new(Arc::new(store.client()));
        let acquired = acquired.clone();
        waiters.push(tokio::spawn(async move {
            let guard = coordinator.lock().acquire("herd", TTL).await.unwrap();
            acquired.send((i, guard)).unwrap();
        }));
        wait_for_keys(&store, "coord/lock/herd/", 2 + i).await;
    }
    // Let the waiters' early looks (in their first 60 ms of waiting) pass.
    tokio::time::sleep(Duration::from_secs(1)).await;
    settle().await;
    let before = store.stats();
    guard.unlock().await.unwrap();
    let (first, next_guard) = acquisitions.recv().await.unwrap();
    settle().await;
    let after = store.stats();
    assert_eq!(first, 0);
    assert_eq!(
        after.ranges - before.ranges,
        0,
        "ranges caused by one release"
    );
    assert_eq!(
        after.watches - before.watches,
        0,
        "watches caused by one release"
    );
    // The release and the woken waiter's re-check.
    assert_eq!(after.txns - before.txns, 2, "txns caused by one release");
    assert!(acquisitions.try_recv().is_err(), "only one waiter woke");
    next_guard.unlock().await.unwrap();
    for _ in 1..5 {
        let (_, g) = acquisitions.recv().await.unwrap();
        g.unlock().await.unwrap();
    }
    for w in waiters {
        w.await.unwrap();
    }
}

/// The session sends keep-alives every TTL/3; with keep-alives failing from the
/// start it is `Suspended` at the first failed one and `Lost` exactly at the local
/// deadline (grant time + TTL − TTL/10), while the store still holds the lease.
#[tokio::test(start_paused = true)]
async fn session_deadline_comes_before_the_store_expiry() {
    let store = MemoryBackend::new();
    let client = store.client();
    let coordinator = Coordinator::new(Arc::new(client.clone()));
    let start = Instant::now();
    let session = coordinator.session(TTL).await.unwrap();
    assert_eq!(session.deadline() - start, Duration::from_millis(5400));
    client.stall_keep_alives();
    let mut states = session.watch_state();
    states
        .wait_for(|s| *s == SessionState::Suspended)
        .await
        .unwrap();
    assert_eq!(
        start.elapsed(),
        TTL / 3,
        "suspended at the first failed keep-alive"
    );
    session.lost().await;
    assert_eq!(start.elapsed(), Duration::from_millis(5400));
    assert!(store.lease_time_to_live(session.lease()).await.is_ok());
}

/// Keep-alives failing until just before the deadline (a store restart that
/// took most of the TTL): the tries come closer as the deadline nears, so one
/// gets through after the store is back and the session lives on.
#[tokio::test(start_paused = true)]
async fn keep_alives_are_tried_more_often_as_the_deadline_nears() {
    let store = MemoryBackend::new();
    let client = store.client();
    let coordinator = Coordinator::new(Arc::new(client.clone()));
    let start = Instant::now();
    let session = coordinator.session(TTL).await.unwrap();
    let deadline = session.deadline();
    client.partition();
    // Back 200 ms before the deadline (5.4 s after the grant): with a
    // backoff of up to TTL/6 between tries, the next would come too late.
    tokio::time::sleep_until(deadline - Duration::from_millis(200)).await;
    client.heal();
    tokio::time::sleep_until(deadline + Duration::from_millis(1)).await;
    assert_eq!(
        session.state(),
        SessionState::Alive,
        "a keep-alive got through in the last 200 ms"
    );
    assert!(session.deadline() > deadline);
    assert!(start.elapsed() > Duration::from_millis(5400));
}

/// A keep-alive acknowledged after the deadline does not revive a lost session.
#[tokio::test(start_paused = true)]
async fn lost_is_final() {
    let store = MemoryBackend::new();
    let client = store.client();
    let coordinator = Coordinator::new(Arc::new(client.clone()));
    let session = coordinator.session(TTL).await.unwrap();
    client.partition();
    session.lost().await;
    client.heal();
    tokio::time::sleep(TTL).await;
    assert_eq!(session.state(), SessionState::Lost);
    assert!(!session.keep_alive().await.unwrap());
    let fresh = coordinator.session(TTL).await.unwrap();
    assert_ne!(fresh.lease(), session.lease());
}

/// Transient failures are retried by the coordinator: an acquire and an unlock go
/// through 3 injected failures each (the default policy tries 5 times).
#[tokio::test(start_paused = true)]
async fn acquire_and_unlock_ride_out_transient_failures() {
    let store = MemoryBackend::new();
    let client = store.client();
    let coordinator = Coordinator::new(Arc::new(client.clone()));
    coordinator.session(TTL).await.unwrap();
    client.fail_next(3);
    let guard = coordinator.lock().acquire("flaky", TTL).await.unwrap();
    client.fail_next(3);
    guard.unlock().await.unwrap();
    assert_eq!(keys(&store, "coord/lock/flaky/").await, 0);
    // Beyond the policy, the error surfaces; the lock works again afterwards.
    client.partition();
    let err = coordinator.lock().acquire("flaky", TTL).await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    client.heal();
    let guard = coordinator.lock().acquire("flaky", TTL).await.unwrap();
    assert_eq!(keys(&store, "coord/lock/flaky/").await, 1);
    guard.unlock().await.unwrap();
}

/// An acquire given up by `tokio::time::timeout` removes its key, so the next
/// waiter gets the lock when the holder releases, long before the TTL.
#[tokio::test(start_paused = true)]
async fn acquire_cancelled_by_timeout_does_not_block_the_next_waiter() {
    let store = MemoryBackend::new();
    let a = Coordinator::new(Arc::new(store.client()));
    let b = Coordinator::new(Arc::new(store.client()));
    let c = Coordinator::new(Arc::new(store.client()));
    let held = a.lock().acquire("t", TTL).await.unwrap();
    let gave_up =
        tokio::time::timeout(Duration::from_millis(500), b.lock().acquire("t", TTL)).await;
    assert!(gave_up.is_err());
    wait_for_keys(&store, "coord/lock/t/", 1).await;
    let start = Instant::now();
    let waiting = tokio::spawn(async move { c.lock().acquire("t", TTL).await });
    wait_for_keys(&store, "coord/lock/t/", 2).await;
    held.unlock().await.unwrap();
    let guard = waiting.await.unwrap().unwrap();
    assert!(
        start.elapsed() < TTL,
        "served by the release, not by an expiry"
    );
    guard.unlock().await.unwrap();
}

/// Keys are etcd's: `<namespace>lock/<name>/<lease hex>`, with another namespace too.
#[tokio::test]
async fn keys_follow_etcds_layout() {
    let store = MemoryBackend::new();
    let coordinator = Coordinator::builder(Arc::new(store.client()))
        .namespace("tenant-a/")
        .build()
        .unwrap();
    let guard = coordinator.lock().acquire("jobs", TTL).await.unwrap();
    let lease = guard.session().lease();
    assert_eq!(guard.key(), format!("tenant-a/lock/jobs/{:x}", lease.0));
    let kv = store.get(guard.key()).await.unwrap().unwrap();
    assert_eq!(kv.lease, Some(lease));
    assert_eq!(kv.create_revision, guard.fencing_token());
    let leader = coordinator
        .election()
        .campaign("primary", "me")
        .await
        .unwrap();
    let lease = leader.session().lease();
    assert_eq!(
        leader.key(),
        format!("tenant-a/election/primary/{:x}", lease.0)
    );
    let bad = Coordinator::builder(Arc::new(store.client()))
        .namespace("a\nb")
        .build();
    assert!(matches!(
        bad,
        Err(Error::InvalidArgument {
            argument: "namespace",
            ..
        })
    ));
}

/// A waiter whose watch is live (the backend says so) reads nothing while it
/// waits: its claim, then one look once the release arrives.
#[tokio::test(start_paused = true)]
async fn a_waiter_on_a_live_watch_reads_nothing_while_waiting() {
    let store = MemoryBackend::new();
    let holder = Coordinator::new(Arc::new(store.client()));
    let guard = holder.lock().acquire("live", TTL).await.unwrap();
    let waiter = Coordinator::new(Arc::new(store.client()));
    let before = store.stats();
    let queued = tokio::spawn(async move { waiter.lock().acquire("live", TTL).await });
    wait_for_keys(&store, "coord/lock/live/", 2).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        store.stats().txns - before.txns,
        1,
        "txns while waiting 5 s"
    );
    let released = store.stats();
    guard.unlock().await.unwrap();
    let next = queued.await.unwrap().unwrap();
    // The release, then the waiter's look.
    assert_eq!(store.stats().txns - released.txns, 2, "txns of the handoff");
    next.unlock().await.unwrap();
}

/// A waiter next in line whose watch is not known to be live (held back, as
/// etcd's watch registered lagging) glances at the queue a few times in its
/// first 100 ms (etcd's catch-up serves such a watch within that time), then
/// waits on its watch alone: a bounded number of extra reads, no polling.
#[tokio::test(start_paused = true)]
async fn a_waiter_glances_a_few_times_early_then_only_watches() {
    let store = MemoryBackend::new();
    let holder = Coordinator::new(Arc::new(store.client()));
    let guard = holder.lock().acquire("early", TTL).await.unwrap();
    let lagging = store.client();
    lagging.lag_new_watches(Some(Duration::from_secs(10)));
    let waiter = Coordinator::new(Arc::new(lagging));
    let before = store.stats();
    let queued = tokio::spawn(async move { waiter.lock().acquire("early", TTL).await });
    wait_for_keys(&store, "coord/lock/early/", 2).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let waited = store.stats();
    // The claim, the look after the watch (the holder's release is its turn),
    // and six glances (4, 6, 10, 18, 34, 66 ms: one release late at the
    // assumed 2 ms per release, then doubling gaps); none after 100 ms.
    assert_eq!(waited.txns - before.txns, 8, "txns while waiting 5 s");
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(
        store.stats().txns,
        waited.txns,
        "no reads after the first 100 ms of the wait"
    );
    assert_eq!(
        waited.watches - before.watches,
        1,
        "one watch, on the predecessor"
    );
    guard.unlock().await.unwrap();
    queued.await.unwrap().unwrap().unlock().await.unwrap();
}

/// A waiter glances at the pace its queue has moved at: after waits behind holds
/// of 50 ms, the glances of a watch not known to be live assume the slowest pace
/// (10 ms per release), four in its first 100 ms instead of six.
#[tokio::test(start_paused = true)]
async fn a_waiter_glances_at_the_pace_its_queue_moved_at() {
    let store = MemoryBackend::new();
    let holder = Coordinator::new(Arc::new(store.client()));
    let lagging = store.client();
    let waiter = Coordinator::new(Arc::new(lagging.clone()));
    for _ in 0..30 {
        let guard = holder.lock().acquire("slow", TTL).await.unwrap();
        let w = waiter.clone();
        let queued = tokio::spawn(async move { w.lock().acquire("slow", TTL).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        guard.unlock().await.unwrap();
        queued.await.unwrap().unwrap().unlock().await.unwrap();
    }
    // Past the time a finished wait's watch is kept: the next wait needs a new one.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let guard = holder.lock().acquire("slow", TTL).await.unwrap();
    lagging.lag_new_watches(Some(Duration::from_secs(10)));
    let before = store.stats();
    let w = waiter.clone();
    let queued = tokio::spawn(async move { w.lock().acquire("slow", TTL).await });
    wait_for_keys(&store, "coord/lock/slow/", 2).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    // The claim, the look after the watch, and glances at about 20, 30, 49
    // and 89 ms.
    assert_eq!(
        store.stats().txns - before.txns,
        6,
        "txns while waiting 5 s"
    );
    guard.unlock().await.unwrap();
    queued.await.unwrap().unwrap().unlock().await.unwrap();
}

/// A waiter further back needs no look after its watch when the watch starts
/// right after its claim's read (the backend says so): the claim and its
/// glances (its watch held back, not known to be live) are all it reads while
/// it waits.
#[tokio::test(start_paused = true)]
async fn a_waiter_further_back_skips_the_look_after_its_watch() {
    let store = MemoryBackend::new();
    let holder = Coordinator::new(Arc::new(store.client()));
    let guard = holder.lock().acquire("back", TTL).await.unwrap();
    let first = Coordinator::new(Arc::new(store.client()));
    let next = tokio::spawn(async move { first.lock().acquire("back", TTL).await });
    wait_for_keys(&store, "coord/lock/back/", 2).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before = store.stats();
    let lagging = store.client();
    lagging.lag_new_watches(Some(Duration::from_secs(10)));
    let second = Coordinator::new(Arc::new(lagging));
    let last = tokio::spawn(async move { second.lock().acquire("back", TTL).await });
    wait_for_keys(&store, "coord/lock/back/", 3).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    // The claim, then six glances (4, 6, 10, 18, 34, 66 ms with two ahead).
    assert_eq!(
        store.stats().txns - before.txns,
        7,
        "txns of the last waiter"
    );
    guard.unlock().await.unwrap();
    next.await.unwrap().unwrap().unlock().await.unwrap();
    last.await.unwrap().unwrap().unlock().await.unwrap();
}

/// A claim that reaches the store after its session's lease was revoked is
/// `LockExpired` for a lock and for a campaign alike, never the
/// primitive's `LeaseNotFound`, and leaves no key.
#[tokio::test(start_paused = true)]
async fn a_claim_on_a_revoked_lease_is_expired_not_lease_not_found() {
    let store = MemoryBackend::new();
    let coordinator = Coordinator::new(Arc::new(store.client()));
    let session = coordinator.session(TTL).await.unwrap();
    // The lease ends under the session before its owner notices.
    store.lease_revoke(session.lease()).await.unwrap();
    let err = coordinator.lock().acquire("gone", TTL).await.unwrap_err();
    assert!(matches!(err, Error::LockExpired { .. }), "lock: {err:?}");
    let err = coordinator
        .election()
        .with_ttl(TTL)
        .campaign("gone", "me")
        .await
        .map(|_| ())
        .unwrap_err();
    assert!(
        matches!(err, Error::LockExpired { .. }),
        "campaign: {err:?}"
    );
    assert_eq!(keys(&store, "coord/").await, 0);
}

/// A coordinator used with many TTLs keeps a bounded set of sessions: past a
/// few, the sessions nobody holds are dropped (their leases revoked), while the
/// ones in use stay.
#[tokio::test(start_paused = true)]
async fn sessions_of_many_ttls_stay_bounded() {
    let store = MemoryBackend::new();
    let coordinator = Coordinator::new(Arc::new(store.client()));
    let held = coordinator.lock().acquire("kept", TTL).await.unwrap();
    let mut leases = Vec::new();
    for secs in 10..50 {
        let guard = coordinator
            .lock()
            .acquire("many", Duration::from_secs(secs))
            .await
            .unwrap();
        leases.push(guard.session().lease());
        guard.unlock().await.unwrap();
    }
    settle().await;
    let mut alive = 0;
    for lease in &leases {
        if store.lease_time_to_live(*lease).await.is_ok() {
            alive += 1;
        }
    }
    assert!(
        alive <= 8,
        "{alive} of {} unused sessions still hold a lease",
        leases.len()
    );
    assert!(
        held.is_held().await.unwrap(),
        "a session in use was dropped"
    );
    held.unlock().await.unwrap();
}

/// After a compaction past an idle holder and an idle registration (whose watch
/// is then cut), neither re-watches the compacted revision in a loop: over 5 s
/// only a couple of watches are opened, and a later delete is still seen.
#[tokio::test(start_paused = true)]
async fn compaction_past_idle_watchers_opens_no_watch_loop() {
    let store = MemoryBackend::new();
    let client = store.client();
    let coordinator = Coordinator::new(Arc::new(client.clone()));
    let guard = coordinator.lock().acquire("c", TTL).await.unwrap();
    let registration = coordinator
        .registry()
        .register(
            coordkit::ServiceInfo::new("i-1", "api", "127.0.0.1", 80),
            TTL,
        )
        .await
        .unwrap();
    settle().await;
    for i in 0..5 {
        store.put(format!("noise/{i}"), "x").await.unwrap();
    }
    store.compact_now();
    client.cut_watches();
    let before = store.stats().watches;
    let lost = tokio::time::timeout(Duration::from_secs(5), guard.lost()).await;
    assert!(lost.is_err(), "lost without a cause: {lost:?}");
    let opened = store.stats().watches - before;
    assert!(
        opened <= 4,
        "{opened} watches opened in 5 s after a compaction"
    );
    let (why, _) = tokio::join!(guard.lost(), async {
        settle().await;
        store.delete(guard.key()).await.unwrap()
    });
    assert_eq!(why, coordkit::OwnershipLost::KeyDeleted);
    assert_eq!(
        registration.state(),
        coordkit::RegistrationState::Registered
    );
}

/// A lock's (`permits: None`) or a semaphore's claim of `name` on `c`.
async fn claim(c: &Coordinator, name: &str, permits: Option<u32>) -> coordkit::LockGuard {
    match permits {
        None => c.lock().acquire(name, TTL).await.unwrap(),
        Some(permits) => c.semaphore().acquire(name, permits, TTL).await.unwrap(),
    }
}

/// A semaphore's release wakes at most as many waiters as it has permits, never
/// the queue: with 2 permits and 6 waiters queued (each watching the 2 claims
/// nearest before its own), the oldest holder's release wakes only the first
/// waiter (two transactions: the release and its look); the newest holder's
/// release wakes the two waiters that watch it, and admits only the first (the
/// other looks, finds two claims still before it, and watches again).
#[tokio::test(start_paused = true)]
async fn a_semaphore_release_wakes_at_most_its_permits_waiters() {
    let store = MemoryBackend::new();
    let holder = Coordinator::new(Arc::new(store.client()));
    let older = holder.semaphore().acquire("herd", 2, TTL).await.unwrap();
    let newer = holder.semaphore().acquire("herd", 2, TTL).await.unwrap();
    let (admitted, mut admissions) = mpsc::unbounded_channel();
    for i in 0..6 {
        let coordinator = Coordinator::new(Arc::new(store.client()));
        let admitted = admitted.clone();
        tokio::spawn(async move {
            let guard = coordinator
                .semaphore()
                .acquire("herd", 2, TTL)
                .await
                .unwrap();
            admitted.send((i, guard)).unwrap();
        });
        wait_for_keys(&store, "coord/semaphore/herd/", 3 + i).await;
    }
    // Past the waiters' early looks: from here only their watches wake them.
    tokio::time::sleep(Duration::from_secs(1)).await;
    settle().await;

    let before = store.stats();
    older.unlock().await.unwrap();
    let (first, first_guard) = admissions.recv().await.unwrap();
    settle().await;
    let after = store.stats();
    assert_eq!(first, 0);
    assert!(admissions.try_recv().is_err(), "only one waiter admitted");
    assert_eq!(
        after.txns - before.txns,
        2,
        "txns caused by the oldest's release"
    );
    assert_eq!(after.ranges - before.ranges, 0, "ranges caused by it");
    assert_eq!(after.watches - before.watches, 0, "watches caused by it");

    // Held: `newer`, then waiter 0, the newest holder, which waiters 1 and 2
    // watch (waiter 1 watches `newer` too, waiter 2 waiter 1).
    tokio::time::sleep(Duration::from_secs(1)).await;
    settle().await;
    let before = store.stats();
    first_guard.unlock().await.unwrap();
    let (second, second_guard) = admissions.recv().await.unwrap();
    settle().await;
    let after = store.stats();
    assert_eq!(second, 1);
    assert!(admissions.try_recv().is_err(), "only one waiter admitted");
    assert_eq!(
        after.txns - before.txns,
        3,
        "txns caused by the newest holder's release: it, and the looks of the two waiters watching it"
    );
    assert_eq!(after.ranges - before.ranges, 0, "ranges caused by it");
    assert!(
        after.watches - before.watches <= 1,
        "watches caused by it: at most the re-queued waiter's"
    );
    newer.unlock().await.unwrap();
    second_guard.unlock().await.unwrap();
    for _ in 2..6 {
        let (_, g) = admissions.recv().await.unwrap();
        g.unlock().await.unwrap();
    }
}

/// A waiter queued behind the same key as in its last wait (a contender that
/// released and claimed again) waits on the watch that wait left: one watch for
/// ten handoffs, for a lock and for a semaphore. The watch also carried the
/// holder's earlier claims and releases; none of them is taken for the release
/// of the claim it waits for: each wait reads its claim and one look after the
/// release, and ends only after that release.
#[tokio::test(start_paused = true)]
async fn a_waiter_behind_the_same_key_again_reuses_its_watch() {
    for (permits, prefix) in [
        (None, "coord/lock/again/"),
        (Some(1), "coord/semaphore/again/"),
    ] {
        let store = MemoryBackend::new();
        let holder = Coordinator::new(Arc::new(store.client()));
        let waiter = Coordinator::new(Arc::new(store.client()));
        let before = store.stats();
        for _ in 0..10 {
            // A claim and a release of the holder in between, then its claim.
            claim(&holder, "again", permits)
                .await
                .unlock()
                .await
                .unwrap();
            let guard = claim(&holder, "again", permits).await;
            let w = waiter.clone();
            let round = store.stats();
            let queued = tokio::spawn(async move { claim(&w, "again", permits).await });
            wait_for_keys(&store, prefix, 2).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert!(!queued.is_finished(), "held while the holder holds");
            guard.unlock().await.unwrap();
            queued.await.unwrap().unlock().await.unwrap();
            // The waiter's claim, the release, the waiter's look, its release.
            assert_eq!(
                store.stats().txns - round.txns,
                4,
                "txns of a round, {prefix}"
            );
        }
        let watches = store.stats().watches - before.watches;
        assert_eq!(watches, 1, "watches created, {prefix}");
    }
}

/// A waiter behind the same key again whose predecessor ends between its claim
/// and its wait learns it from what the kept watch buffered: the lock (or the
/// permit) is its own with no time passing.
#[tokio::test(start_paused = true)]
async fn a_predecessor_gone_before_a_kept_watch_is_read_is_seen_at_once() {
    for (permits, prefix) in [
        (None, "coord/lock/kept/"),
        (Some(1), "coord/semaphore/kept/"),
    ] {
        let store = MemoryBackend::new();
        let holder = Coordinator::new(Arc::new(store.client()));
        let ends = Arc::new(EndsBeforeWatch::over(store.client(), None, true));
        let waiter = Coordinator::new(ends.clone());
        // A first wait behind the holder leaves a watch on its key.
        let guard = claim(&holder, "kept", permits).await;
        let w = waiter.clone();
        let queued = tokio::spawn(async move { claim(&w, "kept", permits).await });
        wait_for_keys(&store, prefix, 2).await;
        guard.unlock().await.unwrap();
        queued.await.unwrap().unlock().await.unwrap();
        // The holder claims again; its key ends right after the waiter's claim.
        let guard = claim(&holder, "kept", permits).await;
        *ends.intercept().key.lock().unwrap() = Some(guard.key().as_bytes().to_vec());
        let watches = store.stats().watches;
        let started = Instant::now();
        let w = waiter.clone();
        let queued = tokio::spawn(async move { claim(&w, "kept", permits).await });
        for _ in 0..1000 {
            if queued.is_finished() {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(queued.is_finished(), "{prefix}: the claim waited");
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert_eq!(store.stats().watches, watches, "{prefix}: no new watch");
        queued.await.unwrap().unlock().await.unwrap();
        drop(guard);
    }
}

/// A namespace without a trailing `/` gets one, so `prod` never shares keys
/// with `production`; the lock's key shows it.
#[tokio::test(start_paused = true)]
async fn a_namespace_always_ends_with_a_slash() {
    let store = MemoryBackend::new();
    let prod = Coordinator::builder(Arc::new(store.client()))
        .namespace("prod")
        .build()
        .unwrap();
    assert_eq!(prod.namespace(), "prod/");
    let guard = prod.lock().acquire("x", TTL).await.unwrap();
    assert!(guard.key().starts_with("prod/lock/x/"), "{}", guard.key());
    guard.unlock().await.unwrap();
    let root = Coordinator::builder(Arc::new(store.client()))
        .namespace("")
        .build()
        .unwrap();
    assert_eq!(root.namespace(), "");
}

/// Deletes one key just before a watch on it is created: a claim ahead that ends
/// between a waiter's read of the queue and its watch. With `after_txn`, right
/// after the next transaction instead (a waiter's claim, before it waits).
struct EndsBeforeWatch {
    key: std::sync::Mutex<Option<Vec<u8>>>,
    after_txn: bool,
}

impl EndsBeforeWatch {
    /// `store`, with `key` (if any) ending as above.
    fn over(
        store: MemoryBackend,
        key: Option<Vec<u8>>,
        after_txn: bool,
    ) -> Intercepted<MemoryBackend, Self> {
        let key = std::sync::Mutex::new(key);
        Intercepted::new(store, EndsBeforeWatch { key, after_txn })
    }
}

#[async_trait::async_trait]
impl Intercept<MemoryBackend> for EndsBeforeWatch {
    async fn txn(
        &self,
        inner: &MemoryBackend,
        txn: coordkit::Txn,
    ) -> coordkit::Result<coordkit::TxnResponse> {
        let resp = inner.txn(txn).await?;
        let ends = match self.after_txn {
            true => self.key.lock().unwrap().take(),
            false => None,
        };
        if let Some(key) = ends {
            inner.delete(key).await?;
        }
        Ok(resp)
    }
    async fn watch_reporting_start(
        &self,
        inner: &MemoryBackend,
        request: coordkit::WatchRequest,
    ) -> coordkit::Result<(coordkit::WatchStream, Option<coordkit::WatchStart>)> {
        let ends = {
            let mut key = self.key.lock().unwrap();
            // The key's watch: on the key, or on its session's claims.
            key.take_if(|k| !self.after_txn && k.starts_with(request.keys.start()))
        };
        if let Some(key) = ends {
            inner.delete(key).await?;
        }
        inner.watch_reporting_start(request).await
    }
}

/// A waiter further back whose predecessor ends between its read of the queue
/// and its watch (the watch then starts after that read) learns it right after
/// the watch exists, not from a glance later: released at once, the lock is its
/// own with no time passing.
#[tokio::test(start_paused = true)]
async fn a_predecessor_gone_before_the_watch_is_seen_at_once() {
    let store = MemoryBackend::new();
    let holder = Coordinator::new(Arc::new(store.client()));
    let guard = holder.lock().acquire("gap", TTL).await.unwrap();
    let second = Coordinator::new(Arc::new(store.client()));
    let queued = tokio::spawn(async move { second.lock().acquire("gap", TTL).await });
    wait_for_keys(&store, "coord/lock/gap/", 2).await;
    let queue = store
        .range(
            RangeRequest::prefix("coord/lock/gap/")
                .sort_by_create_revision(coordkit::SortOrder::Ascend),
        )
        .await
        .unwrap();
    let backend = EndsBeforeWatch::over(store.client(), Some(queue.kvs[1].key.clone()), false);
    let third = Coordinator::new(Arc::new(backend));
    let last = tokio::spawn(async move { third.lock().acquire("gap", TTL).await });
    // The third claims behind two, finds the second's key gone after its watch,
    // and queues behind the holder; no time passes.
    for _ in 0..1000 {
        if keys(&store, "coord/lock/gap/").await == 2 {
            break;
        }
        tokio::task::yield_now().await;
    }
    settle().await;
    let started = Instant::now();
    guard.unlock().await.unwrap();
    for _ in 0..1000 {
        if last.is_finished() {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(last.is_finished(), "the lock waited for a glance");
    assert_eq!(started.elapsed(), Duration::ZERO);
    last.await.unwrap().unwrap().unlock().await.unwrap();
    // The second's key was removed under it: its wait ends as expired.
    assert!(matches!(
        queued.await.unwrap(),
        Err(Error::LockExpired { .. })
    ));
}

/// The same for a semaphore's waiter: the blocking key it watches ends between
/// its read and its watch; released at once, the permit is its own with no time
/// passing.
#[tokio::test(start_paused = true)]
async fn a_blocking_permit_gone_before_the_watch_is_seen_at_once() {
    let store = MemoryBackend::new();
    let holder = Coordinator::new(Arc::new(store.client()));
    let permit = holder.semaphore().acquire("gap", 1, TTL).await.unwrap();
    let second = Coordinator::new(Arc::new(store.client()));
    let queued = tokio::spawn(async move { second.semaphore().acquire("gap", 1, TTL).await });
    wait_for_keys(&store, "coord/semaphore/gap/", 2).await;
    let queue = store
        .range(
            RangeRequest::prefix("coord/semaphore/gap/")
                .sort_by_create_revision(coordkit::SortOrder::Ascend),
        )
        .await
        .unwrap();
    let backend = EndsBeforeWatch::over(store.client(), Some(queue.kvs[1].key.clone()), false);
    let third = Coordinator::new(Arc::new(backend));
    let last = tokio::spawn(async move { third.semaphore().acquire("gap", 1, TTL).await });
    for _ in 0..1000 {
        if keys(&store, "coord/semaphore/gap/").await == 2 {
            break;
        }
        tokio::task::yield_now().await;
    }
    settle().await;
    let started = Instant::now();
    permit.unlock().await.unwrap();
    for _ in 0..1000 {
        if last.is_finished() {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(last.is_finished(), "the permit waited for a glance");
    assert_eq!(started.elapsed(), Duration::ZERO);
    last.await.unwrap().unwrap().unlock().await.unwrap();
    // The second's key was removed under it.
    assert!(matches!(
        queued.await.unwrap(),
        Err(Error::LockExpired { .. })
    ));
}
