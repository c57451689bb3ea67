//! The cases: one public async function per property of the contract.
//!
//! Each takes a [`Ctx`](crate::Ctx) (a fresh namespace on the store under test) and
//! fails by panicking or returning an error.

mod ambiguous;
mod ambiguous_runs;
mod barrier;
mod config;
mod config_codecs;
mod config_faults;
mod config_gray;
mod config_more;
mod config_sealed;
mod config_transfer;
mod counter;
mod election;
mod faults;
mod input;
mod kv;
mod lease;
mod left_behind;
mod lock;
mod registry;
mod registry_faults;
mod registry_more;
mod registry_persistent;
mod registry_probe;
mod registry_protection;
mod semaphore;
mod session_faults;
mod txn;
mod watch;

pub use ambiguous::*;
pub use ambiguous_runs::*;
pub use barrier::*;
pub use config::*;
pub use config_codecs::*;
pub use config_faults::*;
pub use config_gray::*;
pub use config_more::*;
pub use config_sealed::*;
pub use config_transfer::*;
pub use counter::*;
pub use election::*;
pub use faults::*;
pub use input::*;
pub use kv::*;
pub use lease::*;
pub use left_behind::*;
pub use lock::*;
pub use registry::*;
pub use registry_faults::*;
pub use registry_more::*;
pub use registry_persistent::*;
pub use registry_probe::*;
pub use registry_protection::*;
pub use semaphore::*;
pub use session_faults::*;
pub use txn::*;
pub use watch::*;

pub use crate::model::random_operations_match_the_model;
