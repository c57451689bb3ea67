//! A counter incremented by 4 "processes" at once: every add counts exactly once.
//!
//! Run with `cargo run --example counter` (in memory), or with
//! `COORD_ETCD_ENDPOINTS=http://127.0.0.1:2379` set to run it on etcd.

#[tokio::main]
async fn main() -> coordkit::Result<()> {
    let store = coordkit_examples::Store::from_env();
    let mut adders = Vec::new();
    for _ in 0..4 {
        let c = store.coordinator().await?;
        adders.push(tokio::spawn(async move {
            for _ in 0..25 {
                c.counter().add("visits", 1).await?;
            }
            c.close().await
        }));
    }
    for a in adders {
        a.await.expect("adder")?;
    }
    let c = store.coordinator().await?;
    println!(
        "visits = {} (4 × 25 concurrent adds)",
        c.counter().get("visits").await?
    );
    let swapped = c.counter().compare_and_set("visits", 100, 0).await?;
    println!("reset from 100 to 0: {swapped}");
    c.close().await
}
