//! A key being claimed: removed again (in the background) if the claim does
//! not complete — cancelled, failed or given up — with its write, if still in
//! flight, let finish first.

use std::future::Future;
use std::pin::Pin;

use super::key_hold::KeyHold;
use crate::backend::{Compare, CompareOp, LeaseId, Revision, TxnResponse};
use crate::cleanup::{Cleanup, Orphan};
use crate::error::Result;
use crate::session::Session;

/// A key being claimed: removed again (in the background) if the claim does not
/// complete, and its hold (the local turn or the slot) dropped only after that.
pub(super) struct Pending {
    pub(super) cleanup: Cleanup,
    pub(super) session: Session,
    pub(super) key: String,
    pub(super) token: Option<Revision>,
    /// The key is to be removed if the claim does not complete.
    pub(super) armed: bool,
    pub(super) hold: Option<KeyHold>,
    /// The claim's write while it runs: polled by the claim, and by the cleanup
    /// (before its delete) if the claim is dropped mid-write.
    pub(super) in_flight: Option<ClaimWrite>,
    /// A try of the write got no answer: a copy may land after the removal.
    pub(super) in_doubt: bool,
}

/// The claim's write (its response and the try that got it), boxed so that a
/// cancelled claim can hand it, still running, to the cleanup.
pub(super) type ClaimWrite = Pin<Box<dyn Future<Output = Result<(TxnResponse, u32)>> + Send>>;

impl Pending {
    pub(super) fn disarm(mut self) -> Option<KeyHold> {
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
        let hold = self.hold.take().map(KeyHold::boxed);
        let guards = vec![orphan_guard(&self.key, self.token, self.session.lease())];
        // A write still in flight when the claim was dropped may be held by the
        // store past its caller: as one whose answer never came.
        let late_writes = self.in_doubt || self.in_flight.is_some();
        let after = self.in_flight.take().map(|write| {
            Box::pin(async move {
                let _ = write.await;
            }) as Pin<Box<dyn Future<Output = ()> + Send>>
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
    pub(super) async fn remove_now(mut self) {
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
