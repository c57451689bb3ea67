//! The `Faults` switches of a planted client, with bugs 32–37 planted in them.

use std::sync::atomic::Ordering;

use coordkit::testing::Faults;
use coordkit::LeaseId;

use super::PlantedClient;

impl Faults for PlantedClient {
    fn fail_next(&self, n: u64) {
        // Bug 32: one call more fails.
        self.inner.fail_next(if self.is(32) { n + 1 } else { n });
    }
    fn lose_next_response(&self) {
        if self.is(33) {
            // Bug 33: the next write is lost before it applies (see writes.rs).
            self.lose_next.store(true, Ordering::SeqCst);
        } else {
            self.inner.lose_next_response();
        }
    }
    fn stall_keep_alives(&self) {
        self.stalled.store(true, Ordering::SeqCst);
        self.inner.stall_keep_alives();
    }
    fn resume_keep_alives(&self) {
        self.stalled.store(false, Ordering::SeqCst);
        self.inner.resume_keep_alives();
    }
    fn cut_watches(&self) {
        // Bug 36: a cut does nothing.
        if !self.is(36) {
            self.inner.cut_watches();
        }
    }
    fn partition(&self) {
        match self.bug {
            // Bug 35: calls go on working; only the watches break.
            35 => self.inner.cut_watches(),
            // Bug 37: calls fail; the watches stay connected.
            37 => self.partitioned.store(true, Ordering::SeqCst),
            _ => self.inner.partition(),
        }
    }
    fn heal(&self) {
        self.partitioned.store(false, Ordering::SeqCst);
        self.inner.heal();
    }
    fn expire_lease(&self, id: LeaseId) {
        self.expire(id);
    }
    fn lag_new_watches(&self, lag: Option<std::time::Duration>) {
        self.inner.lag_new_watches(lag);
    }
    fn watch_resumes(&self) -> u64 {
        self.inner.watch_resumes()
    }
}
