//! Health seen from outside: a prober checks a tonic server's standard health
//! service and a database's TCP port, and records what it sees beside each
//! instance — every read (caches, pickers, channels) folds it in. The tonic
//! server reports NOT_SERVING, then SERVING again; the database never answers,
//! so once critical for longer than the deadline it is removed.
//!
//! Runs in memory, or on etcd or Postgres (`COORD_ETCD_ENDPOINTS`,
//! `COORD_POSTGRES_URL`). Run with `cargo run --example prober`.

use std::time::Duration;

use coordkit::{Check, InstanceHealth, ProberConfig, ServiceCache, ServiceFilter, ServiceInfo};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic_health::ServingStatus;

fn health(cache: &ServiceCache) -> Option<(InstanceHealth, String)> {
    let i = cache.instances().first().cloned()?;
    Some((i.health, i.probe.map(|p| p.detail).unwrap_or_default()))
}

#[tokio::main]
async fn main() -> coordkit::Result<()> {
    let store = coordkit_examples::Store::from_env();
    let coordinator = store.coordinator().await?;
    let registry = coordinator.registry();

    // A tonic server with the standard health service.
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let port = listener.local_addr().expect("bound").port();
    let (reporter, service) = tonic_health::server::health_reporter();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let _orders = registry
        .register(
            ServiceInfo::new("orders-1", "orders", "127.0.0.1", port),
            Duration::from_secs(10),
        )
        .await?;
    // A database that runs no client, registered without a lease; nothing
    // listens on its port.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a loopback port")
        .port();
    registry
        .register_persistent(ServiceInfo::new("db-1", "db", "127.0.0.1", closed))
        .await?;

    let prober = registry.prober(
        ProberConfig::new("example-prober")
            .service("orders", Check::grpc(""))
            .service("db", Check::Tcp)
            .interval(Duration::from_millis(200))
            .thresholds(2, 2)
            .remove_after(Duration::from_secs(1)),
    )?;
    prober.wait_until_active().await;
    println!("prober active");

    let orders = registry.cache("orders").await?;
    let passing = ServiceFilter::new();
    coordkit_examples::until("orders-1 is probed passing", || {
        health(&orders).is_some_and(|(h, d)| h == InstanceHealth::Passing && !d.is_empty())
    })
    .await;
    println!("orders-1: {:?}", health(&orders).unwrap());

    reporter
        .set_service_status("", ServingStatus::NotServing)
        .await;
    coordkit_examples::until("orders-1 is critical", || {
        health(&orders).is_some_and(|(h, _)| h == InstanceHealth::Critical)
    })
    .await;
    println!(
        "orders-1: {:?}; instances a picker may take: {}",
        health(&orders).unwrap(),
        orders.instances_matching(&passing).len()
    );

    reporter
        .set_service_status("", ServingStatus::Serving)
        .await;
    coordkit_examples::until("orders-1 is passing again", || {
        health(&orders).is_some_and(|(h, _)| h == InstanceHealth::Passing)
    })
    .await;
    println!(
        "orders-1: {:?}; instances a picker may take: {}",
        health(&orders).unwrap(),
        orders.instances_matching(&passing).len()
    );

    // (A cache would go on serving db-1: empty-push protection keeps a
    // service's last instances. A read shows the store.)
    for tries in 0.. {
        if registry.discover("db").await?.is_empty() {
            break;
        }
        assert!(tries < 300, "db-1 was never removed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("db-1: critical for longer than 1s, removed");

    prober.close().await;
    coordinator.close().await
}
