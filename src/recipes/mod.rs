//! The recipes written on the claim machinery and the primitive: locks,
//! elections (and the leader latch), semaphores, read-write locks, barriers and
//! counters. The config center (`config`) and the registry (`registry`) have
//! folders of their own.

pub(crate) mod barrier;
pub(crate) mod counter;
pub(crate) mod election;
pub(crate) mod latch;
pub(crate) mod lock;
pub(crate) mod rw_lock;
pub(crate) mod semaphore;
