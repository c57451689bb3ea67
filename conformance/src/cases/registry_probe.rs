//! Verdicts from outside: recorded beside an instance with compare-and-set,
//! folded into every read, gone with the instance; persistent instances
//! removed by a prober. (The prober's checks run against real servers in the
//! core crate's `tests/probe.rs`.)

use coordkit::{
    BackendExt, Compare, CompareOp, InstanceHealth, ProbeTarget, ProbeVerdict, RegistrationState,
    Result, ServiceInfo,
};
use futures::FutureExt;

use crate::cases::registry::{instance, next_service_event};
use crate::context::{assert_invalid, wait_until};
use crate::Ctx;

fn verdict(target: &ProbeTarget, health: InstanceHealth) -> ProbeVerdict {
    ProbeVerdict::new(health, target.create_revision, 1, "seen", "conformance")
}

async fn only_target(c: &coordkit::Coordinator, service: &str) -> Result<ProbeTarget> {
    let mut targets = c.registry().probe_targets(service).await?;
    assert_eq!(targets.len(), 1, "one instance of {service}");
    Ok(targets.remove(0))
}

/// A verdict is written only over the instance and verdict as read (a stale
/// read, an updated instance, a failed fence: not written), on the instance's
/// lease; every read (discover, watch, cache, `services`) folds it in with the worse
/// health winning, without disturbing the registration; it goes with the
/// instance, and a registration made again is not judged by it.
pub async fn registry_verdicts_are_compared_and_folded_into_reads(ctx: Ctx) -> Result<()> {
    let ttl = ctx.recipe_ttl();
    let writer = ctx.other_coordinator().await;
    let observer = ctx.coordinator();
    let registry = observer.registry();
    let cache = registry.cache("api").await?;
    let registration = writer
        .registry()
        .register(instance("i-1", 8001), ttl)
        .await?;
    let target = only_target(&observer, "api").await?;
    assert_eq!(
        (target.verdict.as_ref(), target.verdict_revision),
        (None, 0)
    );
    assert!(
        registry
            .record_verdict(&target, &verdict(&target, InstanceHealth::Critical), None)
            .await?
    );
    let read = registry.discover("api").await?;
    assert_eq!(read[0].health, InstanceHealth::Critical);
    assert_eq!(
        read[0].probe.as_ref().map(|p| p.prober.as_str()),
        Some("conformance")
    );
    wait_until("the cache folds the verdict in", || async {
        Ok(cache.instances().first().map(|i| i.health) == Some(InstanceHealth::Critical))
    })
    .await?;
    assert_eq!(
        registry.services().await?,
        [("api".to_string(), 1)],
        "a verdict is no instance"
    );
    // A watch begins with one Put per instance, its verdict folded in.
    let mut watch = registry.watch("api").await?;
    let first = next_service_event(&mut watch, "the instance").await?;
    assert_eq!(first.service.health, InstanceHealth::Critical);
    // On the instance's lease.
    let key = observer.keys().probe_verdict("api", "i-1");
    let stored = observer
        .backend()
        .get(key.clone())
        .await?
        .expect("the verdict");
    assert_eq!(stored.lease, target.lease);
    // The same stale read again: the verdict moved on, nothing written.
    let passing = verdict(&target, InstanceHealth::Passing);
    assert!(!registry.record_verdict(&target, &passing, None).await?);
    // A verdict naming another registration is refused.
    let mut other = passing.clone();
    other.instance += 1;
    assert_invalid(
        registry.record_verdict(&target, &other, None).await,
        "verdict",
    );
    // The instance updated since the read: nothing written.
    let target = only_target(&observer, "api").await?;
    registration.update(|i| i.weight = 3).await?;
    let next = next_service_event(&mut watch, "the update").await?;
    assert_eq!(
        (next.service.weight, next.service.health),
        (3, InstanceHealth::Critical),
        "one Put per instance at the start, then the update, verdict kept"
    );
    assert!(!registry.record_verdict(&target, &passing, None).await?);
    // A fence that does not hold: nothing written.
    let target = only_target(&observer, "api").await?;
    let fence = Compare::create_revision(
        format!("{}no-such-leader", observer.keys().namespace()),
        CompareOp::Equal,
        7,
    );
    assert!(
        !registry
            .record_verdict(&target, &passing, Some(fence))
            .await?
    );
    // The registration was never disturbed, and still reads critical.
    assert_eq!(registration.state(), RegistrationState::Registered);
    assert_eq!(registration.info().health, InstanceHealth::Passing);
    let read = registry.discover("api").await?;
    assert_eq!(
        (read[0].health, read[0].weight),
        (InstanceHealth::Critical, 3)
    );
    // The instance's own worse health stands over a passing verdict.
    assert!(registry.record_verdict(&target, &passing, None).await?);
    registration.set_health(InstanceHealth::Warning).await?;
    assert_eq!(
        registry.discover("api").await?[0].health,
        InstanceHealth::Warning
    );
    // Deregistered: the verdict goes too; registered again: judged afresh.
    registration.deregister().await?;
    assert!(observer.backend().get(key.clone()).await?.is_none());
    let again = writer
        .registry()
        .register(instance("i-1", 8001), ttl)
        .await?;
    let read = registry.discover("api").await?;
    assert_eq!(
        (read[0].health, read[0].probe.is_none()),
        (InstanceHealth::Passing, true)
    );
    // A verdict left over from an earlier registration is not applied.
    let target = only_target(&observer, "api").await?;
    let mut stale = verdict(&target, InstanceHealth::Critical);
    stale.instance = 1;
    observer
        .backend()
        .put(key.clone(), serde_json::to_vec(&stale).unwrap())
        .await?;
    let read = registry.discover("api").await?;
    assert_eq!(
        (read[0].health, read[0].probe.is_none()),
        (InstanceHealth::Passing, true)
    );
    observer.backend().delete(key).await?;
    again.deregister().await?;
    writer.close().await?;
    Ok(())
}

/// A persistent instance is removed by `remove_probed` with its index entry
/// and verdict, only over the state read; an ephemeral one is refused.
pub async fn registry_a_prober_removes_only_persistent_instances(ctx: Ctx) -> Result<()> {
    let c = ctx.coordinator();
    let registry = c.registry();
    let _eph = registry
        .register(instance("i-1", 8001), ctx.recipe_ttl())
        .await?;
    let eph = only_target(&c, "api").await?;
    assert_invalid(registry.remove_probed(&eph, None).await, "target");
    registry
        .register_persistent(ServiceInfo::new("db-1", "db", "10.0.0.9", 5432))
        .await?;
    let target = only_target(&c, "db").await?;
    assert!(
        registry
            .record_verdict(&target, &verdict(&target, InstanceHealth::Critical), None)
            .await?
    );
    // The read before the verdict is stale: nothing removed.
    assert!(!registry.remove_probed(&target, None).await?);
    let target = only_target(&c, "db").await?;
    assert!(registry.remove_probed(&target, None).await?);
    assert!(registry.discover("db").await?.is_empty());
    for key in [
        c.keys().id_index_entry("db-1", "db"),
        c.keys().probe_verdict("db", "db-1"),
    ] {
        assert!(c.backend().get(key.clone()).await?.is_none(), "{key} left");
    }
    Ok(())
}

async fn persistent_db(c: coordkit::Coordinator) -> Result<()> {
    c.registry()
        .register_persistent(ServiceInfo::new("db-1", "db", "10.0.0.9", 5432))
        .await
        .map(|_| ())
}

/// A verdict whose answer is lost, late or held is reported recorded (and it
/// is there) or unknown; never "not recorded" for a verdict that applied, the
/// instance never touched.
pub async fn ambiguous_a_verdict_is_recorded_once(ctx: Ctx) -> Result<()> {
    crate::cases::ambiguous::sweep(
        &ctx,
        "registry record_verdict",
        |c| persistent_db(c).boxed(),
        |c| {
            async move {
                let target = only_target(&c, "db").await?;
                let v = verdict(&target, InstanceHealth::Critical);
                c.registry().record_verdict(&target, &v, None).await
            }
            .boxed()
        },
        |r, plain, label| async move {
            let read = plain.registry().discover("db").await.unwrap();
            assert_eq!(read.len(), 1, "{label}: the instance stays");
            let recorded = read[0].probe.is_some();
            match r {
                Ok(true) => assert!(recorded, "{label}: reported recorded"),
                Ok(false) => panic!("{label}: nobody else wrote, yet not recorded"),
                Err(coordkit::Error::OutcomeUnknown { .. }) => {}
                Err(e) => panic!("{label}: {e:?}"),
            }
        },
    )
    .await?;
    Ok(())
}

/// A removal whose answer is lost, late or held is reported done (all gone)
/// or unknown (all there or all gone); never half.
pub async fn ambiguous_a_probed_removal_is_whole(ctx: Ctx) -> Result<()> {
    crate::cases::ambiguous::sweep(
        &ctx,
        "registry remove_probed",
        |c| persistent_db(c).boxed(),
        |c| {
            async move {
                c.registry()
                    .remove_probed(&only_target(&c, "db").await?, None)
                    .await
            }
            .boxed()
        },
        |r, plain, label| async move {
            let there = |key: String| {
                let plain = plain.clone();
                async move { plain.backend().get(key).await.unwrap().is_some() }
            };
            let instance = there(plain.keys().instance("db", "db-1")).await;
            let index = there(plain.keys().id_index_entry("db-1", "db")).await;
            assert_eq!(
                instance, index,
                "{label}: the instance and its index together"
            );
            match r {
                Ok(true) => assert!(!instance, "{label}: reported removed"),
                Ok(false) => panic!("{label}: nobody else wrote, yet not removed"),
                Err(coordkit::Error::OutcomeUnknown { .. }) => {}
                Err(e) => panic!("{label}: {e:?}"),
            }
        },
    )
    .await?;
    Ok(())
}
