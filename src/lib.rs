//! # coordkit
//!
//! Distributed coordination — locks, leader election, service registry, config —
//! written once against one small primitive: a key-value store with global
//! revisions, conditional transactions, leases and ordered, resumable watches
//! (etcd's v3 data model). Backends implement the primitive ([`Backend`]):
//! `coordkit-etcd` for production, `coordkit-memory` for tests and single-process use.
//!
//! ```
//! use coordkit::{Backend, BackendExt, Compare, CompareOp, PutRequest, Txn};
//! # async fn demo(store: &dyn Backend) -> coordkit::Result<()> {
//! let rev = store.put("greeting", "hello").await?;
//! let txn = Txn::new()
//!     .when([Compare::mod_revision("greeting", CompareOp::Equal, rev)])
//!     .and_then([PutRequest::new("greeting", "hello again")]);
//! assert!(store.txn(txn).await?.succeeded);
//! # Ok(()) }
//! ```
//!
//! The recipes are reached through a [`Coordinator`] over any backend:
//! [`Coordinator::lock`] (distributed locks with fencing tokens),
//! [`Coordinator::election`] (leader election), [`Coordinator::registry`] (service
//! registration, discovery, a local cache and a balanced gRPC channel),
//! [`Coordinator::config`] (typed
//! config values with compare-and-set, watches, history and a [`ConfigManager`]);
//! locks and elections use etcd's own key protocol and are
//! kept by a [`Session`] whose loss is reported before the store could hand what it
//! holds to someone else.
//!
//! The tour (`cargo run --example tour`) shows the primitive and the recipes on the
//! in-memory backend.
//!
//! # Cancellation and cleanup
//!
//! Every async call may be dropped at any await (a `timeout`, a `select!`, a
//! task aborted). What that leaves behind:
//!
//! - **Reads** (`get`, `discover`, `leader`, `is_held`, …) leave nothing.
//! - **Single writes** (`ConfigCenter::set`, `compare_and_set`, `delete`,
//!   [`Leadership::proclaim`]) may or may not have been applied, exactly as when
//!   they time out; a proclaim's tries are recorded first, so the leader never
//!   takes one of its own writes for someone else's.
//! - **Calls that create an owned key** ([`LockService::acquire`],
//!   `try_acquire`, [`ElectionService::campaign`], [`RegistryService::register`])
//!   leave no key: what was written is handed to the coordinator's *cleanup*.
//! - **Calls that consume a handle** ([`LockGuard::unlock`],
//!   [`Leadership::resign`], [`Registration::deregister`]) and a dropped handle
//!   hand the key to the cleanup too.
//!
//! The cleanup deletes each such key — only while it is still the same owner's
//! (its create or mod revision) — and retries through store outages until the
//! delete is done or the session is lost (the lease's end then removes the key).
//! The coordinator's next local waiter for the same name goes only after that.
//! [`Coordinator::close`] waits for the cleanups.
//!
//! # Lost, late and held answers
//!
//! A store applies a write it has received even when its caller timed out or
//! went away: a write can be applied with its answer lost, apply late (after the
//! caller saw `Timeout` and while it retries), or be held and apply after the
//! caller is gone. Every recipe write that is retried carries an identity — a
//! tag, its value and lease, the revision it compares on — so a retry that meets
//! its own earlier write reports what that write did (a counter add counts once,
//! a barrier set says `true`, a config batch returns its version), never someone
//! else's change. Where the outcome cannot be known in time the call fails with
//! [`Error::OutcomeUnknown`]: the write may or may not have applied (once at
//! most); read before writing again. The conformance suite's `ambiguous_*` cases
//! inject each of the three faults at every write of each operation
//! ([`testing::AmbiguousWrites`], feature `testing`).
//!
//! A claim or register write *held* until after its owner released the key (an
//! unlock, a resign, a deregister, a dropped handle) would create the key again
//! on the owner's live session lease: when a write of the owner's was in doubt,
//! the coordinator's cleanup watches the key for the session's life and removes
//! such a late copy, unless this coordinator claims or registers the key again
//! first (the new owner finds the copy as its own). The same holds for a claim
//! whose acquire was cancelled while its write was in flight.

//! # Feature flags
//!
//! - `grpc` (default): [`RegistryService::channel`], a load-balanced tonic channel,
//!   and [`RegistryService::discover_changes`], a `tower::discover` stream.
//! - `testing`: [`testing::Faults`], the fault switches a backend's test support
//!   implements for the conformance suite, [`testing::Intercepted`], a
//!   backend that forwards every call but those a test's fault changes, and
//!   [`testing::AmbiguousWrites`], which answers one write lost, late or held.
//! - `toml`, `yaml`: `Codec::Toml` and `Codec::Yaml` for config values.
//! - `metrics`: the metrics below, through the [`metrics`](https://docs.rs/metrics)
//!   facade: install any recorder (`metrics-exporter-prometheus`, …); see
//!   `cargo run --example metrics --features metrics`.
//!
//! # Metrics
//!
//! | name | type | labels | moves when |
//! |---|---|---|---|
//! | `coordkit_claims_acquired_total` | counter | `kind` (`lock`, `election`, `semaphore`, `read_lock`, `write_lock`) | a lock or leadership is acquired |
//! | `coordkit_claim_wait_seconds` | histogram | `kind` | from the call to acquisition |
//! | `coordkit_claims_ended_total` | counter | `kind`, `reason` (`released`, `dropped`, `session_lost`, `key_deleted`, `key_changed`) | a held claim ends, once per claim |
//! | `coordkit_claim_hold_seconds` | histogram | `kind` | from acquisition to its end |
//! | `coordkit_sessions_alive` | gauge | | sessions started less sessions lost |
//! | `coordkit_sessions_lost_total` | counter | `reason` (`closed`, `deadline`, `lease_gone`) | a session ends |
//! | `coordkit_keep_alive_failures_total` | counter | | a keep-alive fails |
//! | `coordkit_watch_resumes_total` | counter | | a follower (cache, watch, config watcher) opens its watch again after its stream ended or failed |
//! | `coordkit_watch_resyncs_total` | counter | | a follower rereads its keys after a compaction |
//! | `coordkit_registrations_total` | counter | | an instance is registered |
//! | `coordkit_reregistrations_total` | counter | | a registration writes itself again after a lost lease |
//! | `coordkit_service_cache_instances` | gauge | `service` | a cache's instance count changes |
//! | `coordkit_follower_stale` | gauge | `follower` (`service <name>`, `config <key>`) | 1 while a cache or config manager cannot follow the store, else 0 |
//! | `coordkit_service_cache_protected` | gauge | `service` | 1 while a service cache holds instances that left (empty-push protection), else 0 |
//! | `coordkit_config_changes_total` | counter | `result` (`applied`, `rejected`, `undecodable`, `panicked`) | a config manager sees a new value |
//! | `coordkit_backend_request_seconds` | histogram | `op` (`range`, `txn`, `lease_grant`, `lease_keep_alive`, `lease_revoke`, `lease_time_to_live`, `watch`, `compact`) | every request a coordinator sends |
//! | `coordkit_backend_errors_total` | counter | `op`, `kind` ([`Error::kind`]) | a request fails |

#![warn(missing_docs, missing_debug_implementations)]

mod ambiguous;
pub mod backend;
mod claim;
mod cleanup;
pub mod config;
mod context;
mod coordinator;
mod error;
mod follow;
mod health;
mod keepers;
pub mod keys;
mod queue_name;
mod recipes;
pub mod registry;
mod retry;
mod session;
mod snapshot_file;
mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;

pub use backend::{
    Backend, BackendExt, Capabilities, Compare, CompareOp, CompareTarget, Created, DeleteRequest,
    Event, EventKind, KeyRange, KeyValue, LeaseGrant, LeaseId, LeaseInfo, Limits, Live, Namespaced,
    PutRequest, RangeRequest, RangeResponse, ReadConsistency, Revision, SortOrder, Txn, TxnOp,
    TxnOpResponse, TxnResponse, WatchRequest, WatchResponse, WatchStart, WatchStream,
};
pub use claim::{OwnershipLost, QueueEntry};
pub use config::{
    Codec, ConfigCenter, ConfigChange, ConfigEvent, ConfigEventKind, ConfigManager,
    ConfigManagerError, Watcher,
};
pub use coordinator::{Coordinator, CoordinatorBuilder, DEFAULT_NAMESPACE};
pub use error::{Error, Result};
pub use health::{Health, SessionHealth, SyncHealth, STALE_AFTER, SYNC_PROBE_INTERVAL};
pub use keys::KeyLayout;
pub use queue_name::QueueName;
pub use recipes::barrier::{BarrierService, DoubleBarrierEntry};
pub use recipes::counter::CounterService;
pub use recipes::election::{
    ElectionService, Leader, LeaderStream, Leadership, DEFAULT_ELECTION_TTL,
};
pub use recipes::latch::{LatchState, LeaderLatch};
pub use recipes::lock::{LockGuard, LockService};
pub use recipes::rw_lock::RwLockService;
pub use recipes::semaphore::SemaphoreService;
#[cfg(feature = "grpc")]
pub use registry::EndpointTemplate;
pub use registry::{
    CacheOptions, EmptyPushProtection, EtcdNaming, InstanceHealth, PickStrategy, Picked, Picker,
    ProbeTarget, ProbeVerdict, Protected, Registration, RegistrationState, RegistryService,
    ServiceCache, ServiceEvent, ServiceEventKind, ServiceFilter, ServiceInfo, ServiceWatch,
    MAX_WEIGHT,
};
#[cfg(feature = "probe")]
pub use registry::{Check, Prober, ProberConfig, ProberEvent};
pub use retry::{Backoff, RetryPolicy};
pub use session::{Session, SessionState};
