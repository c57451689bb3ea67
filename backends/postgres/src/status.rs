//! What an operator asks of the store: `coordctl status` on Postgres.

use coordkit::{Result, Revision};

use crate::sql::{query, Params};
use crate::Inner;

/// The store's state as one statement reads it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct PostgresStatus {
    /// The server's version (`server_version`).
    pub server_version: String,
    /// The store's revision.
    pub revision: Revision,
    /// The compaction revision in force (0: nothing compacted).
    pub compacted: Revision,
    /// Live keys.
    pub keys: i64,
    /// Rows of the history log.
    pub history_rows: i64,
    /// Leases not yet ended (some may be past their deadline, awaiting a reaper).
    pub leases: i64,
    /// The whole database's size on disk, in bytes.
    pub database_size: i64,
    /// Whether the server is a standby (read-only: writes fail there).
    pub in_recovery: bool,
}

impl Inner {
    pub(crate) async fn status(&self) -> Result<PostgresStatus> {
        let client = self.client().await?;
        let t = &self.tables;
        let sql = format!(
            "SELECT current_setting('server_version'), m.revision, m.compacted, \
                    (SELECT count(*) FROM {kv}), (SELECT count(*) FROM {history}), \
                    (SELECT count(*) FROM {lease}), pg_database_size(current_database()), \
                    pg_is_in_recovery() \
             FROM {meta} m",
            kv = t.kv,
            history = t.history,
            lease = t.lease,
            meta = t.meta
        );
        let rows = query(&client, &sql, &Params::default(), "status").await?;
        let r = &rows[0];
        Ok(PostgresStatus {
            server_version: r.get(0),
            revision: r.get(1),
            compacted: r.get(2),
            keys: r.get(3),
            history_rows: r.get(4),
            leases: r.get(5),
            database_size: r.get(6),
            in_recovery: r.get(7),
        })
    }
}
