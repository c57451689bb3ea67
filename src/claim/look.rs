//! How a queued claim looks at its queue, one mechanism for every wait: the look
//! (its own key re-checked and the keys before it read, in one transaction), the
//! glance (only the keys it watches), when to glance, and the watches on keys
//! before it — taken from those kept by earlier waits or opened anew, waited on
//! for a delete, and kept again when the wait ends.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::time::Instant;

use super::pace::QueuePace;
use super::watch_pool::{deletes_after, Drained, WatchPool};
use crate::backend::{
    Backend, Compare, CompareOp, KeyRange, KeyValue, LeaseId, Live, RangeRequest, RangeResponse,
    ReadConsistency, Revision, SortOrder, Txn, TxnOpResponse, TxnResponse, WatchRequest,
    WatchStream,
};
use crate::error::{Error, Result};
use crate::retry::RetryPolicy;

/// A claim before a waiter's: its key and create revision.
pub(super) type Predecessor = (Vec<u8>, Revision);

/// A queued claim: its key `key` under `prefix` with create revision `token` on
/// `lease`, and what it waits with.
#[derive(Clone, Copy)]
pub(super) struct Waiter<'a> {
    pub(super) backend: &'a Arc<dyn Backend>,
    pub(super) retry: &'a RetryPolicy,
    pub(super) pace: &'a QueuePace,
    pub(super) watches: &'a WatchPool,
    pub(super) prefix: &'a str,
    pub(super) key: &'a str,
    pub(super) lease: LeaseId,
    pub(super) token: Revision,
}

/// A watch on a key before the waiter's: its events, whether it is live, and
/// the revision it delivers everything after (if known).
pub(super) struct KeyWatch {
    pub(super) events: WatchStream,
    pub(super) live: Live,
    pub(super) after: Option<Revision>,
}

/// A watch opened for a wait.
pub(super) enum Opened {
    /// Kept by an earlier wait: what it delivered meanwhile says whether the
    /// key still stands (never `Drained::Unusable`).
    Kept(KeyWatch, Drained),
    /// New; `covered`: it delivers everything after the read that named the key.
    New(KeyWatch, bool),
    /// The store refused it for now (the waiter has paused): look again.
    Refused,
}

/// How a wait on a key's watch ended.
pub(super) enum Woken {
    /// The key was deleted after the claim that created it.
    Deleted,
    /// The watch failed (compacted, or broken for now): look again.
    Failed,
    /// The watch's stream ended.
    Ended,
}

impl Waiter<'_> {
    /// Our key's create revision and lease compared, and the keys before ours
    /// read, newest first (at most `limit`), at a state including everything
    /// this backend has seen (`Observed`): the watches' creation, so a key the
    /// look finds is deleted after its watch started and its delete is
    /// delivered; and the event that woke the waiter, so the look sees that
    /// delete. On etcd such a look needs no round through the leader and does
    /// not wait for the writes in flight: it is the last step of a handoff.
    pub(super) fn look(&self, limit: Option<u64>) -> Txn {
        let mut before_ours = RangeRequest::prefix(self.prefix)
            .with_max_create_revision(self.token - 1)
            .sort_by_create_revision(SortOrder::Descend);
        if let Some(limit) = limit {
            before_ours = before_ours.with_limit(limit);
        }
        Txn::new()
            .when(self.own_key_stands())
            .and_then([before_ours])
            .with_consistency(ReadConsistency::Observed)
    }

    /// Send `look`: `None` once our key is gone, else the keys before ours it
    /// read (newest first) and the revision read.
    pub(super) async fn read_before(
        &self,
        look: &Txn,
    ) -> Result<Option<(Vec<KeyValue>, Revision)>> {
        let resp = self
            .retry
            .run("look at queue", |_| self.backend.txn(look.clone()))
            .await?;
        if !resp.succeeded {
            return Ok(None);
        }
        let revision = resp.revision;
        let kvs = resp
            .responses
            .into_iter()
            .find_map(|r| match r {
                TxnOpResponse::Range(r) => Some(r.kvs),
                _ => None,
            })
            .unwrap_or_default();
        Ok(Some((kvs, revision)))
    }

    /// Glance at `keys` (see [`glance`]): `None` once our key is gone, else
    /// whether each key stands with its create revision, and the revision read.
    pub(super) async fn glance(
        &self,
        keys: &[(&Vec<u8>, Revision)],
    ) -> Result<Option<(bool, Revision)>> {
        let txn = Txn::new()
            .when(self.own_key_stands())
            .and_then(keys.iter().map(|(k, _)| RangeRequest::key((*k).clone())))
            .with_consistency(ReadConsistency::Observed);
        let resp = self
            .retry
            .run("glance at queue", |_| self.backend.txn(txn.clone()))
            .await?;
        if !resp.succeeded {
            return Ok(None);
        }
        let all_stand = keys
            .iter()
            .enumerate()
            .all(|(i, (_, created))| stands(&resp, i, *created));
        Ok(Some((all_stand, resp.revision)))
    }

    /// Our key is there with its create revision, on our lease.
    fn own_key_stands(&self) -> [Compare; 2] {
        [
            Compare::create_revision(self.key, CompareOp::Equal, self.token),
            Compare::lease(self.key, CompareOp::Equal, Some(self.lease)),
        ]
    }

    /// When the next glance is due: see [`glance_delay`], at this queue's pace.
    pub(super) fn glance_delay(&self, ahead: usize, glanced: usize) -> Option<Duration> {
        glance_delay(ahead, glanced, self.pace.step(self.prefix))
    }

    /// Record a wait that began at `began` with `releases` to wait for.
    pub(super) fn record_pace(&self, began: Instant, releases: usize) {
        self.pace.record(self.prefix, began.elapsed(), releases);
    }

    /// A watch on `key` (the claim created at `created`, named by a read at
    /// `read_at`): one an earlier wait kept, if it delivers everything after
    /// its start (before `read_at`), else a new one "from now".
    pub(super) async fn open_watch(
        &self,
        key: &[u8],
        created: Revision,
        read_at: Revision,
    ) -> Result<Opened> {
        let keys = KeyRange::Key(key.to_vec());
        if let Some(mut parked) = self.watches.take(&keys, read_at) {
            let drained = parked.drain(key, created);
            if drained != Drained::Unusable {
                let watch = KeyWatch {
                    events: parked.events,
                    live: parked.live,
                    after: Some(parked.after),
                };
                return Ok(Opened::Kept(watch, drained));
            }
        }
        match self
            .backend
            .watch_reporting_start(WatchRequest::new(keys))
            .await
        {
            Ok((events, start)) => {
                let (covered, live, after) = match start {
                    Some(start) => (start.after <= read_at, start.live, Some(start.after)),
                    None => (false, Live::known(false), None),
                };
                Ok(Opened::New(
                    KeyWatch {
                        events,
                        live,
                        after,
                    },
                    covered,
                ))
            }
            Err(e) if e.is_retryable() => {
                self.pause().await;
                Ok(Opened::Refused)
            }
            Err(e) => Err(e),
        }
    }

    /// Keep `watch` on `key` for the next wait behind it (if its start is known).
    pub(super) fn park(&self, key: Vec<u8>, watch: KeyWatch) {
        if let Some(after) = watch.after {
            self.watches
                .park(KeyRange::Key(key), watch.events, after, watch.live);
        }
    }

    /// A pause before looking again after a watch failed.
    pub(super) async fn pause(&self) {
        self.retry.pause().await;
    }
}

/// Wait on `events` (a watch on `key`) for the delete of the claim created at
/// `created` (a delete before its creation ended an earlier claim of the same
/// key). A non-retryable failure is an error.
pub(super) async fn next_delete(
    events: &mut WatchStream,
    key: &[u8],
    created: Revision,
) -> Result<Woken> {
    while let Some(item) = events.next().await {
        match item {
            Ok(r) if deletes_after(&r, key, created) => return Ok(Woken::Deleted),
            Ok(_) => {}
            Err(e) if e.is_retryable() || matches!(e, Error::Compacted { .. }) => {
                return Ok(Woken::Failed)
            }
            Err(e) => return Err(e),
        }
    }
    Ok(Woken::Ended)
}

/// Sleep `after`, or for ever when `None`.
pub(super) async fn sleep_or_never(after: Option<Duration>) {
    match after {
        Some(after) => tokio::time::sleep(after).await,
        None => std::future::pending().await,
    }
}

/// Whether a new watch is known to be live, waiting at most [`LIVE_ANSWER`] for
/// its backend to say (etcd answers right after the watch's creation).
pub(super) async fn live_soon(live: &mut Live) -> bool {
    match live.now() {
        Some(known) => known,
        None => tokio::time::timeout(LIVE_ANSWER, live)
            .await
            .unwrap_or(false),
    }
}

/// How long a waiter next in line waits to learn that its new watch is live
/// before it looks at the queue instead.
const LIVE_ANSWER: Duration = Duration::from_millis(1);

/// Keys a glance reads at most; a waiter watching more looks at the queue instead.
pub(super) const GLANCE_KEYS: usize = 16;

/// The range results of a transaction, in order.
pub(super) fn range_responses(resp: &TxnResponse) -> Vec<&RangeResponse> {
    resp.responses
        .iter()
        .filter_map(|r| match r {
            TxnOpResponse::Range(r) => Some(r),
            _ => None,
        })
        .collect()
}

/// Whether the `i`th key a glance read is there with create revision `created`.
fn stands(resp: &TxnResponse, i: usize, created: Revision) -> bool {
    range_responses(resp)
        .get(i)
        .and_then(|r| r.kvs.first())
        .is_some_and(|kv| kv.create_revision == created)
}

/// How long a waiter waits before its next glance, with `ahead` releases to wait
/// for when its watch began, `glanced` glances since, and `step` the time one
/// release of this queue takes (as this process has seen, see [`QueuePace`]): the
/// first one release after those releases should be done, then after gaps of a
/// quarter of that (at least a release, and 2 ms) that double each time, while the
/// watch may still be catching up.
///
/// Why glance at all: etcd registers a watch "from now" as lagging when a write
/// commits while it creates it (it reads its revision first), and a lagging watch
/// is caught up only by etcd's loop that runs every 100 ms. A delete in that time
/// would reach the waiter late and idle the queue; a glance soon after the delete
/// was due finds it. Most waits end before the first glance, and a waiter far
/// back in a busy queue needs none (its watch has caught up before its turn).
fn glance_delay(ahead: usize, glanced: usize, step: Duration) -> Option<Duration> {
    let releases = u32::try_from(ahead.max(1)).unwrap_or(u32::MAX);
    let first = step.saturating_mul(releases.saturating_add(1));
    let gap = (first / 4).max(step).max(MIN_GLANCE_GAP);
    let glanced = u32::try_from(glanced).ok()?;
    // The glance's time since the watch began: first + gap·(2^glanced - 1).
    let at = first.checked_add(gap.checked_mul(2u32.checked_pow(glanced)? - 1)?)?;
    if at > CATCH_UP {
        return None;
    }
    Some(match glanced {
        0 => first,
        n => gap * 2u32.pow(n - 1),
    })
}

/// The shortest time between two glances of a waiter.
const MIN_GLANCE_GAP: Duration = Duration::from_millis(2);

/// How late etcd can deliver to a watch registered as lagging: its catch-up loop's
/// period.
const CATCH_UP: Duration = Duration::from_millis(100);

#[cfg(test)]
mod tests {
    use super::*;

    /// The glance times since a watch began, for `ahead` releases to wait for.
    fn glance_times(ahead: usize, step_ms: u64) -> Vec<u64> {
        let mut at = Duration::ZERO;
        (0..)
            .map_while(|n| glance_delay(ahead, n, Duration::from_millis(step_ms)))
            .map(|d| {
                at += d;
                at.as_millis() as u64
            })
            .collect()
    }

    #[test]
    fn glances_come_after_the_releases_ahead_and_stop_with_the_catch_up() {
        // A queue releasing every 2 ms, next in line: one release late, then
        // doubling gaps, none past 100 ms.
        assert_eq!(glance_times(1, 2), [4, 6, 10, 18, 34, 66]);
        // 15 releases ahead: the first after about their time, then closer gaps.
        assert_eq!(glance_times(15, 2), [32, 40, 56, 88]);
        // Far back in a busy queue: its watch catches up before its turn.
        assert!(glance_times(63, 2).is_empty());
        assert!(glance_times(usize::MAX, 2).is_empty());
        // A slower queue: later, at wider gaps.
        assert_eq!(glance_times(1, 10), [20, 30, 50, 90]);
        assert_eq!(glance_times(4, 10), [50, 62, 87]);
        assert!(glance_times(10, 10).is_empty());
        // Whatever the queue, never past etcd's catch-up and never many.
        for step in 1..=10 {
            for ahead in 0..200 {
                let times = glance_times(ahead, step);
                assert!(times.iter().all(|&t| t <= 100), "{ahead}: {times:?}");
                assert!(times.len() <= 6, "{ahead} at {step} ms: {times:?}");
            }
        }
    }
}
