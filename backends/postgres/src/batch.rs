//! Group commit: the write transactions of one handle that arrive while a
//! commit is in flight run together in the next database transaction, each at
//! its own revision and in arrival order, so one commit flush (and one hold
//! of the meta row's lock) serves many writes — as etcd's raft batching does.
//!
//! A transaction's compares see the writes of those before it in the batch,
//! exactly as if they had committed one by one. A failure answers for the
//! whole batch: a statement failing rolls every transaction of it back (each
//! caller gets the error, and nothing of it applied); a lost COMMIT answer is
//! `Unavailable` for each (they may have committed).

use std::collections::HashSet;
use std::sync::Weak;

use coordkit::{Error, Result, Txn, TxnOp, TxnResponse};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::lease::end_lease;
use crate::write::{
    answer, apply, blind, compares_hold, leases_named, look_up_leases, Leases, Writing,
};
use crate::Inner;

/// The most write transactions one database transaction carries.
const MAX_BATCH: usize = 128;

/// One write transaction waiting for its batch.
struct Request {
    txn: Txn,
    answer: oneshot::Sender<Result<TxnResponse>>,
}

/// The handle's committer: a task that runs the batches one after the other.
#[derive(Debug)]
pub(crate) struct Committer {
    requests: mpsc::Sender<Request>,
    task: JoinHandle<()>,
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Committer {
    /// Start the committer of `inner` (it ends when `inner` is dropped).
    pub(crate) fn start(inner: Weak<Inner>) -> Committer {
        let (requests, rx) = mpsc::channel(4 * MAX_BATCH);
        Committer {
            requests,
            task: tokio::spawn(run(inner, rx)),
        }
    }

    /// Run `txn` in the next batch. Dropping the future before the batch
    /// starts leaves nothing applied; after, the transaction applies or not
    /// with its batch, unseen.
    pub(crate) async fn submit(&self, txn: Txn) -> Result<TxnResponse> {
        let (answer, rx) = oneshot::channel();
        self.requests
            .send(Request { txn, answer })
            .await
            .map_err(|_| Error::Closed {
                what: "postgres backend",
            })?;
        rx.await.map_err(|_| {
            Error::unavailable(
                "postgres: the committer stopped (the transaction may have committed)",
            )
        })?
    }
}

async fn run(inner: Weak<Inner>, mut rx: mpsc::Receiver<Request>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        // A caller that left before its batch began never applies.
        batch.retain(|r| !r.answer.is_closed());
        if batch.is_empty() {
            continue;
        }
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let (txns, answers): (Vec<_>, Vec<_>) =
            batch.into_iter().map(|r| (r.txn, r.answer)).unzip();
        let results = run_batch(&inner, txns).await;
        drop(inner);
        for (answer, result) in answers.into_iter().zip(results) {
            let _ = answer.send(result);
        }
    }
}

/// Run `txns` in one database transaction: one answer each, in order.
async fn run_batch(inner: &Inner, txns: Vec<Txn>) -> Vec<Result<TxnResponse>> {
    let n = txns.len();
    let everyone =
        |e: &Error| -> Vec<Result<TxnResponse>> { (0..n).map(|_| Err(copy(e))).collect() };
    let client = match inner.client().await {
        Ok(c) => c,
        Err(e) => return everyone(&e),
    };
    let mut w = match Writing::begin_on(&client, &inner.tables).await {
        Ok(w) => w,
        Err(e) => {
            let _ = client.simple_query("ROLLBACK").await;
            return everyone(&e);
        }
    };
    let mut results = Vec::with_capacity(n);
    let mut pending = txns.into_iter().peekable();
    while let Some(txn) = pending.next() {
        let step = if blind(&txn) {
            let run = blind_run(txn, &mut pending);
            w.blind_puts(run)
                .await
                .map(|answers| results.extend(answers.into_iter().map(Ok)))
        } else {
            one(&mut w, inner, txn)
                .await
                .map(|result| results.push(result))
        };
        if let Err(e) = step {
            // The database transaction is aborted: nothing of it applies.
            w.rollback_on().await;
            return everyone(&e);
        }
    }
    if let Err(e) = w.commit_on().await {
        return everyone(&e);
    }
    results
}

/// `first` and the blind transactions after it whose keys no other of them
/// writes (so their order among themselves cannot matter).
fn blind_run(first: Txn, pending: &mut std::iter::Peekable<std::vec::IntoIter<Txn>>) -> Vec<Txn> {
    let mut keys: HashSet<Vec<u8>> = HashSet::new();
    let fresh = |txn: &Txn, keys: &mut HashSet<Vec<u8>>| {
        let mine: Vec<&Vec<u8>> = txn
            .success
            .iter()
            .filter_map(|op| match op {
                TxnOp::Put(p) => Some(&p.key),
                _ => None,
            })
            .collect();
        if mine.iter().any(|k| keys.contains(*k)) {
            return false;
        }
        keys.extend(mine.into_iter().cloned());
        true
    };
    fresh(&first, &mut keys);
    let mut run = vec![first];
    while let Some(next) = pending.peek() {
        if !blind(next) || !fresh(next, &mut keys) {
            break;
        }
        run.extend(pending.next());
    }
    run
}

/// One write transaction of a batch: `Err` only for a failed statement
/// (which aborts the batch); the transaction's own answer otherwise.
async fn one(
    w: &mut Writing<'_, deadpool_postgres::Client>,
    inner: &Inner,
    txn: Txn,
) -> Result<Result<TxnResponse>> {
    let succeeded = compares_hold(w.tx, &inner.tables, &txn).await?;
    let ops = if succeeded { txn.success } else { txn.failure };
    match look_up_leases(w.tx, &inner.tables, leases_named(&ops)).await? {
        Leases::Live => {}
        Leases::Missing(id) => return Ok(Err(Error::LeaseNotFound { id })),
        Leases::Overdue(ids) => {
            // The lease ended before this write: end it now (its keys go
            // in their own revision), then answer as if it were gone.
            end_lease(w, ids[0], true).await?;
            w.end_txn();
            return Ok(Err(Error::LeaseNotFound { id: ids[0] }));
        }
    }
    if let Err(e) = w.check_reads(&ops).await? {
        return Ok(Err(e));
    }
    let responses = apply(w, ops).await?;
    let revision = w.end_txn();
    Ok(Ok(answer(succeeded, responses, revision)))
}

/// The same error again, for each caller of a batch.
fn copy(e: &Error) -> Error {
    match e {
        Error::Unavailable { reason, .. } => Error::unavailable(reason.clone()),
        Error::Timeout { operation } => Error::Timeout { operation },
        Error::AuthFailed { reason } => Error::AuthFailed {
            reason: reason.clone(),
        },
        Error::PermissionDenied { reason } => Error::PermissionDenied {
            reason: reason.clone(),
        },
        Error::Alarm { alarm, reason } => Error::Alarm {
            alarm: alarm.clone(),
            reason: reason.clone(),
        },
        Error::Closed { what } => Error::Closed { what },
        other => Error::Backend {
            backend: "postgres",
            source: other.to_string().into(),
        },
    }
}
