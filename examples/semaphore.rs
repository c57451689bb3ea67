//! A semaphore of 2 permits shared by 5 "processes": at most two run at once,
//! each fencing its work with its permit's compare; a client asking for another
//! number of permits is refused.
//!
//! Run with `cargo run --example semaphore` (in memory), or with
//! `COORD_ETCD_ENDPOINTS=http://127.0.0.1:2379` set to run it on etcd.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use coordkit::{PutRequest, Txn};

const TTL: Duration = Duration::from_secs(5);

#[tokio::main]
async fn main() -> coordkit::Result<()> {
    let store = coordkit_examples::Store::from_env();
    let running = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for worker in 0..5 {
        let coordinator = store.coordinator().await?;
        let running = running.clone();
        workers.push(tokio::spawn(async move {
            let permit = coordinator.semaphore().acquire("encoders", 2, TTL).await?;
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            println!(
                "worker {worker}: permit {} ({now} running)",
                permit.fencing_token()
            );
            // Work that must not outlive the permit is fenced with its compare.
            let write = Txn::new()
                .when([permit.compare()])
                .and_then([PutRequest::new(format!("encoded/{worker}"), "done")]);
            assert!(coordinator.backend().txn(write).await?.succeeded);
            tokio::time::sleep(Duration::from_millis(50)).await;
            running.fetch_sub(1, Ordering::SeqCst);
            permit.unlock().await?;
            coordinator.close().await
        }));
    }
    for w in workers {
        w.await.expect("worker")?;
    }
    let c = store.coordinator().await?;
    let held = c.semaphore().acquire("encoders", 2, TTL).await?;
    match c.semaphore().acquire("encoders", 3, TTL).await {
        Err(e) => println!("a client with 3 permits is refused: {e}"),
        Ok(_) => println!("unexpected: a mismatched client was admitted"),
    }
    held.unlock().await?;
    c.close().await
}
