//! Gray release: a new value served first to the instances in one zone, then
//! promoted to every instance (or dropped).
//! Run with `cargo run --example config_gray`.

use coordkit::config::Labels;
use coordkit::ConfigManager;

fn zone(name: &str) -> Labels {
    Labels::from([("zone".to_string(), name.to_string())])
}

#[tokio::main]
async fn main() -> coordkit::Result<()> {
    let store = coordkit_examples::Store::from_env();
    let coordinator = store.coordinator().await?;
    let config = coordinator.config();
    let key = "prod/checkout/timeout_ms";
    config.set(key, &800u32).await?;
    let start = |z: &str| {
        ConfigManager::builder(&config, "prod", "checkout", "timeout_ms", 0u32)
            .labels(zone(z))
            .start()
    };
    let (eu, us) = (start("eu-1").await?, start("us-1").await?);
    println!("before: eu {} ms, us {} ms", eu.current(), us.current());

    let release = config.set_gray(key, &500u32, zone("eu-1")).await?;
    coordkit_examples::until("eu serves the gray value", || *eu.current() == 500).await;
    println!(
        "gray release (zone=eu-1) at version {release}: eu {} ms, us {} ms",
        eu.current(),
        us.current()
    );

    let promoted = config.promote_gray(key, release).await?;
    coordkit_examples::until("every zone serves it", || *us.current() == 500).await;
    println!(
        "promoted as version {promoted}: eu {} ms, us {} ms",
        eu.current(),
        us.current()
    );
    let history: Vec<u32> = config
        .history::<u32>(key, 2)
        .await?
        .iter()
        .map(|v| v.value)
        .collect();
    println!("history, newest first: {history:?}");

    drop((eu, us));
    config.delete(key).await?;
    coordinator.close().await?;
    Ok(())
}
