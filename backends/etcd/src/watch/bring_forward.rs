//! Resuming idle watches near the present.
//!
//! A watch re-created on a new stream resumes from the next revision it is
//! owed. For a watch that has seen nothing for long, that revision is old, and
//! etcd serves a watch from an old revision by reading its history from there,
//! 512 lagging watches per pass, holding its store's lock meanwhile: a
//! reconnect with 100,000 idle watches kept every watch of the stream waiting
//! for minutes. etcd's progress reports cannot move such a watch forward
//! before 3.4.25 / 3.5.8 (a report could overtake events still to be sent:
//! etcd-io/etcd#15220).
//!
//! For a watch of one key, a read settles it:
//! - the key present with its last change before the revision owed: no change
//!   since (a delete, or a delete and a new create, would show as absent or as
//!   a newer change), so the watch may resume just after the read;
//! - the key present in the same life (create revision) as the last change the
//!   watch delivered, one version further: exactly one put since, and the read
//!   shows it — it is delivered from the read (for a watch without previous
//!   values), and the watch resumes just after the read;
//! - anything else (absent, which a create and a delete would also show; more
//!   than one change; no change delivered yet to compare with) keeps the
//!   revision owed, and etcd's history serves the watch.
//!
//! The reads are paced with the creations: the watches are read a chunk at a
//! time, and a chunk is created on the stream before the next one is read, so
//! a burst of writes while thousands of watches are created again leaves each
//! chunk's watches a short history to catch up on, not the whole burst. The
//! watches of a busy directory are settled the same way by pages of the
//! directory instead, and served by one watch of it (`group`); one read is out
//! at a time, pages first.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use coordkit::{Event, EventKind, KeyRange, KeyValue, Revision, WatchResponse};
use etcd_client as etcd;
use futures::StreamExt;

use super::{Hub, Outgoing, Watch};
use crate::endpoints::Endpoints;

/// Keys read per transaction (etcd's default `--max-txn-ops`).
const BATCH: usize = 128;
/// Reads in flight at once.
pub(super) const IN_FLIGHT: usize = 8;
/// Tries of one read.
pub(super) const TRIES: usize = 3;
/// Watches read, then created, at a time.
pub(super) const CHUNK: usize = BATCH * IN_FLIGHT;

/// A key's life and version as a watch last saw it: (create revision, version),
/// `(0, 0)` when it saw the key deleted.
pub(super) type Seen = (Revision, i64);

/// A watch of one key that may resume later than it would.
pub(super) struct Idle {
    pub(super) id: i64,
    pub(super) key: Vec<u8>,
    /// The revision it is owed next.
    next: Revision,
    /// The key as the watch last saw it, if it saw a change.
    last: Option<Seen>,
    pub(super) prev_kv: bool,
}

impl Idle {
    /// Watch `id` as one to bring forward, if it is of one key and owed a revision.
    pub(super) fn of(id: i64, w: &Watch) -> Option<Idle> {
        match &w.keys {
            KeyRange::Key(key) if w.next > 0 => Some(Idle {
                id,
                key: key.clone(),
                next: w.next,
                last: w.last,
                prev_kv: w.prev_kv,
            }),
            _ => None,
        }
    }
}

/// What a read settled for one watch: resume from `from`, after delivering
/// `missed` (the one put it had not seen), and the key as read.
pub(super) struct Settled {
    id: i64,
    from: Revision,
    missed: Option<KeyValue>,
    seen: Seen,
}

/// What a read out brought back.
pub(super) enum Brought {
    /// A chunk's: the ids of its watches, and what it settled (`None` when no
    /// read was answered).
    Chunk(Vec<i64>, Option<Vec<Settled>>),
    /// A page of group `gid`'s directory, from key `from` (`None` when it could
    /// not be read; see `group`).
    Page {
        gid: i64,
        from: Vec<u8>,
        page: Option<Page>,
    },
}

/// A read in flight, polled by the hub beside its stream.
pub(super) type Bringing = Pin<Box<dyn Future<Output = Brought> + Send>>;

/// What the read of `w`'s key at revision `at` settles (see the module's doc).
pub(super) fn settle(w: &Idle, kv: &etcd::KeyValue, at: Revision) -> Option<Settled> {
    if at < w.next {
        return None;
    }
    let seen = (kv.create_revision(), kv.version());
    let missed = if kv.mod_revision() < w.next {
        None
    } else if !w.prev_kv && w.last == Some((seen.0, seen.1 - 1)) && seen.0 > 0 {
        Some(crate::convert::kv(kv))
    } else {
        return None;
    };
    Some(Settled {
        id: w.id,
        from: at + 1,
        missed,
        seen,
    })
}

/// What reads of the keys of `idle` settle. A batch whose read fails or takes
/// longer than `bound` [`TRIES`] times settles nothing; `None` when every batch
/// failed.
async fn bring_forward(
    client: &etcd::Client,
    idle: Vec<Idle>,
    bound: Duration,
) -> Option<Vec<Settled>> {
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
            // A read only: tried again when slow (a just restarted etcd
            // answers late while it catches up).
            let mut resp = None;
            for _ in 0..TRIES {
                let read = etcd::Txn::new().and_then(reads.clone());
                if let Ok(Ok(r)) = tokio::time::timeout(bound, kv.txn(read)).await {
                    resp = Some(r);
                    break;
                }
            }
            let resp = resp?;
            let at = resp.header().map_or(0, |h| h.revision());
            batch
                .iter()
                .zip(resp.op_responses())
                .filter_map(|(w, op)| match op {
                    etcd::TxnOpResponse::Get(get) => {
                        get.kvs().first().and_then(|kv| settle(w, kv, at))
                    }
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

/// The read of one chunk on member `i`, as a future the hub polls beside its
/// stream.
fn read_chunk(
    endpoints: Arc<Endpoints>,
    i: usize,
    ids: Vec<i64>,
    idle: Vec<Idle>,
    bound: Duration,
) -> Bringing {
    Box::pin(async move {
        let Ok(client) = endpoints.client(i).await.cloned() else {
            return Brought::Chunk(ids, None);
        };
        let settled = bring_forward(&client, idle, bound).await;
        Brought::Chunk(ids, settled)
    })
}

impl Hub {
    /// The watches among `ids` that a read may bring forward: of one key,
    /// owed a revision, not stalled, not on the stream.
    fn idle(&self, ids: &[i64]) -> Vec<Idle> {
        ids.iter()
            .filter_map(|&id| {
                let w = self.watches.get(&id)?;
                let idle = !w.on_stream && !w.stalled.load(Ordering::Acquire) && w.group.is_none();
                idle.then(|| Idle::of(id, w)).flatten()
            })
            .collect()
    }

    /// Before the stream opens again: form the groups of watches of one
    /// directory (see `group`), read the first chunk of the other watches of
    /// one key now, and set the rest aside to be read, a chunk at a time,
    /// once the stream is up (see [`Hub::next_read`]).
    /// Whether etcd answered (or there was nothing to read).
    pub(super) async fn bring_idle_watches_forward(&mut self, bound: Duration) -> bool {
        // Afresh on each attempt: one that failed to open a stream may have
        // set watches aside, or formed groups.
        self.to_bring.clear();
        self.dissolve_groups();
        for w in self.watches.values_mut() {
            w.waiting_read = false;
        }
        let ids: Vec<i64> = self.watches.keys().copied().collect();
        let idle = self.idle(&ids);
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
        let mut idle = self.form_groups(&client, idle, bound).await;
        if idle.is_empty() {
            return true;
        }
        let later = idle.split_off(idle.len().min(CHUNK));
        let Some(settled) = bring_forward(&client, idle, bound).await else {
            // The next attempt goes to another member, if there is one.
            self.endpoints.set_aside(first, "it does not answer reads");
            return false;
        };
        self.settle(settled);
        for w in later {
            if let Some(watch) = self.watches.get_mut(&w.id) {
                watch.waiting_read = true;
                self.to_bring.push_back(w.id);
            }
        }
        true
    }

    /// The next read, when the stream is up, no read is out and every
    /// creation queued before has gone out: a group's next page first, else
    /// the next chunk of watches of one key.
    pub(super) fn next_read(&mut self) -> Option<Bringing> {
        let endpoint = self.stream.as_ref()?.endpoint;
        if self.bringing.is_some() || !self.outgoing.is_empty() {
            return None;
        }
        if let Some(page) = self.next_page(endpoint) {
            return Some(page);
        }
        if self.to_bring.is_empty() {
            return None;
        }
        let n = self.to_bring.len().min(CHUNK);
        let ids: Vec<i64> = self.to_bring.drain(..n).collect();
        let idle = self.idle(&ids);
        tracing::debug!(
            watches = ids.len(),
            left = self.to_bring.len(),
            "reading a chunk of watches"
        );
        let bound = self.liveness.bound();
        Some(read_chunk(
            self.endpoints.clone(),
            endpoint,
            ids,
            idle,
            bound,
        ))
    }

    /// A read came back.
    pub(super) fn brought(&mut self, brought: Brought) {
        match brought {
            Brought::Chunk(ids, settled) => self.chunk_read(ids, settled),
            Brought::Page { gid, from, page } => self.page_read(gid, from, page),
        }
    }

    /// A chunk's read came back: settle its watches, then queue their creation.
    fn chunk_read(&mut self, ids: Vec<i64>, settled: Option<Vec<Settled>>) {
        tracing::debug!(
            watches = ids.len(),
            settled = settled.as_ref().map(Vec::len),
            "a chunk of watches read; creating them"
        );
        self.settle(settled.unwrap_or_default());
        let has_stream = self.stream.is_some();
        for id in ids {
            let Some(w) = self.watches.get_mut(&id) else {
                continue;
            };
            if !std::mem::take(&mut w.waiting_read) || w.on_stream || !has_stream {
                continue;
            }
            if !w.stalled.load(Ordering::Acquire) {
                w.on_stream = true;
                self.outgoing.push_back(Outgoing::Create(id));
            }
        }
    }

    /// Move each settled watch forward, delivering the put it missed first.
    pub(super) fn settle(&mut self, settled: Vec<Settled>) {
        for s in settled {
            let Some(w) = self.watches.get_mut(&s.id) else {
                continue;
            };
            if w.on_stream || s.from <= w.next {
                continue;
            }
            if let Some(kv) = s.missed {
                let missed = WatchResponse {
                    revision: kv.mod_revision,
                    events: vec![Event {
                        kind: EventKind::Put,
                        kv,
                        prev_kv: None,
                    }],
                };
                // A consumer that is behind or gone keeps the revision owed:
                // etcd's history serves it, or its Close is on the way.
                if w.tx.try_send(Ok(missed)).is_err() {
                    continue;
                }
            }
            w.next = s.from;
            w.last = Some(s.seen);
            self.counters
                .brought_forward
                .fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A page of a directory, read at one revision (for a group, see `group`).
pub(super) struct Page {
    pub(super) at: Revision,
    pub(super) kvs: Vec<etcd::KeyValue>,
    /// Whether keys follow the last one.
    pub(super) more: bool,
    /// Keys from the page's first to the directory's end.
    pub(super) count: i64,
}
