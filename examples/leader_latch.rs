//! Two leader latches: the first leads, loses its lease (revoked here), the
//! second takes over, and the first campaigns again by itself.
//!
//! Run with `cargo run --example leader_latch` (in memory), or with
//! `COORD_ETCD_ENDPOINTS=http://127.0.0.1:2379` set to run it on etcd.

use std::time::Duration;

#[tokio::main]
async fn main() -> coordkit::Result<()> {
    let store = coordkit_examples::Store::from_env();
    let a = store.coordinator().await?;
    let b = store.coordinator().await?;
    let ttl = Duration::from_secs(5);
    let first = a.election().with_ttl(ttl).latch("scheduler", "a");
    let state = first.wait_until_leader().await.expect("latch running");
    println!("a leads: {state:?}");
    let second = b.election().with_ttl(ttl).latch("scheduler", "b");
    let lease = a.session(ttl).await?.lease();
    a.backend().lease_revoke(lease).await?;
    // Until the latch has seen its loss it still says Leader: another may
    // already lead, which is why leaders fence their writes (LatchState::compare).
    let _ = first.states().wait_for(|s| !s.is_leader()).await;
    println!("a saw its loss: {:?}", first.state());
    let state = second.wait_until_leader().await.expect("latch running");
    println!("a's lease was revoked; b leads: {state:?}");
    second.close().await;
    let state = first.wait_until_leader().await.expect("latch running");
    println!("b closed; a campaigned again and leads: {state:?}");
    first.close().await;
    a.close().await?;
    b.close().await
}
