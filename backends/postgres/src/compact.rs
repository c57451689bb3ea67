//! Compaction: the revision is recorded first (reads and watches below it are
//! `Compacted` at once); the history it makes obsolete is deleted in batches
//! at the *next* compaction, so a watch feed that was behind when one was
//! recorded still reads every event it had not read.

use coordkit::{Error, Result, Revision};

use crate::error::from_pg;
use crate::sql::{query, Params};
use crate::write::commit;
use crate::Inner;

/// History rows deleted per statement.
const PURGE_BATCH: i64 = 2000;

impl Inner {
    pub(crate) async fn compact(&self, revision: Revision) -> Result<()> {
        let previous = self.record_compaction(revision).await?;
        if previous > 0 {
            self.purge(previous).await?;
        }
        Ok(())
    }

    /// Record `revision` as the compaction revision; returns the one it replaces.
    async fn record_compaction(&self, revision: Revision) -> Result<Revision> {
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| from_pg(e, "compact"))?;
        let sql = format!(
            "SELECT revision, compacted FROM {} FOR UPDATE",
            self.tables.meta
        );
        let rows = query(&tx, &sql, &Params::default(), "compact").await?;
        let (current, compacted): (i64, i64) = (rows[0].get(0), rows[0].get(1));
        if revision > current {
            return Err(Error::invalid(
                "revision",
                format!("{revision} is in the future (the store is at {current})"),
            ));
        }
        if revision <= compacted {
            return Err(Error::Compacted {
                compact_revision: compacted,
            });
        }
        let mut params = Params::default();
        let sql = format!(
            "UPDATE {} SET compacted = {}::bigint",
            self.tables.meta,
            params.add(revision)
        );
        query(&tx, &sql, &params, "compact").await?;
        commit(tx).await?;
        Ok(compacted)
    }

    /// Delete the history a read at `upto` or later never needs: per key,
    /// every version at or below `upto` but the newest, and that one too when
    /// it is a delete (so a deleted key never reappears). `purged` is raised
    /// first, so the watch feed knows what it can no longer read.
    async fn purge(&self, upto: Revision) -> Result<()> {
        let client = self.client().await?;
        let mut params = Params::default();
        let sql = format!(
            "UPDATE {} SET purged = greatest(purged, {}::bigint)",
            self.tables.meta,
            params.add(upto)
        );
        query(&client, &sql, &params, "compact").await?;
        loop {
            let mut params = Params::default();
            let upto = params.add(upto);
            let batch = params.add(PURGE_BATCH);
            let sql = format!(
                "WITH gone AS (DELETE FROM {history} WHERE ctid IN ( \
                    SELECT h.ctid FROM {history} h WHERE h.revision <= {upto}::bigint AND ( \
                        h.deleted OR EXISTS (SELECT 1 FROM {history} n WHERE n.key = h.key \
                            AND n.revision > h.revision AND n.revision <= {upto}::bigint)) \
                    LIMIT {batch}::bigint) RETURNING 1) \
                 SELECT count(*) FROM gone",
                history = self.tables.history
            );
            let rows = query(&client, &sql, &params, "compact").await?;
            let deleted: i64 = rows[0].get(0);
            if deleted < PURGE_BATCH {
                return Ok(());
            }
        }
    }
}
