//! The stream's life: opened on the first member that takes it (the watches'
//! creations queued behind the first), asked for its progress when quiet, left
//! when it breaks or stays silent, and opened again after a backoff.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use super::{Hub, Outgoing, Stream, BACKOFF_MAX, BACKOFF_MIN};
use crate::convert::{self, Context};

impl Hub {
    pub(super) fn check_liveness(&mut self, bound: Duration) {
        let now = Instant::now();
        let Some(s) = &mut self.stream else { return };
        match s.probed {
            Some(at) if now >= at + bound => {
                self.abandon("the watch stream was silent past its liveness bound");
            }
            Some(_) => {}
            None if now >= s.heard + bound / 2 => {
                s.probed = Some(now);
                self.outgoing.push_back(Outgoing::Progress(Vec::new()));
            }
            None => {}
        }
    }

    pub(super) fn abandon(&mut self, why: &str) {
        if let Some(s) = self.stream.take() {
            tracing::warn!(endpoint = %self.endpoints.url(s.endpoint), reason = why, "leaving the etcd watch stream; resuming every watch");
            self.endpoints.set_aside(s.endpoint, why);
        }
        self.outgoing.clear();
        self.unverified.clear();
        self.progress_out.clear();
        self.to_bring.clear();
        self.bringing = None;
        self.dissolve_groups();
        for w in self.watches.values_mut() {
            w.on_stream = false;
            w.cancels = 0;
            w.waiting_read = false;
            // Re-created from a revision, it may catch up first.
            w.tell_live(false);
        }
        self.retry_at = None;
    }

    /// Open a stream on the first endpoint that takes it within the liveness
    /// bound, and queue the creation of every watch not stalled on it. When none
    /// does, try again after a backoff with jitter.
    pub(super) async fn open(&mut self) {
        let bound = self.liveness.bound();
        if !self.bring_idle_watches_forward(bound).await {
            // etcd does not answer reads yet (no leader after a restart, say):
            // a stream opened now would replay history the read saves.
            self.retry_later("etcd does not answer reads yet");
            return;
        }
        // The first creation goes out with the stream: a watch of its own, or
        // else a group's.
        let alone = self.watches.iter().find(|(_, w)| {
            !w.stalled.load(Ordering::Acquire) && !w.waiting_read && w.group.is_none()
        });
        let groups = self.group_ids();
        let Some(first) = alone.map(|(&id, _)| id).or(groups.first().copied()) else {
            return;
        };
        let (key, options) = self.create_request(first);
        for i in self.endpoints.order() {
            let url = self.endpoints.url(i).to_string();
            let client = match self.endpoints.client(i).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(endpoint = %url, error = %e, "etcd watch stream: cannot connect");
                    self.endpoints.set_aside(i, "cannot connect");
                    continue;
                }
            };
            let mut wc = client
                .watch_client()
                .max_decoding_message_size(crate::request::MAX_ANSWER_BYTES);
            let opened =
                tokio::time::timeout(bound, wc.watch(key.clone(), Some(options.clone()))).await;
            match opened {
                Ok(Ok(s)) => {
                    let (sender, responses) = s.split();
                    self.counters.streams_opened.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(endpoint = %url, watches = self.watches.len(), "etcd watch stream opened");
                    let now = Instant::now();
                    self.stream = Some(Stream {
                        endpoint: i,
                        sender,
                        responses,
                        heard: now,
                        probed: None,
                    });
                    self.backoff = BACKOFF_MIN;
                    self.retry_at = None;
                    for (id, w) in self.watches.iter_mut() {
                        if w.stalled.load(Ordering::Acquire) || w.waiting_read || w.group.is_some()
                        {
                            continue;
                        }
                        w.on_stream = true;
                        if *id != first {
                            self.outgoing.push_back(Outgoing::Create(*id));
                        }
                    }
                    self.members_on_stream();
                    for gid in groups.into_iter().filter(|&gid| gid != first) {
                        self.outgoing.push_back(Outgoing::Create(gid));
                    }
                    // The first went out with the stream: a progress request
                    // follows it (after the other creations, if any).
                    if self.watches.get(&first).is_some_and(|w| w.live.is_some()) {
                        self.unverified.push(first);
                        if self.outgoing.is_empty() {
                            let ids = std::mem::take(&mut self.unverified);
                            self.outgoing.push_back(Outgoing::Progress(ids));
                        }
                    }
                    return;
                }
                Ok(Err(e)) => {
                    let err = convert::error(e, Context::at(&url));
                    tracing::debug!(endpoint = %url, error = %err, "etcd watch stream: cannot open");
                    self.endpoints.set_aside(i, "cannot open a watch stream");
                }
                Err(_) => self
                    .endpoints
                    .set_aside(i, "opening a watch stream timed out"),
            }
        }
        self.retry_later("no endpoint takes it");
    }

    /// Open the stream again after a backoff with jitter.
    fn retry_later(&mut self, why: &str) {
        let wait = self.backoff.mul_f64(1.0 - 0.5 * fastrand::f64());
        tracing::warn!(retry_in = ?wait, "etcd watch stream: {why}");
        self.retry_at = Some(Instant::now() + wait);
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }
}
