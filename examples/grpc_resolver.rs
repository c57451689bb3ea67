//! gRPC load balancing through the registry, in one process: three tonic health
//! servers register under one name, a client calls them through
//! `registry().channel(name)`, one server leaves and a new one joins while the
//! channel is in use. Uses tonic-health's pre-generated service (no protoc).
//!
//! Runs on etcd when `COORD_ETCD_ENDPOINTS` is set, in memory otherwise.
//! Run with `cargo run --example grpc_resolver`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use coordkit::ServiceInfo;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// Start a health server on a free port; returns the port and its request count.
async fn start_server() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
    let port = listener.local_addr().expect("bound").port();
    let served = Arc::new(AtomicUsize::new(0));
    let counter = served.clone();
    let (_reporter, health) = tonic_health::server::health_reporter();
    let service = InterceptedService::new(health, move |request| {
        counter.fetch_add(1, Ordering::SeqCst);
        Ok(request)
    });
    tokio::spawn(
        Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    (port, served)
}

async fn call(client: &mut HealthClient<tonic::transport::Channel>, n: usize) {
    for _ in 0..n {
        let request = HealthCheckRequest {
            service: String::new(),
        };
        client.check(request).await.expect("a health check");
    }
}

fn report(counts: &[(String, Arc<AtomicUsize>)]) {
    let line: Vec<String> = counts
        .iter()
        .map(|(id, n)| format!("{id}={}", n.load(Ordering::SeqCst)))
        .collect();
    println!("  requests served: {}", line.join(" "));
}

#[tokio::main]
async fn main() -> coordkit::Result<()> {
    let store = coordkit_examples::Store::from_env();
    let servers = store.coordinator().await?;
    let clients = store.coordinator().await?;
    let ttl = Duration::from_secs(10);

    let mut counts = Vec::new();
    let mut registrations = Vec::new();
    for id in ["s1", "s2", "s3"] {
        let (port, served) = start_server().await;
        registrations.push(
            servers
                .registry()
                .register(ServiceInfo::new(id, "health", "127.0.0.1", port), ttl)
                .await?,
        );
        counts.push((id.to_string(), served));
    }

    let mut client = HealthClient::new(clients.registry().channel("health").await?);
    call(&mut client, 300).await;
    println!("300 calls over three servers:");
    report(&counts);

    registrations.remove(0).deregister().await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    call(&mut client, 300).await;
    println!("s1 deregistered, 300 more calls:");
    report(&counts);

    let (port, served) = start_server().await;
    registrations.push(
        servers
            .registry()
            .register(ServiceInfo::new("s4", "health", "127.0.0.1", port), ttl)
            .await?,
    );
    counts.push(("s4".to_string(), served));
    tokio::time::sleep(Duration::from_millis(300)).await;
    call(&mut client, 300).await;
    println!("s4 registered, 300 more calls:");
    report(&counts);
    servers.close().await?;
    clients.close().await
}
