//! coordkit's metrics in Prometheus text format over HTTP (feature `metrics`):
//! a lock taken in turn, a registration followed by a cache, a config manager;
//! then `GET /metrics` on the exporter, as Prometheus would scrape it.
//!
//! Runs on etcd when `COORD_ETCD_ENDPOINTS` is set, in memory otherwise.
//! Run with `cargo run --example metrics --features metrics`.

use std::time::Duration;

use coordkit::{ConfigManager, ServiceInfo};
use metrics_exporter_prometheus::PrometheusBuilder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::main]
async fn main() -> coordkit::Result<()> {
    let addr = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        probe.local_addr().expect("its address")
    };
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .expect("the exporter starts");

    let store = coordkit_examples::Store::from_env();
    let (a, b) = (store.coordinator().await?, store.coordinator().await?);
    let ttl = Duration::from_secs(5);
    for _ in 0..3 {
        for c in [&a, &b] {
            let guard = c.lock().acquire("jobs", ttl).await?;
            guard.unlock().await?;
        }
    }
    let _registration = a
        .registry()
        .register(ServiceInfo::new("i-1", "api", "127.0.0.1", 8080), ttl)
        .await?;
    let cache = b.registry().cache("api").await?;
    let manager = ConfigManager::builder(&b.config(), "prod", "api", "limit", 10u32)
        .start()
        .await?;
    a.config().set("prod/api/limit", &20u32).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    println!(
        "cache: {} instance(s); config limit = {}",
        cache.instances().len(),
        manager.current()
    );

    // Scrape the exporter as Prometheus would.
    let mut conn = tokio::net::TcpStream::connect(addr)
        .await
        .expect("the exporter listens");
    conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .expect("request sent");
    let mut body = String::new();
    conn.read_to_string(&mut body).await.expect("response read");
    for line in body
        .lines()
        .filter(|l| l.starts_with("coordkit_") && !l.contains("_bucket"))
    {
        println!("{line}");
    }
    drop(cache);
    a.close().await?;
    b.close().await
}
