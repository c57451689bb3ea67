//! Watches of many keys of one directory served, after a reconnect, by one
//! etcd watch of the directory.
//!
//! After a reconnect every watch must be created again, and etcd 3.4 creates
//! watches at about 3,000 per second on one stream (2 cores; 3,800 over two
//! streams): 100,000 watches of one key each took 30 s and more to come back.
//! So the watches of one key (without previous values) whose keys share a
//! parent directory (`a/b/` of `a/b/c`), at least [`GROUP_MIN`] of them, are
//! served by one watch of that directory instead, from the earliest revision
//! any of them is owed (after their reads, see `bring_forward`): etcd creates
//! one watch and replays its history once, and the hub hands each event to the
//! watch of its key, from the revision that watch is owed. Events of the
//! directory's other keys are dropped here: the price is that the directory's
//! traffic reaches this process until the stream breaks again (a group lasts
//! that long). A member whose consumer falls behind leaves the group and is
//! created on its own once it caught up; one closed leaves it; the group's
//! watch is cancelled with its last member.

use std::collections::HashMap;

use coordkit::{Error, KeyRange, Revision};
use etcd_client as etcd;

use super::{Hub, Outgoing};

/// Watches of one directory that are served by one watch of it.
pub(super) const GROUP_MIN: usize = 32;
/// The first id of a group's watch (watch ids count up from 1).
pub(super) const FIRST_GROUP_ID: i64 = 1 << 62;

/// One etcd watch of a directory, serving the watches of its keys.
pub(super) struct Group {
    prefix: Vec<u8>,
    /// The member watches, by key.
    members: HashMap<Vec<u8>, i64>,
    /// The earliest revision a member was owed when the group was formed.
    start: Revision,
}

/// The parent directory of `key`: up to and including its last `/`.
fn parent(key: &[u8]) -> Option<&[u8]> {
    let end = key.iter().rposition(|&b| b == b'/')?;
    Some(&key[..=end])
}

impl Hub {
    /// Of `ids` (watches of one key waiting to be created), those in
    /// directories with at least [`GROUP_MIN`] of them and no previous values.
    pub(super) fn groupable(&self, ids: &[i64]) -> Vec<i64> {
        let mut by_parent: HashMap<&[u8], Vec<i64>> = HashMap::new();
        for id in ids {
            let Some(w) = self.watches.get(id) else {
                continue;
            };
            if let (KeyRange::Key(key), false) = (&w.keys, w.prev_kv) {
                if let Some(p) = parent(key) {
                    by_parent.entry(p).or_default().push(*id);
                }
            }
        }
        by_parent
            .into_values()
            .filter(|members| members.len() >= GROUP_MIN)
            .flatten()
            .collect()
    }

    /// Form the groups of `ids` (from [`Hub::groupable`], read first): each
    /// member marked, each group's creation to be queued with the stream's.
    pub(super) fn form_groups(&mut self, ids: &[i64]) {
        let mut by_parent: HashMap<Vec<u8>, Group> = HashMap::new();
        for id in ids {
            let Some(w) = self.watches.get(id) else {
                continue;
            };
            let KeyRange::Key(key) = &w.keys else {
                continue;
            };
            let Some(p) = parent(key) else { continue };
            let group = by_parent.entry(p.to_vec()).or_insert_with(|| Group {
                prefix: p.to_vec(),
                members: HashMap::new(),
                start: w.next,
            });
            group.start = group.start.min(w.next);
            group.members.insert(key.clone(), *id);
        }
        for (_, group) in by_parent {
            let gid = self.next_group;
            self.next_group += 1;
            for id in group.members.values() {
                if let Some(w) = self.watches.get_mut(id) {
                    w.group = Some(gid);
                }
            }
            self.groups.insert(gid, group);
        }
    }

    /// The creation request of group `gid`'s watch.
    pub(super) fn group_options(&self, gid: i64) -> Option<(Vec<u8>, etcd::WatchOptions)> {
        let group = self.groups.get(&gid)?;
        let options = etcd::WatchOptions::new()
            .with_watch_id(gid)
            .with_start_revision(group.start)
            .with_prefix();
        Some((group.prefix.clone(), options))
    }

    /// The ids of the groups, for their creation on a new stream.
    pub(super) fn group_ids(&self) -> Vec<i64> {
        self.groups.keys().copied().collect()
    }

    /// Watch `id` leaves its group (if in one); the group's watch is
    /// cancelled with its last member.
    pub(super) fn leave_group(&mut self, id: i64) {
        let Some(w) = self.watches.get_mut(&id) else {
            return;
        };
        let Some(gid) = w.group.take() else { return };
        let KeyRange::Key(key) = &w.keys else { return };
        let Some(group) = self.groups.get_mut(&gid) else {
            return;
        };
        group.members.remove(key);
        if group.members.is_empty() {
            self.groups.remove(&gid);
            if self.stream.is_some() {
                self.outgoing.push_back(Outgoing::Cancel(gid));
            }
        }
    }

    /// The stream is gone: every member is on its own again.
    pub(super) fn dissolve_groups(&mut self) {
        for (_, group) in self.groups.drain() {
            for id in group.members.values() {
                if let Some(w) = self.watches.get_mut(id) {
                    w.group = None;
                }
            }
        }
    }

    /// A response for group `gid`'s watch: each event to its key's watch.
    pub(super) fn handle_group(&mut self, gid: i64, resp: etcd::WatchResponse) {
        if resp.canceled() {
            self.group_cancelled(gid, resp.compact_revision());
            return;
        }
        let Some(group) = self.groups.get(&gid) else {
            return;
        };
        let mut per_member: HashMap<i64, Vec<&etcd::Event>> = HashMap::new();
        for e in resp.events() {
            let Some(kv) = e.kv() else { continue };
            if let Some(&id) = group.members.get(kv.key()) {
                per_member.entry(id).or_default().push(e);
            }
        }
        for (id, events) in per_member {
            self.deliver(id, events);
        }
    }

    /// etcd ended group `gid`'s watch: its members owed revisions compacted
    /// away are told so; the others are created on their own.
    fn group_cancelled(&mut self, gid: i64, compact_revision: Revision) {
        let Some(group) = self.groups.remove(&gid) else {
            return;
        };
        tracing::debug!(
            group = gid,
            members = group.members.len(),
            compact_revision,
            "a group's watch ended; its members go on their own"
        );
        for id in group.members.into_values() {
            let Some(w) = self.watches.get_mut(&id) else {
                continue;
            };
            w.group = None;
            if compact_revision > 0 && w.next < compact_revision {
                let compacted = Err(Error::Compacted { compact_revision });
                if w.tx.try_send(compacted).is_ok() {
                    self.watches.remove(&id);
                    continue;
                }
                // Full: told once the consumer has caught up (its re-creation
                // is refused the same way).
                self.stall(id);
                continue;
            }
            if self.stream.is_some() && w.on_stream {
                self.outgoing.push_back(Outgoing::Create(id));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parent;

    #[test]
    fn a_keys_parent_is_its_directory() {
        assert_eq!(parent(b"a/b/c"), Some(&b"a/b/"[..]));
        assert_eq!(parent(b"a/"), Some(&b"a/"[..]));
        assert_eq!(parent(b"abc"), None);
    }
}
