//! Which instances a caller wants: by health, tags and metadata.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::ServiceInfo;

/// An instance's health, as it (or a checker it runs, see
/// [`Registration::check_health`](super::Registration::check_health)) reports it.
/// Ordered from best to worst.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum InstanceHealth {
    /// Serving normally: gets traffic.
    #[default]
    Passing,
    /// Up but degraded: no traffic unless a filter asks for it
    /// ([`ServiceFilter::with_warning`]).
    Warning,
    /// Up but failing its checks: listed, never picked.
    Critical,
}

/// Which instances of a service to use: every tag given, every metadata pair
/// given, and a health no worse than allowed (by default only
/// [`InstanceHealth::Passing`]).
///
/// ```
/// use coordkit::{InstanceHealth, ServiceFilter, ServiceInfo};
/// let filter = ServiceFilter::new().tag("grpc").metadata("zone", "a");
/// let a = ServiceInfo::new("a-1", "api", "10.0.0.1", 8080)
///     .with_tag("grpc")
///     .with_metadata("zone", "a");
/// assert!(filter.matches(&a));
/// assert!(!filter.matches(&a.clone().with_health(InstanceHealth::Warning)));
/// assert!(filter.clone().with_warning().matches(&a.with_health(InstanceHealth::Warning)));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceFilter {
    tags: BTreeSet<String>,
    metadata: BTreeMap<String, String>,
    worst: InstanceHealth,
}

impl Default for ServiceFilter {
    fn default() -> Self {
        Self::new()
    }
}

impl ServiceFilter {
    /// Passing instances, whatever their tags and metadata.
    pub fn new() -> Self {
        ServiceFilter {
            tags: BTreeSet::new(),
            metadata: BTreeMap::new(),
            worst: InstanceHealth::Passing,
        }
    }

    /// Every instance, whatever its health, tags and metadata.
    pub fn all() -> Self {
        Self::new().with_health_at_worst(InstanceHealth::Critical)
    }

    /// Only instances carrying `tag` (tags add up: all must be present).
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.insert(tag.into());
        self
    }

    /// Only instances whose metadata has `key` set to `value` (pairs add up).
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Take [`InstanceHealth::Warning`] instances too.
    pub fn with_warning(self) -> Self {
        self.with_health_at_worst(InstanceHealth::Warning)
    }

    /// Take instances whose health is `worst` or better.
    pub fn with_health_at_worst(mut self, worst: InstanceHealth) -> Self {
        self.worst = worst;
        self
    }

    /// Whether `info` is wanted.
    pub fn matches(&self, info: &ServiceInfo) -> bool {
        info.health <= self.worst
            && self.tags.iter().all(|t| info.tags.contains(t))
            && self
                .metadata
                .iter()
                .all(|(k, v)| info.metadata.get(k) == Some(v))
    }
}
