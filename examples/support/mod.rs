//! Where the examples run: on etcd when `COORD_ETCD_ENDPOINTS` is set (a
//! comma-separated list), in memory otherwise. Parts that inject faults only the
//! memory backend can make say so and are skipped on etcd.

#![allow(dead_code)]

use std::sync::Arc;

use coordkit::Coordinator;
use coordkit_memory::MemoryBackend;

/// The store the example runs on.
pub enum Store {
    /// One in-memory store; each coordinator gets its own connection to it.
    Memory(MemoryBackend),
    /// An etcd cluster; each coordinator gets its own connection to it.
    Etcd(Box<coordkit_etcd::EtcdConfig>),
}

impl Store {
    /// etcd if `COORD_ETCD_ENDPOINTS` is set, else a new in-memory store.
    pub fn from_env() -> Store {
        match std::env::var("COORD_ETCD_ENDPOINTS") {
            Ok(list) if !list.trim().is_empty() => {
                println!("(running against etcd at {list})");
                Store::Etcd(Box::new(coordkit_etcd::EtcdConfig::from_endpoint_list(
                    &list,
                )))
            }
            _ => Store::Memory(MemoryBackend::new()),
        }
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
            Store::Etcd(config) => {
                let etcd = coordkit_etcd::EtcdBackend::connect((**config).clone()).await?;
                let prefix = format!("coord-example-{}/", std::process::id());
                Arc::new(coordkit::Namespaced::new(Arc::new(etcd), prefix))
            }
        })
    }

    /// The in-memory store, for the parts that inject its faults; `None` on etcd.
    pub fn memory(&self) -> Option<&MemoryBackend> {
        match self {
            Store::Memory(store) => Some(store),
            Store::Etcd(_) => None,
        }
    }
}
