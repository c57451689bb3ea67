//! Watches: each catches up from the history log, then follows the handle's
//! feed; a watch that falls behind the feed (a slow reader) reads the log
//! again from its last delivered revision, so it never loses or repeats an
//! event.

use std::sync::Arc;
use std::time::Duration;

use coordkit::{
    Error, KeyRange, Live, Result, Revision, WatchRequest, WatchResponse, WatchStart, WatchStream,
};
use futures::StreamExt;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{mpsc, oneshot};

use crate::events::{responses, EVENT_COLUMNS};
use crate::feed::Feed;
use crate::sql::{key_condition, query, Params};
use crate::Inner;

/// How many responses a watch holds for a reader that has not taken them.
const BUFFERED: usize = 64;

/// The most revisions one catch-up read covers.
const REVISIONS_PER_CATCH_UP: i64 = 1024;

impl Inner {
    /// Open a watch; it starts after `WatchStart::after`.
    pub(crate) async fn watch(
        self: &Arc<Self>,
        request: WatchRequest,
    ) -> Result<(WatchStream, WatchStart)> {
        let feed = self
            .feed
            .get_or_try_init(|| async { Feed::start(self).await.map(Arc::new) })
            .await?
            .clone();
        let (revision, compacted) = self.meta().await?;
        let next = request.start_revision.unwrap_or(revision + 1);
        let (tx, rx) = mpsc::channel(BUFFERED);
        let (live_tx, live_rx) = oneshot::channel();
        if next < compacted {
            let _ = tx.try_send(Err(Error::Compacted {
                compact_revision: compacted,
            }));
        } else {
            let follow = Follow {
                inner: self.clone(),
                feed,
                keys: request.keys,
                prev_kv: request.prev_kv,
                next,
                tx,
                live: Some(live_tx),
            };
            tokio::spawn(follow.run());
        }
        let mut rx = rx;
        let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed();
        let start = WatchStart::after(next - 1)
            .with_live(Live::later(async move { live_rx.await.unwrap_or(false) }));
        Ok((stream, start))
    }
}

/// One watch's task.
struct Follow {
    inner: Arc<Inner>,
    feed: Arc<Feed>,
    keys: KeyRange,
    prev_kv: bool,
    /// The next revision to deliver.
    next: Revision,
    tx: mpsc::Sender<Result<WatchResponse>>,
    live: Option<oneshot::Sender<bool>>,
}

impl Follow {
    async fn run(mut self) {
        let mut batches = self.feed.batches.subscribe();
        let mut read_upto = *self.feed.position.borrow();
        loop {
            if self.next <= read_upto && !self.catch_up(read_upto).await {
                return;
            }
            if self.next <= read_upto {
                continue;
            }
            if let Some(live) = self.live.take() {
                let _ = live.send(true);
            }
            let batch = tokio::select! {
                batch = batches.recv() => batch,
                _ = self.tx.closed() => return,
            };
            match batch {
                Ok(batch) if batch.upto < self.next => {}
                // Not contiguous with what was delivered: read the log.
                Ok(batch) if batch.after >= self.next => read_upto = batch.upto,
                Ok(batch) => {
                    for response in &batch.responses {
                        if response.revision >= self.next && !self.deliver(response).await {
                            return;
                        }
                    }
                    self.next = batch.upto + 1;
                    read_upto = batch.upto;
                }
                Err(RecvError::Lagged(_)) => read_upto = *self.feed.position.borrow(),
                Err(RecvError::Closed) => return,
            }
        }
    }

    /// Deliver what `response` holds of this watch's keys; false once the
    /// reader is gone.
    async fn deliver(&self, response: &WatchResponse) -> bool {
        let events: Vec<_> = response
            .events
            .iter()
            .filter(|e| self.keys.contains(&e.kv.key))
            .map(|e| {
                let mut e = e.clone();
                if !self.prev_kv {
                    e.prev_kv = None;
                }
                e
            })
            .collect();
        if events.is_empty() {
            return true;
        }
        let response = WatchResponse {
            revision: response.revision,
            events,
        };
        self.tx.send(Ok(response)).await.is_ok()
    }

    /// Read the log from `next` up to `upto` (at most a chunk) and deliver it;
    /// false when the watch ended (its reader left, or its revision was
    /// purged: `Compacted` was delivered). A failed read is retried after a
    /// pause.
    async fn catch_up(&mut self, upto: Revision) -> bool {
        let upto = upto.min(self.next + REVISIONS_PER_CATCH_UP - 1);
        match self.read(upto).await {
            Ok(responses) => {
                for response in &responses {
                    if !self.deliver(response).await {
                        return false;
                    }
                }
                self.next = upto + 1;
                true
            }
            Err(e @ Error::Compacted { .. }) => {
                let _ = self.tx.send(Err(e)).await;
                false
            }
            Err(e) => {
                tracing::debug!(error = %e, "postgres watch: reading the log failed; retried");
                let pause = self
                    .inner
                    .config
                    .poll_interval
                    .min(Duration::from_millis(200));
                tokio::select! {
                    _ = tokio::time::sleep(pause) => true,
                    _ = self.tx.closed() => false,
                }
            }
        }
    }

    async fn read(&self, upto: Revision) -> Result<Vec<WatchResponse>> {
        let client = self.inner.client().await?;
        let mut params = Params::default();
        let cond = key_condition(&self.keys, "h.key", &mut params);
        let from = params.add(self.next);
        let to = params.add(upto);
        let sql = format!(
            "SELECT m.purged, m.compacted, {EVENT_COLUMNS} \
             FROM {meta} m LEFT JOIN {history} h \
               ON h.revision >= {from}::bigint AND h.revision <= {to}::bigint AND {cond} \
             ORDER BY h.revision, h.seq",
            meta = self.inner.tables.meta,
            history = self.inner.tables.history
        );
        let rows = query(&client, &sql, &params, "watch").await?;
        let (purged, compacted): (i64, i64) = (rows[0].get(0), rows[0].get(1));
        if self.next <= purged {
            return Err(Error::Compacted {
                compact_revision: compacted,
            });
        }
        Ok(responses(&rows, 2))
    }
}
