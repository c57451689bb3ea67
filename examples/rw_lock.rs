//! A read-write lock: three readers share it, a writer waits for them, and a
//! reader arriving after the waiting writer waits behind it.
//!
//! Run with `cargo run --example rw_lock` (in memory), or with
//! `COORD_ETCD_ENDPOINTS=http://127.0.0.1:2379` set to run it on etcd.

use std::time::Duration;

const TTL: Duration = Duration::from_secs(5);

#[tokio::main]
async fn main() -> coordkit::Result<()> {
    let store = coordkit_examples::Store::from_env();
    let c = store.coordinator().await?;
    let mut readers = Vec::new();
    for _ in 0..3 {
        readers.push(c.rw_lock().read("catalog", TTL).await?);
    }
    println!("3 readers hold the lock together");
    let w = store.coordinator().await?;
    let writer = tokio::spawn(async move {
        let guard = w.rw_lock().write("catalog", TTL).await?;
        println!("writer holds it alone (token {})", guard.fencing_token());
        guard.unlock().await?;
        w.close().await
    });
    while c.rw_lock().holders_and_waiters("catalog").await?.len() < 4 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    match c.rw_lock().try_read("catalog", TTL).await {
        Err(e) => println!("a late reader waits behind the writer: {e}"),
        Ok(_) => println!("unexpected: a reader passed a waiting writer"),
    }
    for r in readers {
        r.unlock().await?;
    }
    writer.await.expect("writer")?;
    c.close().await
}
