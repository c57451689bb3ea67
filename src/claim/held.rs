//! A held claim: the owner's key, its fencing token and the session that keeps
//! it; its release, its loss (watched), and its removal when dropped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tracing::{debug, info_span, warn, Instrument};

use super::key_hold::KeyHold;
use super::own_writes::OwnWrites;
use super::{expired, Claims, Kind, OwnershipLost};
use crate::backend::{
    Backend, BackendExt, Compare, CompareOp, DeleteRequest, EventKind, KeyValue, PutRequest,
    Revision, Txn,
};
use crate::cleanup::{Cleanup, Orphan};
use crate::error::{Error, Result};
use crate::follow::{watch_owned_key, Seen};
use crate::retry::RetryPolicy;
use crate::session::Session;

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
    pub(super) in_doubt: bool,
    /// For metrics: what it is, when it was acquired, whether its end was counted.
    kind: &'static str,
    acquired: tokio::time::Instant,
    end_counted: AtomicBool,
}

impl Claim {
    /// A claim now held: `key` with create revision `token` on `session`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn held(
        claims: &Claims,
        kind: Kind,
        name: &str,
        key: String,
        token: Revision,
        session: Session,
        hold: Option<KeyHold>,
        own_writes: OwnWrites,
    ) -> Claim {
        Claim {
            backend: claims.backend.clone(),
            retry: claims.retry.clone(),
            cleanup: claims.cleanup.clone(),
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
            self.own_writes().written(r.revision);
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
            self.count_end(why.label());
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

    fn foreign(&self, kind: EventKind, kv: &KeyValue) -> Option<OwnershipLost> {
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
                hold: hold.map(KeyHold::boxed),
                after: None,
                late_writes: false,
            },
        );
    }
}
