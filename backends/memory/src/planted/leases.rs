//! Planted bugs of leases (20–23, 34, 38, 41), and the lease ids two of them
//! must translate.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::MutexGuard;

use coordkit::{
    Backend, CompareTarget, KeyValue, LeaseGrant, LeaseId, LeaseInfo, PutRequest, RangeRequest,
    Result, Txn, TxnOp,
};

use super::PlantedClient;

/// The first lease id bug 41 hands out.
const FIRST_ID: i64 = 0x5eed_0000_0001;

/// Lease ids as callers know them and as the store does, for the bugs that
/// make them differ. Empty for every other bug.
#[derive(Debug, Default)]
pub(super) struct LeaseIds {
    /// Bug 41: the id a caller knows → the store's.
    to_store: HashMap<i64, i64>,
    /// The store's id → the one a caller knows (bug 41; bug 20's endless
    /// lease → the lease it stands in for).
    to_caller: HashMap<i64, i64>,
    /// Bug 20: a lease → the endless lease its keys are attached to.
    keys_on: HashMap<i64, i64>,
    /// Bug 41: ids revoked, handed out again first.
    free: BTreeSet<i64>,
    /// Bug 41: the next id never handed out.
    next: i64,
}

impl LeaseIds {
    /// The id a caller knows for a lease of the store.
    pub(super) fn shown(&self, id: LeaseId) -> LeaseId {
        LeaseId(*self.to_caller.get(&id.0).unwrap_or(&id.0))
    }
}

impl PlantedClient {
    fn ids(&self) -> MutexGuard<'_, LeaseIds> {
        self.leases.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The store's id of a lease a caller names.
    pub(super) fn lease_in_store(&self, id: LeaseId) -> LeaseId {
        LeaseId(*self.ids().to_store.get(&id.0).unwrap_or(&id.0))
    }

    /// The lease a caller's key is attached to in the store.
    fn lease_of_keys(&self, id: LeaseId) -> LeaseId {
        let ids = self.ids();
        let id = *ids.to_store.get(&id.0).unwrap_or(&id.0);
        LeaseId(*ids.keys_on.get(&id).unwrap_or(&id))
    }

    /// The lease ids a transaction names, as the store knows them.
    pub(super) async fn lease_ids_in(&self, txn: &mut Txn) -> Result<()> {
        for op in txn.success.iter_mut().chain(&mut txn.failure) {
            if let TxnOp::Put(PutRequest { lease: Some(l), .. }) = op {
                if self.is(20) {
                    // The put must still fail on a lease that ended.
                    self.inner.lease_time_to_live(*l).await?;
                }
                *l = self.lease_of_keys(*l);
            }
        }
        for c in &mut txn.compares {
            if let CompareTarget::Lease(Some(l)) = &mut c.target {
                *l = self.lease_of_keys(*l);
            }
        }
        Ok(())
    }

    /// Bug 33 on a write the store applies: its answer is lost after.
    pub(super) fn lose_answer_after_applying(&self) {
        if self.is(33) && self.lose_next.swap(false, Ordering::SeqCst) {
            self.inner.lose_next_response();
        }
    }

    pub(super) async fn planted_grant(&self, ttl: i64) -> Result<LeaseGrant> {
        let min = self.inner.limits().min_lease_ttl;
        if self.is(38) && ttl > 0 && ttl < min {
            let grant = self.inner.lease_grant(min).await?;
            return Ok(LeaseGrant { id: grant.id, ttl });
        }
        self.lose_answer_after_applying();
        let grant = self.inner.lease_grant(ttl).await?;
        if self.is(20) {
            let endless = self
                .inner
                .lease_grant(self.inner.limits().max_lease_ttl)
                .await?;
            let mut ids = self.ids();
            ids.keys_on.insert(grant.id.0, endless.id.0);
            ids.to_caller.insert(endless.id.0, grant.id.0);
        }
        if self.is(41) {
            let mut ids = self.ids();
            let public = match ids.free.pop_first() {
                Some(free) => free,
                None => {
                    ids.next = ids.next.max(FIRST_ID) + 1;
                    ids.next - 1
                }
            };
            ids.to_store.insert(public, grant.id.0);
            ids.to_caller.insert(grant.id.0, public);
            return Ok(LeaseGrant {
                id: LeaseId(public),
                ttl: grant.ttl,
            });
        }
        Ok(grant)
    }

    pub(super) async fn planted_keep_alive(&self, id: LeaseId) -> Result<i64> {
        if self.is(34) && self.stalled.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        let store_id = self.lease_in_store(id);
        if self.is(23) {
            // Answered, not extended.
            return Ok(self.inner.lease_time_to_live(store_id).await?.granted_ttl);
        }
        self.lose_answer_after_applying();
        self.inner.lease_keep_alive(store_id).await
    }

    pub(super) async fn planted_revoke(&self, id: LeaseId) -> Result<()> {
        let store_id = self.lease_in_store(id);
        let kept = if self.is(21) {
            self.values_of(store_id).await?
        } else {
            Vec::new()
        };
        self.lose_answer_after_applying();
        let revoked = self.inner.lease_revoke(store_id).await;
        if self.is(20) {
            let endless = self.ids().keys_on.remove(&store_id.0);
            if let Some(endless) = endless {
                let _ = self.inner.lease_revoke(LeaseId(endless)).await;
            }
        }
        revoked?;
        if !kept.is_empty() {
            // Bug 21: the keys are written back, on no lease.
            let puts = kept.into_iter().map(|kv| PutRequest::new(kv.key, kv.value));
            self.inner.txn(Txn::new().and_then(puts)).await?;
        }
        if self.is(41) {
            let mut ids = self.ids();
            ids.to_store.remove(&id.0);
            ids.to_caller.remove(&store_id.0);
            ids.free.insert(id.0);
        }
        Ok(())
    }

    /// Bug 21: the keys of a lease, read before it is revoked.
    async fn values_of(&self, id: LeaseId) -> Result<Vec<KeyValue>> {
        let info = self.inner.lease_time_to_live(id).await?;
        let mut kvs = Vec::with_capacity(info.keys.len());
        for key in info.keys {
            kvs.extend(self.inner.range(RangeRequest::key(key)).await?.kvs);
        }
        Ok(kvs)
    }

    pub(super) async fn planted_time_to_live(&self, id: LeaseId) -> Result<LeaseInfo> {
        let store_id = self.lease_in_store(id);
        let mut info = self.inner.lease_time_to_live(store_id).await?;
        info.id = id;
        let endless = self.ids().keys_on.get(&store_id.0).copied();
        if let Some(endless) = endless {
            info.keys = self.inner.lease_time_to_live(LeaseId(endless)).await?.keys;
        }
        if self.is(22) {
            info.keys.clear();
        }
        Ok(info)
    }

    /// A lease ended by the `Faults` switch: the caller's id, in the store.
    pub(super) fn expire(&self, id: LeaseId) {
        // Bug 20's endless lease stays: the keys outlive their lease.
        self.inner.expire_lease(self.lease_in_store(id));
    }
}
