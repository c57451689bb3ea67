//! Empty-push protection: every instance of a service leaves the store at
//! once, and a cache keeps serving the ones it last saw until one is back —
//! beside a cache with the protection off, which empties.
//!
//! In memory the registering process is cut off until its leases end (the
//! fault the protection is for); on etcd or Postgres (`COORD_ETCD_ENDPOINTS`,
//! `COORD_POSTGRES_URL`) its instances are deregistered instead.
//! Run with `cargo run --example empty_push`.

use std::sync::Arc;
use std::time::Duration;

use coordkit::{CacheOptions, Coordinator, EmptyPushProtection, ServiceCache, ServiceInfo};

fn ids(cache: &ServiceCache) -> Vec<String> {
    cache.instances().iter().map(|i| i.id.clone()).collect()
}

#[tokio::main]
async fn main() -> coordkit::Result<()> {
    let store = coordkit_examples::Store::from_env();
    let link = store.memory().map(|m| m.client());
    let registering = match &link {
        Some(link) => Coordinator::new(Arc::new(link.clone())),
        None => store.coordinator().await?,
    };
    let caller = store.coordinator().await?;
    let registry = caller.registry();
    let protected = registry.cache("payments").await?;
    let unprotected = registry
        .cache_with(
            "payments",
            CacheOptions::new().protection(EmptyPushProtection::Off),
        )
        .await?;

    let ttl = Duration::from_secs(2);
    let mut registrations = Vec::new();
    for (id, port) in [("p-1", 9001), ("p-2", 9002), ("p-3", 9003)] {
        let info = ServiceInfo::new(id, "payments", "10.0.0.9", port);
        registrations.push(registering.registry().register(info, ttl).await?);
    }
    coordkit_examples::until("both caches see three", || {
        protected.instances().len() == 3 && unprotected.instances().len() == 3
    })
    .await;
    println!(
        "registered: protected {:?}, unprotected {:?}",
        ids(&protected),
        ids(&unprotected)
    );

    match &link {
        Some(link) => {
            println!("the registering process is cut off; its leases end within {ttl:?}");
            link.partition();
        }
        None => {
            for r in registrations.drain(..) {
                r.deregister().await?;
            }
        }
    }
    coordkit_examples::until(
        "the unprotected cache empties and the protected one holds",
        || unprotected.instances().is_empty() && protected.health().protected.is_some(),
    )
    .await;
    let held = protected.health().protected.expect("holding");
    println!(
        "the store has {} instances: protected serves {:?} ({} held, {} live), unprotected {:?}",
        registry.discover("payments").await?.len(),
        ids(&protected),
        held.serving,
        held.live,
        ids(&unprotected)
    );

    match &link {
        Some(link) => link.heal(), // the registrations write themselves again
        None => {
            let info = ServiceInfo::new("p-4", "payments", "10.0.0.9", 9004);
            registrations.push(registering.registry().register(info, ttl).await?);
        }
    }
    coordkit_examples::until("the protected cache follows the store again", || {
        protected.health().protected.is_none()
    })
    .await;
    if link.is_some() {
        coordkit_examples::until("all three are back", || protected.instances().len() == 3).await;
    }
    println!(
        "back: protected {:?}, unprotected {:?}",
        ids(&protected),
        ids(&unprotected)
    );
    drop(registrations);
    registering.close().await?;
    caller.close().await?;
    Ok(())
}
