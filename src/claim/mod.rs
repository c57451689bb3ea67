//! A claim: a key in a queue under a prefix, owned by the smallest create revision.
//!
//! Locks and elections are the same queue (etcd's `concurrency` protocol): a
//! candidate puts `<prefix><lease hex>` if absent, waits until no key created
//! before its own remains (watching only the one just before it), then re-checks
//! its own key. Semaphores and read-write locks are queues of the same kind whose
//! claims are admitted while few enough keys before them block. This module does
//! that once for all of them:
//!
//! - [`Claims`]: what the recipes hand the claim code (the store, the retry
//!   policy, the cleanup and the claims' own state), and the calls: claim,
//!   adopt, read a queue;
//! - `kind`: what a claim is of; `enqueue`: the claim's write and first read;
//!   `pending`: a key being claimed, removed if the claim does not complete;
//! - `turn` (exclusive) and `admission` (shared): the waits, on `look`'s one
//!   way of looking at a queue and watching the keys before one's own;
//! - `held`: a held claim, its release and its loss; `own_writes`: the owner's
//!   writes, never taken for someone else's;
//! - `local_queue`, `key_hold`, `pace`, `watch_pool`: what a process keeps
//!   between claims (its local turns, its keys' numbers, its queues' pace, the
//!   watches its waits left).

mod admission;
mod enqueue;
mod held;
pub(crate) mod key_hold;
mod kind;
pub(crate) mod local_queue;
mod look;
mod own_writes;
mod pace;
mod pending;
mod turn;
mod watch_pool;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, field, info_span, warn, Instrument};

use self::admission::wait_for_admission;
use self::enqueue::{Enqueue, Enqueued, FirstLook};
pub(crate) use self::held::Claim;
pub(crate) use self::key_hold::ClaimSlot;
use self::key_hold::{ClaimSlots, KeyHold};
pub(crate) use self::kind::Kind;
use self::local_queue::{LocalQueues, LocalTurn};
use self::look::{range_responses, Waiter};
pub(crate) use self::own_writes::OwnWrites;
use self::pace::QueuePace;
use self::pending::Pending;
use self::turn::wait_for_turn;
use self::watch_pool::WatchPool;
use crate::backend::{
    Backend, Compare, CompareOp, LeaseId, PutRequest, RangeRequest, Revision, SortOrder, Txn, TxnOp,
};
use crate::cleanup::Cleanup;
use crate::error::{Error, Result};
use crate::keys::{self, KeyLayout};
use crate::queue_name::QueueName;
use crate::retry::RetryPolicy;
use crate::session::Session;

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

impl OwnershipLost {
    /// The label of why a claim ended, in metrics.
    pub(crate) fn label(self) -> &'static str {
        match self {
            OwnershipLost::SessionLost => "session_lost",
            OwnershipLost::KeyDeleted => "key_deleted",
            OwnershipLost::KeyChanged => "key_changed",
            OwnershipLost::Released => "released",
        }
    }
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

/// Whether a claim waits for its turn or gives up at once.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    UntilOwner,
    No,
}

/// What the claim code works with, handed to it by the recipes: the store,
/// the retry policy, the cleanup, the namespace, and what this process keeps
/// between claims. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Claims {
    backend: Arc<dyn Backend>,
    retry: RetryPolicy,
    cleanup: Cleanup,
    keys: KeyLayout,
    /// The coordinator's "closed" flag.
    closed: Arc<AtomicBool>,
    kept: Arc<Kept>,
}

/// What a process keeps between claims.
#[derive(Default)]
struct Kept {
    /// In-process queues per exclusive queue.
    local: LocalQueues,
    /// The numbers in use in shared claims' keys.
    slots: ClaimSlots,
    /// How fast the queues this process waits in move (for waiters' glances).
    pace: QueuePace,
    /// Watches kept after waits, for the next wait behind the same key.
    watches: WatchPool,
}

impl Claims {
    pub(crate) fn new(
        backend: Arc<dyn Backend>,
        retry: RetryPolicy,
        cleanup: Cleanup,
        keys: KeyLayout,
        closed: Arc<AtomicBool>,
    ) -> Self {
        Claims {
            backend,
            retry,
            cleanup,
            keys,
            closed,
            kept: Arc::default(),
        }
    }

    /// `Closed` once the coordinator was closed.
    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(Error::Closed {
                what: "coordinator",
            });
        }
        Ok(())
    }

    /// The key prefix of the queue of `kind` for `name` (checked first).
    pub(crate) fn queue_prefix(&self, kind: Kind, name: &QueueName) -> Result<String> {
        kind.queue_prefix(&self.keys, name)
    }

    /// This task's local turn at the exclusive queue `prefix`, if nobody else
    /// of this process has it.
    pub(crate) fn turn_now(&self, prefix: &str) -> Option<LocalTurn> {
        self.kept.local.try_now(prefix)
    }

    /// The lowest number free for keys starting with `stem` (see
    /// `keys::numbered_stem`), held until the slot is dropped: for keys that,
    /// like a shared claim's, one session may hold several of at once.
    pub(crate) fn take_slot(&self, stem: String) -> ClaimSlot {
        self.kept.slots.take(stem)
    }

    /// Drop the watches kept after waits (the coordinator is closing).
    pub(crate) fn forget_watches(&self) {
        self.kept.watches.clear();
    }

    /// Read the queue of `name`: holder first, then waiters in order, each with
    /// its lease's time left. Works on queues made by etcd's `etcdctl
    /// lock`/`elect` too.
    pub(crate) async fn queue(&self, kind: Kind, name: &QueueName) -> Result<Vec<QueueEntry>> {
        let prefix = self.queue_prefix(kind, name)?;
        let read = RangeRequest::prefix(prefix).sort_by_create_revision(SortOrder::Ascend);
        let backend = &self.backend;
        let resp = self
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

    /// Claim `name` with `value` on the caller's session (`session`, awaited
    /// once the name is checked and, for a lock or an election, this task's
    /// local turn has come): wait for the turn (or give up at once with
    /// `LockConflict`), then return the held claim. A claim whose session's
    /// lease ended under it (revoked, or expired while the claim was on its
    /// way) can never stand: the caller learns it as `LockExpired`, never as
    /// the primitive's `LeaseNotFound`.
    pub(crate) async fn claim(
        &self,
        kind: Kind,
        name: &QueueName,
        session: impl Future<Output = Result<Session>>,
        value: Vec<u8>,
        wait: Wait,
    ) -> Result<Claim> {
        let prefix = self.queue_prefix(kind, name)?;
        let name = name.as_str();
        self.check_open()?;
        let started = tokio::time::Instant::now();
        let span = info_span!(
            "coord.claim",
            kind = kind.label(),
            name,
            key = field::Empty,
            token = field::Empty
        );
        let request = Request {
            kind,
            name,
            prefix: &prefix,
            value,
            wait,
        };
        let claim = self
            .claim_in_span(request, session)
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
        &self,
        request: Request<'_>,
        session: impl Future<Output = Result<Session>>,
    ) -> Result<Claim> {
        let Request {
            kind,
            name,
            prefix,
            value,
            wait,
        } = request;
        // What keeps this process off the key: for a lock or an election the
        // local turn at its queue; for a shared claim the lowest number this
        // session's claims of the name leave free (see `key_hold`).
        let turn = self.local_turn(kind, name, prefix, wait).await?;
        let session = session.await?;
        let lease = session.lease();
        let (key, hold) = match turn {
            Some(turn) => (keys::exclusive_claim(prefix, lease), KeyHold::Turn(turn)),
            None => {
                let slot = self.kept.slots.take(keys::numbered_stem(prefix, lease));
                (slot.key(), KeyHold::Slot(slot))
            }
        };
        tracing::Span::current().record("key", key.as_str());
        // A late write of this session's last claim of the key is this claim's now.
        self.cleanup.taken_over(&key);
        let mut pending = Pending {
            cleanup: self.cleanup.clone(),
            session: session.clone(),
            key: key.clone(),
            token: None,
            armed: true,
            hold: Some(hold),
            in_flight: None,
            in_doubt: false,
        };
        let enqueue = Enqueue {
            claims: self,
            kind,
            name,
            prefix,
            key: &key,
            lease,
            value: &value,
        };
        let Enqueued {
            token,
            found,
            in_doubt,
            mut own_writes,
            first_look,
        } = enqueue.run(&mut pending).await?;
        pending.token = Some(token);
        tracing::Span::current().record("token", token);
        let owns = match &first_look {
            FirstLook::Owner => true,
            FirstLook::Behind(_) => false,
            FirstLook::Shared(earlier) => {
                match kind.admits(name, &earlier.before.iter().collect::<Vec<_>>()) {
                    Ok(admitted) => admitted,
                    Err(e) => {
                        pending.remove_now().await;
                        return Err(e);
                    }
                }
            }
        };
        if !owns {
            if wait == Wait::No {
                pending.remove_now().await;
                return Err(conflict(name));
            }
            let waiter = Waiter {
                backend: &self.backend,
                retry: &self.retry,
                pace: &self.kept.pace,
                watches: &self.kept.watches,
                prefix,
                key: &key,
                lease,
                token,
            };
            wait_in_queue(waiter, kind, name, first_look, &session).await?;
        }
        // A claim found with another value (a retry of an earlier campaign)
        // carries the new one.
        if found.is_some_and(|found| found != value) {
            self.proclaim(&key, token, &value, lease, &mut own_writes)
                .await
                .and_then(|written| written.then_some(()).ok_or_else(|| expired(name)))?;
        }
        debug!("acquired");
        let hold = pending.disarm();
        let mut claim = Claim::held(self, kind, name, key, token, session, hold, own_writes);
        claim.in_doubt = in_doubt;
        Ok(claim)
    }

    /// For a lock or an election, this task's turn at the queue in this
    /// process (waited for, or `LockConflict` if taken and `wait` is `No`).
    async fn local_turn(
        &self,
        kind: Kind,
        name: &str,
        prefix: &str,
        wait: Wait,
    ) -> Result<Option<LocalTurn>> {
        Ok(match wait {
            _ if !kind.exclusive() => None,
            Wait::UntilOwner => Some(self.kept.local.wait(prefix).await),
            Wait::No => Some(self.turn_now(prefix).ok_or_else(|| conflict(name))?),
        })
    }

    /// Write `value` to the claim's `key` (created at `token` on `lease`):
    /// whether it was still the claim's.
    async fn proclaim(
        &self,
        key: &str,
        token: Revision,
        value: &[u8],
        lease: LeaseId,
        own_writes: &mut OwnWrites,
    ) -> Result<bool> {
        let put = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, token)])
            .and_then([PutRequest::new(key, value.to_vec()).with_lease(lease)]);
        own_writes.sending(value);
        let backend = &self.backend;
        let r = self
            .retry
            .run("proclaim", |_| backend.txn(put.clone()))
            .await?;
        if r.succeeded {
            own_writes.written(r.revision);
        }
        Ok(r.succeeded)
    }

    /// Take over a claim made before (by this process before a restart): the
    /// key `<prefix><lease hex>` of `session`'s lease must still exist with
    /// create revision `token` on that lease (else `LockExpired`) and own the
    /// queue (else `NotLeader`); `turn` is this process's local turn at the
    /// name, taken by the caller (so that a conflict is known before the lease
    /// is touched). Only locks and elections can be resumed.
    pub(crate) async fn adopt(
        &self,
        kind: Kind,
        name: &QueueName,
        session: Session,
        token: Revision,
        turn: LocalTurn,
    ) -> Result<Claim> {
        let prefix = self.queue_prefix(kind, name)?;
        let name = name.as_str();
        self.check_open()?;
        if !kind.exclusive() {
            return Err(Error::invalid(
                "kind",
                "only a lock or an election can be resumed",
            ));
        }
        let lease = session.lease();
        let key = keys::exclusive_claim(&prefix, lease);
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
        let backend = &self.backend;
        let resp = self
            .retry
            .run("resume claim", |_| backend.txn(look.clone()))
            .await?;
        let ranges = range_responses(&resp);
        let (Some(own), true) = (ranges.first().and_then(|r| r.kvs.first()), resp.succeeded) else {
            return Err(expired(name));
        };
        let owner = ranges.get(1).and_then(|r| r.kvs.first());
        if owner.map(|kv| kv.create_revision) != Some(token) {
            return Err(Error::NotLeader {
                name: name.to_string(),
            });
        }
        let mut own_writes = OwnWrites::default();
        own_writes.written(own.mod_revision);
        let hold = Some(KeyHold::Turn(turn));
        Ok(Claim::held(
            self, kind, name, key, token, session, hold, own_writes,
        ))
    }
}

/// Wait in the queue, from the claim's `first_look`, until the claim owns it
/// (or is admitted): `LockExpired` if the session is lost or the key goes
/// meanwhile (its lease ended, someone deleted it).
async fn wait_in_queue(
    waiter: Waiter<'_>,
    kind: Kind,
    name: &str,
    first_look: FirstLook,
    session: &Session,
) -> Result<()> {
    debug!("queued; waiting for the claims before this one");
    // Boxed: only a queued claim needs it, so the uncontended claim's future
    // stays small.
    let waiting: std::pin::Pin<Box<dyn std::future::Future<Output = Result<bool>> + Send + '_>> =
        match first_look {
            FirstLook::Shared(earlier) => {
                Box::pin(wait_for_admission(waiter, kind, name, Some(earlier)))
            }
            FirstLook::Behind(named) => Box::pin(wait_for_turn(waiter, named)),
            FirstLook::Owner => Box::pin(async { Ok(true) }),
        };
    let owner = tokio::select! {
        waited = waiting => waited?,
        _ = session.lost() => false,
    };
    if !owner || session.is_lost() {
        warn!("claim ended while queued");
        return Err(expired(name));
    }
    Ok(())
}

/// A claim asked for.
struct Request<'a> {
    kind: Kind,
    name: &'a str,
    prefix: &'a str,
    value: Vec<u8>,
    wait: Wait,
}

fn expired(name: &str) -> Error {
    Error::LockExpired {
        name: name.to_string(),
    }
}

fn conflict(name: &str) -> Error {
    Error::LockConflict {
        name: name.to_string(),
    }
}
