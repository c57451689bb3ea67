//! The owner's own writes to its claim's key, so that a watcher never takes one
//! of them for someone else's.

use std::collections::VecDeque;

use crate::backend::{KeyValue, LeaseId, Revision};

/// The owner's writes to its key, bounded: each recorded before it is sent, with
/// its mod revision once known. A write whose response was lost (retried or
/// cancelled) is known by its value and lease: a foreign write of the very same
/// value on the same lease changes nothing the owner could tell apart.
#[derive(Default)]
pub(crate) struct OwnWrites {
    entries: VecDeque<(Option<Revision>, Vec<u8>)>,
}

impl OwnWrites {
    /// Writes remembered at most; older ones are forgotten first.
    const CAPACITY: usize = 64;

    /// Writes of which one is known, committed at `revision`: the start of a
    /// registration, which most often never writes again (room for that one
    /// alone, where a first push would make room for four).
    pub(crate) fn known(revision: Revision) -> Self {
        let mut entries = VecDeque::with_capacity(1);
        entries.push_back((Some(revision), Vec::new()));
        OwnWrites { entries }
    }

    pub(crate) fn sending(&mut self, value: &[u8]) {
        if self.entries.len() == Self::CAPACITY {
            self.entries.pop_front();
        }
        self.entries.push_back((None, value.to_vec()));
    }

    /// A write known to have committed at `revision` (known by it: its value is
    /// not kept). The entry of its send stays: an earlier try of the same write
    /// may have committed too, at a revision nobody was told.
    pub(crate) fn written(&mut self, revision: Revision) {
        if self.entries.len() == Self::CAPACITY {
            self.entries.pop_front();
        }
        self.entries.push_back((Some(revision), Vec::new()));
    }

    /// Whether a put of `kv` (on the owner's key, create revision checked by the
    /// caller) is one of the owner's own, forgetting known writes older than it.
    pub(crate) fn is_own(&mut self, kv: &KeyValue, lease: LeaseId) -> bool {
        let own = kv.lease == Some(lease)
            && self.entries.iter().any(|(r, v)| match r {
                Some(r) => *r == kv.mod_revision,
                None => *v == kv.value,
            });
        self.entries
            .retain(|(r, _)| r.is_none_or(|r| r >= kv.mod_revision));
        own
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(value: &str, mod_revision: Revision, lease: i64) -> KeyValue {
        KeyValue {
            key: b"k".to_vec(),
            value: value.as_bytes().to_vec(),
            create_revision: 1,
            mod_revision,
            version: 1,
            lease: Some(LeaseId(lease)),
        }
    }

    #[test]
    fn own_writes_know_lost_responses_by_value_and_stay_bounded() {
        let mut own = OwnWrites::default();
        own.sending(b"a");
        own.written(5);
        // A proclaim of "b" whose first try committed at 7 but whose response
        // was lost; the retry committed at 8.
        own.sending(b"b");
        own.written(8);
        assert!(own.is_own(&kv("a", 5, 1), LeaseId(1)));
        assert!(
            own.is_own(&kv("b", 7, 1), LeaseId(1)),
            "the lost response's write"
        );
        assert!(own.is_own(&kv("b", 8, 1), LeaseId(1)));
        assert!(
            !own.is_own(&kv("c", 9, 1), LeaseId(1)),
            "someone else's value"
        );
        assert!(!own.is_own(&kv("b", 10, 2), LeaseId(1)), "another lease");
        for i in 0..1000 {
            own.sending(format!("v{i}").as_bytes());
        }
        assert!(own.len() <= OwnWrites::CAPACITY);
    }
}
