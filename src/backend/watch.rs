//! Watches: ordered, resumable streams of changes.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::FutureExt;

use super::kv::{KeyRange, KeyValue, Revision};
use crate::error::Result;

/// What happened to a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// The key was written.
    Put,
    /// The key was deleted (explicitly, or because its lease ended).
    Delete,
}

/// One change to one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Put or delete.
    pub kind: EventKind,
    /// The key-value after a put; for a delete, the key with `mod_revision` set to the
    /// deleting revision and every other field zero or empty.
    pub kv: KeyValue,
    /// The key-value before the change, when the watch asked for it and it existed.
    pub prev_kv: Option<KeyValue>,
}

/// The changes of one revision that fall in a watch's range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchResponse {
    /// The revision of every event in this response.
    pub revision: Revision,
    /// The events, in the order the revision applied them. Never empty.
    pub events: Vec<Event>,
}

/// What to watch and from where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchRequest {
    /// The keys watched.
    pub keys: KeyRange,
    /// The first revision to deliver; `None` means changes after now.
    pub start_revision: Option<Revision>,
    /// Whether events carry the previous key-value.
    pub prev_kv: bool,
}

impl WatchRequest {
    /// Watch one key from now.
    pub fn key(key: impl Into<Vec<u8>>) -> Self {
        Self::new(KeyRange::Key(key.into()))
    }
    /// Watch every key under a prefix from now.
    pub fn prefix(prefix: impl Into<Vec<u8>>) -> Self {
        Self::new(KeyRange::Prefix(prefix.into()))
    }
    /// Watch a key range from now.
    pub fn new(keys: KeyRange) -> Self {
        WatchRequest {
            keys,
            start_revision: None,
            prev_kv: false,
        }
    }
    /// Deliver changes from this revision on (replaying history).
    pub fn from_revision(mut self, revision: Revision) -> Self {
        self.start_revision = Some(revision);
        self
    }
    /// Ask for previous key-values in events.
    pub fn with_prev_kv(mut self) -> Self {
        self.prev_kv = true;
        self
    }
}

/// A stream of watch responses.
///
/// # Behavior
/// - One item per revision that changed a watched key, in revision order, with no
///   duplicates and no gaps from the start revision.
/// - A broken connection is resumed by the backend from the last delivered revision + 1.
/// - When the start (or resume) revision has been compacted, the stream yields
///   [`crate::Error::Compacted`] once and ends.
/// - Dropping the stream cancels the watch.
pub type WatchStream = BoxStream<'static, Result<WatchResponse>>;

/// Where a watch starts, as [`Backend::watch_reporting_start`](crate::Backend::watch_reporting_start)
/// reports it.
#[derive(Debug)]
#[non_exhaustive]
pub struct WatchStart {
    /// Every change committed at a revision above this one is delivered (for a
    /// watch with a start revision `s`, `s - 1`).
    pub after: Revision,
    /// Whether those changes are delivered as they commit, or may be held back
    /// for a while (etcd serves a watch it registered behind its store's revision
    /// from a catch-up loop that runs every 100 ms).
    pub live: Live,
}

impl WatchStart {
    /// A watch delivering every change after `after`, not known to be live.
    pub fn after(after: Revision) -> Self {
        WatchStart {
            after,
            live: Live::known(false),
        }
    }

    /// The same, live as `live` says.
    pub fn with_live(mut self, live: Live) -> Self {
        self.live = live;
        self
    }
}

/// Whether a watch delivers each change as it commits: a future that resolves
/// to `true` once its backend knows so, `false` once it knows it cannot say (or
/// the watch may be catching up). It may resolve some time after the watch was
/// created, or never when the backend never learns; either way events are
/// delivered, only perhaps late. Polling it again after it resolved gives the
/// same answer.
pub struct Live(LiveState);

enum LiveState {
    Pending(BoxFuture<'static, bool>),
    Done(bool),
}

impl Live {
    /// Known at once.
    pub fn known(live: bool) -> Self {
        Live(LiveState::Done(live))
    }

    /// Learned when `answer` resolves.
    pub fn later(answer: impl Future<Output = bool> + Send + 'static) -> Self {
        Live(LiveState::Pending(answer.boxed()))
    }

    /// What is known without waiting.
    pub fn now(&mut self) -> Option<bool> {
        let waker = futures::task::noop_waker();
        match Pin::new(self).poll(&mut Context::from_waker(&waker)) {
            Poll::Ready(live) => Some(live),
            Poll::Pending => None,
        }
    }
}

impl Future for Live {
    type Output = bool;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<bool> {
        match &mut self.0 {
            LiveState::Done(live) => Poll::Ready(*live),
            LiveState::Pending(answer) => {
                let live = std::task::ready!(answer.poll_unpin(cx));
                self.0 = LiveState::Done(live);
                Poll::Ready(live)
            }
        }
    }
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            LiveState::Pending(_) => f.write_str("Live(pending)"),
            LiveState::Done(live) => write!(f, "Live({live})"),
        }
    }
}
