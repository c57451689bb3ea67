//! `cargo bench -p coordkit-bench`: every benchmark, one Markdown report.
//!
//! With `--bench` (what `cargo bench` passes) it runs the full sizes and writes
//! `target/bench-report.md`; `scripts/bench.sh` starts etcd with its default
//! durability and runs it. Without `--bench` (as `cargo test --all-targets` runs
//! it) it is a smoke run: tiny sizes, same code paths, nothing written. The etcd
//! part needs `COORD_ETCD_ENDPOINTS`, the PostgreSQL part `COORD_POSTGRES_URL`;
//! with `COORD_REQUIRE_ETCD=1` or `COORD_REQUIRE_POSTGRES=1` an absence fails.

use std::time::Duration;

use coordkit_bench::{etcd, measure, memory, postgres, scale};

#[global_allocator]
static HEAP: measure::CountingAlloc = measure::CountingAlloc;

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    format!("{cores} cores ({cpu}), {mem_gib:.0} GiB")
}

fn main() {
    // RUST_LOG=coordkit=debug, say: coordkit's logs on stderr while it runs.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    // A child process of the failover benchmark: hold a lock until killed.
    if let Ok(spec) = std::env::var(coordkit_bench::recipes::HOLD_ENV) {
        coordkit_bench::recipes::hold_until_killed(&spec);
        return;
    }
    let full = std::env::args().any(|a| a == "--bench");
    let list = std::env::var("COORD_ETCD_ENDPOINTS").unwrap_or_default();
    let endpoints = coordkit_etcd::EtcdConfig::from_endpoint_list(&list).endpoints;
    if endpoints.is_empty() && std::env::var("COORD_REQUIRE_ETCD").as_deref() == Ok("1") {
        panic!("COORD_REQUIRE_ETCD=1 but COORD_ETCD_ENDPOINTS is not set");
    }
    let memory_sizes = if full {
        memory::Sizes {
            ops: 200_000,
            watchers: 1_000,
            rounds: 100,
        }
    } else {
        memory::Sizes {
            ops: 1_000,
            watchers: 50,
            rounds: 3,
        }
    };
    let etcd_sizes = if full {
        etcd::Sizes {
            sequential: 10_000,
            locks: 2_000,
            contention: Duration::from_secs(5),
            handoff_window: Duration::from_secs(10),
            // COORD_BENCH_CONTENDERS=4,64 measures only those.
            contenders: std::env::var("COORD_BENCH_CONTENDERS")
                .ok()
                .map(|list| {
                    list.split(',')
                        .filter_map(|n| n.trim().parse().ok())
                        .collect()
                })
                .unwrap_or_else(|| vec![2, 4, 8, 16, 64]),
            concurrent_sets: 6_400,
            propagation: 3_000,
            instances_reads: 200_000,
            current_reads: 1_000_000,
            failovers: 5,
        }
    } else {
        etcd::Sizes {
            sequential: 10,
            locks: 10,
            contention: Duration::from_millis(300),
            handoff_window: Duration::from_millis(300),
            contenders: vec![2],
            concurrent_sets: 128,
            propagation: 10,
            instances_reads: 1_000,
            current_reads: 1_000,
            failovers: 1,
        }
    };
    let postgres_url = std::env::var("COORD_POSTGRES_URL").unwrap_or_default();
    if postgres_url.is_empty() && std::env::var("COORD_REQUIRE_POSTGRES").as_deref() == Ok("1") {
        panic!("COORD_REQUIRE_POSTGRES=1 but COORD_POSTGRES_URL is not set");
    }
    let postgres_sizes = if full {
        postgres::Sizes {
            sequential: 2_000,
            propagation: 1_000,
            locks: 1_000,
            handoff_window: Duration::from_secs(10),
            contenders: etcd_sizes.contenders.clone(),
            writers: 64,
            write_window: Duration::from_secs(10),
        }
    } else {
        postgres::Sizes {
            sequential: 10,
            propagation: 10,
            locks: 10,
            handoff_window: Duration::from_millis(300),
            contenders: vec![2],
            writers: 4,
            write_window: Duration::from_millis(200),
        }
    };
    // COORD_BENCH_SCALE_100K=1 adds N = 100,000 to the scale group;
    // COORD_BENCH_SCALE_COUNTS=100000 measures only those.
    let scale_sizes = if full {
        let mut counts = vec![1_000, 10_000];
        if std::env::var("COORD_BENCH_SCALE_100K").as_deref() == Ok("1") {
            counts.push(100_000);
        }
        if let Ok(list) = std::env::var("COORD_BENCH_SCALE_COUNTS") {
            counts = list
                .split(',')
                .filter_map(|n| n.trim().parse().ok())
                .collect();
        }
        scale::Sizes {
            counts,
            caches: 1_000,
            idle: std::env::var("COORD_BENCH_SCALE_IDLE_S")
                .ok()
                .and_then(|s| s.parse().ok())
                .map_or(Duration::from_secs(30), Duration::from_secs),
            etcd_only: std::env::var("COORD_BENCH_SCALE_ETCD_ONLY").as_deref() == Ok("1"),
        }
    } else {
        scale::Sizes {
            counts: vec![50],
            caches: 5,
            idle: Duration::from_millis(200),
            etcd_only: false,
        }
    };
    let only = std::env::var("COORD_BENCH_ONLY").unwrap_or_default();
    let scale_wanted = only.is_empty() || only.split(',').any(|g| g.trim() == "scale");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut rows = runtime.block_on(memory::run(&memory_sizes));
    if !endpoints.is_empty() {
        rows.extend(runtime.block_on(etcd::run(&endpoints, &etcd_sizes)));
    } else {
        eprintln!("etcd benchmarks skipped: set COORD_ETCD_ENDPOINTS (scripts/bench.sh does)");
    }
    if !postgres_url.is_empty() {
        rows.extend(runtime.block_on(postgres::run(&postgres_url, &postgres_sizes)));
    } else {
        eprintln!("postgres benchmarks skipped: set COORD_POSTGRES_URL (scripts/bench.sh does)");
    }
    let mut table = measure::markdown(&rows);
    if scale_wanted {
        // Its own etcd (killed and restarted): run whenever etcd can be started.
        let etcd = !endpoints.is_empty();
        table.push_str(&runtime.block_on(scale::run(&scale_sizes, etcd)));
    }
    let header = format!(
        "# coord benchmark report\n\nMachine: {}. etcd at {}; PostgreSQL {}. {} run.\n\
         Ratios compare coord with its baseline measured in the same run on the same server.\n\n",
        machine(),
        if endpoints.is_empty() {
            "–".to_string()
        } else {
            endpoints.join(",")
        },
        if postgres_url.is_empty() {
            "not run"
        } else {
            "on loopback (its durability settings are in the write row)"
        },
        if full {
            "Full"
        } else {
            "Smoke (tiny sizes; figures meaningless)"
        },
    );
    let report = format!("{header}{table}");
    println!("{report}");
    if full {
        // COORD_BENCH_REPORT, else the target directory (wherever CARGO_TARGET_DIR
        // puts it), created if missing; a report that cannot be written is printed
        // above anyway, and the error says where it was meant to go.
        let path = std::env::var_os("COORD_BENCH_REPORT")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| {
                std::env::var_os("CARGO_TARGET_DIR")
                    .map(std::path::PathBuf::from)
                    .unwrap_or_else(|| {
                        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target")
                    })
                    .join("bench-report.md")
            });
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        match std::fs::write(&path, &report) {
            Ok(()) => eprintln!("report written to {}", path.display()),
            Err(e) => eprintln!("could not write the report to {}: {e}", path.display()),
        }
    }
}
