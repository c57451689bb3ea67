//! The registry's balanced tonic channel against real tonic servers on loopback:
//! three health servers registered under one name share the load; a deregistered
//! one gets no further request; a fourth, registered while the channel is in use,
//! starts receiving.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use coordkit::{Coordinator, ServiceInfo};
use coordkit_memory::MemoryBackend;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

const TTL: Duration = Duration::from_secs(10);

/// A health server on a free loopback port that counts the requests it serves.
struct Backend {
    port: u16,
    served: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

async fn serve() -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let served = Arc::new(AtomicUsize::new(0));
    let (_reporter, health) = tonic_health::server::health_reporter();
    let counter = served.clone();
    let counted = InterceptedService::new(health, move |request| {
        counter.fetch_add(1, Ordering::SeqCst);
        Ok(request)
    });
    let task = tokio::spawn(async move {
        Server::builder()
            .add_service(counted)
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    Backend { port, served, task }
}

fn counts(backends: &[Backend]) -> Vec<usize> {
    backends
        .iter()
        .map(|b| b.served.load(Ordering::SeqCst))
        .collect()
}

async fn send(client: &mut HealthClient<tonic::transport::Channel>, n: usize) {
    for _ in 0..n {
        let request = HealthCheckRequest {
            service: String::new(),
        };
        client.check(request).await.expect("a health check");
    }
}

/// Wait until an independent cache of `health` shows `n` instances: by then the
/// channel's own cache has the same change queued for its balancer.
async fn settle(coordinator: &Coordinator, n: usize) {
    settle_on(coordinator, "health", |all| all.len() == n).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balanced_channel_follows_the_registry() {
    let store = MemoryBackend::new();
    let servers = Coordinator::new(Arc::new(store.client()));
    let client_side = Coordinator::new(Arc::new(store.client()));
    let mut backends = Vec::new();
    let mut registrations = Vec::new();
    for i in 0..3 {
        let backend = serve().await;
        let info = ServiceInfo::new(format!("h{i}"), "health", "127.0.0.1", backend.port);
        registrations.push(servers.registry().register(info, TTL).await.unwrap());
        backends.push(backend);
    }

    let channel = client_side.registry().channel("health").await.unwrap();
    let mut client = HealthClient::new(channel);
    send(&mut client, 300).await;
    let first = counts(&backends);
    assert_eq!(first.iter().sum::<usize>(), 300);
    assert!(
        first.iter().all(|&n| n > 0),
        "every server got some: {first:?}"
    );

    // Deregister h0: no further request reaches it.
    registrations.remove(0).deregister().await.unwrap();
    settle(&client_side, 2).await;
    let before = counts(&backends);
    send(&mut client, 300).await;
    let after = counts(&backends);
    assert_eq!(
        after[0], before[0],
        "a deregistered server got requests: {before:?} -> {after:?}"
    );
    assert_eq!(after[1] + after[2], before[1] + before[2] + 300);

    // Register a fourth while the channel is in use: it starts receiving.
    let fourth = serve().await;
    let info = ServiceInfo::new("h3", "health", "127.0.0.1", fourth.port);
    registrations.push(servers.registry().register(info, TTL).await.unwrap());
    backends.push(fourth);
    settle(&client_side, 3).await;
    send(&mut client, 300).await;
    let last = counts(&backends);
    assert!(last[3] > 0, "the new server got no request: {last:?}");
    assert_eq!(last[0], after[0]);

    for b in &backends {
        b.task.abort();
    }
}

/// The tower discover stream: inserts for the current instances, then a remove.
#[tokio::test]
async fn discover_stream_yields_tower_changes() {
    use futures::StreamExt;
    use tower::discover::Change;
    let store = MemoryBackend::new();
    let coordinator = Coordinator::new(Arc::new(store.client()));
    let a = coordinator
        .registry()
        .register(ServiceInfo::new("a", "svc", "10.0.0.1", 81), TTL)
        .await
        .unwrap();
    let mut changes = coordinator
        .registry()
        .discover_changes("svc")
        .await
        .unwrap();
    match changes.next().await.unwrap().unwrap() {
        Change::Insert(id, info) => assert_eq!((id.as_str(), info.port), ("a", 81)),
        Change::Remove(id) => panic!("unexpected remove of {id}"),
    }
    a.deregister().await.unwrap();
    match changes.next().await.unwrap().unwrap() {
        Change::Remove(id) => assert_eq!(id, "a"),
        Change::Insert(id, _) => panic!("unexpected insert of {id}"),
    }
}

/// Wait until an independent cache shows `check` true of `name`'s instances,
/// then let the channel's feeding task hand the change to the balancer.
async fn settle_on(coordinator: &Coordinator, name: &str, check: impl Fn(&[ServiceInfo]) -> bool) {
    let cache = coordinator.registry().cache(name).await.unwrap();
    for _ in 0..500 {
        if check(&cache.instances()) {
            tokio::time::sleep(Duration::from_millis(500)).await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the registry never showed the expected instances of {name}");
}

/// A channel made with a template and a filter balances over the instances the
/// filter wants only: an untagged one never gets a request, one whose health
/// turns critical stops getting them and gets them again once it passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filtered_channel_skips_unwanted_and_unhealthy_instances() {
    use coordkit::{EndpointTemplate, InstanceHealth, ServiceFilter};
    let store = MemoryBackend::new();
    let servers = Coordinator::new(Arc::new(store.client()));
    let client_side = Coordinator::new(Arc::new(store.client()));
    let mut backends = Vec::new();
    let mut registrations = Vec::new();
    for (i, tag) in ["blue", "blue", "green"].into_iter().enumerate() {
        let backend = serve().await;
        let info =
            ServiceInfo::new(format!("f{i}"), "filtered", "127.0.0.1", backend.port).with_tag(tag);
        registrations.push(servers.registry().register(info, TTL).await.unwrap());
        backends.push(backend);
    }
    let template = EndpointTemplate::http().configure(|e| Ok(e.timeout(Duration::from_secs(5))));
    let https = EndpointTemplate::https()
        .endpoint(&ServiceInfo::new("x", "s", "::1", 443))
        .unwrap();
    assert_eq!(https.uri().to_string(), "https://[::1]:443/");
    let channel = client_side
        .registry()
        .channel_with("filtered", template, ServiceFilter::new().tag("blue"))
        .await
        .unwrap();
    let mut client = HealthClient::new(channel);
    send(&mut client, 200).await;
    let first = counts(&backends);
    assert_eq!(first[2], 0, "an unwanted instance got requests: {first:?}");
    assert!(first[0] > 0 && first[1] > 0, "{first:?}");

    registrations[1]
        .set_health(InstanceHealth::Critical)
        .await
        .unwrap();
    settle_on(&client_side, "filtered", |all| {
        all.iter()
            .any(|i| i.id == "f1" && i.health == InstanceHealth::Critical)
    })
    .await;
    let before = counts(&backends);
    send(&mut client, 200).await;
    let after = counts(&backends);
    assert_eq!(after[1], before[1], "a critical instance got requests");
    assert_eq!(after[0], before[0] + 200);

    registrations[1]
        .set_health(InstanceHealth::Passing)
        .await
        .unwrap();
    settle_on(&client_side, "filtered", |all| {
        all.iter().all(|i| i.health == InstanceHealth::Passing)
    })
    .await;
    send(&mut client, 200).await;
    let last = counts(&backends);
    assert!(
        last[1] > after[1],
        "a passing instance again got nothing: {last:?}"
    );
    assert_eq!(last[2], 0);
    for b in &backends {
        b.task.abort();
    }
}
