//! Test support (feature `testing`): what a backend's own test support
//! implements ([`Faults`]), so a backend crate can implement it on its own types
//! and hand them to the conformance suite (`coordkit-conformance`), which
//! re-exports it; [`Intercepted`], a backend that forwards every call but
//! those a test changes; and [`AmbiguousWrites`], an interceptor that loses,
//! delays or holds the answer of one write, on any backend.

mod ambiguous;
mod intercept;

pub use ambiguous::{AmbiguousWrites, WriteFault};
pub use intercept::{Intercept, Intercepted};

use crate::backend::LeaseId;

/// Faults a harness can inject into one client (connection), as coordkit-memory
/// does. What each must do is a rule of the conformance suite: see its
/// `injected_faults_take_effect` case, which checks them before the other fault
/// cases rely on them.
pub trait Faults: Send + Sync {
    /// The next `n` calls of this client — any [`Backend`](crate::Backend) method
    /// that talks to the store: `range`, `txn`, the lease calls, `watch`,
    /// `compact` — fail with `Unavailable` without reaching the store.
    fn fail_next(&self, n: u64);
    /// The next `txn` (with or without writes), `lease_grant`,
    /// `lease_keep_alive`, `lease_revoke` or `compact` of this client applies,
    /// and its caller gets `Unavailable`.
    fn lose_next_response(&self);
    /// Keep-alives go unanswered until resumed.
    fn stall_keep_alives(&self);
    /// Keep-alives are answered again.
    fn resume_keep_alives(&self);
    /// Open watch streams break (and resume by themselves).
    fn cut_watches(&self);
    /// Every call fails and watches are disconnected until healed.
    fn partition(&self);
    /// End a partition.
    fn heal(&self);
    /// End a lease now, as if its TTL ran out.
    fn expire_lease(&self, id: LeaseId);
    /// Watches this client opens from now on (until `None`) lag, as etcd registers
    /// a watch when a write commits while it creates one: each delivers nothing
    /// until `lag` after it opened, then everything it owes, in order.
    fn lag_new_watches(&self, lag: Option<std::time::Duration>);
    /// How many times this client's watches reconnected after a cut or a
    /// partition: the proof a cut took effect. Required: the suite checks that
    /// [`Faults::cut_watches`] makes it grow, so a cut that does nothing cannot
    /// let the fault cases pass without their fault.
    fn watch_resumes(&self) -> u64;
}
