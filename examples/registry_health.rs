//! Registry for production services: health, weights, tags, filters, pickers,
//! and instances shared with Go services through etcd's naming format.
//!
//! Run with `cargo run --example registry_health`, or on etcd with
//! `COORD_ETCD_ENDPOINTS` set.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use coordkit::{BackendExt, InstanceHealth, PickStrategy, ServiceFilter, ServiceInfo};

#[tokio::main]
async fn main() -> coordkit::Result<()> {
    let store = coordkit_examples::Store::from_env();
    let ttl = Duration::from_secs(10);
    let server = store.coordinator().await?;
    let client = store.coordinator().await?;
    let registry = server.registry();

    let heavy = registry
        .register(
            ServiceInfo::new("a", "orders", "10.0.0.1", 7001)
                .with_tag("grpc")
                .with_weight(3),
            ttl,
        )
        .await?;
    let light = registry
        .register(
            ServiceInfo::new("b", "orders", "10.0.0.2", 7001).with_tag("grpc"),
            ttl,
        )
        .await?;
    let _http = registry
        .register(
            ServiceInfo::new("c", "orders", "10.0.0.3", 8080).with_tag("http"),
            ttl,
        )
        .await?;

    let grpc = ServiceFilter::new().tag("grpc");
    let picker = client
        .registry()
        .picker("orders", PickStrategy::Weighted, grpc.clone())
        .await?;
    let picks: Vec<String> = (0..8)
        .filter_map(|_| picker.pick().map(|p| p.id.clone()))
        .collect();
    println!("weighted picks (a weighs 3, b 1; c is not grpc): {picks:?}");

    // b's own checker reports it unhealthy: it leaves the picker's choice.
    let healthy = Arc::new(AtomicBool::new(true));
    let flag = healthy.clone();
    light.check_health(Duration::from_millis(100), move || {
        let ok = flag.load(Ordering::SeqCst);
        async move {
            if ok {
                InstanceHealth::Passing
            } else {
                InstanceHealth::Critical
            }
        }
    })?;
    healthy.store(false, Ordering::SeqCst);
    while picker.candidates().len() != 1 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "b's check fails: candidates {:?}",
        picker
            .candidates()
            .iter()
            .map(|i| (i.id.clone(), i.health))
            .collect::<Vec<_>>()
    );
    let all = client
        .registry()
        .discover_matching("orders", &ServiceFilter::all())
        .await?;
    println!(
        "every instance, any health: {:?}",
        all.iter()
            .map(|i| format!("{} {:?} w{}", i.id, i.health, i.weight))
            .collect::<Vec<_>>()
    );
    heavy.update(|i| i.weight = 0).await?; // drained
    while picker.pick().is_some() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("a drained (weight 0), b critical: no grpc instance to pick");

    // Go services resolving etcd:///orders-go find this one, and this process
    // finds theirs.
    let go = client.registry().etcd_naming("orders-go")?;
    let _visible = go
        .register(ServiceInfo::new("rust-1", "orders", "10.0.0.9", 9000), ttl)
        .await?;
    let raw = client.backend().get("orders-go/rust-1").await?;
    if let Some(kv) = raw {
        println!(
            "stored for grpc-go: {} = {}",
            kv.key_str(),
            String::from_utf8_lossy(&kv.value)
        );
    }
    client
        .backend()
        .put(
            "orders-go/go-1",
            r#"{"Op":0,"Addr":"10.0.1.1:9000","Metadata":null}"#,
        )
        .await?;
    let found: Vec<String> = go
        .discover()
        .await?
        .iter()
        .map(|i| format!("{}@{}", i.id, i.authority()))
        .collect();
    println!("discovered in Go's format: {found:?}");
    server.close().await?;
    client.close().await
}
