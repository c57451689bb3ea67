//! The config center under injected faults: a cut watch, a compaction past a
//! disconnected watcher, a partitioned manager.

use coordkit::{BackendExt, ConfigEventKind, ConfigManager, Result, Watcher};
use futures::StreamExt;

use crate::context::{wait_until, PATIENCE};
use crate::Ctx;

async fn next<T: serde::de::DeserializeOwned>(
    w: &mut Watcher<T>,
) -> Result<coordkit::ConfigEvent<T>> {
    tokio::time::timeout(PATIENCE, w.next())
        .await
        .expect("a config event in time")
        .expect("the watch stays open")
}

/// A config watch cut mid-stream resumes with no gap and no duplicate.
pub async fn config_watch_cut_resumes_without_gap_or_duplicate(ctx: Ctx) -> Result<()> {
    let config = ctx.coordinator().config();
    let mut watcher = config.watch::<u32>("n").await?;
    let writer = ctx.other_coordinator().await.config();
    let mut written = Vec::new();
    let mut seen = Vec::new();
    for i in 0..50u32 {
        written.push((writer.set("n", &i).await?, Some(i)));
        if i == 20 {
            while seen.len() < written.len() {
                let e = next(&mut watcher).await?;
                seen.push((e.version, e.value));
            }
            ctx.faults().cut_watches();
        }
    }
    while seen.len() < written.len() {
        let e = next(&mut watcher).await?;
        assert!(!e.resync);
        seen.push((e.version, e.value));
    }
    assert_eq!(seen, written);
    Ok(())
}

/// A watcher disconnected while the store compacts past its position resyncs: it
/// delivers the current state of every changed, new or vanished key, marked as a
/// resync, and then goes on with live changes.
pub async fn config_watch_resyncs_after_compaction(ctx: Ctx) -> Result<()> {
    let config = ctx.coordinator().config();
    let writer = ctx.other_coordinator().await.config();
    writer.set("r/a", &1).await?;
    writer.set("r/c", &1).await?;
    writer.set("r/same", &1).await?;
    let mut watcher = config.watch_prefix::<i32>("r/").await?;
    let first = writer.set("r/a", &2).await?;
    assert_eq!(next(&mut watcher).await?.version, first);

    let _alone = ctx.compaction().await;
    ctx.faults().partition();
    writer.set("r/a", &3).await?;
    writer.set("r/a", &4).await?;
    let b = writer.set("r/b", &1).await?;
    writer.delete("r/c").await?;
    let now = ctx.client().await.backend.current_revision().await?;
    ctx.client().await.backend.compact(now).await?;
    ctx.faults().heal();

    let a = next(&mut watcher).await?;
    assert_eq!(
        (a.kind, a.key.as_str(), a.value, a.resync),
        (ConfigEventKind::Put, "r/a", Some(4), true)
    );
    let e = next(&mut watcher).await?;
    assert_eq!(
        (e.kind, e.key.as_str(), e.value, e.version, e.resync),
        (ConfigEventKind::Put, "r/b", Some(1), b, true)
    );
    let e = next(&mut watcher).await?;
    assert_eq!(
        (e.kind, e.key.as_str(), e.value, e.resync),
        (ConfigEventKind::Delete, "r/c", None, true)
    );
    let live = writer.set("r/a", &5).await?;
    let e = next(&mut watcher).await?;
    assert_eq!(
        (e.key.as_str(), e.value, e.version, e.resync),
        ("r/a", Some(5), live, false)
    );
    Ok(())
}

/// A manager started while its store is unreachable serves the default, reports
/// the failure, and converges once the store is back; a later outage keeps the
/// last good value, and it catches up after.
pub async fn config_manager_rides_out_partitions(ctx: Ctx) -> Result<()> {
    let writer = ctx.other_coordinator().await.config();
    let v1 = writer.set("prod/shop/limit", &10u32).await?;
    ctx.faults().partition();
    let config = ctx.coordinator().config();
    let manager = ConfigManager::builder(&config, "prod", "shop", "limit", 1u32)
        .start()
        .await?;
    assert_eq!((*manager.current(), manager.version()), (1, 0));
    assert!(
        manager.last_error().is_some(),
        "the failed start is visible"
    );
    ctx.faults().heal();
    wait_until("the manager converges", || async {
        Ok(manager.version() == v1)
    })
    .await?;
    assert_eq!(*manager.current(), 10);

    ctx.faults().partition();
    let v2 = writer.set("prod/shop/limit", &20u32).await?;
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert_eq!(
        *manager.current(),
        10,
        "the last good value stays during an outage"
    );
    ctx.faults().heal();
    wait_until("the manager catches up", || async {
        Ok(manager.version() == v2)
    })
    .await?;
    assert_eq!(*manager.current(), 20);
    Ok(())
}

/// A ConfigManager with a snapshot file starts with the store unreachable
/// (partitioned) and serves the snapshot — not the default — then catches up
/// with the store's newer value when it heals, and rewrites the snapshot; a
/// snapshot of another key is ignored; a key found deleted reverts to the
/// default and removes the file.
pub async fn config_manager_starts_from_its_snapshot_with_the_store_down(ctx: Ctx) -> Result<()> {
    let dir = std::env::temp_dir().join(format!(
        "coordkit-snapshot-{}-{}",
        std::process::id(),
        crate::context::text(ctx.namespace())
            .trim_end_matches('/')
            .replace('/', "-")
    ));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let path = dir.join("limit.json");
    let _ = std::fs::remove_file(&path);
    let config = ctx.coordinator().config();
    config.set("prod/shop/limit", &5u32).await?;
    {
        let first = ConfigManager::builder(&config, "prod", "shop", "limit", 1u32)
            .snapshot(&path)
            .start()
            .await?;
        assert_eq!(*first.current(), 5);
        first.stop();
    }
    assert!(path.exists(), "an applied value is written to the snapshot");
    let newer = config.set("prod/shop/limit", &7u32).await?;
    // A new process whose store is unreachable at start.
    let cut = ctx.client().await;
    let faults = cut.faults.clone().expect("this case injects faults");
    faults.partition();
    let restarted = coordkit::Coordinator::new(cut.backend.clone());
    let manager = ConfigManager::builder(&restarted.config(), "prod", "shop", "limit", 1u32)
        .snapshot(&path)
        .start()
        .await?;
    assert_eq!(
        *manager.current(),
        5,
        "with the store down the snapshot is served, not the default"
    );
    assert!(
        matches!(
            manager.last_error(),
            Some(coordkit::ConfigManagerError::Store(_))
        ),
        "the store error is reported: {:?}",
        manager.last_error()
    );
    // Another key's manager ignores this snapshot.
    let other = ConfigManager::builder(&restarted.config(), "prod", "shop", "other", 1u32)
        .snapshot(&path)
        .start()
        .await?;
    assert_eq!(
        *other.current(),
        1,
        "a snapshot of another key must be ignored"
    );
    other.stop();
    faults.heal();
    wait_until("the manager catches up with the store", || async {
        Ok(*manager.current() == 7)
    })
    .await?;
    assert_eq!(manager.version(), newer);
    let file = std::fs::read_to_string(&path).expect("the snapshot");
    assert!(
        file.contains("7") && file.contains(&newer.to_string()),
        "the snapshot follows: {file}"
    );
    config.delete("prod/shop/limit").await?;
    wait_until("the deleted key reverts to the default", || async {
        Ok(*manager.current() == 1)
    })
    .await?;
    wait_until("the snapshot is removed", || async { Ok(!path.exists()) }).await?;
    manager.stop();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
