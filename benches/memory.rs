//! The in-memory backend's own figures (no baseline): single-thread get, put and
//! txn, and a watch fan-out to 1,000 watchers.

use std::time::Instant;

use coordkit::{Backend, BackendExt, Compare, CompareOp, PutRequest, Txn, WatchRequest};
use coordkit_memory::MemoryBackend;
use futures::StreamExt;

use crate::measure::{sequential, Row, Samples, Target};

/// Sizes of one run.
pub struct Sizes {
    pub ops: usize,
    pub watchers: usize,
    pub rounds: usize,
}

pub async fn run(sizes: &Sizes) -> Vec<Row> {
    let store = MemoryBackend::new();
    let keys = 1000;
    for i in 0..keys {
        store.put(format!("k/{i}"), "v").await.expect("put");
    }
    let put = sequential(sizes.ops, |i| {
        let store = &store;
        async move {
            store
                .put(format!("k/{}", i % keys), "value")
                .await
                .expect("put");
        }
    })
    .await;
    let get = sequential(sizes.ops, |i| {
        let store = &store;
        async move {
            store.get(format!("k/{}", i % keys)).await.expect("get");
        }
    })
    .await;
    let txn = sequential(sizes.ops, |i| {
        let store = &store;
        async move {
            let key = format!("k/{}", i % keys);
            let t = Txn::new()
                .when([Compare::version(key.clone(), CompareOp::Greater, 0)])
                .and_then([PutRequest::new(key, "txn")]);
            store.txn(t).await.expect("txn");
        }
    })
    .await;

    let mut watches = Vec::with_capacity(sizes.watchers);
    for _ in 0..sizes.watchers {
        watches.push(store.watch(WatchRequest::key("fan")).await.expect("watch"));
    }
    let mut rounds = Vec::with_capacity(sizes.rounds);
    let start = Instant::now();
    for r in 0..sizes.rounds {
        let t = Instant::now();
        store.put("fan", r.to_string()).await.expect("put");
        for w in watches.iter_mut() {
            w.next().await.expect("open").expect("event");
        }
        rounds.push(t.elapsed());
    }
    let fan_out = Samples::new(rounds, start.elapsed());
    let n = sizes.watchers;
    vec![
        Row::new("memory: put, 1 thread", put, Target::Report),
        Row::new("memory: get, 1 thread", get, Target::Report),
        Row::new("memory: txn (compare + put), 1 thread", txn, Target::Report),
        Row::new(
            format!("memory: watch fan-out, put → all {n} watchers received"),
            fan_out,
            Target::Report,
        ),
    ]
}
