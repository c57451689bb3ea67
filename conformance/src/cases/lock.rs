//! Locks: exclusion, fencing, order, expiry while queued, cancellation, release rules.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coordkit::{BackendExt, Compare, CompareOp, Error, OwnershipLost, PutRequest, Result, Txn};

use crate::context::text;
use crate::context::{assert_invalid, count_keys, wait_for_keys, PATIENCE};
use crate::Ctx;

/// The prefix of lock `name` under the default namespace.
fn queue(name: &str) -> String {
    format!("coord/lock/{name}/")
}

/// 5 coordinators × 20 acquisitions: no two holders overlap, each read-modify-write
/// guarded by the fencing compare lands (final count 100), and the tokens of
/// successive holders strictly increase.
pub async fn lock_excludes_holders_and_tokens_increase(ctx: Ctx) -> Result<()> {
    let ttl = ctx.recipe_ttl();
    ctx.backend().put("counter", "0").await?;
    let inside = Arc::new(AtomicBool::new(false));
    let holds = Arc::new(Mutex::new(Vec::new()));
    let clock = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for client in 0..5 {
        let coordinator = ctx.other_coordinator().await;
        let (inside, holds, clock) = (inside.clone(), holds.clone(), clock.clone());
        tasks.push(tokio::spawn(async move {
            let b = coordinator.backend().clone();
            for _ in 0..20 {
                let guard = coordinator.lock().acquire("mutex", ttl).await?;
                let acquired = clock.fetch_add(1, Ordering::SeqCst);
                assert!(!inside.swap(true, Ordering::SeqCst), "two holders at once");
                let kv = b.get("counter").await?.expect("counter exists");
                let n: u64 = String::from_utf8_lossy(&kv.value)
                    .parse()
                    .expect("a number");
                tokio::task::yield_now().await;
                let write = Txn::new()
                    .when([
                        guard.compare(),
                        Compare::mod_revision("counter", CompareOp::Equal, kv.mod_revision),
                    ])
                    .and_then([PutRequest::new("counter", (n + 1).to_string())]);
                let written = b.txn(write).await?;
                assert!(written.succeeded, "a holder's guarded write failed");
                holds.lock().unwrap().push(crate::lock_safety::Hold {
                    client,
                    token: guard.fencing_token(),
                    acquired,
                    writes: vec![written.revision],
                });
                inside.store(false, Ordering::SeqCst);
                guard.unlock().await?;
            }
            coordinator.close().await
        }));
    }
    for t in tasks {
        t.await.expect("contender task")?;
    }
    let counter = ctx.backend().get("counter").await?.expect("counter");
    assert_eq!(
        String::from_utf8_lossy(&counter.value),
        "100",
        "every fenced read-modify-write of 100 holds must land"
    );
    let holds = holds.lock().unwrap().clone();
    assert_eq!(holds.len(), 100);
    if let Err(e) = crate::lock_safety::check(&holds) {
        panic!("the lock is not safe: {e}");
    }
    Ok(())
}

/// Waiters get the lock in the order they arrived.
pub async fn lock_waiters_are_served_in_arrival_order(ctx: Ctx) -> Result<()> {
    let ttl = ctx.recipe_ttl();
    let b = ctx.backend();
    let holder = ctx.coordinator().lock().acquire("fifo", ttl).await?;
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..4 {
        let coordinator = ctx.other_coordinator().await;
        let order = order.clone();
        tasks.push(tokio::spawn(async move {
            let guard = coordinator.lock().acquire("fifo", ttl).await?;
            order.lock().unwrap().push(i);
            guard.unlock().await?;
            coordinator.close().await
        }));
        // Waiter i is queued before waiter i + 1 arrives.
        wait_for_keys(b.as_ref(), &queue("fifo"), 2 + i).await?;
    }
    holder.unlock().await?;
    for t in tasks {
        t.await.expect("waiter task")?;
    }
    assert_eq!(*order.lock().unwrap(), [0, 1, 2, 3]);
    Ok(())
}

/// `try_acquire` on a held lock is `LockConflict` at once and leaves no key; it
/// succeeds once the lock is free. The same holds within one coordinator.
pub async fn try_acquire_on_held_lock_is_conflict_and_leaves_no_key(ctx: Ctx) -> Result<()> {
    let ttl = ctx.recipe_ttl();
    let b = ctx.backend();
    let a = ctx.coordinator();
    let other = ctx.other_coordinator().await;
    let held = a.lock().acquire("t", ttl).await?;
    let err = other.lock().try_acquire("t", ttl).await.unwrap_err();
    assert!(
        matches!(&err, Error::LockConflict { name } if name == "t"),
        "{err:?}"
    );
    assert_eq!(
        count_keys(b.as_ref(), &queue("t")).await?,
        1,
        "try_acquire left a key"
    );
    let err = a.lock().try_acquire("t", ttl).await.unwrap_err();
    assert!(
        matches!(err, Error::LockConflict { .. }),
        "same coordinator: {err:?}"
    );
    let held_token = held.fencing_token();
    held.unlock().await?;
    let guard = other.lock().try_acquire("t", ttl).await?;
    assert!(guard.fencing_token() > held_token);
    guard.unlock().await?;
    assert_eq!(count_keys(b.as_ref(), &queue("t")).await?, 0);
    Ok(())
}

/// A queued waiter whose lease ends (revoked here) gets `LockExpired`, never the
/// lock — whether it notices through its session or when the holder releases.
pub async fn queued_waiter_whose_lease_ends_gets_lock_expired(ctx: Ctx) -> Result<()> {
    let ttl = ctx.recipe_ttl();
    let b = ctx.backend();
    let holder = ctx.coordinator().lock().acquire("q", ttl).await?;
    let waiter = ctx.other_coordinator().await;
    let session = waiter.session(ttl).await?;
    let queued = tokio::spawn(async move { waiter.lock().acquire("q", ttl).await });
    wait_for_keys(b.as_ref(), &queue("q"), 2).await?;
    b.lease_revoke(session.lease()).await?;
    holder.unlock().await?;
    let outcome = tokio::time::timeout(PATIENCE, queued)
        .await
        .expect("the queued acquire ended")
        .expect("waiter task");
    assert!(
        matches!(&outcome, Err(Error::LockExpired { name }) if name == "q"),
        "a waiter whose lease ended got {outcome:?}"
    );
    assert_eq!(count_keys(b.as_ref(), &queue("q")).await?, 0);
    Ok(())
}

/// A cancelled acquire removes its key (while its lease lives on), so the next
/// waiter is not blocked until the TTL.
pub async fn cancelled_acquire_removes_its_key(ctx: Ctx) -> Result<()> {
    let ttl = ctx.recipe_ttl();
    let b = ctx.backend();
    let holder = ctx.coordinator().lock().acquire("c", ttl).await?;
    let quitter = ctx.other_coordinator().await;
    let quitter_lease = quitter.session(ttl).await?.lease();
    let task = {
        let quitter = quitter.clone();
        tokio::spawn(async move { quitter.lock().acquire("c", ttl).await })
    };
    wait_for_keys(b.as_ref(), &queue("c"), 2).await?;
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    wait_for_keys(b.as_ref(), &queue("c"), 1).await?;
    b.lease_time_to_live(quitter_lease)
        .await
        .expect("the key went with the cancellation, not with the lease");
    let next = ctx.other_coordinator().await;
    let waiting = tokio::spawn(async move { next.lock().acquire("c", ttl).await });
    wait_for_keys(b.as_ref(), &queue("c"), 2).await?;
    let holder_token = holder.fencing_token();
    holder.unlock().await?;
    let guard = tokio::time::timeout(PATIENCE, waiting)
        .await
        .expect("the next waiter got the lock")
        .expect("task")?;
    assert!(guard.fencing_token() > holder_token);
    // The cancelled coordinator can still take the lock afterwards.
    guard.unlock().await?;
    quitter.lock().try_acquire("c", ttl).await?.unlock().await?;
    Ok(())
}

/// A guard dropped without unlock releases the lock promptly, in the background
/// (its lease lives on: not a TTL expiry).
pub async fn dropped_guard_releases_the_lock(ctx: Ctx) -> Result<()> {
    let ttl = ctx.recipe_ttl();
    let a = ctx.coordinator();
    let guard = a.lock().acquire("d", ttl).await?;
    let lease = guard.session().lease();
    drop(guard);
    let other = ctx.other_coordinator().await;
    let next = tokio::time::timeout(PATIENCE, other.lock().acquire("d", ttl))
        .await
        .expect("the lock was released")?;
    ctx.backend()
        .lease_time_to_live(lease)
        .await
        .expect("released by the drop, not by the lease's end");
    next.unlock().await?;
    // The dropping coordinator's next local acquire is not blocked either.
    a.lock().try_acquire("d", ttl).await?.unlock().await?;
    Ok(())
}

/// Unlocking after the key was taken away is `LockNotHeld` and never deletes
/// the next holder's key. (A second unlock does not compile: it consumes the
/// guard.)
pub async fn unlock_only_deletes_its_own_key(ctx: Ctx) -> Result<()> {
    let ttl = ctx.recipe_ttl();
    let b = ctx.backend();
    let a = ctx.coordinator();
    let guard = a.lock().acquire("u", ttl).await?;
    let key = guard.key().to_string();
    guard.unlock().await?;
    assert!(b.get(key).await?.is_none(), "unlock left the key");

    let stale = a.lock().acquire("u", ttl).await?;
    assert!(b.delete(stale.key()).await?, "someone else removes the key");
    let other = ctx.other_coordinator().await;
    let next = other.lock().acquire("u", ttl).await?;
    let err = stale.unlock().await.unwrap_err();
    assert!(matches!(err, Error::LockNotHeld { .. }), "{err:?}");
    let still = b
        .get(next.key())
        .await?
        .expect("the new holder's key survived");
    assert_eq!(still.create_revision, next.fencing_token());
    next.unlock().await?;
    Ok(())
}

/// The guard's compare lets a caller's transaction succeed only while it holds the
/// lock, and `is_held` reads the same from the store.
pub async fn guard_compare_holds_only_while_held(ctx: Ctx) -> Result<()> {
    let ttl = ctx.recipe_ttl();
    let b = ctx.backend();
    let guard = ctx.coordinator().lock().acquire("f", ttl).await?;
    let compare = guard.compare();
    let write = |v: &'static str| {
        Txn::new()
            .when([compare.clone()])
            .and_then([PutRequest::new("fenced", v)])
    };
    assert!(b.txn(write("1")).await?.succeeded);
    assert!(guard.is_held().await?);
    let key = guard.key().to_string();
    guard.unlock().await?;
    assert!(!b.txn(write("2")).await?.succeeded);
    assert!(b.get(key).await?.is_none());
    assert_eq!(text(&b.get("fenced").await?.expect("written").value), "1");
    Ok(())
}

/// `lost()` completes when someone else deletes or overwrites the key, and the
/// guard then reports itself expired without asking the store.
pub async fn lost_completes_when_the_key_is_taken_away(ctx: Ctx) -> Result<()> {
    let ttl = ctx.recipe_ttl();
    let b = ctx.backend();
    let a = ctx.coordinator();
    let deleted = a.lock().acquire("l1", ttl).await?;
    assert!(!deleted.is_expired());
    let (why, _) = tokio::join!(deleted.lost(), async {
        tokio::task::yield_now().await;
        b.delete(deleted.key()).await
    });
    assert_eq!(why, OwnershipLost::KeyDeleted);
    assert!(deleted.is_expired());

    let changed = a.lock().acquire("l2", ttl).await?;
    b.put(changed.key(), "squatter").await?;
    assert_eq!(
        tokio::time::timeout(PATIENCE, changed.lost())
            .await
            .expect("lost"),
        OwnershipLost::KeyChanged
    );
    assert!(changed.is_expired());

    Ok(())
}

/// Revoking the session's lease ends the lock: `lost()` completes, `renew` is
/// false, `ttl` is `LockExpired`, and another coordinator takes the lock.
pub async fn revoked_lease_loses_the_lock(ctx: Ctx) -> Result<()> {
    let ttl = ctx.recipe_ttl();
    let b = ctx.backend();
    let guard = ctx.coordinator().lock().acquire("r", ttl).await?;
    let remaining = guard.ttl().await?;
    assert!(
        remaining > Duration::ZERO && remaining <= ttl,
        "a held lock's ttl() must be in (0, {ttl:?}], the TTL it was taken with; got {remaining:?}"
    );
    assert!(
        guard.renew().await?,
        "renew() of a held lock must say it is held"
    );
    b.lease_revoke(guard.session().lease()).await?;
    let why = tokio::time::timeout(PATIENCE, guard.lost())
        .await
        .expect("lost() must complete once the lock's lease is revoked");
    assert!(
        matches!(why, OwnershipLost::SessionLost | OwnershipLost::KeyDeleted),
        "a revoked lease loses the lock as SessionLost or KeyDeleted, not {why:?}"
    );
    assert!(guard.is_expired(), "is_expired() after the loss");
    assert!(
        !guard.renew().await?,
        "renew() of a lost lock must say it is not held"
    );
    let ttl_after = guard.ttl().await;
    assert!(
        matches!(ttl_after, Err(Error::LockExpired { .. })),
        "ttl() of a lock whose lease was revoked must be LockExpired, got {ttl_after:?}"
    );
    let other = ctx.other_coordinator().await;
    other.lock().try_acquire("r", ttl).await?.unlock().await?;
    Ok(())
}

/// Tasks of one coordinator share its session and queue locally: the second gets
/// the lock after the first unlocks, with a larger token, on the same lease.
pub async fn tasks_of_one_coordinator_queue_locally(ctx: Ctx) -> Result<()> {
    let ttl = ctx.recipe_ttl();
    let a = ctx.coordinator();
    let first = a.lock().acquire("local", ttl).await?;
    let second = {
        let a = a.clone();
        tokio::spawn(async move { a.lock().acquire("local", ttl).await })
    };
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    assert!(!second.is_finished(), "the second task got a held lock");
    let (first_token, first_lease) = (first.fencing_token(), first.session().lease());
    first.unlock().await?;
    let second = tokio::time::timeout(PATIENCE, second)
        .await
        .expect("second task served")
        .expect("task")?;
    assert!(second.fencing_token() > first_token);
    assert_eq!(second.session().lease(), first_lease);
    second.unlock().await?;
    Ok(())
}

/// `close()` revokes the coordinator's sessions: its lock is free at once, its
/// guard expired, and later calls fail with `Closed`.
pub async fn close_releases_locks_at_once(ctx: Ctx) -> Result<()> {
    let ttl = ctx.recipe_ttl();
    let a = ctx.coordinator();
    let guard = a.lock().acquire("x", ttl).await?;
    let lease = guard.session().lease();
    a.close().await?;
    assert!(guard.is_expired());
    assert!(matches!(
        ctx.backend().lease_time_to_live(lease).await,
        Err(Error::LeaseNotFound { .. })
    ));
    let other = ctx.other_coordinator().await;
    other.lock().try_acquire("x", ttl).await?.unlock().await?;
    let err = a.lock().acquire("x", ttl).await.unwrap_err();
    assert!(matches!(err, Error::Closed { .. }), "{err:?}");
    Ok(())
}

/// Sessions are shared per TTL, and a lost one is replaced, never revived.
pub async fn sessions_are_shared_per_ttl_and_replaced_when_lost(ctx: Ctx) -> Result<()> {
    let ttl = ctx.recipe_ttl();
    let a = ctx.coordinator();
    let s1 = a.session(ttl).await?;
    let again = a.session(ttl - Duration::from_millis(500)).await?;
    assert_eq!(s1.lease(), again.lease(), "rounded up to the same TTL");
    let longer = a.session(ttl * 2).await?;
    assert_ne!(s1.lease(), longer.lease());
    let mut states = s1.watch_state();
    ctx.backend().lease_revoke(s1.lease()).await?;
    tokio::time::timeout(PATIENCE, s1.lost())
        .await
        .expect("lost");
    assert_eq!(s1.state(), coordkit::SessionState::Lost);
    states
        .wait_for(|s| *s == coordkit::SessionState::Lost)
        .await
        .ok();
    let s2 = a.session(ttl).await?;
    assert_ne!(s2.lease(), s1.lease(), "a lost session is replaced");
    assert!(!s2.is_lost());
    // The lost one never comes back.
    assert!(!s1.keep_alive().await?);
    assert_eq!(s1.state(), coordkit::SessionState::Lost);
    Ok(())
}

/// Bad names and TTLs are `InvalidArgument`, before anything is written.
pub async fn lock_input_is_validated(ctx: Ctx) -> Result<()> {
    let ttl = ctx.recipe_ttl();
    let a = ctx.coordinator();
    for name in ["", "a/b", "line\nbreak"] {
        assert_invalid(a.lock().acquire(name, ttl).await, "name");
        assert_invalid(a.lock().try_acquire(name, ttl).await, "name");
    }
    assert_invalid(a.lock().acquire("n", Duration::ZERO).await, "ttl");
    let below = ctx.min_ttl() - 1;
    if below > 0 {
        assert_invalid(
            a.lock()
                .acquire("n", Duration::from_secs(below as u64))
                .await,
            "ttl",
        );
    }
    assert_invalid(
        a.lock().acquire("n", Duration::from_secs(u64::MAX)).await,
        "ttl",
    );
    assert!(ctx.backend().get_prefix("coord/").await?.is_empty());
    Ok(())
}

/// `holders_and_waiters` lists the holder first, then the waiters in arrival
/// order, each with its key, a strictly larger token than the one before, and
/// its lease's time left; `ElectionService::try_campaign` is refused while
/// someone leads, leaving no key, and wins once nobody does.
pub async fn queue_lists_holder_then_waiters_and_try_campaign(ctx: Ctx) -> Result<()> {
    let ttl = ctx.recipe_ttl();
    let b = ctx.backend();
    let holder = ctx.coordinator().lock().acquire("insp", ttl).await?;
    let mut waiting = Vec::new();
    for n in 2..=3 {
        let c = ctx.other_coordinator().await;
        waiting.push(tokio::spawn(
            async move { c.lock().acquire("insp", ttl).await },
        ));
        wait_for_keys(b.as_ref(), &queue("insp"), n).await?;
    }
    let entries = ctx.coordinator().lock().holders_and_waiters("insp").await?;
    assert_eq!(entries.len(), 3, "one holder and two waiters: {entries:?}");
    assert_eq!(entries[0].key, holder.key(), "the holder comes first");
    assert_eq!(entries[0].fencing_token, holder.fencing_token());
    assert!(
        entries
            .windows(2)
            .all(|w| w[0].fencing_token < w[1].fencing_token),
        "entries in queue order: {entries:?}"
    );
    for e in &entries {
        let left = e.ttl_left.expect("every key of a queue has a lease");
        assert!(left <= ttl, "time left {left:?} above the TTL {ttl:?}");
    }
    holder.unlock().await?;
    for w in waiting {
        tokio::time::timeout(PATIENCE, w)
            .await
            .expect("a waiter got the lock")
            .expect("task")?
            .unlock()
            .await?;
    }

    let elections = ctx.coordinator().election().with_ttl(ttl);
    let leader = elections.campaign("tc", "first").await?;
    let other = ctx.other_coordinator().await;
    let err = other
        .election()
        .with_ttl(ttl)
        .try_campaign("tc", "second")
        .await
        .map(|_| ())
        .unwrap_err();
    assert!(
        matches!(err, Error::LockConflict { .. }),
        "try_campaign while someone leads must be LockConflict, got {err:?}"
    );
    let entries = elections.holders_and_waiters("tc").await?;
    assert_eq!(
        entries.len(),
        1,
        "a refused try_campaign leaves no key: {entries:?}"
    );
    leader.resign().await?;
    let won = other
        .election()
        .with_ttl(ttl)
        .try_campaign("tc", "second")
        .await?;
    won.resign().await?;
    Ok(())
}
