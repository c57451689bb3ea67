//! The keepers of a coordinator's owned keys (its registrations). An owner is an
//! entry in this table, not a task with a watch of its own: one follower per
//! parent of the kept keys (for registrations: the service) hands each change of
//! a kept key to its owner to judge, and one task per session waits for that
//! session's loss. An owner whose key no longer holds its write (deleted,
//! overwritten), or whose session is lost, is taken out of the table and told
//! once; it joins again after writing its key anew.
//!
//! An owner joins with the revision of its write. When the service's follower
//! has already gone past it, the changes since are taken from the follower's
//! recent changes, or — further back — from a read of the key at the
//! follower's position, and the follower's later changes wait for that read:
//! an owner judges its key's changes in order, once each.

use std::collections::{HashMap, VecDeque};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use tokio::task::JoinHandle;

use crate::backend::{Backend, Event, EventKind, KeyRange, KeyValue, LeaseId, Revision};
use crate::follow::{follow_owned, Observed, Seen};
use crate::retry::RetryPolicy;
use crate::session::Session;

/// Why a registration left the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ended {
    SessionLost,
    Deleted,
    Overwritten,
}

/// A registration, as the table sees it.
pub(crate) trait Kept: Send + Sync + 'static {
    /// What `seen` of the key means: `None` while it holds one of the owner's
    /// own writes (`ours`, made on `lease`, or another it knows as its own).
    fn judge(&self, seen: Seen<'_>, ours: Revision, lease: LeaseId) -> Option<Ended>;
    /// The key no longer holds the owner's write, or its session is lost.
    /// Called once per membership, outside the table's lock, after the owner
    /// was taken out; it must not block.
    fn ended(self: Arc<Self>, why: Ended);
}

/// Changes kept per service for owners whose write the follower has passed.
const RECENT: usize = 1024;

/// A change of a key as an owner judges it: an event, or the key as read.
enum Change {
    Event(EventKind, KeyValue),
    Now(Option<KeyValue>),
}

impl Change {
    fn seen(&self) -> Seen<'_> {
        match self {
            Change::Event(kind, kv) => Seen::Event(*kind, kv),
            Change::Now(kv) => Seen::Now(kv.as_ref()),
        }
    }
}

struct Member {
    id: u64,
    kept: Weak<dyn Kept>,
    ours: Revision,
    lease: LeaseId,
    /// While the key is read to catch up: the follower's changes since, in order.
    waiting: Option<Vec<(Revision, Change)>>,
}

impl Member {
    /// Judge one change (ignoring those not after the owner's write).
    fn judge(&self, revision: Revision, change: &Change) -> Option<Ended> {
        if revision <= self.ours {
            return None;
        }
        self.kept
            .upgrade()?
            .judge(change.seen(), self.ours, self.lease)
    }
}

/// One service's follower and the registrations it serves.
struct Service {
    members: HashMap<Vec<u8>, Member>,
    /// Every change up to this revision was handed to the members of its key.
    delivered: Revision,
    /// The changes from revision `recent_from` to `delivered`, oldest first.
    recent: VecDeque<(Revision, EventKind, KeyValue)>,
    recent_from: Revision,
    _follower: Task,
}

/// How many members are on one session, and the task waiting for its loss.
struct Lessee {
    members: usize,
    _watch: Task,
}

#[derive(Default)]
struct Table {
    services: HashMap<String, Service>,
    sessions: HashMap<LeaseId, Lessee>,
}

/// A task aborted when its owner is dropped.
struct Task(JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Shared {
    backend: Arc<dyn Backend>,
    retry: RetryPolicy,
    table: Mutex<Table>,
    next_id: AtomicU64,
}

/// Owners writing their keys again at once, at most (see [`Keepers::recovering`]).
const RECOVERING_AT_ONCE: usize = 64;

/// The table of one coordinator's registrations.
pub(crate) struct Keepers {
    shared: Arc<Shared>,
    recovering: Arc<tokio::sync::Semaphore>,
}

/// An owner to tell, once the table's lock is released.
type Told = Vec<(Arc<dyn Kept>, Ended)>;

fn tell(told: Told) {
    for (kept, why) in told {
        kept.ended(why);
    }
}

/// The service a key belongs to: its parent, up to and including the last `/`.
fn service_of(key: &str) -> &str {
    key.rfind('/').map_or("", |i| &key[..=i])
}

impl Keepers {
    pub(crate) fn new(backend: Arc<dyn Backend>, retry: RetryPolicy) -> Self {
        Keepers {
            shared: Arc::new(Shared {
                backend,
                retry,
                table: Mutex::new(Table::default()),
                next_id: AtomicU64::new(1),
            }),
            recovering: Arc::new(tokio::sync::Semaphore::new(RECOVERING_AT_ONCE)),
        }
    }

    /// Turns for owners writing their keys again (after a lost session, every
    /// owner on it does): a few at a time, so that the store keeps serving
    /// everyone else meanwhile.
    pub(crate) fn recovering(&self) -> Arc<tokio::sync::Semaphore> {
        self.recovering.clone()
    }

    /// Keep `key`, written by `kept` at revision `ours` on `session`'s lease:
    /// from now on its changes after `ours` go to `kept` to judge. Returns the
    /// membership, for [`Keepers::leave`].
    pub(crate) fn join(
        &self,
        key: &str,
        kept: &Arc<dyn Kept>,
        ours: Revision,
        session: &Session,
    ) -> u64 {
        let shared = &self.shared;
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let service = service_of(key);
        let lease = session.lease();
        let mut told = Told::new();
        let mut table = shared.lock();
        let s = table
            .services
            .entry(service.to_string())
            .or_insert_with(|| Service::start(shared, service, ours));
        let mut member = Member {
            id,
            kept: Arc::downgrade(kept),
            ours,
            lease,
            waiting: None,
        };
        let mut verdict = None;
        if ours + 1 >= s.recent_from {
            // Every change since the write is at hand: judge them now, in order.
            for (revision, kind, kv) in s
                .recent
                .iter()
                .filter(|(_, _, kv)| kv.key == key.as_bytes())
            {
                verdict = member.judge(*revision, &Change::Event(*kind, kv.clone()));
                if verdict.is_some() {
                    break;
                }
            }
        } else {
            member.waiting = Some(Vec::new());
            let at = s.delivered;
            let shared = Arc::downgrade(shared);
            let (key, service) = (key.to_string(), service.to_string());
            tokio::spawn(async move { catch_up(shared, service, key, id, at).await });
        }
        // Two owners of one key here (two registrations of one id): the older
        // write was overwritten by the newer.
        if s.members.get(key.as_bytes()).is_some_and(|m| m.ours > ours) {
            verdict = verdict.or(Some(Ended::Overwritten));
        }
        if let Some(why) = verdict {
            told.push((kept.clone(), why));
        } else {
            let replaced = s.members.insert(key.as_bytes().to_vec(), member);
            table
                .sessions
                .entry(lease)
                .or_insert_with(|| Lessee::start(shared, session))
                .members += 1;
            if let Some(old) = replaced {
                table.left_session(old.lease);
                if let Some(owner) = old.kept.upgrade() {
                    told.push((owner, Ended::Overwritten));
                }
            }
        }
        drop(table);
        tell(told);
        id
    }

    /// Stop keeping `key` for membership `id` (a deregistration, a drop). Does
    /// nothing if that membership already ended.
    pub(crate) fn leave(&self, key: &str, id: u64) {
        let mut table = self.shared.lock();
        table.remove(service_of(key), key.as_bytes(), id);
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Table {
    /// Take membership `id` of `key` out; the owner, if it was there.
    fn remove(&mut self, service: &str, key: &[u8], id: u64) -> Option<Member> {
        let s = self.services.get_mut(service)?;
        if s.members.get(key).is_none_or(|m| m.id != id) {
            return None;
        }
        let member = s.members.remove(key)?;
        if s.members.is_empty() {
            self.services.remove(service);
        }
        self.left_session(member.lease);
        Some(member)
    }

    /// A member on `lease` left: the session's watch ends with its last member.
    fn left_session(&mut self, lease: LeaseId) {
        if let Some(lessee) = self.sessions.get_mut(&lease) {
            lessee.members -= 1;
            if lessee.members == 0 {
                self.sessions.remove(&lease);
            }
        }
    }

    /// Take membership `id` of `key` out for `why`, adding its owner to `told`.
    fn end(&mut self, service: &str, key: &[u8], id: u64, why: Ended, told: &mut Told) {
        if let Some(kept) = self.remove(service, key, id).and_then(|m| m.kept.upgrade()) {
            told.push((kept, why));
        }
    }

    /// Hand one revision's changes of `service` to the members of their keys.
    fn deliver(&mut self, service: &str, revision: Revision, events: &[Event], told: &mut Told) {
        let Some(s) = self.services.get_mut(service) else {
            return;
        };
        let mut ended = Vec::new();
        for event in events {
            s.remember(revision, event.kind, &event.kv);
            let Some(m) = s.members.get_mut(&event.kv.key) else {
                continue;
            };
            let change = Change::Event(event.kind, event.kv.clone());
            match &mut m.waiting {
                Some(waiting) => waiting.push((revision, change)),
                None => {
                    if let Some(why) = m.judge(revision, &change) {
                        ended.push((event.kv.key.clone(), m.id, why));
                    }
                }
            }
        }
        s.delivered = s.delivered.max(revision);
        for (key, id, why) in ended {
            self.end(service, &key, id, why, told);
        }
    }

    /// The service's keys as read at `revision` (after a compaction): judged by
    /// each member as its key's state.
    fn reread(&mut self, service: &str, revision: Revision, kvs: &[KeyValue], told: &mut Told) {
        let Some(s) = self.services.get_mut(service) else {
            return;
        };
        let now: HashMap<&[u8], &KeyValue> = kvs.iter().map(|kv| (kv.key.as_slice(), kv)).collect();
        let mut ended = Vec::new();
        for (key, m) in &mut s.members {
            let change = Change::Now(now.get(key.as_slice()).map(|kv| (*kv).clone()));
            match &mut m.waiting {
                Some(waiting) => waiting.push((revision, change)),
                None => {
                    if let Some(why) = m.judge(revision, &change) {
                        ended.push((key.clone(), m.id, why));
                    }
                }
            }
        }
        s.recent.clear();
        s.recent_from = revision + 1;
        s.delivered = revision;
        for (key, id, why) in ended {
            self.end(service, &key, id, why, told);
        }
    }

    /// Every member on `lease` ends: its session is lost. (A session is lost
    /// rarely: the members are found by going through them all.)
    fn session_lost(&mut self, lease: LeaseId, told: &mut Told) {
        let on_lease: Vec<(String, Vec<u8>, u64)> = self
            .services
            .iter()
            .flat_map(|(service, s)| {
                s.members
                    .iter()
                    .filter(|(_, m)| m.lease == lease)
                    .map(move |(key, m)| (service.clone(), key.clone(), m.id))
            })
            .collect();
        for (service, key, id) in on_lease {
            self.end(&service, &key, id, Ended::SessionLost, told);
        }
        self.sessions.remove(&lease);
    }
}

impl Service {
    /// Follow `service` from just after `from`.
    fn start(shared: &Arc<Shared>, service: &str, from: Revision) -> Service {
        let weak = Arc::downgrade(shared);
        let (backend, retry) = (shared.backend.clone(), shared.retry.clone());
        let name = service.to_string();
        let keys = KeyRange::prefix(service.as_bytes().to_vec());
        let follower = tokio::spawn(async move {
            follow_owned(&backend, &retry, keys, from + 1, |observed| {
                let Some(shared) = weak.upgrade() else {
                    return ControlFlow::Break(());
                };
                let mut told = Told::new();
                let mut table = shared.lock();
                match observed {
                    Observed::Changes(revision, events) => {
                        table.deliver(&name, revision, events, &mut told)
                    }
                    Observed::Now(revision, kvs) => table.reread(&name, revision, kvs, &mut told),
                }
                let gone = !table.services.contains_key(&name);
                drop(table);
                tell(told);
                if gone {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })
            .await
        });
        Service {
            members: HashMap::new(),
            delivered: from,
            recent: VecDeque::new(),
            recent_from: from + 1,
            _follower: Task(follower),
        }
    }

    /// Keep a change for owners joining late, forgetting the oldest.
    fn remember(&mut self, revision: Revision, kind: EventKind, kv: &KeyValue) {
        self.recent.push_back((revision, kind, kv.clone()));
        while self.recent.len() > RECENT {
            if let Some((oldest, _, _)) = self.recent.pop_front() {
                // That revision may have had other changes: it is no longer whole.
                self.recent_from = self.recent_from.max(oldest + 1);
            }
        }
    }
}

impl Lessee {
    fn start(shared: &Arc<Shared>, session: &Session) -> Lessee {
        let weak = Arc::downgrade(shared);
        let session = session.clone();
        let watch = tokio::spawn(async move {
            session.lost().await;
            let Some(shared) = weak.upgrade() else { return };
            let mut told = Told::new();
            shared.lock().session_lost(session.lease(), &mut told);
            tell(told);
        });
        Lessee {
            members: 0,
            _watch: Task(watch),
        }
    }
}

/// Bring a late member up to the follower's position `at`: read its key there
/// (or now, if `at` was compacted), judge that, then the changes the follower
/// held back meanwhile, in order. A store that cannot be read is asked again
/// until it answers or the member is gone.
async fn catch_up(shared: Weak<Shared>, service: String, key: String, id: u64, at: Revision) {
    let read = |revision: Option<Revision>| {
        let shared = shared.clone();
        let key = key.clone();
        async move {
            let shared = shared.upgrade()?;
            let mut request = crate::backend::RangeRequest::key(key);
            if let Some(r) = revision {
                request = request.at_revision(r);
            }
            Some(shared.backend.range(request).await)
        }
    };
    let mut revision = Some(at);
    let state = loop {
        match read(revision).await {
            None => return,
            Some(Ok(state)) => break state,
            Some(Err(crate::Error::Compacted { .. })) => revision = None,
            Some(Err(_)) => {}
        }
        let Some(strong) = shared.upgrade() else {
            return;
        };
        let present = strong
            .lock()
            .services
            .get(&service)
            .and_then(|s| s.members.get(key.as_bytes()))
            .is_some_and(|m| m.id == id);
        if !present {
            return;
        }
        let retry = strong.retry.clone();
        drop(strong);
        retry.pause().await;
    };
    let Some(shared) = shared.upgrade() else {
        return;
    };
    let mut told = Told::new();
    let mut table = shared.lock();
    let Some(m) = table
        .services
        .get_mut(&service)
        .and_then(|s| s.members.get_mut(key.as_bytes()))
        .filter(|m| m.id == id)
    else {
        return;
    };
    let read_at = state.revision;
    let mut changes = vec![(read_at, Change::Now(state.kvs.into_iter().next()))];
    changes.extend(
        m.waiting
            .take()
            .unwrap_or_default()
            .into_iter()
            .filter(|(r, _)| *r > read_at),
    );
    let verdict = changes.iter().find_map(|(r, c)| m.judge(*r, c));
    if let Some(why) = verdict {
        table.end(&service, key.as_bytes(), id, why, &mut told);
    }
    drop(table);
    tell(told);
}
