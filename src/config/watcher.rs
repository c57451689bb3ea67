//! Watches of config keys that never miss a change.

use std::collections::{HashMap, VecDeque};
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::stream::{self, BoxStream};
use futures::{Stream, StreamExt};
use serde::de::DeserializeOwned;

use super::{decode, ConfigCenter, Version};
use crate::{
    Error, EventKind, KeyRange, RangeRequest, Result, Revision, WatchRequest, WatchStream,
};

/// What happened to a config key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConfigEventKind {
    /// Written (created or updated).
    Put,
    /// Deleted.
    Delete,
}

/// One change of a config key, as a [`Watcher`] delivers it.
#[derive(Clone, Debug, PartialEq, Eq)]
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
pub struct Watcher<T> {
    events: Option<BoxStream<'static, Result<RawEvent>>>,
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
        let mut follower = Follower {
            center,
            keys,
            known: HashMap::new(),
            from: 0,
            stream: None,
            pending: VecDeque::new(),
            failures: 0,
        };
        follower.reread().await?;
        follower.pending.clear(); // The starting state is not a change.
        let events = stream::unfold(follower, |mut f| async move {
            let item = f.next().await;
            Some((item, f))
        })
        .boxed();
        Ok(Watcher {
            events: Some(events),
            _value: PhantomData,
        })
    }

    /// Stop watching; the stream ends.
    pub fn close(&mut self) {
        self.events = None;
    }
}

impl<T: DeserializeOwned> Stream for Watcher<T> {
    type Item = Result<ConfigEvent<T>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let Some(events) = self.events.as_mut() else {
            return Poll::Ready(None);
        };
        events.poll_next_unpin(cx).map(|item| {
            item.map(|raw| {
                let raw = raw?;
                let value = match raw.value {
                    Some(bytes) => Some(decode(&raw.key, &bytes)?),
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

/// Follows a key range: one watch, resumed from where it stopped, and a reread
/// after a compaction.
struct Follower {
    center: ConfigCenter,
    keys: KeyRange,
    /// Every key in the range, with the version last reported.
    known: HashMap<Vec<u8>, Revision>,
    /// The revision the watch continues from.
    from: Revision,
    stream: Option<WatchStream>,
    pending: VecDeque<RawEvent>,
    failures: u32,
}

impl Follower {
    fn relative(&self, key: &[u8]) -> String {
        self.center
            .relative(&String::from_utf8_lossy(key))
            .to_string()
    }

    async fn backoff(&mut self) {
        self.failures += 1;
        tokio::time::sleep(self.center.retry().delay(self.failures)).await;
    }

    /// Read the range now and queue the difference to what was reported.
    async fn reread(&mut self) -> Result<()> {
        let backend = self.center.backend().clone();
        let request = RangeRequest::new(self.keys.clone());
        let now = self
            .center
            .retry()
            .run("config reread", |_| backend.range(request.clone()))
            .await?;
        let mut current = HashMap::new();
        for kv in now.kvs {
            if self.known.get(&kv.key) != Some(&kv.mod_revision) {
                self.pending.push_back(RawEvent {
                    kind: ConfigEventKind::Put,
                    key: self.relative(&kv.key),
                    value: Some(kv.value),
                    version: kv.mod_revision,
                    resync: true,
                });
            }
            current.insert(kv.key, kv.mod_revision);
        }
        let mut gone: Vec<_> = self
            .known
            .keys()
            .filter(|k| !current.contains_key(*k))
            .cloned()
            .collect();
        gone.sort();
        for key in gone {
            self.pending.push_back(RawEvent {
                kind: ConfigEventKind::Delete,
                key: self.relative(&key),
                value: None,
                version: now.revision,
                resync: true,
            });
        }
        self.known = current;
        self.from = now.revision + 1;
        Ok(())
    }

    async fn next(&mut self) -> Result<RawEvent> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(event);
            }
            let Some(stream) = self.stream.as_mut() else {
                let request = WatchRequest::new(self.keys.clone()).from_revision(self.from);
                match self.center.backend().watch(request).await {
                    Ok(s) => self.stream = Some(s),
                    Err(Error::Compacted { .. }) => {
                        if let Err(e) = self.reread().await {
                            self.backoff().await;
                            return Err(e);
                        }
                    }
                    Err(e) => {
                        self.backoff().await;
                        return Err(e);
                    }
                }
                continue;
            };
            match stream.next().await {
                Some(Ok(resp)) => {
                    self.failures = 0;
                    for event in resp.events {
                        let key = self.relative(&event.kv.key);
                        let raw = match event.kind {
                            EventKind::Put => {
                                self.known
                                    .insert(event.kv.key.clone(), event.kv.mod_revision);
                                RawEvent {
                                    kind: ConfigEventKind::Put,
                                    key,
                                    value: Some(event.kv.value),
                                    version: event.kv.mod_revision,
                                    resync: false,
                                }
                            }
                            EventKind::Delete => {
                                self.known.remove(&event.kv.key);
                                RawEvent {
                                    kind: ConfigEventKind::Delete,
                                    key,
                                    value: None,
                                    version: resp.revision,
                                    resync: false,
                                }
                            }
                        };
                        self.pending.push_back(raw);
                    }
                    self.from = resp.revision + 1;
                }
                Some(Err(Error::Compacted { .. })) => {
                    self.stream = None;
                    if let Err(e) = self.reread().await {
                        self.backoff().await;
                        return Err(e);
                    }
                }
                Some(Err(e)) => {
                    self.stream = None;
                    self.backoff().await;
                    return Err(e);
                }
                None => self.stream = None,
            }
        }
    }
}
