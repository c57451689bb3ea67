//! Planted bugs of transactions (10–19, 33, 39, 42–44).

use std::sync::atomic::Ordering;

use coordkit::{
    Backend, Compare, CompareOp, CompareTarget, Error, RangeRequest, ReadConsistency, Result, Txn,
    TxnOp, TxnOpResponse, TxnResponse,
};

use super::PlantedClient;

impl PlantedClient {
    pub(super) async fn planted_txn(&self, mut txn: Txn) -> Result<TxnResponse> {
        if self.is(33) && self.lose_next.swap(false, Ordering::SeqCst) {
            return Err(Error::unavailable("lost before applying (planted bug 33)"));
        }
        self.change_the_request(&mut txn).await?;
        self.lease_ids_in(&mut txn).await?;
        let mut response = match self.inner.txn(txn.clone()).await {
            Err(Error::LeaseNotFound { .. }) if self.is(12) => {
                // The put applies without the lease it named.
                for op in txn.success.iter_mut().chain(&mut txn.failure) {
                    if let TxnOp::Put(p) = op {
                        p.lease = None;
                    }
                }
                self.inner.txn(txn).await?
            }
            other => other?,
        };
        self.change_the_answer(&mut response);
        Ok(response)
    }

    /// The bugs that change what is sent.
    async fn change_the_request(&self, txn: &mut Txn) -> Result<()> {
        if self.is(44) {
            txn.consistency = ReadConsistency::Latest;
        }
        if self.is(43) && txn.consistency == ReadConsistency::Observed {
            let behind = self.inner.revision() - 1;
            set_unset_read_revisions(txn, behind);
        }
        if self.is(42) && txn.writes() {
            // Ranges read the state before the transaction's own writes.
            set_unset_read_revisions(txn, self.inner.revision());
        }
        if self.is(39) {
            keep_the_last_write_of_each_key(&mut txn.success);
            keep_the_last_write_of_each_key(&mut txn.failure);
        }
        if self.is(10) && txn.compares.len() > 1 && self.any_holds(&txn.compares).await? {
            txn.compares.clear();
        }
        if self.is(11) {
            txn.failure.clear();
        }
        if self.is(13) || self.is(14) {
            self.compare_what_is_shown(&mut txn.compares).await?;
        }
        Ok(())
    }

    /// Bugs 13 and 14 change the stored create revision or version, so a
    /// compare on them sees what a read shows: each such compare is evaluated
    /// on the key as shown and sent as one that holds (the key's mod revision
    /// is still the one read) or one that never does.
    async fn compare_what_is_shown(&self, compares: &mut [Compare]) -> Result<()> {
        for c in compares {
            if !matches!(
                c.target,
                CompareTarget::CreateRevision(_) | CompareTarget::Version(_)
            ) {
                continue;
            }
            let mut now = self.inner.range(RangeRequest::key(c.key.clone())).await?;
            now.kvs.iter_mut().for_each(|kv| self.shown(kv));
            let (op, revision) = match now.kvs.first() {
                Some(kv) if c.evaluate(Some(kv)) => (CompareOp::Equal, kv.mod_revision),
                None if c.evaluate(None) => (CompareOp::Equal, 0),
                _ => (CompareOp::Less, 0),
            };
            c.op = op;
            c.target = CompareTarget::ModRevision(revision);
        }
        Ok(())
    }

    /// Bug 10: whether any one compare holds now.
    async fn any_holds(&self, compares: &[Compare]) -> Result<bool> {
        for c in compares {
            let now = self.inner.range(RangeRequest::key(c.key.clone())).await?;
            if c.evaluate(now.kvs.first()) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The bugs that change what is answered.
    fn change_the_answer(&self, response: &mut TxnResponse) {
        let wrote = response.responses.iter().any(|r| match r {
            TxnOpResponse::Put { .. } => true,
            TxnOpResponse::Delete { deleted, .. } => *deleted > 0,
            _ => false,
        });
        let deleted_nothing = !wrote
            && response
                .responses
                .iter()
                .any(|r| matches!(r, TxnOpResponse::Delete { .. }));
        if self.is(17) && wrote {
            response.revision -= 1;
        }
        if self.is(19) && deleted_nothing {
            response.revision += 1;
        }
        for r in &mut response.responses {
            match r {
                TxnOpResponse::Put { prev_kv } => {
                    if self.is(15) {
                        *prev_kv = None;
                    }
                    prev_kv.iter_mut().for_each(|kv| self.shown(kv));
                }
                TxnOpResponse::Delete { prev_kvs, .. } => {
                    if self.is(16) {
                        prev_kvs.clear();
                    }
                    prev_kvs.iter_mut().for_each(|kv| self.shown(kv));
                }
                TxnOpResponse::Range(range) => range.kvs.iter_mut().for_each(|kv| self.shown(kv)),
            }
        }
    }
}

/// Every range of the transaction without a revision reads at `revision`.
fn set_unset_read_revisions(txn: &mut Txn, revision: i64) {
    for op in txn.success.iter_mut().chain(&mut txn.failure) {
        if let TxnOp::Range(r) = op {
            r.revision = r.revision.or(Some(revision.max(1)));
        }
    }
}

/// Bug 39: of two writes of one key in a branch, the later one is kept, so the
/// transaction is accepted instead of refused.
fn keep_the_last_write_of_each_key(branch: &mut Vec<TxnOp>) {
    let mut kept: Vec<TxnOp> = Vec::with_capacity(branch.len());
    for op in branch.drain(..) {
        if let Some(written) = op.written() {
            kept.retain(|earlier| {
                earlier
                    .written()
                    .is_none_or(|other| !other.overlaps(&written))
            });
        }
        kept.push(op);
    }
    *branch = kept;
}
