//! A barrier that holds workers until a coordinator removes it, and a double
//! barrier that starts three workers together and lets them finish together.
//!
//! Run with `cargo run --example barrier` (in memory), or with
//! `COORD_ETCD_ENDPOINTS=http://127.0.0.1:2379` set to run it on etcd.

use std::time::Duration;

const TTL: Duration = Duration::from_secs(5);

#[tokio::main]
async fn main() -> coordkit::Result<()> {
    let store = coordkit_examples::Store::from_env();
    let boss = store.coordinator().await?;
    boss.barrier().set("deploy").await?;
    let mut workers = Vec::new();
    for worker in 0..3 {
        let c = store.coordinator().await?;
        workers.push(tokio::spawn(async move {
            c.barrier().wait("deploy").await?;
            println!("worker {worker}: past the barrier");
            let entry = c.barrier().enter("batch", 3, TTL).await?;
            println!("worker {worker}: all 3 entered, working");
            tokio::time::sleep(Duration::from_millis(10 * worker)).await;
            entry.leave().await?;
            println!("worker {worker}: all 3 left");
            c.close().await
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    println!("removing the barrier");
    boss.barrier().remove("deploy").await?;
    for w in workers {
        w.await.expect("worker")?;
    }
    boss.close().await
}
