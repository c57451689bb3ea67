//! The README's quickstart: a lock with its fencing token, a leader, a config value
//! and a registered service, on one coordinator.
//!
//! `cargo run --example quickstart` runs it in memory; with `COORD_ETCD_ENDPOINTS`
//! set, `cargo run -p coordkit-examples --features etcd --example quickstart` runs
//! it on etcd.

use std::time::Duration;

use coordkit::ServiceInfo;

#[tokio::main]
async fn main() -> coordkit::Result<()> {
    // In memory: Coordinator::new(Arc::new(coordkit_memory::MemoryBackend::new()));
    // on etcd: coordkit_etcd::connect(EtcdConfig::with_endpoints(["http://127.0.0.1:2379"])).
    let coordinator = coordkit_examples::Store::from_env().coordinator().await?;
    let ttl = Duration::from_secs(10);

    // A lock: the fencing token goes with every write to the guarded resource.
    let guard = coordinator.lock().acquire("nightly-report", ttl).await?;
    println!("lock held, fencing token {}", guard.fencing_token());
    guard.unlock().await?;

    // Leader election.
    let leadership = coordinator
        .election()
        .campaign("scheduler", "node-a")
        .await?;
    let leader = coordinator.election().leader("scheduler").await?;
    println!("leader: {:?}", leader.map(|l| l.value_str()));
    leadership.resign().await?;

    // Config: typed values with versions and compare-and-set.
    let config = coordinator.config();
    let version = config.set("api/rps", &100u32).await?;
    config.compare_and_set("api/rps", &200u32, version).await?;
    println!("api/rps = {}", config.get::<u32>("api/rps").await?);

    // A service instance, kept registered until deregistered or dropped.
    let registration = coordinator
        .registry()
        .register(
            ServiceInfo::new("orders-1", "orders", "10.0.0.1", 7001),
            ttl,
        )
        .await?;
    println!(
        "orders: {} instance(s)",
        coordinator.registry().discover("orders").await?.len()
    );
    registration.deregister().await?;

    coordinator.close().await
}
