//! Writes whose answer never comes: lost, late and held, on any backend.

use std::sync::Mutex;

use async_trait::async_trait;

use super::Intercept;
use crate::backend::{Backend, Txn, TxnResponse};
use crate::error::{Error, Result};

/// What an [`AmbiguousWrites`] does to the write it is armed for. All three are
/// what etcd does to a request it has received: it applies it whatever became
/// of the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteFault {
    /// Applied now; the caller gets `Unavailable` (the answer was lost).
    Lost,
    /// The caller gets `Timeout` now; the write applies just before the next
    /// write transaction reaches the store — after a retry has read the old state
    /// and before its own write lands, the worst moment for it.
    Late,
    /// The caller gets `Timeout` now; the write applies only at
    /// [`AmbiguousWrites::settle`] — after the caller has gone.
    Held,
}

/// An [`Intercept`] that gives the `k`-th write transaction from when it is
/// armed one [`WriteFault`]; every other call goes through untouched. A write
/// transaction is a `txn` with a put or a delete in either branch
/// ([`Txn::writes`]); reads are not counted.
///
/// A sweep arms it at every position in turn, as `tests/cancel.rs` drops a call
/// at every poll: first run the operation with nothing armed and read
/// [`AmbiguousWrites::writes`] to learn how many writes it makes.
///
/// ```
/// use std::sync::Arc;
/// use coordkit::testing::{AmbiguousWrites, Intercepted, WriteFault};
/// use coordkit::BackendExt;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> coordkit::Result<()> {
/// let store = Intercepted::new(coordkit_memory::MemoryBackend::new(), AmbiguousWrites::new());
/// store.intercept().arm(1, WriteFault::Held);
/// assert!(store.put("k", "v").await.is_err()); // the caller is told it failed …
/// assert!(store.get("k").await?.is_none());
/// store.intercept().settle(store.inner()).await; // … and the write lands later
/// assert!(store.get("k").await?.is_some());
/// # Ok(()) }
/// ```
#[derive(Debug, Default)]
pub struct AmbiguousWrites {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The position armed (counted from the arming) and its fault.
    armed: Option<(u64, WriteFault)>,
    /// Write transactions seen since the last arming.
    writes: u64,
    /// Whether the armed fault was given.
    fired: bool,
    /// Late writes: applied before the next write.
    late: Vec<Txn>,
    /// Held writes: applied at `settle`.
    held: Vec<Txn>,
}

impl AmbiguousWrites {
    /// Nothing armed: every call goes through.
    pub fn new() -> Self {
        Self::default()
    }

    /// Give the `k`-th write transaction from now (1: the next) `fault`, and start
    /// counting writes from 0. `k` of 0 arms nothing (only counts).
    pub fn arm(&self, k: u64, fault: WriteFault) {
        let mut state = self.state();
        state.armed = (k > 0).then_some((k, fault));
        state.writes = 0;
        state.fired = false;
    }

    /// Write transactions seen since the last [`AmbiguousWrites::arm`].
    pub fn writes(&self) -> u64 {
        self.state().writes
    }

    /// Whether the armed fault was given to a write.
    pub fn fired(&self) -> bool {
        self.state().fired
    }

    /// Apply every late and held write to `store` (the intercepted backend's
    /// inner one), in the order they were sent; each applies or is refused by
    /// its compares, as the store decides.
    pub async fn settle<B: Backend + ?Sized>(&self, store: &B) {
        let writes: Vec<Txn> = {
            let mut state = self.state();
            let mut writes = std::mem::take(&mut state.late);
            writes.append(&mut state.held);
            writes
        };
        for txn in writes {
            let _ = store.txn(txn).await;
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The fault for the write being sent now, if it is the armed one, and the
    /// late writes due before it.
    fn next_write(&self) -> (Option<WriteFault>, Vec<Txn>) {
        let mut state = self.state();
        state.writes += 1;
        let late = std::mem::take(&mut state.late);
        match state.armed {
            Some((k, fault)) if k == state.writes => {
                state.armed = None;
                state.fired = true;
                (Some(fault), late)
            }
            _ => (None, late),
        }
    }
}

#[async_trait]
impl<B: Backend> Intercept<B> for AmbiguousWrites {
    async fn txn(&self, inner: &B, txn: Txn) -> Result<TxnResponse> {
        if !txn.writes() {
            return inner.txn(txn).await;
        }
        let (fault, late) = self.next_write();
        for earlier in late {
            let _ = inner.txn(earlier).await;
        }
        let withheld = Error::Timeout {
            operation: "txn (answer withheld by AmbiguousWrites)",
        };
        match fault {
            None => inner.txn(txn).await,
            Some(WriteFault::Lost) => {
                inner.txn(txn).await?;
                Err(Error::unavailable(
                    "the answer was lost (AmbiguousWrites); the write applied",
                ))
            }
            Some(WriteFault::Late) => {
                self.state().late.push(txn);
                Err(withheld)
            }
            Some(WriteFault::Held) => {
                self.state().held.push(txn);
                Err(withheld)
            }
        }
    }
}
