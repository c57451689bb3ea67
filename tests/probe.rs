//! The prober against real servers on loopback (an HTTP server, a tonic health
//! server, a bare TCP listener) that are stopped and started again: verdicts go
//! passing → critical → passing, reads fold them in, the registration is never
//! disturbed, one prober of a group is active and another takes over when it
//! goes, and a persistent instance critical past the deadline is removed.

use std::sync::Arc;
use std::time::Duration;

use coordkit::{
    Check, Coordinator, InstanceHealth, ProberConfig, ProberEvent, RegistrationState, ServiceInfo,
};
use coordkit_memory::MemoryBackend;
use http_body_util::Empty;
use hyper::body::Bytes;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Server;
use tonic_health::ServingStatus;

const TTL: Duration = Duration::from_secs(10);
const PATIENCE: Duration = Duration::from_secs(30);

/// Poll `check` until it holds (failing the test after [`PATIENCE`]).
async fn until<F, Fut>(what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    tokio::time::timeout(PATIENCE, async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting until {what}"));
}

/// A server task on a loopback port, aborted (closing its listener) on stop.
struct Running(tokio::task::JoinHandle<()>);

impl Running {
    async fn stop(self) {
        self.0.abort();
        let _ = self.0.await;
    }
}

async fn bind(port: u16) -> TcpListener {
    TcpListener::bind(("127.0.0.1", port)).await.unwrap()
}

/// An HTTP/1.1 server answering `status` to every request.
async fn http_server(port: u16, status: u16) -> Running {
    let listener = bind(port).await;
    Running(tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            connections.spawn(async move {
                let service = hyper::service::service_fn(move |_req| async move {
                    hyper::Response::builder()
                        .status(status)
                        .body(Empty::<Bytes>::new())
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    }))
}

/// A tonic server with the standard health service, its reporter set to `status`.
async fn grpc_server(port: u16, status: ServingStatus) -> Running {
    let listener = bind(port).await;
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_service_status("", status).await;
    Running(tokio::spawn(async move {
        let _keep = reporter;
        let _ = Server::builder()
            .add_service(health)
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await;
    }))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn quick(name: &str) -> ProberConfig {
    ProberConfig::new(name)
        .interval(Duration::from_millis(50))
        .timeout(Duration::from_secs(2))
        .thresholds(2, 2)
        .session_ttl(Duration::from_secs(2))
}

/// The health `service`/`id` is read with, and whether a verdict was folded in.
async fn read(c: &Coordinator, service: &str, id: &str) -> Option<(InstanceHealth, bool)> {
    let all = c.registry().discover(service).await.ok()?;
    let i = all.into_iter().find(|i| i.id == id)?;
    Some((i.health, i.probe.is_some()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_instance_stopped_and_started_goes_critical_then_passing() {
    let c = Coordinator::new(Arc::new(MemoryBackend::new()));
    let port = free_port();
    let server = http_server(port, 200).await;
    let registration = c
        .registry()
        .register(ServiceInfo::new("web-1", "web", "127.0.0.1", port), TTL)
        .await
        .unwrap();
    let cache = c.registry().cache("web").await.unwrap();
    let prober = c
        .registry()
        .prober(quick("p1").service("web", Check::http("/healthz")))
        .unwrap();
    let passing = Some((InstanceHealth::Passing, true));
    let critical = Some((InstanceHealth::Critical, true));
    until("a passing verdict", || async {
        read(&c, "web", "web-1").await == passing
    })
    .await;
    assert!(prober.is_active());
    server.stop().await;
    until("critical once the server is gone", || async {
        read(&c, "web", "web-1").await == critical
    })
    .await;
    until("the cache reads it critical", || async {
        cache.instances()[0].health == InstanceHealth::Critical
    })
    .await;
    let verdict = c.registry().discover("web").await.unwrap()[0]
        .probe
        .clone()
        .unwrap();
    assert_eq!(verdict.prober, "p1");
    assert!(!verdict.detail.is_empty());
    // The registration is undisturbed: still registered, its own value as it
    // wrote it, and its updates go through (the verdict stays: same registration).
    assert_eq!(registration.state(), RegistrationState::Registered);
    assert_eq!(registration.info().health, InstanceHealth::Passing);
    registration.update(|i| i.weight = 5).await.unwrap();
    assert_eq!(read(&c, "web", "web-1").await, critical);
    // A server answering 503 is up but failing: still critical.
    let failing = http_server(port, 503).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(read(&c, "web", "web-1").await, critical);
    failing.stop().await;
    let _server = http_server(port, 204).await;
    until("passing again", || async {
        read(&c, "web", "web-1").await == passing
    })
    .await;
    assert_eq!(registration.state(), RegistrationState::Registered);
    // Deregistering removes the verdict with the instance.
    let verdict_key = c.keys().probe_verdict("web", "web-1");
    registration.deregister().await.unwrap();
    let left = coordkit::BackendExt::get(c.backend().as_ref(), verdict_key).await;
    assert!(left.unwrap().is_none(), "the verdict outlived its instance");
    prober.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_instance_follows_its_health_service() {
    let c = Coordinator::new(Arc::new(MemoryBackend::new()));
    let port = free_port();
    let server = grpc_server(port, ServingStatus::Serving).await;
    let _registration = c
        .registry()
        .register(ServiceInfo::new("api-1", "api", "127.0.0.1", port), TTL)
        .await
        .unwrap();
    let prober = c
        .registry()
        .prober(quick("p1").service("api", Check::grpc("")))
        .unwrap();
    let mut events = prober.events();
    let passing = Some((InstanceHealth::Passing, true));
    let critical = Some((InstanceHealth::Critical, true));
    until("passing", || async {
        read(&c, "api", "api-1").await == passing
    })
    .await;
    server.stop().await;
    let not_serving = grpc_server(port, ServingStatus::NotServing).await;
    until("critical while NOT_SERVING", || async {
        read(&c, "api", "api-1").await == critical
    })
    .await;
    not_serving.stop().await;
    let _server = grpc_server(port, ServingStatus::Serving).await;
    until("passing again", || async {
        read(&c, "api", "api-1").await == passing
    })
    .await;
    let mut seen = Vec::new();
    while let Ok(e) = events.try_recv() {
        if let ProberEvent::Verdict { health, .. } = e {
            seen.push(health);
        }
    }
    assert_eq!(
        seen,
        [
            InstanceHealth::Passing,
            InstanceHealth::Critical,
            InstanceHealth::Passing
        ],
        "one verdict per change, no flapping"
    );
    prober.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_prober_of_a_group_is_active_and_another_takes_over() {
    let backend = Arc::new(MemoryBackend::new());
    let a = Coordinator::new(backend.clone());
    let b = Coordinator::new(backend.clone());
    let port = free_port();
    let _registration = a
        .registry()
        .register(ServiceInfo::new("web-1", "web", "127.0.0.1", port), TTL)
        .await
        .unwrap();
    let first = a
        .registry()
        .prober(quick("first").service("web", Check::Tcp))
        .unwrap();
    first.wait_until_active().await;
    let second = b
        .registry()
        .prober(quick("second").service("web", Check::Tcp))
        .unwrap();
    until("critical, from the first", || async {
        read(&a, "web", "web-1").await == Some((InstanceHealth::Critical, true))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(first.is_active() && !second.is_active(), "one active");
    let by = a.registry().discover("web").await.unwrap()[0]
        .probe
        .clone()
        .unwrap();
    assert_eq!(by.prober, "first");
    // The first goes (its handle dropped: the lead is handed over).
    drop(first);
    second.wait_until_active().await;
    let listener = bind(port).await;
    until("passing, from the second", || async {
        let all = a.registry().discover("web").await.unwrap();
        all[0].health == InstanceHealth::Passing
            && all[0].probe.as_ref().is_some_and(|p| p.prober == "second")
    })
    .await;
    drop(listener);
    second.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_instance_critical_past_the_deadline_is_removed() {
    let c = Coordinator::new(Arc::new(MemoryBackend::new()));
    let (dead, alive) = (free_port(), free_port());
    let listener = bind(alive).await;
    let registry = c.registry();
    registry
        .register_persistent(ServiceInfo::new("db-1", "db", "127.0.0.1", dead))
        .await
        .unwrap();
    registry
        .register_persistent(ServiceInfo::new("db-2", "db", "127.0.0.1", alive))
        .await
        .unwrap();
    let ephemeral = registry
        .register(ServiceInfo::new("db-3", "db", "127.0.0.1", dead), TTL)
        .await
        .unwrap();
    let prober = registry
        .prober(
            quick("p1")
                .service("db", Check::Tcp)
                .remove_after(Duration::from_millis(300)),
        )
        .unwrap();
    until("the dead persistent instance is removed", || async {
        let ids: Vec<String> = registry
            .discover("db")
            .await
            .unwrap()
            .into_iter()
            .map(|i| i.id)
            .collect();
        ids == ["db-2", "db-3"]
    })
    .await;
    // Its index entry and verdict went with it.
    let backend = c.backend();
    for key in [
        c.keys().id_index_entry("db-1", "db"),
        c.keys().probe_verdict("db", "db-1"),
    ] {
        let left = coordkit::BackendExt::get(backend.as_ref(), key.clone()).await;
        assert!(left.unwrap().is_none(), "{key} left behind");
    }
    // The ephemeral one, as dead, stays (critical): it ends with its lease.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        read(&c, "db", "db-3").await,
        Some((InstanceHealth::Critical, true))
    );
    assert_eq!(ephemeral.state(), RegistrationState::Registered);
    drop(listener);
    prober.close().await;
}

#[tokio::test]
async fn a_prober_config_that_cannot_run_is_refused() {
    let c = Coordinator::new(Arc::new(MemoryBackend::new()));
    let cases = [
        ProberConfig::new("p"),
        ProberConfig::new("a/b").service("web", Check::Tcp),
        ProberConfig::new("p").service("we/b", Check::Tcp),
        ProberConfig::new("p")
            .service("web", Check::Tcp)
            .interval(Duration::ZERO),
        ProberConfig::new("p")
            .service("web", Check::Tcp)
            .thresholds(0, 1),
        ProberConfig::new("p")
            .service("web", Check::Tcp)
            .with_group("x/y"),
    ];
    for config in cases {
        let refused = c.registry().prober(config.clone());
        assert!(
            matches!(refused, Err(coordkit::Error::InvalidArgument { .. })),
            "{config:?} accepted"
        );
    }
}
