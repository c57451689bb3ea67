//! Keys whose owner is gone, deleted in the background until done.
//!
//! A dropped guard, a cancelled `acquire`, `register` or `deregister`, a dropped
//! registration: each leaves a key on the coordinator's *shared* session, whose
//! lease lives until `close()`. Waiting for "the lease to end" would leave it for
//! the process's life. So each such key is handed here and deleted — guarded by a
//! compare, so a later owner's key is never touched — with retries (jittered, at
//! most the policy's longest delay apart) until the delete is done or the session
//! is lost (then the store's expiry of the lease removes the key).
//! [`Coordinator::close`](crate::Coordinator::close) waits for every cleanup.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tracing::{debug, warn, Instrument};

use crate::backend::{
    Backend, Compare, CompareOp, DeleteRequest, EventKind, KeyValue, RangeRequest, Revision, Txn,
    WatchRequest,
};
use crate::error::Error;
use crate::retry::RetryPolicy;
use crate::session::Session;

/// One coordinator's cleanups. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Cleanup {
    backend: Arc<dyn Backend>,
    retry: RetryPolicy,
    /// How many cleanups are running.
    running: Arc<watch::Sender<usize>>,
    /// Watches of released keys a write of which was in doubt, by key.
    late: Arc<Mutex<HashMap<String, AbortHandle>>>,
}

/// What keeps this process off an orphan's key (a claim's local turn or slot
/// number): dropped only once the key's removal is done or given up.
pub(crate) type Hold = Box<dyn Send>;

/// A key to delete, while every compare of `guards` holds, for as long as `session` lives; `hold`
/// (what keeps this process off the key, see [`Hold`]) is dropped only after.
pub(crate) struct Orphan {
    pub(crate) key: String,
    pub(crate) guards: Vec<Compare>,
    /// Keys that go with `key` (a registration's id index), deleted in the same
    /// transaction while the guards hold.
    pub(crate) also: Vec<String>,
    pub(crate) session: Session,
    pub(crate) hold: Option<Hold>,
    /// A write of the key still in flight when its caller was cancelled: awaited
    /// first, so it cannot land after the delete.
    pub(crate) after: Option<std::pin::Pin<Box<dyn Future<Output = ()> + Send>>>,
    /// A write of the key may still land after the delete (its answer never
    /// came): watch for it afterwards (see [`Cleanup::watch_late_writes`]; any
    /// creation of the key on the session's lease is late then).
    pub(crate) late_writes: bool,
}

/// Counts a cleanup as running until dropped (done or aborted with its runtime).
struct Running(Arc<watch::Sender<usize>>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl Cleanup {
    pub(crate) fn new(backend: Arc<dyn Backend>, retry: RetryPolicy) -> Self {
        Cleanup {
            backend,
            retry,
            running: Arc::new(watch::Sender::new(0)),
            late: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// `key` was released (deleted at revision `released_at`) while one of its
    /// owner's writes was in doubt — its answer never came, so it may still land
    /// (a held write), creating the key again on `session`'s lease, which lives
    /// on. Watch the key while the session lives and delete such a put, unless
    /// this coordinator's next owner of the key takes it over first
    /// ([`Cleanup::taken_over`]). At most one watch per key; it ends with the
    /// session (`close()` revokes it). A `released_at` of 0 means the owner
    /// never held the key (a cancelled claim): any creation on the lease is late,
    /// the key as it is now included.
    pub(crate) fn watch_late_writes(&self, key: String, session: Session, released_at: Revision) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (backend, retry) = (self.backend.clone(), self.retry.clone());
        let task = rt.spawn(
            remove_late_writes(backend, retry, key.clone(), session, released_at).in_current_span(),
        );
        let mut late = self.late.lock().unwrap_or_else(|e| e.into_inner());
        late.retain(|_, watch| !watch.is_finished());
        if let Some(old) = late.insert(key, task.abort_handle()) {
            old.abort();
        }
    }

    /// A new owner (a claim, a registration of this coordinator) takes `key`
    /// over: a write of the old owner that lands now is the new owner's to find
    /// (as its own key, on the same lease), so the watch of late writes stops.
    pub(crate) fn taken_over(&self, key: &str) {
        let watch = self
            .late
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
        if let Some(watch) = watch {
            watch.abort();
        }
    }

    /// Run `work` in the background, counted until it ends. Without a runtime
    /// (dropped outside one) it cannot run: the key ends with its lease, and a
    /// warning says so.
    pub(crate) fn spawn<F>(&self, what: &'static str, work: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            warn!(
                what,
                "dropped outside a tokio runtime: its key ends with its lease"
            );
            return;
        };
        self.running.send_modify(|n| *n += 1);
        let running = Running(self.running.clone());
        rt.spawn(
            async move {
                work.await;
                drop(running);
            }
            .in_current_span(),
        );
    }

    /// Delete `orphan`'s key in the background (see [`Cleanup::remove_now`]).
    pub(crate) fn remove(&self, what: &'static str, orphan: Orphan) {
        let this = self.clone();
        self.spawn(what, async move { this.remove_now(what, orphan).await });
    }

    /// [`Cleanup::remove`], and wait for it to end. Cancelling the wait leaves
    /// the removal running.
    pub(crate) async fn remove_and_wait(&self, what: &'static str, orphan: Orphan) {
        let (done, finished) = tokio::sync::oneshot::channel::<()>();
        let this = self.clone();
        self.spawn(what, async move {
            this.remove_now(what, orphan).await;
            let _ = done.send(());
        });
        let _ = finished.await;
    }

    /// Delete the key while its guard holds; retry until done, or until the
    /// session is lost (the lease's end then removes the key), or a refusal that
    /// retrying cannot change (logged). Then drop the key's hold.
    pub(crate) async fn remove_now(&self, what: &'static str, orphan: Orphan) {
        let Orphan {
            key,
            guards,
            also,
            session,
            hold,
            after,
            late_writes,
        } = orphan;
        if let Some(write) = after {
            write.await;
        }
        let txn = Txn::new().when(guards).and_then(
            std::iter::once(key.clone())
                .chain(also)
                .map(DeleteRequest::key),
        );
        let mut backoff = self.retry.backoff();
        loop {
            if session.is_lost() {
                debug!(what, key, "session lost: the key ends with its lease");
                break;
            }
            match self.backend.txn(txn.clone()).await {
                Ok(r) => {
                    debug!(what, key, deleted = r.succeeded, "cleaned up");
                    break;
                }
                Err(e) if e.is_retryable() => {
                    debug!(what, key, error = %e, "cleanup failed; retrying");
                }
                Err(e) => {
                    warn!(what, key, error = %e, "cleanup refused; the key ends with its lease");
                    break;
                }
            }
            tokio::select! {
                _ = backoff.wait() => {}
                _ = session.lost() => {}
            }
        }
        // Before the hold goes: the next owner's `taken_over` must find it.
        if late_writes && !session.is_lost() {
            self.watch_late_writes(key, session, 0);
        }
        drop(hold);
    }

    /// Wait until no cleanup runs.
    pub(crate) async fn drain(&self) {
        let mut rx = self.running.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }
}

/// Delete every creation of `key` on `session`'s lease after `released_at`,
/// until the session ends (see [`Cleanup::watch_late_writes`]).
async fn remove_late_writes(
    backend: Arc<dyn Backend>,
    retry: RetryPolicy,
    key: String,
    session: Session,
    released_at: Revision,
) {
    let lease = session.lease();
    let late = |kv: &KeyValue| kv.lease == Some(lease) && kv.create_revision > released_at;
    let remove = |kv: &KeyValue| {
        Txn::new()
            .when([
                Compare::create_revision(key.clone(), CompareOp::Equal, kv.create_revision),
                Compare::lease(key.clone(), CompareOp::Equal, Some(lease)),
            ])
            .and_then([DeleteRequest::key(key.clone())])
    };
    let mut from = released_at + 1;
    if released_at == 0 {
        // History of the key is no concern: start from the key as it is now.
        if let Ok(now) = backend.range(RangeRequest::key(key.clone())).await {
            if let Some(kv) = now.kvs.first().filter(|kv| late(kv)) {
                let _ = backend.txn(remove(kv)).await;
            }
            from = now.revision + 1;
        }
    }
    // Waits of at most the policy's eighth delay: the key is watched for the
    // session's whole life.
    let mut backoff = retry.backoff().capped(retry.delay(8));
    loop {
        let follow = async {
            let mut events = backend
                .watch(WatchRequest::key(key.clone()).from_revision(from))
                .await?;
            while let Some(resp) = events.next().await {
                let resp = resp?;
                from = resp.revision + 1;
                for event in &resp.events {
                    if event.kind == EventKind::Put && late(&event.kv) {
                        warn!(
                            key,
                            "a write that landed after its owner released the key: removing it"
                        );
                        retry
                            .run("remove a late write", |_| backend.txn(remove(&event.kv)))
                            .await?;
                    }
                }
            }
            Ok::<(), Error>(())
        };
        let ended = tokio::select! {
            ended = follow => ended,
            _ = session.lost() => return,
        };
        if let Err(Error::Compacted { .. }) = ended {
            // History from `from` is gone: judge the key as it is now.
            if let Ok(now) = backend.range(RangeRequest::key(key.clone())).await {
                if let Some(kv) = now.kvs.first().filter(|kv| late(kv)) {
                    let _ = backend.txn(remove(kv)).await;
                }
                from = now.revision + 1;
            }
        }
        tokio::select! {
            _ = backoff.wait() => {}
            _ = session.lost() => return,
        }
    }
}
