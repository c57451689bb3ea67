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

use std::future::Future;
use std::sync::Arc;

use tokio::sync::watch;
use tracing::{debug, warn, Instrument};

use crate::key_hold::KeyHold;
use crate::{Backend, Compare, DeleteRequest, RetryPolicy, Session, Txn};

/// One coordinator's cleanups. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Cleanup {
    backend: Arc<dyn Backend>,
    retry: RetryPolicy,
    /// How many cleanups are running.
    running: Arc<watch::Sender<usize>>,
}

/// A key to delete, while every compare of `guards` holds, for as long as `session` lives; `hold`
/// (what keeps this process off the key, see [`KeyHold`]) is dropped only after.
pub(crate) struct Orphan {
    pub(crate) key: String,
    pub(crate) guards: Vec<Compare>,
    /// Keys that go with `key` (a registration's id index), deleted in the same
    /// transaction while the guards hold.
    pub(crate) also: Vec<String>,
    pub(crate) session: Session,
    pub(crate) hold: Option<KeyHold>,
    /// A write of the key still in flight when its caller was cancelled: awaited
    /// first, so it cannot land after the delete.
    pub(crate) after: Option<std::pin::Pin<Box<dyn Future<Output = ()> + Send>>>,
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
        } = orphan;
        if let Some(write) = after {
            write.await;
        }
        let txn = Txn::new().when(guards).and_then(
            std::iter::once(key.clone())
                .chain(also)
                .map(DeleteRequest::key),
        );
        let mut attempt = 1u32;
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
                    debug!(what, key, attempt, error = %e, "cleanup failed; retrying");
                }
                Err(e) => {
                    warn!(what, key, error = %e, "cleanup refused; the key ends with its lease");
                    break;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(self.retry.jittered_delay(attempt)) => {}
                _ = session.lost() => {}
            }
            attempt = attempt.saturating_add(1);
        }
        drop(hold);
    }

    /// Wait until no cleanup runs.
    pub(crate) async fn drain(&self) {
        let mut rx = self.running.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }
}
