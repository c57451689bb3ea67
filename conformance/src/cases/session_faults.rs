//! Sessions, locks and leaderships under injected faults: keep-alives that stop, a
//! partition, a lost response, a cut watch.

use coordkit::{BackendExt, Error, OwnershipLost, Result, RetryPolicy, SessionState};

use crate::context::text;
use crate::context::{wait_for_keys, PATIENCE};
use crate::Ctx;

/// Keep-alives stop: the session reports `Suspended`, then `Lost`; `lost()`
/// completes, the guard is expired, and another coordinator gets the lock.
pub async fn stalled_keep_alives_lose_the_lock_and_free_it(ctx: Ctx) -> Result<()> {
    let ttl = ctx.recipe_ttl();
    let guard = ctx.coordinator().lock().acquire("s", ttl).await?;
    let mut states = guard.session().watch_state();
    ctx.faults().stall_keep_alives();
    tokio::time::timeout(PATIENCE, states.wait_for(|s| *s == SessionState::Suspended))
        .await
        .expect("suspended")
        .ok();
    let why = tokio::time::timeout(PATIENCE, guard.lost())
        .await
        .expect("lost");
    assert_eq!(why, OwnershipLost::SessionLost);
    assert!(guard.is_expired());
    let other = ctx.other_coordinator().await;
    let next = tokio::time::timeout(PATIENCE, other.lock().acquire("s", ttl))
        .await
        .expect("the lock was freed")?;
    assert!(next.fencing_token() > guard.fencing_token());
    ctx.faults().resume_keep_alives();
    Ok(())
}

/// A partitioned holder reports the lock lost while the store still has its lease:
/// `Lost` comes no later than the store could hand the lock to someone else.
pub async fn partitioned_holder_reports_loss_before_the_store_expires_it(ctx: Ctx) -> Result<()> {
    let ttl = ctx.recipe_ttl();
    let guard = ctx.coordinator().lock().acquire("p", ttl).await?;
    let lease = guard.session().lease();
    let observer = ctx.client().await.backend;
    ctx.faults().partition();
    let why = tokio::time::timeout(PATIENCE, guard.lost())
        .await
        .expect("lost");
    assert_eq!(why, OwnershipLost::SessionLost);
    assert!(guard.is_expired());
    observer
        .lease_time_to_live(lease)
        .await
        .expect("the store still has the lease when the holder reports the loss");
    assert!(observer.get(guard.key()).await?.is_some());
    // The store then expires it, and another coordinator takes over.
    let other = ctx.other_coordinator().await;
    let next = tokio::time::timeout(PATIENCE, other.lock().acquire("p", ttl))
        .await
        .expect("the lock was freed by the lease's end")?;
    assert!(next.fencing_token() > guard.fencing_token());
    ctx.faults().heal();
    Ok(())
}

/// Keep-alives that resume before the deadline: `Suspended`, then `Alive` again,
/// and the lock is still held.
pub async fn keep_alives_resumed_in_time_keep_the_lock(ctx: Ctx) -> Result<()> {
    let ttl = ctx.recipe_ttl();
    let guard = ctx.coordinator().lock().acquire("k", ttl).await?;
    let mut states = guard.session().watch_state();
    ctx.faults().stall_keep_alives();
    tokio::time::timeout(PATIENCE, states.wait_for(|s| *s == SessionState::Suspended))
        .await
        .expect("suspended")
        .ok();
    ctx.faults().resume_keep_alives();
    tokio::time::timeout(PATIENCE, states.wait_for(|s| *s == SessionState::Alive))
        .await
        .expect("alive again")
        .ok();
    assert!(!guard.is_expired());
    assert!(guard.is_held().await?);
    guard.unlock().await?;
    Ok(())
}

/// A queued waiter whose keep-alives stop gets `LockExpired` at its deadline, its
/// key goes, and the holder keeps the lock.
pub async fn queued_waiter_whose_keep_alives_stop_gets_lock_expired(ctx: Ctx) -> Result<()> {
    let ttl = ctx.recipe_ttl();
    let b = ctx.backend();
    let holder = ctx
        .other_coordinator()
        .await
        .lock()
        .acquire("w", ttl)
        .await?;
    let waiter = ctx.coordinator();
    let queued = tokio::spawn(async move { waiter.lock().acquire("w", ttl).await });
    wait_for_keys(b.as_ref(), "coord/lock/w/", 2).await?;
    ctx.faults().stall_keep_alives();
    let outcome = tokio::time::timeout(PATIENCE, queued)
        .await
        .expect("the queued acquire ended")
        .expect("task");
    assert!(
        matches!(outcome, Err(Error::LockExpired { .. })),
        "{outcome:?}"
    );
    wait_for_keys(b.as_ref(), "coord/lock/w/", 1).await?;
    assert!(holder.is_held().await?);
    ctx.faults().resume_keep_alives();
    holder.unlock().await?;
    Ok(())
}

/// An unlock whose response was lost: without retries it reports the failure,
/// and the release the dropped guard leaves to the background deletes nothing of
/// the next holder's. With retries, the retry finds the key gone and reports
/// success.
pub async fn unlock_after_a_lost_response_never_deletes_the_next_holder(ctx: Ctx) -> Result<()> {
    let ttl = ctx.recipe_ttl();
    let b = ctx.backend();
    let once = ctx.coordinator_with_retry(RetryPolicy::none());
    let guard = once.lock().acquire("u", ttl).await?;
    ctx.faults().lose_next_response();
    let err = guard.unlock().await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    let other = ctx.other_coordinator().await;
    let next = other.lock().try_acquire("u", ttl).await?;
    // The background release of the consumed guard ends with the coordinator's
    // cleanups, which `close` waits for.
    once.close().await?;
    assert!(
        b.get(next.key()).await?.is_some(),
        "the next holder's key survived"
    );
    next.unlock().await?;

    let retrying = ctx.coordinator();
    let guard = retrying.lock().acquire("v", ttl).await?;
    ctx.faults().lose_next_response();
    let key = guard.key().to_string();
    guard.unlock().await?;
    assert!(b.get(key).await?.is_none());
    Ok(())
}

/// A waiter whose watch is cut while queued still gets the lock when it is freed.
pub async fn cut_watch_while_queued_still_hands_over(ctx: Ctx) -> Result<()> {
    let ttl = ctx.recipe_ttl();
    let b = ctx.backend();
    let holder = ctx
        .other_coordinator()
        .await
        .lock()
        .acquire("h", ttl)
        .await?;
    let waiter = ctx.coordinator();
    let queued = tokio::spawn(async move { waiter.lock().acquire("h", ttl).await });
    wait_for_keys(b.as_ref(), "coord/lock/h/", 2).await?;
    ctx.faults().cut_watches();
    let holder_token = holder.fencing_token();
    holder.unlock().await?;
    let guard = tokio::time::timeout(PATIENCE, queued)
        .await
        .expect("handed over")
        .expect("task")?;
    assert!(guard.fencing_token() > holder_token);
    guard.unlock().await?;
    Ok(())
}

/// A leader whose keep-alives stop loses leadership; observers see the next one.
pub async fn stalled_leader_is_replaced(ctx: Ctx) -> Result<()> {
    let leader = ctx.coordinator().election().campaign("e", "first").await?;
    let second = ctx.other_coordinator().await;
    let next = tokio::spawn(async move { second.election().campaign("e", "second").await });
    wait_for_keys(ctx.backend().as_ref(), "coord/election/e/", 2).await?;
    ctx.faults().stall_keep_alives();
    assert_eq!(
        tokio::time::timeout(PATIENCE, leader.lost())
            .await
            .expect("lost"),
        OwnershipLost::SessionLost
    );
    let next = tokio::time::timeout(PATIENCE, next)
        .await
        .expect("the next candidate leads")
        .expect("task")?;
    let observer = ctx.other_coordinator().await;
    let now = observer.election().leader("e").await?.expect("a leader");
    assert_eq!(text(&now.value), "second");
    assert_eq!(now.fencing_token, next.fencing_token());
    ctx.faults().resume_keep_alives();
    Ok(())
}

async fn next(changes: &mut coordkit::LeaderStream) -> Result<Option<coordkit::Leader>> {
    use futures::StreamExt;
    tokio::time::timeout(PATIENCE, changes.next())
        .await
        .expect("a leader change")
        .expect("open")
}

/// Campaign for "e" with `value` from a coordinator of its own (its own lease, so
/// its own key).
async fn campaign_elsewhere(ctx: &Ctx, value: &str) -> Result<coordkit::Leadership> {
    ctx.other_coordinator()
        .await
        .election()
        .campaign("e", value)
        .await
}

/// An observer cut off while leadership changes and the store compacts past its
/// position rereads after the heal and reports the leader now in office.
pub async fn observer_catches_up_after_compaction_while_cut_off(ctx: Ctx) -> Result<()> {
    let mut changes = ctx.coordinator().election().observe("e")?;
    assert_eq!(next(&mut changes).await?, None);
    let first = campaign_elsewhere(&ctx, "first").await?;
    assert_eq!(
        text(&next(&mut changes).await?.expect("a leader").value),
        "first"
    );
    let _alone = ctx.compaction().await;
    ctx.faults().partition();
    first.resign().await?;
    let second = campaign_elsewhere(&ctx, "second").await?;
    let other = ctx.client().await.backend;
    other.compact(other.current_revision().await?).await?;
    ctx.faults().heal();
    let now = next(&mut changes).await?.expect("a leader");
    assert_eq!(
        (now.value.as_slice(), now.fencing_token),
        (&b"second"[..], second.fencing_token())
    );
    Ok(())
}

/// How long a lagging watch holds its events back in the cases below: etcd's
/// catch-up loop serves a watch it registered as lagging within 100 ms.
const WATCH_LAG: std::time::Duration = std::time::Duration::from_millis(100);

/// A queued waiter whose watch lags (etcd registered it while a write committed)
/// still takes the lock soon after the release: it glances at the queue instead
/// of idling the lock until the late event. On a paused clock the handoff must
/// take under half the lag (the late event alone would take 70 ms of it).
pub async fn waiter_whose_watch_lags_takes_the_lock_soon_after_release(ctx: Ctx) -> Result<()> {
    let ttl = ctx.recipe_ttl();
    let b = ctx.backend();
    let holder = ctx
        .other_coordinator()
        .await
        .lock()
        .acquire("lag", ttl)
        .await?;
    let waiter = ctx.coordinator();
    ctx.faults().lag_new_watches(Some(WATCH_LAG));
    let queued = tokio::spawn(async move {
        let guard = waiter.lock().acquire("lag", ttl).await;
        (guard, tokio::time::Instant::now())
    });
    wait_for_keys(b.as_ref(), "coord/lock/lag/", 2).await?;
    ctx.faults().lag_new_watches(None);
    // The waiter's watch is open and lagging; release a while into its lag.
    tokio::time::sleep(WATCH_LAG * 3 / 10).await;
    let released = tokio::time::Instant::now();
    holder.unlock().await?;
    let (guard, acquired) = tokio::time::timeout(PATIENCE, queued)
        .await
        .expect("the queued acquire ended")
        .expect("task");
    let guard = guard?;
    if ctx.paused_clock() {
        let handoff = acquired - released;
        assert!(
            handoff < WATCH_LAG / 2,
            "the handoff took {handoff:?}: the waiter waited for its lagging watch"
        );
    }
    assert!(guard.is_held().await?);
    guard.unlock().await?;
    Ok(())
}

/// The same for a semaphore waiter: a permit's release reaches it by a glance
/// while its watches lag.
pub async fn semaphore_waiter_whose_watches_lag_gets_a_permit_soon(ctx: Ctx) -> Result<()> {
    let ttl = ctx.recipe_ttl();
    let b = ctx.backend();
    let other = ctx.other_coordinator().await;
    let first = other.semaphore().acquire("lag", 2, ttl).await?;
    let second = other.semaphore().acquire("lag", 2, ttl).await?;
    let waiter = ctx.coordinator();
    ctx.faults().lag_new_watches(Some(WATCH_LAG));
    let queued = tokio::spawn(async move {
        let permit = waiter.semaphore().acquire("lag", 2, ttl).await;
        (permit, tokio::time::Instant::now())
    });
    wait_for_keys(b.as_ref(), "coord/semaphore/lag/", 3).await?;
    ctx.faults().lag_new_watches(None);
    tokio::time::sleep(WATCH_LAG * 3 / 10).await;
    let released = tokio::time::Instant::now();
    second.unlock().await?;
    let (permit, acquired) = tokio::time::timeout(PATIENCE, queued)
        .await
        .expect("the queued acquire ended")
        .expect("task");
    let permit = permit?;
    if ctx.paused_clock() {
        let handoff = acquired - released;
        assert!(
            handoff < WATCH_LAG / 2,
            "the permit came {handoff:?} after the release: the waiter waited for its lagging watches"
        );
    }
    permit.unlock().await?;
    first.unlock().await?;
    Ok(())
}
