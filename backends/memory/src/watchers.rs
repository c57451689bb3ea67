//! The registered watches, indexed by the key or prefix they cover, so that a
//! write reaches only the watches it concerns: one lookup per key written, plus
//! one per distinct prefix length in use, whatever the number of watches.

use std::collections::{BTreeMap, HashMap, HashSet};

use coordkit::{Event, KeyRange, Revision, WatchResponse};
use tokio::sync::mpsc::UnboundedSender;

/// A registered watch: the events it is owed go into `tx`.
pub(crate) struct Watcher {
    pub(crate) client: u64,
    pub(crate) keys: KeyRange,
    pub(crate) prev_kv: bool,
    /// The first revision owed: a watch from a future revision gets nothing
    /// earlier, as in etcd.
    pub(crate) start: Revision,
    pub(crate) tx: UnboundedSender<WatchResponse>,
}

/// Every registered watch, by id (registration order), key and prefix.
#[derive(Default)]
pub(crate) struct Watchers {
    next_id: u64,
    all: BTreeMap<u64, Watcher>,
    by_key: HashMap<Vec<u8>, HashSet<u64>>,
    by_prefix: HashMap<Vec<u8>, HashSet<u64>>,
    /// How many prefixes of each length are indexed: the lengths to probe.
    prefix_lengths: BTreeMap<usize, usize>,
    /// Closed watches are swept when this many are registered.
    sweep_at: usize,
}

impl Watchers {
    /// Register a watch. Watches whose streams were dropped are swept out now
    /// and then (amortised: when the count doubles since the last sweep).
    pub(crate) fn add(&mut self, watcher: Watcher) {
        if self.all.len() >= self.sweep_at {
            let closed: Vec<u64> = self
                .all
                .iter()
                .filter(|(_, w)| w.tx.is_closed())
                .map(|(id, _)| *id)
                .collect();
            for id in closed {
                self.remove(id);
            }
            self.sweep_at = (self.all.len() * 2).max(1024);
        }
        let id = self.next_id;
        self.next_id += 1;
        match &watcher.keys {
            KeyRange::Key(k) => {
                self.by_key.entry(k.clone()).or_default().insert(id);
            }
            KeyRange::Prefix(p) => {
                let ids = self.by_prefix.entry(p.clone()).or_default();
                if ids.is_empty() {
                    *self.prefix_lengths.entry(p.len()).or_default() += 1;
                }
                ids.insert(id);
            }
        }
        self.all.insert(id, watcher);
    }

    fn remove(&mut self, id: u64) {
        let Some(w) = self.all.remove(&id) else {
            return;
        };
        match w.keys {
            KeyRange::Key(k) => {
                if let Some(ids) = self.by_key.get_mut(&k) {
                    ids.remove(&id);
                    if ids.is_empty() {
                        self.by_key.remove(&k);
                    }
                }
            }
            KeyRange::Prefix(p) => {
                if let Some(ids) = self.by_prefix.get_mut(&p) {
                    ids.remove(&id);
                    if ids.is_empty() {
                        self.by_prefix.remove(&p);
                        if let Some(n) = self.prefix_lengths.get_mut(&p.len()) {
                            *n -= 1;
                            if *n == 0 {
                                self.prefix_lengths.remove(&p.len());
                            }
                        }
                    }
                }
            }
        }
    }

    /// The ids of the watches covering `key`.
    fn covering<'a>(&'a self, key: &'a [u8]) -> impl Iterator<Item = u64> + 'a {
        let exact = self.by_key.get(key).into_iter().flatten();
        let prefixed = self
            .prefix_lengths
            .keys()
            .take_while(move |len| **len <= key.len())
            .filter_map(move |len| self.by_prefix.get(&key[..*len]))
            .flatten();
        exact.chain(prefixed).copied()
    }

    /// Send each watch the events of `revision` it covers (in registration
    /// order, one response per watch); a watch whose stream is gone is removed.
    pub(crate) fn publish(&mut self, revision: Revision, events: &[Event]) {
        let mut owed: BTreeMap<u64, Vec<Event>> = BTreeMap::new();
        for event in events {
            for id in self.covering(&event.kv.key) {
                let w = &self.all[&id];
                if revision < w.start {
                    continue;
                }
                owed.entry(id).or_default().push(Event {
                    kind: event.kind,
                    kv: event.kv.clone(),
                    prev_kv: if w.prev_kv {
                        event.prev_kv.clone()
                    } else {
                        None
                    },
                });
            }
        }
        for (id, events) in owed {
            let sent = self.all[&id]
                .tx
                .send(WatchResponse { revision, events })
                .is_ok();
            if !sent {
                self.remove(id);
            }
        }
    }

    /// Drop every watch of one client (their streams see a disconnect).
    pub(crate) fn cut(&mut self, client: u64) {
        let ids: Vec<u64> = self
            .all
            .iter()
            .filter(|(_, w)| w.client == client)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.remove(id);
        }
    }

    /// The watches whose streams are still open.
    pub(crate) fn live(&self) -> usize {
        self.all.values().filter(|w| !w.tx.is_closed()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coordkit::{EventKind, KeyValue};
    use tokio::sync::mpsc::unbounded_channel;

    fn put(key: &str) -> Event {
        Event {
            kind: EventKind::Put,
            kv: KeyValue {
                key: key.as_bytes().to_vec(),
                value: b"v".to_vec(),
                create_revision: 2,
                mod_revision: 2,
                version: 1,
                lease: None,
            },
            prev_kv: None,
        }
    }

    #[test]
    fn a_write_reaches_the_watches_of_its_key_and_of_its_prefixes_only() {
        let mut watchers = Watchers::default();
        let mut rxs = Vec::new();
        for keys in [
            KeyRange::key("a/b"),
            KeyRange::key("a/c"),
            KeyRange::prefix("a/"),
            KeyRange::prefix(""),
            KeyRange::prefix("b/"),
            KeyRange::prefix("a/b/long"),
        ] {
            let (tx, rx) = unbounded_channel();
            watchers.add(Watcher {
                client: 1,
                keys,
                prev_kv: false,
                start: 0,
                tx,
            });
            rxs.push(rx);
        }
        watchers.publish(2, &[put("a/b"), put("a/x")]);
        let got: Vec<usize> = rxs
            .iter_mut()
            .map(|rx| rx.try_recv().map_or(0, |r| r.events.len()))
            .collect();
        assert_eq!(got, vec![1, 0, 2, 2, 0, 0]);
    }

    #[test]
    fn closed_and_cut_watches_are_removed_from_every_index() {
        let mut watchers = Watchers::default();
        let (tx, rx) = unbounded_channel();
        watchers.add(Watcher {
            client: 1,
            keys: KeyRange::prefix("p/"),
            prev_kv: false,
            start: 0,
            tx,
        });
        drop(rx);
        watchers.publish(2, &[put("p/1")]);
        assert!(watchers.all.is_empty() && watchers.by_prefix.is_empty());
        assert!(watchers.prefix_lengths.is_empty());
        let (tx, _rx) = unbounded_channel();
        watchers.add(Watcher {
            client: 7,
            keys: KeyRange::key("k"),
            prev_kv: false,
            start: 0,
            tx,
        });
        watchers.cut(7);
        assert!(watchers.all.is_empty() && watchers.by_key.is_empty());
    }
}
