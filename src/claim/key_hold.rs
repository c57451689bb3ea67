//! What keeps this process off a claim's key while an earlier write or delete of
//! it may still land.
//!
//! A claim's key is reused: an exclusive claim's is `<prefix><lease hex>` for
//! every claim of that session and name, and a shared claim (semaphore permit,
//! read or write hold) takes the lowest free number of its session and name,
//! `<prefix><lease hex>-<n hex>`. Reuse keeps a busy queue's key space as small
//! as its number of holders and waiters: etcd keeps every deleted key in its
//! index until a compaction passes it, and a range over the queue walks them
//! all, so fresh keys per claim would make each read of a busy queue slower.
//!
//! Reuse is safe only once no write or delete of the key by an earlier claim of
//! this process can still land: a cleanup whose claim's create revision is
//! unknown deletes whatever key of that lease it finds, and a claim cancelled
//! mid-write may still create the key. So the hold (the local turn, or the slot
//! number) goes with the key to whoever deletes it — the claim, its release, or
//! the cleanup of an orphan — and is dropped only after that delete is done or
//! given up.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use super::local_queue::LocalTurn;

/// Held with a claim's key until its last write or delete by this process is done.
/// Never read: dropping it is what counts.
#[allow(dead_code)]
pub(crate) enum KeyHold {
    /// The head of the local queue: exclusive claims of one session and name share
    /// a key, so one task at a time claims it.
    Turn(LocalTurn),
    /// The number in a shared claim's key.
    Slot(ClaimSlot),
}

impl KeyHold {
    /// As the cleanup holds it, to drop after a removal.
    pub(crate) fn boxed(self) -> crate::cleanup::Hold {
        Box::new(self)
    }
}

type InUse = Arc<Mutex<HashMap<String, BTreeSet<u64>>>>;

/// The numbers in use in shared claims' keys, per queue and session. An entry
/// is dropped once none of its numbers is in use.
#[derive(Default)]
pub(crate) struct ClaimSlots {
    in_use: InUse,
}

/// One number of [`ClaimSlots`], returned when dropped.
pub(crate) struct ClaimSlot {
    in_use: InUse,
    /// `<prefix><lease hex>-`
    stem: String,
    n: u64,
}

impl ClaimSlots {
    /// The lowest number not in use for keys starting with `stem`
    /// (`<prefix><lease hex>-`).
    pub(crate) fn take(&self, stem: String) -> ClaimSlot {
        let mut in_use = self.in_use.lock().unwrap_or_else(|e| e.into_inner());
        let taken = in_use.entry(stem.clone()).or_default();
        // The numbers in use are sorted: the first gap is the lowest free one.
        let n = taken
            .iter()
            .zip(0u64..)
            .find(|(used, expected)| **used != *expected)
            .map_or(taken.len() as u64, |(_, free)| free);
        taken.insert(n);
        ClaimSlot {
            in_use: self.in_use.clone(),
            stem,
            n,
        }
    }
}

impl ClaimSlot {
    /// The key this slot stands for: `<prefix><lease hex>-<n hex>`.
    pub(crate) fn key(&self) -> String {
        crate::keys::numbered(&self.stem, self.n)
    }
}

impl Drop for ClaimSlot {
    fn drop(&mut self) {
        let mut in_use = self.in_use.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(taken) = in_use.get_mut(&self.stem) {
            taken.remove(&self.n);
            if taken.is_empty() {
                in_use.remove(&self.stem);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(slots: &ClaimSlots) -> usize {
        slots.in_use.lock().unwrap().len()
    }

    #[test]
    fn a_slot_takes_the_lowest_free_number_of_its_stem() {
        let slots = ClaimSlots::default();
        let a = slots.take("q/1-".into());
        let b = slots.take("q/1-".into());
        let c = slots.take("q/1-".into());
        assert_eq!(
            (a.key(), b.key(), c.key()),
            ("q/1-0".into(), "q/1-1".into(), "q/1-2".into())
        );
        // Another session (or queue) counts on its own.
        assert_eq!(slots.take("q/2-".into()).key(), "q/2-0");
        drop(b);
        assert_eq!(slots.take("q/1-".into()).key(), "q/1-1");
    }

    #[test]
    fn a_number_is_not_handed_out_twice_while_held() {
        let slots = ClaimSlots::default();
        let held: Vec<_> = (0..40).map(|_| slots.take("q/1-".into())).collect();
        let mut keys: Vec<_> = held.iter().map(ClaimSlot::key).collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), 40);
        assert_eq!(
            held[39].key(),
            "q/1-27",
            "numbers are hex, as in the old keys"
        );
    }

    #[test]
    fn a_stem_with_no_number_held_is_forgotten() {
        let slots = ClaimSlots::default();
        let a = slots.take("q/1-".into());
        let b = slots.take("q/1-".into());
        drop(a);
        assert_eq!(entries(&slots), 1);
        drop(b);
        assert_eq!(entries(&slots), 0);
    }
}
