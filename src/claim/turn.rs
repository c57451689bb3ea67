//! The exclusive wait (locks, elections): until no key of the queue was created
//! before ours, watching only the one just before it, so a release wakes one
//! waiter.
//!
//! Each look at the queue re-checks, in the same transaction, that our own key
//! is still there with its create revision and lease; the wait ends with
//! `false` as soon as it is not. No key created before ours can appear later,
//! so "ours is there on our lease and none older is" at a look's state is
//! ownership from then on, for as long as our key stands (which the session's
//! deadline and the ownership watch cover, as after any read).
//!
//! The watch on the predecessor starts "from now". When the backend reports
//! that it starts no later than the read that named the predecessor (the
//! claim's own read, or a look), nothing can have been missed in between and
//! the waiter goes straight to waiting; else it looks at the queue again: a
//! delete before the watch shows in that look, a delete after it arrives as an
//! event at once (a watch from a past revision could lag in etcd's catch-up
//! loop for up to 100 ms).

use tokio::time::Instant;
use tracing::debug;

use super::look::{
    live_soon, next_delete, sleep_or_never, KeyWatch, Opened, Predecessor, Waiter, Woken,
};
use super::watch_pool::Drained;
use crate::backend::{Revision, Txn};
use crate::error::Result;

/// The predecessor a read named, with that read's revision and how many claims
/// were ahead (1 if unknown): when it is known, no look is needed to know it.
pub(super) struct Named {
    pub(super) predecessor: Predecessor,
    pub(super) read_at: Revision,
    pub(super) ahead: usize,
}

/// Wait for the turn, from what the claim's own read `named` (if it named the
/// predecessor). `Ok(false)` once our key is gone.
pub(super) async fn wait_for_turn(waiter: Waiter<'_>, named: Option<Named>) -> Result<bool> {
    Turn {
        look: waiter.look(Some(1)),
        began: Instant::now(),
        releases: named.as_ref().map(|n| n.ahead),
        waiter,
        named,
        watching: None,
    }
    .run()
    .await
}

/// The predecessor being watched, its watch, the claims ahead when the watch
/// began, and the glances it has had.
struct Watching {
    predecessor: Predecessor,
    watch: KeyWatch,
    ahead: usize,
    glanced: usize,
}

/// A wait for the turn.
struct Turn<'a> {
    waiter: Waiter<'a>,
    /// The look: our key, and the newest key before it.
    look: Txn,
    /// When the wait began and the releases ahead then, for the queue's pace.
    began: Instant,
    releases: Option<usize>,
    /// The predecessor as the last read or glance named it, if no look is due.
    named: Option<Named>,
    watching: Option<Watching>,
}

/// Whether the wait goes on.
enum Step {
    Again,
    /// Our key is gone.
    Gone,
}

impl Turn<'_> {
    async fn run(mut self) -> Result<bool> {
        loop {
            let named = match self.named.take() {
                Some(named) => named,
                None => {
                    let Some((before, read_at)) = self.waiter.read_before(&self.look).await? else {
                        return Ok(false);
                    };
                    let Some(previous) = before.into_iter().next() else {
                        self.owned();
                        return Ok(true);
                    };
                    Named {
                        predecessor: (previous.key, previous.create_revision),
                        read_at,
                        ahead: 1,
                    }
                }
            };
            let step = match self.watching.take() {
                Some(watching) if watching.predecessor == named.predecessor => {
                    self.wait_on(watching, named.read_at).await?
                }
                _ => self.watch(named).await?,
            };
            if let Step::Gone = step {
                return Ok(false);
            }
        }
    }

    /// The queue is ours: record its pace, and keep the watch for the next
    /// wait behind the same key.
    fn owned(&mut self) {
        if let Some(releases) = self.releases {
            self.waiter.record_pace(self.began, releases);
        }
        if let Some(watching) = self.watching.take() {
            self.waiter.park(watching.predecessor.0, watching.watch);
        }
    }

    /// Wait on the predecessor's watch for its delete (then look), or until a
    /// glance is due (see `glance_delay`; none while the watch is live).
    async fn wait_on(&mut self, mut w: Watching, read_at: Revision) -> Result<Step> {
        debug!(waiting_for = %String::from_utf8_lossy(&w.predecessor.0), "waiting");
        let early_look = match w.watch.live.now() {
            Some(true) => None,
            _ => self.waiter.glance_delay(w.ahead, w.glanced),
        };
        let (key, created) = (&w.predecessor.0, w.predecessor.1);
        tokio::select! {
            woken = next_delete(&mut w.watch.events, key, created) => match woken? {
                // Kept: the look that follows may own the queue and park it for
                // the next wait behind this key.
                Woken::Deleted => self.watching = Some(w),
                Woken::Failed => self.waiter.pause().await,
                Woken::Ended => {}
            },
            _ = sleep_or_never(early_look) => {
                if w.watch.live.now() == Some(true) {
                    // Known live since: wait on the watch alone.
                    self.name(&w, read_at);
                } else {
                    // While the predecessor stands the waiter cannot own the
                    // queue, so a glance at that key (and ours) says whether
                    // to look.
                    let glanced = self.waiter.glance(&[(key, created)]).await?;
                    let Some((stands, read_at)) = glanced else {
                        return Ok(Step::Gone);
                    };
                    if stands {
                        self.name(&w, read_at);
                    }
                    w.glanced += 1;
                }
                self.watching = Some(w);
            }
        }
        Ok(Step::Again)
    }

    /// Start watching the predecessor `named`: with a watch an earlier wait
    /// kept (what it buffered says whether the predecessor is gone already),
    /// or a new one, then wait on it straight away if nothing can have been
    /// missed since the read that named it.
    async fn watch(&mut self, named: Named) -> Result<Step> {
        let Named {
            predecessor,
            read_at,
            ahead,
        } = named;
        let (key, created) = (&predecessor.0, predecessor.1);
        // The read at which the predecessor is known to stand, the watch then
        // delivering its delete: no look is needed before waiting.
        let (watch, stands_at) = match self.waiter.open_watch(key, created, read_at).await? {
            Opened::Kept(mut watch, drained) => {
                let stands =
                    drained == Drained::Stands && (ahead > 1 || live_soon(&mut watch.live).await);
                (watch, stands.then_some(read_at))
            }
            Opened::New(mut watch, covered) => {
                // Everything up to `read_at` was read, everything after it is
                // delivered, unless the predecessor is the owner and the watch
                // is not known to be live: its delete is then due any moment,
                // and a delete that commits while etcd registers the watch
                // makes the watch lag (see `glance_delay`): a look right after
                // the watch exists sees it at once.
                let stands_at = if ahead <= 1 {
                    (covered && live_soon(&mut watch.live).await).then_some(read_at)
                } else if covered {
                    Some(read_at)
                } else {
                    // The watch may start after that read: a glance (one key,
                    // not the queue) after it says whether the predecessor
                    // still stands, and then its delete is still to come.
                    match self.waiter.glance(&[(key, created)]).await? {
                        None => return Ok(Step::Gone),
                        Some((stands, at)) => stands.then_some(at),
                    }
                };
                (watch, stands_at)
            }
            Opened::Refused => return Ok(Step::Again),
        };
        let watching = Watching {
            predecessor,
            watch,
            ahead,
            glanced: 0,
        };
        if let Some(read_at) = stands_at {
            self.name(&watching, read_at);
        }
        self.watching = Some(watching);
        Ok(Step::Again)
    }

    /// The watched predecessor stands as of `read_at`: wait on its watch next.
    fn name(&mut self, w: &Watching, read_at: Revision) {
        self.named = Some(Named {
            predecessor: w.predecessor.clone(),
            read_at,
            ahead: w.ahead,
        });
    }
}
