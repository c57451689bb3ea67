//! The config center for restarts and batches: watch from a version,
//! compare-and-delete, atomic multi-key updates; the registry's service list.

use coordkit::{ConfigChange, ConfigEventKind, Error, Result, ServiceInfo};

use super::config::next_event as next;
use crate::context::assert_invalid;
use crate::Ctx;

/// A watch from version V (as a restarted process resumes) delivers every change
/// after V in order — puts and deletes, none marked resync — then live ones; a
/// version not positive or in the future is refused.
pub async fn config_watch_from_a_version_delivers_every_change_since(ctx: Ctx) -> Result<()> {
    let config = ctx.coordinator().config();
    let v1 = config.set("app/a", &1).await?;
    let v2 = config.set("app/a", &2).await?;
    let v3 = config.set("app/b", &3).await?;
    config.delete("app/a").await?;
    let mut w = config.watch_prefix_from::<i64>("app/", v1).await?;
    let e = next(&mut w, "the first change after v1").await?;
    assert_eq!(
        (e.kind, e.key.as_str(), e.value, e.version, e.resync),
        (ConfigEventKind::Put, "app/a", Some(2), v2, false)
    );
    let e = next(&mut w, "the second change after v1").await?;
    assert_eq!(
        (e.kind, e.key.as_str(), e.value, e.version),
        (ConfigEventKind::Put, "app/b", Some(3), v3)
    );
    let e = next(&mut w, "the delete after v1").await?;
    assert_eq!(
        (e.kind, e.key.as_str(), e.resync),
        (ConfigEventKind::Delete, "app/a", false)
    );
    let v5 = config.set("app/b", &5).await?;
    let e = next(&mut w, "a live change").await?;
    assert_eq!((e.key.as_str(), e.value, e.version), ("app/b", Some(5), v5));
    // One key, from its own last version: only what came after.
    let mut one = config.watch_from::<i64>("app/b", v5).await?;
    let v6 = config.set("app/b", &6).await?;
    let e = next(&mut one, "the change after the last seen version").await?;
    assert_eq!(
        (e.value, e.version),
        (Some(6), v6),
        "a watch from v5 must not repeat v5"
    );
    assert_invalid(config.watch_from::<i64>("app/b", 0).await, "version");
    let future = config.watch_from::<i64>("app/b", v6 + 1_000_000).await;
    assert!(
        matches!(future, Err(Error::InvalidArgument { .. })),
        "a future version must be refused, got {:?}",
        future.err()
    );
    Ok(())
}

/// A watch from a version the store has compacted away is `Compacted` (the
/// caller must read anew), never a silent gap.
pub async fn config_watch_from_a_compacted_version_is_compacted(ctx: Ctx) -> Result<()> {
    let b = ctx.backend();
    if !b.capabilities().compaction {
        return Ok(());
    }
    let _compaction = ctx.compaction().await;
    let config = ctx.coordinator().config();
    let old = config.set("c/k", &1).await?;
    let now = config.set("c/k", &2).await?;
    b.compact(now).await?;
    let result = config.watch_from::<i64>("c/k", old).await;
    assert!(
        matches!(result, Err(Error::Compacted { .. })),
        "a watch from a compacted version must be Compacted, got {:?}",
        result.err()
    );
    let mut w = config.watch_from::<i64>("c/k", now).await?;
    let v3 = config.set("c/k", &3).await?;
    assert_eq!(
        next(&mut w, "the change after the kept version")
            .await?
            .version,
        v3
    );
    Ok(())
}

/// `delete_if_version` deletes only the version the caller read:
/// `VersionConflict` with the current version after another write, `NotFound`
/// when absent.
pub async fn config_delete_if_version_deletes_only_what_was_read(ctx: Ctx) -> Result<()> {
    let config = ctx.coordinator().config();
    let read = config.set("d/k", &1).await?;
    let newer = config.set("d/k", &2).await?;
    match config.delete_if_version("d/k", read).await {
        Err(Error::VersionConflict { key, current }) => {
            assert_eq!(
                (key.as_str(), current),
                ("d/k", newer),
                "the conflict names the current version"
            )
        }
        other => panic!("deleting a stale version must be VersionConflict, got {other:?}"),
    }
    assert_eq!(
        config.get::<i64>("d/k").await?,
        2,
        "a refused delete deletes nothing"
    );
    config.delete_if_version("d/k", newer).await?;
    assert!(matches!(
        config.get::<i64>("d/k").await,
        Err(Error::NotFound { .. })
    ));
    let gone = config.delete_if_version("d/k", newer).await;
    assert!(matches!(gone, Err(Error::NotFound { .. })), "{gone:?}");
    Ok(())
}

/// `update_many` applies every change in one version or none: a stale expected
/// version fails with `VersionConflict` naming that key and writes nothing;
/// otherwise sets and deletes share one version; bad batches are refused.
pub async fn config_update_many_is_all_or_nothing(ctx: Ctx) -> Result<()> {
    let config = ctx.coordinator().config();
    let a = config.set("m/a", &1).await?;
    let b = config.set("m/b", &1).await?;
    config.set("m/gone", &1).await?;
    config.set("m/b", &2).await?; // b moves on
    let stale = config
        .update_many(vec![
            ConfigChange::set("m/a", &10)?.if_version(a),
            ConfigChange::set("m/b", &10)?.if_version(b),
            ConfigChange::delete("m/gone"),
        ])
        .await;
    match stale {
        Err(Error::VersionConflict { key, .. }) => {
            assert_eq!(key, "m/b", "the conflict names the stale key")
        }
        other => panic!("a stale expected version must be VersionConflict, got {other:?}"),
    }
    assert_eq!(
        config.get::<i64>("m/a").await?,
        1,
        "a failed batch wrote m/a"
    );
    assert_eq!(
        config.get::<i64>("m/gone").await?,
        1,
        "a failed batch deleted m/gone"
    );
    let (_, b_now) = config.get_with_version::<i64>("m/b").await?;
    let version = config
        .update_many(vec![
            ConfigChange::set("m/a", &10)?.if_version(a),
            ConfigChange::set("m/b", &10)?.if_version(b_now),
            ConfigChange::set("m/new", &1)?.if_version(0),
            ConfigChange::delete("m/gone"),
        ])
        .await?;
    for key in ["m/a", "m/b"] {
        let (value, v) = config.get_with_version::<i64>(key).await?;
        assert_eq!(
            (value, v),
            (10, version),
            "{key}: every write of a batch shares its version"
        );
    }
    assert_eq!(config.get_with_version::<i64>("m/new").await?.1, version);
    assert!(matches!(
        config.get::<i64>("m/gone").await,
        Err(Error::NotFound { .. })
    ));
    assert_invalid(config.update_many(vec![]).await, "changes");
    assert_invalid(
        config
            .update_many(vec![
                ConfigChange::delete("m/a"),
                ConfigChange::delete("m/a"),
            ])
            .await,
        "changes",
    );
    Ok(())
}

/// `services()` lists every service name with its instance count, in name order.
pub async fn registry_lists_service_names_with_counts(ctx: Ctx) -> Result<()> {
    let c = ctx.coordinator();
    let registry = c.registry();
    assert!(registry.services().await?.is_empty());
    let ttl = ctx.recipe_ttl();
    let mut held = Vec::new();
    for (name, id) in [("web", "w1"), ("api", "a1"), ("api", "a2")] {
        held.push(
            registry
                .register(ServiceInfo::new(id, name, "10.0.0.1", 80), ttl)
                .await?,
        );
    }
    assert_eq!(
        registry.services().await?,
        [("api".to_string(), 2), ("web".to_string(), 1)]
    );
    for r in held {
        r.deregister().await?;
    }
    assert!(
        registry.services().await?.is_empty(),
        "deregistered services are not listed"
    );
    Ok(())
}
