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
