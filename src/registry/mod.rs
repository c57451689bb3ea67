//! Service registry and discovery: registrations kept alive by sessions and
//! re-registered after a lost lease, a watch-backed local cache, and (feature
//! `grpc`) a load-balanced tonic channel.

mod cache;
mod etcd_naming;
mod filter;
#[cfg(feature = "grpc")]
mod grpc;
mod picker;
mod probe;
mod protection;
mod registration;
mod view;
mod warm;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::backend::{BackendExt, DeleteRequest, KeyRange, RangeRequest, Txn};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::follow::Follower;

pub use crate::health::Protected;
pub use cache::{ServiceCache, ServiceEvent, ServiceEventKind, ServiceWatch};
pub use etcd_naming::EtcdNaming;
pub use filter::{InstanceHealth, ServiceFilter};
#[cfg(feature = "grpc")]
pub use grpc::DiscoverStream;
#[cfg(feature = "grpc")]
pub use grpc::EndpointTemplate;
pub use picker::{PickStrategy, Picked, Picker};
#[cfg(feature = "probe")]
pub use probe::{Check, Prober, ProberConfig, ProberEvent};
pub use probe::{ProbeTarget, ProbeVerdict};
pub use protection::{CacheOptions, EmptyPushProtection};
pub use registration::{Registration, RegistrationState};
use view::ServiceView;

/// One instance of a service, as registered.
///
/// Entries written before `tags`, `weight` and `health` existed read as no tags,
/// weight 1 and [`InstanceHealth::Passing`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ServiceInfo {
    /// The instance's id, unique within the service (no `/`).
    pub id: String,
    /// The service's name (no `/`).
    pub name: String,
    /// Host name or IP address the instance serves on.
    pub address: String,
    /// Port the instance serves on (not 0).
    pub port: u16,
    /// Free-form labels (version, zone, ...), filtered on by [`ServiceFilter::metadata`].
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Tags, filtered on by [`ServiceFilter::tag`] (non-empty, no control characters).
    #[serde(default)]
    pub tags: BTreeSet<String>,
    /// Relative share of traffic under [`PickStrategy::Weighted`], 0 to
    /// [`MAX_WEIGHT`]; 0 drains the instance (no picker or channel sends to it).
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Whether the instance should get traffic; pickers, channels and the default
    /// [`ServiceFilter`] take only [`InstanceHealth::Passing`] instances.
    #[serde(default)]
    pub health: InstanceHealth,
    /// Registered without a lease ([`RegistryService::register_persistent`]):
    /// it stays until deregistered (by id, by `coordctl deregister`, or by a
    /// prober). Set by the registry: [`RegistryService::register`] writes it
    /// false, `register_persistent` true.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub persistent: bool,
    /// A prober's verdict on this registration, as read (see
    /// [`RegistryService::prober`] and [`RegistryService::record_verdict`]):
    /// when there is one, [`ServiceInfo::health`] as read is the worse of the
    /// instance's own health and the verdict's. Never written with the
    /// instance: a registration's own value carries `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<ProbeVerdict>,
}

fn default_weight() -> u32 {
    1
}

/// The largest [`ServiceInfo::weight`].
pub const MAX_WEIGHT: u32 = 10_000;

impl ServiceInfo {
    /// An instance without metadata or tags, weight 1, passing.
    pub fn new(
        id: impl Into<String>,
        name: impl Into<String>,
        address: impl Into<String>,
        port: u16,
    ) -> Self {
        ServiceInfo {
            id: id.into(),
            name: name.into(),
            address: address.into(),
            port,
            metadata: BTreeMap::new(),
            tags: BTreeSet::new(),
            weight: 1,
            health: InstanceHealth::Passing,
            persistent: false,
            probe: None,
        }
    }

    /// Add a metadata label.
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Add a tag.
    pub fn with_tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.insert(tag.into());
        self
    }

    /// Set the weight (0 to [`MAX_WEIGHT`]).
    pub fn with_weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// Set the health.
    pub fn with_health(mut self, health: InstanceHealth) -> Self {
        self.health = health;
        self
    }

    /// `address:port`, with an IPv6 address in brackets.
    pub fn authority(&self) -> String {
        if self.address.contains(':') && !self.address.starts_with('[') {
            format!("[{}]:{}", self.address, self.port)
        } else {
            format!("{}:{}", self.address, self.port)
        }
    }
}

/// How instances are written under a prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    /// `<namespace>service/<name>/<id>` → [`ServiceInfo`] as JSON.
    Native,
    /// etcd's `naming/endpoints` (grpc-go's etcd resolver): `<target>/<id>` →
    /// `{"Op":0,"Addr":"host:port","Metadata":…}`; `Metadata` is written only
    /// with `metadata` (else `null`: grpc-go's resolver crashes on a map).
    EtcdNaming { metadata: bool },
}

/// Where a service's instances are, and in which format.
#[derive(Clone, Debug)]
pub(crate) struct Source {
    pub(crate) format: Format,
    /// The service name (native) or resolver target (etcd naming).
    pub(crate) name: String,
    /// The keys' prefix, ending in `/`.
    pub(crate) prefix: String,
}

/// The stored value of `info` in `format`, after checking it.
pub(crate) fn encode(
    format: Format,
    info: &ServiceInfo,
    max_value_bytes: usize,
) -> Result<Vec<u8>> {
    let native = validate(info, max_value_bytes)?;
    match format {
        Format::Native => Ok(native),
        Format::EtcdNaming { metadata } => etcd_naming::encode(info, metadata, max_value_bytes),
    }
}

/// `value` as the JSON of instance `id`'s entry, within the backend's value limit.
fn to_json<T: Serialize>(id: &str, value: &T, max_value_bytes: usize) -> Result<Vec<u8>> {
    let json = serde_json::to_vec(value).map_err(|e| Error::Codec {
        key: id.to_string(),
        reason: e.to_string(),
    })?;
    if json.len() > max_value_bytes {
        return Err(Error::invalid(
            "metadata",
            format!(
                "the entry is {} bytes; the backend's limit is {max_value_bytes}",
                json.len()
            ),
        ));
    }
    Ok(json)
}

fn segment(argument: &'static str, value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(Error::invalid(argument, "must not be empty"));
    }
    if value.contains('/') {
        return Err(Error::invalid(
            argument,
            format!("must not contain '/' (got {value:?})"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(Error::invalid(
            argument,
            format!("must not contain control characters (got {value:?})"),
        ));
    }
    Ok(())
}

/// Check an instance before it is written; returns its JSON.
fn validate(info: &ServiceInfo, max_value_bytes: usize) -> Result<Vec<u8>> {
    segment("id", &info.id)?;
    segment("name", &info.name)?;
    if info.address.is_empty() {
        return Err(Error::invalid("address", "must not be empty"));
    }
    if info
        .address
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || c == '/')
    {
        return Err(Error::invalid(
            "address",
            format!("must be a host name or IP address (got {:?})", info.address),
        ));
    }
    if info.port == 0 {
        return Err(Error::invalid("port", "must not be 0"));
    }
    if info.weight > MAX_WEIGHT {
        return Err(Error::invalid(
            "weight",
            format!("must be at most {MAX_WEIGHT} (got {})", info.weight),
        ));
    }
    for tag in &info.tags {
        if tag.is_empty() || tag.chars().any(char::is_control) {
            return Err(Error::invalid(
                "tags",
                format!("a tag must be non-empty without control characters (got {tag:?})"),
            ));
        }
    }
    if info.probe.is_some() {
        // A verdict is read beside the instance, never written into it.
        let own = ServiceInfo {
            probe: None,
            ..info.clone()
        };
        return to_json(&own.id, &own, max_value_bytes);
    }
    to_json(&info.id, info, max_value_bytes)
}

/// Service registry and discovery of one [`Coordinator`](crate::Coordinator) (see
/// [`Coordinator::registry`](crate::Coordinator::registry)).
///
/// An instance lives at `<namespace>service/<name>/<id>` as JSON, attached to the
/// lease of a session of the registration's TTL.
///
/// # Behavior
/// - Registering an id that is present replaces it; the replaced
///   [`Registration`] notices, stops, and reports [`RegistrationState::Replaced`].
/// - A registration whose lease is lost (expired in an outage, revoked, lost by the
///   store) registers again by itself, on a new session, as soon as the store
///   answers again and keep-alives work (within one keep-alive interval, TTL/3).
/// - Entries that are not valid instances (written by someone else) are skipped
///   with a warning and counted ([`RegistryService::malformed_entries`]): never a
///   panic, never a poisoned cache.
///
/// # Example
///
/// ```
/// # use std::{sync::Arc, time::Duration};
/// # use coordkit::Coordinator;
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> coordkit::Result<()> {
/// let coordinator = Coordinator::new(Arc::new(coordkit_memory::MemoryBackend::new()));
/// use coordkit::ServiceInfo;
/// let registry = coordinator.registry();
/// let registration = registry
///     .register(ServiceInfo::new("orders-1", "orders", "10.0.0.1", 7001), Duration::from_secs(10))
///     .await?;
/// let cache = registry.cache("orders").await?; // filled before it returns
/// assert_eq!(cache.instances().len(), 1);
/// assert_eq!(registry.discover("orders").await?[0].authority(), "10.0.0.1:7001");
/// registration.deregister().await?;
/// assert!(registry.discover("orders").await?.is_empty());
/// # coordinator.close().await }
/// ```
#[derive(Clone)]
pub struct RegistryService {
    coord: Arc<Context>,
}

impl RegistryService {
    pub(crate) fn new(coord: Arc<Context>) -> Self {
        RegistryService { coord }
    }

    fn prefix(&self, name: &str) -> String {
        self.coord.keys.service(name)
    }

    /// Where the services an id is registered in are listed:
    /// `<namespace>service-id/<id>/<name>`, an empty key on the instance's
    /// lease, written and removed with it.
    fn index_prefix(&self, id: &str) -> String {
        self.coord.keys.id_index(id)
    }

    fn source(&self, name: &str) -> Source {
        Source {
            format: Format::Native,
            name: name.to_string(),
            prefix: self.prefix(name),
        }
    }

    /// Register `info` on a session of `ttl` and keep it registered until the
    /// returned [`Registration`] is deregistered or dropped.
    ///
    /// Errors: `InvalidArgument` for an empty id, name or address, `/` in the id or
    /// name, port 0, a TTL outside the backend's bounds, or metadata that makes the
    /// entry larger than the backend's value limit; `Closed` after the coordinator
    /// was closed; store errors (after which no key is left: a put that may have
    /// applied is removed).
    ///
    /// Dropping this future at any await leaves no instance advertised: the put
    /// runs as a task of its own, and what it wrote is removed once nobody can
    /// take its handle.
    #[tracing::instrument(level = "debug", name = "coord.registry.register", skip_all, fields(service = %info.name, id = %info.id), err(level = "debug"))]
    pub async fn register(&self, mut info: ServiceInfo, ttl: Duration) -> Result<Registration> {
        info.persistent = false;
        let value = validate(&info, self.coord.backend.limits().max_value_bytes)?;
        let key = self.coord.keys.instance(&info.name, &info.id);
        let index = self.coord.keys.id_index_entry(&info.id, &info.name);
        Registration::start(
            self.coord.clone(),
            Format::Native,
            info,
            key,
            vec![index],
            value,
            ttl,
        )
        .await
    }

    /// Register `info` without a lease, for an endpoint that runs no client
    /// (a database, a legacy host, an external service): it stays until
    /// deregistered — [`RegistryService::deregister`] by id, `coordctl
    /// deregister`, or a prober — whatever happens to this process. Marked
    /// [`ServiceInfo::persistent`]; caches, filters, pickers and channels take
    /// it like any instance. Its id-index entry is written with it, without a
    /// lease too. Registering the id again replaces it (a live
    /// [`Registration`] of the same id sees the foreign write and stops, as
    /// `Replaced`). Returns the write's revision. A try whose answer was lost
    /// is tried again (the same value): an earlier try held in the network
    /// may still land after it, rewriting the same instance at a later
    /// revision — the content is the same, the revision returned may not be
    /// the last.
    ///
    /// Errors: `InvalidArgument` as for [`RegistryService::register`];
    /// `OutcomeUnknown` when no try's answer came (the write may still apply;
    /// writing again is safe: the same value); other store errors. The write
    /// is one transaction: cancelling leaves it written whole or not at all.
    #[tracing::instrument(level = "debug", name = "coord.registry.register_persistent", skip_all, fields(service = %info.name, id = %info.id), err(level = "debug"))]
    pub async fn register_persistent(
        &self,
        mut info: ServiceInfo,
    ) -> Result<crate::backend::Revision> {
        info.persistent = true;
        let value = validate(&info, self.coord.backend.limits().max_value_bytes)?;
        let key = self.coord.keys.instance(&info.name, &info.id);
        let index = self.coord.keys.id_index_entry(&info.id, &info.name);
        let txn = Txn::new().and_then([
            crate::backend::PutRequest::new(key, value),
            crate::backend::PutRequest::new(index, Vec::new()),
        ]);
        let backend = &self.coord.backend;
        match self
            .coord
            .retry
            .run("registry register persistent", |_| backend.txn(txn.clone()))
            .await
        {
            Ok(resp) => Ok(resp.revision),
            Err(e) if e.is_retryable() => Err(crate::ambiguous::outcome_unknown(
                "registry register persistent",
                e,
            )),
            Err(e) => Err(e),
        }
    }

    /// The old name of [`RegistryService::deregister`].
    #[deprecated(since = "0.1.0", note = "one verb: use `deregister`")]
    pub async fn unregister(&self, id: &str) -> Result<usize> {
        self.deregister(id).await
    }

    /// Remove every instance with this `id`, whatever its service, for a process
    /// that no longer holds the [`Registration`] (the owner calls
    /// [`Registration::deregister`]); returns how many were removed, each with
    /// its id-index entry and a prober's verdict on it. The removed
    /// registrations stop (state [`RegistrationState::Removed`]).
    ///
    /// It reads the id's index (`<namespace>service-id/<id>/`, one key per
    /// service the id is registered in, written and removed with each instance
    /// on its lease), not the whole registry: its cost does not grow with the
    /// number of services. Instances written by other clients without that
    /// index are not found; delete their keys directly. Each removal is one
    /// transaction, guarded by the version read, so an instance registered again
    /// meanwhile stays. Cancelling leaves the instances removed so far removed.
    #[tracing::instrument(level = "debug", name = "coord.registry.deregister", skip_all, fields(id = %id), err(level = "debug"))]
    pub async fn deregister(&self, id: &str) -> Result<usize> {
        segment("id", id)?;
        let index = self.index_prefix(id);
        let backend = &self.coord.backend;
        let entries = self
            .coord
            .retry
            .run("registry id index", |_| {
                backend.range(RangeRequest::prefix(index.clone()))
            })
            .await?;
        let mut removed = 0;
        for entry in entries.kvs {
            let entry_key = entry.key_str();
            let Some(name) = entry_key.strip_prefix(&index) else {
                continue;
            };
            let key = self.coord.keys.instance(name, id);
            let instance = self
                .coord
                .retry
                .run("registry read", |_| backend.get(key.clone()))
                .await?;
            let txn = match &instance {
                Some(kv) => Txn::new()
                    .when([crate::backend::Compare::mod_revision(
                        key.clone(),
                        crate::backend::CompareOp::Equal,
                        kv.mod_revision,
                    )])
                    .and_then([
                        DeleteRequest::key(key.clone()),
                        DeleteRequest::key(entry_key.clone()),
                        DeleteRequest::key(self.coord.keys.probe_verdict(name, id)),
                    ]),
                // An index entry whose instance is gone: remove it.
                None => Txn::new()
                    .when([crate::backend::Compare::create_revision(
                        key.clone(),
                        crate::backend::CompareOp::Equal,
                        0,
                    )])
                    .and_then([DeleteRequest::key(entry_key.clone())]),
            };
            if backend.txn(txn).await?.succeeded && instance.is_some() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Every service name with its number of instances, in name order (one read
    /// of `<namespace>service/`).
    pub async fn services(&self) -> Result<Vec<(String, usize)>> {
        let prefix = self.coord.keys.services();
        let backend = &self.coord.backend;
        let resp = self
            .coord
            .retry
            .run("list services", |_| {
                backend.range(RangeRequest::prefix(prefix.clone()))
            })
            .await?;
        let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
        for kv in &resp.kvs {
            let key = kv.key_str();
            // `<name>/<id>`: an instance (a verdict, `<name>/<id>/probe`, is not).
            if let Some((name, id)) = key[prefix.len()..].split_once('/') {
                if !id.is_empty() && !id.contains('/') {
                    *counts.entry(name.to_string()).or_default() += 1;
                }
            }
        }
        Ok(counts.into_iter().collect())
    }

    /// The instances of `name` now, by id. Malformed entries are skipped.
    #[tracing::instrument(level = "debug", name = "coord.registry.discover", skip_all, fields(service = %name), err(level = "debug"))]
    pub async fn discover(&self, name: &str) -> Result<Vec<ServiceInfo>> {
        segment("name", name)?;
        self.discover_in(&self.source(name)).await
    }

    pub(crate) async fn discover_in(&self, source: &Source) -> Result<Vec<ServiceInfo>> {
        let backend = &self.coord.backend;
        let resp = self
            .coord
            .retry
            .run("discover", |_| backend.get_prefix(source.prefix.clone()))
            .await?;
        let mut view = ServiceView::new(source, self.coord.clone());
        view.load(&resp);
        Ok(view.instances())
    }

    /// The instances of `name` now that `filter` matches, by id.
    pub async fn discover_matching(
        &self,
        name: &str,
        filter: &ServiceFilter,
    ) -> Result<Vec<ServiceInfo>> {
        let mut all = self.discover(name).await?;
        all.retain(|i| filter.matches(i));
        Ok(all)
    }

    /// A [`Picker`] over a new [`ServiceCache`] of `name`.
    pub async fn picker(
        &self,
        name: &str,
        strategy: PickStrategy,
        filter: ServiceFilter,
    ) -> Result<Picker> {
        Ok(Picker::new(self.cache(name).await?, strategy, filter))
    }

    /// Follow `name`: one `Put` per current instance, then every change.
    #[tracing::instrument(level = "debug", name = "coord.registry.watch", skip_all, fields(service = %name), err(level = "debug"))]
    pub async fn watch(&self, name: &str) -> Result<ServiceWatch> {
        segment("name", name)?;
        self.watch_in(&self.source(name)).await
    }

    pub(crate) async fn watch_in(&self, source: &Source) -> Result<ServiceWatch> {
        let (follower, snapshot) = self.follower(source).await?;
        let view = ServiceView::new(source, self.coord.clone());
        Ok(ServiceWatch::new(view, follower, snapshot))
    }

    /// A local, watch-backed view of `name`, listed before this returns.
    #[tracing::instrument(level = "debug", name = "coord.registry.cache", skip_all, fields(service = %name), err(level = "debug"))]
    pub async fn cache(&self, name: &str) -> Result<ServiceCache> {
        self.cache_with(name, CacheOptions::default()).await
    }

    /// [`RegistryService::cache`] with `options` (empty-push protection, a
    /// snapshot for a warm start). `InvalidArgument` for options that
    /// [`CacheOptions::validate`] refuses. Dropping the future leaves nothing
    /// (no cache, no task; a snapshot file is only read).
    pub async fn cache_with(&self, name: &str, options: CacheOptions) -> Result<ServiceCache> {
        segment("name", name)?;
        options.validate()?;
        self.cache_in(&self.source(name), options).await
    }

    pub(crate) async fn cache_in(
        &self,
        source: &Source,
        options: CacheOptions,
    ) -> Result<ServiceCache> {
        let start = match self.follower(source).await {
            Ok((follower, changes)) => cache::Start::Store(follower, changes),
            Err(e) => match self.warm_start(source, &options, &e) {
                Some(saved) => cache::Start::Snapshot(
                    saved,
                    cache::Reach {
                        backend: self.coord.backend.clone(),
                        retry: self.coord.retry.clone(),
                        keys: KeyRange::prefix(source.prefix.clone()),
                    },
                ),
                None => return Err(e),
            },
        };
        Ok(ServiceCache::start(
            &source.name,
            ServiceView::new(source, self.coord.clone()),
            start,
            options,
            &self.coord,
        ))
    }

    /// The snapshot to start from, when the store did not answer (`error` is
    /// retryable) and the options name a snapshot of this service.
    fn warm_start(
        &self,
        source: &Source,
        options: &CacheOptions,
        error: &Error,
    ) -> Option<warm::Saved> {
        if !error.is_retryable() {
            return None;
        }
        let path = options.snapshot.clone()?;
        warm::Snapshot::new(path).load(&source.name)
    }

    async fn follower(&self, source: &Source) -> Result<(Follower, Vec<crate::follow::Change>)> {
        Follower::start(
            self.coord.backend.clone(),
            self.coord.retry.clone(),
            KeyRange::prefix(source.prefix.clone()),
        )
        .await
    }

    /// How many malformed entries this coordinator's registry has skipped.
    pub fn malformed_entries(&self) -> u64 {
        self.coord.malformed_entries.load(Ordering::Relaxed)
    }
}

impl std::fmt::Debug for RegistryService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryService")
            .field("namespace", &self.coord.keys.namespace())
            .finish()
    }
}
