//! Where the examples run: in memory by default (nothing but Rust needed), on
//! etcd when `COORD_ETCD_ENDPOINTS` is set (a comma-separated list) and the
//! examples were built with the `etcd` feature, on PostgreSQL when
//! `COORD_POSTGRES_URL` is set and they were built with the `postgres` feature:
//!
//! ```sh
//! cargo run --example lock                                   # in memory
//! COORD_ETCD_ENDPOINTS=http://127.0.0.1:2379 \
//!   cargo run -p coordkit-examples --features etcd --example lock
//! COORD_POSTGRES_URL=postgres://app@127.0.0.1/app \
//!   cargo run -p coordkit-examples --features postgres --example lock
//! ```
//!
//! The `etcd` feature builds `etcd-client`, whose build script needs `protoc`
//! (Debian: `protobuf-compiler`). Parts that inject faults only the memory backend
//! can make say so and are skipped on etcd and Postgres. Setting both variables
//! is refused (exit code 2): say which store to use.

use std::sync::Arc;

use coordkit::Coordinator;
use coordkit_memory::MemoryBackend;

/// The store the example runs on.
pub enum Store {
    /// One in-memory store; each coordinator gets its own connection to it.
    Memory(MemoryBackend),
    /// An etcd cluster; each coordinator gets its own connection to it.
    #[cfg(feature = "etcd")]
    Etcd(Box<coordkit_etcd::EtcdConfig>),
    /// A PostgreSQL database; each coordinator gets its own handle (pool) to it.
    #[cfg(feature = "postgres")]
    Postgres(Box<coordkit_postgres::PostgresConfig>),
}

impl Store {
    /// etcd if `COORD_ETCD_ENDPOINTS` is set, else a new in-memory store.
    ///
    /// With `COORD_ETCD_ENDPOINTS` set in a build without the `etcd` feature, the
    /// example stops with a message saying how to build it (exit code 2) rather
    /// than run in memory while the caller believes it ran on etcd.
    pub fn from_env() -> Store {
        let set = |name| {
            std::env::var(name)
                .ok()
                .filter(|v: &String| !v.trim().is_empty())
        };
        match (set("COORD_ETCD_ENDPOINTS"), set("COORD_POSTGRES_URL")) {
            (Some(_), Some(_)) => {
                eprintln!(
                    "both COORD_ETCD_ENDPOINTS and COORD_POSTGRES_URL are set: unset one, so \
                     the example runs where you expect"
                );
                std::process::exit(2)
            }
            (Some(list), None) => Self::etcd(&list),
            (None, Some(url)) => Self::postgres(&url),
            (None, None) => Store::Memory(MemoryBackend::new()),
        }
    }

    #[cfg(feature = "postgres")]
    fn postgres(url: &str) -> Store {
        let config = coordkit_postgres::PostgresConfig::new(url).with_pool_size(2);
        println!("(running against postgres at {})", config.redacted_url());
        Store::Postgres(Box::new(config))
    }

    #[cfg(not(feature = "postgres"))]
    fn postgres(_: &str) -> Store {
        eprintln!(
            "COORD_POSTGRES_URL is set, but this example was built without Postgres: run it \
             with `cargo run -p coordkit-examples --features postgres --example ...`"
        );
        std::process::exit(2)
    }

    #[cfg(feature = "etcd")]
    fn etcd(list: &str) -> Store {
        println!("(running against etcd at {list})");
        Store::Etcd(Box::new(coordkit_etcd::EtcdConfig::from_endpoint_list(
            list,
        )))
    }

    #[cfg(not(feature = "etcd"))]
    fn etcd(list: &str) -> Store {
        eprintln!(
            "COORD_ETCD_ENDPOINTS is set ({list}), but this example was built without \
             etcd: run it with `cargo run -p coordkit-examples --features etcd --example ...` \
             (the etcd backend needs protoc to build; Debian: protobuf-compiler)"
        );
        std::process::exit(2)
    }

    /// A coordinator on a connection of its own: another "process".
    pub async fn coordinator(&self) -> coordkit::Result<Coordinator> {
        Ok(Coordinator::new(self.backend().await?))
    }

    /// A connection of its own. On etcd every key of the run lives under
    /// `coord-example-<pid>/`, so runs never meet (and etcdctl shows them there).
    pub async fn backend(&self) -> coordkit::Result<Arc<dyn coordkit::Backend>> {
        Ok(match self {
            Store::Memory(store) => Arc::new(store.client()),
            #[cfg(feature = "etcd")]
            Store::Etcd(config) => {
                let etcd = coordkit_etcd::EtcdBackend::connect((**config).clone()).await?;
                let prefix = format!("coord-example-{}/", std::process::id());
                Arc::new(coordkit::Namespaced::new(Arc::new(etcd), prefix))
            }
            #[cfg(feature = "postgres")]
            Store::Postgres(config) => {
                let pg = coordkit_postgres::PostgresBackend::connect((**config).clone()).await?;
                let prefix = format!("coord-example-{}/", std::process::id());
                Arc::new(coordkit::Namespaced::new(Arc::new(pg), prefix))
            }
        })
    }

    /// The in-memory store, for the parts that inject its faults; `None` on
    /// etcd and Postgres.
    pub fn memory(&self) -> Option<&MemoryBackend> {
        match self {
            Store::Memory(store) => Some(store),
            #[cfg(feature = "etcd")]
            Store::Etcd(_) => None,
            #[cfg(feature = "postgres")]
            Store::Postgres(_) => None,
        }
    }
}

/// Wait until `done` holds, looking every 20 ms; panics after 30 s (an
/// example that waits longer is broken).
pub async fn until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..1500 {
        if done() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("gave up waiting until {what}");
}
