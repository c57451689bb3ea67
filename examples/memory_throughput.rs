//! Single-thread get and put throughput of the in-memory backend (a rough figure;
//! benches/ holds the measured comparisons). `cargo run --release --example memory_throughput`

use std::time::Instant;

use coordkit::BackendExt;
use coordkit_memory::MemoryBackend;

#[tokio::main(flavor = "current_thread")]
async fn main() -> coordkit::Result<()> {
    let store = MemoryBackend::new();
    let n = 200_000u32;
    let keys: Vec<String> = (0..1000).map(|i| format!("key/{i:04}")).collect();
    let start = Instant::now();
    for i in 0..n {
        store
            .put(keys[(i % 1000) as usize].as_str(), "value-of-some-bytes")
            .await?;
    }
    let put = start.elapsed();
    let start = Instant::now();
    for i in 0..n {
        let kv = store.get(keys[(i % 1000) as usize].as_str()).await?;
        assert!(kv.is_some());
    }
    let get = start.elapsed();
    println!(
        "memory backend, one thread, {n} ops each over 1000 keys: put {:.0} ops/s, get {:.0} ops/s",
        n as f64 / put.as_secs_f64(),
        n as f64 / get.as_secs_f64()
    );
    Ok(())
}
