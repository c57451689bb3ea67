//! Service registry: register, discover, watch, cache, replace, re-register, input.

use std::collections::HashMap;
use std::time::Duration;

use coordkit::{
    BackendExt, RegistrationState, Result, ServiceEvent, ServiceEventKind, ServiceInfo,
    ServiceWatch,
};
use futures::StreamExt;

use crate::context::{assert_invalid, wait_until, PATIENCE};
use crate::Ctx;

pub(crate) fn instance(id: &str, port: u16) -> ServiceInfo {
    ServiceInfo::new(id, "api", "127.0.0.1", port).with_metadata("zone", "a")
}

pub(crate) async fn next_service_event(w: &mut ServiceWatch, what: &str) -> Result<ServiceEvent> {
    match tokio::time::timeout(PATIENCE, w.next()).await {
        Ok(Some(item)) => item,
        Ok(None) => panic!("service watch ended while waiting for {what}"),
        Err(_) => panic!("no service event within {PATIENCE:?} while waiting for {what}"),
    }
}

async fn wait_for_state(reg: &coordkit::Registration, state: RegistrationState) {
    let mut states = reg.watch_state();
    tokio::time::timeout(PATIENCE, states.wait_for(|s| *s == state))
        .await
        .unwrap_or_else(|_| panic!("registration never became {state:?}"))
        .ok();
}

/// Registered instances are discovered (by id, only their service's); `deregister`
/// and `unregister(id)` from another process remove them.
pub async fn registry_register_discover_unregister(ctx: Ctx) -> Result<()> {
    let ttl = ctx.recipe_ttl();
    let a = ctx.coordinator();
    let r2 = a.registry().register(instance("i-2", 8002), ttl).await?;
    let r1 = a.registry().register(instance("i-1", 8001), ttl).await?;
    let _web = a
        .registry()
        .register(ServiceInfo::new("w-1", "web", "10.0.0.1", 80), ttl)
        .await?;
    let other = ctx.other_coordinator().await;
    assert_eq!(
        other.registry().discover("api").await?,
        [instance("i-1", 8001), instance("i-2", 8002)]
    );
    assert_eq!(other.registry().discover("web").await?.len(), 1);
    assert!(other.registry().discover("none").await?.is_empty());
    let stored = ctx
        .backend()
        .get("coord/service/api/i-1")
        .await?
        .expect("stored");
    assert_eq!(stored.lease, Some(a.session(ttl).await?.lease()));

    let r2_state = r2.watch_state();
    r2.deregister().await?;
    assert_eq!(*r2_state.borrow(), RegistrationState::Deregistered);
    assert_eq!(
        other.registry().discover("api").await?,
        [instance("i-1", 8001)]
    );

    assert_eq!(other.registry().deregister("i-1").await?, 1);
    assert!(other.registry().discover("api").await?.is_empty());
    wait_for_state(&r1, RegistrationState::Removed).await;
    assert!(
        other.registry().discover("api").await?.is_empty(),
        "a removed registration stays removed"
    );
    assert_eq!(other.registry().deregister("i-1").await?, 0);
    Ok(())
}

/// A watch starts with one `Put` per instance, then sees changes in order.
pub async fn registry_watch_starts_with_snapshot_then_changes(ctx: Ctx) -> Result<()> {
    let ttl = ctx.recipe_ttl();
    let a = ctx.coordinator();
    let r1 = a.registry().register(instance("i-1", 8001), ttl).await?;
    let _r2 = a.registry().register(instance("i-2", 8002), ttl).await?;
    let mut watch = ctx
        .other_coordinator()
        .await
        .registry()
        .watch("api")
        .await?;
    for id in ["i-1", "i-2"] {
        let e = next_service_event(&mut watch, "the snapshot").await?;
        assert_eq!((e.kind, e.service.id.as_str()), (ServiceEventKind::Put, id));
    }
    let _r3 = a.registry().register(instance("i-3", 8003), ttl).await?;
    r1.deregister().await?;
    let e = next_service_event(&mut watch, "the new instance").await?;
    assert_eq!(
        (e.kind, e.service),
        (ServiceEventKind::Put, instance("i-3", 8003))
    );
    let e = next_service_event(&mut watch, "the deregistration").await?;
    assert_eq!(
        (e.kind, e.service),
        (ServiceEventKind::Delete, instance("i-1", 8001))
    );
    Ok(())
}

/// A registration whose lease is revoked registers itself again on a new lease.
pub async fn registration_reregisters_after_its_lease_is_revoked(ctx: Ctx) -> Result<()> {
    let ttl = ctx.recipe_ttl();
    let a = ctx.coordinator();
    let reg = a.registry().register(instance("i-1", 8001), ttl).await?;
    let b = ctx.backend();
    let old = b
        .get(reg.key())
        .await?
        .expect("registered")
        .lease
        .expect("a lease");
    b.lease_revoke(old).await?;
    wait_until("the instance is back on a new lease", || async {
        Ok(b.get(reg.key())
            .await?
            .is_some_and(|kv| kv.lease.is_some_and(|l| l != old)))
    })
    .await?;
    wait_for_state(&reg, RegistrationState::Registered).await;
    assert_eq!(a.registry().discover("api").await?, [instance("i-1", 8001)]);
    reg.deregister().await?;
    assert!(a.registry().discover("api").await?.is_empty());
    Ok(())
}

/// Registering an id that is present replaces it; the replaced registration
/// stops, reports `Replaced`, and its deregister leaves the new one alone.
pub async fn registering_an_existing_id_replaces_it(ctx: Ctx) -> Result<()> {
    let ttl = ctx.recipe_ttl();
    let old = ctx
        .coordinator()
        .registry()
        .register(instance("i-1", 8001), ttl)
        .await?;
    let restarted = ctx.other_coordinator().await;
    let new = restarted
        .registry()
        .register(instance("i-1", 9001), ttl)
        .await?;
    wait_for_state(&old, RegistrationState::Replaced).await;
    old.deregister().await?;
    assert_eq!(
        restarted.registry().discover("api").await?,
        [instance("i-1", 9001)]
    );
    assert_eq!(new.state(), RegistrationState::Registered);
    drop(new);
    wait_until("the dropped registration is gone", || async {
        Ok(restarted.registry().discover("api").await?.is_empty())
    })
    .await?;
    Ok(())
}

/// The cache equals the store after 1,000 random registrations and
/// deregistrations from 4 coordinators.
pub async fn registry_cache_follows_random_changes(ctx: Ctx) -> Result<()> {
    let ttl = ctx.recipe_ttl();
    let observer = ctx.other_coordinator().await;
    let cache = observer.registry().cache("api").await?;
    assert!(cache.instances().is_empty());
    let mut tasks = Vec::new();
    for client in 0..4u64 {
        let coordinator = ctx.other_coordinator().await;
        tasks.push(tokio::spawn(async move {
            let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ (client + 1);
            let mut held: HashMap<String, coordkit::Registration> = HashMap::new();
            for _ in 0..250 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let id = format!("c{client}-{}", seed % 12);
                match held.remove(&id) {
                    Some(reg) => reg.deregister().await?,
                    None => {
                        let port = 1000 + (seed % 5000) as u16;
                        let reg = coordinator
                            .registry()
                            .register(instance(&id, port), ttl)
                            .await?;
                        held.insert(id, reg);
                    }
                }
            }
            // Keep the survivors registered until the check is done.
            Ok::<_, coordkit::Error>((coordinator, held))
        }));
    }
    let mut keep = Vec::new();
    for t in tasks {
        keep.push(t.await.expect("task")?);
    }
    let store = observer.registry().discover("api").await?;
    assert!(!store.is_empty());
    wait_until("the cache equals the store", || async {
        Ok(*cache.instances() == store)
    })
    .await?;
    drop(keep);
    Ok(())
}

/// Entries that are not valid instances are skipped and counted, never fatal.
pub async fn registry_skips_malformed_entries(ctx: Ctx) -> Result<()> {
    let ttl = ctx.recipe_ttl();
    let a = ctx.coordinator();
    let cache = a.registry().cache("api").await?;
    let mut watch = a.registry().watch("api").await?;
    let b = ctx.backend();
    b.put("coord/service/api/garbage", "not json").await?;
    b.put(
        "coord/service/api/wrong-id",
        serde_json::to_vec(&instance("someone-else", 1)).expect("json"),
    )
    .await?;
    b.put(
        "coord/service/api/port0",
        serde_json::to_vec(&ServiceInfo::new("port0", "api", "h", 0)).expect("json"),
    )
    .await?;
    let _good = a.registry().register(instance("good", 8000), ttl).await?;
    let e = next_service_event(&mut watch, "the good instance").await?;
    assert_eq!(e.service.id, "good");
    assert_eq!(
        a.registry().discover("api").await?,
        [instance("good", 8000)]
    );
    wait_until("the cache has the good instance", || async {
        Ok(cache.instances().len() == 1)
    })
    .await?;
    assert_eq!(*cache.instances(), [instance("good", 8000)]);
    assert!(
        a.registry().malformed_entries() >= 9,
        "{}",
        a.registry().malformed_entries()
    );
    Ok(())
}

/// Bad registrations are `InvalidArgument` naming the field; nothing is written.
pub async fn registry_input_is_validated(ctx: Ctx) -> Result<()> {
    let ttl = ctx.recipe_ttl();
    let r = ctx.coordinator().registry();
    let ok = instance("i", 1);
    for (bad, argument) in [
        (
            {
                let mut i = ok.clone();
                i.id = String::new();
                i
            },
            "id",
        ),
        (
            {
                let mut i = ok.clone();
                i.id = "a/b".into();
                i
            },
            "id",
        ),
        (
            {
                let mut i = ok.clone();
                i.name = String::new();
                i
            },
            "name",
        ),
        (
            {
                let mut i = ok.clone();
                i.name = "a/b".into();
                i
            },
            "name",
        ),
        (
            {
                let mut i = ok.clone();
                i.name = "a\nb".into();
                i
            },
            "name",
        ),
        (
            {
                let mut i = ok.clone();
                i.address = String::new();
                i
            },
            "address",
        ),
        (
            {
                let mut i = ok.clone();
                i.address = "a b".into();
                i
            },
            "address",
        ),
        (
            {
                let mut i = ok.clone();
                i.port = 0;
                i
            },
            "port",
        ),
    ] {
        assert_invalid(r.register(bad, ttl).await, argument);
    }
    assert_invalid(r.register(ok.clone(), Duration::ZERO).await, "ttl");
    let huge = ok
        .clone()
        .with_metadata("blob", "x".repeat(ctx.backend().limits().max_value_bytes));
    assert_invalid(r.register(huge, ttl).await, "metadata");
    assert_invalid(r.discover("").await, "name");
    assert_invalid(r.discover("a/b").await, "name");
    assert_invalid(r.deregister("").await, "id");
    assert_invalid(r.watch("a/b").await, "name");
    assert_invalid(r.cache("").await, "name");
    assert!(ctx.backend().get_prefix("coord/").await?.is_empty());
    Ok(())
}
