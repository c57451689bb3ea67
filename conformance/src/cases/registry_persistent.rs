//! Persistent instances: registered without a lease, they stay until
//! deregistered.

use coordkit::{RegistrationState, Result, ServiceInfo};

use crate::cases::registry::instance;
use crate::context::{wait_until, PATIENCE};
use crate::Ctx;

/// A persistent instance is discovered, cached and picked like any, marked
/// `persistent`; it outlives the coordinator that wrote it (closed: its
/// ephemeral instances go, it stays); `deregister(id)` removes it and its
/// index entry; writing it again over a live registration of the same id
/// replaces that registration.
pub async fn registry_persistent_instances_stay_until_deregistered(ctx: Ctx) -> Result<()> {
    let ttl = ctx.recipe_ttl();
    let writer = ctx.other_coordinator().await;
    let observer = ctx.coordinator();
    let cache = observer.registry().cache("api").await?;
    let db = ServiceInfo::new("db-1", "api", "10.0.0.9", 5432).with_tag("external");
    writer.registry().register_persistent(db.clone()).await?;
    let _eph = writer
        .registry()
        .register(instance("i-1", 8001), ttl)
        .await?;
    let found = observer.registry().discover("api").await?;
    let persistent: Vec<(&str, bool)> = found
        .iter()
        .map(|i| (i.id.as_str(), i.persistent))
        .collect();
    assert_eq!(persistent, [("db-1", true), ("i-1", false)]);
    wait_until("the cache has both", || async {
        Ok(cache.instances().len() == 2)
    })
    .await?;
    writer.close().await?;
    wait_until("the ephemeral instance goes with its process", || async {
        Ok(observer.registry().discover("api").await?.len() == 1)
    })
    .await?;
    assert_eq!(
        observer.registry().discover("api").await?[0].id,
        "db-1",
        "the persistent one stays"
    );
    // A live registration of the same id is replaced by a persistent write.
    let live = observer
        .registry()
        .register(ServiceInfo::new("web-1", "web", "10.0.0.5", 80), ttl)
        .await?;
    let mut states = live.watch_state();
    observer
        .registry()
        .register_persistent(ServiceInfo::new("web-1", "web", "10.0.0.6", 80))
        .await?;
    tokio::time::timeout(
        PATIENCE,
        states.wait_for(|s| *s == RegistrationState::Replaced),
    )
    .await
    .expect("the live registration sees the persistent write")
    .ok();
    let web = observer.registry().discover("web").await?;
    assert_eq!(
        (web[0].address.as_str(), web[0].persistent),
        ("10.0.0.6", true)
    );
    // Deregistered by id: gone, index entry included; a second time, nothing.
    assert_eq!(observer.registry().deregister("db-1").await?, 1);
    assert!(observer.registry().discover("api").await?.is_empty());
    assert_eq!(observer.registry().deregister("db-1").await?, 0);
    let index = observer.keys().id_index_entry("db-1", "api");
    assert!(
        coordkit::BackendExt::get(observer.backend().as_ref(), index)
            .await?
            .is_none()
    );
    // `register` never writes the mark, whatever it is given.
    let mut claimed = instance("i-2", 8002);
    claimed.persistent = true;
    let _r = observer.registry().register(claimed, ttl).await?;
    let i2 = observer.registry().discover("api").await?;
    assert!(!i2[0].persistent);
    observer.registry().deregister("web-1").await?;
    Ok(())
}

/// A persistent registration whose answer is lost, late or held is reported
/// written (the instance and its index entry there, marked persistent) or
/// unknown (both there or neither); never half, never an error for a write
/// that applied.
pub async fn ambiguous_a_persistent_registration_is_written_whole(ctx: Ctx) -> Result<()> {
    use futures::FutureExt;
    crate::cases::ambiguous::sweep(
        &ctx,
        "registry register_persistent",
        |_| async { Ok(()) }.boxed(),
        |c| {
            async move {
                c.registry()
                    .register_persistent(ServiceInfo::new("db-1", "api", "10.0.0.9", 5432))
                    .await
            }
            .boxed()
        },
        |r, plain, label| async move {
            let found = plain.registry().discover("api").await.unwrap();
            let index = plain.keys().id_index_entry("db-1", "api");
            let indexed = coordkit::BackendExt::get(plain.backend().as_ref(), index)
                .await
                .unwrap()
                .is_some();
            let present = found.len() == 1 && found[0].persistent;
            assert_eq!(
                present, indexed,
                "{label}: the instance and its index together"
            );
            match r {
                Ok(_) => assert!(present, "{label}: reported written"),
                Err(coordkit::Error::OutcomeUnknown { .. }) => {}
                Err(e) => panic!("{label}: {e:?}"),
            }
        },
    )
    .await?;
    Ok(())
}
