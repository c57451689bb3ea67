//! Distributed locks on the in-memory backend: three "processes" (coordinators)
//! take turns on one lock, each writing a shared counter only through a
//! transaction fenced by its lock; then a holder whose keep-alives stop (an
//! injected fault) sees its lock lost before anyone else can take it.
//!
//! Run with `cargo run --example lock` (in memory), or with
//! `COORD_ETCD_ENDPOINTS=http://127.0.0.1:2379` set to run the same turns on
//! etcd. The cut-off holder injects a partition only the memory backend can
//! make: on etcd that part is skipped (`scripts/chaos.sh` does it for real).

use std::sync::Arc;
use std::time::Duration;

use coordkit::{BackendExt, Compare, CompareOp, Coordinator, Error, PutRequest, Txn};

const TTL: Duration = Duration::from_secs(3);

/// Add one to `counter`, but only while `guard` still holds the lock.
async fn fenced_increment(
    coordinator: &Coordinator,
    guard: &coordkit::LockGuard,
) -> coordkit::Result<u64> {
    let store = coordinator.backend();
    let current = store.get("counter").await?;
    let (n, rev) = current.map_or((0, 0), |kv| {
        (
            String::from_utf8_lossy(&kv.value).parse().unwrap_or(0),
            kv.mod_revision,
        )
    });
    let write = Txn::new()
        .when([
            guard.compare(),
            Compare::mod_revision("counter", CompareOp::Equal, rev),
        ])
        .and_then([PutRequest::new("counter", (n + 1).to_string())]);
    if store.txn(write).await?.succeeded {
        Ok(n + 1)
    } else {
        Err(Error::LockNotHeld {
            name: guard.name().to_string(),
        })
    }
}

#[tokio::main]
async fn main() -> coordkit::Result<()> {
    let store = coordkit_examples::Store::from_env();

    // Three processes, five turns each.
    let mut workers = Vec::new();
    for worker in 0..3 {
        let coordinator = store.coordinator().await?;
        workers.push(tokio::spawn(async move {
            for _ in 0..5 {
                let guard = coordinator.lock().acquire("counter", TTL).await?;
                let n = fenced_increment(&coordinator, &guard).await?;
                println!(
                    "worker {worker}: token {:>3} -> counter {n}",
                    guard.fencing_token()
                );
                guard.unlock().await?;
            }
            coordinator.close().await
        }));
    }
    for w in workers {
        w.await.expect("worker")?;
    }

    // A holder cut off from the store: its session reports the loss at its local
    // deadline, before the store lets the lease go.
    let Some(memory) = store.memory() else {
        println!("(the cut-off holder needs the memory backend's partition: skipped on etcd and Postgres)");
        return Ok(());
    };
    let cut_off = memory.client();
    let holder = Coordinator::new(Arc::new(cut_off.clone()));
    let guard = holder.lock().acquire("counter", TTL).await?;
    println!(
        "holder has the lock (token {}); cutting it off",
        guard.fencing_token()
    );
    cut_off.partition();
    let why = guard.lost().await;
    println!(
        "holder: lock lost ({why:?}); is_expired = {}",
        guard.is_expired()
    );
    let other = Coordinator::new(Arc::new(memory.client()));
    let next = other.lock().acquire("counter", TTL).await?;
    println!(
        "another process took over with token {}",
        next.fencing_token()
    );
    cut_off.heal();
    match fenced_increment(&holder, &guard).await {
        Err(e) => println!("the old holder's write is refused: {e}"),
        Ok(n) => println!("unexpected: the old holder wrote {n}"),
    }
    next.unlock().await?;
    other.close().await?;
    Ok(())
}
