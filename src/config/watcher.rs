//! Watches of config keys that never miss a change.

use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::stream::{self, BoxStream};
use futures::{Stream, StreamExt};
use serde::de::DeserializeOwned;

use super::{Codecs, ConfigCenter, Version};
use crate::backend::{EventKind, KeyRange};
use crate::error::Result;
use crate::follow::Follower;

/// What happened to a config key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConfigEventKind {
    /// Written (created or updated).
    Put,
    /// Deleted.
    Delete,
}

/// One change of a config key, as a [`Watcher`] delivers it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConfigEvent<T> {
    /// Put or delete.
    pub kind: ConfigEventKind,
    /// The key, relative to the config root.
    pub key: String,
    /// The new value (`None` for a delete).
    pub value: Option<T>,
    /// The version of the change (the revision of the write or delete).
    pub version: Version,
    /// Whether this event comes from a reread after the watch's history was
    /// compacted away: the key's current state, with the steps in between unknown.
    pub resync: bool,
}

/// A stream of [`ConfigEvent`]s for a key or a prefix, from when it was created.
///
/// # Behavior
/// - Every change arrives once, in revision order; a watch that breaks (store
///   restarted, network cut) resumes from the last delivered revision + 1.
/// - If the store compacted past that point, the watcher rereads the keys and
///   delivers the difference to what it last reported — a `Put` per changed or new
///   key, a `Delete` per vanished key — each marked `resync: true`. Nothing is
///   skipped silently.
/// - A value that does not decode as `T` arrives as an `Err(Codec { key, .. })`
///   item, and the stream goes on. So do store errors while it reconnects.
/// - [`Watcher::close`] ends the stream.
#[must_use = "a watcher delivers nothing unless polled"]
pub struct Watcher<T> {
    events: Option<BoxStream<'static, Result<RawEvent>>>,
    codecs: Codecs,
    _value: PhantomData<fn() -> T>,
}

struct RawEvent {
    kind: ConfigEventKind,
    key: String,
    value: Option<Vec<u8>>,
    version: Version,
    resync: bool,
}

impl<T: DeserializeOwned> Watcher<T> {
    pub(crate) async fn start(center: ConfigCenter, keys: KeyRange) -> Result<Self> {
        let (follower, _starting_state) =
            Follower::start(center.backend().clone(), center.retry().clone(), keys).await?;
        Ok(Self::following(follower, center))
    }

    /// Deliver the changes after version `after` (see [`ConfigCenter::watch_from`]).
    pub(crate) async fn resume(
        center: ConfigCenter,
        keys: KeyRange,
        after: Version,
    ) -> Result<Self> {
        let follower = Follower::resume(
            center.backend().clone(),
            center.retry().clone(),
            keys,
            after,
        )
        .await?;
        Ok(Self::following(follower, center))
    }

    fn following(follower: Follower, center: ConfigCenter) -> Self {
        let codecs = center.codecs().clone();
        // Only the root's length: every key followed is under it, and the
        // state below is held by every idle watcher.
        let root = center.root().len();
        let events = stream::unfold((follower, root), |(mut f, root)| async move {
            let item = f.next().await.map(|c| RawEvent {
                kind: match c.kind {
                    EventKind::Put => ConfigEventKind::Put,
                    EventKind::Delete => ConfigEventKind::Delete,
                },
                key: String::from_utf8_lossy(c.key.get(root..).unwrap_or(&c.key)).into_owned(),
                value: (c.kind == EventKind::Put).then_some(c.value),
                version: c.version,
                resync: c.resync,
            });
            Some((item, (f, root)))
        })
        .boxed();
        Watcher {
            events: Some(events),
            codecs,
            _value: PhantomData,
        }
    }

    /// Stop watching; the stream ends.
    pub fn close(&mut self) {
        self.events = None;
    }
}

impl<T: DeserializeOwned> Stream for Watcher<T> {
    type Item = Result<ConfigEvent<T>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let codecs = &this.codecs;
        let Some(events) = this.events.as_mut() else {
            return Poll::Ready(None);
        };
        events.poll_next_unpin(cx).map(|item| {
            item.map(|raw| {
                let raw = raw?;
                let value = match raw.value {
                    Some(bytes) => Some(codecs.decode(&raw.key, &bytes)?),
                    None => None,
                };
                Ok(ConfigEvent {
                    kind: raw.kind,
                    key: raw.key,
                    value,
                    version: raw.version,
                    resync: raw.resync,
                })
            })
        })
    }
}

impl<T> std::fmt::Debug for Watcher<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher")
            .field("open", &self.events.is_some())
            .finish()
    }
}
