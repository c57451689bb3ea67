//! Leader election on the in-memory backend: three candidates, an observer that
//! prints every change, a leader that proclaims a new value and resigns, and a
//! leader whose keep-alives stop (an injected fault) being replaced.
//!
//! Run with `cargo run --example election`, or on etcd with
//! `COORD_ETCD_ENDPOINTS` set (the stalled leader needs the memory backend's
//! fault injection: on etcd that part is skipped).

use std::sync::Arc;
use std::time::Duration;

use coordkit::Coordinator;
use futures::StreamExt;

#[tokio::main]
async fn main() -> coordkit::Result<()> {
    let store = coordkit_examples::Store::from_env();
    let observer = store.coordinator().await?;
    let mut changes = observer.election().observe("primary")?;
    let printer = tokio::spawn(async move {
        while let Some(change) = changes.next().await {
            match change {
                Ok(Some(leader)) => println!(
                    "  observer: leader is {} (token {})",
                    leader.value_str(),
                    leader.fencing_token
                ),
                Ok(None) => println!("  observer: no leader"),
                Err(e) => println!("  observer: {e}"),
            }
        }
    });

    let ttl = Duration::from_secs(3);
    let nodes = [store.coordinator().await?, store.coordinator().await?];
    let first = nodes[0]
        .election()
        .with_ttl(ttl)
        .campaign("primary", "node-0")
        .await?;
    println!("node-0 leads");
    let second = {
        let node = nodes[1].clone();
        tokio::spawn(async move {
            node.election()
                .with_ttl(ttl)
                .campaign("primary", "node-1")
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    first.proclaim("node-0 (v2)").await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    first.resign().await?;
    println!("node-0 resigned");
    let second = second.await.expect("campaign")?;
    println!("node-1 leads");
    second.resign().await?;

    let Some(memory) = store.memory() else {
        println!(
            "(the stalled leader needs the memory backend's faults: skipped on etcd and Postgres)"
        );
        printer.abort();
        return Ok(());
    };
    let stalling = memory.client();
    let third = Coordinator::new(Arc::new(stalling.clone()))
        .election()
        .with_ttl(ttl)
        .campaign("primary", "node-2")
        .await?;
    println!("node-2 leads; its keep-alives now stop");
    stalling.stall_keep_alives();
    let why = third.lost().await;
    println!("node-2: leadership lost ({why:?})");
    tokio::time::sleep(Duration::from_millis(100)).await;
    println!(
        "leader now: {:?}",
        observer
            .election()
            .leader("primary")
            .await?
            .map(|l| l.value_str())
    );
    printer.abort();
    for node in &nodes {
        node.close().await.ok();
    }
    Ok(())
}
