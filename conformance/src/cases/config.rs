//! The config center and ConfigManager.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use coordkit::{BackendExt, ConfigEvent, ConfigEventKind, ConfigManager, Error, Result, Watcher};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::context::text;
use crate::context::{assert_invalid, wait_until, PATIENCE};
use crate::Ctx;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Db {
    pub(super) url: String,
    pub(super) pool: u32,
}

pub(super) fn db(pool: u32) -> Db {
    Db {
        url: "postgres://db".into(),
        pool,
    }
}

pub(super) async fn next_event<T: serde::de::DeserializeOwned>(
    w: &mut Watcher<T>,
    what: &str,
) -> Result<ConfigEvent<T>> {
    match tokio::time::timeout(PATIENCE, w.next()).await {
        Ok(Some(item)) => item,
        Ok(None) => panic!("config watch ended while waiting for {what}"),
        Err(_) => panic!("no config event within {PATIENCE:?} while waiting for {what}"),
    }
}

/// Typed values round-trip through JSON, raw bytes as they are; list, delete and
/// `NotFound` behave.
pub async fn config_values_round_trip(ctx: Ctx) -> Result<()> {
    let config = ctx.coordinator().config();
    let v1 = config.set("app/db", &db(5)).await?;
    assert_eq!(config.get::<Db>("app/db").await?, db(5));
    assert_eq!(config.get_with_version::<Db>("app/db").await?, (db(5), v1));
    config.set("app/name", "checkout").await?;
    config.set("app/ports", &vec![80u16, 443]).await?;
    config.set("other/flag", &true).await?;
    assert_eq!(config.get::<String>("app/name").await?, "checkout");
    assert_eq!(config.get::<Vec<u16>>("app/ports").await?, [80, 443]);
    config
        .set_bytes("app/raw", b"\x00not json".to_vec())
        .await?;
    assert_eq!(text(&config.get_bytes("app/raw").await?), "\x00not json");
    assert_eq!(text(&config.get_bytes("app/name").await?), "\"checkout\"");
    let err = config.get::<Db>("app/raw").await.unwrap_err();
    assert!(
        matches!(&err, Error::Codec { key, .. } if key == "app/raw"),
        "{err:?}"
    );
    let err = config.get::<Db>("app/name").await.unwrap_err();
    assert!(matches!(err, Error::Codec { .. }), "{err:?}");
    assert_eq!(
        config.list("app/").await?,
        ["app/db", "app/name", "app/ports", "app/raw"]
    );
    assert_eq!(config.list("").await?.len(), 5);
    assert!(config.list("nothing/").await?.is_empty());
    assert!(config.delete("app/db").await?);
    assert!(!config.delete("app/db").await?);
    let err = config.get::<Db>("app/db").await.unwrap_err();
    assert!(
        matches!(&err, Error::NotFound { key } if key == "app/db"),
        "{err:?}"
    );
    assert!(ctx.backend().get("coord/config/app/name").await?.is_some());
    Ok(())
}

/// Compare-and-set: 0 creates only if absent; a stale version is
/// `VersionConflict` carrying the current one (0 when absent).
pub async fn config_cas_conflict_carries_current_version(ctx: Ctx) -> Result<()> {
    let config = ctx.coordinator().config();
    let v1 = config.compare_and_set("k", &1, 0).await?;
    match config.compare_and_set("k", &2, 0).await {
        Err(Error::VersionConflict { key, current }) => {
            assert_eq!((key.as_str(), current), ("k", v1))
        }
        other => panic!("expected VersionConflict, got {other:?}"),
    }
    let v2 = config.compare_and_set("k", &2, v1).await?;
    assert!(v2 > v1);
    match config.compare_and_set("k", &3, v1).await {
        Err(Error::VersionConflict { current, .. }) => assert_eq!(current, v2),
        other => panic!("expected VersionConflict, got {other:?}"),
    }
    assert_eq!(config.get::<i32>("k").await?, 2);
    match config.compare_and_set("absent", &1, v2).await {
        Err(Error::VersionConflict { current, .. }) => assert_eq!(current, 0),
        other => panic!("expected VersionConflict, got {other:?}"),
    }
    Ok(())
}

/// 8 tasks × 50 read-CAS-retry increments of one counter end at exactly 400.
pub async fn config_concurrent_cas_increments_reach_exactly_400(ctx: Ctx) -> Result<()> {
    ctx.coordinator().config().set("counter", &0u64).await?;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let config = ctx.other_coordinator().await.config();
        tasks.push(tokio::spawn(async move {
            for _ in 0..50 {
                loop {
                    let (n, version) = config.get_with_version::<u64>("counter").await?;
                    match config.compare_and_set("counter", &(n + 1), version).await {
                        Ok(_) => break,
                        Err(Error::VersionConflict { .. }) => continue,
                        Err(e) => return Err(e),
                    }
                }
            }
            Ok::<_, Error>(())
        }));
    }
    for t in tasks {
        t.await.expect("task")?;
    }
    assert_eq!(ctx.coordinator().config().get::<u64>("counter").await?, 400);
    Ok(())
}

/// 500 rapid updates arrive at a watcher in order, with no gap.
pub async fn config_watch_delivers_rapid_updates_in_order(ctx: Ctx) -> Result<()> {
    let config = ctx.coordinator().config();
    let mut watcher = config.watch::<u32>("n").await?;
    let writer = ctx.other_coordinator().await.config();
    let mut versions = Vec::new();
    for i in 0..500u32 {
        versions.push(writer.set("n", &i).await?);
    }
    for (i, version) in versions.iter().enumerate() {
        let e = next_event(&mut watcher, "the next update").await?;
        assert_eq!(
            (e.kind, e.key.as_str(), e.value, e.version, e.resync),
            (ConfigEventKind::Put, "n", Some(i as u32), *version, false)
        );
    }
    watcher.close();
    assert!(watcher.next().await.is_none(), "a closed watcher ends");
    Ok(())
}

/// A prefix watch sees puts and deletes under the prefix only, with relative keys.
pub async fn config_watch_prefix_sees_puts_and_deletes(ctx: Ctx) -> Result<()> {
    let config = ctx.coordinator().config();
    let mut watcher = config.watch_prefix::<String>("app/").await?;
    let put = config.set("app/a", "1").await?;
    config.set("other/a", "x").await?;
    config.set("application", "y").await?;
    config.delete("app/a").await?;
    let e = next_event(&mut watcher, "the put").await?;
    assert_eq!(
        (e.kind, e.key.as_str(), e.value.as_deref(), e.version),
        (ConfigEventKind::Put, "app/a", Some("1"), put)
    );
    let e = next_event(&mut watcher, "the delete").await?;
    assert_eq!(
        (e.kind, e.key.as_str(), e.value),
        (ConfigEventKind::Delete, "app/a", None)
    );
    assert!(e.version > put);
    Ok(())
}

/// A value that does not decode arrives as a `Codec` error naming the key, and the
/// watch goes on.
pub async fn config_undecodable_values_are_error_items(ctx: Ctx) -> Result<()> {
    let config = ctx.coordinator().config();
    let mut watcher = config.watch::<u32>("n").await?;
    config.set_bytes("n", b"not json".to_vec()).await?;
    config.set("n", "a string").await?;
    config.set("n", &7u32).await?;
    for what in ["raw bytes", "a string"] {
        match tokio::time::timeout(PATIENCE, watcher.next())
            .await
            .expect("an item")
        {
            Some(Err(Error::Codec { key, .. })) => assert_eq!(key, "n"),
            other => panic!("expected a Codec item for {what}, got {other:?}"),
        }
    }
    assert_eq!(
        next_event(&mut watcher, "the good value").await?.value,
        Some(7)
    );
    Ok(())
}

/// History lists the versions newest first; rollback writes an old value again as
/// a new version; history stops at the key's latest creation.
pub async fn config_history_and_rollback(ctx: Ctx) -> Result<()> {
    let config = ctx.coordinator().config();
    let v1 = config.set("h", "a").await?;
    let v2 = config.set("h", "b").await?;
    let elsewhere = config.set("elsewhere", "x").await?;
    let v3 = config.set("h", "c").await?;
    let history = config.history::<String>("h", 10).await?;
    let seen: Vec<_> = history
        .iter()
        .map(|v| (v.version, v.value.as_str()))
        .collect();
    assert_eq!(seen, [(v3, "c"), (v2, "b"), (v1, "a")]);
    assert_eq!(config.history::<String>("h", 2).await?.len(), 2);
    let v4 = config.rollback("h", v1).await?;
    assert!(v4 > v3);
    assert_eq!(
        config.get_with_version::<String>("h").await?,
        ("a".to_string(), v4)
    );
    assert_eq!(config.history::<String>("h", 1).await?[0].version, v4);
    assert_invalid(config.rollback("h", elsewhere).await, "version");
    assert_invalid(config.rollback("h", 0).await, "version");
    config.delete("h").await?;
    assert!(matches!(
        config.history::<String>("h", 5).await,
        Err(Error::NotFound { .. })
    ));
    let v5 = config.set("h", "new life").await?;
    let history = config.history::<String>("h", 10).await?;
    assert_eq!(history.len(), 1, "history stops at the latest creation");
    assert_eq!(history[0].version, v5);
    Ok(())
}

/// A rollback on the version the caller saw writes the old value only over that
/// version: behind a newer write it is `VersionConflict` with the current
/// version, and nothing changes; on an absent key, `current` is 0.
pub async fn config_rollback_if_version_compares_on_the_version_seen(ctx: Ctx) -> Result<()> {
    let config = ctx.coordinator().config();
    let v1 = config.set("r", "a").await?;
    let v2 = config.set("r", "b").await?;
    let v3 = config.set("r", "theirs").await?;
    match config.rollback_if_version("r", v1, v2).await {
        Err(Error::VersionConflict { key, current }) => {
            assert_eq!((key.as_str(), current), ("r", v3))
        }
        other => panic!("a rollback over a version not shown: {other:?}"),
    }
    assert_eq!(
        config.get_with_version::<String>("r").await?,
        ("theirs".to_string(), v3),
        "a refused rollback writes nothing"
    );
    let v4 = config.rollback_if_version("r", v1, v3).await?;
    assert!(v4 > v3);
    assert_eq!(
        config.get_with_version::<String>("r").await?,
        ("a".to_string(), v4)
    );
    assert_invalid(config.rollback_if_version("r", v1, 0).await, "expected");
    assert_invalid(config.rollback_if_version("r", 0, v4).await, "version");
    let elsewhere = config.set("elsewhere", "x").await?;
    assert_invalid(
        config.rollback_if_version("r", elsewhere, v4).await,
        "version",
    );
    config.delete("r").await?;
    match config.rollback_if_version("r", v1, v4).await {
        Err(Error::VersionConflict { current: 0, .. }) => {}
        other => panic!("a rollback of a deleted key: {other:?}"),
    }
    assert_invalid(config.rollback_if_version("../r", v1, v4).await, "key");
    Ok(())
}

/// After a compaction, history is shorter — never wrong.
pub async fn config_history_after_compaction_is_shorter(ctx: Ctx) -> Result<()> {
    let config = ctx.coordinator().config();
    config.set("h", "a").await?;
    config.set("h", "b").await?;
    let v3 = config.set("h", "c").await?;
    let v4 = config.set("h", "d").await?;
    let _alone = ctx.compaction().await;
    ctx.backend().compact(v3).await?;
    let history = config.history::<String>("h", 10).await?;
    let seen: Vec<_> = history
        .iter()
        .map(|v| (v.version, v.value.as_str()))
        .collect();
    assert_eq!(seen, [(v4, "d"), (v3, "c")]);
    assert!(matches!(
        config.rollback("h", v3 - 1).await,
        Err(Error::Compacted { .. })
    ));
    Ok(())
}

/// Bad keys and prefixes are `InvalidArgument`, unserializable values `Codec`.
pub async fn config_input_is_validated(ctx: Ctx) -> Result<()> {
    let config = ctx.coordinator().config();
    for key in ["", "/a", "a//b", "a/../b", "a/", "a\u{7}b"] {
        assert_invalid(config.get::<u32>(key).await, "key");
        assert_invalid(config.set(key, &1).await, "key");
        assert_invalid(config.set_bytes(key, b"1".to_vec()).await, "key");
        assert_invalid(config.delete(key).await, "key");
        assert_invalid(config.compare_and_set(key, &1, 0).await, "key");
        assert_invalid(config.history::<u32>(key, 3).await, "key");
        assert_invalid(config.rollback(key, 1).await, "key");
        assert_invalid(config.watch::<u32>(key).await, "key");
    }
    for prefix in ["/", "a//", "../"] {
        assert_invalid(config.list(prefix).await, "prefix");
        assert_invalid(config.watch_prefix::<u32>(prefix).await, "prefix");
    }
    let mut unserializable = HashMap::new();
    unserializable.insert((1u8, 2u8), 3u8);
    let err = config.set("k", &unserializable).await.unwrap_err();
    assert!(
        matches!(&err, Error::Codec { key, .. } if key == "k"),
        "{err:?}"
    );
    let big = "x".repeat(ctx.backend().limits().max_value_bytes + 1);
    assert_invalid(config.set("k", &big).await, "value");
    assert!(config.list("").await?.is_empty(), "nothing was written");
    Ok(())
}

/// A validator or updater that panics does not stop the manager: the value is
/// not applied, `last_error` is `Panicked` naming the hook, the updater ran
/// before publication (a panicking updater leaves `current()` unchanged), and
/// the next good value is applied.
pub async fn config_manager_survives_panicking_hooks(ctx: Ctx) -> Result<()> {
    let config = ctx.coordinator().config();
    let applied: Arc<Mutex<Vec<(u32, u32)>>> = Arc::default();
    let manager = {
        let applied = applied.clone();
        ConfigManager::builder(&config, "prod", "shop", "n", 1u32)
            .validator(|n| {
                assert!(*n != 13, "validator cannot stand 13");
                Ok(())
            })
            .updater(move |old, new| {
                assert!(*new != 7, "updater cannot stand 7");
                applied.lock().unwrap().push((*old, *new));
            })
            .start()
            .await?
    };
    let writer = ctx.other_coordinator().await.config();
    for (value, hook) in [(13u32, "validator"), (7, "updater")] {
        let v = writer.set("prod/shop/n", &value).await?;
        wait_until(&format!("the {hook}'s panic is reported"), || async {
            Ok(matches!(
                manager.last_error(),
                Some(coordkit::ConfigManagerError::Panicked { version, hook: h, .. })
                    if version == v && h == hook
            ))
        })
        .await?;
        assert_eq!(
            *manager.current(),
            1,
            "a value whose {hook} panicked was applied"
        );
        assert_eq!(manager.version(), 0);
    }
    let good = writer.set("prod/shop/n", &42u32).await?;
    wait_until("the manager still applies good values", || async {
        Ok(manager.version() == good)
    })
    .await?;
    assert_eq!(*manager.current(), 42);
    assert!(manager.last_error().is_none());
    assert_eq!(*applied.lock().unwrap(), [(1, 42)]);
    Ok(())
}

/// The manager applies valid values (the updater once each, with old and new),
/// keeps the last good value when an update is invalid or does not decode (the
/// updater not called, `last_error` set), and reverts to the default on delete.
pub async fn config_manager_applies_only_valid_values(ctx: Ctx) -> Result<()> {
    let coordinator = ctx.coordinator();
    let config = coordinator.config();
    let calls = Arc::new(Mutex::new(Vec::new()));
    let manager = {
        let calls = calls.clone();
        ConfigManager::builder(&config, "prod", "shop", "db", db(1))
            .validator(|d: &Db| {
                if d.pool == 0 {
                    Err("pool must be positive".into())
                } else {
                    Ok(())
                }
            })
            .updater(move |old: &Db, new: &Db| calls.lock().unwrap().push((old.pool, new.pool)))
            .start()
            .await?
    };
    assert_eq!(manager.key(), "prod/shop/db");
    assert_eq!(*manager.current(), db(1));
    assert_eq!(manager.version(), 0);
    let mut updates = manager.subscribe();

    let writer = ctx.other_coordinator().await.config();
    let v = writer.set("prod/shop/db", &db(8)).await?;
    wait_until("the manager applies pool 8", || async {
        Ok(manager.version() == v)
    })
    .await?;
    assert_eq!(*manager.current(), db(8));
    assert_eq!(*updates.borrow_and_update().clone(), db(8));
    assert!(manager.last_error().is_none());

    writer.set("prod/shop/db", &db(0)).await?;
    wait_until("the manager reports the rejection", || async {
        Ok(manager.last_error().is_some())
    })
    .await?;
    assert!(manager
        .last_error()
        .unwrap()
        .to_string()
        .contains("pool must be positive"));
    assert_eq!(*manager.current(), db(8));
    assert_eq!(manager.version(), v);

    writer
        .set_bytes("prod/shop/db", b"{broken".to_vec())
        .await?;
    let v2 = writer.set("prod/shop/db", &db(9)).await?;
    wait_until("the manager applies pool 9", || async {
        Ok(manager.version() == v2)
    })
    .await?;
    assert_eq!(*manager.current(), db(9));

    writer.delete("prod/shop/db").await?;
    wait_until("the manager reverts to the default", || async {
        Ok(manager.version() > v2)
    })
    .await?;
    assert_eq!(*manager.current(), db(1));
    assert_eq!(
        *calls.lock().unwrap(),
        [(1, 8), (8, 9), (9, 1)],
        "updater calls"
    );
    manager.stop();
    writer.set("prod/shop/db", &db(5)).await?;
    assert_eq!(
        *manager.current(),
        db(1),
        "a stopped manager keeps its value"
    );
    let bad = ConfigManager::builder(&config, "prod", "", "db", db(1))
        .start()
        .await;
    assert_invalid(bad.map(|_| ()), "app");
    Ok(())
}

/// A manager started on a value already in the store serves it at once.
pub async fn config_manager_starts_with_the_stored_value(ctx: Ctx) -> Result<()> {
    let config = ctx.coordinator().config();
    let v = config.set("dev/shop/db", &db(3)).await?;
    let manager = ConfigManager::builder(&config, "dev", "shop", "db", db(1))
        .start()
        .await?;
    assert_eq!(
        ((*manager.current()).clone(), manager.version()),
        (db(3), v)
    );
    let counted = Arc::new(AtomicUsize::new(0));
    let invalid_at_start = {
        let counted = counted.clone();
        config.set("dev/shop/cache", &db(0)).await?;
        ConfigManager::builder(&config, "dev", "shop", "cache", db(2))
            .validator(|d: &Db| {
                if d.pool == 0 {
                    Err("zero".into())
                } else {
                    Ok(())
                }
            })
            .updater(move |_: &Db, _: &Db| {
                counted.fetch_add(1, Ordering::SeqCst);
            })
            .start()
            .await?
    };
    assert_eq!(
        *invalid_at_start.current(),
        db(2),
        "an invalid stored value is not applied"
    );
    assert!(invalid_at_start.last_error().is_some());
    assert_eq!(counted.load(Ordering::SeqCst), 0);
    Ok(())
}
