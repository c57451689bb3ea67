//! All watches of one backend over one gRPC watch stream, resumed after a break.
//!
//! A hub task owns the stream. Each watch gets a client-assigned id (etcd ≥ 3.4) and
//! remembers the next revision it is owed; when the stream breaks, the hub opens a
//! new one and re-creates every watch from that revision, so the caller sees no gap
//! and no duplicate, or `Compacted` if etcd compacted past that point meanwhile.
//!
//! A watch "from now" is created without a start revision (etcd's own "now", so the
//! watcher is synced at once and sees a change without etcd's 100 ms catch-up
//! loop for lagging watchers); its creation is confirmed to the caller with the
//! revision it starts after, which is where a resume would continue.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use coordkit::{Error, Event, EventKind, KeyRange, Result, Revision, WatchResponse};
use etcd_client as etcd;
use tokio::sync::{mpsc, oneshot};

use crate::convert::{self, Context};

pub(crate) enum Command {
    Open {
        id: i64,
        keys: KeyRange,
        prev_kv: bool,
        /// The first revision owed; `None`: from now, confirmed through `created`.
        start: Option<Revision>,
        created: Option<oneshot::Sender<Revision>>,
        tx: mpsc::UnboundedSender<Result<WatchResponse>>,
    },
    Close {
        id: i64,
    },
}

struct Watch {
    keys: KeyRange,
    prev_kv: bool,
    /// The next revision owed to the caller; 0 until a watch from now is created.
    next: Revision,
    created: Option<oneshot::Sender<Revision>>,
    tx: mpsc::UnboundedSender<Result<WatchResponse>>,
}

impl Watch {
    fn options(&self, id: i64) -> (Vec<u8>, etcd::WatchOptions) {
        let mut options = etcd::WatchOptions::new().with_watch_id(id);
        if self.next > 0 {
            options = options.with_start_revision(self.next);
        }
        if self.prev_kv {
            options = options.with_prev_key();
        }
        let (key, prefix) = convert::key_of(&self.keys);
        if prefix {
            options = options.with_prefix();
        }
        (key, options)
    }
}

/// Counts of the hub's work, for tests and benchmarks.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) streams_opened: std::sync::atomic::AtomicU64,
}

pub(crate) async fn run(
    client: etcd::Client,
    mut commands: mpsc::UnboundedReceiver<Command>,
    counters: std::sync::Arc<Counters>,
) {
    let mut watches: BTreeMap<i64, Watch> = BTreeMap::new();
    let mut stream: Option<(etcd::WatchRequestSender, etcd::WatchResponseStream)> = None;
    let mut backoff = Duration::from_millis(50);
    loop {
        if stream.is_none() && !watches.is_empty() {
            match open(&client, &watches).await {
                Ok(s) => {
                    counters
                        .streams_opened
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    stream = Some(s);
                    backoff = Duration::from_millis(50);
                }
                Err(e) => {
                    tracing::warn!(error = %e, ?backoff, "etcd watch stream: reconnect failed");
                    // Keep serving commands while waiting to retry.
                    let sleep = tokio::time::sleep(backoff);
                    tokio::pin!(sleep);
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    loop {
                        tokio::select! {
                            _ = &mut sleep => break,
                            cmd = commands.recv() => match cmd {
                                Some(cmd) => { apply(cmd, &mut watches, &mut None).await; }
                                None => return,
                            },
                        }
                        watches.retain(|_, w| !w.tx.is_closed());
                    }
                    continue;
                }
            }
        }
        let message = async {
            match &mut stream {
                Some((_, responses)) => responses.message().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            cmd = commands.recv() => match cmd {
                Some(cmd) => {
                    if !apply(cmd, &mut watches, &mut stream).await {
                        stream = None;
                    }
                }
                None => return,
            },
            msg = message => match msg {
                Ok(Some(resp)) => handle(resp, &mut watches, &mut stream).await,
                Ok(None) => {
                    tracing::info!("etcd watch stream ended; resuming every watch");
                    stream = None;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "etcd watch stream broke; resuming every watch");
                    stream = None;
                }
            },
        }
    }
}

/// Open a stream and create every watch on it from its next revision.
async fn open(
    client: &etcd::Client,
    watches: &BTreeMap<i64, Watch>,
) -> Result<(etcd::WatchRequestSender, etcd::WatchResponseStream)> {
    let mut ids = watches.keys();
    let first = *ids.next().expect("open is called with at least one watch");
    let (key, options) = watches[&first].options(first);
    let mut wc = client
        .watch_client()
        .max_decoding_message_size(64 * 1024 * 1024);
    let s = wc
        .watch(key, Some(options))
        .await
        .map_err(|e| convert::error(e, Context::default()))?;
    let (mut sender, responses) = s.split();
    for id in ids {
        let (key, options) = watches[id].options(*id);
        sender
            .watch(key, Some(options))
            .await
            .map_err(|e| convert::error(e, Context::default()))?;
    }
    Ok((sender, responses))
}

/// Apply a command; returns false if the stream turned out broken.
async fn apply(
    cmd: Command,
    watches: &mut BTreeMap<i64, Watch>,
    stream: &mut Option<(etcd::WatchRequestSender, etcd::WatchResponseStream)>,
) -> bool {
    match cmd {
        Command::Open {
            id,
            keys,
            prev_kv,
            start,
            created,
            tx,
        } => {
            let w = Watch {
                keys,
                prev_kv,
                next: start.unwrap_or(0),
                created,
                tx,
            };
            let (key, options) = w.options(id);
            watches.insert(id, w);
            if let Some((sender, _)) = stream {
                return sender.watch(key, Some(options)).await.is_ok();
            }
            true
        }
        Command::Close { id } => {
            if watches.remove(&id).is_some() {
                if let Some((sender, _)) = stream {
                    return sender.cancel(id).await.is_ok();
                }
            }
            true
        }
    }
}

async fn handle(
    resp: etcd::WatchResponse,
    watches: &mut BTreeMap<i64, Watch>,
    stream: &mut Option<(etcd::WatchRequestSender, etcd::WatchResponseStream)>,
) {
    let id = resp.watch_id();
    let Some(w) = watches.get_mut(&id) else {
        return;
    };
    if resp.created() && !resp.canceled() {
        if w.next == 0 {
            w.next = resp.header().map_or(0, |h| h.revision()) + 1;
        }
        if let Some(created) = w.created.take() {
            let _ = created.send(w.next);
        }
    }
    if resp.canceled() {
        let err = if resp.compact_revision() > 0 {
            Error::Compacted {
                compact_revision: resp.compact_revision(),
            }
        } else {
            Error::unavailable(format!("etcd canceled the watch: {}", resp.cancel_reason()))
        };
        let _ = w.tx.send(Err(err));
        watches.remove(&id);
        return;
    }
    // One response per revision: etcd may batch several revisions in one message.
    let mut by_revision: HashMap<Revision, Vec<Event>> = HashMap::new();
    let mut order = Vec::new();
    for e in resp.events() {
        let Some(kv) = e.kv() else { continue };
        let rev = kv.mod_revision();
        if rev < w.next {
            continue; // already delivered before a resume
        }
        let event = Event {
            kind: match e.event_type() {
                etcd::EventType::Put => EventKind::Put,
                etcd::EventType::Delete => EventKind::Delete,
            },
            kv: convert::kv(kv),
            prev_kv: e.prev_kv().map(convert::kv),
        };
        if !by_revision.contains_key(&rev) {
            order.push(rev);
        }
        by_revision.entry(rev).or_default().push(event);
    }
    for rev in order {
        let events = by_revision.remove(&rev).unwrap_or_default();
        if w.tx
            .send(Ok(WatchResponse {
                revision: rev,
                events,
            }))
            .is_err()
        {
            // The caller dropped the stream.
            watches.remove(&id);
            if let Some((sender, _)) = stream {
                let _ = sender.cancel(id).await;
            }
            return;
        }
        w.next = rev + 1;
    }
}
