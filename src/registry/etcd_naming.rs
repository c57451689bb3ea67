//! etcd's `naming/endpoints` format, which grpc-go's etcd resolver reads: Go
//! services that resolve `etcd:///<target>` find instances registered here, and
//! instances a Go service added with `endpoints.Manager` are discovered here.
//!
//! The format: key `<target>/<id>`, value `{"Op":0,"Addr":"host:port","Metadata":…}`
//! (`Op` 0 is an add; `Metadata` any JSON, `null` when absent). The target is a
//! raw key prefix, outside the coordinator's namespace, as Go writes it.
//!
//! grpc-go's etcd resolver crashes every client that resolves a target holding an
//! entry whose `Metadata` is a JSON object (`hash of unhashable type
//! map[string]interface {}`, an upstream bug that Go's own `endpoints.Manager`
//! triggers too), so registrations write `Metadata: null` unless asked otherwise.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{
    encode as encode_as, Format, InstanceHealth, Registration, RegistryService, ServiceCache,
    ServiceInfo, ServiceWatch, Source,
};
use crate::error::{Error, Result};

/// The instances of one grpc-go etcd resolver target (see
/// [`RegistryService::etcd_naming`]).
#[derive(Clone, Debug)]
pub struct EtcdNaming {
    registry: RegistryService,
    target: String,
    metadata: bool,
}

/// A value as etcd's endpoints manager writes it (field order and names
/// included: Go's `json.Marshal` of `internal.Update`).
#[derive(Serialize)]
struct Update<'a> {
    #[serde(rename = "Op")]
    op: u8,
    #[serde(rename = "Addr")]
    addr: String,
    #[serde(rename = "Metadata")]
    metadata: Option<&'a BTreeMap<String, String>>,
}

/// A value as Go reads it (its JSON decoding ignores the case of field names).
#[derive(Deserialize)]
struct Read {
    #[serde(rename = "Op", alias = "op", alias = "OP", default)]
    op: u8,
    #[serde(rename = "Addr", alias = "addr", alias = "ADDR", default)]
    addr: String,
    #[serde(rename = "Metadata", alias = "metadata", default)]
    metadata: Option<serde_json::Value>,
}

/// `info` as etcd's endpoints manager writes it: with `metadata`, its metadata
/// becomes `Metadata` (`null` when empty); without, `Metadata` is `null`. The format has no health, weight or tags: a
/// health other than passing is `InvalidArgument` (grpc-go would still send
/// traffic); weight and tags are not written.
pub(crate) fn encode(
    info: &ServiceInfo,
    metadata: bool,
    max_value_bytes: usize,
) -> Result<Vec<u8>> {
    if info.health != InstanceHealth::Passing {
        return Err(Error::invalid(
            "health",
            "etcd's naming format has no health, and grpc-go's resolver would still send traffic: deregister the instance instead",
        ));
    }
    let update = Update {
        op: 0,
        addr: info.authority(),
        metadata: (metadata && !info.metadata.is_empty()).then_some(&info.metadata),
    };
    super::to_json(&info.id, &update, max_value_bytes)
}

/// The instance an entry `<target>/<id>` describes; why not, for a log line.
pub(crate) fn decode(
    target: &str,
    id: &str,
    value: &[u8],
) -> std::result::Result<ServiceInfo, String> {
    let read: Read = serde_json::from_slice(value).map_err(|e| e.to_string())?;
    if read.op != 0 {
        return Err(format!("Op {} is not an add (0)", read.op));
    }
    let (host, port) = read
        .addr
        .rsplit_once(':')
        .ok_or_else(|| format!("Addr {:?} is not host:port", read.addr))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("Addr {:?} has no valid port", read.addr))?;
    if host.is_empty() || id.is_empty() {
        return Err(format!("Addr {:?} or the key's id is empty", read.addr));
    }
    let metadata = match read.metadata {
        None | Some(serde_json::Value::Null) => BTreeMap::new(),
        Some(serde_json::Value::Object(map)) => map
            .into_iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => (k, s),
                other => (k, other.to_string()),
            })
            .collect(),
        Some(other) => BTreeMap::from([("metadata".to_string(), other.to_string())]),
    };
    let mut info = ServiceInfo::new(id, target, host, port);
    info.metadata = metadata;
    Ok(info)
}

impl RegistryService {
    /// The instances of grpc-go etcd resolver target `target` (etcd's
    /// `naming/endpoints` format), to register instances Go clients find and to
    /// find instances Go services registered.
    ///
    /// Registrations write `"Metadata":null` whatever the instance's metadata:
    /// grpc-go's etcd resolver crashes every client resolving the target when an
    /// entry's `Metadata` is a JSON object (see [`EtcdNaming::with_metadata`]).
    /// Discovery reads metadata that others wrote.
    ///
    /// Errors: `InvalidArgument` for an empty target, one ending in `/`, or one
    /// with control characters.
    pub fn etcd_naming(&self, target: &str) -> Result<EtcdNaming> {
        if target.is_empty() || target.ends_with('/') || target.chars().any(char::is_control) {
            return Err(Error::invalid(
                "target",
                format!("must be non-empty, not end in '/', and have no control characters (got {target:?})"),
            ));
        }
        Ok(EtcdNaming {
            registry: self.clone(),
            target: target.to_string(),
            metadata: false,
        })
    }
}

impl EtcdNaming {
    /// Registrations through the result write the instance's metadata as
    /// `Metadata` (a JSON object of strings), as Go's `endpoints.Manager` does
    /// when given metadata.
    ///
    /// **Warning:** grpc-go's etcd resolver (`go.etcd.io/etcd/client/v3/naming/resolver`)
    /// crashes every client that resolves a target holding such an entry, with
    /// `hash of unhashable type map[string]interface {}`. Use this only for
    /// targets that no grpc-go client resolves (coordkit and `endpoints.Manager`
    /// readers handle it).
    pub fn with_metadata(mut self) -> Self {
        self.metadata = true;
        self
    }

    fn format(&self) -> Format {
        Format::EtcdNaming {
            metadata: self.metadata,
        }
    }

    fn source(&self) -> Source {
        Source {
            format: self.format(),
            name: self.target.clone(),
            prefix: format!("{}/", self.target),
        }
    }

    /// The resolver target.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The key of instance `id`: `<target>/<id>`.
    pub fn key(&self, id: &str) -> String {
        format!("{}/{id}", self.target)
    }

    /// Register `info` under `<target>/<info.id>` in etcd's format, kept and
    /// re-registered as by [`RegistryService::register`] (same errors, same
    /// cancellation rule). `info.name` is not part of the format. Its
    /// [`Registration::update`] rewrites the same format; a health other than
    /// passing is refused there.
    pub async fn register(&self, info: ServiceInfo, ttl: Duration) -> Result<Registration> {
        let coord = &self.registry.coord;
        let value = encode_as(self.format(), &info, coord.backend.limits().max_value_bytes)?;
        let key = self.key(&info.id);
        Registration::start(
            coord.clone(),
            self.format(),
            info,
            key,
            Vec::new(),
            value,
            ttl,
        )
        .await
    }

    /// The instances now, by id (the key after `<target>/`), named by the target;
    /// entries that are not adds of a `host:port` are skipped and counted as
    /// malformed.
    pub async fn discover(&self) -> Result<Vec<ServiceInfo>> {
        self.registry.discover_in(&self.source()).await
    }

    /// Follow the target: one `Put` per instance, then every change.
    pub async fn watch(&self) -> Result<ServiceWatch> {
        self.registry.watch_in(&self.source()).await
    }

    /// A local, watch-backed view of the target, listed before this returns.
    pub async fn cache(&self) -> Result<ServiceCache> {
        self.registry
            .cache_in(&self.source(), super::CacheOptions::default())
            .await
    }

    /// A balanced tonic channel over the target's instances (feature `grpc`), as
    /// [`RegistryService::channel_with`].
    #[cfg(feature = "grpc")]
    pub async fn channel_with(
        &self,
        template: super::EndpointTemplate,
        filter: super::ServiceFilter,
    ) -> Result<tonic::transport::Channel> {
        Ok(super::grpc::balance(self.cache().await?, template, filter))
    }
}
