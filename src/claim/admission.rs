//! The shared wait (semaphore permits, readers, writers): until fewer blocking
//! keys are before the claim's own than it has room for (a semaphore's
//! permits, else 1). Each look re-checks the claim's own key in the same
//! transaction: the wait ends with `false` once it is gone.
//!
//! A waiter watches only the `room` blocking keys nearest before its own. While
//! all of them stand it has at least `room` blocking keys before it, so it
//! cannot be admitted, whatever happens to keys further ahead; when one of them
//! goes, it looks again and watches the next. A release therefore wakes at most
//! `room` waiters, and never the whole queue (a watch of the queue's prefix
//! would send every claim and release to every waiter). As in the exclusive
//! wait (`turn`), the watches start "from now" before the look that relies on
//! them (no look is needed when they start no later than the read that chose
//! them), and glances (see `glance_delay`) bound a late watch's stall.

use std::collections::HashMap;

use tokio::time::Instant;
use tracing::debug;

use super::look::{
    live_soon, next_delete, sleep_or_never, KeyWatch, Opened, Waiter, Woken, GLANCE_KEYS,
};
use super::watch_pool::Drained;
use super::Kind;
use crate::backend::{KeyValue, Revision, Txn};
use crate::error::Result;

/// A shared claim's read of the keys before it: newest first (all of them for
/// a reader, which skips readers to find the writers; else the `room`
/// nearest, as every key blocks), the revision read, and how many keys were
/// before it in all (more than read, for a semaphore).
pub(super) struct Earlier {
    pub(super) before: Vec<KeyValue>,
    pub(super) read_at: Revision,
    pub(super) keys_before: usize,
}

/// Wait until the claim of `kind` (queue `name`) is admitted, from the claim's
/// own read `earlier` (if any). `Ok(false)` once our key is gone.
pub(super) async fn wait_for_admission(
    waiter: Waiter<'_>,
    kind: Kind,
    name: &str,
    earlier: Option<Earlier>,
) -> Result<bool> {
    // A look that admits the claim has read every key before it, and compared
    // their permits with ours (`Kind::admits`).
    let limit = (kind != Kind::Read).then_some(kind.room() as u64);
    Admission {
        look: waiter.look(limit),
        waiter,
        kind,
        name,
        watched: HashMap::new(),
        glanced: 0,
        needed: 1,
        began: Instant::now(),
        first_needed: None,
    }
    .run(earlier)
    .await
}

/// A blocking key being watched: its create revision and its watch.
struct Watched {
    created: Revision,
    watch: KeyWatch,
}

/// A wait for admission.
struct Admission<'a> {
    waiter: Waiter<'a>,
    kind: Kind,
    name: &'a str,
    look: Txn,
    watched: HashMap<Vec<u8>, Watched>,
    /// Glances since the newest watch began.
    glanced: usize,
    /// Releases needed before the claim is admitted, when the newest watch began.
    needed: usize,
    /// When the wait began and the releases it needed first, for the pace.
    began: Instant,
    first_needed: Option<usize>,
}

/// Whether the wait goes on, and how.
enum Step {
    /// Look at the queue again.
    Look,
    /// Wait on the watches.
    Wait,
    /// Our key is gone.
    Gone,
}

impl Admission<'_> {
    async fn run(mut self, mut earlier: Option<Earlier>) -> Result<bool> {
        loop {
            let read = match earlier.take() {
                Some(earlier) => earlier,
                None => match self.waiter.read_before(&self.look).await? {
                    None => return Ok(false),
                    Some((before, read_at)) => Earlier {
                        keys_before: before.len(),
                        before,
                        read_at,
                    },
                },
            };
            let before: Vec<&KeyValue> = read.before.iter().collect();
            if self.kind.admits(self.name, &before)? {
                self.admitted();
                return Ok(true);
            }
            let nearest: Vec<(Vec<u8>, Revision)> = self
                .kind
                .blocking(&before)
                .take(self.kind.room())
                .map(|kv| (kv.key.clone(), kv.create_revision))
                .collect();
            self.park_all_but(&nearest);
            // (A key not read is a semaphore's, and blocks.)
            let blocking =
                self.kind.blocking(&before).count() + read.keys_before.saturating_sub(before.len());
            let step = self.watch_nearest(&nearest, blocking, read.read_at).await?;
            let step = match step {
                Step::Wait if !self.watched.is_empty() => self.wait().await?,
                other => other,
            };
            if let Step::Gone = step {
                return Ok(false);
            }
        }
    }

    /// Admitted: record the pace, and keep the watches for the next waits
    /// behind these keys.
    fn admitted(&mut self) {
        if let Some(releases) = self.first_needed {
            self.waiter.record_pace(self.began, releases);
        }
        for (key, watched) in self.watched.drain() {
            self.waiter.park(key, watched.watch);
        }
    }

    /// Keys that went (or fell back) no longer block: their watches are kept
    /// for the next waits behind them.
    fn park_all_but(&mut self, nearest: &[(Vec<u8>, Revision)]) {
        let gone: Vec<Vec<u8>> = self
            .watched
            .iter()
            .filter(|(k, w)| !nearest.contains(&((*k).clone(), w.created)))
            .map(|(k, _)| k.clone())
            .collect();
        for key in gone {
            if let Some(watched) = self.watched.remove(&key) {
                self.waiter.park(key, watched.watch);
            }
        }
    }

    /// Watch the `nearest` blocking keys not watched yet (`blocking` in all, as
    /// read at `read_at`), then say whether waiting on the watches is safe:
    /// every watch could be made, and none may have missed a delete since the
    /// read (else look again).
    async fn watch_nearest(
        &mut self,
        nearest: &[(Vec<u8>, Revision)],
        blocking: usize,
        read_at: Revision,
    ) -> Result<Step> {
        let missing: Vec<&(Vec<u8>, Revision)> = nearest
            .iter()
            .filter(|(k, _)| !self.watched.contains_key(k))
            .collect();
        if missing.is_empty() {
            return Ok(Step::Wait);
        }
        let opened = self.open(&missing, read_at).await?;
        self.glanced = 0;
        self.needed = (blocking + 1).saturating_sub(self.kind.room());
        self.first_needed.get_or_insert(self.needed);
        let Some(covered) = opened else {
            return Ok(Step::Look);
        };
        // If the next release admits the claim and a watch is not known to be
        // live, look (as in `turn`: a look right after the watches exist sees
        // a release that made them lag).
        if self.needed <= 1 {
            let mut all_live = covered;
            for watched in self.watched.values_mut() {
                all_live = all_live && live_soon(&mut watched.watch.live).await;
            }
            if !all_live {
                return Ok(Step::Look);
            }
        }
        // If these watches may start after the last read, a glance at the
        // watched keys after them says whether all still stand (then every
        // delete to come is delivered); else look again.
        if covered {
            return Ok(Step::Wait);
        }
        self.glance_or_look().await
    }

    /// Open a watch on each of `missing` (named by a read at `read_at`):
    /// whether all of them deliver everything after that read, or `None` when
    /// one could not be made or a kept one says its key is gone already.
    async fn open(
        &mut self,
        missing: &[&(Vec<u8>, Revision)],
        read_at: Revision,
    ) -> Result<Option<bool>> {
        let mut covered = true;
        for (key, created) in missing {
            let (watch, gone) = match self.waiter.open_watch(key, *created, read_at).await? {
                Opened::Kept(watch, drained) => (watch, drained == Drained::Gone),
                Opened::New(watch, delivers_all) => {
                    covered &= delivers_all;
                    (watch, false)
                }
                Opened::Refused => return Ok(None),
            };
            let created = *created;
            self.watched.insert(key.clone(), Watched { created, watch });
            if gone {
                return Ok(None);
            }
        }
        Ok(Some(covered))
    }

    /// A glance at the watched keys: wait while all still stand, else look (as
    /// a large `room` does, instead of glancing).
    async fn glance_or_look(&mut self) -> Result<Step> {
        if self.watched.len() > GLANCE_KEYS {
            return Ok(Step::Look);
        }
        let keys: Vec<(&Vec<u8>, Revision)> =
            self.watched.iter().map(|(k, w)| (k, w.created)).collect();
        Ok(match self.waiter.glance(&keys).await? {
            None => Step::Gone,
            Some((true, _)) => Step::Wait,
            Some((false, _)) => Step::Look,
        })
    }

    /// Wait on the watches until one of the keys is deleted (or its watch
    /// breaks: it is opened again after the next look), glancing while a watch
    /// may lag.
    async fn wait(&mut self) -> Result<Step> {
        debug!(watching = self.watched.len(), "waiting");
        loop {
            // Live watches deliver the deletes as they commit: no glances.
            let all_live = self.all_live();
            let glance = self
                .waiter
                .glance_delay(self.needed, self.glanced)
                .filter(|_| !all_live);
            let woken = {
                let woken = futures::future::select_all(self.watched.iter_mut().map(|(k, w)| {
                    let created = w.created;
                    Box::pin(async move {
                        let woken = next_delete(&mut w.watch.events, k, created).await?;
                        Ok::<_, crate::error::Error>(match woken {
                            Woken::Deleted => None,
                            Woken::Failed | Woken::Ended => Some(k.clone()),
                        })
                    })
                }));
                tokio::select! {
                    (woken, _, _) = woken => Some(woken?),
                    _ = sleep_or_never(glance) => None,
                }
            };
            match woken {
                // A delete of a watched key, or its watch broke: look again.
                Some(broken) => {
                    if let Some(broken) = broken {
                        self.watched.remove(&broken);
                        self.waiter.pause().await;
                    }
                    return Ok(Step::Look);
                }
                None if self.all_live() => {} // known live since: wait on the watches alone
                None => {
                    self.glanced += 1;
                    // While every watched key stands the claim cannot be
                    // admitted, and a glance at them says so without reading
                    // the queue.
                    match self.glance_or_look().await? {
                        Step::Wait => {}
                        other => return Ok(other),
                    }
                }
            }
        }
    }

    fn all_live(&mut self) -> bool {
        self.watched
            .values_mut()
            .all(|w| w.watch.live.now() == Some(true))
    }
}
