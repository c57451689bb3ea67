//! The transaction call: read-only ones in a snapshot, others under the meta
//! lock (see write.rs).

use coordkit::{Error, Result, Txn, TxnOp, TxnOpResponse, TxnResponse};
use tokio_postgres::IsolationLevel;

use crate::error::from_pg;
use crate::lease::end_lease;
use crate::read::range;
use crate::sql::{query, Params};
use crate::write::{answer, apply, commit, compares_hold, leases_named, look_up_leases};
use crate::write::{Leases, Writing};
use crate::Inner;

impl Inner {
    pub(crate) async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        if !txn.writes() {
            return self.read_only_txn(txn).await;
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(|e| from_pg(e, "txn"))?;
        let mut w = Writing::begin(&tx, &self.tables).await?;
        let succeeded = compares_hold(&tx, &self.tables, &txn).await?;
        let ops = if succeeded { txn.success } else { txn.failure };
        match look_up_leases(&tx, &self.tables, leases_named(&ops)).await? {
            Leases::Live => {}
            // Nothing was written: dropping the transaction rolls it back.
            Leases::Missing(id) => return Err(Error::LeaseNotFound { id }),
            Leases::Overdue(ids) => {
                // The lease ended before this write: end it now (its keys go
                // in this revision), then answer as if it were gone.
                end_lease(&mut w, ids[0], true).await?;
                w.finish().await?;
                commit(tx).await?;
                return Err(Error::LeaseNotFound { id: ids[0] });
            }
        }
        let responses = apply(&mut w, ops).await?;
        w.finish().await?;
        let revision = w.final_revision();
        commit(tx).await?;
        Ok(answer(succeeded, responses, revision))
    }

    /// A transaction without writes, in one repeatable-read snapshot: no
    /// lock, and its revision is the snapshot's.
    async fn read_only_txn(&self, txn: Txn) -> Result<TxnResponse> {
        let mut client = self.client().await?;
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(|e| from_pg(e, "txn"))?;
        let sql = format!("SELECT revision FROM {}", self.tables.meta);
        let revision: i64 = query(&tx, &sql, &Params::default(), "txn").await?[0].get(0);
        let succeeded = compares_hold(&tx, &self.tables, &txn).await?;
        let ops = if succeeded { txn.success } else { txn.failure };
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            if let TxnOp::Range(r) = op {
                responses.push(TxnOpResponse::Range(range(&tx, &self.tables, &r).await?));
            }
        }
        tx.commit().await.map_err(|e| from_pg(e, "txn"))?;
        Ok(answer(succeeded, responses, revision))
    }
}
