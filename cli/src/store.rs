//! The store a command talks to: etcd or PostgreSQL.

use std::sync::Arc;

use coordkit::Backend;
use coordkit_etcd::EtcdBackend;
use coordkit_postgres::PostgresBackend;

/// The store, for what only one kind can answer (`coordctl status`).
#[derive(Clone)]
pub enum Store {
    /// An etcd cluster.
    Etcd(Arc<EtcdBackend>),
    /// A PostgreSQL database.
    Postgres(Arc<PostgresBackend>),
}

impl Store {
    /// The store as the library sees it.
    pub fn backend(&self) -> Arc<dyn Backend> {
        match self {
            Store::Etcd(etcd) => etcd.clone(),
            Store::Postgres(pg) => pg.clone(),
        }
    }
}
