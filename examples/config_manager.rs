//! A typed ConfigManager on the in-memory backend: hot reload, a rejected invalid
//! update (the last good value stays), and reads served from memory.
//!
//! Runs on etcd when `COORD_ETCD_ENDPOINTS` is set, in memory otherwise.
//! Run with `cargo run --example config_manager`.

use std::time::Duration;

use coordkit::ConfigManager;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Pool {
    max_connections: u32,
    timeout_ms: u64,
}

#[tokio::main]
async fn main() -> coordkit::Result<()> {
    let store = coordkit_examples::Store::from_env();
    let service = store.coordinator().await?;
    let operator = store.coordinator().await?.config();

    let default = Pool {
        max_connections: 10,
        timeout_ms: 500,
    };
    let manager = ConfigManager::builder(&service.config(), "prod", "checkout", "pool", default)
        .validator(|p: &Pool| {
            if p.max_connections == 0 || p.max_connections > 1000 {
                Err(format!(
                    "max_connections must be 1..=1000, got {}",
                    p.max_connections
                ))
            } else {
                Ok(())
            }
        })
        .updater(|old: &Pool, new: &Pool| println!("  updater: {old:?} -> {new:?}"))
        .start()
        .await?;
    println!("serving the default: {:?}", manager.current());
    let mut updates = manager.subscribe();

    // An operator changes the pool: the service reloads it without a restart.
    operator
        .set(
            "prod/checkout/pool",
            &Pool {
                max_connections: 50,
                timeout_ms: 250,
            },
        )
        .await?;
    updates.changed().await.expect("manager running");
    println!(
        "hot reload: {:?} (version {})",
        manager.current(),
        manager.version()
    );

    // An invalid value is refused: the last good one stays in force.
    operator
        .set(
            "prod/checkout/pool",
            &Pool {
                max_connections: 0,
                timeout_ms: 250,
            },
        )
        .await?;
    while manager.last_error().is_none() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!(
        "rejected: {}",
        manager
            .last_error()
            .map(|e| e.to_string())
            .unwrap_or_default()
    );
    println!("still serving: {:?}", manager.current());

    // Reads come from memory.
    let start = std::time::Instant::now();
    let mut total = 0u64;
    for _ in 0..1_000_000 {
        total += u64::from(manager.current().max_connections);
    }
    println!(
        "1,000,000 current() reads in {:?} (sum {total})",
        start.elapsed()
    );
    manager.stop();
    service.close().await
}
