//! A registration's keeping: how it judges its key's changes for the
//! coordinator's keepers, and, after a lost lease, how it writes the instance
//! again on a working session.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tracing::{info, info_span, warn, Instrument};

use super::{with_index, Inner, RegistrationState};
use crate::backend::{
    Compare, CompareOp, EventKind, LeaseId, PutRequest, RangeRequest, Revision, Txn,
};
use crate::error::{Error, Result};
use crate::follow::Seen;
use crate::keepers::{Ended, Kept};
use crate::session::Session;

impl Kept for Inner {
    fn judge(&self, seen: Seen<'_>, ours: Revision, lease: LeaseId) -> Option<Ended> {
        match seen {
            Seen::Event(EventKind::Delete, _) | Seen::Now(None) => Some(Ended::Deleted),
            Seen::Event(EventKind::Put, kv) | Seen::Now(Some(kv)) => (kv.mod_revision != ours
                && !self.own_writes().is_own(kv, lease))
            .then_some(Ended::Overwritten),
        }
    }

    fn ended(self: Arc<Self>, why: Ended) {
        if self.stopped.load(Ordering::SeqCst) {
            return;
        }
        let span = info_span!("coord.registration", key = %self.key);
        let task = tokio::spawn(recover(self.clone(), why).instrument(span));
        // A recovery before this one has ended (it joined the table last).
        drop(
            self.recovery
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .replace(task),
        );
    }
}

impl Inner {
    /// Have the coordinator's keepers follow the key from our write at `ours`
    /// on `session` (the caller holds `written`, so a deregistration waits).
    pub(super) fn keep(self: &Arc<Self>, ours: Revision, session: &Session) {
        let kept: Arc<dyn Kept> = self.clone();
        let id = self
            .coord
            .registrations
            .join(&self.key, &kept, ours, session);
        *self.membership.lock().unwrap_or_else(|e| e.into_inner()) = Some(id);
    }

    /// Stop being kept (a deregistration, a drop).
    pub(super) fn leave(&self) {
        if let Some(id) = self
            .membership
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            self.coord.registrations.leave(&self.key, id);
        }
        if let Some(task) = self
            .recovery
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            task.abort();
        }
    }

    /// Whether the lease of our last write is gone: the store says so, or the
    /// session is lost. A store that cannot be asked is asked again (a transient
    /// error is no proof the lease ended, and re-registering would undo an
    /// `deregister(id)`), until it answers or the session is lost.
    async fn lease_gone(&self, session: &Session) -> bool {
        let lease = self.written.lock().await.1;
        let mut backoff = self.coord.retry.backoff();
        loop {
            if session.is_lost() {
                return true;
            }
            match self.coord.backend.lease_time_to_live(lease).await {
                Ok(_) => return false,
                Err(Error::LeaseNotFound { .. }) => return true,
                Err(e) if !e.is_retryable() => {
                    warn!(error = %e, "cannot ask about the lease; taking it as gone");
                    return true;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "cannot ask about the lease yet; retrying");
                }
            }
            tokio::select! {
                _ = session.lost() => return true,
                _ = backoff.wait() => {}
            }
        }
    }

    /// Write the key again on a working session, unless someone else's
    /// registration holds it now. `Ok(None)`: replaced.
    async fn reregister(&self) -> Result<Option<Session>> {
        let session = self.coord.session(self.ttl).await?;
        // Do not advertise an instance whose lease cannot be kept alive.
        if !session.keep_alive().await? {
            return Err(Error::LeaseNotFound {
                id: session.lease().0,
            });
        }
        let lease = session.lease();
        let mut written = self.written.lock().await;
        if self.stopped.load(Ordering::SeqCst) {
            return Ok(None);
        }
        let value = self.value()?;
        self.own_writes().sending(&value);
        let put = with_index(
            PutRequest::new(self.key.clone(), value.clone()).with_lease(lease),
            &self.also,
            lease,
        );
        let create = Txn::new()
            .when([Compare::create_revision(
                self.key.clone(),
                CompareOp::Equal,
                0,
            )])
            .and_then(put.clone())
            .or_else([RangeRequest::key(self.key.clone())]);
        let resp = self
            .coord
            .backend
            .txn(create)
            .await
            .inspect_err(|_| self.in_doubt.store(true, Ordering::SeqCst))?;
        if resp.succeeded {
            *written = (resp.revision, lease);
            self.own_writes().written(resp.revision);
            return Ok(Some(session));
        }
        // Still there: ours (its lease not yet expired by the store) is taken over;
        // anyone else's wins.
        let current = resp.first_range().and_then(|r| r.kvs.first());
        match current {
            // Our own create, whose answer was lost: this value on this session's lease.
            Some(kv) if kv.lease == Some(lease) && kv.value == value => {
                *written = (kv.mod_revision, lease);
                self.own_writes().written(kv.mod_revision);
                Ok(Some(session))
            }
            Some(kv) if kv.mod_revision == written.0 => {
                let take = Txn::new()
                    .when([Compare::mod_revision(
                        self.key.clone(),
                        CompareOp::Equal,
                        written.0,
                    )])
                    .and_then(put);
                let resp = self.coord.backend.txn(take).await?;
                if resp.succeeded {
                    *written = (resp.revision, lease);
                    self.own_writes().written(resp.revision);
                    Ok(Some(session))
                } else {
                    Err(Error::unavailable(
                        "the key changed while re-registering; trying again",
                    ))
                }
            }
            Some(_) => Ok(None),
            None => Err(Error::unavailable(
                "the key vanished while re-registering; trying again",
            )),
        }
    }
}

/// After the key stopped holding our write or the session was lost: stop if
/// someone else replaced or removed the instance; else write it again on a
/// working session and be kept from there.
async fn recover(inner: Arc<Inner>, why: Ended) {
    let session = inner.current_session();
    match why {
        Ended::Overwritten => {
            warn!("replaced by another registration of the same id; stopping");
            inner.set_state(RegistrationState::Replaced);
            return;
        }
        Ended::Deleted if !inner.lease_gone(&session).await => {
            warn!("removed by someone else; stopping");
            inner.set_state(RegistrationState::Removed);
            return;
        }
        Ended::Deleted | Ended::SessionLost => {}
    }
    if inner.stopped.load(Ordering::SeqCst) {
        return;
    }
    if inner.coord.is_closed() {
        info!("coordinator closed; registration ended");
        inner.set_state(RegistrationState::Deregistered);
        return;
    }
    warn!("lease lost; registering again");
    inner.set_state(RegistrationState::Reregistering);
    let mut backoff = inner.coord.retry.backoff().capped(inner.ttl / 3);
    // A lost session takes all its registrations with it: they are written
    // again a few at a time, so the store keeps serving everyone else.
    let Ok(_turn) = inner.coord.registrations.recovering().acquire_owned().await else {
        return;
    };
    loop {
        if inner.coord.is_closed() {
            inner.set_state(RegistrationState::Deregistered);
            return;
        }
        match inner.reregister().await {
            Ok(Some(session)) => {
                let written = inner.written.lock().await;
                if inner.stopped.load(Ordering::SeqCst) {
                    return;
                }
                *inner.session.lock().unwrap_or_else(|e| e.into_inner()) = session.clone();
                inner.set_state(RegistrationState::Registered);
                info!(lease = %session.lease(), "registered again");
                crate::telemetry::reregistered();
                inner.keep(written.0, &session);
                return;
            }
            Ok(None) => {
                if !inner.stopped.load(Ordering::SeqCst) {
                    warn!("replaced while re-registering; stopping");
                    inner.set_state(RegistrationState::Replaced);
                }
                return;
            }
            Err(e) => {
                let wait = backoff.failed();
                tracing::debug!(error = %e, ?wait, "re-registration failed; retrying");
                tokio::time::sleep(wait).await;
            }
        }
    }
}
