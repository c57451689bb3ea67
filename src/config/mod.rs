//! The config center: typed values (JSON through serde), compare-and-set, watches
//! that never miss, history and rollback; and [`ConfigManager`], a typed value kept
//! current in memory.

mod codec;
mod conditional;
mod gray;
mod key;
mod manager;
mod sealed;
mod snapshot;
mod transfer;
mod watcher;

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::backend::{Backend, BackendExt, RangeRequest, Revision};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::retry::RetryPolicy;

pub use codec::Codec;
pub(crate) use codec::Codecs;
pub use gray::{GrayRelease, Labels};
pub(crate) use key::{validate_key, validate_prefix};
pub use manager::{ConfigManager, ConfigManagerBuilder, ConfigManagerError};
pub use sealed::Keyring;
pub use transfer::{ConfigExport, ExportedKey, ImportPlan, ImportReport, PlannedChange};
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

/// One change of [`ConfigCenter::update_many`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConfigChange {
    /// The key, relative to the config root.
    pub key: String,
    /// The raw value to write; `None` deletes the key.
    pub value: Option<Vec<u8>>,
    /// Apply the whole batch only if the key's version is this (0: absent).
    pub expected: Option<Version>,
}

impl ConfigChange {
    /// Set `key` to `value` as JSON.
    pub fn set<T: Serialize + ?Sized>(key: impl Into<String>, value: &T) -> Result<Self> {
        let key = key.into();
        let value = encode(&key, value)?;
        Ok(ConfigChange {
            key,
            value: Some(value),
            expected: None,
        })
    }

    /// Set `key` to raw bytes.
    pub fn set_bytes(key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        ConfigChange {
            key: key.into(),
            value: Some(value.into()),
            expected: None,
        }
    }

    /// Delete `key`.
    pub fn delete(key: impl Into<String>) -> Self {
        ConfigChange {
            key: key.into(),
            value: None,
            expected: None,
        }
    }

    /// Only if the key's version is `version` (0: only if absent).
    pub fn if_version(mut self, version: Version) -> Self {
        self.expected = Some(version);
        self
    }
}

fn validate_version(version: Version) -> Result<()> {
    if version <= 0 {
        return Err(Error::invalid(
            "version",
            format!("must be positive, got {version}"),
        ));
    }
    Ok(())
}

/// An expected version: a mod revision, or 0 for "absent".
fn validate_version_or_zero(expected: Version) -> Result<()> {
    if expected < 0 {
        return Err(Error::invalid(
            "expected",
            format!("a version is never negative, got {expected}"),
        ));
    }
    Ok(())
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
///
/// # Example
///
/// ```
/// # use std::{sync::Arc, time::Duration};
/// # use coordkit::Coordinator;
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> coordkit::Result<()> {
/// let coordinator = Coordinator::new(Arc::new(coordkit_memory::MemoryBackend::new()));
/// use coordkit::Error;
/// let config = coordinator.config();
/// let version = config.set("api/rps", &100u32).await?;
/// let (rps, read_at): (u32, i64) = config.get_with_version("api/rps").await?;
/// assert_eq!((rps, read_at), (100, version));
/// let newer = config.compare_and_set("api/rps", &200u32, read_at).await?;
/// // A write based on the stale version is refused, naming the current one.
/// match config.compare_and_set("api/rps", &300u32, read_at).await {
///     Err(Error::VersionConflict { current, .. }) => assert_eq!(current, newer),
///     other => panic!("{other:?}"),
/// }
/// let history = config.history::<u32>("api/rps", 10).await?; // newest first
/// assert_eq!(history.iter().map(|v| v.value).collect::<Vec<_>>(), [200, 100]);
/// # coordinator.close().await }
/// ```
#[derive(Clone)]
pub struct ConfigCenter {
    backend: Arc<dyn Backend>,
    retry: RetryPolicy,
    root: String,
    /// Where gray releases are (`<namespace>config-gray/`).
    gray_root: String,
    followers: Arc<crate::health::Followers>,
    codecs: Codecs,
}

/// `rules` with `prefix`'s rule set to `rule` (an earlier rule of the same
/// prefix replaced): per-prefix codecs and keyrings alike.
fn with_rule<R: Clone>(rules: &[(String, R)], prefix: &str, rule: R) -> Arc<Vec<(String, R)>> {
    let mut next: Vec<(String, R)> = rules.iter().filter(|(p, _)| p != prefix).cloned().collect();
    next.push((prefix.to_string(), rule));
    Arc::new(next)
}

fn encode<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<Vec<u8>> {
    Codec::Json.encode(key, value)
}

impl ConfigCenter {
    pub(crate) fn new(coord: &Context) -> Self {
        ConfigCenter {
            backend: coord.backend.clone(),
            retry: coord.retry.clone(),
            root: coord.keys.config(),
            gray_root: coord.keys.config_gray(),
            followers: coord.followers.clone(),
            codecs: Codecs::default(),
        }
    }

    /// This center with `codec` for every key without a codec of its own
    /// ([`ConfigCenter::with_codec_for`]). The typed calls (`get`, `set`,
    /// `compare_and_set`, `history`, watches, [`ConfigManager`]) encode and decode
    /// with it; the `_bytes` calls store what they are given.
    pub fn with_codec(&self, codec: Codec) -> ConfigCenter {
        let mut center = self.clone();
        center.codecs.default = codec;
        center
    }

    /// This center with `codec` for the keys under `prefix` (the longest
    /// matching prefix wins; `""` is every key).
    ///
    /// Errors: `InvalidArgument` for a bad prefix (as for `watch_prefix`).
    pub fn with_codec_for(&self, prefix: &str, codec: Codec) -> Result<ConfigCenter> {
        validate_prefix(prefix)?;
        let mut center = self.clone();
        center.codecs.by_prefix = with_rule(&center.codecs.by_prefix, prefix, codec);
        Ok(center)
    }

    /// The codec the typed calls use for `key`.
    pub fn codec_of(&self, key: &str) -> Codec {
        self.codecs.of(key)
    }

    /// A change for [`ConfigCenter::update_many`] that sets `key` to `value` in
    /// `key`'s codec (where [`ConfigChange::set`] always writes JSON).
    pub fn change<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<ConfigChange> {
        validate_key(key)?;
        Ok(ConfigChange::set_bytes(
            key,
            self.codecs.encode(key, value)?,
        ))
    }

    /// This center with the values under `prefix` encrypted with `keyring`
    /// (AES-256-GCM, a fresh nonce per write, the sealing key's id stored
    /// with the value; the longest matching prefix wins). The typed calls
    /// (`get`, `set`, `compare_and_set`, `history`, `change`, watches,
    /// [`ConfigManager`]) seal after encoding in the key's codec and open
    /// before decoding; the `_bytes` calls store and return the sealed bytes
    /// as they are. A value that is not sealed, sealed by a key not in the
    /// keyring, or that does not open (a wrong key, a changed value, one moved
    /// from another key) is a `Codec` error — never garbage.
    ///
    /// Errors: `InvalidArgument` for a bad prefix.
    pub fn with_encryption_for(&self, prefix: &str, keyring: Keyring) -> Result<ConfigCenter> {
        validate_prefix(prefix)?;
        let mut center = self.clone();
        center.codecs.sealed = with_rule(&center.codecs.sealed, prefix, keyring);
        Ok(center)
    }

    /// Whether the typed calls encrypt `key`'s values.
    pub fn is_encrypted(&self, key: &str) -> bool {
        self.codecs.keyring_of(key).is_some()
    }

    pub(crate) fn decode<T: DeserializeOwned>(&self, key: &str, bytes: &[u8]) -> Result<T> {
        self.codecs.decode(key, bytes)
    }

    pub(crate) fn codecs(&self) -> &Codecs {
        &self.codecs
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

    /// The value at `key`, decoded with its codec (JSON unless set otherwise), and its version.
    pub async fn get_with_version<T: DeserializeOwned>(&self, key: &str) -> Result<(T, Version)> {
        let (bytes, version) = self.get_bytes_with_version(key).await?;
        Ok((self.decode(key, &bytes)?, version))
    }

    /// The value at `key`, decoded with its codec.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<T> {
        Ok(self.get_with_version(key).await?.0)
    }

    /// Write raw bytes at `key`; returns the new version.
    #[tracing::instrument(level = "debug", name = "coord.config.set", skip_all, fields(key = %key), err(level = "debug"))]
    pub async fn set_bytes(&self, key: &str, value: impl Into<Vec<u8>>) -> Result<Version> {
        validate_key(key)?;
        self.backend.put(self.full(key), value.into()).await
    }

    /// Write `value` at `key` in its codec (JSON unless set otherwise); returns the new version.
    pub async fn set<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<Version> {
        validate_key(key)?;
        let bytes = self.codecs.encode(key, value)?;
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

    /// The raw versions of `key`, newest (the current one) first, at most `limit`,
    /// as far back as the store keeps history (compaction shortens it) and no
    /// further back than the key's latest creation.
    ///
    /// How deep history goes is the store's setting, not coordkit's: on etcd,
    /// `--auto-compaction-mode` and `--auto-compaction-retention` (coordkit never
    /// compacts by itself); the memory backend keeps all until `compact`.
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

    /// The versions of `key` decoded with its codec, newest (the current one) first; see
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
                    value: self.decode(key, &v.value)?,
                })
            })
            .collect()
    }

    /// Write the value `key` had at `version` again, as a compare-and-set on the
    /// version current when it is called; returns the new version. To restore
    /// only over the version a reader saw, use
    /// [`ConfigCenter::rollback_if_version`].
    ///
    /// Errors: `InvalidArgument` if `version` is not one of the key's versions;
    /// `Compacted` if the store no longer keeps it; `NotFound` if the key is absent
    /// now; `VersionConflict` if it changed meanwhile.
    #[tracing::instrument(level = "debug", name = "coord.config.rollback", skip_all, fields(key = %key), err(level = "debug"))]
    pub async fn rollback(&self, key: &str, version: Version) -> Result<Version> {
        validate_key(key)?;
        validate_version(version)?;
        let (_, current) = self.get_bytes_with_version(key).await?;
        self.rollback_if_version(key, version, current).await
    }

    /// Write the value `key` had at `version` again, only if its current version
    /// is `expected` (the one the caller saw); returns the new version.
    ///
    /// Errors: `InvalidArgument` if `version` is not one of the key's versions
    /// (or either version is not positive); `Compacted` if the store no longer
    /// keeps it; `VersionConflict { current }` if the key is not at `expected`
    /// (`current` 0: it is absent) — and nothing is written. Lost answers, late
    /// writes and cancellation as for [`ConfigCenter::compare_and_set_bytes`]: a
    /// retry that finds this call's own write returns its version, and a
    /// cancelled call leaves the key either restored once or as it was.
    #[tracing::instrument(level = "debug", name = "coord.config.rollback_if_version", skip_all, fields(key = %key), err(level = "debug"))]
    pub async fn rollback_if_version(
        &self,
        key: &str,
        version: Version,
        expected: Version,
    ) -> Result<Version> {
        validate_key(key)?;
        validate_version(version)?;
        if expected <= 0 {
            return Err(Error::invalid(
                "expected",
                format!("the current version is positive, got {expected}"),
            ));
        }
        let old = RangeRequest::key(self.full(key)).at_revision(version);
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
        self.compare_and_set_bytes(key, value, expected).await
    }

    /// Watch `key`: its changes from now on; see [`Watcher`].
    #[tracing::instrument(level = "debug", name = "coord.config.watch", skip_all, fields(key = %key), err(level = "debug"))]
    pub async fn watch<T: DeserializeOwned>(&self, key: &str) -> Result<Watcher<T>> {
        validate_key(key)?;
        Watcher::start(self.clone(), crate::backend::KeyRange::key(self.full(key))).await
    }

    /// Watch `key` from just after version `after`: every change since, in
    /// order, then live — to resume after a restart without missing a change
    /// (keep the version of the last event handled).
    ///
    /// Errors: `Compacted` if the store no longer keeps version `after` (read the
    /// key anew, then watch from that read's version); `InvalidArgument` for a
    /// version that is not positive or is in the future.
    pub async fn watch_from<T: DeserializeOwned>(
        &self,
        key: &str,
        after: Version,
    ) -> Result<Watcher<T>> {
        validate_key(key)?;
        validate_version(after)?;
        Watcher::resume(
            self.clone(),
            crate::backend::KeyRange::key(self.full(key)),
            after,
        )
        .await
    }

    /// Watch every key under `prefix` from just after version `after`; see
    /// [`ConfigCenter::watch_from`].
    pub async fn watch_prefix_from<T: DeserializeOwned>(
        &self,
        prefix: &str,
        after: Version,
    ) -> Result<Watcher<T>> {
        validate_prefix(prefix)?;
        validate_version(after)?;
        Watcher::resume(
            self.clone(),
            crate::backend::KeyRange::prefix(self.full(prefix)),
            after,
        )
        .await
    }

    /// Watch every key under `prefix` (`""`: all); see [`Watcher`].
    #[tracing::instrument(level = "debug", name = "coord.config.watch_prefix", skip_all, fields(key = %prefix), err(level = "debug"))]
    pub async fn watch_prefix<T: DeserializeOwned>(&self, prefix: &str) -> Result<Watcher<T>> {
        validate_prefix(prefix)?;
        Watcher::start(
            self.clone(),
            crate::backend::KeyRange::prefix(self.full(prefix)),
        )
        .await
    }
}

impl std::fmt::Debug for ConfigCenter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigCenter")
            .field("root", &self.root)
            .finish()
    }
}
