//! The keys of a followed range as last reported.

use std::collections::HashMap;

use crate::backend::Revision;

/// What was last reported for a key: its mod revision and value.
pub(crate) type Reported = (Revision, Vec<u8>);

/// Up to this many keys are kept in a list of exact size, searched in turn.
const FEW: usize = 8;

/// Each key of a followed range with its last reported mod revision and value.
///
/// Most ranges followed are one key (a config watch, a barrier's key): a list
/// holds such a key in 56 bytes where a hash map took 244. A range past
/// [`FEW`] keys moves to a hash map and stays there.
#[derive(Debug, Default)]
pub(crate) enum RangeState {
    /// No key.
    #[default]
    Empty,
    /// At most [`FEW`] keys, in a list of exact capacity.
    Few(Vec<(Vec<u8>, Reported)>),
    /// More.
    Many(HashMap<Vec<u8>, Reported>),
}

impl RangeState {
    /// The revision and value last reported for `key`.
    pub(crate) fn get(&self, key: &[u8]) -> Option<&Reported> {
        match self {
            RangeState::Empty => None,
            RangeState::Few(few) => few.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            RangeState::Many(many) => many.get(key),
        }
    }

    /// Whether `key` is present.
    pub(crate) fn contains_key(&self, key: &[u8]) -> bool {
        self.get(key).is_some()
    }

    /// Record `key` with its revision and value.
    pub(crate) fn insert(&mut self, key: Vec<u8>, state: Reported) {
        match self {
            RangeState::Empty => *self = RangeState::Few(vec![(key, state)]),
            RangeState::Few(few) => {
                if let Some(slot) = few.iter_mut().find(|(k, _)| *k == key) {
                    slot.1 = state;
                } else if few.len() < FEW {
                    few.reserve_exact(1);
                    few.push((key, state));
                } else {
                    let mut many: HashMap<_, _> = std::mem::take(few).into_iter().collect();
                    many.insert(key, state);
                    *self = RangeState::Many(many);
                }
            }
            RangeState::Many(many) => {
                many.insert(key, state);
            }
        }
    }

    /// Forget `key`, returning what was last reported for it.
    pub(crate) fn remove(&mut self, key: &[u8]) -> Option<Reported> {
        match self {
            RangeState::Empty => None,
            RangeState::Few(few) => {
                let i = few.iter().position(|(k, _)| k == key)?;
                let (_, state) = few.swap_remove(i);
                if few.is_empty() {
                    *self = RangeState::Empty;
                } else {
                    few.shrink_to_fit();
                }
                Some(state)
            }
            RangeState::Many(many) => many.remove(key),
        }
    }

    /// Whether no key is present.
    pub(crate) fn is_empty(&self) -> bool {
        match self {
            RangeState::Empty => true,
            RangeState::Few(few) => few.is_empty(),
            RangeState::Many(many) => many.is_empty(),
        }
    }

    /// Every key with what was last reported for it, in no order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&Vec<u8>, &Reported)> {
        let (few, many) = match self {
            RangeState::Empty => (None, None),
            RangeState::Few(few) => (Some(few), None),
            RangeState::Many(many) => (None, Some(many)),
        };
        few.into_iter()
            .flat_map(|few| few.iter().map(|(k, v)| (k, v)))
            .chain(many.into_iter().flat_map(|many| many.iter()))
    }

    /// What was last reported for every key, in no order.
    pub(crate) fn values(&self) -> impl Iterator<Item = &Reported> {
        self.iter().map(|(_, v)| v)
    }
}

impl FromIterator<(Vec<u8>, Reported)> for RangeState {
    fn from_iter<I: IntoIterator<Item = (Vec<u8>, Reported)>>(iter: I) -> Self {
        let mut state = RangeState::Empty;
        for (key, value) in iter {
            state.insert(key, value);
        }
        state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: usize) -> Vec<u8> {
        format!("k{i}").into_bytes()
    }

    #[test]
    fn keys_are_found_updated_and_removed_whether_few_or_many() {
        let mut state = RangeState::default();
        assert!(state.is_empty());
        for n in [1, FEW, FEW + 1, 3 * FEW] {
            for i in 0..n {
                state.insert(key(i), (i as Revision, vec![1]));
            }
            // An update replaces, never duplicates.
            state.insert(key(0), (100, vec![2]));
            assert_eq!(state.iter().count(), n);
            assert_eq!(state.get(&key(0)), Some(&(100, vec![2])));
            assert!(state.contains_key(&key(n - 1)));
            assert!(!state.contains_key(&key(n)));
            for i in (0..n).rev() {
                assert!(state.remove(&key(i)).is_some(), "key {i} of {n}");
                assert_eq!(state.remove(&key(i)), None);
            }
            assert!(state.is_empty(), "{n} keys inserted and removed");
            assert_eq!(state.values().count(), 0);
        }
    }

    #[test]
    fn one_key_is_kept_in_a_list_of_exact_size() {
        let mut state = RangeState::default();
        state.insert(key(0), (1, vec![]));
        state.insert(key(1), (2, vec![]));
        state.remove(&key(0));
        match &state {
            RangeState::Few(few) => assert_eq!((few.len(), few.capacity()), (1, 1)),
            other => panic!("expected a list, got {other:?}"),
        }
    }
}
