//! The config center on the in-memory backend: typed values, compare-and-set
//! under contention, a watch, history and rollback, an all-or-nothing batch, a
//! watch resumed from a version, and a compare-and-delete.
//!
//! Runs on etcd when `COORD_ETCD_ENDPOINTS` is set, in memory otherwise.
//! Run with `cargo run --example config`.

use coordkit::Error;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Limits {
    requests_per_second: u32,
    burst: u32,
}

#[tokio::main]
async fn main() -> coordkit::Result<()> {
    let store = coordkit_examples::Store::from_env();
    let coordinator = store.coordinator().await?;
    let config = coordinator.config();

    // Typed values, stored as JSON under coord/config/.
    let v1 = config
        .set(
            "api/limits",
            &Limits {
                requests_per_second: 100,
                burst: 20,
            },
        )
        .await?;
    let (limits, version) = config.get_with_version::<Limits>("api/limits").await?;
    println!("api/limits = {limits:?} (version {version}, written at {v1})");
    config.set("api/banner", "welcome").await?;
    println!("keys under api/: {:?}", config.list("api/").await?);
    match config.get::<Limits>("api/missing").await {
        Err(Error::NotFound { key }) => println!("{key}: not found"),
        other => println!("unexpected: {other:?}"),
    }

    // A watch sees every later change.
    let mut watcher = config.watch_prefix::<serde_json::Value>("api/").await?;

    // Compare-and-set: two writers read the same version; only one wins.
    let stale = version;
    let v2 = config
        .compare_and_set(
            "api/limits",
            &Limits {
                requests_per_second: 200,
                burst: 40,
            },
            stale,
        )
        .await?;
    match config
        .compare_and_set(
            "api/limits",
            &Limits {
                requests_per_second: 50,
                burst: 5,
            },
            stale,
        )
        .await
    {
        Err(Error::VersionConflict { key, current }) => {
            println!("second writer lost the race on {key}: current version is {current} (= {v2})")
        }
        other => println!("unexpected: {other:?}"),
    }
    config.delete("api/banner").await?;
    for _ in 0..2 {
        let event = watcher.next().await.expect("open")?;
        println!(
            "  watch: {:?} {} {:?} @{}",
            event.kind, event.key, event.value, event.version
        );
    }

    // History, newest first, and a rollback to the first version.
    for v in config.history::<Limits>("api/limits", 10).await? {
        println!("  history @{}: {:?}", v.version, v.value);
    }
    let v3 = config.rollback("api/limits", v1).await?;
    println!(
        "rolled back to version {v1}'s value as version {v3}: {:?}",
        config.get::<Limits>("api/limits").await?
    );

    // Several keys at once, all or nothing, each with the version it was read at.
    let (_, seen) = config.get_with_version::<Limits>("api/limits").await?;
    let batch = config
        .update_many(vec![
            coordkit::ConfigChange::set(
                "api/limits",
                &Limits {
                    requests_per_second: 300,
                    burst: 30,
                },
            )?
            .if_version(seen),
            coordkit::ConfigChange::set("api/mode", &"strict")?.if_version(0),
        ])
        .await?;
    println!("api/limits and api/mode written together as version {batch}");
    // A restarted process resumes its watch after the last version it handled.
    let mut resumed = config
        .watch_prefix_from::<serde_json::Value>("api/", v3)
        .await?;
    for _ in 0..2 {
        let e = resumed.next().await.expect("open")?;
        println!("  resumed watch: {} @{}", e.key, e.version);
    }
    // Delete only what was read.
    config.delete_if_version("api/mode", batch).await?;
    println!("api/mode deleted at the version read");
    coordinator.close().await
}
