//! Faults injected into one client handle, as a broken network would produce them.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use coordkit::{Error, Result};
use tokio::sync::watch;

/// The fault switches of one client handle.
pub(crate) struct ClientFaults {
    pub(crate) id: u64,
    fail_next: AtomicU64,
    lose_next_response: AtomicBool,
    keep_alives_stalled: AtomicBool,
    partitioned: watch::Sender<bool>,
    /// Watch registrations made again after a cut or a partition.
    watch_resumes: AtomicU64,
    /// How long new watches deliver nothing, if set.
    watch_lag: std::sync::Mutex<Option<std::time::Duration>>,
}

impl ClientFaults {
    pub(crate) fn new(id: u64) -> Self {
        ClientFaults {
            id,
            fail_next: AtomicU64::new(0),
            lose_next_response: AtomicBool::new(false),
            keep_alives_stalled: AtomicBool::new(false),
            partitioned: watch::Sender::new(false),
            watch_resumes: AtomicU64::new(0),
            watch_lag: std::sync::Mutex::new(None),
        }
    }

    pub(crate) fn set_watch_lag(&self, lag: Option<std::time::Duration>) {
        *self.watch_lag.lock().unwrap_or_else(|e| e.into_inner()) = lag;
    }

    /// How long a watch opened now delivers nothing.
    pub(crate) fn watch_lag(&self) -> Option<std::time::Duration> {
        *self.watch_lag.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Called before every operation: a partition or a pending failure answers for it.
    pub(crate) fn before_call(&self) -> Result<()> {
        if *self.partitioned.borrow() {
            return Err(Error::unavailable(
                "memory client is partitioned (injected)",
            ));
        }
        let failed = self
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failed {
            return Err(Error::unavailable("call failed (injected)"));
        }
        Ok(())
    }

    /// Called after a write committed: whether its response is to be lost.
    pub(crate) fn after_write(&self) -> Result<()> {
        if self.lose_next_response.swap(false, Ordering::SeqCst) {
            return Err(Error::unavailable(
                "connection lost after the write was sent (injected; it committed)",
            ));
        }
        Ok(())
    }

    pub(crate) fn keep_alive_answered(&self) -> Result<()> {
        if self.keep_alives_stalled.load(Ordering::SeqCst) {
            return Err(Error::Timeout {
                operation: "lease keep-alive (stalled by injection)",
            });
        }
        Ok(())
    }

    pub(crate) fn fail_next(&self, n: u64) {
        self.fail_next.store(n, Ordering::SeqCst);
    }

    pub(crate) fn lose_next_response(&self) {
        self.lose_next_response.store(true, Ordering::SeqCst);
    }

    pub(crate) fn set_keep_alives_stalled(&self, stalled: bool) {
        self.keep_alives_stalled.store(stalled, Ordering::SeqCst);
    }

    pub(crate) fn set_partitioned(&self, partitioned: bool) {
        self.partitioned.send_replace(partitioned);
    }

    pub(crate) fn note_watch_resume(&self) {
        self.watch_resumes.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn watch_resumes(&self) -> u64 {
        self.watch_resumes.load(Ordering::SeqCst)
    }

    pub(crate) fn is_partitioned(&self) -> bool {
        *self.partitioned.borrow()
    }

    /// Wait until the client is not partitioned.
    pub(crate) async fn healed(&self) {
        let mut rx = self.partitioned.subscribe();
        let _ = rx.wait_for(|p| !*p).await;
    }
}
