use coord::{Backend, BackendExt, PutRequest, Txn};
use coord_bench::measure::cpu_time;
use std::time::Instant;

#[tokio::main]
async fn main() {
    let ep = std::env::var("COORD_ETCD_ENDPOINTS").unwrap();
    let raw = etcd_client::Client::connect([ep.clone()], None)
        .await
        .unwrap();
    let backend = std::sync::Arc::new(
        coord_etcd::EtcdBackend::connect(coord_etcd::EtcdConfig::with_endpoints([ep.clone()]))
            .await
            .unwrap(),
    );
    for round in 0..2 {
        for mode in ["raw put", "raw txn", "backend txn", "backend put"] {
            let start = Instant::now();
            let cpu0 = cpu_time();
            let tasks: Vec<_> = (0..64)
                .map(|t| {
                    let mut raw = raw.clone();
                    let backend = backend.clone();
                    tokio::spawn(async move {
                        for _ in 0..100 {
                            let key = format!("scratch/{t}");
                            match mode {
                                "raw put" => {
                                    raw.put(key, "v", None).await.unwrap();
                                }
                                "raw txn" => {
                                    raw.txn(
                                        etcd_client::Txn::new()
                                            .and_then([etcd_client::TxnOp::put(key, "v", None)]),
                                    )
                                    .await
                                    .unwrap();
                                }
                                "backend txn" => {
                                    backend
                                        .txn(Txn::new().and_then([PutRequest::new(key, "v")]))
                                        .await
                                        .unwrap();
                                }
                                _ => {
                                    backend.put(key, "v").await.unwrap();
                                }
                            }
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
            let e = start.elapsed();
            let cpu = cpu_time() - cpu0;
            println!(
                "round {round} {mode}: {:.0} ops/s, client cpu {:.1} µs/op",
                6400.0 / e.as_secs_f64(),
                cpu.as_secs_f64() * 1e6 / 6400.0
            );
        }
    }
}
