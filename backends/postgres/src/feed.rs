//! One watch feed per backend handle: it reads every new revision from the
//! history log once and fans it out to the handle's watches.
//!
//! LISTEN/NOTIFY only wakes it: each write transaction notifies at commit,
//! and the feed then reads the log from the last revision it read. A lost or
//! folded notification loses nothing (the next read covers it), a safety poll
//! every poll interval covers a listening connection that died silently, and
//! after a lost connection the feed listens again and reads what it missed.

use std::sync::{Arc, Weak};
use std::time::Duration;

use coordkit::{Result, Revision, WatchResponse};
use futures::StreamExt;
use tokio::sync::{broadcast, watch, Notify};
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, NoTls};

use crate::error::from_pg;
use crate::events::{responses, EVENT_COLUMNS};
use crate::sql::{query, Params};
use crate::Inner;

/// The most revisions one read of the log covers.
const REVISIONS_PER_READ: i64 = 256;

/// The revisions `(after, upto]` of the log, as read by the feed: every
/// response in it (all keys).
#[derive(Debug)]
pub(crate) struct Batch {
    pub(crate) after: Revision,
    pub(crate) upto: Revision,
    pub(crate) responses: Vec<WatchResponse>,
}

/// A running feed.
#[derive(Debug)]
pub(crate) struct Feed {
    /// Every revision up to this one has been read and sent.
    pub(crate) position: watch::Receiver<Revision>,
    /// The batches, as they are read.
    pub(crate) batches: broadcast::Sender<Arc<Batch>>,
    task: JoinHandle<()>,
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Feed {
    /// Start a feed from the store's current revision.
    pub(crate) async fn start(inner: &Arc<Inner>) -> Result<Feed> {
        let (revision, _) = inner.meta().await?;
        let (position_tx, position) = watch::channel(revision);
        let (batches, _) = broadcast::channel(256);
        let task = tokio::spawn(run(
            Arc::downgrade(inner),
            revision,
            position_tx,
            batches.clone(),
        ));
        Ok(Feed {
            position,
            batches,
            task,
        })
    }
}

/// A LISTEN connection: its driver wakes the feed on each notification, and
/// once more when the connection ends.
struct Listener {
    _client: tokio_postgres::Client,
    driver: JoinHandle<()>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

async fn listen(inner: &Inner, wake: Arc<Notify>) -> Result<Listener> {
    let mut config = inner.pg_config.clone();
    // Named, so an operator (or a test) can tell the listening connection apart.
    config.application_name(format!("coordkit-feed {}", inner.config.schema));
    let (client, mut connection) = config
        .connect(NoTls)
        .await
        .map_err(|e| from_pg(e, "listen"))?;
    let driver = tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(_)) => wake.notify_one(),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        wake.notify_one();
    });
    let listener = Listener {
        _client: client,
        driver,
    };
    listener
        ._client
        .batch_execute(&format!("LISTEN \"{}\"", inner.tables.channel))
        .await
        .map_err(|e| from_pg(e, "listen"))?;
    Ok(listener)
}

async fn run(
    inner: Weak<Inner>,
    mut position: Revision,
    position_tx: watch::Sender<Revision>,
    batches: broadcast::Sender<Arc<Batch>>,
) {
    let wake = Arc::new(Notify::new());
    let mut listener: Option<Listener> = None;
    let mut failures = 0u32;
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let poll = strong.config.poll_interval;
        if strong.config.listen && listener.as_ref().is_none_or(|l| l.driver.is_finished()) {
            listener = listen(&strong, wake.clone()).await.ok();
        }
        let more = match read_after(&strong, position).await {
            Ok(read) => {
                failures = 0;
                let more = read.upto < read.store_revision;
                if read.batch.upto > position {
                    position = read.batch.upto;
                    let _ = batches.send(Arc::new(read.batch));
                    position_tx.send_replace(position);
                }
                more
            }
            Err(e) => {
                failures += 1;
                tracing::debug!(error = %e, "postgres watch feed: reading the log failed; retried");
                false
            }
        };
        drop(strong);
        if more {
            continue;
        }
        let pause = if failures > 0 {
            Duration::from_millis(50 << failures.min(5)).min(poll)
        } else {
            poll
        };
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

struct Read {
    batch: Batch,
    upto: Revision,
    store_revision: Revision,
}

/// The log after `position`, up to [`REVISIONS_PER_READ`] revisions. What a
/// purge deleted is not in it: the batch then starts after the purge.
///
/// The rows are read by revision bounds alone (an index range), and the
/// store's revision from the same snapshot: write transactions commit in
/// revision order, so the rows a snapshot sees are every revision up to the
/// store's, none beyond.
async fn read_after(inner: &Inner, position: Revision) -> Result<Read> {
    let client = inner.client().await?;
    let mut params = Params::default();
    let from = params.add(position);
    let to = params.add(position + REVISIONS_PER_READ);
    let sql = format!(
        "SELECT m.revision, m.purged, {EVENT_COLUMNS} \
         FROM (SELECT revision, purged FROM {meta}) m LEFT JOIN \
              (SELECT * FROM {history} WHERE revision > {from}::bigint \
                 AND revision <= {to}::bigint) h ON true \
         ORDER BY h.revision, h.seq",
        meta = inner.tables.meta,
        history = inner.tables.history
    );
    let rows = query(&client, &sql, &params, "watch feed").await?;
    let (store_revision, purged): (i64, i64) = (rows[0].get(0), rows[0].get(1));
    let upto = store_revision
        .min(position + REVISIONS_PER_READ)
        .max(position);
    let after = position.max(purged.min(upto));
    let mut responses = responses(&rows, 2);
    responses.retain(|r| r.revision > after);
    Ok(Read {
        batch: Batch {
            after,
            upto,
            responses,
        },
        upto,
        store_revision,
    })
}
