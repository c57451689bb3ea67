//! The store: an MVCC key history, leases on tokio's clock, and the event log that
//! watches replay from. Everything here runs under one mutex and never awaits.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use coordkit::{
    DeleteRequest, Error, Event, EventKind, KeyRange, KeyValue, LeaseGrant, LeaseId, LeaseInfo,
    PutRequest, RangeRequest, RangeResponse, Result, Revision, SortOrder, Txn, TxnOp,
    TxnOpResponse, TxnResponse, WatchResponse,
};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use tokio::time::Instant;

use crate::watchers::{Watcher, Watchers};

/// One version of a key: a value, or a tombstone written by a delete at `revision`.
struct Version {
    revision: Revision,
    kv: Option<KeyValue>,
}

struct Lease {
    ttl: i64,
    deadline: Instant,
    keys: BTreeSet<Vec<u8>>,
}

/// The whole state of one in-memory store.
pub(crate) struct State {
    revision: Revision,
    compacted: Revision,
    keys: BTreeMap<Vec<u8>, Vec<Version>>,
    /// Every revision's events (with prev_kv), oldest first, back to `compacted`.
    history: VecDeque<WatchResponse>,
    leases: BTreeMap<i64, Lease>,
    deadlines: BTreeSet<(Instant, i64)>,
    next_lease: i64,
    watchers: Watchers,
}

fn tombstone(key: Vec<u8>, revision: Revision) -> KeyValue {
    KeyValue {
        key,
        value: Vec::new(),
        create_revision: 0,
        mod_revision: revision,
        version: 0,
        lease: None,
    }
}

/// The events of one revision that a watch of `keys` is owed.
fn owed(events: &[Event], keys: &KeyRange, prev_kv: bool) -> Vec<Event> {
    events
        .iter()
        .filter(|e| keys.contains(&e.kv.key))
        .map(|e| Event {
            kind: e.kind,
            kv: e.kv.clone(),
            prev_kv: if prev_kv { e.prev_kv.clone() } else { None },
        })
        .collect()
}

impl State {
    pub(crate) fn new() -> Self {
        State {
            revision: 1,
            compacted: 0,
            keys: BTreeMap::new(),
            history: VecDeque::new(),
            leases: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            next_lease: 0x7a11_0000_0001,
            watchers: Watchers::default(),
        }
    }

    pub(crate) fn revision(&self) -> Revision {
        self.revision
    }

    fn current(&self, key: &[u8]) -> Option<&KeyValue> {
        self.keys.get(key)?.last()?.kv.as_ref()
    }

    fn at(versions: &[Version], revision: Revision) -> Option<&KeyValue> {
        let idx = versions.partition_point(|v| v.revision <= revision);
        versions[..idx].last()?.kv.as_ref()
    }

    fn future(&self, revision: Revision) -> Error {
        Error::invalid(
            "revision",
            format!(
                "{revision} is in the future (the store is at {})",
                self.revision
            ),
        )
    }

    fn check_readable(&self, revision: Revision) -> Result<()> {
        if revision > self.revision {
            return Err(self.future(revision));
        }
        if revision < self.compacted {
            return Err(Error::Compacted {
                compact_revision: self.compacted,
            });
        }
        Ok(())
    }

    /// Live key-values in `keys` as of `revision`, in key order.
    fn scan(&self, keys: &KeyRange, revision: Revision) -> Vec<KeyValue> {
        match keys {
            KeyRange::Key(k) => self
                .keys
                .get(k)
                .and_then(|v| Self::at(v, revision))
                .cloned()
                .into_iter()
                .collect(),
            KeyRange::Prefix(p) => {
                let inside = self
                    .keys
                    .range(p.clone()..)
                    .take_while(|(k, _)| k.starts_with(p))
                    .count();
                self.keys
                    .range(p.clone()..)
                    .take(inside)
                    .filter_map(|(_, v)| Self::at(v, revision).cloned())
                    .collect()
            }
        }
    }

    pub(crate) fn range(&self, request: &RangeRequest) -> Result<RangeResponse> {
        let at = match request.revision {
            Some(r) => {
                self.check_readable(r)?;
                r
            }
            None => Revision::MAX,
        };
        let mut kvs = self.scan(&request.keys, at);
        let count = kvs.len() as i64;
        if let Some(max) = request.max_create_revision {
            kvs.retain(|kv| kv.create_revision <= max);
        }
        match request.sort_by_create_revision {
            Some(SortOrder::Ascend) => kvs.sort_by_key(|kv| kv.create_revision),
            Some(SortOrder::Descend) => kvs.sort_by_key(|kv| std::cmp::Reverse(kv.create_revision)),
            None => {}
        }
        let mut more = false;
        if let Some(limit) = request.limit {
            if kvs.len() as u64 > limit {
                kvs.truncate(limit as usize);
                more = true;
            }
        }
        if request.count_only {
            // No key is returned, so none is left to return (as etcd answers).
            kvs.clear();
            more = false;
        }
        Ok(RangeResponse {
            kvs,
            count,
            more,
            revision: self.revision,
        })
    }

    fn detach(&mut self, kv: &KeyValue) {
        if let Some(lease) = kv.lease.and_then(|l| self.leases.get_mut(&l.0)) {
            lease.keys.remove(&kv.key);
        }
    }

    fn write(&mut self, key: Vec<u8>, revision: Revision, kv: Option<KeyValue>) {
        self.keys
            .entry(key)
            .or_default()
            .push(Version { revision, kv });
    }

    pub(crate) fn txn(&mut self, txn: Txn) -> Result<TxnResponse> {
        let succeeded = txn
            .compares
            .iter()
            .all(|c| c.evaluate(self.current(&c.key)));
        let ops = if succeeded { txn.success } else { txn.failure };
        // Check everything that could fail before applying anything: all or nothing.
        self.check_ops(&ops)?;
        let rev = self.revision + 1;
        let mut events = Vec::new();
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            match op {
                TxnOp::Put(p) => responses.push(self.apply_put(p, rev, &mut events)),
                TxnOp::Delete(d) => responses.push(self.apply_delete(d, rev, &mut events)),
                TxnOp::Range(r) => responses.push(TxnOpResponse::Range(self.range(&r)?)),
            }
        }
        if !events.is_empty() {
            self.revision = rev;
            self.publish(rev, events);
        }
        for r in &mut responses {
            if let TxnOpResponse::Range(range) = r {
                range.revision = self.revision;
            }
        }
        Ok(TxnResponse {
            succeeded,
            responses,
            revision: self.revision,
        })
    }

    /// What could fail in `ops` (a lease that is gone, a read below the
    /// compaction), checked before anything applies.
    fn check_ops(&self, ops: &[TxnOp]) -> Result<()> {
        for op in ops {
            match op {
                TxnOp::Put(p) => {
                    if let Some(l) = p.lease {
                        if !self.leases.contains_key(&l.0) {
                            return Err(Error::LeaseNotFound { id: l.0 });
                        }
                    }
                }
                TxnOp::Range(r) => {
                    if let Some(rev) = r.revision {
                        self.check_readable(rev)?;
                    }
                }
                TxnOp::Delete(_) => {}
            }
        }
        Ok(())
    }

    /// Apply put `p` at revision `rev`, with its event.
    fn apply_put(
        &mut self,
        p: PutRequest,
        rev: Revision,
        events: &mut Vec<Event>,
    ) -> TxnOpResponse {
        let prev = self.current(&p.key).cloned();
        let kv = KeyValue {
            key: p.key.clone(),
            value: p.value,
            create_revision: prev.as_ref().map_or(rev, |kv| kv.create_revision),
            mod_revision: rev,
            version: prev.as_ref().map_or(1, |kv| kv.version + 1),
            lease: p.lease,
        };
        if let Some(prev) = &prev {
            self.detach(prev);
        }
        if let Some(lease) = p.lease.and_then(|l| self.leases.get_mut(&l.0)) {
            lease.keys.insert(p.key.clone());
        }
        self.write(p.key, rev, Some(kv.clone()));
        let response = TxnOpResponse::Put {
            prev_kv: if p.prev_kv { prev.clone() } else { None },
        };
        events.push(Event {
            kind: EventKind::Put,
            kv,
            prev_kv: prev,
        });
        response
    }

    /// Apply delete `d` at revision `rev`, with an event per key deleted.
    fn apply_delete(
        &mut self,
        d: DeleteRequest,
        rev: Revision,
        events: &mut Vec<Event>,
    ) -> TxnOpResponse {
        let victims = self.scan(&d.keys, Revision::MAX);
        for kv in &victims {
            self.detach(kv);
            self.write(kv.key.clone(), rev, None);
            events.push(Event {
                kind: EventKind::Delete,
                kv: tombstone(kv.key.clone(), rev),
                prev_kv: Some(kv.clone()),
            });
        }
        TxnOpResponse::Delete {
            deleted: victims.len() as i64,
            prev_kvs: if d.prev_kv { victims } else { Vec::new() },
        }
    }

    fn publish(&mut self, revision: Revision, events: Vec<Event>) {
        self.watchers.publish(revision, &events);
        self.history.push_back(WatchResponse { revision, events });
    }

    pub(crate) fn compact(&mut self, revision: Revision) -> Result<()> {
        if revision > self.revision {
            return Err(self.future(revision));
        }
        if revision <= self.compacted {
            return Err(Error::Compacted {
                compact_revision: self.compacted,
            });
        }
        self.keys.retain(|_, versions| {
            let keep_from = versions.partition_point(|v| v.revision <= revision);
            // Keep the version visible at `revision` (unless it is a tombstone) and later ones.
            let mut drop = keep_from.saturating_sub(1);
            if keep_from > 0 && versions[keep_from - 1].kv.is_none() {
                drop = keep_from;
            }
            versions.drain(..drop);
            !versions.is_empty()
        });
        let keep = self.history.partition_point(|r| r.revision < revision);
        self.history.drain(..keep);
        self.compacted = revision;
        Ok(())
    }

    // ---- leases ----

    pub(crate) fn grant(&mut self, ttl: i64, now: Instant) -> LeaseGrant {
        let id = self.next_lease;
        self.next_lease += 1;
        self.grant_as(id, ttl, now)
    }

    fn grant_as(&mut self, id: i64, ttl: i64, now: Instant) -> LeaseGrant {
        let deadline = now + Duration::from_secs(ttl as u64);
        self.leases.insert(
            id,
            Lease {
                ttl,
                deadline,
                keys: BTreeSet::new(),
            },
        );
        self.deadlines.insert((deadline, id));
        LeaseGrant {
            id: LeaseId(id),
            ttl,
        }
    }

    pub(crate) fn keep_alive(&mut self, id: LeaseId, now: Instant) -> Result<i64> {
        let lease = self
            .leases
            .get_mut(&id.0)
            .ok_or(Error::LeaseNotFound { id: id.0 })?;
        self.deadlines.remove(&(lease.deadline, id.0));
        lease.deadline = now + Duration::from_secs(lease.ttl as u64);
        self.deadlines.insert((lease.deadline, id.0));
        Ok(lease.ttl)
    }

    pub(crate) fn time_to_live(&self, id: LeaseId, now: Instant) -> Result<LeaseInfo> {
        let lease = self
            .leases
            .get(&id.0)
            .ok_or(Error::LeaseNotFound { id: id.0 })?;
        Ok(LeaseInfo {
            id,
            granted_ttl: lease.ttl,
            remaining_ttl: lease.deadline.saturating_duration_since(now).as_secs() as i64,
            keys: lease.keys.iter().cloned().collect(),
        })
    }

    /// End a lease: its keys are deleted in one revision (none if it had no keys).
    pub(crate) fn revoke(&mut self, id: LeaseId) -> Result<()> {
        let lease = self
            .leases
            .remove(&id.0)
            .ok_or(Error::LeaseNotFound { id: id.0 })?;
        self.deadlines.remove(&(lease.deadline, id.0));
        if lease.keys.is_empty() {
            return Ok(());
        }
        let rev = self.revision + 1;
        let mut events = Vec::with_capacity(lease.keys.len());
        for key in lease.keys {
            if let Some(prev) = self.current(&key).cloned() {
                self.write(key.clone(), rev, None);
                events.push(Event {
                    kind: EventKind::Delete,
                    kv: tombstone(key, rev),
                    prev_kv: Some(prev),
                });
            }
        }
        if !events.is_empty() {
            self.revision = rev;
            self.publish(rev, events);
        }
        Ok(())
    }

    /// End every lease whose deadline is at or before `now`, earliest first.
    pub(crate) fn expire(&mut self, now: Instant) {
        while let Some(&(deadline, id)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            // The lease exists: `deadlines` and `leases` change together.
            let _ = self.revoke(LeaseId(id));
        }
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|(d, _)| *d)
    }

    // ---- watches ----

    /// Register a watch from `start` (inclusive): replays history, then follows.
    pub(crate) fn register(
        &mut self,
        client: u64,
        keys: &KeyRange,
        prev_kv: bool,
        start: Revision,
    ) -> Result<UnboundedReceiver<WatchResponse>> {
        if start < self.compacted {
            return Err(Error::Compacted {
                compact_revision: self.compacted,
            });
        }
        let (tx, rx) = unbounded_channel();
        let from = self.history.partition_point(|r| r.revision < start);
        for resp in self.history.range(from..) {
            let owed = owed(&resp.events, keys, prev_kv);
            if !owed.is_empty() {
                let _ = tx.send(WatchResponse {
                    revision: resp.revision,
                    events: owed,
                });
            }
        }
        self.watchers.add(Watcher {
            client,
            keys: keys.clone(),
            prev_kv,
            start,
            tx,
        });
        Ok(rx)
    }

    /// Drop every watch registration of one client (their streams see a disconnect).
    pub(crate) fn cut_watches(&mut self, client: u64) {
        self.watchers.cut(client);
    }

    pub(crate) fn watcher_count(&self) -> usize {
        self.watchers.live()
    }
}
