//! Following a key range: one watch, resumed where it stopped, and a reread that
//! turns a compaction into the difference to what was reported. The config
//! watcher and the registry's watch and cache are built on it; the owners of a
//! single key (a claim, a registration) use [`watch_owned_key`].

use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::StreamExt;

use crate::backend::{
    Backend, Event, EventKind, KeyRange, KeyValue, RangeRequest, Revision, WatchRequest,
    WatchStream,
};
use crate::error::{Error, Result};
use crate::retry::{Backoff, RetryPolicy};

mod known;
pub(crate) use known::RangeState;

/// One change of a key of the range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Change {
    /// Put or delete.
    pub(crate) kind: EventKind,
    /// The store key.
    pub(crate) key: Vec<u8>,
    /// The new value (a put), or the last value reported (a delete).
    pub(crate) value: Vec<u8>,
    /// The revision of the change (for a resync: the key's mod revision, or the
    /// reread's revision for a delete).
    pub(crate) version: Revision,
    /// The key's create revision (0 for a delete).
    pub(crate) create_revision: Revision,
    /// Whether it comes from a reread after a compaction.
    pub(crate) resync: bool,
}

/// Follows a key range from a starting snapshot.
pub(crate) struct Follower {
    backend: Arc<dyn Backend>,
    keys: KeyRange,
    /// Every key in the range with its last reported mod revision and value.
    known: RangeState,
    from: Revision,
    stream: Option<WatchStream>,
    pending: VecDeque<Change>,
    backoff: Backoff,
    /// A watch was opened once: opening another is a resume.
    watched: bool,
}

impl Follower {
    /// Read the range now. The current keys are the starting state: returned as
    /// puts (in key order), and later changes are relative to them.
    pub(crate) async fn start(
        backend: Arc<dyn Backend>,
        retry: RetryPolicy,
        keys: KeyRange,
    ) -> Result<(Self, Vec<Change>)> {
        let mut follower = Follower {
            backend,
            backoff: retry.backoff(),
            keys,
            known: RangeState::default(),
            from: 0,
            stream: None,
            pending: VecDeque::new(),
            watched: false,
        };
        follower.reread().await?;
        let snapshot = follower
            .pending
            .drain(..)
            .map(|c| Change { resync: false, ..c })
            .collect();
        follower.pending.shrink_to_fit();
        Ok((follower, snapshot))
    }

    /// Follow the range from just after revision `after`: its state then is read
    /// (nothing reported), then every change since is delivered in order. If
    /// the store no longer keeps revision `after`, `Compacted`: the caller's
    /// knowledge cannot be brought up to date change by change (read anew).
    pub(crate) async fn resume(
        backend: Arc<dyn Backend>,
        retry: RetryPolicy,
        keys: KeyRange,
        after: Revision,
    ) -> Result<Self> {
        let then = RangeRequest::new(keys.clone()).at_revision(after);
        let state = retry
            .run("read past state", |_| backend.range(then.clone()))
            .await?;
        let known = state
            .kvs
            .into_iter()
            .map(|kv| (kv.key, (kv.mod_revision, kv.value)))
            .collect();
        Ok(Follower {
            backend,
            backoff: retry.backoff(),
            keys,
            known,
            from: after + 1,
            stream: None,
            pending: VecDeque::new(),
            watched: false,
        })
    }

    /// Read the range now and queue the difference to what was reported.
    async fn reread(&mut self) -> Result<()> {
        if self.from > 0 {
            crate::telemetry::watch_resynced();
        }
        let request = RangeRequest::new(self.keys.clone());
        let backend = &self.backend;
        let now = self
            .backoff
            .policy()
            .run("reread", |_| backend.range(request.clone()))
            .await?;
        let mut current = RangeState::default();
        for kv in now.kvs {
            if self.known.get(&kv.key).map(|(rev, _)| *rev) != Some(kv.mod_revision) {
                self.pending.push_back(Change {
                    kind: EventKind::Put,
                    key: kv.key.clone(),
                    value: kv.value.clone(),
                    version: kv.mod_revision,
                    create_revision: kv.create_revision,
                    resync: true,
                });
            }
            current.insert(kv.key, (kv.mod_revision, kv.value));
        }
        let mut gone: Vec<_> = self
            .known
            .iter()
            .filter(|(k, _)| !current.contains_key(k))
            .map(|(k, (_, v))| (k.clone(), v.clone()))
            .collect();
        gone.sort();
        for (key, value) in gone {
            self.pending.push_back(Change {
                kind: EventKind::Delete,
                key,
                value,
                version: now.revision,
                create_revision: 0,
                resync: true,
            });
        }
        self.known = current;
        self.from = now.revision + 1;
        Ok(())
    }

    /// Open the watch from the next revision owed (a resume, if one was open
    /// before); after a compaction, read the range again instead. Boxed by
    /// `next`, as the rare paths below are.
    async fn open(&mut self) -> Result<()> {
        if self.watched {
            crate::telemetry::watch_resumed();
        }
        self.watched = true;
        let request = WatchRequest::new(self.keys.clone()).from_revision(self.from);
        match self.backend.watch(request).await {
            Ok(s) => self.stream = Some(s),
            Err(Error::Compacted { .. }) => self.reread_or_wait().await?,
            Err(e) => return Err(self.wait_after(e).await),
        }
        Ok(())
    }

    /// After a compaction: read the range again, or wait out the backoff and
    /// return the read's error. Boxed, as are [`Follower::wait_after`] and
    /// [`Follower::open`]: rare paths kept out of the future of `next`, which
    /// an idle watcher holds for as long as it waits.
    fn reread_or_wait(&mut self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async {
            let read = self.reread().await;
            if read.is_err() {
                self.backoff.wait().await;
            }
            read
        })
    }

    /// Wait out the backoff after `e`, then hand it back.
    fn wait_after(&mut self, e: Error) -> BoxFuture<'_, Error> {
        Box::pin(async move {
            self.backoff.wait().await;
            e
        })
    }

    /// The next change. Store errors are returned (after a backoff) and following
    /// goes on at the next call.
    pub(crate) async fn next(&mut self) -> Result<Change> {
        loop {
            if let Some(change) = self.pending.pop_front() {
                if self.pending.is_empty() {
                    // An idle follower holds no buffer.
                    self.pending.shrink_to_fit();
                }
                return Ok(change);
            }
            let Some(stream) = self.stream.as_mut() else {
                Box::pin(self.open()).await?;
                continue;
            };
            match stream.next().await {
                Some(Ok(resp)) => {
                    self.backoff.succeeded();
                    for event in resp.events {
                        let change = match event.kind {
                            EventKind::Put => {
                                self.known.insert(
                                    event.kv.key.clone(),
                                    (event.kv.mod_revision, event.kv.value.clone()),
                                );
                                Change {
                                    kind: EventKind::Put,
                                    key: event.kv.key,
                                    value: event.kv.value,
                                    version: event.kv.mod_revision,
                                    create_revision: event.kv.create_revision,
                                    resync: false,
                                }
                            }
                            EventKind::Delete => {
                                let last = self.known.remove(&event.kv.key).map(|(_, v)| v);
                                Change {
                                    kind: EventKind::Delete,
                                    key: event.kv.key,
                                    value: last.unwrap_or_default(),
                                    version: resp.revision,
                                    create_revision: 0,
                                    resync: false,
                                }
                            }
                        };
                        self.pending.push_back(change);
                    }
                    self.from = resp.revision + 1;
                }
                Some(Err(Error::Compacted { .. })) => {
                    self.stream = None;
                    self.reread_or_wait().await?;
                }
                Some(Err(e)) => {
                    self.stream = None;
                    return Err(self.wait_after(e).await);
                }
                None => self.stream = None,
            }
        }
    }
}

/// Wait until the keys of `keys` reach a state `done` accepts: the one way to
/// wait for keys (a barrier's key gone, a gate opened after a revision, a
/// double barrier's participants all gone). It follows the range — a read,
/// then every change in order, resumed after a broken watch and reread after
/// a compaction — and checks `done` after the read and after each change.
/// Failures the store may recover from are waited out with the policy's
/// backoff; others are returned. Cancelling it leaves nothing.
pub(crate) async fn until(
    backend: Arc<dyn Backend>,
    retry: RetryPolicy,
    keys: KeyRange,
    mut done: impl FnMut(&RangeState) -> bool,
) -> Result<()> {
    let (mut follower, _) = Follower::start(backend, retry, keys).await?;
    loop {
        if done(&follower.known) {
            return Ok(());
        }
        match follower.next().await {
            Ok(_) => {}
            Err(e) if e.is_retryable() || matches!(e, Error::Compacted { .. }) => {}
            Err(e) => return Err(e),
        }
    }
}

/// What the owner of a key learns of it.
pub(crate) enum Seen<'a> {
    /// A change, in order.
    Event(EventKind, &'a KeyValue),
    /// The key as it is now (`None`: absent), read after its history was compacted.
    Now(Option<&'a KeyValue>),
}

/// What the owners of the keys of a range learn of them.
pub(crate) enum Observed<'a> {
    /// The changes of one revision, in order.
    Changes(Revision, &'a [Event]),
    /// The range as it is at a revision (read after its history was compacted).
    Now(Revision, &'a [KeyValue]),
}

/// Follow the owned keys of `keys` from `from` until `seen` breaks: every
/// revision's changes in order, resumed after a broken watch. A compaction of
/// history still needed (reported by the watch call or as an item of its
/// stream) is reported by the range as it is now, then followed from there:
/// never re-watched from a revision that is gone. Other failures are retried
/// after a jittered wait; the caller bounds the whole by selecting on what
/// ends it (or aborting its task).
pub(crate) async fn follow_owned<T>(
    backend: &Arc<dyn Backend>,
    retry: &RetryPolicy,
    keys: KeyRange,
    mut from: Revision,
    mut seen: impl FnMut(Observed<'_>) -> ControlFlow<T>,
) -> T {
    loop {
        let request = WatchRequest::new(keys.clone()).from_revision(from);
        let compacted = match backend.watch(request).await {
            Ok(mut events) => loop {
                match events.next().await {
                    Some(Ok(resp)) => {
                        if let ControlFlow::Break(verdict) =
                            seen(Observed::Changes(resp.revision, &resp.events))
                        {
                            return verdict;
                        }
                        from = resp.revision + 1;
                    }
                    Some(Err(Error::Compacted { .. })) => break true,
                    Some(Err(_)) | None => break false,
                }
            },
            Err(Error::Compacted { .. }) => true,
            Err(_) => false,
        };
        if compacted {
            if let Ok(now) = backend.range(RangeRequest::new(keys.clone())).await {
                if let ControlFlow::Break(verdict) = seen(Observed::Now(now.revision, &now.kvs)) {
                    return verdict;
                }
                from = now.revision + 1;
                continue;
            }
        }
        retry.pause().await;
    }
}

/// Watch one key from `from` until `judge` returns a verdict: [`follow_owned`]
/// of one key.
pub(crate) async fn watch_owned_key<T>(
    backend: &Arc<dyn Backend>,
    retry: &RetryPolicy,
    key: &str,
    from: Revision,
    mut judge: impl FnMut(Seen<'_>) -> Option<T>,
) -> T {
    follow_owned(backend, retry, KeyRange::key(key), from, |observed| {
        let verdict = match observed {
            Observed::Changes(_, events) => events
                .iter()
                .find_map(|e| judge(Seen::Event(e.kind, &e.kv))),
            Observed::Now(_, kvs) => judge(Seen::Now(kvs.first())),
        };
        verdict.map_or(ControlFlow::Continue(()), ControlFlow::Break)
    })
    .await
}
