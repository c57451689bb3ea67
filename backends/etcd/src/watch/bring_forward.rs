//! Resuming idle watches near the present.
//!
//! A watch re-created on a new stream resumes from the next revision it is
//! owed. For a watch that has seen nothing for long, that revision is old, and
//! etcd serves a watch from an old revision by reading its history from there,
//! 512 lagging watches per pass: a reconnect with 100,000 idle watches kept
//! every watch of the stream waiting for minutes. etcd's progress reports
//! cannot move such a watch forward before 3.4.25 / 3.5.8 (a report could
//! overtake events still to be sent: etcd-io/etcd#15220).
//!
//! For a watch of one key, a read settles it: the key present with its last
//! change before the revision owed means no change since (a delete, or a
//! delete and a new create, would show as absent or as a newer change), so the
//! watch may resume just after the read. A key absent (it may have been
//! created and deleted meanwhile) or changed keeps its revision.

use std::sync::atomic::Ordering;
use std::time::Duration;

use coordkit::{KeyRange, Revision};
use etcd_client as etcd;
use futures::StreamExt;

use super::Hub;

/// Keys read per transaction (etcd's default `--max-txn-ops`).
const BATCH: usize = 128;
/// Transactions in flight at once.
const IN_FLIGHT: usize = 8;

/// A watch of one key that may resume later than it would.
struct Idle {
    id: i64,
    key: Vec<u8>,
    /// The revision it is owed next.
    next: Revision,
}

/// The watches of `idle` that may resume later, with the revision to resume
/// from. A batch whose read fails or takes longer than `bound` moves nothing;
/// `None` when every batch failed.
async fn bring_forward(
    client: &etcd::Client,
    idle: Vec<Idle>,
    bound: Duration,
) -> Option<Vec<(i64, Revision)>> {
    let batches: Vec<Vec<Idle>> = {
        let mut idle = idle.into_iter().peekable();
        let mut batches = Vec::new();
        while idle.peek().is_some() {
            batches.push(idle.by_ref().take(BATCH).collect());
        }
        batches
    };
    let answers = futures::stream::iter(batches)
        .map(|batch| async move {
            let mut kv = crate::request::kv(client);
            let reads: Vec<etcd::TxnOp> = batch
                .iter()
                .map(|w| etcd::TxnOp::get(w.key.clone(), None))
                .collect();
            let read = tokio::time::timeout(bound, kv.txn(etcd::Txn::new().and_then(reads))).await;
            let Ok(Ok(resp)) = read else {
                return None;
            };
            let at = resp.header().map_or(0, |h| h.revision());
            batch
                .iter()
                .zip(resp.op_responses())
                .filter_map(|(w, op)| match op {
                    etcd::TxnOpResponse::Get(get) => get
                        .kvs()
                        .first()
                        .filter(|kv| kv.mod_revision() < w.next && at >= w.next)
                        .map(|_| (w.id, at + 1)),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .into()
        })
        .buffer_unordered(IN_FLIGHT)
        .collect::<Vec<Option<Vec<_>>>>()
        .await;
    let answered = answers.iter().any(Option::is_some);
    answered.then(|| answers.into_iter().flatten().flatten().collect())
}

impl Hub {
    /// Before watches are created again: move those of one key that saw no
    /// change since the revision they are owed to just after a read of their
    /// key (see `bring_forward`).
    /// Whether etcd answered (or there was nothing to read).
    pub(super) async fn bring_idle_watches_forward(&mut self, bound: Duration) -> bool {
        let idle: Vec<Idle> = self
            .watches
            .iter()
            .filter(|(_, w)| w.next > 0 && !w.stalled.load(Ordering::Acquire))
            .filter_map(|(id, w)| match &w.keys {
                KeyRange::Key(key) => Some(Idle {
                    id: *id,
                    key: key.clone(),
                    next: w.next,
                }),
                KeyRange::Prefix(_) => None,
            })
            .collect();
        if idle.is_empty() {
            return true;
        }
        let Some(&first) = self.endpoints.order().first() else {
            return true;
        };
        // One that cannot be reached is left to the stream's own attempts.
        let Ok(client) = self.endpoints.client(first).await.cloned() else {
            return true;
        };
        let Some(moved) = bring_forward(&client, idle, bound).await else {
            // The next attempt goes to another member, if there is one.
            self.endpoints.set_aside(first, "it does not answer reads");
            return false;
        };
        for (id, from) in moved {
            if let Some(w) = self.watches.get_mut(&id) {
                if from > w.next {
                    w.next = from;
                    self.counters
                        .brought_forward
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        true
    }
}
