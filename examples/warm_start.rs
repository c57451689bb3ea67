//! Warm start: a service cache keeps what it serves in a file; made again
//! while the store does not answer, it starts from that file instead of
//! failing, and switches to what the store holds once it answers.
//!
//! In memory the caller is cut off from the store (fault injection); on etcd
//! or Postgres (`COORD_ETCD_ENDPOINTS`, `COORD_POSTGRES_URL`) that part is
//! skipped and the snapshot file is shown. Run with
//! `cargo run --example warm_start`.

use std::sync::Arc;
use std::time::Duration;

use coordkit::{CacheOptions, Coordinator, ServiceCache, ServiceInfo};

fn ids(cache: &ServiceCache) -> Vec<String> {
    cache.instances().iter().map(|i| i.id.clone()).collect()
}

#[tokio::main]
async fn main() -> coordkit::Result<()> {
    let store = coordkit_examples::Store::from_env();
    let dir = std::env::temp_dir().join(format!("coordkit-warm-start-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| coordkit::Error::invalid("dir", e.to_string()))?;
    let path = dir.join("search.json");
    let options = || CacheOptions::new().snapshot(&path);

    let registering = store.coordinator().await?;
    let link = store.memory().map(|m| m.client());
    let caller = match &link {
        Some(link) => Coordinator::new(Arc::new(link.clone())),
        None => store.coordinator().await?,
    };
    let ttl = Duration::from_secs(10);
    let s1 = registering
        .registry()
        .register(ServiceInfo::new("s-1", "search", "10.0.0.3", 7000), ttl)
        .await?;
    let _s2 = registering
        .registry()
        .register(ServiceInfo::new("s-2", "search", "10.0.0.4", 7000), ttl)
        .await?;
    let cache = caller.registry().cache_with("search", options()).await?;
    println!("following the store: {:?}", ids(&cache));
    drop(cache);
    println!(
        "the snapshot: {}",
        std::fs::read_to_string(&path).unwrap_or_default()
    );

    if let Some(link) = &link {
        link.partition();
        let warm = caller.registry().cache_with("search", options()).await?;
        let health = warm.health();
        println!(
            "the store does not answer: serving {:?} from a snapshot {:?} old (stale: {})",
            ids(&warm),
            health.snapshot_age.unwrap_or_default(),
            health.stale
        );
        s1.deregister().await?; // the store moves on meanwhile
        link.heal();
        coordkit_examples::until("the cache serves the store's view", || {
            ids(&warm) == ["s-2"]
        })
        .await;
        println!("the store answers: {:?} (snapshot replaced)", ids(&warm));
    } else {
        println!("(the store-down part needs the memory backend's fault injection: skipped)");
        s1.deregister().await?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    registering.close().await?;
    caller.close().await?;
    Ok(())
}
