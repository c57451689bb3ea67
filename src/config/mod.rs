//! The config center: typed values (JSON through serde), compare-and-set, watches
//! that never miss, history and rollback; and [`ConfigManager`], a typed value kept
//! current in memory.

mod key;
mod manager;
mod watcher;

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::coordinator::CoordinatorInner;
use crate::{Backend, BackendExt, Error, RangeRequest, Result, RetryPolicy, Revision};

pub(crate) use key::{validate_key, validate_prefix};
pub use manager::{ConfigManager, ConfigManagerBuilder, ConfigManagerError};
pub use watcher::{ConfigEvent, ConfigEventKind, Watcher};

/// A version of a config value: the key's mod revision in the store. Every write
/// gets a new, larger version; 0 means "absent" in a compare-and-set.
pub type Version = Revision;

/// One earlier (or the current) version of a config value, from
/// [`ConfigCenter::history`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigVersion<T> {
    /// The version (mod revision) that wrote this value.
    pub version: Version,
    /// The value as written then.
    pub value: T,
}

/// Config values under `<namespace>config/` (see
/// [`Coordinator::config`](crate::Coordinator::config)).
///
/// Keys are `/`-separated paths relative to that root (`app/db/url`). Values are
/// JSON ([`ConfigCenter::set`], [`ConfigCenter::get`]) or raw bytes
/// ([`ConfigCenter::set_bytes`], [`ConfigCenter::get_bytes`]).
///
/// # Behavior
/// - A missing key is `NotFound { key }`; a bad key (empty, a leading `/`, empty,
///   `.` or `..` segments, control characters) is `InvalidArgument`; a value that
///   does not serialize or decode is `Codec { key }`.
/// - Reads are retried under the coordinator's [`RetryPolicy`]; writes are not
///   (a lost response could otherwise apply twice), except that a compare-and-set
///   is one transaction and can be repeated by the caller safely.
#[derive(Clone)]
pub struct ConfigCenter {
    backend: Arc<dyn Backend>,
    retry: RetryPolicy,
    root: String,
    followers: Arc<crate::health::Followers>,
}

fn encode<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| Error::Codec {
        key: key.to_string(),
        reason: e.to_string(),
    })
}

pub(crate) fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::Codec {
        key: key.to_string(),
        reason: e.to_string(),
    })
}

impl ConfigCenter {
    pub(crate) fn new(coord: &CoordinatorInner) -> Self {
        ConfigCenter {
            backend: coord.backend.clone(),
            retry: coord.retry.clone(),
            root: format!("{}config/", coord.namespace),
            followers: coord.followers.clone(),
        }
    }

    /// The store key of a config key.
    fn full(&self, key: &str) -> String {
        format!("{}{key}", self.root)
    }

    /// The config key of a store key under the root.
    pub(crate) fn relative<'a>(&self, full: &'a str) -> &'a str {
        full.strip_prefix(&self.root).unwrap_or(full)
    }

    /// The root of every config key in the store (`<namespace>config/`).
    pub fn root(&self) -> &str {
        &self.root
    }

    pub(crate) fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    pub(crate) fn retry(&self) -> &RetryPolicy {
        &self.retry
    }

    /// The raw value at `key` and its version.
    #[tracing::instrument(level = "debug", name = "coord.config.get", skip_all, fields(key = %key), err(level = "debug"))]
    pub async fn get_bytes_with_version(&self, key: &str) -> Result<(Vec<u8>, Version)> {
        validate_key(key)?;
        let full = self.full(key);
        let kv = self
            .retry
            .run("config get", |_| self.backend.get(full.clone()))
            .await?;
        match kv {
            Some(kv) => Ok((kv.value, kv.mod_revision)),
            None => Err(Error::NotFound {
                key: key.to_string(),
            }),
        }
    }

    /// The raw value at `key`.
    pub async fn get_bytes(&self, key: &str) -> Result<Vec<u8>> {
        Ok(self.get_bytes_with_version(key).await?.0)
    }

    /// The value at `key`, decoded from JSON, and its version.
    pub async fn get_with_version<T: DeserializeOwned>(&self, key: &str) -> Result<(T, Version)> {
        let (bytes, version) = self.get_bytes_with_version(key).await?;
        Ok((decode(key, &bytes)?, version))
    }

    /// The value at `key`, decoded from JSON.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<T> {
        Ok(self.get_with_version(key).await?.0)
    }

    /// Write raw bytes at `key`; returns the new version.
    #[tracing::instrument(level = "debug", name = "coord.config.set", skip_all, fields(key = %key), err(level = "debug"))]
    pub async fn set_bytes(&self, key: &str, value: impl Into<Vec<u8>>) -> Result<Version> {
        validate_key(key)?;
        self.backend.put(self.full(key), value.into()).await
    }

    /// Write `value` as JSON at `key`; returns the new version.
    pub async fn set<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<Version> {
        validate_key(key)?;
        let bytes = encode(key, value)?;
        self.backend.put(self.full(key), bytes).await
    }

    /// Delete `key`; returns whether it existed.
    #[tracing::instrument(level = "debug", name = "coord.config.delete", skip_all, fields(key = %key), err(level = "debug"))]
    pub async fn delete(&self, key: &str) -> Result<bool> {
        validate_key(key)?;
        self.backend.delete(self.full(key)).await
    }

    /// The keys under `prefix` (relative to the config root, in key order); `""`
    /// lists every key.
    #[tracing::instrument(level = "debug", name = "coord.config.list", skip_all, fields(key = %prefix), err(level = "debug"))]
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        validate_prefix(prefix)?;
        let full = self.full(prefix);
        let resp = self
            .retry
            .run("config list", |_| {
                self.backend.range(RangeRequest::prefix(full.clone()))
            })
            .await?;
        Ok(resp
            .kvs
            .iter()
            .map(|kv| self.relative(&kv.key_str()).to_string())
            .collect())
    }

    /// Write raw bytes at `key` only if its version is `expected` (0: only if
    /// absent); returns the new version, or `VersionConflict { key, current }`.
    #[tracing::instrument(level = "debug", name = "coord.config.compare_and_set", skip_all, fields(key = %key), err(level = "debug"))]
    pub async fn compare_and_set_bytes(
        &self,
        key: &str,
        value: impl Into<Vec<u8>>,
        expected: Version,
    ) -> Result<Version> {
        validate_key(key)?;
        match self
            .backend
            .compare_and_swap(self.full(key), expected, value.into())
            .await
        {
            Err(Error::VersionConflict { current, .. }) => Err(Error::VersionConflict {
                key: key.to_string(),
                current,
            }),
            other => other,
        }
    }

    /// Write `value` as JSON at `key` only if its version is `expected` (0: only if
    /// absent); returns the new version, or `VersionConflict { key, current }`
    /// carrying the current version (0 if absent).
    pub async fn compare_and_set<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        expected: Version,
    ) -> Result<Version> {
        validate_key(key)?;
        let bytes = encode(key, value)?;
        self.compare_and_set_bytes(key, bytes, expected).await
    }

    /// The raw versions of `key`, newest (the current one) first, at most `limit`,
    /// as far back as the store keeps history (compaction shortens it) and no
    /// further back than the key's latest creation.
    #[tracing::instrument(level = "debug", name = "coord.config.history", skip_all, fields(key = %key), err(level = "debug"))]
    pub async fn history_bytes(
        &self,
        key: &str,
        limit: usize,
    ) -> Result<Vec<ConfigVersion<Vec<u8>>>> {
        validate_key(key)?;
        let full = self.full(key);
        let mut out = Vec::new();
        let mut at: Option<Revision> = None;
        while out.len() < limit {
            let mut request = RangeRequest::key(full.clone());
            if let Some(r) = at {
                request = request.at_revision(r);
            }
            let resp = match self
                .retry
                .run("config history", |_| self.backend.range(request.clone()))
                .await
            {
                Ok(resp) => resp,
                Err(Error::Compacted { .. }) if !out.is_empty() => break,
                Err(e) => return Err(e),
            };
            let Some(kv) = resp.kvs.into_iter().next() else {
                if out.is_empty() {
                    return Err(Error::NotFound {
                        key: key.to_string(),
                    });
                }
                break;
            };
            let (version, create) = (kv.mod_revision, kv.create_revision);
            out.push(ConfigVersion {
                version,
                value: kv.value,
            });
            if version <= create {
                break;
            }
            at = Some(version - 1);
        }
        Ok(out)
    }

    /// The versions of `key` decoded from JSON, newest (the current one) first; see
    /// [`ConfigCenter::history_bytes`]. A version that does not decode is `Codec`.
    pub async fn history<T: DeserializeOwned>(
        &self,
        key: &str,
        limit: usize,
    ) -> Result<Vec<ConfigVersion<T>>> {
        self.history_bytes(key, limit)
            .await?
            .into_iter()
            .map(|v| {
                Ok(ConfigVersion {
                    version: v.version,
                    value: decode(key, &v.value)?,
                })
            })
            .collect()
    }

    /// Write the value `key` had at `version` again, as a compare-and-set on the
    /// current version; returns the new version.
    ///
    /// Errors: `InvalidArgument` if `version` is not one of the key's versions;
    /// `Compacted` if the store no longer keeps it; `NotFound` if the key is absent
    /// now; `VersionConflict` if it changed meanwhile.
    #[tracing::instrument(level = "debug", name = "coord.config.rollback", skip_all, fields(key = %key), err(level = "debug"))]
    pub async fn rollback(&self, key: &str, version: Version) -> Result<Version> {
        validate_key(key)?;
        if version <= 0 {
            return Err(Error::invalid(
                "version",
                format!("must be positive, got {version}"),
            ));
        }
        let full = self.full(key);
        let (_, current) = self.get_bytes_with_version(key).await?;
        let old = RangeRequest::key(full.clone()).at_revision(version);
        let then = self
            .retry
            .run("config rollback read", |_| self.backend.range(old.clone()))
            .await?;
        let value = match then.kvs.into_iter().next() {
            Some(kv) if kv.mod_revision == version => kv.value,
            _ => {
                return Err(Error::invalid(
                    "version",
                    format!("{version} is not a version of {key}"),
                ))
            }
        };
        self.compare_and_set_bytes(key, value, current).await
    }

    /// Watch `key`: its changes from now on; see [`Watcher`].
    #[tracing::instrument(level = "debug", name = "coord.config.watch", skip_all, fields(key = %key), err(level = "debug"))]
    pub async fn watch<T: DeserializeOwned>(&self, key: &str) -> Result<Watcher<T>> {
        validate_key(key)?;
        Watcher::start(self.clone(), crate::KeyRange::key(self.full(key))).await
    }

    /// Watch every key under `prefix` (`""`: all); see [`Watcher`].
    #[tracing::instrument(level = "debug", name = "coord.config.watch_prefix", skip_all, fields(key = %prefix), err(level = "debug"))]
    pub async fn watch_prefix<T: DeserializeOwned>(&self, prefix: &str) -> Result<Watcher<T>> {
        validate_prefix(prefix)?;
        Watcher::start(self.clone(), crate::KeyRange::prefix(self.full(prefix))).await
    }
}

impl std::fmt::Debug for ConfigCenter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigCenter")
            .field("root", &self.root)
            .finish()
    }
}
