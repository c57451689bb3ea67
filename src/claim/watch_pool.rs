//! Watches kept after a wait: the watch a waiter had on the claim before its own,
//! parked for the next wait of this coordinator that queues behind the same key.
//!
//! In a busy queue the order settles: a contender that releases and claims again
//! lines up behind the same contender as last time — the same key
//! (`<prefix><lease>`), with a new create revision. Creating a watch for each
//! wait, learning whether etcd registered it live and cancelling it costs etcd
//! and the client six messages per handoff, on a machine whose cores the handoff
//! itself needs. A parked watch goes on delivering every change of its key, in
//! order, after the revision it started after; the next waiter on that key takes
//! it, drains what arrived meanwhile (a delete after the claim it waits for means
//! that claim is gone) and waits on it.
//!
//! The same holds for a semaphore's or read-write lock's queue: a session that
//! claims again reuses its key (`<prefix><lease>-<n>`, the lowest number its
//! other claims of the name leave free; see `key_hold`).
//!
//! At most [`KEPT`] watches are parked per coordinator (the oldest is dropped,
//! cancelling it, to make room), each for about [`KEEP_FOR`]: a sweeper task,
//! running while anything is parked, drops the older ones every [`KEEP_FOR`],
//! so a coordinator that stops waiting keeps no watch (and buffers no event)
//! for long. Closing or dropping the coordinator drops them all; the sweeper
//! holds the pool weakly and ends with it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use tokio::time::Instant;

use crate::backend::{EventKind, KeyRange, Live, Revision, WatchStream};

/// Watches parked per coordinator at most.
pub(crate) const KEPT: usize = 8;
/// How long a watch stays parked at most.
pub(crate) const KEEP_FOR: Duration = Duration::from_secs(1);
/// A parked watch that buffered more responses than this is dropped rather than
/// drained: its key is busier than a queue's claim.
const DRAIN_AT_MOST: usize = 64;

/// A watch on one key that a finished wait left behind.
pub(crate) struct Parked {
    /// The watched keys.
    pub(crate) keys: KeyRange,
    /// Its events, from `after + 1` on, less what the waits before consumed.
    pub(crate) events: WatchStream,
    /// Every change committed above this revision is delivered.
    pub(crate) after: Revision,
    /// Whether etcd registered it live (see [`crate::WatchStart`]).
    pub(crate) live: Live,
    since: Instant,
}

/// What a parked watch delivered while nobody read it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Drained {
    /// Nothing says the claim created at the given revision is gone.
    Stands,
    /// The key was deleted after that claim was created.
    Gone,
    /// The watch ended, failed or had too much to drain: make a new one.
    Unusable,
}

impl Parked {
    /// Read what is buffered, without waiting: whether the claim `key` created
    /// at `created` has been deleted.
    pub(crate) fn drain(&mut self, key: &[u8], created: Revision) -> Drained {
        let mut gone = false;
        for _ in 0..DRAIN_AT_MOST {
            match self.events.next().now_or_never() {
                None => return if gone { Drained::Gone } else { Drained::Stands },
                Some(Some(Ok(r))) => {
                    gone |= deletes_after(&r, key, created);
                }
                Some(Some(Err(_))) | Some(None) => return Drained::Unusable,
            }
        }
        Drained::Unusable
    }
}

/// Whether `r` deletes `key` created at `created` (a delete at a later revision;
/// a delete before it ended an earlier claim of the same key).
pub(crate) fn deletes_after(
    r: &crate::backend::WatchResponse,
    key: &[u8],
    created: Revision,
) -> bool {
    r.revision > created
        && r.events
            .iter()
            .any(|e| e.kind == EventKind::Delete && e.kv.key == key)
}

/// The parked watches of one coordinator.
#[derive(Default)]
pub(crate) struct WatchPool {
    parked: Arc<Mutex<Parking>>,
}

#[derive(Default)]
struct Parking {
    watches: VecDeque<Parked>,
    /// Whether a sweeper task is running.
    sweeping: bool,
}

impl WatchPool {
    /// Park a watch on `keys` that delivers every change after `after`.
    /// Outside a tokio runtime (no sweeper can run) the watch is dropped.
    pub(crate) fn park(&self, keys: KeyRange, events: WatchStream, after: Revision, live: Live) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (dropped, start_sweeper) = {
            let mut parking = lock(&self.parked);
            let mut dropped = expire(&mut parking.watches);
            if parking.watches.len() >= KEPT {
                dropped.extend(parking.watches.pop_front());
            }
            parking.watches.push_back(Parked {
                keys,
                events,
                after,
                live,
                since: Instant::now(),
            });
            let start_sweeper = !parking.sweeping;
            parking.sweeping = true;
            (dropped, start_sweeper)
        };
        drop(dropped);
        if start_sweeper {
            // Outside the lock: a task its runtime drops at once clears the flag.
            rt.spawn(sweep(Sweeping(Some(Arc::downgrade(&self.parked)))));
        }
    }

    /// Take a parked watch on `keys` that delivers every change after `read_at`.
    pub(crate) fn take(&self, keys: &KeyRange, read_at: Revision) -> Option<Parked> {
        let (found, dropped) = {
            let mut parking = lock(&self.parked);
            let parked = &mut parking.watches;
            let dropped = expire(parked);
            let found = parked
                .iter()
                .position(|p| p.keys == *keys && p.after <= read_at)
                .and_then(|i| parked.remove(i));
            (found, dropped)
        };
        drop(dropped);
        found
    }

    /// Drop (cancel) every parked watch.
    pub(crate) fn clear(&self) {
        let dropped = std::mem::take(&mut lock(&self.parked).watches);
        drop(dropped);
    }

    /// How many watches are parked.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        lock(&self.parked).watches.len()
    }
}

fn lock(parked: &Mutex<Parking>) -> std::sync::MutexGuard<'_, Parking> {
    parked.lock().unwrap_or_else(|e| e.into_inner())
}

/// The running sweeper's hold on its pool. A sweeper dropped before it saw the
/// pool empty (its runtime shut down, perhaps before it ever ran) clears the
/// pool's `sweeping`, or no park would start another.
struct Sweeping(Option<Weak<Mutex<Parking>>>);

impl Drop for Sweeping {
    fn drop(&mut self) {
        if let Some(parked) = self.0.take().and_then(|p| p.upgrade()) {
            lock(&parked).sweeping = false;
        }
    }
}

/// Every [`KEEP_FOR`], drop the watches parked for longer; end once none is
/// parked (the next park starts another) or the pool is gone.
async fn sweep(mut sweeping: Sweeping) {
    let Some(parked) = sweeping.0.clone() else {
        return;
    };
    loop {
        tokio::time::sleep(KEEP_FOR).await;
        let Some(parked) = parked.upgrade() else {
            return;
        };
        let (dropped, empty) = {
            let mut parking = lock(&parked);
            let dropped = expire(&mut parking.watches);
            let empty = parking.watches.is_empty();
            if empty {
                parking.sweeping = false;
                sweeping.0 = None; // the next park starts another
            }
            (dropped, empty)
        };
        drop(dropped);
        if empty {
            return;
        }
    }
}

/// Remove the watches parked for [`KEEP_FOR`] or longer (to be dropped outside
/// the lock).
fn expire(parked: &mut VecDeque<Parked>) -> Vec<Parked> {
    let now = Instant::now();
    let mut dropped = Vec::new();
    while parked
        .front()
        .is_some_and(|p| now.duration_since(p.since) >= KEEP_FOR)
    {
        dropped.extend(parked.pop_front());
    }
    dropped
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Event, KeyValue, WatchResponse};

    fn response(revision: Revision, kind: EventKind) -> crate::error::Result<WatchResponse> {
        Ok(WatchResponse {
            revision,
            events: vec![Event {
                kind,
                kv: KeyValue {
                    key: b"k".to_vec(),
                    value: Vec::new(),
                    create_revision: 0,
                    mod_revision: revision,
                    version: 0,
                    lease: None,
                },
                prev_kv: None,
            }],
        })
    }

    fn parked(items: Vec<crate::error::Result<WatchResponse>>, pending: bool) -> Parked {
        let s = futures::stream::iter(items);
        let events: WatchStream = if pending {
            s.chain(futures::stream::pending()).boxed()
        } else {
            s.boxed()
        };
        Parked {
            keys: KeyRange::Key(b"k".to_vec()),
            events,
            after: 1,
            live: Live::known(true),
            since: Instant::now(),
        }
    }

    #[test]
    fn a_delete_before_the_claim_was_created_is_an_earlier_claims() {
        // Deleted at 5, created again at 7: the claim created at 7 stands.
        let mut p = parked(
            vec![response(5, EventKind::Delete), response(7, EventKind::Put)],
            true,
        );
        assert_eq!(p.drain(b"k", 7), Drained::Stands);
        // Deleted at 9: gone.
        let mut p = parked(
            vec![response(7, EventKind::Put), response(9, EventKind::Delete)],
            true,
        );
        assert_eq!(p.drain(b"k", 7), Drained::Gone);
        // A delete of another key in the watched range: not this claim's.
        let mut p = parked(vec![response(9, EventKind::Delete)], true);
        assert_eq!(p.drain(b"k-2", 7), Drained::Stands);
    }

    #[test]
    fn an_ended_failed_or_flooded_watch_is_not_reused() {
        assert_eq!(parked(vec![], false).drain(b"k", 3), Drained::Unusable);
        let failed = vec![Err(crate::error::Error::Compacted {
            compact_revision: 4,
        })];
        assert_eq!(parked(failed, true).drain(b"k", 3), Drained::Unusable);
        let flood = (0..DRAIN_AT_MOST as i64 + 1)
            .map(|r| response(10 + r, EventKind::Put))
            .collect();
        assert_eq!(parked(flood, true).drain(b"k", 3), Drained::Unusable);
    }

    fn key(k: &str) -> KeyRange {
        KeyRange::Key(k.as_bytes().to_vec())
    }

    #[tokio::test(start_paused = true)]
    async fn the_pool_keeps_few_watches_for_a_short_while() {
        let pool = WatchPool::default();
        for i in 0..KEPT + 2 {
            let p = parked(vec![], true);
            pool.park(key(&format!("k{i}")), p.events, 1, p.live);
        }
        assert_eq!(pool.len(), KEPT, "the oldest were dropped");
        assert!(pool.take(&key("k0"), 5).is_none());
        assert!(pool.take(&key("k2"), 0).is_none(), "starts after the read");
        let prefix = KeyRange::Prefix(b"k2".to_vec());
        assert!(pool.take(&prefix, 5).is_none(), "another range");
        assert!(pool.take(&key("k2"), 5).is_some());
        tokio::time::advance(KEEP_FOR + Duration::from_millis(1)).await;
        assert!(pool.take(&key("k3"), 5).is_none(), "parked too long");
        assert_eq!(pool.len(), 0);
    }

    #[test]
    fn a_sweeper_whose_runtime_ended_is_replaced() {
        let pool = WatchPool::default();
        let paused = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap()
        };
        // Parked on a runtime that ends before its sweeper's first round.
        paused().block_on(async {
            let p = parked(vec![], true);
            pool.park(key("k"), p.events, 1, p.live);
        });
        assert!(!lock(&pool.parked).sweeping, "the ended sweeper said so");
        paused().block_on(async {
            let p = parked(vec![], true);
            pool.park(key("j"), p.events, 1, p.live);
            tokio::time::sleep(KEEP_FOR * 3).await;
        });
        assert_eq!(pool.len(), 0, "a new sweeper dropped both");
    }

    #[tokio::test(start_paused = true)]
    async fn a_pool_nobody_uses_drops_its_watches_soon() {
        let pool = WatchPool::default();
        let p = parked(vec![], true);
        pool.park(key("k"), p.events, 1, p.live);
        tokio::time::sleep(KEEP_FOR / 2).await;
        let p = parked(vec![], true);
        pool.park(key("j"), p.events, 1, p.live);
        assert_eq!(pool.len(), 2);
        // The sweep after KEEP_FOR finds "j" too young; the next one drops it.
        tokio::time::sleep(KEEP_FOR + KEEP_FOR / 4).await;
        assert_eq!(pool.len(), 1, "the older one is gone");
        tokio::time::sleep(KEEP_FOR).await;
        assert_eq!(pool.len(), 0);
        assert!(!lock(&pool.parked).sweeping, "the sweeper ended");
        // Parking again starts another.
        let p = parked(vec![], true);
        pool.park(key("k"), p.events, 1, p.live);
        tokio::time::sleep(KEEP_FOR * 3).await;
        assert_eq!(pool.len(), 0);
    }
}
