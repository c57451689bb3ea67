//! A registration: an instance's key kept alive, and written again after its lease
//! is lost.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, info_span, warn, Instrument};

mod keeper;
mod state;

pub use state::RegistrationState;
use state::StateCell;

use super::{Format, InstanceHealth, ServiceInfo};
use crate::ambiguous::{first_change_after, outcome_unknown};
use crate::backend::{
    Compare, CompareOp, DeleteRequest, LeaseId, PutRequest, RangeRequest, Revision, Txn, TxnOp,
};
use crate::claim::OwnWrites;
use crate::cleanup::Orphan;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::session::Session;

/// A registered instance, kept registered until [`Registration::deregister`] or
/// drop. A drop deregisters in the background: the coordinator's cleanup deletes
/// the key (only while it is still this registration's write), retrying through
/// store outages until it is gone or the session is lost — then the lease's end
/// removes it. See [`RegistryService`](super::RegistryService) for the behaviour
/// under faults.
#[must_use = "dropping a Registration deregisters the instance at once"]
pub struct Registration {
    inner: Arc<Inner>,
    /// The health checker task, if one runs.
    checker: Mutex<Option<JoinHandle<()>>>,
}

struct Inner {
    coord: Arc<Context>,
    /// The instance as last written (or being written); encoded again when
    /// written again (the same bytes: it was checked when set).
    info: Mutex<ServiceInfo>,
    format: Format,
    /// Values this registration wrote to its key, so its keeper does not take an
    /// update of its own for a replacement.
    own_writes: Mutex<OwnWrites>,
    key: String,
    /// Keys written and removed with the instance: its id index.
    also: Vec<String>,
    ttl: Duration,
    state: StateCell,
    /// The mod revision and lease of this registration's last write. Held across a
    /// write, so deregistering waits for one in flight.
    written: tokio::sync::Mutex<(Revision, LeaseId)>,
    /// The session of the last write.
    session: Mutex<Session>,
    /// Its entry in the coordinator's keepers, while it has one.
    membership: Mutex<Option<u64>>,
    /// Writing the instance again after a lost lease, while that runs.
    recovery: Mutex<Option<JoinHandle<()>>>,
    stopped: AtomicBool,
    /// A write of the instance (a register put, a re-registration) got no
    /// answer: a copy may still land after the deregistration.
    in_doubt: AtomicBool,
}

/// The register task's answer, awaited by `register`. Dropped before it was
/// taken (the call cancelled), it removes a key written meanwhile: the task
/// removes it itself when the answer cannot be delivered, and this catches an
/// answer delivered just before the drop.
struct Answer {
    rx: Option<tokio::sync::oneshot::Receiver<Result<Revision>>>,
    cleanup: crate::cleanup::Cleanup,
    key: String,
    also: Vec<String>,
    session: Session,
}

impl Answer {
    async fn take(&mut self) -> Result<Revision> {
        let Some(rx) = self.rx.as_mut() else {
            return Err(Error::unavailable("the registration's answer was taken"));
        };
        let answer = rx.await;
        self.rx = None;
        answer.map_err(|_| Error::unavailable("the registration task ended without an answer"))?
    }
}

impl Drop for Answer {
    fn drop(&mut self) {
        let Some(mut rx) = self.rx.take() else { return };
        // After `close`, the task's send fails (and it cleans up itself); an
        // answer sent before is still here to read.
        rx.close();
        if let Ok(Ok(revision)) = rx.try_recv() {
            let lease = self.session.lease();
            self.cleanup.remove(
                "abandoned registration",
                Orphan {
                    key: self.key.clone(),
                    also: self.also.clone(),
                    guards: vec![
                        Compare::lease(self.key.clone(), CompareOp::Equal, Some(lease)),
                        Compare::mod_revision(self.key.clone(), CompareOp::Equal, revision),
                    ],
                    session: self.session.clone(),
                    hold: None,
                    after: None,
                    late_writes: false,
                },
            );
        }
    }
}

impl Registration {
    /// Register: write the instance on a session of `ttl` and keep it.
    ///
    /// A session whose lease the store no longer has (ended in an etcd restart,
    /// not yet noticed by its keep-alives) is given up and the registration made
    /// again on a fresh one, up to the retry policy's attempts: the caller never
    /// sees `LeaseNotFound` for the coordinator's own lease.
    pub(crate) async fn start(
        coord: Arc<Context>,
        format: Format,
        info: ServiceInfo,
        key: String,
        also: Vec<String>,
        value: Vec<u8>,
        ttl: Duration,
    ) -> Result<Self> {
        let mut tries = 0;
        loop {
            let session = coord.session(ttl).await?;
            let lease = session.lease();
            let written = Self::start_on(
                coord.clone(),
                format,
                info.clone(),
                key.clone(),
                also.clone(),
                value.clone(),
                session.clone(),
            )
            .await;
            match written {
                Err(Error::LeaseNotFound { id }) if id == lease.0 => {
                    session.lease_ended();
                    tries += 1;
                    if tries >= coord.retry.max_attempts.max(1) {
                        return Err(Error::unavailable(format!(
                            "the store ended each of {tries} fresh leases before the registration was written"
                        )));
                    }
                    warn!(%lease, "the session's lease is gone; registering on a new one");
                }
                other => return other,
            }
        }
    }

    async fn start_on(
        coord: Arc<Context>,
        format: Format,
        info: ServiceInfo,
        key: String,
        also: Vec<String>,
        value: Vec<u8>,
        session: Session,
    ) -> Result<Self> {
        let ttl = session.ttl();
        let lease = session.lease();
        // The put runs as a task of its own: if this call is cancelled (or gives
        // up while a lost response may have applied), the task removes what it
        // wrote, so no key is left without a keeper or a handle.
        let (done, result) = tokio::sync::oneshot::channel();
        let backend = coord.backend.clone();
        let (retry, cleanup) = (coord.retry.clone(), coord.cleanup.clone());
        let (task_key, task_value, task_session) = (key.clone(), value.clone(), session.clone());
        let task_also = also.clone();
        // A late copy of an earlier registration of this key is this one's now.
        coord.cleanup.taken_over(&key);
        let doubted = Arc::new(AtomicBool::new(false));
        let task_doubted = doubted.clone();
        coord.cleanup.spawn("registration", async move {
            let put = Txn::new().and_then(with_index(
                PutRequest::new(task_key.clone(), task_value.clone()).with_lease(lease),
                &task_also,
                lease,
            ));
            // Repeating the same put is harmless: safe to retry.
            let outcome = retry
                .run("register", |attempt| {
                    task_doubted.fetch_or(attempt > 1, Ordering::SeqCst);
                    backend.txn(put.clone())
                })
                .await
                .map(|r| r.revision);
            let mut guards = vec![Compare::lease(
                task_key.clone(),
                CompareOp::Equal,
                Some(lease),
            )];
            guards.push(match &outcome {
                Ok(revision) => {
                    Compare::mod_revision(task_key.clone(), CompareOp::Equal, *revision)
                }
                // It may have applied: remove a key with exactly this value on this lease.
                Err(_) => Compare::value(task_key.clone(), CompareOp::Equal, task_value),
            });
            let failed = outcome.is_err();
            if done.send(outcome).is_err() || failed {
                let orphan = Orphan {
                    key: task_key,
                    also: task_also,
                    guards,
                    session: task_session,
                    hold: None,
                    after: None,
                    late_writes: false,
                };
                cleanup.remove_now("abandoned registration", orphan).await;
            }
        });
        let mut answer = Answer {
            rx: Some(result),
            cleanup: coord.cleanup.clone(),
            key: key.clone(),
            also: also.clone(),
            session: session.clone(),
        };
        let written = answer.take().await?;
        info!(key, lease = %lease, "registered");
        crate::telemetry::registered();
        let own_writes = OwnWrites::known(written);
        let inner = Arc::new(Inner {
            coord,
            info: Mutex::new(info),
            format,
            own_writes: Mutex::new(own_writes),
            key,
            also,
            ttl,
            state: StateCell::new(RegistrationState::Registered),
            written: tokio::sync::Mutex::new((written, lease)),
            session: Mutex::new(session.clone()),
            membership: Mutex::new(None),
            recovery: Mutex::new(None),
            stopped: AtomicBool::new(false),
            in_doubt: AtomicBool::new(doubted.load(Ordering::SeqCst)),
        });
        inner.keep(written, &session);
        Ok(Registration {
            inner,
            checker: Mutex::new(None),
        })
    }

    /// The registered instance, as last written.
    pub fn info(&self) -> ServiceInfo {
        self.inner.info()
    }

    /// Change what the instance advertises (health, weight, tags, metadata,
    /// address, port) and write it; its id and name cannot change (register
    /// anew). Returns the instance as written.
    ///
    /// Errors: `InvalidArgument` for a changed id or name or an invalid instance;
    /// `Closed` once the registration stopped (replaced, removed,
    /// deregistered); store errors, after which the change is still written by
    /// the next re-registration. While the registration is re-registering the
    /// new value is what it writes. Cancelling this call leaves the key with the
    /// old or the new value, both this registration's own.
    pub async fn update(&self, change: impl FnOnce(&mut ServiceInfo)) -> Result<ServiceInfo> {
        let mut info = self.info();
        change(&mut info);
        self.inner.update(info).await
    }

    /// Set the instance's health ([`Registration::update`] of one field).
    pub async fn set_health(&self, health: InstanceHealth) -> Result<ServiceInfo> {
        self.update(|i| i.health = health).await
    }

    /// Run `check` every `interval` in a task owned by this registration, and
    /// write the health it returns whenever it changes (the first result too,
    /// if it differs from the registered one). A failed write is logged and
    /// tried again at the next check. Replaces a checker started before; ends
    /// with the registration.
    ///
    /// Errors: `InvalidArgument` for a zero interval.
    pub fn check_health<F, Fut>(&self, interval: Duration, check: F) -> Result<()>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = InstanceHealth> + Send + 'static,
    {
        if interval.is_zero() {
            return Err(Error::invalid("interval", "must be above zero"));
        }
        let inner = self.inner.clone();
        let span = info_span!("coord.health_check", key = %inner.key);
        let task = tokio::spawn(
            async move {
                // The health known to be in the store; `None` after a failed
                // write (the local copy already says the new health, the store
                // may not), so the next check writes again.
                let mut stored = Some(inner.info().health);
                loop {
                    let health = check().await;
                    if inner.state.get().is_final() {
                        return;
                    }
                    if stored != Some(health) {
                        let mut info = inner.info();
                        info.health = health;
                        match inner.update(info).await {
                            Ok(_) => {
                                stored = Some(health);
                                info!(?health, "health changed");
                            }
                            Err(Error::Closed { .. }) => return,
                            Err(e) => {
                                stored = None;
                                warn!(error = %e, ?health, "cannot write the health; trying at the next check");
                            }
                        }
                    }
                    tokio::time::sleep(interval).await;
                }
            }
            .instrument(span),
        );
        let old = self
            .checker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace(task);
        if let Some(old) = old {
            old.abort();
        }
        Ok(())
    }

    /// The instance's key, as stored.
    pub fn key(&self) -> &str {
        &self.inner.key
    }

    /// The current state.
    pub fn state(&self) -> RegistrationState {
        self.inner.state.get()
    }

    /// Follow the state as it changes.
    pub fn watch_state(&self) -> watch::Receiver<RegistrationState> {
        self.inner.state.subscribe()
    }

    /// Remove the instance from the store (only if the key is still this
    /// registration's own write) and stop keeping it. A replaced or removed
    /// registration has nothing to remove: `Ok`.
    ///
    /// The handle is consumed either way: after a store error, and if this call
    /// is cancelled at any await, the removal goes on in the background as for a
    /// dropped registration.
    pub async fn deregister(self) -> Result<()> {
        self.stop_checker();
        self.inner.deregister().await
    }
}

impl Registration {
    fn stop_checker(&self) {
        if let Some(checker) = self
            .checker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            checker.abort();
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.stop_checker();
        // No recovery from here: the cleanup below removes the key.
        self.inner.stopped.store(true, Ordering::SeqCst);
        self.inner.leave();
        if self.state().is_final() {
            return;
        }
        let inner = self.inner.clone();
        self.inner
            .coord
            .cleanup
            .spawn("dropped registration", async move {
                // Wait for a write in flight, and forbid further ones.
                let written = inner.written.lock().await;
                inner.stopped.store(true, Ordering::SeqCst);
                if inner.state.get().is_final() {
                    return;
                }
                let orphan_after = written.0;
                let orphan = Orphan {
                    key: inner.key.clone(),
                    also: inner.removed_keys().skip(1).collect(),
                    guards: vec![Compare::mod_revision(
                        inner.key.clone(),
                        CompareOp::Equal,
                        written.0,
                    )],
                    session: inner.current_session(),
                    hold: None,
                    after: None,
                    late_writes: false,
                };
                drop(written);
                let after = orphan_after;
                inner
                    .coord
                    .cleanup
                    .remove_now("dropped registration", orphan)
                    .await;
                inner.watch_late_writes(after);
                inner.set_state(RegistrationState::Deregistered);
            });
    }
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("key", &self.inner.key)
            .field("state", &self.state())
            .finish()
    }
}

impl Inner {
    fn info(&self) -> ServiceInfo {
        self.info.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The stored value of the instance as last set.
    fn value(&self) -> Result<Vec<u8>> {
        super::encode(
            self.format,
            &self.info(),
            self.coord.backend.limits().max_value_bytes,
        )
    }

    /// The keys removed with the instance: its own, its id index, and a
    /// prober's verdict on it (native entries).
    fn removed_keys(&self) -> impl Iterator<Item = String> + '_ {
        let verdict = matches!(self.format, Format::Native)
            .then(|| format!("{}{}", self.key, crate::keys::PROBE_SUFFIX));
        std::iter::once(self.key.clone())
            .chain(self.also.iter().cloned())
            .chain(verdict)
    }

    fn own_writes(&self) -> std::sync::MutexGuard<'_, OwnWrites> {
        self.own_writes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Write `info` over this registration's own last write.
    async fn update(&self, info: ServiceInfo) -> Result<ServiceInfo> {
        let current = self.info();
        if info.id != current.id || info.name != current.name {
            return Err(Error::invalid(
                "info",
                format!(
                    "an update cannot change the id or name ({}/{} to {}/{}): register anew",
                    current.name, current.id, info.name, info.id
                ),
            ));
        }
        let value = super::encode(
            self.format,
            &info,
            self.coord.backend.limits().max_value_bytes,
        )?;
        // Wait for a write in flight (a re-registration), and hold off others.
        let mut written = self.written.lock().await;
        if self.stopped.load(Ordering::SeqCst) || self.state.get().is_final() {
            return Err(Error::Closed {
                what: "the registration",
            });
        }
        // From here a re-registration writes the new value.
        *self.info.lock().unwrap_or_else(|e| e.into_inner()) = info.clone();
        if self.state.get() == RegistrationState::Reregistering {
            return Ok(info);
        }
        let (ours, lease) = *written;
        self.own_writes().sending(&value);
        let put = Txn::new()
            .when([Compare::mod_revision(
                self.key.clone(),
                CompareOp::Equal,
                ours,
            )])
            .and_then([PutRequest::new(self.key.clone(), value.clone()).with_lease(lease)]);
        let backend = &self.coord.backend;
        let mut in_doubt = false;
        let sent = self
            .coord
            .retry
            .run("update registration", |attempt| {
                in_doubt |= attempt > 1;
                backend.txn(put.clone())
            })
            .await;
        let failure = match sent {
            Ok(r) if r.succeeded => {
                *written = (r.revision, lease);
                self.own_writes().written(r.revision);
                return Ok(info);
            }
            // Replaced, removed, or its lease lost meanwhile: the keeper says which.
            Ok(_) if !in_doubt => {
                return Err(Error::unavailable(
                    "the registration's key changed under the update; it is written again if the registration goes on",
                ))
            }
            Ok(_) => Error::unavailable("the registration's key changed under the update"),
            Err(e) => e,
        };
        // A try may have applied: the key's first change after our last write
        // is the only one the compare allowed; adopt it if it is this value on
        // this lease.
        match first_change_after(backend.as_ref(), &self.key, ours).await {
            Ok(Some(at)) => {
                let then = backend
                    .range(RangeRequest::key(self.key.clone()).at_revision(at))
                    .await
                    .map_err(|e| outcome_unknown("update registration", e))?;
                match then.kvs.first() {
                    Some(kv) if kv.mod_revision == at && kv.value == value && kv.lease == Some(lease) => {
                        *written = (at, lease);
                        self.own_writes().written(at);
                        Ok(info)
                    }
                    _ => Err(failure),
                }
            }
            Ok(None) => Err(outcome_unknown(
                "update registration",
                format!("{failure}; the new value may still be written (the registration knows it as its own)"),
            )),
            Err(e) => Err(outcome_unknown("update registration", e)),
        }
    }

    /// Once the instance is removed: if one of its writes got no answer, have
    /// the cleanup remove a copy that lands later (a creation of the key on the
    /// session's lease after revision `after`).
    fn watch_late_writes(&self, after: Revision) {
        if self.in_doubt.load(Ordering::SeqCst) {
            self.coord
                .cleanup
                .watch_late_writes(self.key.clone(), self.current_session(), after);
        }
    }

    fn current_session(&self) -> Session {
        self.session
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set_state(&self, state: RegistrationState) {
        self.state.set(state);
    }

    async fn deregister(&self) -> Result<()> {
        // Wait for a write in flight, and forbid further ones.
        let written = self.written.lock().await;
        self.stopped.store(true, Ordering::SeqCst);
        self.leave();
        if self.state.get().is_final() {
            return Ok(());
        }
        let txn = Txn::new()
            .when([Compare::mod_revision(
                self.key.clone(),
                CompareOp::Equal,
                written.0,
            )])
            .and_then(self.removed_keys().map(DeleteRequest::key));
        let backend = &self.coord.backend;
        let resp = self
            .coord
            .retry
            .run("deregister", |_| backend.txn(txn.clone()))
            .await?;
        if !resp.succeeded {
            // Not our last known write: one of our own whose answer was lost (an
            // update's, a re-registration's) is removed all the same; anyone
            // else's is left alone.
            self.remove_own_write(written.1).await?;
        }
        self.watch_late_writes(written.0);
        self.set_state(RegistrationState::Deregistered);
        info!(key = %self.key, "deregistered");
        Ok(())
    }

    /// Delete the key if it holds one of this registration's own writes on
    /// `lease` (its value and lease, as `OwnWrites` knows them), guarded by the
    /// revision it was read at; a key gone or someone else's is left as it is.
    async fn remove_own_write(&self, lease: LeaseId) -> Result<()> {
        let backend = &self.coord.backend;
        loop {
            let read = RangeRequest::key(self.key.clone());
            let now = self
                .coord
                .retry
                .run("deregister read", |_| backend.range(read.clone()))
                .await?;
            let Some(kv) = now.kvs.first() else {
                return Ok(());
            };
            let ours = kv
                .lease
                .is_some_and(|l| l == lease || l == self.current_session().lease())
                && self.own_writes().is_own(kv, kv.lease.unwrap_or(lease));
            if !ours {
                return Ok(());
            }
            let delete = Txn::new()
                .when([Compare::mod_revision(
                    self.key.clone(),
                    CompareOp::Equal,
                    kv.mod_revision,
                )])
                .and_then(self.removed_keys().map(DeleteRequest::key));
            let resp = self
                .coord
                .retry
                .run("deregister", |_| backend.txn(delete.clone()))
                .await?;
            if resp.succeeded {
                return Ok(());
            }
        }
    }
}

/// The instance's put and its index keys' (empty values, same lease).
fn with_index(put: PutRequest, also: &[String], lease: LeaseId) -> Vec<TxnOp> {
    std::iter::once(TxnOp::Put(put))
        .chain(
            also.iter()
                .map(|k| TxnOp::Put(PutRequest::new(k.clone(), Vec::new()).with_lease(lease))),
        )
        .collect()
}
