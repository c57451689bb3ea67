//! A claim: a key in a queue under a prefix, owned by the smallest create revision.
//!
//! Locks and elections are the same queue (etcd's `concurrency` protocol): a
//! candidate puts `<prefix><lease hex>` if absent, waits until no key created before
//! its own remains (watching only the one just before it), then re-checks its own
//! key. This module does that once for both.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::watch;
use tracing::{debug, field, info_span, warn, Instrument};

use crate::cleanup::{Cleanup, Orphan};
use crate::coordinator::CoordinatorInner;
use crate::follow::{watch_owned_key, Seen};
use crate::key_hold::KeyHold;
use crate::pace::QueuePace;
use crate::queue_name::QueueName;
use crate::watch_pool::{deletes_after, Drained, WatchPool};
use crate::Live;
use crate::{
    Backend, BackendExt, Compare, CompareOp, DeleteRequest, Error, EventKind, KeyRange, LeaseId,
    PutRequest, RangeRequest, ReadConsistency, Result, RetryPolicy, Revision, Session, SortOrder,
    Txn, TxnOp, TxnOpResponse, WatchRequest,
};

/// Why ownership of a lock or a leadership ended (see `LockGuard::lost`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OwnershipLost {
    /// The session's lease is gone or its local deadline passed.
    SessionLost,
    /// The claim's key was deleted by someone else.
    KeyDeleted,
    /// The claim's key was overwritten by someone else.
    KeyChanged,
    /// The owner released it (unlock, resign).
    Released,
}

/// One key of a lock's or an election's queue, as
/// [`LockService::holders_and_waiters`](crate::LockService::holders_and_waiters) reads it: the first is the holder (or leader),
/// the others wait in this order.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueEntry {
    /// The key (namespace included), `<prefix><lease hex>`.
    pub key: String,
    /// Its fencing token: the key's create revision.
    pub fencing_token: Revision,
    /// The lease it is attached to (`None` for a key written without one).
    pub lease: Option<LeaseId>,
    /// The lease's time left as the store reports it (`None`: no lease, or it
    /// could not be asked).
    pub ttl_left: Option<Duration>,
    /// The value (an election's proclaimed value; empty for a lock).
    pub value: Vec<u8>,
}

/// Read the queue of `name`: holder first, then waiters in order, each with its
/// lease's time left. Works on queues made by etcd's `etcdctl lock`/`elect` too.
pub(crate) async fn queue(
    coord: &Arc<CoordinatorInner>,
    kind: Kind,
    name: &QueueName,
) -> Result<Vec<QueueEntry>> {
    let prefix = queue_prefix(coord, kind, name)?;
    let read = RangeRequest::prefix(prefix).sort_by_create_revision(SortOrder::Ascend);
    let backend = &coord.backend;
    let resp = coord
        .retry
        .run("read queue", |_| backend.range(read.clone()))
        .await?;
    let mut entries = Vec::with_capacity(resp.kvs.len());
    for kv in resp.kvs {
        let ttl_left = match kv.lease {
            Some(lease) => backend
                .lease_time_to_live(lease)
                .await
                .ok()
                .map(|info| Duration::from_secs(info.remaining_ttl.max(0) as u64)),
            None => None,
        };
        entries.push(QueueEntry {
            key: kv.key_str(),
            fencing_token: kv.create_revision,
            lease: kv.lease,
            ttl_left,
            value: kv.value,
        });
    }
    Ok(entries)
}

/// Whether a claim waits for its turn or gives up at once.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    UntilOwner,
    No,
}

/// What a claim is of, for keys, errors and logs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Lock,
    Election,
    /// One of `permits` permits.
    Semaphore {
        permits: u32,
    },
    /// A read-write lock's reader.
    Read,
    /// A read-write lock's writer.
    Write,
}

impl Kind {
    /// The key segment after the namespace.
    fn segment(self) -> &'static str {
        match self {
            Kind::Lock => "lock",
            Kind::Election => "election",
            Kind::Semaphore { .. } => "semaphore",
            Kind::Read | Kind::Write => "rwlock",
        }
    }

    /// The name in logs and metrics.
    fn label(self) -> &'static str {
        match self {
            Kind::Read => "read_lock",
            Kind::Write => "write_lock",
            other => other.segment(),
        }
    }

    /// Locks and elections: one owner, one key per session (etcd's protocol, so
    /// tasks of one process queue locally). Others: a key per claim held at once
    /// (see `key_hold`).
    fn exclusive(self) -> bool {
        matches!(self, Kind::Lock | Kind::Election)
    }

    /// The value a shared claim's key carries, read by the others.
    pub(crate) fn value(self) -> Vec<u8> {
        match self {
            Kind::Semaphore { permits } => format!("permits={permits}").into_bytes(),
            Kind::Read => b"read".to_vec(),
            Kind::Write => b"write".to_vec(),
            Kind::Lock | Kind::Election => Vec::new(),
        }
    }

    /// Whether a shared claim is admitted given the keys created before its own
    /// (all of them, or for a semaphore at least the `permits` nearest: with
    /// that many it waits); `InvalidArgument` when one of them was made with
    /// another number of permits. Each claim is compared with the keys before
    /// it, so a queue holds one number of permits, and an admitted claim has
    /// been compared with every key before it.
    fn admits(self, name: &str, before: &[&crate::KeyValue]) -> Result<bool> {
        if let Kind::Semaphore { permits } = self {
            let ours = self.value();
            if let Some(other) = before.iter().find(|kv| kv.value != ours) {
                return Err(Error::invalid(
                    "permits",
                    format!(
                        "semaphore {name:?} is in use with {:?} (key {}), not {permits} permits: every client must give the same number",
                        String::from_utf8_lossy(&other.value),
                        other.key_str()
                    ),
                ));
            }
        }
        Ok(self.blocking(before).count() < self.room())
    }

    /// The earlier keys that keep a shared claim waiting: a reader waits for
    /// writers only (anything else is taken for a writer); the others for all.
    fn blocking<'a>(
        self,
        before: &'a [&'a crate::KeyValue],
    ) -> impl Iterator<Item = &'a crate::KeyValue> + 'a {
        before
            .iter()
            .copied()
            .filter(move |kv| self != Kind::Read || kv.value != b"read")
    }

    /// How many blocking keys still admit the claim, plus one.
    fn room(self) -> usize {
        match self {
            Kind::Semaphore { permits } => permits as usize,
            _ => 1,
        }
    }
}

/// The key prefix of the queue for `name` (checked first).
pub(crate) fn queue_prefix(
    coord: &CoordinatorInner,
    kind: Kind,
    name: &QueueName,
) -> Result<String> {
    name.key_prefix(&coord.namespace, kind.segment())
}

/// A held claim: the owner's key, its create revision (the fencing token), and the
/// session that keeps it.
pub(crate) struct Claim {
    backend: Arc<dyn Backend>,
    retry: RetryPolicy,
    cleanup: Cleanup,
    name: String,
    key: String,
    token: Revision,
    session: Session,
    /// Keeps this process off the key until its release or cleanup is done.
    hold: Mutex<Option<KeyHold>>,
    released: watch::Sender<bool>,
    /// A release is in flight: its delete is not someone else's.
    releasing: AtomicBool,
    lost: Mutex<Option<OwnershipLost>>,
    /// The owner's own writes to its key (the claim, proclaims), recorded before
    /// each is sent, so a watcher never mistakes one for someone else's.
    own_writes: Mutex<OwnWrites>,
    /// A try of the claim's write got no answer: a copy of it may still land
    /// after the release (see `Cleanup::watch_late_writes`).
    in_doubt: bool,
    /// For metrics: what it is, when it was acquired, whether its end was counted.
    kind: &'static str,
    acquired: tokio::time::Instant,
    end_counted: AtomicBool,
}

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

    pub(crate) fn sending(&mut self, value: &[u8]) {
        if self.entries.len() == Self::CAPACITY {
            self.entries.pop_front();
        }
        self.entries.push_back((None, value.to_vec()));
    }

    /// A write known to have committed at `revision`. The entry of its send
    /// stays: an earlier try of the same write may have committed too, at a
    /// revision nobody was told.
    pub(crate) fn written(&mut self, value: &[u8], revision: Revision) {
        if self.entries.len() == Self::CAPACITY {
            self.entries.pop_front();
        }
        self.entries.push_back((Some(revision), value.to_vec()));
    }

    /// Whether a put of `kv` (on the owner's key, create revision checked by the
    /// caller) is one of the owner's own, forgetting known writes older than it.
    pub(crate) fn is_own(&mut self, kv: &crate::KeyValue, lease: LeaseId) -> bool {
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

/// A key being claimed: removed again (in the background) if the claim does not
/// complete, and its hold (the local turn or the slot) dropped only after that.
struct Pending {
    cleanup: Cleanup,
    session: Session,
    key: String,
    token: Option<Revision>,
    /// The key is to be removed if the claim does not complete.
    armed: bool,
    hold: Option<KeyHold>,
    /// The claim's write while it runs: polled by the claim, and by the cleanup
    /// (before its delete) if the claim is dropped mid-write.
    in_flight: Option<ClaimWrite>,
    /// A try of the write got no answer: a copy may land after the removal.
    in_doubt: bool,
}

/// The claim's write (its response and the try that got it), boxed so that a
/// cancelled claim can hand it, still running, to the cleanup.
type ClaimWrite =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(crate::TxnResponse, u32)>> + Send>>;

impl Pending {
    fn disarm(mut self) -> Option<KeyHold> {
        self.token = None;
        self.armed = false;
        self.hold.take()
    }

    /// The key as an orphan: guarded by its create revision when known, else by
    /// the lease (a lost response may have created it; the key's hold guarantees
    /// no other task of this process did).
    fn orphan(&mut self) -> Option<Orphan> {
        if !std::mem::take(&mut self.armed) {
            return None;
        }
        let hold = self.hold.take();
        let guards = vec![orphan_guard(&self.key, self.token, self.session.lease())];
        // A write still in flight when the claim was dropped may be held by the
        // store past its caller: as one whose answer never came.
        let late_writes = self.in_doubt || self.in_flight.is_some();
        let after = self.in_flight.take().map(|write| {
            Box::pin(async move {
                let _ = write.await;
            }) as std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
        });
        Some(Orphan {
            key: std::mem::take(&mut self.key),
            also: Vec::new(),
            guards,
            session: self.session.clone(),
            hold,
            after,
            late_writes,
        })
    }

    /// Remove the key (for a failed try) and wait until it is gone; cancelling
    /// this leaves the removal running in the background.
    async fn remove_now(mut self) {
        if let Some(orphan) = self.orphan() {
            self.cleanup
                .remove_and_wait("abandoned claim", orphan)
                .await;
        }
    }
}

fn orphan_guard(key: &str, token: Option<Revision>, lease: LeaseId) -> Compare {
    match token {
        Some(t) => Compare::create_revision(key, CompareOp::Equal, t),
        None => Compare::lease(key, CompareOp::Equal, Some(lease)),
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(orphan) = self.orphan() {
            self.cleanup.remove("abandoned claim", orphan);
        }
    }
}

fn expired(name: &str) -> Error {
    Error::LockExpired {
        name: name.to_string(),
    }
}

/// Claim `name` with `value`: wait for the turn (or give up at once with
/// `LockConflict`), then return the held claim.
pub(crate) async fn claim(
    coord: &Arc<CoordinatorInner>,
    kind: Kind,
    name: &QueueName,
    ttl: Duration,
    value: Vec<u8>,
    wait: Wait,
) -> Result<Claim> {
    let prefix = queue_prefix(coord, kind, name)?;
    let name = name.as_str();
    coord.check_open()?;
    let started = tokio::time::Instant::now();
    let span = info_span!(
        "coord.claim",
        kind = kind.label(),
        name,
        key = field::Empty,
        token = field::Empty
    );
    // A claim whose session's lease ended under it (revoked, or expired while the
    // claim was on its way) can never stand: the caller learns it as an expired
    // claim, never as the primitive's `LeaseNotFound`.
    let claim = claim_in_span(coord, kind, name, prefix, ttl, value, wait)
        .instrument(span)
        .await
        .map_err(|e| match e {
            Error::LeaseNotFound { .. } => expired(name),
            e => e,
        })?;
    crate::telemetry::claim_acquired(kind.label(), started.elapsed());
    Ok(claim)
}

async fn claim_in_span(
    coord: &Arc<CoordinatorInner>,
    kind: Kind,
    name: &str,
    prefix: String,
    ttl: Duration,
    value: Vec<u8>,
    wait: Wait,
) -> Result<Claim> {
    let conflict = || Error::LockConflict {
        name: name.to_string(),
    };
    let exclusive = kind.exclusive();
    let turn = match wait {
        _ if !exclusive => None,
        Wait::UntilOwner => Some(coord.local.wait(&prefix).await),
        Wait::No => Some(coord.local.try_now(&prefix).ok_or_else(conflict)?),
    };
    let session = coord.session(ttl).await?;
    let backend = coord.backend.clone();
    let retry = coord.retry.clone();
    let lease = session.lease();
    // A shared claim's key takes the lowest number this session's claims of the
    // name leave free (see `key_hold`).
    let (key, hold) = match turn {
        Some(turn) => (format!("{prefix}{lease}"), KeyHold::Turn(turn)),
        None => {
            let slot = coord.slots.take(format!("{prefix}{lease}-"));
            (slot.key(), KeyHold::Slot(slot))
        }
    };
    tracing::Span::current().record("key", key.as_str());
    // A late write of this session's last claim of the key is this claim's now.
    coord.cleanup.taken_over(&key);
    let mut pending = Pending {
        cleanup: coord.cleanup.clone(),
        session: session.clone(),
        key: key.clone(),
        token: None,
        armed: true,
        hold: Some(hold),
        in_flight: None,
        in_doubt: false,
    };

    // Create the key if absent (else read it: a retry after a lost response finds
    // its own), and read the queue, in one transaction. Safe to repeat.
    // After our put, the two newest keys are ours and the one just before it: we
    // own the queue if there is no such predecessor, and otherwise it is the key a
    // waiter watches, known without another read. (One range does what etcd's
    // `Mutex` does with its owner read, so the claim costs the server no more.)
    let newest = RangeRequest::prefix(prefix.clone())
        .sort_by_create_revision(SortOrder::Descend)
        .with_limit(2);
    let owner = RangeRequest::prefix(prefix.clone())
        .sort_by_create_revision(SortOrder::Ascend)
        .with_limit(1);
    // A shared claim reads the whole queue: which keys before it block it
    // depends on what they are. A semaphore's claim, where every key blocks,
    // reads its own and the `permits` before it (and the count): admitted, it
    // has read every key before it; else its wait reads them once they are
    // fewer (see `Kind::admits` for the permits they carry).
    let (newest, owner) = match kind {
        _ if exclusive => (newest, owner),
        Kind::Semaphore { .. } => (
            RangeRequest::prefix(prefix.clone())
                .sort_by_create_revision(SortOrder::Descend)
                .with_limit(kind.room() as u64 + 1),
            RangeRequest::prefix(prefix.clone()),
        ),
        _ => {
            let all = RangeRequest::prefix(prefix.clone());
            (all.clone(), all)
        }
    };
    let txn = Txn::new()
        .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
        .and_then([
            TxnOp::Put(PutRequest::new(key.clone(), value.clone()).with_lease(lease)),
            TxnOp::Range(newest),
        ])
        .or_else([
            TxnOp::Range(RangeRequest::key(key.clone())),
            TxnOp::Range(owner),
        ]);
    let mut own_writes = OwnWrites::default();
    own_writes.sending(&value);
    let mut leftovers = 0;
    let mut in_doubt = false;
    let resp = loop {
        // A cancelled call cannot leave the claim's write in flight unseen: the
        // pending claim hands it to the cleanup, which lets it finish before
        // deleting (else the write could land after the delete and orphan the key).
        let write: ClaimWrite = {
            let (backend, retry, txn) = (backend.clone(), retry.clone(), txn.clone());
            Box::pin(async move {
                retry
                    .run("claim", |attempt| {
                        let (backend, txn) = (backend.clone(), txn.clone());
                        async move { Ok((backend.txn(txn).await?, attempt)) }
                    })
                    .await
            })
        };
        let outcome = pending.in_flight.insert(write).await;
        pending.in_flight = None;
        pending.in_doubt |= outcome.as_ref().map_or(true, |(_, attempt)| *attempt > 1);
        let (resp, attempt) = outcome?;
        in_doubt |= attempt > 1;
        // Found on the first try, our key predates this call: an earlier claim
        // of this session whose removal did not finish. Re-adopting it would hand
        // out its token twice; remove it and claim afresh.
        let found = (!resp.succeeded && attempt == 1)
            .then(|| resp.first_range().and_then(|r| r.kvs.first()))
            .flatten()
            .filter(|kv| kv.lease == Some(lease));
        match found {
            Some(kv) if leftovers < 3 => {
                leftovers += 1;
                warn!(
                    token = kv.create_revision,
                    "removing a leftover claim of this session"
                );
                let remove = Txn::new()
                    .when([Compare::create_revision(
                        key.clone(),
                        CompareOp::Equal,
                        kv.create_revision,
                    )])
                    .and_then([DeleteRequest::key(key.clone())]);
                retry
                    .run("remove leftover claim", |_| backend.txn(remove.clone()))
                    .await?;
            }
            _ => break resp,
        }
    };
    let ranges = range_responses(&resp);
    let token = if resp.succeeded {
        own_writes.written(&value, resp.revision);
        resp.revision
    } else {
        match ranges.first().and_then(|r| r.kvs.first()) {
            Some(kv) if kv.lease == Some(lease) => {
                own_writes.written(&kv.value, kv.mod_revision);
                kv.create_revision
            }
            // Someone wrote this session's exact key without its lease.
            Some(_) => return Err(conflict()),
            None => {
                return Err(Error::unavailable(format!(
                    "{} backend reported {key} both absent and present",
                    backend.name()
                )))
            }
        }
    };
    pending.token = Some(token);
    tracing::Span::current().record("token", token);
    // Success: [the newest two: ours, then its predecessor if any]; else: [our
    // key, the owner].
    // What the claim's read found before the claim, and its revision: the first
    // look of a waiter.
    let mut earlier = None;
    let mut ahead = 1;
    let (owns, predecessor) = if !exclusive {
        let all = ranges.last().map_or(&[][..], |r| r.kvs.as_slice());
        let before: Vec<&crate::KeyValue> =
            all.iter().filter(|kv| kv.create_revision < token).collect();
        // Keys before ours: every other key of the queue after our put (the
        // read may have stopped short of them).
        let keys_before = match ranges.last() {
            Some(r) if resp.succeeded => usize::try_from(r.count - 1).unwrap_or(0),
            _ => before.len(),
        };
        match kind.admits(name, &before) {
            Ok(admitted) => {
                let mut before: Vec<crate::KeyValue> = before.into_iter().cloned().collect();
                before.sort_by_key(|kv| std::cmp::Reverse(kv.create_revision));
                earlier = Some((before, resp.revision, keys_before));
                (admitted, None)
            }
            Err(e) => {
                pending.remove_now().await;
                return Err(e);
            }
        }
    } else if resp.succeeded {
        // The claims ahead: the queue held ours and `count - 1` others.
        ahead = ranges
            .first()
            .map_or(1, |r| usize::try_from(r.count - 1).unwrap_or(1));
        let predecessor = ranges
            .first()
            .and_then(|r| r.kvs.iter().find(|kv| kv.create_revision < token))
            .map(|kv| (kv.key.clone(), kv.create_revision));
        (predecessor.is_none(), predecessor)
    } else {
        let owner = ranges.get(1).and_then(|r| r.kvs.first());
        (owner.map(|kv| kv.create_revision) == Some(token), None)
    };

    if !owns {
        if wait == Wait::No {
            pending.remove_now().await;
            return Err(conflict());
        }
        debug!("queued; waiting for the claims before this one");
        // Boxed: only a queued claim needs it, so the uncontended claim's
        // future stays small.
        let waiter = Waiter {
            backend: &backend,
            retry: &retry,
            pace: &coord.pace,
            watches: &coord.watches,
            prefix: &prefix,
            key: &key,
            lease,
            token,
        };
        let waiting: std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<bool>> + Send + '_>,
        > = if exclusive {
            Box::pin(wait_for_turn(
                waiter,
                predecessor.map(|p| (p, resp.revision, ahead)),
            ))
        } else {
            Box::pin(wait_for_admission(waiter, kind, name, earlier))
        };
        let owner = tokio::select! {
            waited = waiting => waited?,
            _ = session.lost() => false,
        };
        // The wait may have outlived the key (its lease ended, someone deleted it).
        if !owner || session.is_lost() {
            warn!("claim ended while queued");
            return Err(expired(name));
        }
    }

    // A claim whose value differs (a retry of an earlier campaign) carries the new one.
    if !resp.succeeded {
        let current = ranges.first().and_then(|r| r.kvs.first());
        if current.is_some_and(|kv| kv.value != value) {
            let put = Txn::new()
                .when([Compare::create_revision(
                    key.clone(),
                    CompareOp::Equal,
                    token,
                )])
                .and_then([PutRequest::new(key.clone(), value.clone()).with_lease(lease)]);
            own_writes.sending(&value);
            let r = retry.run("proclaim", |_| backend.txn(put.clone())).await?;
            if !r.succeeded {
                return Err(expired(name));
            }
            own_writes.written(&value, r.revision);
        }
    }

    debug!("acquired");
    let hold = pending.disarm();
    let mut claim = Claim::held(coord, kind, name, key, token, session, hold, own_writes);
    claim.in_doubt = in_doubt;
    Ok(claim)
}

/// Take over a claim made before (by this process before a restart): the key
/// `<prefix><lease hex>` of `session`'s lease must still exist with create
/// revision `token` on that lease (else `LockExpired`) and own the queue (else
/// `NotLeader`); `turn` is this coordinator's local turn at the name, taken by
/// the caller (so that a conflict is known before the lease is touched).
pub(crate) async fn adopt(
    coord: &Arc<CoordinatorInner>,
    kind: Kind,
    name: &QueueName,
    session: Session,
    token: Revision,
    turn: crate::local_queue::LocalTurn,
) -> Result<Claim> {
    let prefix = queue_prefix(coord, kind, name)?;
    let name = name.as_str();
    coord.check_open()?;
    if !kind.exclusive() {
        return Err(Error::invalid(
            "kind",
            "only a lock or an election can be resumed",
        ));
    }
    let lease = session.lease();
    let key = format!("{prefix}{lease}");
    let look = Txn::new()
        .when([
            Compare::create_revision(key.clone(), CompareOp::Equal, token),
            Compare::lease(key.clone(), CompareOp::Equal, Some(lease)),
        ])
        .and_then([
            TxnOp::Range(RangeRequest::key(key.clone())),
            TxnOp::Range(
                RangeRequest::prefix(prefix.clone())
                    .sort_by_create_revision(SortOrder::Ascend)
                    .with_limit(1),
            ),
        ]);
    let backend = coord.backend.clone();
    let retry = coord.retry.clone();
    let resp = retry
        .run("resume claim", |_| backend.txn(look.clone()))
        .await?;
    let ranges = range_responses(&resp);
    let (Some(own), true) = (ranges.first().and_then(|r| r.kvs.first()), resp.succeeded) else {
        return Err(expired(name));
    };
    if ranges
        .get(1)
        .and_then(|r| r.kvs.first())
        .map(|kv| kv.create_revision)
        != Some(token)
    {
        return Err(Error::NotLeader {
            name: name.to_string(),
        });
    }
    let mut own_writes = OwnWrites::default();
    own_writes.written(&own.value, own.mod_revision);
    Ok(Claim::held(
        coord,
        kind,
        name,
        key,
        token,
        session,
        Some(KeyHold::Turn(turn)),
        own_writes,
    ))
}

/// The range results of a transaction, in order.
fn range_responses(resp: &crate::TxnResponse) -> Vec<&crate::RangeResponse> {
    resp.responses
        .iter()
        .filter_map(|r| match r {
            TxnOpResponse::Range(r) => Some(r),
            _ => None,
        })
        .collect()
}

/// The claim just before a waiter's: its key and create revision.
type Predecessor = (Vec<u8>, Revision);

/// A queued claim: its key `key` under `prefix` with create revision `token` on
/// `lease`, and what it waits with.
#[derive(Clone, Copy)]
struct Waiter<'a> {
    backend: &'a Arc<dyn Backend>,
    retry: &'a RetryPolicy,
    pace: &'a QueuePace,
    watches: &'a WatchPool,
    prefix: &'a str,
    key: &'a str,
    lease: LeaseId,
    token: Revision,
}

impl Waiter<'_> {
    /// Glance at `keys` (see [`glance`]): `None` once our key is gone, else
    /// whether each key stands with its create revision, and the revision read.
    async fn glance(&self, keys: &[(&Vec<u8>, Revision)]) -> Result<Option<(bool, Revision)>> {
        let txn = glance(
            self.key,
            self.lease,
            self.token,
            keys.iter().map(|(k, _)| *k),
        );
        let resp = self
            .retry
            .run("glance at queue", |_| self.backend.txn(txn.clone()))
            .await?;
        if !resp.succeeded {
            return Ok(None);
        }
        let all_stand = keys
            .iter()
            .enumerate()
            .all(|(i, (_, created))| stands(&resp, i, *created));
        Ok(Some((all_stand, resp.revision)))
    }

    /// When the next glance is due: see [`glance_delay`], at this queue's pace.
    fn glance_delay(&self, ahead: usize, glanced: usize) -> Option<Duration> {
        glance_delay(ahead, glanced, self.pace.step(self.prefix))
    }
}

/// Wait until no key of the queue was created before `token`, watching only the
/// one just before (a release wakes one waiter). Each look at the queue re-checks
/// in the same transaction that our own key is still there with its create
/// revision and lease: `Ok(false)` as soon as it is not.
///
/// The watch on the predecessor starts "from now". When the backend reports that
/// it starts no later than the read that named the predecessor (`named`: the
/// claim's own read, or a look), nothing can have been missed in between and the
/// waiter goes straight to waiting; else it looks at the queue again: a delete
/// before the watch shows in that look, a delete after it arrives as an event at
/// once (a watch from a past revision could lag in etcd's catch-up loop for up to
/// 100 ms).
async fn wait_for_turn(
    waiter: Waiter<'_>,
    named: Option<(Predecessor, Revision, usize)>,
) -> Result<bool> {
    let Waiter {
        backend,
        retry,
        prefix,
        key,
        lease,
        token,
        ..
    } = waiter;
    // The releases ahead when the claim was made, for the queue's pace.
    let began = (tokio::time::Instant::now(), named.as_ref().map(|n| n.2));
    // Each look reads a state that includes everything this backend has seen
    // (`Observed`): the watch's creation, so a predecessor the look finds is
    // deleted after the watch's start and its delete is delivered; and the event
    // that woke the waiter, so the look sees that delete. No key created before
    // ours can appear later, so "ours is there on our lease and none older is"
    // at that state is ownership from then on, for as long as our key stands
    // (which the session's deadline and the ownership watch cover, as after any
    // read). On etcd such a look needs no round through the leader and does not
    // wait for the writes in flight (the old holder's next claim): it is the
    // last step of a handoff.
    let look = Txn::new()
        .when([
            Compare::create_revision(key, CompareOp::Equal, token),
            Compare::lease(key, CompareOp::Equal, Some(lease)),
        ])
        .and_then([RangeRequest::prefix(prefix)
            .with_max_create_revision(token - 1)
            .sort_by_create_revision(SortOrder::Descend)
            .with_limit(1)])
        .with_consistency(ReadConsistency::Observed);
    // The predecessor (key, create revision) the last read named, with that
    // read's revision and how many claims were ahead (1 if unknown), when no look
    // is needed to know it.
    let mut named = named;
    // The predecessor being watched, its watch, the claims ahead when it began,
    // how many glances it has had, whether it is live, and the revision it
    // delivers everything after (if known).
    let mut watching: Option<Watching> = None;
    loop {
        let (predecessor, read_at, ahead) = match named.take() {
            Some(named) => named,
            None => {
                let resp = retry
                    .run("look at queue", |_| backend.txn(look.clone()))
                    .await?;
                if !resp.succeeded {
                    return Ok(false);
                }
                let Some(previous) = resp.first_range().and_then(|r| r.kvs.first()) else {
                    if let (at, Some(releases)) = began {
                        waiter.pace.record(prefix, at.elapsed(), releases);
                    }
                    // Kept for the next wait behind the same key.
                    if let Some((watched, events, _, _, live, Some(after))) = watching {
                        waiter
                            .watches
                            .park(KeyRange::Key(watched.0), events, after, live);
                    }
                    return Ok(true);
                };
                (
                    (previous.key.clone(), previous.create_revision),
                    resp.revision,
                    1,
                )
            }
        };
        match watching.take() {
            Some((watched, mut events, ahead, glanced, mut live, after))
                if watched == predecessor =>
            {
                debug!(waiting_for = %String::from_utf8_lossy(&watched.0), "waiting");
                // A live watch delivers the delete as it commits: no glances.
                let early_look = match live.now() {
                    Some(true) => None,
                    _ => waiter.glance_delay(ahead, glanced),
                };
                // Whether the predecessor's delete came (the watch still
                // works), else the watch ended or failed.
                let woken = async {
                    while let Some(item) = events.next().await {
                        match item {
                            // (A delete before its creation ended an earlier
                            // claim of the same key.)
                            Ok(r) if deletes_after(&r, &watched.0, watched.1) => return Ok(true),
                            Ok(_) => {}
                            // Compacted or broken: look at the queue again.
                            Err(e) if e.is_retryable() || matches!(e, Error::Compacted { .. }) => {
                                tokio::time::sleep(retry.jittered_delay(1)).await;
                                return Ok(false);
                            }
                            Err(e) => return Err(e),
                        }
                    }
                    Ok(false)
                };
                let timer = async {
                    match early_look {
                        Some(after) => tokio::time::sleep(after).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    woken = woken => {
                        if woken? {
                            // Kept: the look that follows may own the queue and
                            // park it for the next wait behind this key.
                            watching = Some((watched, events, ahead, glanced, live, after));
                        }
                    }
                    _ = timer => {
                        if live.now() == Some(true) {
                            // Known live since: wait on the watch alone.
                            named = Some((watched.clone(), read_at, ahead));
                            watching = Some((watched, events, ahead, glanced, live, after));
                            continue;
                        }
                        // A glance (see `glance_delay`) need not read the queue: while the
                        // predecessor stands the waiter cannot own it, so a
                        // glance at that key (and ours) says whether to look.
                        let Some((stands, read_at)) = waiter.glance(&[(&watched.0, watched.1)]).await? else {
                            return Ok(false);
                        };
                        if stands {
                            named = Some((watched.clone(), read_at, ahead));
                        }
                        watching = Some((watched, events, ahead, glanced + 1, live, after));
                    }
                }
            }
            _ => {
                // A watch an earlier wait left on this key delivers everything
                // after its start (before `read_at`): what it buffered says
                // whether the predecessor is already gone.
                let keys = KeyRange::Key(predecessor.0.clone());
                if let Some(mut parked) = waiter.watches.take(&keys, read_at) {
                    let drained = parked.drain(&predecessor.0, predecessor.1);
                    if drained != Drained::Unusable {
                        if drained == Drained::Stands
                            && (ahead > 1 || live_soon(&mut parked.live).await)
                        {
                            named = Some((predecessor.clone(), read_at, ahead));
                        }
                        let after = Some(parked.after);
                        watching = Some((predecessor, parked.events, ahead, 0, parked.live, after));
                        continue;
                    }
                }
                match backend.watch_reporting_start(WatchRequest::new(keys)).await {
                    Ok((events, start)) => {
                        let (covered, mut live, after) = match start {
                            Some(start) => (start.after <= read_at, start.live, Some(start.after)),
                            None => (false, Live::known(false), None),
                        };
                        // Everything up to `read_at` was read, everything after it
                        // is delivered: no look in between is needed, unless the
                        // predecessor is the owner and the watch is not known to be
                        // live. Its delete is then due any moment, and a delete that
                        // commits while etcd registers the watch makes the watch lag
                        // (see `glance_delay`): a look right after the watch exists
                        // sees it at once.
                        if ahead <= 1 {
                            if covered && live_soon(&mut live).await {
                                named = Some((predecessor.clone(), read_at, ahead));
                            }
                        } else {
                            if covered {
                                named = Some((predecessor.clone(), read_at, ahead));
                            } else {
                                // The watch may start after that read: a glance
                                // (one key, not the queue) after it says whether the
                                // predecessor still stands, and then its delete is
                                // still to come, after the watch's start.
                                let Some((stands, read_at)) =
                                    waiter.glance(&[(&predecessor.0, predecessor.1)]).await?
                                else {
                                    return Ok(false);
                                };
                                if stands {
                                    named = Some((predecessor.clone(), read_at, ahead));
                                }
                            }
                        }
                        watching = Some((predecessor, events, ahead, 0, live, after));
                    }
                    Err(e) if e.is_retryable() => tokio::time::sleep(retry.jittered_delay(1)).await,
                    Err(e) => return Err(e),
                }
            }
        }
    }
}

/// What [`wait_for_turn`] waits with: the predecessor watched, its watch, the
/// claims ahead when the watch began, the glances it has had, whether it is
/// live, and the revision it delivers everything after (if known).
type Watching = (
    Predecessor,
    crate::WatchStream,
    usize,
    usize,
    Live,
    Option<Revision>,
);

/// Wait until a shared claim (semaphore permit, reader, writer) is admitted: fewer
/// blocking keys before it than it has room for (`room`: a semaphore's permits,
/// else 1). Each look re-checks the claim's own key in the same transaction:
/// `Ok(false)` once it is gone.
///
/// A waiter watches only the `room` blocking keys nearest before its own. While
/// all of them stand it has at least `room` blocking keys before it, so it cannot
/// be admitted, whatever happens to keys further ahead; when one of them goes, it
/// looks again and watches the next. A release therefore wakes at most `room`
/// waiters, and never the whole queue (a watch of the queue's prefix would send
/// every claim and release to every waiter). As in `wait_for_turn`, the watches
/// start "from now" before the look that relies on them (no look is needed when
/// they start no later than the read that chose them: `earlier`, the claim's own
/// read of the keys before it, newest first, its revision, and how many keys
/// were before it in all), and glances (see
/// [`glance_delay`]) bound a late watch's stall.
#[allow(clippy::too_many_arguments)]
async fn wait_for_admission(
    waiter: Waiter<'_>,
    kind: Kind,
    name: &str,
    earlier: Option<(Vec<crate::KeyValue>, Revision, usize)>,
) -> Result<bool> {
    let Waiter {
        backend,
        retry,
        prefix,
        key,
        lease,
        token,
        ..
    } = waiter;
    // The releases needed when the claim was made, for the queue's pace.
    let began = tokio::time::Instant::now();
    let mut first_needed = None;
    // The keys before ours, newest first: all of them for a reader (it skips
    // readers to find the writers), else the `room` nearest (every key blocks).
    // A look that admits the claim has then read every key before it, and
    // compared their permits with ours (`Kind::admits`).
    let mut before_ours = RangeRequest::prefix(prefix)
        .with_max_create_revision(token - 1)
        .sort_by_create_revision(SortOrder::Descend);
    if kind != Kind::Read {
        before_ours = before_ours.with_limit(kind.room() as u64);
    }
    let look = Txn::new()
        .when([
            Compare::create_revision(key, CompareOp::Equal, token),
            Compare::lease(key, CompareOp::Equal, Some(lease)),
        ])
        .and_then([before_ours])
        // As in `wait_for_turn`: the watches are created before the look that
        // relies on them, and an event before the look that follows it.
        .with_consistency(ReadConsistency::Observed);
    // Each watched key's create revision, watch, whether it is live, and the
    // revision it delivers everything after (if known).
    let mut watched: HashMap<Vec<u8>, (Revision, crate::WatchStream, Live, Option<Revision>)> =
        HashMap::new();
    // Glances since the newest watch began, and the releases needed before then.
    let mut glanced = 0;
    let mut needed = 1;
    let mut earlier = earlier;
    loop {
        // The keys before ours, newest first, and the revision they were read at.
        // With how many keys were before ours in all, if more than read.
        let (read, read_at, keys_before) = match earlier.take() {
            Some(earlier) => earlier,
            None => {
                let resp = retry
                    .run("look at queue", |_| backend.txn(look.clone()))
                    .await?;
                if !resp.succeeded {
                    return Ok(false);
                }
                let revision = resp.revision;
                let kvs = resp
                    .responses
                    .into_iter()
                    .find_map(|r| match r {
                        TxnOpResponse::Range(r) => Some(r.kvs),
                        _ => None,
                    })
                    .unwrap_or_default();
                let n = kvs.len();
                (kvs, revision, n)
            }
        };
        let before: Vec<&crate::KeyValue> = read.iter().collect();
        if kind.admits(name, &before)? {
            if let Some(releases) = first_needed {
                waiter.pace.record(prefix, began.elapsed(), releases);
            }
            // Kept for the next waits behind these keys.
            for (k, (_, events, live, after)) in watched {
                if let Some(after) = after {
                    waiter.watches.park(KeyRange::Key(k), events, after, live);
                }
            }
            return Ok(true);
        }
        let nearest: Vec<(Vec<u8>, Revision)> = kind
            .blocking(&before)
            .take(kind.room())
            .map(|kv| (kv.key.clone(), kv.create_revision))
            .collect();
        // Keys that went (or fell back) no longer block: their watches are
        // kept for the next waits behind them.
        let gone: Vec<Vec<u8>> = watched
            .iter()
            .filter(|(k, (created, _, _, _))| !nearest.contains(&((*k).clone(), *created)))
            .map(|(k, _)| k.clone())
            .collect();
        for k in gone {
            if let Some((_, events, live, Some(after))) = watched.remove(&k) {
                waiter.watches.park(KeyRange::Key(k), events, after, live);
            }
        }
        let missing: Vec<&(Vec<u8>, Revision)> = nearest
            .iter()
            .filter(|(k, _)| !watched.contains_key(k))
            .collect();
        if !missing.is_empty() {
            // Whether the new watches deliver everything after `read_at`, and
            // whether all of them could be made.
            let mut covered = true;
            let mut made = true;
            for (k, created) in missing {
                // A watch an earlier wait left on this key (see `wait_for_turn`).
                let keys = KeyRange::Key(k.clone());
                if let Some(mut parked) = waiter.watches.take(&keys, read_at) {
                    let drained = parked.drain(k, *created);
                    if drained != Drained::Unusable {
                        let after = Some(parked.after);
                        watched.insert(k.clone(), (*created, parked.events, parked.live, after));
                        if drained == Drained::Gone {
                            made = false; // look again: it is gone already
                            break;
                        }
                        continue;
                    }
                }
                match backend.watch_reporting_start(WatchRequest::new(keys)).await {
                    Ok((w, start)) => {
                        let (live, after) = match start {
                            Some(start) => {
                                covered &= start.after <= read_at;
                                (start.live, Some(start.after))
                            }
                            None => {
                                covered = false;
                                (Live::known(false), None)
                            }
                        };
                        watched.insert(k.clone(), (*created, w, live, after));
                    }
                    Err(e) if e.is_retryable() => {
                        tokio::time::sleep(retry.jittered_delay(1)).await;
                        made = false;
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
            glanced = 0;
            // (A key not read is a semaphore's, and blocks.)
            let blocking =
                kind.blocking(&before).count() + keys_before.saturating_sub(before.len());
            needed = (blocking + 1).saturating_sub(kind.room());
            first_needed.get_or_insert(needed);
            // Look again if a watch could not be made (or a kept one says its
            // key is gone), or if the next release
            // admits the claim and a watch is not known to be live (as in
            // `wait_for_turn`: a look right after the watches exist sees a
            // release that made them lag).
            if !made {
                continue;
            }
            if needed <= 1 {
                let mut all_live = covered;
                for (_, _, live, _) in watched.values_mut() {
                    all_live = all_live && live_soon(live).await;
                }
                if !all_live {
                    continue;
                }
            }
            // If these watches may start after the last read, a glance at the
            // watched keys after them says whether all still stand (then every
            // delete to come is delivered); else look again.
            if !covered {
                if watched.len() > GLANCE_KEYS {
                    continue;
                }
                let keys: Vec<(&Vec<u8>, Revision)> = watched
                    .iter()
                    .map(|(k, (created, _, _, _))| (k, *created))
                    .collect();
                match waiter.glance(&keys).await? {
                    None => return Ok(false),
                    Some((true, _)) => {}
                    Some((false, _)) => continue,
                }
            }
        }
        if watched.is_empty() {
            continue; // not reached: a waiter has at least one blocking key
        }
        debug!(watching = watched.len(), "waiting");
        loop {
            // Live watches deliver the deletes as they commit: no glances.
            let all_live = watched
                .values_mut()
                .all(|(_, _, live, _)| live.now() == Some(true));
            // A delete of a watched key (or its watch breaking): look again.
            let woken = futures::future::select_all(watched.iter_mut().map(
                |(k, (created, events, _, _))| {
                    let created = *created;
                    Box::pin(async move {
                        loop {
                            match events.next().await {
                                // (Not an earlier claim's delete.)
                                Some(Ok(r)) if deletes_after(&r, k, created) => return Ok(None),
                                Some(Ok(_)) => {}
                                Some(Err(e))
                                    if e.is_retryable() || matches!(e, Error::Compacted { .. }) =>
                                {
                                    return Ok(Some(k.clone()))
                                }
                                Some(Err(e)) => return Err(e),
                                None => return Ok(Some(k.clone())),
                            }
                        }
                    })
                },
            ));
            let timer = async {
                match waiter.glance_delay(needed, glanced).filter(|_| !all_live) {
                    Some(after) => tokio::time::sleep(after).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                (woken, _, _) = woken => {
                    // A broken watch is opened again after the next look.
                    if let Some(broken) = woken? {
                        watched.remove(&broken);
                        tokio::time::sleep(retry.jittered_delay(1)).await;
                    }
                    break;
                }
                _ = timer => {
                    if watched.values_mut().all(|(_, _, live, _)| live.now() == Some(true)) {
                        continue; // known live since: wait on the watches alone
                    }
                    glanced += 1;
                    // As in `wait_for_turn`: while every watched key stands the
                    // claim cannot be admitted, and a glance at them says so
                    // without reading the queue (a large `room` looks instead).
                    if watched.len() > GLANCE_KEYS {
                        break;
                    }
                    let keys: Vec<(&Vec<u8>, Revision)> =
                        watched.iter().map(|(k, (created, _, _, _))| (k, *created)).collect();
                    match waiter.glance(&keys).await? {
                        None => return Ok(false),
                        Some((true, _)) => {}
                        Some((false, _)) => break,
                    }
                }
            }
        }
    }
}

/// Whether a new watch is known to be live, waiting at most [`LIVE_ANSWER`] for
/// its backend to say (etcd answers right after the watch's creation).
async fn live_soon(live: &mut Live) -> bool {
    match live.now() {
        Some(known) => known,
        None => tokio::time::timeout(LIVE_ANSWER, live)
            .await
            .unwrap_or(false),
    }
}

/// How long a waiter next in line waits to learn that its new watch is live
/// before it looks at the queue instead.
const LIVE_ANSWER: Duration = Duration::from_millis(1);

/// Keys a glance reads at most; a waiter watching more looks at the queue instead.
const GLANCE_KEYS: usize = 16;

/// A glance: a look that does not read the queue, only our key's create revision and
/// lease compared, and each of `keys` (those the waiter watches) read on its own,
/// at a state including all this backend has seen.
fn glance<'a>(
    key: &str,
    lease: LeaseId,
    token: Revision,
    keys: impl IntoIterator<Item = &'a Vec<u8>>,
) -> Txn {
    Txn::new()
        .when([
            Compare::create_revision(key, CompareOp::Equal, token),
            Compare::lease(key, CompareOp::Equal, Some(lease)),
        ])
        .and_then(keys.into_iter().map(|k| RangeRequest::key(k.clone())))
        .with_consistency(ReadConsistency::Observed)
}

/// Whether the `i`th key a glance read is there with create revision `created`.
fn stands(resp: &crate::TxnResponse, i: usize, created: Revision) -> bool {
    range_responses(resp)
        .get(i)
        .and_then(|r| r.kvs.first())
        .is_some_and(|kv| kv.create_revision == created)
}

/// How long a waiter waits before its next glance, with `ahead` releases to wait
/// for when its watch began, `glanced` glances since, and `step` the time one
/// release of this queue takes (as this process has seen, see [`QueuePace`]): the
/// first one release after those releases should be done, then after gaps of a
/// quarter of that (at least a release, and 2 ms) that double each time, while the
/// watch may still be catching up.
///
/// Why glance at all: etcd registers a watch "from now" as lagging when a write
/// commits while it creates it (it reads its revision first), and a lagging watch
/// is caught up only by etcd's loop that runs every 100 ms. A delete in that time
/// would reach the waiter late and idle the queue; a glance soon after the delete
/// was due finds it. Most waits end before the first glance, and a waiter far
/// back in a busy queue needs none (its watch has caught up before its turn).
fn glance_delay(ahead: usize, glanced: usize, step: Duration) -> Option<Duration> {
    let releases = u32::try_from(ahead.max(1)).unwrap_or(u32::MAX);
    let first = step.saturating_mul(releases.saturating_add(1));
    let gap = (first / 4).max(step).max(MIN_GLANCE_GAP);
    let glanced = u32::try_from(glanced).ok()?;
    // The glance's time since the watch began: first + gap·(2^glanced - 1).
    let at = first.checked_add(gap.checked_mul(2u32.checked_pow(glanced)? - 1)?)?;
    if at > CATCH_UP {
        return None;
    }
    Some(match glanced {
        0 => first,
        n => gap * 2u32.pow(n - 1),
    })
}

/// The shortest time between two glances of a waiter.
const MIN_GLANCE_GAP: Duration = Duration::from_millis(2);

/// How late etcd can deliver to a watch registered as lagging: its catch-up loop's
/// period.
const CATCH_UP: Duration = Duration::from_millis(100);

impl Claim {
    /// A claim now held: `key` with create revision `token` on `session`.
    #[allow(clippy::too_many_arguments)]
    fn held(
        coord: &CoordinatorInner,
        kind: Kind,
        name: &str,
        key: String,
        token: Revision,
        session: Session,
        hold: Option<KeyHold>,
        own_writes: OwnWrites,
    ) -> Claim {
        Claim {
            backend: coord.backend.clone(),
            retry: coord.retry.clone(),
            cleanup: coord.cleanup.clone(),
            name: name.to_string(),
            key,
            token,
            session,
            hold: Mutex::new(hold),
            released: watch::Sender::new(false),
            releasing: AtomicBool::new(false),
            lost: Mutex::new(None),
            own_writes: Mutex::new(own_writes),
            in_doubt: false,
            kind: kind.label(),
            acquired: tokio::time::Instant::now(),
            end_counted: AtomicBool::new(false),
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// On release: if a try of the claim's write is in doubt, have the cleanup
    /// remove it should it land later (any creation of the key on this lease
    /// after the claim's own, until the session ends or the key is claimed again).
    fn watch_late_writes(&self) {
        if self.in_doubt {
            self.cleanup
                .watch_late_writes(self.key.clone(), self.session.clone(), self.token);
        }
    }

    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    pub(crate) fn token(&self) -> Revision {
        self.token
    }

    pub(crate) fn session(&self) -> &Session {
        &self.session
    }

    pub(crate) fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    pub(crate) fn compare(&self) -> Compare {
        Compare::create_revision(self.key.clone(), CompareOp::Equal, self.token)
    }

    /// Count the claim's end once, with why and how long it was held.
    fn count_end(&self, reason: &'static str) {
        if !self.end_counted.swap(true, Ordering::SeqCst) {
            crate::telemetry::claim_ended(self.kind, reason, Some(self.acquired.elapsed()));
        }
    }

    fn own_writes(&self) -> std::sync::MutexGuard<'_, OwnWrites> {
        self.own_writes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_released(&self) -> bool {
        *self.released.borrow()
    }

    fn not_held(&self) -> Error {
        Error::LockNotHeld {
            name: self.name.clone(),
        }
    }

    pub(crate) fn is_expired(&self) -> bool {
        self.is_released()
            || self
                .lost
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_some()
            || self.session.is_lost()
    }

    /// The lease's remaining TTL as the store reports it.
    pub(crate) async fn ttl(&self) -> Result<Duration> {
        if self.is_released() {
            return Err(self.not_held());
        }
        let lease = self.session.lease();
        match self
            .retry
            .run("lease ttl", |_| self.backend.lease_time_to_live(lease))
            .await
        {
            Ok(info) => Ok(Duration::from_secs(info.remaining_ttl.max(0) as u64)),
            Err(Error::LeaseNotFound { .. }) => Err(expired(&self.name)),
            Err(e) => Err(e),
        }
    }

    /// Renew the session's lease now: whether it is still held.
    pub(crate) async fn renew(&self) -> Result<bool> {
        if self.is_released() {
            return Err(self.not_held());
        }
        Ok(self.session.keep_alive().await? && !self.is_expired())
    }

    /// Write `value` to the key if it is still this claim's.
    pub(crate) async fn write_value(&self, value: Vec<u8>) -> Result<bool> {
        if self.is_released() {
            return Ok(false);
        }
        let put = Txn::new().when([self.compare()]).and_then([PutRequest::new(
            self.key.clone(),
            value.clone(),
        )
        .with_lease(self.session.lease())]);
        self.own_writes().sending(&value);
        let r = self
            .retry
            .run("proclaim", |_| self.backend.txn(put.clone()))
            .await?;
        if r.succeeded {
            self.own_writes().written(&value, r.revision);
        }
        Ok(r.succeeded)
    }

    /// Delete the key if it is still this claim's. See `LockGuard::unlock`.
    pub(crate) async fn release(&self) -> Result<()> {
        if self.is_released() {
            return Err(self.not_held());
        }
        let span =
            info_span!("coord.release", name = %self.name, key = %self.key, token = self.token);
        let txn = Txn::new()
            .when([self.compare()])
            .and_then([DeleteRequest::key(self.key.clone())]);
        self.releasing.store(true, Ordering::SeqCst);
        let outcome = self
            .retry
            .run("release", |attempt| {
                let txn = txn.clone();
                async move { Ok((self.backend.txn(txn).await?.succeeded, attempt)) }
            })
            .instrument(span.clone())
            .await;
        let (deleted, attempt) =
            outcome.inspect_err(|_| self.releasing.store(false, Ordering::SeqCst))?;
        self.released.send_replace(true);
        self.watch_late_writes();
        self.count_end("released");
        drop(self.hold.lock().unwrap_or_else(|e| e.into_inner()).take());
        let _enter = span.enter();
        if deleted {
            debug!("released");
            Ok(())
        } else if attempt > 1 {
            // An earlier try failed in a way that may have applied: the key is gone
            // either way, and we cannot tell who removed it.
            debug!("released (an earlier try had already deleted the key, or it had ended)");
            Ok(())
        } else {
            warn!("release found the claim gone already");
            Err(self.not_held())
        }
    }

    /// Completes when ownership ends, saying why.
    pub(crate) async fn lost(&self) -> OwnershipLost {
        if let Some(why) = *self.lost.lock().unwrap_or_else(|e| e.into_inner()) {
            return why;
        }
        if self.is_released() {
            return OwnershipLost::Released;
        }
        let mut released = self.released.subscribe();
        let why = tokio::select! {
            biased;
            _ = released.wait_for(|r| *r) => OwnershipLost::Released,
            _ = self.session.lost() => OwnershipLost::SessionLost,
            why = self.watch_key() => why,
        };
        if why != OwnershipLost::Released {
            let mut lost = self.lost.lock().unwrap_or_else(|e| e.into_inner());
            lost.get_or_insert(why);
            drop(lost);
            self.count_end(crate::telemetry::lost_reason(why));
        }
        why
    }

    /// Watch the key from its creation on for a delete or a write not our own
    /// (after a compaction: the key as it is now).
    async fn watch_key(&self) -> OwnershipLost {
        let judge = |seen: Seen<'_>| match seen {
            Seen::Event(kind, kv) => self.foreign(kind, kv),
            Seen::Now(None) => Some(OwnershipLost::KeyDeleted),
            Seen::Now(Some(kv)) => self.foreign(EventKind::Put, kv),
        };
        watch_owned_key(&self.backend, &self.retry, &self.key, self.token + 1, judge).await
    }

    fn foreign(&self, kind: EventKind, kv: &crate::KeyValue) -> Option<OwnershipLost> {
        match kind {
            EventKind::Delete if self.releasing.load(Ordering::SeqCst) => {
                Some(OwnershipLost::Released)
            }
            EventKind::Delete => Some(OwnershipLost::KeyDeleted),
            EventKind::Put if kv.create_revision != self.token => Some(OwnershipLost::KeyDeleted),
            EventKind::Put => (!self.own_writes().is_own(kv, self.session.lease()))
                .then_some(OwnershipLost::KeyChanged),
        }
    }

    /// Whether the key is still this claim's, read from the store.
    pub(crate) async fn still_held(&self) -> Result<bool> {
        if self.is_released() {
            return Ok(false);
        }
        let kv = self
            .retry
            .run("read claim", |_| self.backend.get(self.key.clone()))
            .await?;
        Ok(kv.is_some_and(|kv| {
            kv.create_revision == self.token && kv.lease == Some(self.session.lease())
        }))
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let hold = self.hold.lock().unwrap_or_else(|e| e.into_inner()).take();
        if self.is_released() {
            return;
        }
        self.count_end(if self.session.is_lost() {
            "session_lost"
        } else {
            "dropped"
        });
        self.watch_late_writes();
        // Released without unlock (or its unlock was cancelled or failed): the
        // coordinator's cleanup removes the key, then lets the next local task go.
        self.cleanup.remove(
            "dropped claim",
            Orphan {
                key: self.key.clone(),
                also: Vec::new(),
                guards: vec![self.compare()],
                session: self.session.clone(),
                hold,
                after: None,
                late_writes: false,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(value: &str, mod_revision: Revision, lease: i64) -> crate::KeyValue {
        crate::KeyValue {
            key: b"k".to_vec(),
            value: value.as_bytes().to_vec(),
            create_revision: 1,
            mod_revision,
            version: 1,
            lease: Some(LeaseId(lease)),
        }
    }

    /// The glance times since a watch began, for `ahead` releases to wait for.
    fn glance_times(ahead: usize, step_ms: u64) -> Vec<u64> {
        let mut at = Duration::ZERO;
        (0..)
            .map_while(|n| glance_delay(ahead, n, Duration::from_millis(step_ms)))
            .map(|d| {
                at += d;
                at.as_millis() as u64
            })
            .collect()
    }

    #[test]
    fn glances_come_after_the_releases_ahead_and_stop_with_the_catch_up() {
        // A queue releasing every 2 ms, next in line: one release late, then
        // doubling gaps, none past 100 ms.
        assert_eq!(glance_times(1, 2), [4, 6, 10, 18, 34, 66]);
        // 15 releases ahead: the first after about their time, then closer gaps.
        assert_eq!(glance_times(15, 2), [32, 40, 56, 88]);
        // Far back in a busy queue: its watch catches up before its turn.
        assert!(glance_times(63, 2).is_empty());
        assert!(glance_times(usize::MAX, 2).is_empty());
        // A slower queue: later, at wider gaps.
        assert_eq!(glance_times(1, 10), [20, 30, 50, 90]);
        assert_eq!(glance_times(4, 10), [50, 62, 87]);
        assert!(glance_times(10, 10).is_empty());
        // Whatever the queue, never past etcd's catch-up and never many.
        for step in 1..=10 {
            for ahead in 0..200 {
                let times = glance_times(ahead, step);
                assert!(times.iter().all(|&t| t <= 100), "{ahead}: {times:?}");
                assert!(times.len() <= 6, "{ahead} at {step} ms: {times:?}");
            }
        }
    }

    #[test]
    fn own_writes_know_lost_responses_by_value_and_stay_bounded() {
        let mut own = OwnWrites::default();
        own.sending(b"a");
        own.written(b"a", 5);
        // A proclaim of "b" whose first try committed at 7 but whose response
        // was lost; the retry committed at 8.
        own.sending(b"b");
        own.written(b"b", 8);
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
