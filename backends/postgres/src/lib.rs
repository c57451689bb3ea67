//! # coordkit-postgres
//!
//! A [`coordkit`] backend on PostgreSQL (15 or newer): the whole `Backend`
//! contract — global revisions, multi-operation transactions, leases, watches
//! from any revision, compaction — on tables in one Postgres schema, so a team
//! that runs Postgres runs coordkit's locks, elections, registry and config
//! center without operating etcd.
//!
//! ```no_run
//! use coordkit::Coordinator;
//! use coordkit_postgres::{PostgresBackend, PostgresConfig};
//!
//! # async fn run() -> coordkit::Result<()> {
//! let backend =
//!     PostgresBackend::connect(PostgresConfig::new("postgres://app@127.0.0.1/app")).await?;
//! let coordinator = Coordinator::new(std::sync::Arc::new(backend));
//! let guard = coordinator
//!     .lock()
//!     .acquire("orders/42", std::time::Duration::from_secs(10))
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! # How it works
//!
//! - **Revisions.** Every database transaction that writes locks the one
//!   `meta` row first and holds it to commit, so writes commit in revision
//!   order: a reader never sees revision r + 1 before r. A handle runs the
//!   write transactions that arrive while a commit is in flight together, each
//!   at its own revision, so one commit flush serves many (group commit);
//!   reads take no lock.
//! - **Transactions** run in one database transaction: compares read the
//!   current keys, then one branch's operations apply in order (a range sees
//!   the writes before it), each write logged in `history` at the new revision.
//! - **Leases** live on the database clock (`clock_timestamp()`): a keep-alive
//!   moves the deadline and takes no revision. Every handle looks for overdue
//!   leases every 200 ms and ends each in one revision that deletes it and its
//!   keys; a call that meets an overdue lease ends it before answering
//!   `LeaseNotFound`, so that answer never comes while the lease's keys are
//!   readable. With no handle connected, nothing expires until one connects.
//! - **Watches.** Each handle runs one feed: woken by LISTEN/NOTIFY (each
//!   write notifies at commit) or by a safety poll, it reads the new revisions
//!   from `history` once and fans them out. Every event comes from the log, so
//!   a lost notification or connection loses nothing; a watch behind the feed
//!   reads the log itself. [`PostgresConfig::poll_only`] serves poolers that do
//!   not keep LISTEN.
//! - **Compaction** records the revision first, then deletes the history it
//!   makes obsolete at the next compaction (see `compact.rs`).
//!
//! # Safety of fencing tokens
//!
//! A revision is a fencing token only if a committed write is never lost: run
//! with `synchronous_commit` on, and fail over only to a synchronous standby.
//! Failing over to an asynchronous standby can lose the last commits and hand
//! out their revisions a second time.

#![warn(missing_docs, missing_debug_implementations)]

mod batch;
mod compact;
mod config;
mod error;
mod events;
mod feed;
mod lease;
mod read;
mod schema;
mod sql;
mod status;
mod txn;
mod watch;
mod write;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use coordkit::backend::validate;
use coordkit::{
    Backend, Capabilities, Error, LeaseGrant, LeaseId, LeaseInfo, Limits, RangeRequest,
    RangeResponse, Result, Revision, Txn, TxnResponse, WatchRequest, WatchStart, WatchStream,
};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::sync::OnceCell;
use tokio::task::JoinHandle;
use tokio_postgres::NoTls;

pub use config::PostgresConfig;
pub use status::PostgresStatus;

use error::from_pool;
use feed::Feed;
use schema::Tables;
use sql::{query, Params};

/// A coordkit backend on PostgreSQL. Cheap to clone: clones share one pool,
/// one watch feed and one lease reaper.
#[derive(Clone)]
pub struct PostgresBackend {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PostgresBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresBackend")
            .field("url", &self.inner.config.redacted_url())
            .field("schema", &self.inner.config.schema)
            .finish_non_exhaustive()
    }
}

/// What a handle's clones share.
pub(crate) struct Inner {
    pub(crate) pool: Pool,
    pub(crate) pg_config: tokio_postgres::Config,
    pub(crate) config: PostgresConfig,
    pub(crate) tables: Tables,
    pub(crate) feed: OnceCell<Arc<Feed>>,
    pub(crate) committer: batch::Committer,
    reaper: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(reaper) = self.reaper.lock().unwrap_or_else(|e| e.into_inner()).take() {
            reaper.abort();
        }
    }
}

impl Inner {
    /// A pooled connection.
    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Client> {
        self.pool.get().await.map_err(from_pool)
    }

    /// The store's revision and compaction revision.
    pub(crate) async fn meta(&self) -> Result<(Revision, Revision)> {
        let client = self.client().await?;
        let sql = format!("SELECT revision, compacted FROM {}", self.tables.meta);
        let rows = query(&client, &sql, &Params::default(), "meta").await?;
        Ok((rows[0].get(0), rows[0].get(1)))
    }
}

impl PostgresBackend {
    /// Connect, and create or migrate the store's tables in the configured
    /// schema. Fails with `InvalidArgument` for a bad URL or setting,
    /// `AuthFailed` for rejected credentials, `Unavailable` when the server
    /// cannot be reached.
    pub async fn connect(config: PostgresConfig) -> Result<Self> {
        config.validate()?;
        let mut pg_config: tokio_postgres::Config = config
            .url
            .parse()
            .map_err(|e| Error::invalid("url", format!("{}: {e}", config.redacted_url())))?;
        pg_config
            .connect_timeout(config.request_timeout)
            .keepalives_idle(Duration::from_secs(30))
            .application_name("coordkit");
        let manager = Manager::from_config(
            pg_config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(config.request_timeout))
            .create_timeout(Some(config.request_timeout))
            .build()
            .map_err(|e| Error::invalid("pool", e.to_string()))?;
        {
            let mut client = pool.get().await.map_err(from_pool)?;
            schema::migrate(&mut client, &config.schema).await?;
        }
        let inner = Arc::new_cyclic(|weak| Inner {
            pool,
            pg_config,
            tables: Tables::new(&config.schema),
            config,
            feed: OnceCell::new(),
            committer: batch::Committer::start(weak.clone()),
            reaper: std::sync::Mutex::new(None),
        });
        let reaper = tokio::spawn(lease::reap(
            Arc::downgrade(&inner),
            inner.config.reap_interval,
        ));
        *inner.reaper.lock().unwrap_or_else(|e| e.into_inner()) = Some(reaper);
        Ok(PostgresBackend { inner })
    }

    /// The store's revision, compaction, sizes and the server's version and
    /// role, read in one statement (what `coordctl status` shows).
    pub async fn status(&self) -> Result<PostgresStatus> {
        self.timed("status", self.inner.status()).await
    }

    /// The configuration this handle was made with.
    pub fn config(&self) -> &PostgresConfig {
        &self.inner.config
    }

    /// Run `call`, failing with `Timeout` past the request timeout.
    async fn timed<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        tokio::time::timeout(self.inner.config.request_timeout, call)
            .await
            .map_err(|_| Error::Timeout { operation })?
    }
}

#[async_trait]
impl Backend for PostgresBackend {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn limits(&self) -> Limits {
        Limits::default()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::NONE
            .with_compaction(true)
            .with_watch_start(true)
    }

    async fn range(&self, request: RangeRequest) -> Result<RangeResponse> {
        validate::range(&request)?;
        self.timed("range", async {
            let client = self.inner.client().await?;
            read::range(&client, &self.inner.tables, &request).await
        })
        .await
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        validate::txn(&txn, &self.limits())?;
        self.timed("txn", self.inner.txn(txn)).await
    }

    async fn lease_grant(&self, ttl: i64) -> Result<LeaseGrant> {
        validate::ttl(ttl, &self.limits())?;
        self.timed("lease grant", self.inner.lease_grant(ttl)).await
    }

    async fn lease_keep_alive(&self, id: LeaseId) -> Result<i64> {
        self.timed("lease keep-alive", self.inner.lease_keep_alive(id))
            .await
    }

    async fn lease_revoke(&self, id: LeaseId) -> Result<()> {
        self.timed("lease revoke", self.inner.lease_revoke(id))
            .await
    }

    async fn lease_time_to_live(&self, id: LeaseId) -> Result<LeaseInfo> {
        self.timed("lease time-to-live", self.inner.lease_time_to_live(id))
            .await
    }

    async fn watch(&self, request: WatchRequest) -> Result<WatchStream> {
        Ok(self.watch_reporting_start(request).await?.0)
    }

    async fn watch_reporting_start(
        &self,
        request: WatchRequest,
    ) -> Result<(WatchStream, Option<WatchStart>)> {
        validate::watch(&request)?;
        let (stream, start) = self.timed("watch", self.inner.watch(request)).await?;
        Ok((stream, Some(start)))
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        validate::compact(revision)?;
        self.timed("compact", self.inner.compact(revision)).await
    }
}

impl From<PostgresBackend> for Arc<dyn Backend> {
    fn from(b: PostgresBackend) -> Self {
        Arc::new(b)
    }
}
