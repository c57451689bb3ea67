//! Registry for production services: tags, weights and health; filters; updates
//! and health checkers; pickers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use coordkit::{
    BackendExt, Error, InstanceHealth, PickStrategy, RegistrationState, Result, ServiceFilter,
    ServiceInfo,
};

use crate::context::{assert_invalid, wait_until};
use crate::Ctx;

fn ids(instances: &[ServiceInfo]) -> Vec<&str> {
    instances.iter().map(|i| i.id.as_str()).collect()
}

/// Instances carry tags, a weight and a health; `discover_matching` and the
/// cache's `instances_matching` return those a filter wants (all its tags and
/// metadata pairs, health no worse than allowed: passing by default). An entry
/// written without these fields reads as untagged, weight 1, passing; a weight
/// over the maximum or an empty tag is `InvalidArgument`.
pub async fn registry_instances_carry_tags_weight_and_health_and_filter(ctx: Ctx) -> Result<()> {
    let ttl = ctx.recipe_ttl();
    let c = ctx.coordinator();
    let reg = c.registry();
    let base = |id: &str, zone: &str| {
        ServiceInfo::new(id, "tagged", "127.0.0.1", 9000).with_metadata("zone", zone)
    };
    let _r1 = reg
        .register(base("i-1", "a").with_tag("grpc").with_weight(5), ttl)
        .await?;
    let _r2 = reg.register(base("i-2", "b").with_tag("http"), ttl).await?;
    let _r3 = reg
        .register(
            base("i-3", "b")
                .with_tag("grpc")
                .with_health(InstanceHealth::Warning),
            ttl,
        )
        .await?;
    // Written by an older client: none of the new fields.
    ctx.backend()
        .put(
            "coord/service/tagged/i-4",
            r#"{"id":"i-4","name":"tagged","address":"127.0.0.1","port":9004,"metadata":{}}"#,
        )
        .await?;
    let old = reg.discover("tagged").await?.pop().expect("four instances");
    assert_eq!(
        (old.id.as_str(), old.weight, old.health, old.tags.len()),
        ("i-4", 1, InstanceHealth::Passing, 0)
    );
    let cache = reg.cache("tagged").await?;
    let cases = [
        (ServiceFilter::new().tag("grpc"), vec!["i-1"]),
        (
            ServiceFilter::new().tag("grpc").with_warning(),
            vec!["i-1", "i-3"],
        ),
        (ServiceFilter::new().metadata("zone", "b"), vec!["i-2"]),
        (
            ServiceFilter::new().metadata("zone", "b").tag("http"),
            vec!["i-2"],
        ),
        (ServiceFilter::new().tag("grpc").tag("http"), vec![]),
        (ServiceFilter::new(), vec!["i-1", "i-2", "i-4"]),
        (ServiceFilter::all(), vec!["i-1", "i-2", "i-3", "i-4"]),
    ];
    for (filter, want) in cases {
        let found = reg.discover_matching("tagged", &filter).await?;
        assert_eq!(ids(&found), want, "discover_matching with {filter:?}");
        assert_eq!(
            ids(&cache.instances_matching(&filter)),
            want,
            "the cache with {filter:?}"
        );
    }
    assert_eq!(
        reg.discover("tagged").await?[0].weight,
        5,
        "the weight is stored"
    );
    assert_invalid(
        reg.register(base("w", "a").with_weight(coordkit::MAX_WEIGHT + 1), ttl)
            .await,
        "weight",
    );
    assert_invalid(reg.register(base("t", "a").with_tag(""), ttl).await, "tags");
    Ok(())
}

/// `Registration::update` and `set_health` rewrite the instance under its own
/// registration: watchers and caches follow, the registration stays
/// `Registered` (its own write is never taken for a replacement), the id and
/// name cannot change (`InvalidArgument`), and a stopped registration is
/// `Closed`.
pub async fn registry_updates_are_followed_and_keep_the_registration(ctx: Ctx) -> Result<()> {
    let ttl = ctx.recipe_ttl();
    let c = ctx.coordinator();
    let reg = c.registry();
    let r = reg
        .register(ServiceInfo::new("u-1", "updated", "127.0.0.1", 9100), ttl)
        .await?;
    let cache = reg.cache("updated").await?;
    let passing = ServiceFilter::new();
    for health in [
        InstanceHealth::Critical,
        InstanceHealth::Warning,
        InstanceHealth::Passing,
    ] {
        let written = r.set_health(health).await?;
        assert_eq!(written.health, health);
        wait_until(&format!("the cache sees {health:?}"), || async {
            Ok(cache.instances().first().map(|i| i.health) == Some(health))
        })
        .await?;
        assert_eq!(
            cache.instances_matching(&passing).len(),
            usize::from(health == InstanceHealth::Passing),
            "only a passing instance is wanted by default"
        );
    }
    r.update(|i| {
        i.weight = 3;
        i.tags.insert("canary".into());
        i.port = 9101;
    })
    .await?;
    let now = reg.discover("updated").await?;
    assert_eq!((now[0].weight, now[0].port), (3, 9101));
    assert!(now[0].tags.contains("canary"));
    assert_eq!(r.info().port, 9101);
    // Long enough for the keeper to have judged every write.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        r.state(),
        RegistrationState::Registered,
        "a registration's own updates are not a replacement"
    );
    assert_invalid(r.update(|i| i.id = "other".into()).await, "info");
    assert_invalid(r.update(|i| i.port = 0).await, "port");
    // Replaced by another registration of the same id: updates are refused.
    let other = ctx.other_coordinator().await;
    let _replacement = other
        .registry()
        .register(ServiceInfo::new("u-1", "updated", "127.0.0.2", 9200), ttl)
        .await?;
    wait_until("the replaced registration notices", || async {
        Ok(r.state() == RegistrationState::Replaced)
    })
    .await?;
    let err = r.set_health(InstanceHealth::Critical).await.unwrap_err();
    assert!(matches!(err, Error::Closed { .. }), "got {err:?}");
    assert_eq!(reg.discover("updated").await?[0].address, "127.0.0.2");
    other.close().await
}

/// A health checker run by the registration writes each change of health it
/// reports: the instance leaves the passing instances while its check fails and
/// comes back when it passes. A zero interval is `InvalidArgument`.
pub async fn registry_health_checker_writes_changes(ctx: Ctx) -> Result<()> {
    let ttl = ctx.recipe_ttl();
    let c = ctx.coordinator();
    let reg = c.registry();
    let r = reg
        .register(ServiceInfo::new("h-1", "checked", "127.0.0.1", 9300), ttl)
        .await?;
    let status = Arc::new(AtomicU8::new(0));
    let check = {
        let status = status.clone();
        move || {
            let status = status.clone();
            async move {
                match status.load(Ordering::SeqCst) {
                    0 => InstanceHealth::Passing,
                    1 => InstanceHealth::Warning,
                    _ => InstanceHealth::Critical,
                }
            }
        }
    };
    assert_invalid(r.check_health(Duration::ZERO, check.clone()), "interval");
    r.check_health(Duration::from_millis(50), check)?;
    for (value, want) in [
        (2, InstanceHealth::Critical),
        (1, InstanceHealth::Warning),
        (0, InstanceHealth::Passing),
    ] {
        status.store(value, Ordering::SeqCst);
        wait_until(&format!("the store shows {want:?}"), || async {
            Ok(reg.discover("checked").await?.first().map(|i| i.health) == Some(want))
        })
        .await?;
        let passing = reg
            .discover_matching("checked", &ServiceFilter::new())
            .await?;
        assert_eq!(passing.len(), usize::from(want == InstanceHealth::Passing));
    }
    assert_eq!(r.state(), RegistrationState::Registered);
    Ok(())
}

/// Pickers choose among the instances their filter wants with a weight above 0:
/// weighted picks follow the weights exactly over a cycle (5:1:1 in 7 picks),
/// round-robin takes each in turn, least-outstanding takes the instance with the
/// fewest live picks; a drained (weight 0) or critical instance is never picked,
/// and with none wanted `pick` is `None`.
pub async fn registry_pickers_follow_their_strategy(ctx: Ctx) -> Result<()> {
    let ttl = ctx.recipe_ttl();
    let c = ctx.coordinator();
    let reg = c.registry();
    let mut regs = Vec::new();
    for (id, weight, health) in [
        ("a", 5, InstanceHealth::Passing),
        ("b", 1, InstanceHealth::Passing),
        ("c", 1, InstanceHealth::Passing),
        ("d", 1, InstanceHealth::Critical),
        ("e", 0, InstanceHealth::Passing),
    ] {
        let info = ServiceInfo::new(id, "picked", "127.0.0.1", 9400)
            .with_weight(weight)
            .with_health(health);
        regs.push(reg.register(info, ttl).await?);
    }
    let picker = |strategy| reg.picker("picked", strategy, ServiceFilter::new());
    let count = |picks: Vec<String>| {
        let mut n: HashMap<String, usize> = HashMap::new();
        for p in picks {
            *n.entry(p).or_default() += 1;
        }
        n
    };

    let weighted = picker(PickStrategy::Weighted).await?;
    assert_eq!(ids(&weighted.candidates()), ["a", "b", "c"]);
    let picks: Vec<String> = (0..7)
        .map(|_| weighted.pick().expect("a pick").id.clone())
        .collect();
    let n = count(picks.clone());
    assert_eq!(
        (n["a"], n["b"], n["c"]),
        (5, 1, 1),
        "weights 5:1:1 over 7 picks, got {picks:?}"
    );
    assert!(
        !picks.windows(3).any(|w| w.iter().all(|p| p == "a")),
        "smooth: the heavy instance is interleaved, got {picks:?}"
    );

    let round = picker(PickStrategy::RoundRobin).await?;
    let picks: Vec<String> = (0..6)
        .map(|_| round.pick().expect("a pick").id.clone())
        .collect();
    let n = count(picks.clone());
    assert_eq!((n["a"], n["b"], n["c"]), (2, 2, 2), "got {picks:?}");

    let least = picker(PickStrategy::LeastOutstanding).await?;
    let first = least.pick().expect("a pick");
    let second = least.pick().expect("a pick");
    let third = least.pick().expect("a pick");
    let mut busy = vec![first.id.clone(), second.id.clone(), third.id.clone()];
    busy.sort();
    assert_eq!(busy, ["a", "b", "c"], "three live picks spread over three");
    let freed = second.id.clone();
    drop(second);
    assert_eq!(
        least.pick().expect("a pick").id,
        freed,
        "the instance whose pick ended is the least busy"
    );
    drop((first, third));

    let none = reg
        .picker(
            "picked",
            PickStrategy::RoundRobin,
            ServiceFilter::new().tag("absent"),
        )
        .await?;
    assert!(none.pick().is_none());
    Ok(())
}

/// A least-outstanding picker remembers requests in flight to an instance
/// that leaves its candidates and comes back (a health flap): the busier
/// instance is not taken for idle on its return.
pub async fn registry_least_outstanding_remembers_requests_across_a_flap(ctx: Ctx) -> Result<()> {
    let ttl = ctx.recipe_ttl();
    let c = ctx.coordinator();
    let reg = c.registry();
    let mut regs = HashMap::new();
    for id in ["x", "y"] {
        let info = ServiceInfo::new(id, "flapping", "127.0.0.1", 9500);
        regs.insert(id.to_string(), reg.register(info, ttl).await?);
    }
    let least = reg
        .picker(
            "flapping",
            PickStrategy::LeastOutstanding,
            ServiceFilter::new(),
        )
        .await?;
    let one = least.pick().expect("a pick");
    let two = least.pick().expect("a pick");
    let busy = least.pick().expect("a pick"); // one instance has two in flight now
    let (busier, other) = (busy.id.clone(), if busy.id == "x" { "y" } else { "x" });
    regs[&busier].set_health(InstanceHealth::Critical).await?;
    wait_until("the picker drops the busier instance", || async {
        Ok(ids(&least.candidates()) == [other])
    })
    .await?;
    drop(least.pick().expect("the other instance"));
    regs[&busier].set_health(InstanceHealth::Passing).await?;
    wait_until("the busier instance is back", || async {
        Ok(least.candidates().len() == 2)
    })
    .await?;
    assert_eq!(
        least.pick().expect("a pick").id,
        other,
        "{busier} still has two requests in flight, {other} one"
    );
    drop((one, two, busy));
    Ok(())
}

/// etcd's `naming/endpoints` format (grpc-go's etcd resolver): entries a Go
/// service wrote (`{"Op":0,"Addr":"host:port","Metadata":…}` under
/// `<target>/<id>`) are discovered and cached, entries that are not adds of a
/// `host:port` are skipped; an instance registered in that format is stored as
/// exactly the JSON Go writes, on a lease, and removed on deregister; metadata
/// is written only through `with_metadata` (`null` otherwise, which grpc-go's
/// resolver needs); a health
/// the format cannot carry and a bad target are `InvalidArgument`.
pub async fn registry_etcd_naming_matches_the_grpc_go_format(ctx: Ctx) -> Result<()> {
    let ttl = ctx.recipe_ttl();
    let b = ctx.backend();
    let c = ctx.coordinator();
    let naming = c.registry().etcd_naming("my-service")?;
    // As Go's endpoints.Manager writes them.
    b.put(
        "my-service/e1",
        r#"{"Op":0,"Addr":"10.0.0.1:8080","Metadata":{"zone":"a","weight":3}}"#,
    )
    .await?;
    b.put(
        "my-service/e2",
        r#"{"Op":0,"Addr":"[::1]:9090","Metadata":null}"#,
    )
    .await?;
    b.put("my-service/bad-op", r#"{"Op":1,"Addr":"10.0.0.3:1"}"#)
        .await?;
    b.put("my-service/bad-addr", r#"{"Op":0,"Addr":"nohost"}"#)
        .await?;
    b.put("my-servicex/other", r#"{"Op":0,"Addr":"10.0.0.9:1"}"#)
        .await?;
    let found = naming.discover().await?;
    assert_eq!(ids(&found), ["e1", "e2"], "{found:?}");
    assert_eq!(
        (
            found[0].address.as_str(),
            found[0].port,
            found[0].name.as_str()
        ),
        ("10.0.0.1", 8080, "my-service")
    );
    assert_eq!(found[0].metadata.get("zone").map(String::as_str), Some("a"));
    assert_eq!(
        found[0].metadata.get("weight").map(String::as_str),
        Some("3")
    );
    assert_eq!((found[1].address.as_str(), found[1].port), ("::1", 9090));
    assert_eq!(found[1].authority(), "[::1]:9090");

    let cache = naming.cache().await?;
    let with_meta = naming
        .clone()
        .with_metadata()
        .register(
            ServiceInfo::new("c1", "api", "127.0.0.1", 7001).with_metadata("zone", "b"),
            ttl,
        )
        .await?;
    let plain = naming
        .register(
            ServiceInfo::new("c2", "api", "127.0.0.1", 7002).with_metadata("zone", "b"),
            ttl,
        )
        .await?;
    let stored = b.get("my-service/c1").await?.expect("the Go-format entry");
    assert_eq!(
        crate::context::text(&stored.value),
        r#"{"Op":0,"Addr":"127.0.0.1:7001","Metadata":{"zone":"b"}}"#
    );
    assert!(stored.lease.is_some(), "a registration is on a lease");
    let stored = b.get("my-service/c2").await?.expect("the Go-format entry");
    assert_eq!(
        crate::context::text(&stored.value),
        r#"{"Op":0,"Addr":"127.0.0.1:7002","Metadata":null}"#
    );
    wait_until("the cache sees both formats' writers", || async {
        Ok(ids(&cache.instances()) == ["c1", "c2", "e1", "e2"])
    })
    .await?;
    assert_invalid(
        with_meta.set_health(InstanceHealth::Critical).await,
        "health",
    );
    with_meta
        .update(|i| {
            i.metadata.insert("zone".into(), "c".into());
        })
        .await?;
    let stored = b.get("my-service/c1").await?.expect("the Go-format entry");
    assert_eq!(
        crate::context::text(&stored.value),
        r#"{"Op":0,"Addr":"127.0.0.1:7001","Metadata":{"zone":"c"}}"#
    );
    with_meta.deregister().await?;
    plain.deregister().await?;
    assert!(b.get("my-service/c1").await?.is_none());
    assert_eq!(ids(&naming.discover().await?), ["e1", "e2"]);
    assert_invalid(c.registry().etcd_naming(""), "target");
    assert_invalid(c.registry().etcd_naming("svc/"), "target");
    Ok(())
}

/// `deregister(id)` finds an id's instances through its index
/// (`coord/service-id/<id>/<name>`, written on the instance's lease and removed
/// with it): it removes the id from every service it is registered in, leaves
/// other ids alone, and leaves no index entry behind; a registration's own
/// deregister removes its index entry too.
pub async fn registry_deregister_by_id_uses_the_id_index(ctx: Ctx) -> Result<()> {
    use crate::context::count_keys;
    let ttl = ctx.recipe_ttl();
    let b = ctx.backend();
    let c = ctx.coordinator();
    let reg = c.registry();
    let alpha = reg
        .register(ServiceInfo::new("x-1", "alpha", "127.0.0.1", 9500), ttl)
        .await?;
    let beta = reg
        .register(ServiceInfo::new("x-1", "beta", "127.0.0.1", 9501), ttl)
        .await?;
    let other = reg
        .register(ServiceInfo::new("x-2", "alpha", "127.0.0.1", 9502), ttl)
        .await?;
    assert_eq!(count_keys(b.as_ref(), "coord/service-id/x-1/").await?, 2);
    let entry = b
        .get("coord/service-id/x-1/alpha")
        .await?
        .expect("the index entry");
    assert!(
        entry.lease.is_some(),
        "the index entry is on the instance's lease"
    );

    let other_process = ctx.other_coordinator().await;
    assert_eq!(other_process.registry().deregister("x-1").await?, 2);
    assert_eq!(count_keys(b.as_ref(), "coord/service-id/x-1/").await?, 0);
    assert!(b.get("coord/service/alpha/x-1").await?.is_none());
    assert!(b.get("coord/service/beta/x-1").await?.is_none());
    assert_eq!(ids(&reg.discover("alpha").await?), ["x-2"]);
    for r in [&alpha, &beta] {
        wait_until("the removed registration notices", || async {
            Ok(r.state() == RegistrationState::Removed)
        })
        .await?;
    }
    assert_eq!(other_process.registry().deregister("x-1").await?, 0);
    other.deregister().await?;
    assert_eq!(count_keys(b.as_ref(), "coord/service-id/").await?, 0);
    other_process.close().await
}
