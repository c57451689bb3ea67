//! Config values in TOML, YAML and plain text, chosen per key prefix, and a
//! ConfigManager that composes one struct from several keys.
//!
//! Run with `cargo run --example config_formats --features toml,yaml`, or on
//! etcd with `COORD_ETCD_ENDPOINTS` set.

use std::time::Duration;

use coordkit::{Codec, ConfigManager};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Db {
    url: String,
    pool: u32,
}

#[derive(Clone, Debug, Default, Deserialize)]
struct Api {
    db: Db,
    banner: String,
    verbose: bool,
}

#[tokio::main]
async fn main() -> coordkit::Result<()> {
    let store = coordkit_examples::Store::from_env();
    let coordinator = store.coordinator().await?;
    let config = coordinator
        .config()
        .with_codec_for("files/", Codec::Toml)?
        .with_codec_for("ops/", Codec::Yaml)?
        .with_codec_for("prod/api/banner", Codec::Text)?;

    let db = Db {
        url: "postgres://db".into(),
        pool: 8,
    };
    config.set("files/db", &db).await?;
    config.set("ops/db", &db).await?;
    for key in ["files/db", "ops/db"] {
        let stored = config.get_bytes(key).await?;
        println!(
            "{key} ({}):\n{}",
            config.codec_of(key).name(),
            String::from_utf8_lossy(&stored)
        );
    }
    assert_eq!(config.get::<Db>("files/db").await?, db);

    // One struct from several keys, each changed on its own.
    config.set("prod/api/db/url", "postgres://primary").await?;
    config.set("prod/api/db/pool", &16).await?;
    config.set("prod/api/banner", "hello").await?;
    config.set("prod/api/verbose", &false).await?;
    let api = ConfigManager::builder_prefix(&config, "prod/api/", Api::default())
        .updater(|old: &Api, new: &Api| {
            println!("updated: pool {} -> {}", old.db.pool, new.db.pool)
        })
        .start()
        .await?;
    let now = api.current();
    println!(
        "composed: db {:?}, banner {:?}, verbose {}",
        now.db, now.banner, now.verbose
    );
    config.set("prod/api/db/pool", &32).await?;
    while api.current().db.pool != 32 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("after one key changed: {:?}", api.current());
    coordinator.close().await
}
