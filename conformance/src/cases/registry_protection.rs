//! Empty-push protection: a service cache that keeps serving the instances it
//! last saw when a change would leave too few, and follows the store again as
//! soon as enough are back.

use coordkit::{
    CacheOptions, EmptyPushProtection, PickStrategy, Picker, Result, ServiceCache, ServiceFilter,
};

use crate::cases::registry::instance;
use crate::context::wait_until;
use crate::Ctx;

/// Instances i-1, i-2 and i-3 of `api`, registered by `c`.
async fn register_three(
    c: &coordkit::Coordinator,
    ttl: std::time::Duration,
) -> Result<Vec<coordkit::Registration>> {
    let mut regs = Vec::new();
    for (id, port) in [("i-1", 8001), ("i-2", 8002), ("i-3", 8003)] {
        regs.push(c.registry().register(instance(id, port), ttl).await?);
    }
    Ok(regs)
}

fn ids(cache: &ServiceCache) -> Vec<String> {
    cache.instances().iter().map(|i| i.id.clone()).collect()
}

/// The last instances of a service deregistered one after the other: a cache
/// (default options) and a picker on it keep serving all of them, the cache's
/// health says it holds them, the store has none; one instance back, the cache
/// serves exactly what the store holds. A cache with protection off empties;
/// one with a fraction holds below it.
pub async fn registry_cache_holds_the_last_instances_when_a_service_empties(
    ctx: Ctx,
) -> Result<()> {
    let ttl = ctx.recipe_ttl();
    let c = ctx.coordinator();
    let observer = ctx.other_coordinator().await;
    let registry = observer.registry();
    let cache = registry.cache("api").await?;
    let picker = Picker::new(
        registry.cache("api").await?,
        PickStrategy::RoundRobin,
        ServiceFilter::new(),
    );
    let off = registry
        .cache_with(
            "api",
            CacheOptions::new().protection(EmptyPushProtection::Off),
        )
        .await?;
    let half = registry
        .cache_with(
            "api",
            CacheOptions::new().protection(EmptyPushProtection::BelowFraction(0.5)),
        )
        .await?;
    let regs = register_three(&c, ttl).await?;
    let all = [&cache, picker.cache(), &off, &half];
    wait_until("every cache sees three", || async {
        Ok(all.iter().all(|c| c.instances().len() == 3))
    })
    .await?;
    let mut regs = regs.into_iter();
    regs.next().unwrap().deregister().await?;
    wait_until(
        "i-1 left every cache (2 of 3 is enough for 0.5)",
        || async { Ok(all.iter().all(|c| c.instances().len() == 2)) },
    )
    .await?;
    regs.next().unwrap().deregister().await?;
    wait_until("i-2 left all but the 0.5 cache, which holds", || async {
        Ok(off.instances().len() == 1
            && cache.instances().len() == 1
            && picker.cache().instances().len() == 1
            && half.health().protected.is_some())
    })
    .await?;
    assert_eq!(
        ids(&half),
        ["i-1", "i-2", "i-3"],
        "1 of 3 is below 0.5: held"
    );
    assert!(half.health().protected.is_some());
    assert!(cache.health().protected.is_none(), "one is left: not empty");
    regs.next().unwrap().deregister().await?;
    wait_until("the store and the unprotected cache are empty", || async {
        Ok(registry.discover("api").await?.is_empty() && off.instances().is_empty())
    })
    .await?;
    wait_until("the default cache and the picker's hold", || async {
        Ok(cache.health().protected.is_some() && picker.cache().health().protected.is_some())
    })
    .await?;
    assert_eq!(
        ids(&cache),
        ["i-1", "i-2", "i-3"],
        "all three, not the last one"
    );
    assert_eq!(ids(picker.cache()), ["i-1", "i-2", "i-3"]);
    assert!(picker.pick().is_some(), "the picker still has instances");
    let held = cache.health().protected.unwrap();
    assert_eq!((held.serving, held.live), (3, 0));
    // One instance back: the default cache follows the store again; the 0.5
    // cache needs two of the three it holds.
    let _r4 = c.registry().register(instance("i-4", 8004), ttl).await?;
    wait_until("the default cache serves what the store holds", || async {
        Ok(ids(&cache) == ["i-4"])
    })
    .await?;
    assert!(cache.health().protected.is_none());
    wait_until("the 0.5 cache serves i-4 beside those it holds", || async {
        Ok(half.instances().len() == 4)
    })
    .await?;
    let _r5 = c.registry().register(instance("i-5", 8005), ttl).await?;
    wait_until("two of three: the 0.5 cache lets go", || async {
        Ok(ids(&half) == ["i-4", "i-5"])
    })
    .await?;
    assert!(half.health().protected.is_none());
    assert!(
        registry
            .cache_with(
                "api",
                CacheOptions::new().protection(EmptyPushProtection::BelowFraction(1.5))
            )
            .await
            .is_err(),
        "a fraction above 1 is refused"
    );
    Ok(())
}

/// Every session registering a service lost at once (the registering side cut
/// off until its leases end): the observer's cache, its picker and its health
/// keep the whole last set — not the last instance to go — while the store has
/// none; after the heal the instances register again and the cache follows
/// the store. A cache with protection off is empty meanwhile (the before).
pub async fn every_session_of_a_service_lost_at_once_is_served_from_the_last_set(
    ctx: Ctx,
) -> Result<()> {
    let ttl = ctx.recipe_ttl();
    let c = ctx.coordinator();
    let observer = ctx.other_coordinator().await;
    let registry = observer.registry();
    let cache = registry.cache("api").await?;
    let off = registry
        .cache_with(
            "api",
            CacheOptions::new().protection(EmptyPushProtection::Off),
        )
        .await?;
    let regs = register_three(&c, ttl).await?;
    wait_until("both caches see three", || async {
        Ok(cache.instances().len() == 3 && off.instances().len() == 3)
    })
    .await?;
    ctx.faults().partition();
    wait_until("the store ends every lease", || async {
        Ok(registry.discover("api").await?.is_empty())
    })
    .await?;
    wait_until("the unprotected cache empties", || async {
        Ok(off.instances().is_empty())
    })
    .await?;
    wait_until("the protected cache holds", || async {
        Ok(cache.health().protected.is_some())
    })
    .await?;
    assert_eq!(ids(&cache), ["i-1", "i-2", "i-3"], "the whole last set");
    let held = cache.health().protected.expect("the cache says it holds");
    assert_eq!((held.serving, held.live), (3, 0));
    let picker = Picker::new(
        registry.cache("api").await?,
        PickStrategy::RoundRobin,
        ServiceFilter::new(),
    );
    assert!(
        picker.pick().is_none(),
        "a cache made while the service is empty has nothing to hold"
    );
    ctx.faults().heal();
    wait_until("the instances are back in the store", || async {
        Ok(registry.discover("api").await?.len() == 3)
    })
    .await?;
    wait_until("the cache follows the store again", || async {
        Ok(cache.health().protected.is_none())
    })
    .await?;
    assert_eq!(ids(&cache), ["i-1", "i-2", "i-3"]);
    wait_until("the unprotected cache has them too", || async {
        Ok(off.instances().len() == 3)
    })
    .await?;
    drop(regs);
    Ok(())
}

/// A cache with a snapshot file writes what it serves; made again with the
/// store unreachable (partitioned) it starts from the file — stale, saying
/// how old the snapshot is — instead of failing; when the store answers, what
/// the store holds replaces the snapshot (an instance that left meanwhile is
/// gone, one that came is there) and the file is rewritten. With the store up,
/// a snapshot never stands over the store's view; without a file, creating a
/// cache with the store down fails.
pub async fn service_cache_starts_warm_from_its_snapshot_with_the_store_down(
    ctx: Ctx,
) -> Result<()> {
    let dir = std::env::temp_dir().join(format!(
        "coordkit-warm-{}-{}",
        std::process::id(),
        crate::context::text(ctx.namespace())
            .trim_end_matches('/')
            .replace('/', "-")
    ));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let path = dir.join("api.json");
    let ttl = ctx.recipe_ttl();
    let options = || CacheOptions::new().snapshot(&path);
    let registering = ctx.other_coordinator().await;
    let mut regs = Vec::new();
    for (id, port) in [("i-1", 8001), ("i-2", 8002)] {
        regs.push(
            registering
                .registry()
                .register(instance(id, port), ttl)
                .await?,
        );
    }
    // The store answers: a stale file (a ghost instance) is not served, and
    // is rewritten with what the store holds.
    std::fs::write(
        &path,
        br#"{"service":"api","saved_at_ms":0,"instances":[{"id":"ghost","name":"api","address":"127.0.0.1","port":9}]}"#,
    )
    .expect("a file");
    let observer = ctx.coordinator();
    let first = observer.registry().cache_with("api", options()).await?;
    assert_eq!(
        ids(&first),
        ["i-1", "i-2"],
        "the store's view, not the file's"
    );
    assert!(first.health().snapshot_age.is_none());
    drop(first);
    let written = std::fs::read_to_string(&path).expect("the snapshot");
    assert!(
        written.contains("i-2") && !written.contains("ghost"),
        "{written}"
    );

    ctx.faults().partition();
    let no_file = observer
        .registry()
        .cache_with("api", CacheOptions::new().snapshot(dir.join("absent.json")))
        .await;
    assert!(no_file.is_err(), "no snapshot, no store: an error");
    let warm = observer.registry().cache_with("api", options()).await?;
    assert_eq!(ids(&warm), ["i-1", "i-2"], "started from the snapshot");
    let health = warm.health();
    assert!(health.stale && health.snapshot_age.is_some(), "{health:?}");
    // Meanwhile the store moves on: i-1 leaves, i-3 comes.
    regs.remove(0).deregister().await?;
    regs.push(
        registering
            .registry()
            .register(instance("i-3", 8003), ttl)
            .await?,
    );
    ctx.faults().heal();
    wait_until("the cache serves what the store holds", || async {
        Ok(ids(&warm) == ["i-2", "i-3"])
    })
    .await?;
    wait_until("the cache follows the store", || async {
        let h = warm.health();
        Ok(h.snapshot_age.is_none() && !h.stale)
    })
    .await?;
    let written = std::fs::read_to_string(&path).expect("the snapshot");
    assert!(
        written.contains("i-3") && !written.contains("i-1"),
        "{written}"
    );
    drop(warm);
    drop(regs);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
