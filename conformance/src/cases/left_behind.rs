//! Nothing left behind: a cancelled call, a dropped handle, a compaction or a
//! transient error never orphans a key, blinds a watcher or fakes a loss.
//!
//! The cases named `..._during_an_outage` and the other fault cases need
//! [`Faults`](crate::Faults); the rest run on every backend.

use std::time::Duration;

use coordkit::{
    Backend, BackendExt, Error, OwnershipLost, PutRequest, RegistrationState, Result, Txn,
};

use crate::cases::registry::instance;
use crate::context::text;
use crate::context::{assert_invalid, count_keys, wait_for_keys, wait_until, PATIENCE};
use crate::Ctx;

fn queue(name: &str) -> String {
    format!("coord/lock/{name}/")
}

/// Longer than the default retry policy's whole budget (0.2 + 0.4 + 0.8 + 1.6 s),
/// shorter than the recipe TTL's local deadline: a cleanup that gives up after
/// its retries leaves the key; one that goes on until the session is lost does not.
const OUTAGE: Duration = Duration::from_secs(4);

async fn lease_alive(b: &dyn Backend, lease: coordkit::LeaseId) -> bool {
    b.lease_time_to_live(lease).await.is_ok()
}

/// A guard dropped while its store is unreachable for longer than the retry
/// policy's budget is still released once the store is back (its session lives
/// on: not a TTL expiry), and another coordinator takes the lock.
pub async fn dropped_guard_during_an_outage_is_released_after_it(ctx: Ctx) -> Result<()> {
    let ttl = ctx.recipe_ttl();
    let a = ctx.coordinator();
    let guard = a.lock().acquire("o", ttl).await?;
    let lease = guard.session().lease();
    ctx.faults().partition();
    drop(guard);
    tokio::time::sleep(OUTAGE).await;
    ctx.faults().heal();
    let other = ctx.other_coordinator().await;
    let next = tokio::time::timeout(PATIENCE, other.lock().acquire("o", ttl))
        .await
        .expect("the dropped guard's key was never removed: nobody can take the lock")?;
    assert!(
        lease_alive(ctx.backend().as_ref(), lease).await,
        "removed by the lease's end, not by the cleanup"
    );
    next.unlock().await?;
    Ok(())
}

/// An `unlock` cancelled while the store is unreachable leaves no key behind: the
/// consumed guard's release goes on in the background after the outage.
pub async fn cancelled_unlock_during_an_outage_still_releases(ctx: Ctx) -> Result<()> {
    let ttl = ctx.recipe_ttl();
    let a = ctx.coordinator();
    let guard = a.lock().acquire("u", ttl).await?;
    ctx.faults().partition();
    let cancelled = tokio::time::timeout(Duration::from_millis(300), guard.unlock()).await;
    assert!(cancelled.is_err(), "unlock returned during a partition");
    tokio::time::sleep(OUTAGE).await;
    ctx.faults().heal();
    let other = ctx.other_coordinator().await;
    let next = tokio::time::timeout(PATIENCE, other.lock().acquire("u", ttl))
        .await
        .expect("the cancelled unlock left the key: nobody can take the lock")?;
    next.unlock().await?;
    Ok(())
}

/// An `acquire` cancelled while queued and while its store is unreachable leaves
/// no key: after the outage the queue holds only the holder's key, and the next
/// waiter gets the lock when the holder unlocks.
pub async fn cancelled_acquire_during_an_outage_leaves_no_key(ctx: Ctx) -> Result<()> {
    let ttl = ctx.recipe_ttl();
    let b = ctx.other_coordinator().await;
    let holder = b.lock().acquire("q", ttl).await?;
    let a = ctx.coordinator();
    let queued = {
        let a = a.clone();
        tokio::spawn(async move { a.lock().acquire("q", ttl).await })
    };
    let raw = ctx.other_coordinator().await;
    wait_for_keys(raw.backend().as_ref(), &queue("q"), 2).await?;
    ctx.faults().partition();
    queued.abort();
    assert!(queued.await.unwrap_err().is_cancelled());
    tokio::time::sleep(OUTAGE).await;
    ctx.faults().heal();
    wait_for_keys(raw.backend().as_ref(), &queue("q"), 1).await?;
    let c = ctx.other_coordinator().await;
    let waiting = tokio::spawn(async move { c.lock().acquire("q", ttl).await });
    wait_for_keys(raw.backend().as_ref(), &queue("q"), 2).await?;
    holder.unlock().await?;
    let next = tokio::time::timeout(PATIENCE, waiting)
        .await
        .expect("the next waiter got the lock")
        .expect("task")?;
    next.unlock().await?;
    Ok(())
}

/// A registration dropped during an outage is removed after it: the instance is
/// not advertised while its coordinator's session lives on.
pub async fn dropped_registration_during_an_outage_is_removed_after_it(ctx: Ctx) -> Result<()> {
    let ttl = ctx.recipe_ttl();
    let a = ctx.coordinator();
    let reg = a.registry().register(instance("i-1", 8001), ttl).await?;
    let lease = a.session(ttl).await?.lease();
    let observer = ctx.other_coordinator().await;
    ctx.faults().partition();
    drop(reg);
    tokio::time::sleep(OUTAGE).await;
    ctx.faults().heal();
    wait_until("the dropped instance is no longer advertised", || async {
        Ok(observer.registry().discover("api").await?.is_empty())
    })
    .await?;
    assert!(
        lease_alive(ctx.backend().as_ref(), lease).await,
        "removed by the lease's end, not by the cleanup"
    );
    Ok(())
}

/// A `deregister` cancelled (a timeout around it during an outage) still removes
/// the instance once the store is back.
pub async fn cancelled_deregister_still_removes_the_instance(ctx: Ctx) -> Result<()> {
    let ttl = ctx.recipe_ttl();
    let a = ctx.coordinator();
    let reg = a.registry().register(instance("i-1", 8001), ttl).await?;
    let observer = ctx.other_coordinator().await;
    ctx.faults().partition();
    let cancelled = tokio::time::timeout(Duration::from_millis(300), reg.deregister()).await;
    assert!(cancelled.is_err(), "deregister returned during a partition");
    tokio::time::sleep(OUTAGE).await;
    ctx.faults().heal();
    wait_until("the instance is no longer advertised", || async {
        Ok(observer.registry().discover("api").await?.is_empty())
    })
    .await?;
    Ok(())
}

/// A `register` cancelled after its put committed (its response lost, the call
/// dropped during the retry's wait) leaves no key with no keeper and no handle.
pub async fn cancelled_register_leaves_no_key(ctx: Ctx) -> Result<()> {
    let ttl = ctx.recipe_ttl();
    let a = ctx.coordinator();
    a.session(ttl).await?;
    ctx.faults().lose_next_response();
    let cancelled = tokio::time::timeout(
        Duration::from_millis(50),
        a.registry().register(instance("i-1", 8001), ttl),
    )
    .await;
    assert!(
        cancelled.is_err(),
        "register returned before its retry: {cancelled:?}"
    );
    let raw = ctx.other_coordinator().await;
    wait_for_keys(raw.backend().as_ref(), "coord/service/api/", 0).await?;
    tokio::time::sleep(ttl / 2).await;
    assert_eq!(
        count_keys(raw.backend().as_ref(), "coord/service/api/").await?,
        0,
        "the cancelled registration came back"
    );
    Ok(())
}

/// A proclaim whose first try committed but whose response was lost is retried;
/// the leader's own first write is not taken for someone else's (`lost()` stays
/// pending, the leadership is not expired).
pub async fn retried_proclaim_is_not_a_loss(ctx: Ctx) -> Result<()> {
    let leader = ctx.coordinator().election().campaign("p", "one").await?;
    ctx.faults().lose_next_response();
    leader.proclaim("two").await?;
    let raw = ctx.other_coordinator().await;
    let stored = raw.backend().get(leader.key()).await?.expect("the key");
    assert_eq!(text(&stored.value), "two");
    let lost = tokio::time::timeout(Duration::from_secs(2), leader.lost()).await;
    assert!(lost.is_err(), "its own retried write was a loss: {lost:?}");
    assert!(!leader.is_expired());
    leader.proclaim("three").await?;
    let lost = tokio::time::timeout(Duration::from_secs(2), leader.lost()).await;
    assert!(lost.is_err(), "a later own write was a loss: {lost:?}");
    leader.resign().await?;
    Ok(())
}

/// A transient error while the keeper asks whether its lease ended does not
/// undo an `unregister`: the registration stays `Removed` and the instance
/// stays away.
pub async fn transient_error_does_not_undo_unregister(ctx: Ctx) -> Result<()> {
    let ttl = ctx.recipe_ttl();
    let a = ctx.coordinator();
    let reg = a.registry().register(instance("i-1", 8001), ttl).await?;
    let other = ctx.other_coordinator().await;
    // Let the keeper open its watch.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(other.registry().deregister("i-1").await?, 1);
    // The keeper has not run since (this task did not yield): its next calls,
    // its question about the lease first, fail.
    ctx.faults().fail_next(3);
    let mut states = reg.watch_state();
    tokio::time::timeout(
        PATIENCE,
        states.wait_for(|s| s.is_final() || *s == RegistrationState::Reregistering),
    )
    .await
    .expect("the keeper saw the removal")
    .ok();
    tokio::time::sleep(ttl).await;
    assert_eq!(
        reg.state(),
        RegistrationState::Removed,
        "a transient error was taken for a lost lease"
    );
    assert!(
        other.registry().discover("api").await?.is_empty(),
        "the unregistered instance came back"
    );
    Ok(())
}

/// A holder whose key's history was compacted while it was idle still sees its
/// key deleted: `lost()` is `KeyDeleted`; and a registration likewise sees an
/// `unregister` after a compaction (`Removed`).
pub async fn compaction_past_an_idle_holder_does_not_blind_it(ctx: Ctx) -> Result<()> {
    let _alone = ctx.compaction().await;
    let ttl = ctx.recipe_ttl();
    let b = ctx.backend();
    let a = ctx.coordinator();
    let guard = a.lock().acquire("c", ttl).await?;
    let reg = a.registry().register(instance("i-1", 8001), ttl).await?;
    for i in 0..5 {
        b.put(format!("noise/{i}"), "x").await?;
    }
    let now = b.put("noise/last", "x").await?;
    b.compact(now).await?;
    let raw = ctx.other_coordinator().await;
    let (why, deleted) = tokio::join!(tokio::time::timeout(PATIENCE, guard.lost()), async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        raw.backend().delete(guard.key()).await
    });
    assert!(deleted?, "the key was there to delete");
    assert_eq!(
        why.expect("lost() never saw the delete after a compaction"),
        OwnershipLost::KeyDeleted
    );
    assert_eq!(raw.registry().deregister("i-1").await?, 1);
    let mut states = reg.watch_state();
    tokio::time::timeout(PATIENCE, states.wait_for(|s| s.is_final()))
        .await
        .expect("the registration never saw the unregister after a compaction")
        .ok();
    assert_eq!(reg.state(), RegistrationState::Removed);
    Ok(())
}

/// A key of this session left in a lock's queue (a leftover of an earlier claim)
/// is never re-adopted: the next acquire removes it and claims afresh, with a
/// token larger than the leftover's.
pub async fn a_leftover_claim_is_never_re_adopted(ctx: Ctx) -> Result<()> {
    let ttl = ctx.recipe_ttl();
    let b = ctx.backend();
    let a = ctx.coordinator();
    let lease = a.session(ttl).await?.lease();
    let key = format!("{}{lease}", queue("left"));
    let leftover = b
        .txn(Txn::new().and_then([PutRequest::new(key.clone(), "").with_lease(lease)]))
        .await?
        .revision;
    let guard = a.lock().acquire("left", ttl).await?;
    assert_eq!(guard.key(), key);
    assert!(
        guard.fencing_token() > leftover,
        "the leftover's token {leftover} was handed out again"
    );
    guard.unlock().await?;
    Ok(())
}

/// Fencing tokens handed out for one name strictly increase over many
/// acquisitions by several coordinators, including cancelled acquires, dropped
/// guards and re-claims by the same coordinator.
pub async fn fencing_tokens_strictly_increase(ctx: Ctx) -> Result<()> {
    let ttl = ctx.recipe_ttl();
    let coordinators = [
        ctx.coordinator(),
        ctx.other_coordinator().await,
        ctx.other_coordinator().await,
    ];
    let mut rng = fastrand::Rng::with_seed(7);
    let mut tokens = Vec::new();
    for step in 0..40 {
        let c = &coordinators[rng.usize(..coordinators.len())];
        match rng.u8(..4) {
            0 => {
                let guard = c.lock().acquire("inc", ttl).await?;
                tokens.push((step, guard.fencing_token()));
                guard.unlock().await?;
            }
            1 => {
                let guard = c.lock().acquire("inc", ttl).await?;
                tokens.push((step, guard.fencing_token()));
                drop(guard);
            }
            2 => {
                let c = c.clone();
                let task = tokio::spawn(async move { c.lock().acquire("inc", ttl).await });
                for _ in 0..rng.usize(..20) {
                    tokio::task::yield_now().await;
                }
                task.abort();
                if let Ok(Ok(guard)) = task.await {
                    tokens.push((step, guard.fencing_token()));
                }
            }
            _ => match c.lock().try_acquire("inc", ttl).await {
                Ok(guard) => tokens.push((step, guard.fencing_token())),
                Err(Error::LockConflict { .. }) => {}
                Err(e) => return Err(e),
            },
        }
    }
    for pair in tokens.windows(2) {
        assert!(
            pair[0].1 < pair[1].1,
            "fencing token did not increase: step {} got {}, then step {} got {}",
            pair[0].0,
            pair[0].1,
            pair[1].0,
            pair[1].1
        );
    }
    assert!(tokens.len() >= 20, "too few acquisitions: {tokens:?}");
    Ok(())
}

/// TTLs that cannot be a lease are `InvalidArgument` naming `ttl`, never a
/// panic: `Duration::MAX`, `u64::MAX` seconds, zero and sub-second TTLs.
pub async fn impossible_ttls_are_invalid(ctx: Ctx) -> Result<()> {
    let a = ctx.coordinator();
    for ttl in [
        Duration::MAX,
        Duration::from_secs(u64::MAX),
        Duration::ZERO,
        Duration::from_millis(500),
    ] {
        assert_invalid(a.lock().acquire("t", ttl).await, "ttl");
        assert_invalid(a.session(ttl).await, "ttl");
        assert_invalid(
            a.registry().register(instance("i-1", 8001), ttl).await,
            "ttl",
        );
    }
    Ok(())
}
