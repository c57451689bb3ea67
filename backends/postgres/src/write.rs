//! Transactions: compares, then one branch's puts, deletes and ranges, all at
//! one new revision, under the meta row's lock (so revisions commit in order).

use std::collections::HashMap;

use coordkit::{
    Error, KeyValue, LeaseId, PutRequest, Result, Revision, Txn, TxnOp, TxnOpResponse, TxnResponse,
};
use deadpool_postgres::{GenericClient, Transaction};
use tokio_postgres::SimpleQueryMessage;

use crate::error::from_pg;
use crate::read::{check_readable, range};
use crate::schema::Tables;
use crate::sql::{key_condition, kv_from, query, Params};

/// Write transactions in progress in one database transaction: each at its
/// own revision, one after the other, under the meta row's lock. `C` is the
/// connection the database transaction runs on: a `Transaction` (which rolls
/// back when dropped), or the committer's connection, whose transaction
/// `begin_on`/`commit_on` open and close by hand.
pub(crate) struct Writing<'a, C> {
    pub(crate) tx: &'a C,
    pub(crate) t: &'a Tables,
    /// The store's revision when the lock was taken.
    start: Revision,
    /// The store's revision after the write transactions ended so far.
    base: Revision,
    /// History rows the current write transaction has written (at `base + 1`).
    seq: i32,
}

impl<'a> Writing<'a, deadpool_postgres::Client> {
    /// Open a database transaction on `client` and lock the meta row, in one
    /// round trip. Only for a connection no caller can drop mid-way (the
    /// committer's): [`Writing::commit_on`] or [`Writing::rollback_on`] must
    /// close it.
    pub(crate) async fn begin_on(
        client: &'a deadpool_postgres::Client,
        t: &'a Tables,
    ) -> Result<Self> {
        let sql = format!("BEGIN; SELECT revision FROM {} FOR UPDATE", t.meta);
        let messages = client
            .simple_query(&sql)
            .await
            .map_err(|e| from_pg(e, "txn"))?;
        let start = messages
            .iter()
            .find_map(|m| match m {
                SimpleQueryMessage::Row(row) => row.get(0).and_then(|v| v.parse().ok()),
                _ => None,
            })
            .ok_or_else(|| Error::unavailable("postgres: the store's meta row is missing"))?;
        Ok(Writing {
            tx: client,
            t,
            start,
            base: start,
            seq: 0,
        })
    }

    /// Record the new revision, notify and commit, in one round trip. A
    /// failure is `Unavailable` (the transactions may have committed).
    pub(crate) async fn commit_on(mut self) -> Result<()> {
        self.end_txn();
        let sql = if self.base == self.start {
            "COMMIT".to_string()
        } else {
            format!(
                "UPDATE {meta} SET revision = {rev}; SELECT pg_notify('{channel}', '{rev}'); COMMIT",
                meta = self.t.meta,
                rev = self.base,
                channel = self.t.channel
            )
        };
        self.tx
            .simple_query(&sql)
            .await
            .map(drop)
            .map_err(|e| may_have_committed(from_pg(e, "commit")))
    }

    /// Roll back what `begin_on` opened (best effort: a connection that
    /// cannot is closed by the pool's recycling).
    pub(crate) async fn rollback_on(self) {
        let _ = self.tx.simple_query("ROLLBACK").await;
    }
}

impl<'a, C: GenericClient> Writing<'a, C> {
    /// Lock the meta row (held to commit) and read the store's revision.
    pub(crate) async fn begin(tx: &'a C, t: &'a Tables) -> Result<Self> {
        let sql = format!("SELECT revision FROM {} FOR UPDATE", t.meta);
        let rows = query(tx, &sql, &Params::default(), "txn").await?;
        let start = rows
            .first()
            .map(|r| r.get(0))
            .ok_or_else(|| Error::unavailable("postgres: the store's meta row is missing"))?;
        Ok(Writing {
            tx,
            t,
            start,
            base: start,
            seq: 0,
        })
    }

    /// The revision the current write transaction writes at.
    pub(crate) fn revision(&self) -> Revision {
        self.base + 1
    }

    /// End the current write transaction: its revision is taken if it wrote
    /// anything. Returns the store's revision after it.
    pub(crate) fn end_txn(&mut self) -> Revision {
        if self.seq > 0 {
            self.base += 1;
            self.seq = 0;
        }
        self.base
    }

    /// Record the new revision (if anything was written) and wake the watch
    /// feeds: the notification is sent at commit. Ends the current write
    /// transaction first.
    pub(crate) async fn finish(&mut self) -> Result<()> {
        self.end_txn();
        if self.base == self.start {
            return Ok(());
        }
        let mut params = Params::default();
        let rev = params.add(self.base);
        let channel = params.add(self.t.channel.clone());
        let sql = format!(
            "WITH u AS (UPDATE {meta} SET revision = {rev}::bigint) \
             SELECT pg_notify({channel}::text, {rev}::bigint::text)",
            meta = self.t.meta
        );
        query(self.tx, &sql, &params, "txn").await?;
        Ok(())
    }

    /// Whether every range of `ops` at a past revision can be read: checked
    /// before anything of the transaction applies, so a `Compacted` or
    /// future revision answers this transaction alone, with nothing written.
    pub(crate) async fn check_reads(&self, ops: &[TxnOp]) -> Result<Result<()>> {
        let revisions: Vec<Revision> = ops
            .iter()
            .filter_map(|op| match op {
                TxnOp::Range(r) => r.revision,
                _ => None,
            })
            .collect();
        if revisions.is_empty() {
            return Ok(Ok(()));
        }
        let sql = format!("SELECT compacted FROM {}", self.t.meta);
        let compacted: i64 = query(self.tx, &sql, &Params::default(), "txn").await?[0].get(0);
        Ok(revisions
            .into_iter()
            .try_for_each(|at| check_readable(at, self.base, compacted)))
    }

    /// Put one key, logging it; returns the previous version.
    async fn put(&mut self, p: &PutRequest) -> Result<Option<KeyValue>> {
        let params = put_params(p, self.revision(), self.seq);
        let rows = query(self.tx, &self.put_sql(), &params, "put").await?;
        self.seq += 1;
        Ok(previous(&rows))
    }

    /// The put statement: its text is the same for every put, the values
    /// are its parameters (see [`put_params`]).
    fn put_sql(&self) -> String {
        format!(
            "WITH prev AS (SELECT key, value, create_revision, mod_revision, version, lease \
                           FROM {kv} WHERE key = $1::bytea), \
                  up AS (INSERT INTO {kv} AS k (key, value, create_revision, mod_revision, version, lease) \
                         VALUES ($1::bytea, $2::bytea, $3::bigint, $3::bigint, 1, $4::bigint) \
                         ON CONFLICT (key) DO UPDATE SET value = excluded.value, \
                            mod_revision = excluded.mod_revision, version = k.version + 1, \
                            lease = excluded.lease \
                         RETURNING create_revision, version), \
                  h AS (INSERT INTO {history} (revision, seq, key, deleted, value, create_revision, \
                            version, lease, prev_value, prev_create_revision, prev_mod_revision, \
                            prev_version, prev_lease) \
                        SELECT $3::bigint, $5::integer, $1::bytea, false, $2::bytea, \
                            up.create_revision, up.version, $4::bigint, prev.value, \
                            prev.create_revision, prev.mod_revision, prev.version, prev.lease \
                        FROM up LEFT JOIN prev ON true) \
             SELECT prev.key, prev.value, prev.create_revision, prev.mod_revision, prev.version, prev.lease \
             FROM (SELECT 1) one LEFT JOIN prev ON true",
            kv = self.t.kv,
            history = self.t.history
        )
    }

    /// Several write transactions that are puts alone — no compare, no
    /// lease, no key twice among them — each at its own revision, their
    /// statements sent together: the connection runs them in order without
    /// waiting for each answer (a pipeline), so a batch of blind writes costs
    /// one round trip, not one per put.
    pub(crate) async fn blind_puts(&mut self, txns: Vec<Txn>) -> Result<Vec<TxnResponse>> {
        self.end_txn();
        let statement = self
            .tx
            .prepare_cached(&self.put_sql())
            .await
            .map_err(|e| from_pg(e, "put"))?;
        let mut calls = Vec::new();
        for (k, txn) in txns.iter().enumerate() {
            let revision = self.base + 1 + k as i64;
            for (seq, op) in txn.success.iter().enumerate() {
                if let TxnOp::Put(p) = op {
                    calls.push(put_params(p, revision, seq as i32));
                }
            }
        }
        let refs: Vec<_> = calls.iter().map(Params::refs).collect();
        let rows = futures::future::try_join_all(
            refs.iter().map(|params| self.tx.query(&statement, params)),
        )
        .await
        .map_err(|e| from_pg(e, "put"))?;
        let mut rows = rows.iter();
        let mut answers = Vec::with_capacity(txns.len());
        for txn in txns {
            self.base += 1;
            let mut responses = Vec::with_capacity(txn.success.len());
            for op in txn.success {
                if let (TxnOp::Put(p), Some(rows)) = (op, rows.next()) {
                    responses.push(TxnOpResponse::Put {
                        prev_kv: previous(rows).filter(|_| p.prev_kv),
                    });
                }
            }
            answers.push(answer(true, responses, self.base));
        }
        Ok(answers)
    }

    /// Delete the keys `cond` selects (a condition on `kv` written with
    /// `params`), logging each in key order; returns what was deleted.
    pub(crate) async fn delete_where(
        &mut self,
        cond: &str,
        mut params: Params,
    ) -> Result<Vec<KeyValue>> {
        let rev = params.add(self.revision());
        let seq = params.add(self.seq);
        let sql = format!(
            "WITH d AS (DELETE FROM {kv} WHERE {cond} \
                        RETURNING key, value, create_revision, mod_revision, version, lease), \
                  n AS (SELECT d.*, (row_number() OVER (ORDER BY key))::integer - 1 AS i FROM d), \
                  h AS (INSERT INTO {history} (revision, seq, key, deleted, value, create_revision, \
                            version, lease, prev_value, prev_create_revision, prev_mod_revision, \
                            prev_version, prev_lease) \
                        SELECT {rev}::bigint, {seq}::integer + i, key, true, ''::bytea, 0, 0, NULL, value, \
                            create_revision, mod_revision, version, lease FROM n) \
             SELECT key, value, create_revision, mod_revision, version, lease FROM n ORDER BY key",
            kv = self.t.kv,
            history = self.t.history
        );
        let rows = query(self.tx, &sql, &params, "delete").await?;
        self.seq += rows.len() as i32;
        Ok(rows.iter().map(|r| kv_from(r, 0)).collect())
    }
}

/// The parameters of the put statement: $1 key, $2 value, $3 revision,
/// $4 lease, $5 the row's place in its revision.
fn put_params(p: &PutRequest, revision: Revision, seq: i32) -> Params {
    let mut params = Params::default();
    params.add(p.key.clone());
    params.add(p.value.clone());
    params.add(revision);
    params.add(p.lease.map(|l| l.0));
    params.add(seq);
    params
}

/// The previous version a put statement returns, if the key existed.
fn previous(rows: &[tokio_postgres::Row]) -> Option<KeyValue> {
    rows.first()
        .filter(|r| r.get::<_, Option<Vec<u8>>>(0).is_some())
        .map(|r| kv_from(r, 0))
}

/// Whether `txn` is puts alone, with no compare and no lease: what
/// [`Writing::blind_puts`] may send in a pipeline.
pub(crate) fn blind(txn: &Txn) -> bool {
    txn.compares.is_empty()
        && !txn.success.is_empty()
        && txn
            .success
            .iter()
            .all(|op| matches!(op, TxnOp::Put(p) if p.lease.is_none()))
}

/// The outcome of looking up the leases a branch's puts name.
pub(crate) enum Leases {
    /// All live.
    Live,
    /// This one does not exist.
    Missing(i64),
    /// These are past their deadline (to be ended before answering).
    Overdue(Vec<i64>),
}

/// Whether the leases `ids` are live.
pub(crate) async fn look_up_leases(
    client: &impl GenericClient,
    t: &Tables,
    ids: Vec<i64>,
) -> Result<Leases> {
    if ids.is_empty() {
        return Ok(Leases::Live);
    }
    let mut params = Params::default();
    let list = params.add(ids.clone());
    let sql = format!(
        "SELECT id, deadline <= clock_timestamp() FROM {lease} WHERE id = ANY({list})",
        lease = t.lease
    );
    let rows = query(client, &sql, &params, "lease lookup").await?;
    let found: HashMap<i64, bool> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    if let Some(missing) = ids.iter().find(|id| !found.contains_key(id)) {
        return Ok(Leases::Missing(*missing));
    }
    let overdue: Vec<i64> = found
        .into_iter()
        .filter(|(_, o)| *o)
        .map(|(id, _)| id)
        .collect();
    Ok(if overdue.is_empty() {
        Leases::Live
    } else {
        Leases::Overdue(overdue)
    })
}

/// Run one branch of `txn` after its compares were evaluated.
pub(crate) async fn apply<C: GenericClient>(
    w: &mut Writing<'_, C>,
    ops: Vec<TxnOp>,
) -> Result<Vec<TxnOpResponse>> {
    let mut responses = Vec::with_capacity(ops.len());
    for op in ops {
        responses.push(match op {
            TxnOp::Put(p) => {
                let prev = w.put(&p).await?;
                TxnOpResponse::Put {
                    prev_kv: prev.filter(|_| p.prev_kv),
                }
            }
            TxnOp::Delete(d) => {
                let mut params = Params::default();
                let cond = key_condition(&d.keys, "key", &mut params);
                let gone = w.delete_where(&cond, params).await?;
                TxnOpResponse::Delete {
                    deleted: gone.len() as i64,
                    prev_kvs: if d.prev_kv { gone } else { Vec::new() },
                }
            }
            TxnOp::Range(r) => TxnOpResponse::Range(range(w.tx, w.t, &r).await?),
        });
    }
    Ok(responses)
}

/// Whether every compare holds against the keys as `client` reads them.
pub(crate) async fn compares_hold(
    client: &impl GenericClient,
    t: &Tables,
    txn: &Txn,
) -> Result<bool> {
    if txn.compares.is_empty() {
        return Ok(true);
    }
    let keys: Vec<Vec<u8>> = txn.compares.iter().map(|c| c.key.clone()).collect();
    let mut params = Params::default();
    let list = params.add(keys);
    let sql = format!(
        "SELECT key, value, create_revision, mod_revision, version, lease FROM {kv} WHERE key = ANY({list})",
        kv = t.kv
    );
    let rows = query(client, &sql, &params, "compare").await?;
    let now: HashMap<Vec<u8>, KeyValue> = rows
        .iter()
        .map(|r| kv_from(r, 0))
        .map(|kv| (kv.key.clone(), kv))
        .collect();
    Ok(txn.compares.iter().all(|c| c.evaluate(now.get(&c.key))))
}

/// The leases the puts of `ops` name.
pub(crate) fn leases_named(ops: &[TxnOp]) -> Vec<i64> {
    let mut ids: Vec<i64> = ops
        .iter()
        .filter_map(|op| match op {
            TxnOp::Put(PutRequest {
                lease: Some(LeaseId(id)),
                ..
            }) => Some(*id),
            _ => None,
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Commit, telling a lost answer apart from a refusal: a failed COMMIT may
/// have applied.
pub(crate) async fn commit(tx: Transaction<'_>) -> Result<()> {
    tx.commit()
        .await
        .map_err(|e| may_have_committed(from_pg(e, "commit")))
}

/// A failed COMMIT's error, saying the transaction may have committed.
fn may_have_committed(err: Error) -> Error {
    match err {
        Error::Unavailable { reason, source } => Error::Unavailable {
            reason: format!("{reason} (the transaction may have committed)"),
            source,
        },
        other => other,
    }
}

/// The response of a write transaction: ranges report its final revision.
pub(crate) fn answer(
    succeeded: bool,
    mut responses: Vec<TxnOpResponse>,
    revision: Revision,
) -> TxnResponse {
    for r in &mut responses {
        if let TxnOpResponse::Range(range) = r {
            range.revision = revision;
        }
    }
    TxnResponse {
        succeeded,
        responses,
        revision,
    }
}
