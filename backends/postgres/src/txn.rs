//! The transaction call: read-only ones in a snapshot, others through the
//! handle's committer (batch.rs), under the meta lock (write.rs).

use coordkit::{Result, Txn, TxnOp, TxnOpResponse, TxnResponse};
use tokio_postgres::IsolationLevel;

use crate::error::from_pg;
use crate::read::range;
use crate::sql::{query, Params};
use crate::write::{answer, compares_hold};
use crate::Inner;

impl Inner {
    pub(crate) async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        if !txn.writes() {
            return self.read_only_txn(txn).await;
        }
        self.committer.submit(txn).await
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
