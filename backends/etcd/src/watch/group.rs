//! Watches of many keys of one directory served, after a reconnect, by one
//! etcd watch of the directory, created near the present.
//!
//! After a reconnect every watch must be created again, and etcd 3.4 creates
//! watches at about 3,000 per second on one stream (2 cores; 3,800 over two
//! streams): 100,000 watches of one key each took 30 s and more to come back.
//! So the watches of one key (without previous values) whose keys share a
//! parent directory (`a/b/` of `a/b/c`), at least [`GROUP_MIN`] of them and at
//! least one per [`SPARSEST`] keys of the directory, are served by one watch of
//! that directory instead:
//! - the directory is read a page at a time, every page at the revision of the
//!   first (read before the stream opens); the group's watch starts just after
//!   that revision, so etcd has next to no history to replay;
//! - a page settles each member whose key it covers, as a read settles a watch
//!   of one key (`bring_forward`): unchanged since the revision it is owed, or
//!   changed by exactly one put, delivered from the read; the events of a
//!   member's key that arrive before its page are held until then;
//! - a member its page cannot settle (its key absent, changed more than once,
//!   nothing seen yet to compare with), or whose page cannot be read, leaves
//!   the group and is created on its own from the revision it is owed: etcd's
//!   history serves it, or tells it `Compacted`.
//!
//! Events of the directory's other keys are dropped here: the price is that the
//! directory's traffic reaches this process until the stream breaks again (a
//! group lasts that long). A member whose consumer falls behind leaves the group
//! and is created on its own once it caught up; one closed leaves it; the
//! group's watch is cancelled with its last member.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use coordkit::{Error, KeyRange, Revision};
use etcd_client as etcd;
use futures::StreamExt;

use super::bring_forward::{settle, Bringing, Brought, Idle, Page, IN_FLIGHT, TRIES};
use super::{Hub, Outgoing, WATCH_BUFFER};
use crate::endpoints::Endpoints;

/// Watches of one directory, at least, for one watch of it to serve them.
pub(super) const GROUP_MIN: usize = 32;
/// Keys of a directory per watched member, at most, for it to be grouped: the
/// group's watch carries every key's traffic.
const SPARSEST: i64 = 4;
/// Keys read per page of a directory.
const PAGE: i64 = 500;
/// The first id of a group's watch (watch ids count up from 1).
pub(super) const FIRST_GROUP_ID: i64 = 1 << 62;

/// One etcd watch of a directory, serving the watches of its keys.
pub(super) struct Group {
    prefix: Vec<u8>,
    /// The revision the directory is read at; the group's watch starts after it.
    at: Revision,
    /// The member watches, by key.
    members: BTreeMap<Vec<u8>, Member>,
    /// Where the next page of the directory starts, while pages are left.
    next_page: Option<Vec<u8>>,
}

struct Member {
    id: i64,
    /// Events of its key held until its page settles it; `None` once settled.
    held: Option<Vec<etcd::Event>>,
}

/// What a page settles: the members not yet settled whose keys it covers (by
/// key), and the keys it read.
struct Covered {
    members: Vec<(Vec<u8>, i64)>,
    kvs: HashMap<Vec<u8>, etcd::KeyValue>,
}

impl Group {
    /// Page `page` from `from` came back (`None`: it could not be read, and
    /// covers every member left): what it covers, the next page noted.
    fn take_page(&mut self, from: Vec<u8>, page: Option<Page>) -> Covered {
        let unsettled = |(k, m): (&Vec<u8>, &Member)| m.held.is_some().then(|| (k.clone(), m.id));
        let Some(page) = page else {
            self.next_page = None;
            return Covered {
                members: self.members.iter().filter_map(unsettled).collect(),
                kvs: HashMap::new(),
            };
        };
        let last = page
            .kvs
            .last()
            .map(|kv| kv.key().to_vec())
            .filter(|_| page.more);
        let end = match &last {
            Some(last) => Bound::Included(last.clone()),
            None => Bound::Unbounded,
        };
        let members = self
            .members
            .range((Bound::Included(from), end))
            .filter_map(unsettled)
            .collect();
        self.next_page = last.map(|mut last| {
            last.push(0);
            last
        });
        Covered {
            members,
            kvs: page
                .kvs
                .into_iter()
                .map(|kv| (kv.key().to_vec(), kv))
                .collect(),
        }
    }
}

/// The parent directory of `key`: up to and including its last `/`.
fn parent(key: &[u8]) -> Option<&[u8]> {
    let end = key.iter().rposition(|&b| b == b'/')?;
    Some(&key[..=end])
}

/// The keys of directory `prefix` from `from`, [`PAGE`] of them, at revision
/// `at` (`None`: now). A read that fails or takes longer than `bound`
/// [`TRIES`] times (a compacted revision among them) gives `None`.
async fn read_page(
    client: &etcd::Client,
    prefix: &[u8],
    from: &[u8],
    at: Option<Revision>,
    bound: Duration,
) -> Option<Page> {
    let mut kv = crate::request::kv(client);
    let mut options = etcd::GetOptions::new()
        .with_range(KeyRange::prefix_end(prefix))
        .with_limit(PAGE);
    if let Some(at) = at {
        options = options.with_revision(at);
    }
    for _ in 0..TRIES {
        let read = kv.get(from.to_vec(), Some(options.clone()));
        if let Ok(Ok(mut resp)) = tokio::time::timeout(bound, read).await {
            return Some(Page {
                at: resp.header().map_or(0, |h| h.revision()),
                more: resp.more(),
                count: resp.count(),
                kvs: resp.take_kvs(),
            });
        }
    }
    None
}

impl Hub {
    /// Before the stream opens: form the groups of `idle` (watches of one key
    /// to bring forward), reading each directory's first page now; the
    /// watches left alone are returned.
    pub(super) async fn form_groups(
        &mut self,
        client: &etcd::Client,
        idle: Vec<Idle>,
        bound: Duration,
    ) -> Vec<Idle> {
        let mut by_parent: HashMap<Vec<u8>, Vec<Idle>> = HashMap::new();
        let mut alone = Vec::new();
        for w in idle {
            match parent(&w.key) {
                Some(p) if !w.prev_kv => by_parent.entry(p.to_vec()).or_default().push(w),
                _ => alone.push(w),
            }
        }
        let mut candidates = Vec::new();
        for (prefix, members) in by_parent {
            if members.len() >= GROUP_MIN {
                candidates.push((prefix, members));
            } else {
                alone.extend(members);
            }
        }
        let firsts: Vec<_> = futures::stream::iter(candidates)
            .map(|(prefix, members)| async move {
                let page = read_page(client, &prefix, &prefix, None, bound).await;
                (prefix, members, page)
            })
            .buffer_unordered(IN_FLIGHT)
            .collect()
            .await;
        for (prefix, members, page) in firsts {
            match page {
                Some(page) if members.len() as i64 * SPARSEST >= page.count => {
                    self.form_group(prefix, members, page)
                }
                _ => alone.extend(members),
            }
        }
        alone
    }

    /// A group of `members` of directory `prefix`, its first page read.
    fn form_group(&mut self, prefix: Vec<u8>, members: Vec<Idle>, first: Page) {
        let gid = self.next_group;
        self.next_group += 1;
        let mut group = Group {
            prefix: prefix.clone(),
            at: first.at,
            members: BTreeMap::new(),
            next_page: Some(prefix.clone()),
        };
        for m in members {
            if let Some(w) = self.watches.get_mut(&m.id) {
                w.group = Some(gid);
                group.members.insert(
                    m.key,
                    Member {
                        id: m.id,
                        held: Some(Vec::new()),
                    },
                );
            }
        }
        tracing::debug!(
            group = gid,
            members = group.members.len(),
            keys = first.count,
            at = first.at,
            "watches of one directory served by one watch of it"
        );
        self.groups.insert(gid, group);
        self.page_read(gid, prefix, Some(first));
    }

    /// The creation request of group `gid`'s watch.
    pub(super) fn group_options(&self, gid: i64) -> Option<(Vec<u8>, etcd::WatchOptions)> {
        let group = self.groups.get(&gid)?;
        let options = etcd::WatchOptions::new()
            .with_watch_id(gid)
            .with_start_revision(group.at + 1)
            .with_prefix();
        Some((group.prefix.clone(), options))
    }

    /// The stream opened: the settled members are served on it.
    pub(super) fn members_on_stream(&mut self) {
        for group in self.groups.values() {
            for m in group.members.values().filter(|m| m.held.is_none()) {
                if let Some(w) = self.watches.get_mut(&m.id) {
                    w.on_stream = true;
                }
            }
        }
    }

    /// The ids of the groups, for their creation on a new stream.
    pub(super) fn group_ids(&self) -> Vec<i64> {
        self.groups.keys().copied().collect()
    }

    /// The read of a group's next page, if one is left (called while no read
    /// is out, so a group has one page out at most).
    pub(super) fn next_page(&self, endpoint: usize) -> Option<Bringing> {
        let (&gid, group) = self.groups.iter().find(|(_, g)| g.next_page.is_some())?;
        let from = group.next_page.clone()?;
        let (prefix, at) = (group.prefix.clone(), group.at);
        let endpoints: Arc<Endpoints> = self.endpoints.clone();
        let bound = self.liveness.bound();
        Some(Box::pin(async move {
            let page = match endpoints.client(endpoint).await {
                Ok(client) => read_page(client, &prefix, &from, Some(at), bound).await,
                Err(_) => None,
            };
            Brought::Page { gid, from, page }
        }))
    }

    /// Page `page` of group `gid`'s directory, from `from`, came back (`None`:
    /// it could not be read): each member whose key it covers is settled and
    /// handed what was held for it, or leaves the group.
    pub(super) fn page_read(&mut self, gid: i64, from: Vec<u8>, page: Option<Page>) {
        let Some(group) = self.groups.get_mut(&gid) else {
            return;
        };
        let at = group.at;
        let Covered { members, kvs } = group.take_page(from, page);
        for (key, id) in members {
            let settled = match (kvs.get(&key), self.watches.get(&id)) {
                (Some(kv), Some(w)) => Idle::of(id, w).and_then(|idle| settle(&idle, kv, at)),
                _ => None,
            };
            self.settle(settled.into_iter().collect());
            if self.watches.get(&id).is_some_and(|w| w.next == at + 1) {
                self.counters.grouped.fetch_add(1, Ordering::Relaxed);
                self.release(gid, &key);
            } else {
                self.go_alone(id);
            }
        }
    }

    /// The member of `key` in group `gid` is settled: it is served from the
    /// group's watch, and handed what was held for it.
    fn release(&mut self, gid: i64, key: &[u8]) {
        let Some(m) = self
            .groups
            .get_mut(&gid)
            .and_then(|g| g.members.get_mut(key))
        else {
            return;
        };
        let (id, held) = (m.id, m.held.take().unwrap_or_default());
        if let Some(w) = self.watches.get_mut(&id) {
            w.on_stream = self.stream.is_some();
        }
        if !held.is_empty() {
            self.deliver(id, held.iter().collect());
        }
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

    /// Watch `id` leaves its group and is created on its own, from the
    /// revision it is owed, once the stream is up.
    fn go_alone(&mut self, id: i64) {
        self.leave_group(id);
        let has_stream = self.stream.is_some();
        if let Some(w) = self.watches.get_mut(&id) {
            if has_stream && !w.stalled.load(Ordering::Acquire) {
                w.on_stream = true;
                self.outgoing.push_back(Outgoing::Create(id));
            }
        }
    }

    /// The stream is gone: every member is on its own again, owed what it
    /// was owed.
    pub(super) fn dissolve_groups(&mut self) {
        for (_, group) in self.groups.drain() {
            for m in group.members.values() {
                if let Some(w) = self.watches.get_mut(&m.id) {
                    w.group = None;
                }
            }
        }
    }

    /// A response for group `gid`'s watch: each event to its key's watch, or
    /// held for it until its page is read.
    pub(super) fn handle_group(&mut self, gid: i64, resp: etcd::WatchResponse) {
        if resp.canceled() {
            self.group_cancelled(gid, resp.compact_revision());
            return;
        }
        let Some(group) = self.groups.get_mut(&gid) else {
            return;
        };
        let mut per_member: HashMap<i64, Vec<&etcd::Event>> = HashMap::new();
        let mut overflowing = Vec::new();
        for e in resp.events() {
            let Some(kv) = e.kv() else { continue };
            let Some(m) = group.members.get_mut(kv.key()) else {
                continue;
            };
            match &mut m.held {
                // As many as its consumer's buffer holds, at most: beyond, it
                // goes on its own (etcd's history holds what was held).
                Some(held) if held.len() >= WATCH_BUFFER => {
                    if !overflowing.contains(&m.id) {
                        overflowing.push(m.id);
                    }
                }
                Some(held) => held.push(e.clone()),
                None => per_member.entry(m.id).or_default().push(e),
            }
        }
        for (id, events) in per_member {
            self.deliver(id, events);
        }
        for id in overflowing {
            self.go_alone(id);
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
        for m in group.members.into_values() {
            let id = m.id;
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
            self.go_alone(id);
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
