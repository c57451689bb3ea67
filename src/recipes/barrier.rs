//! Barriers: a gate that holds everyone until removed, and a double barrier that
//! lets N participants start together and finish together.

use std::sync::Arc;
use std::time::Duration;

use crate::backend::{
    Backend, BackendExt, Compare, CompareOp, DeleteRequest, KeyRange, PutRequest, RangeRequest,
    Revision, Txn, TxnOp,
};
use crate::claim::ClaimSlot;
use crate::cleanup::Orphan;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::follow;
use crate::keys;
use crate::queue_name::validate_name;
use crate::retry::RetryPolicy;
use crate::session::Session;

/// Barriers of one [`Coordinator`](crate::Coordinator) (see
/// [`Coordinator::barrier`](crate::Coordinator::barrier)).
///
/// A barrier named `x` is the key `<namespace>barrier/x` (etcd's
/// `recipes.Barrier`, Curator's `DistributedBarrier`): while it exists, `wait`
/// blocks; removing it lets every waiter go. A double barrier named `x` is the
/// prefix `<namespace>double-barrier/x/` (etcd's `recipes.DoubleBarrier`,
/// Curator's `DistributedDoubleBarrier`).
///
/// # Behavior
/// - A barrier's key has no lease: it stays until [`BarrierService::remove`],
///   whoever set it and whether they live.
/// - A double barrier's participants each hold a key on their session's lease: a
///   participant that dies is removed by its lease's end, so it neither counts
///   towards `enter` nor holds up `leave`.
/// - Cancelling `enter` removes its key in the background; cancelling `wait`,
///   `leave` or `set` leaves the store as the last completed write left it.
/// - Rounds of one double barrier must not overlap: a participant of the next
///   round that enters before everyone of this round has left holds up this
///   round's `leave` until it leaves too.
///
/// # Example
///
/// ```
/// # use std::{sync::Arc, time::Duration};
/// # use coordkit::Coordinator;
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> coordkit::Result<()> {
/// let coordinator = Coordinator::new(Arc::new(coordkit_memory::MemoryBackend::new()));
/// let barriers = coordinator.barrier();
/// barriers.set("deploy").await?;
/// let waiter = tokio::spawn({
///     let barriers = barriers.clone();
///     async move { barriers.wait("deploy").await }
/// });
/// barriers.remove("deploy").await?; // every wait("deploy") returns
/// waiter.await.expect("the waiter")?;
/// // A double barrier of one participant: enter and leave at once.
/// let entry = barriers.enter("batch", 1, Duration::from_secs(10)).await?;
/// entry.leave().await?;
/// # coordinator.close().await }
/// ```
#[derive(Clone)]
pub struct BarrierService {
    coord: Arc<Context>,
}

impl BarrierService {
    pub(crate) fn new(coord: Arc<Context>) -> Self {
        BarrierService { coord }
    }

    fn key(&self, name: &str) -> Result<String> {
        validate_name(name)?;
        Ok(self.coord.keys.barrier(name))
    }

    /// Set barrier `name`: waiters block until it is removed. `Ok(false)` if it
    /// was set already.
    ///
    /// The key's value names this call, so a retry after a lost or late answer
    /// that finds the key recognises its own write and says `true`. After a
    /// `Timeout` or `Unavailable` the barrier may or may not be set (and a held
    /// write may set it later); setting it again is harmless.
    pub async fn set(&self, name: &str) -> Result<bool> {
        let key = self.key(name)?;
        let backend = &self.coord.backend;
        let mark = format!("set-{:016x}", fastrand::u64(..));
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([PutRequest::new(key.clone(), mark.clone())])
            .or_else([RangeRequest::key(key.clone())]);
        let r = self
            .coord
            .retry
            .run("set barrier", |_| backend.txn(txn.clone()))
            .await?;
        let ours = || {
            r.first_range()
                .and_then(|range| range.kvs.first())
                .is_some_and(|kv| kv.value == mark.as_bytes())
        };
        Ok(r.succeeded || ours())
    }

    /// Remove barrier `name`, letting every waiter go. `Ok(false)` if it was not set.
    ///
    /// The delete is guarded by the barrier's revision read first; a retry after
    /// a lost or late answer that finds the barrier gone looks up the key's first
    /// change after that read: a delete means the barrier this call saw was
    /// removed (by this call, or a concurrent remove: either way its waiters
    /// went), and the call says `true`.
    pub async fn remove(&self, name: &str) -> Result<bool> {
        let key = self.key(name)?;
        let backend = &self.coord.backend;
        let retry = &self.coord.retry;
        loop {
            let read = RangeRequest::key(key.clone());
            let now = retry
                .run("read barrier", |_| backend.range(read.clone()))
                .await?;
            let Some(kv) = now.kvs.first() else {
                return Ok(false);
            };
            let delete = Txn::new()
                .when([Compare::mod_revision(
                    key.clone(),
                    CompareOp::Equal,
                    kv.mod_revision,
                )])
                .and_then([DeleteRequest::key(key.clone())]);
            let r = retry
                .run("remove barrier", |_| backend.txn(delete.clone()))
                .await;
            match r {
                Ok(r) if r.succeeded => return Ok(true),
                Ok(_) | Err(_) => {
                    // Changed since the read, or no answer: the first change after
                    // the read says which.
                    match crate::ambiguous::first_change_after(backend.as_ref(), &key, now.revision)
                        .await
                    {
                        Ok(Some(at)) => {
                            let then = backend
                                .range(RangeRequest::key(key.clone()).at_revision(at))
                                .await
                                .map_err(|e| {
                                    crate::ambiguous::outcome_unknown("remove barrier", e)
                                })?;
                            if then.kvs.is_empty() {
                                return Ok(true);
                            }
                            // Set again or rewritten by someone: remove what is there now.
                        }
                        Ok(None) => {
                            if let Err(e) = r {
                                return Err(crate::ambiguous::outcome_unknown("remove barrier", e));
                            }
                        }
                        Err(e) => {
                            return Err(crate::ambiguous::outcome_unknown("remove barrier", e))
                        }
                    }
                }
            }
        }
    }

    /// Wait until barrier `name` is not set (at once if it is not).
    pub async fn wait(&self, name: &str) -> Result<()> {
        let key = self.key(name)?;
        let (backend, retry) = (self.coord.backend.clone(), self.coord.retry.clone());
        follow::until(backend, retry, KeyRange::key(key), |keys| keys.is_empty()).await
    }

    /// Enter double barrier `name` of `count` participants: wait until `count`
    /// participants have entered, then return the entry, whose
    /// [`DoubleBarrierEntry::leave`] waits until every participant has left.
    ///
    /// Errors: `InvalidArgument` for a bad name, a `count` of 0 or a TTL outside
    /// the backend's bounds; `LockExpired` if this participant's session was lost
    /// while it waited; `Closed`; store errors once retries are exhausted.
    pub async fn enter(&self, name: &str, count: u32, ttl: Duration) -> Result<DoubleBarrierEntry> {
        validate_name(name)?;
        if count == 0 {
            return Err(Error::invalid("count", "must be at least 1"));
        }
        let coord = &self.coord;
        coord.check_open()?;
        let session = coord.session(ttl).await?;
        let waiters = coord.keys.double_barrier_waiters(name);
        let ready = coord.keys.double_barrier_ready(name);
        // One session may be several participants: each takes the lowest
        // number its others leave free, and holds it while its key may exist.
        let slot = coord
            .claims
            .take_slot(keys::numbered_stem(&waiters, session.lease()));
        let key = slot.key();
        let backend = coord.backend.clone();
        let retry = coord.retry.clone();
        let mut entering = Entering {
            coord: coord.clone(),
            key: key.clone(),
            slot: Some(slot),
            session: session.clone(),
            write: None,
        };
        // Put our key and count the participants in one transaction (repeatable:
        // a retry after a lost answer finds the key there, and counts too, so the
        // last participant opens the gate whichever try's answer it got).
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([
                TxnOp::Put(PutRequest::new(key.clone(), Vec::new()).with_lease(session.lease())),
                TxnOp::Range(RangeRequest::prefix(waiters.clone()).count_only()),
            ])
            .or_else([
                TxnOp::Range(RangeRequest::key(key.clone())),
                TxnOp::Range(RangeRequest::prefix(waiters.clone()).count_only()),
            ]);
        let write = {
            let (backend, retry) = (backend.clone(), retry.clone());
            tokio::spawn(async move {
                retry
                    .run("enter double barrier", |_| backend.txn(txn.clone()))
                    .await
            })
        };
        let outcome = entering.write.insert(write).await;
        entering.write = None;
        let resp = outcome
            .map_err(|e| Error::unavailable(format!("the barrier's write ended: {e}")))??;
        let joined = if resp.succeeded {
            resp.revision
        } else {
            match resp.first_range().and_then(|r| r.kvs.first()) {
                Some(kv) => kv.create_revision,
                None => return Err(expired(name)),
            }
        };
        let entered = resp
            .responses
            .get(1)
            .and_then(|r| match r {
                crate::backend::TxnOpResponse::Range(r) => Some(r.count),
                _ => None,
            })
            .unwrap_or(0);
        if entered >= i64::from(count) {
            // The last to arrive opens the gate for this round.
            retry
                .run("open double barrier", |_| {
                    backend.put(ready.clone(), Vec::new())
                })
                .await?;
        } else {
            // Wait for a gate opened after we joined (an older one is a past round's).
            let gate = KeyRange::key(ready.clone());
            let opened = follow::until(backend.clone(), retry.clone(), gate, |keys| {
                keys.values().any(|(revision, _)| *revision > joined)
            });
            tokio::select! {
                opened = opened => opened?,
                _ = session.lost() => return Err(expired(name)),
            }
        }
        entering.key.clear(); // entered: the key is the entry's now
        Ok(DoubleBarrierEntry {
            backend,
            retry,
            name: name.to_string(),
            key,
            slot: entering.slot.take(),
            left: false,
            waiters,
            ready,
            joined,
            session,
        })
    }
}

/// An entered double barrier. Dropping it without [`DoubleBarrierEntry::leave`]
/// leaves its key until the session's lease ends (the others' `leave` waits
/// for it).
#[must_use = "an entry that is dropped without leave holds up the others' leave until its lease ends"]
pub struct DoubleBarrierEntry {
    backend: Arc<dyn Backend>,
    retry: RetryPolicy,
    name: String,
    key: String,
    /// The number in the key, free again once the key is gone.
    slot: Option<ClaimSlot>,
    /// The key was removed by `leave`.
    left: bool,
    waiters: String,
    ready: String,
    joined: Revision,
    session: Session,
}

impl DoubleBarrierEntry {
    /// The barrier's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// This participant's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Leave: remove this participant's key, then wait until every participant
    /// has left (or died); the last to see it closes the gate for the next round.
    /// Cancelling the wait leaves this participant gone.
    pub async fn leave(mut self) -> Result<()> {
        let backend = &self.backend;
        let remove = Txn::new()
            .when([Compare::lease(
                self.key.clone(),
                CompareOp::Equal,
                Some(self.session.lease()),
            )])
            .and_then([DeleteRequest::key(self.key.clone())]);
        self.retry
            .run("leave double barrier", |_| backend.txn(remove.clone()))
            .await?;
        self.left = true;
        let backend = &self.backend;
        // Every participant gone (left, or its lease ended).
        let waiters = KeyRange::prefix(self.waiters.clone());
        follow::until(backend.clone(), self.retry.clone(), waiters, |keys| {
            keys.is_empty()
        })
        .await?;
        // Close this round's gate, unless a later round opened it again.
        let close = Txn::new()
            .when([Compare::mod_revision(
                self.ready.clone(),
                CompareOp::Greater,
                self.joined,
            )])
            .and_then([DeleteRequest::key(self.ready.clone())]);
        let latest = backend.get(self.ready.clone()).await?;
        if let Some(kv) = latest {
            let close = close.when([Compare::mod_revision(
                self.ready.clone(),
                CompareOp::Equal,
                kv.mod_revision,
            )]);
            self.retry
                .run("close double barrier", |_| backend.txn(close.clone()))
                .await?;
        }
        Ok(())
    }
}

impl Drop for DoubleBarrierEntry {
    /// The key's number is free again once the key is gone: after `leave`
    /// removed it, at once; else when the session ends (its lease takes the
    /// key), which a task waits for.
    fn drop(&mut self) {
        let Some(slot) = self.slot.take() else {
            return;
        };
        if self.left || self.session.is_lost() {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let session = self.session.clone();
            runtime.spawn(async move {
                session.lost().await;
                drop(slot);
            });
        } else {
            std::mem::forget(slot); // never reused: the key may still be there
        }
    }
}

impl std::fmt::Debug for DoubleBarrierEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DoubleBarrierEntry")
            .field("name", &self.name)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for BarrierService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BarrierService")
            .field("namespace", &self.coord.keys.namespace())
            .finish_non_exhaustive()
    }
}

/// A participant's key while `enter` runs: removed in the background if the
/// call does not complete.
struct Entering {
    coord: Arc<Context>,
    key: String,
    /// The number in the key, handed to the cleanup with it.
    slot: Option<ClaimSlot>,
    session: Session,
    write: Option<tokio::task::JoinHandle<Result<crate::backend::TxnResponse>>>,
}

impl Drop for Entering {
    fn drop(&mut self) {
        if self.key.is_empty() {
            return;
        }
        let after = self.write.take().map(|write| {
            Box::pin(async move {
                let _ = write.await;
            }) as std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
        });
        let key = std::mem::take(&mut self.key);
        self.coord.cleanup.remove(
            "abandoned barrier entry",
            Orphan {
                guards: vec![Compare::lease(
                    key.clone(),
                    CompareOp::Equal,
                    Some(self.session.lease()),
                )],
                key,
                also: Vec::new(),
                session: self.session.clone(),
                hold: self
                    .slot
                    .take()
                    .map(|slot| Box::new(slot) as crate::cleanup::Hold),
                after,
                late_writes: false,
            },
        );
    }
}

fn expired(name: &str) -> Error {
    Error::LockExpired {
        name: name.to_string(),
    }
}
