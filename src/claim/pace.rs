//! How fast the queues this process waits in move: the time per release, learned
//! from the waits of its own claims.
//!
//! A waiter glances at its queue when the releases ahead of it should be done (see
//! `claim::glance_delay`). A fixed time per release is wrong both ways: on a fast
//! queue the glance comes late after a stalled watch, on a slow one (a busy host,
//! long holds) every waiter glances just before its turn, for nothing. Each queue
//! name falls in one of a few slots (names that share a slot share a pace); a slot
//! holds a moving average of "wait ÷ releases waited for", bounded to a range
//! where glances still matter (past [`MAX_STEP`] most waiters are glancing
//! at the end of their 100 ms anyway).

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The time per release before a slot has learned anything.
pub(crate) const DEFAULT_STEP: Duration = Duration::from_millis(2);
/// The shortest time per release a slot assumes.
pub(crate) const MIN_STEP: Duration = Duration::from_millis(1);
/// The longest time per release a slot assumes.
pub(crate) const MAX_STEP: Duration = Duration::from_millis(10);

/// Slots: a few names busy at once in a process each get their own.
const SLOTS: usize = 32;

/// The time per release of the queues this process waits in, per slot of names.
pub(crate) struct QueuePace {
    /// Microseconds per release, 0 before the first wait.
    slots: [AtomicU64; SLOTS],
}

impl Default for QueuePace {
    fn default() -> Self {
        QueuePace {
            slots: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl QueuePace {
    fn slot(&self, prefix: &str) -> &AtomicU64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        prefix.hash(&mut h);
        &self.slots[(h.finish() % SLOTS as u64) as usize]
    }

    /// The time one release of `prefix`'s queue takes, as far as this process knows.
    pub(crate) fn step(&self, prefix: &str) -> Duration {
        match self.slot(prefix).load(Ordering::Relaxed) {
            0 => DEFAULT_STEP,
            micros => Duration::from_micros(micros),
        }
    }

    /// A claim of `prefix` waited `waited` for `releases` releases ahead of it.
    /// The slot moves an eighth of the way to what this wait says (bounded).
    pub(crate) fn record(&self, prefix: &str, waited: Duration, releases: usize) {
        let Ok(releases) = u32::try_from(releases.max(1)) else {
            return;
        };
        let sample = (waited / releases).clamp(MIN_STEP, MAX_STEP).as_micros() as u64;
        let slot = self.slot(prefix);
        // Lost updates between racing waits only drop a sample.
        let next = match slot.load(Ordering::Relaxed) {
            0 => sample,
            // (Close enough: integer steps of an eighth would stop short of it.)
            old if old.abs_diff(sample) < 8 => sample,
            old => (old * 7 + sample) / 8,
        };
        slot.store(next, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_learns_the_time_per_release_within_bounds() {
        let pace = QueuePace::default();
        assert_eq!(pace.step("a/"), DEFAULT_STEP);
        pace.record("a/", Duration::from_millis(30), 10);
        assert_eq!(pace.step("a/"), Duration::from_millis(3));
        // An eighth of the way to each new sample.
        pace.record("a/", Duration::from_millis(11), 1);
        assert_eq!(
            pace.step("a/"),
            Duration::from_micros((3000 * 7 + 10_000) / 8)
        );
        for _ in 0..100 {
            pace.record("a/", Duration::from_secs(5), 1);
        }
        assert_eq!(pace.step("a/"), MAX_STEP);
        for _ in 0..100 {
            pace.record("a/", Duration::ZERO, 0);
        }
        assert_eq!(pace.step("a/"), MIN_STEP);
    }
}
