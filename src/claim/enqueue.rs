//! Enqueueing a claim: its key created if absent (else read: a retry after a
//! lost answer finds its own) and the queue read, in one transaction that is
//! safe to repeat; a key of this session left by an earlier claim is removed
//! first, so a token is never handed out twice.
//!
//! After our put, the two newest keys are ours and the one just before it: an
//! exclusive claim owns the queue if there is no such predecessor, and
//! otherwise it is the key a waiter watches, known without another read. (One
//! range does what etcd's `Mutex` does with its owner read, so the claim costs
//! the server no more.) A shared claim reads the whole queue: which keys before
//! it block it depends on what they are. A semaphore's claim, where every key
//! blocks, reads its own and the `permits` before it (and the count): admitted,
//! it has read every key before it; else its wait reads them once they are
//! fewer (see `Kind::admits` for the permits they carry).

use tracing::warn;

use super::admission::Earlier;
use super::look::range_responses;
use super::own_writes::OwnWrites;
use super::pending::{ClaimWrite, Pending};
use super::turn::Named;
use super::{Claims, Kind};
use crate::backend::{
    Compare, CompareOp, DeleteRequest, KeyValue, LeaseId, PutRequest, RangeRequest, Revision,
    SortOrder, Txn, TxnOp, TxnResponse,
};
use crate::error::{Error, Result};

/// A claim of queue `name` to enqueue: `key` (under `prefix`) with `value` on
/// `lease`.
pub(super) struct Enqueue<'a> {
    pub(super) claims: &'a Claims,
    pub(super) kind: Kind,
    pub(super) name: &'a str,
    pub(super) prefix: &'a str,
    pub(super) key: &'a str,
    pub(super) lease: LeaseId,
    pub(super) value: &'a [u8],
}

/// A claim in its queue.
pub(super) struct Enqueued {
    /// The key's create revision: the fencing token.
    pub(super) token: Revision,
    /// The key's value as found, when an earlier try (not this call's answer)
    /// created it.
    pub(super) found: Option<Vec<u8>>,
    /// A try got no answer: a copy of the write may land late.
    pub(super) in_doubt: bool,
    /// The writes to the key so far.
    pub(super) own_writes: OwnWrites,
    /// What the same transaction read of the queue.
    pub(super) first_look: FirstLook,
}

/// What the claim's own transaction read of the queue: a waiter's first look.
pub(super) enum FirstLook {
    /// An exclusive claim owns the queue.
    Owner,
    /// An exclusive claim waits, behind the predecessor the read named (if it
    /// did: a claim found rather than created read only the owner).
    Behind(Option<Named>),
    /// A shared claim, with the keys before it as read.
    Shared(Earlier),
}

/// Removals of this session's leftover keys tried at most per claim.
const LEFTOVERS: usize = 3;

impl Enqueue<'_> {
    /// Write the claim (see the module docs). The write, while in flight, is
    /// `pending`'s, so a cancelled call hands it to the cleanup.
    pub(super) async fn run(&self, pending: &mut Pending) -> Result<Enqueued> {
        let mut own_writes = OwnWrites::default();
        own_writes.sending(self.value);
        let mut leftovers = 0;
        let mut in_doubt = false;
        let resp = loop {
            let (resp, attempt) = self.send(self.txn(), pending).await?;
            in_doubt |= attempt > 1;
            // Found on the first try, our key predates this call: an earlier
            // claim of this session whose removal did not finish. Re-adopting
            // it would hand out its token twice; remove it and claim afresh.
            let found = (!resp.succeeded && attempt == 1)
                .then(|| resp.first_range().and_then(|r| r.kvs.first()))
                .flatten()
                .filter(|kv| kv.lease == Some(self.lease));
            match found {
                Some(kv) if leftovers < LEFTOVERS => {
                    leftovers += 1;
                    self.remove_leftover(kv).await?;
                }
                _ => break resp,
            }
        };
        let (token, found) = self.token(&resp, &mut own_writes)?;
        Ok(Enqueued {
            token,
            found,
            in_doubt,
            own_writes,
            first_look: self.first_look(&resp, token),
        })
    }

    /// Create the key if absent, reading the keys before it; else read it and
    /// the queue's owner (all of the queue for a shared claim).
    fn txn(&self) -> Txn {
        let (key, prefix) = (self.key, self.prefix);
        let newest = RangeRequest::prefix(prefix)
            .sort_by_create_revision(SortOrder::Descend)
            .with_limit(2);
        let owner = RangeRequest::prefix(prefix)
            .sort_by_create_revision(SortOrder::Ascend)
            .with_limit(1);
        let (newest, owner) = match self.kind {
            kind if kind.exclusive() => (newest, owner),
            Kind::Semaphore { .. } => (
                RangeRequest::prefix(prefix)
                    .sort_by_create_revision(SortOrder::Descend)
                    .with_limit(self.kind.room() as u64 + 1),
                RangeRequest::prefix(prefix),
            ),
            _ => {
                let all = RangeRequest::prefix(prefix);
                (all.clone(), all)
            }
        };
        Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then([
                TxnOp::Put(PutRequest::new(key, self.value.to_vec()).with_lease(self.lease)),
                TxnOp::Range(newest),
            ])
            .or_else([TxnOp::Range(RangeRequest::key(key)), TxnOp::Range(owner)])
    }

    /// Send `txn` under the retry policy: its answer and the try that got it.
    /// A cancelled call cannot leave the write in flight unseen: `pending`
    /// hands it to the cleanup, which lets it finish before deleting (else the
    /// write could land after the delete and orphan the key).
    async fn send(&self, txn: Txn, pending: &mut Pending) -> Result<(TxnResponse, u32)> {
        let write: ClaimWrite = {
            let (backend, retry) = (self.claims.backend.clone(), self.claims.retry.clone());
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
        outcome
    }

    /// Remove this session's key left by an earlier claim (`kv`).
    async fn remove_leftover(&self, kv: &KeyValue) -> Result<()> {
        warn!(
            token = kv.create_revision,
            "removing a leftover claim of this session"
        );
        let remove = Txn::new()
            .when([Compare::create_revision(
                self.key,
                CompareOp::Equal,
                kv.create_revision,
            )])
            .and_then([DeleteRequest::key(self.key)]);
        let backend = &self.claims.backend;
        self.claims
            .retry
            .run("remove leftover claim", |_| backend.txn(remove.clone()))
            .await?;
        Ok(())
    }

    /// The fencing token, and the value found when an earlier try created the
    /// key; `LockConflict` when someone wrote this session's exact key without
    /// its lease.
    fn token(
        &self,
        resp: &TxnResponse,
        own_writes: &mut OwnWrites,
    ) -> Result<(Revision, Option<Vec<u8>>)> {
        if resp.succeeded {
            own_writes.written(resp.revision);
            return Ok((resp.revision, None));
        }
        match range_responses(resp).first().and_then(|r| r.kvs.first()) {
            Some(kv) if kv.lease == Some(self.lease) => {
                own_writes.written(kv.mod_revision);
                Ok((kv.create_revision, Some(kv.value.clone())))
            }
            Some(_) => Err(Error::LockConflict {
                name: self.name.to_string(),
            }),
            None => Err(Error::unavailable(format!(
                "{} backend reported {} both absent and present",
                self.claims.backend.name(),
                self.key
            ))),
        }
    }

    /// What the transaction read: success gives [the newest keys: ours, then
    /// those before it], else [our key, the owner (or the queue)].
    fn first_look(&self, resp: &TxnResponse, token: Revision) -> FirstLook {
        let ranges = range_responses(resp);
        if !self.kind.exclusive() {
            let all = ranges.last().map_or(&[][..], |r| r.kvs.as_slice());
            let mut before: Vec<KeyValue> = all
                .iter()
                .filter(|kv| kv.create_revision < token)
                .cloned()
                .collect();
            before.sort_by_key(|kv| std::cmp::Reverse(kv.create_revision));
            // Keys before ours: every other key of the queue after our put
            // (the read may have stopped short of them).
            let keys_before = match ranges.last() {
                Some(r) if resp.succeeded => usize::try_from(r.count - 1).unwrap_or(0),
                _ => before.len(),
            };
            return FirstLook::Shared(Earlier {
                before,
                read_at: resp.revision,
                keys_before,
            });
        }
        if !resp.succeeded {
            let owner = ranges.get(1).and_then(|r| r.kvs.first());
            return match owner.map(|kv| kv.create_revision) == Some(token) {
                true => FirstLook::Owner,
                false => FirstLook::Behind(None),
            };
        }
        let Some(newest) = ranges.first() else {
            return FirstLook::Owner;
        };
        match newest.kvs.iter().find(|kv| kv.create_revision < token) {
            None => FirstLook::Owner,
            Some(kv) => FirstLook::Behind(Some(Named {
                predecessor: (kv.key.clone(), kv.create_revision),
                read_at: resp.revision,
                // The claims ahead: the queue held ours and `count - 1` others.
                ahead: usize::try_from(newest.count - 1).unwrap_or(1),
            })),
        }
    }
}
