//! The registry under injected faults: keep-alives that stop, partitions, a
//! compaction past a disconnected cache.

use coordkit::{BackendExt, RegistrationState, Result, ServiceEventKind};

use crate::cases::registry::instance;
use crate::context::{wait_until, PATIENCE};
use crate::Ctx;

/// While keep-alives are stalled the instance disappears within its TTL and stays
/// away (no flapping on leases that cannot be kept); once keep-alives work again
/// it registers itself again.
pub async fn stalled_registration_disappears_and_returns(ctx: Ctx) -> Result<()> {
    let ttl = ctx.recipe_ttl();
    let reg = ctx
        .coordinator()
        .registry()
        .register(instance("i-1", 8001), ttl)
        .await?;
    let observer = ctx.other_coordinator().await;
    ctx.faults().stall_keep_alives();
    let start = tokio::time::Instant::now();
    wait_until("the instance disappears", || async {
        Ok(observer.registry().discover("api").await?.is_empty())
    })
    .await?;
    assert!(
        start.elapsed() <= ttl,
        "gone within its TTL (took {:?})",
        start.elapsed()
    );
    assert_eq!(reg.state(), RegistrationState::Reregistering);
    tokio::time::sleep(ttl * 2).await;
    assert!(
        observer.registry().discover("api").await?.is_empty(),
        "not re-advertised while keep-alives fail"
    );
    ctx.faults().resume_keep_alives();
    wait_until("the instance is back", || async {
        Ok(observer.registry().discover("api").await? == [instance("i-1", 8001)])
    })
    .await?;
    let mut states = reg.watch_state();
    tokio::time::timeout(
        PATIENCE,
        states.wait_for(|s| *s == RegistrationState::Registered),
    )
    .await
    .expect("registered again")
    .ok();
    Ok(())
}

/// A registration cut off by a partition long enough for its lease to end is back
/// within one keep-alive interval (TTL/3) of the heal.
pub async fn partitioned_registration_returns_within_a_keep_alive_interval(ctx: Ctx) -> Result<()> {
    let ttl = ctx.recipe_ttl();
    let _reg = ctx
        .coordinator()
        .registry()
        .register(instance("i-1", 8001), ttl)
        .await?;
    let observer = ctx.other_coordinator().await;
    ctx.faults().partition();
    wait_until("the store expires the instance", || async {
        Ok(observer.registry().discover("api").await?.is_empty())
    })
    .await?;
    tokio::time::sleep(ttl * 3).await;
    ctx.faults().heal();
    let healed = tokio::time::Instant::now();
    wait_until("the instance is back", || async {
        Ok(!observer.registry().discover("api").await?.is_empty())
    })
    .await?;
    assert!(
        healed.elapsed() <= ttl / 3,
        "back {:?} after the heal; the keep-alive interval is {:?}",
        healed.elapsed(),
        ttl / 3
    );
    Ok(())
}

/// A cache cut off while instances come and go and the store compacts past its
/// position rereads after the heal: it equals the store, and the instance that
/// went away was reported as a delete.
pub async fn cache_converges_after_compaction_while_cut_off(ctx: Ctx) -> Result<()> {
    let ttl = ctx.recipe_ttl();
    let cache = ctx.coordinator().registry().cache("api").await?;
    let mut events = cache.subscribe();
    let other = ctx.other_coordinator().await;
    let leaving = other
        .registry()
        .register(instance("leaving", 1), ttl)
        .await?;
    let _staying = other
        .registry()
        .register(instance("staying", 2), ttl)
        .await?;
    wait_until("the cache sees both", || async {
        Ok(cache.instances().len() == 2)
    })
    .await?;
    let _alone = ctx.compaction().await;
    ctx.faults().partition();
    leaving.deregister().await?;
    let _arriving = other
        .registry()
        .register(instance("arriving", 3), ttl)
        .await?;
    let now = other.backend().current_revision().await?;
    other.backend().compact(now).await?;
    ctx.faults().heal();
    let store = other.registry().discover("api").await?;
    wait_until("the cache equals the store", || async {
        Ok(*cache.instances() == store)
    })
    .await?;
    let mut seen = Vec::new();
    while let Ok(e) = events.try_recv() {
        seen.push((e.kind, e.service.id));
    }
    assert!(
        seen.contains(&(ServiceEventKind::Delete, "leaving".to_string())),
        "{seen:?}"
    );
    assert!(
        seen.contains(&(ServiceEventKind::Put, "arriving".to_string())),
        "{seen:?}"
    );
    Ok(())
}

/// A cache partitioned while instances change catches up after the heal.
pub async fn cache_converges_after_a_partition(ctx: Ctx) -> Result<()> {
    let ttl = ctx.recipe_ttl();
    let cache = ctx.coordinator().registry().cache("api").await?;
    let other = ctx.other_coordinator().await;
    let first = other.registry().register(instance("a", 1), ttl).await?;
    wait_until("the cache sees a", || async {
        Ok(cache.instances().len() == 1)
    })
    .await?;
    ctx.faults().partition();
    first.deregister().await?;
    let _b = other.registry().register(instance("b", 2), ttl).await?;
    let _c = other.registry().register(instance("c", 3), ttl).await?;
    assert_eq!(
        cache.instances().len(),
        1,
        "a partitioned cache keeps what it knew"
    );
    ctx.faults().heal();
    wait_until("the cache equals the store", || async {
        Ok(*cache.instances() == [instance("b", 2), instance("c", 3)])
    })
    .await?;
    Ok(())
}
