//! A typed config value kept current in memory, validated before it is applied.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use futures::StreamExt;
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::snapshot::Snapshot;

mod compose;
mod gray;
use super::{ConfigCenter, ConfigEventKind, Version};
use crate::error::{Error, Result};

/// Why the last value read was not applied, or why it could not be read; see
/// [`ConfigManager::last_error`].
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigManagerError {
    /// The stored value does not decode as the manager's type.
    #[error("{}does not decode: {reason}", at(*.version))]
    Undecodable {
        /// The value's version, when the store said it.
        version: Option<Version>,
        /// The decoder's message.
        reason: String,
    },
    /// The validator refused the value.
    #[error("version {version} rejected: {reason}")]
    Rejected {
        /// The refused value's version.
        version: Version,
        /// The validator's message.
        reason: String,
    },
    /// The validator or the updater panicked on the value.
    #[error("version {version}: the {hook} panicked: {message}")]
    Panicked {
        /// The value's version.
        version: Version,
        /// `"validator"` or `"updater"`.
        hook: &'static str,
        /// The panic's message, when it had one.
        message: String,
    },
    /// The store could not be read or watched (the manager keeps trying).
    #[error("store: {0}")]
    Store(Arc<Error>),
}

fn at(version: Option<Version>) -> String {
    version.map_or_else(String::new, |v| format!("version {v} "))
}

/// Run a user hook, turning a panic into its message.
fn guarded<R>(hook: impl FnOnce() -> R) -> std::result::Result<R, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(hook)).map_err(|payload| {
        payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_string())
    })
}

type Validator<T> = Box<dyn Fn(&T) -> std::result::Result<(), String> + Send + Sync>;
type Updater<T> = Box<dyn Fn(&T, &T) + Send + Sync>;

/// A config value of type `T` at `<config root>/<env>/<app>/<component>`, kept
/// current in memory from a watch.
///
/// # Behavior
/// - [`ConfigManager::current`] answers from memory: no lock, no I/O.
/// - A new value is applied only if it decodes as `T` and passes the validator;
///   otherwise the last good value stays, the rejection is logged and readable
///   through [`ConfigManager::last_error`], and the updater is not called.
/// - The updater is called once per accepted change, with the old and new
///   values, *before* the new value is published: inside it `current()` still
///   returns the old one. It runs for the value read by
///   [`start`](ConfigManagerBuilder::start) too (old = the default), on the
///   caller's task; later ones on the manager's background task.
/// - A panic in the validator or the updater is caught: the value is not
///   applied, [`ConfigManager::last_error`] is
///   [`ConfigManagerError::Panicked`], an error is logged, and the manager goes
///   on following the store.
/// - Deleting the key reverts to the default (as if the manager started without it).
/// - If the store cannot be reached at start, the manager serves the default and
///   keeps trying in the background; an outage later keeps the last good value;
///   either way it catches up when the store is back. Meanwhile
///   [`ConfigManager::health`] (and
///   [`Coordinator::health`](crate::Coordinator::health)) says it is stale.
#[must_use = "dropping a ConfigManager stops following the store"]
pub struct ConfigManager<T> {
    inner: Arc<ManagerInner<T>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

struct ManagerInner<T> {
    center: ConfigCenter,
    key: String,
    /// Composed of every key under `key` (a prefix), with the value last applied
    /// as assembled (a reread that assembles the same is not a change).
    composed: Option<Mutex<Option<serde_json::Value>>>,
    default: Arc<T>,
    current: ArcSwap<T>,
    version: AtomicI64,
    updates: watch::Sender<Arc<T>>,
    last_error: Mutex<Option<ConfigManagerError>>,
    validator: Option<Validator<T>>,
    updater: Option<Updater<T>>,
    status: Arc<crate::health::SyncStatus>,
    snapshot: Option<Snapshot<T>>,
    /// This instance's labels: a gray release that matches them is served
    /// over the main value ([`ConfigManagerBuilder::labels`]).
    labels: Option<super::Labels>,
    /// With labels: the main value's and the gray release's versions of what
    /// was last offered (a reread of the same is not a change).
    served_from: Mutex<Option<(Version, Version)>>,
}

/// Options for a [`ConfigManager`]; see [`ConfigManager::builder`].
#[must_use = "a builder does nothing until `start`"]
pub struct ConfigManagerBuilder<T> {
    center: ConfigCenter,
    segments: [String; 3],
    /// A composed manager's prefix.
    prefix: Option<String>,
    default: T,
    validator: Option<Validator<T>>,
    updater: Option<Updater<T>>,
    snapshot: Option<Snapshot<T>>,
    labels: Option<super::Labels>,
}

impl<T> ConfigManagerBuilder<T>
where
    T: serde::Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// Keep the last applied value in the file `path` (nacos's local snapshot),
    /// and serve it at start, before the store answers — when the store is
    /// unreachable at start, the snapshot, not the default, is in force.
    ///
    /// The snapshot goes through the validator and the updater like any value;
    /// a newer value from the store replaces it as soon as it is read; a key
    /// found deleted reverts to the default and removes the file. The file names
    /// its key: a snapshot of another key is ignored, as is an unreadable one
    /// (logged). Writing it is best effort (a failure is logged).
    pub fn snapshot(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.snapshot = Some(Snapshot {
            path: path.into(),
            encode: Box::new(|v: &T| serde_json::to_vec(v).ok()),
        });
        self
    }
}

impl<T> ConfigManagerBuilder<T>
where
    T: DeserializeOwned + Send + Sync + 'static,
{
    /// Accept a new value only if `validator` returns `Ok`; its `Err` text is kept
    /// as [`ConfigManager::last_error`].
    pub fn validator(
        mut self,
        validator: impl Fn(&T) -> std::result::Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        self.validator = Some(Box::new(validator));
        self
    }

    /// This instance's labels (`zone`, `version`, …): when the key has a gray
    /// release ([`ConfigCenter::set_gray`](super::ConfigCenter::set_gray))
    /// whose selector they match, the manager serves the gray value instead
    /// of the main one, and the main one again when the release is dropped or
    /// promoted. A manager without labels never serves a gray value. With
    /// labels, [`ConfigManager::version`] is the store revision at which the
    /// value served was read (it still only grows). Not for a composed
    /// manager (`InvalidArgument` at `start`).
    pub fn labels(mut self, labels: super::Labels) -> Self {
        self.labels = Some(labels);
        self
    }

    /// Call `updater(old, new)` once per applied change.
    pub fn updater(mut self, updater: impl Fn(&T, &T) + Send + Sync + 'static) -> Self {
        self.updater = Some(Box::new(updater));
        self
    }

    /// Load the value once (serving the default if it is absent, invalid or the
    /// store unreachable) and keep it current in the background.
    ///
    /// Errors: `InvalidArgument` if env, app or component is empty or not a single
    /// key segment. Store failures are not errors here: see
    /// [`ConfigManager::last_error`].
    pub async fn start(self) -> Result<ConfigManager<T>> {
        let key = match &self.prefix {
            Some(prefix) => {
                super::validate_prefix(prefix)?;
                if prefix.is_empty() || !prefix.ends_with('/') {
                    return Err(Error::invalid(
                        "prefix",
                        format!("must be non-empty and end in '/', got {prefix:?}"),
                    ));
                }
                if self.labels.is_some() {
                    return Err(Error::invalid(
                        "labels",
                        "a composed manager serves no gray release",
                    ));
                }
                prefix.clone()
            }
            None => {
                for (argument, segment) in
                    ["env", "app", "component"].into_iter().zip(&self.segments)
                {
                    if segment.is_empty() || segment.contains('/') {
                        return Err(Error::invalid(
                            argument,
                            format!(
                                "must be one non-empty key segment without '/', got {segment:?}"
                            ),
                        ));
                    }
                }
                let key = self.segments.join("/");
                super::validate_key(&key)?;
                key
            }
        };
        let default = Arc::new(self.default);
        let status = crate::health::SyncStatus::new(format!("config {key}"));
        self.center.followers.add(&status);
        let inner = Arc::new(ManagerInner {
            status,
            center: self.center,
            composed: self.prefix.is_some().then(|| Mutex::new(None)),
            key,
            current: ArcSwap::new(default.clone()),
            updates: watch::Sender::new(default.clone()),
            default,
            version: AtomicI64::new(0),
            last_error: Mutex::new(None),
            validator: self.validator,
            updater: self.updater,
            snapshot: self.snapshot,
            labels: self.labels,
            served_from: Mutex::new(None),
        });
        inner.serve_snapshot();
        let watcher = inner.load().await;
        let task = {
            let inner = inner.clone();
            tokio::spawn(follow(inner.clone(), watcher))
        };
        Ok(ConfigManager {
            inner,
            task: Mutex::new(Some(task)),
        })
    }
}

impl<T> ConfigManager<T>
where
    T: DeserializeOwned + Send + Sync + 'static,
{
    /// A manager of the value at `<env>/<app>/<component>` under `center`'s root,
    /// serving `default` until a valid value is read.
    pub fn builder(
        center: &ConfigCenter,
        env: impl Into<String>,
        app: impl Into<String>,
        component: impl Into<String>,
        default: T,
    ) -> ConfigManagerBuilder<T> {
        ConfigManagerBuilder {
            center: center.clone(),
            segments: [env.into(), app.into(), component.into()],
            prefix: None,
            default,
            validator: None,
            updater: None,
            snapshot: None,
            labels: None,
        }
    }

    /// A manager of a value composed of every key under `prefix` (ending in
    /// `/`), serving `default` while there is none: each key, decoded with its
    /// codec, is the field its path names (`prefix` + `db/url` is `db.url`), so
    /// a struct can be spread over several keys and each changed on its own.
    ///
    /// The assembled value goes through the validator and the updater like a
    /// single key's; any change under the prefix rereads the prefix (one
    /// range), and a reread that assembles the same value changes nothing. Its
    /// [`ConfigManager::version`] is the store revision of the read that
    /// assembled it. No key left under the prefix reverts to the default. A key
    /// that does not decode, or one that is both a value and a folder (`db`
    /// and `db/url`), makes the whole value undecodable.
    ///
    /// ```
    /// # async fn example(coord: coordkit::Coordinator) -> coordkit::Result<()> {
    /// #[derive(serde::Deserialize, Default)]
    /// struct Db { url: String, pool: u32 }
    /// #[derive(serde::Deserialize, Default)]
    /// struct App { db: Db, verbose: bool }
    /// let config = coord.config();
    /// config.set("prod/api/db/url", "postgres://db").await?;
    /// config.set("prod/api/db/pool", &8).await?;
    /// config.set("prod/api/verbose", &true).await?;
    /// let app = coordkit::ConfigManager::builder_prefix(&config, "prod/api/", App::default())
    ///     .start()
    ///     .await?;
    /// assert_eq!(app.current().db.pool, 8);
    /// # Ok(()) }
    /// ```
    pub fn builder_prefix(
        center: &ConfigCenter,
        prefix: impl Into<String>,
        default: T,
    ) -> ConfigManagerBuilder<T> {
        ConfigManagerBuilder {
            center: center.clone(),
            segments: Default::default(),
            prefix: Some(prefix.into()),
            default,
            validator: None,
            updater: None,
            snapshot: None,
            labels: None,
        }
    }

    /// The value in force, from memory.
    pub fn current(&self) -> Arc<T> {
        self.inner.current.load_full()
    }

    /// The version of the value in force (0 while it is the default).
    pub fn version(&self) -> Version {
        self.inner.version.load(Ordering::SeqCst)
    }

    /// Follow the value in force as changes are applied.
    pub fn subscribe(&self) -> watch::Receiver<Arc<T>> {
        self.inner.updates.subscribe()
    }

    /// Why the last value read was not applied (it did not decode, the validator
    /// refused it, or a hook panicked) or the last store error; `None` once a
    /// value is applied.
    pub fn last_error(&self) -> Option<ConfigManagerError> {
        self.inner
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether the manager follows the store or serves its last known value.
    pub fn health(&self) -> crate::health::SyncHealth {
        self.inner.status.health()
    }

    /// The config key, relative to the config root.
    pub fn key(&self) -> &str {
        &self.inner.key
    }

    /// Stop following the store; `current()` keeps the last value.
    pub fn stop(&self) {
        if let Some(task) = self.task.lock().unwrap_or_else(|e| e.into_inner()).take() {
            task.abort();
        }
    }
}

impl<T> Drop for ConfigManager<T> {
    fn drop(&mut self) {
        if let Some(task) = self.task.lock().unwrap_or_else(|e| e.into_inner()).take() {
            task.abort();
        }
    }
}

impl<T> std::fmt::Debug for ConfigManager<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigManager")
            .field("key", &self.inner.key)
            .field("version", &self.inner.version.load(Ordering::SeqCst))
            .finish()
    }
}

impl<T> ManagerInner<T>
where
    T: DeserializeOwned + Send + Sync + 'static,
{
    fn record_error(&self, error: ConfigManagerError) {
        if let ConfigManagerError::Store(e) = &error {
            self.status.failed(e);
        }
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error);
    }

    /// Apply `value` at `version` if it is newer, valid, and the updater takes it;
    /// `None` reverts to the default.
    fn offer(&self, version: Version, value: Option<std::result::Result<T, Error>>) {
        if version <= self.version.load(Ordering::SeqCst) {
            return;
        }
        let new = match value {
            // Deleted while the default is in force: nothing changes.
            None if self.version.load(Ordering::SeqCst) == 0 => return,
            None => self.default.clone(),
            Some(Err(e)) => {
                warn!(key = %self.key, version, error = %e, "config value rejected: does not decode");
                crate::telemetry::config_change("undecodable");
                self.record_error(ConfigManagerError::Undecodable {
                    version: Some(version),
                    reason: e.to_string(),
                });
                return;
            }
            Some(Ok(v)) => {
                if let Some(validate) = &self.validator {
                    let verdict = guarded(|| validate(&v));
                    let refusal = match verdict {
                        Ok(Ok(())) => None,
                        Ok(Err(reason)) => {
                            warn!(key = %self.key, version, reason, "config value rejected by the validator");
                            Some(ConfigManagerError::Rejected { version, reason })
                        }
                        Err(message) => Some(self.panicked(version, "validator", message)),
                    };
                    if let Some(refusal) = refusal {
                        crate::telemetry::config_change(match refusal {
                            ConfigManagerError::Panicked { .. } => "panicked",
                            _ => "rejected",
                        });
                        self.record_error(refusal);
                        return;
                    }
                }
                Arc::new(v)
            }
        };
        let old = self.current.load_full();
        if let Some(update) = &self.updater {
            if let Err(message) = guarded(|| update(&old, &new)) {
                let error = self.panicked(version, "updater", message);
                crate::telemetry::config_change("panicked");
                self.record_error(error);
                return;
            }
        }
        self.current.store(new.clone());
        self.version.store(version, Ordering::SeqCst);
        if let Some(snapshot) = &self.snapshot {
            if Arc::ptr_eq(&new, &self.default) {
                snapshot.clear();
            } else {
                snapshot.save(&self.key, version, &new);
            }
        }
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
        info!(key = %self.key, version, "config value applied");
        crate::telemetry::config_change("applied");
        self.updates.send_replace(new);
    }

    fn panicked(
        &self,
        version: Version,
        hook: &'static str,
        message: String,
    ) -> ConfigManagerError {
        tracing::error!(key = %self.key, version, hook, message, "config hook panicked; the value is not applied");
        ConfigManagerError::Panicked {
            version,
            hook,
            message,
        }
    }

    /// Apply the on-disk snapshot, if any, as the value of its version.
    fn serve_snapshot(&self) {
        let Some((version, value)) = self.snapshot.as_ref().and_then(|s| s.load(&self.key)) else {
            return;
        };
        info!(key = %self.key, version, "serving the config snapshot until the store answers");
        let decoded = serde_json::from_value::<T>(value).map_err(|e| Error::Codec {
            key: self.key.clone(),
            reason: e.to_string(),
        });
        self.offer(version, Some(decoded));
    }

    /// The key is gone from the store: the default is in force (once).
    fn revert_to_default(&self) {
        if self.version.load(Ordering::SeqCst) == 0 {
            return;
        }
        let old = self.current.load_full();
        if let Some(update) = &self.updater {
            if let Err(message) = guarded(|| update(&old, &self.default)) {
                let error = self.panicked(0, "updater", message);
                self.record_error(error);
                return;
            }
        }
        self.current.store(self.default.clone());
        self.version.store(0, Ordering::SeqCst);
        if let Some(snapshot) = &self.snapshot {
            snapshot.clear();
        }
        info!(key = %self.key, "config key absent: the default is in force");
        self.updates.send_replace(self.default.clone());
    }

    /// Read the value and open a watch; on failure, record it and return `None`.
    async fn load(&self) -> Option<Changes<T>> {
        if let Some(labels) = &self.labels {
            return self.load_labeled(labels).await;
        }
        if self.composed.is_some() {
            let watcher = match self
                .center
                .watch_prefix::<serde::de::IgnoredAny>(&self.key)
                .await
            {
                Ok(w) => w,
                Err(e) => {
                    warn!(key = %self.key, error = %e, "config store unreachable; serving the last good value");
                    self.record_error(ConfigManagerError::Store(Arc::new(e)));
                    return None;
                }
            };
            return self.reread().await.then_some(Changes::Prefix(watcher));
        }
        // The watch first: a change between the read and the watch is not lost.
        let watcher = match self.center.watch::<T>(&self.key).await {
            Ok(w) => w,
            Err(e) => {
                warn!(key = %self.key, error = %e, "config store unreachable; serving the last good value");
                self.record_error(ConfigManagerError::Store(Arc::new(e)));
                return None;
            }
        };
        match self.center.get_bytes_with_version(&self.key).await {
            Ok((bytes, version)) => {
                self.status.synced();
                self.offer(version, Some(self.center.decode(&self.key, &bytes)))
            }
            Err(Error::NotFound { .. }) => {
                self.status.synced();
                self.revert_to_default();
            }
            Err(e) => {
                self.record_error(ConfigManagerError::Store(Arc::new(e)));
                return None;
            }
        }
        Some(Changes::Key(watcher))
    }
}

/// What a manager follows: its key's values, or any change under its prefix.
enum Changes<T> {
    Key(super::Watcher<T>),
    Prefix(super::Watcher<serde::de::IgnoredAny>),
    /// A manager with labels: the main key's watch and its gray release's.
    Gray(gray::Watches),
}

/// Keep the value current: follow the watch, and reload whenever it cannot be had.
async fn follow<T>(inner: Arc<ManagerInner<T>>, mut watcher: Option<Changes<T>>)
where
    T: DeserializeOwned + Send + Sync + 'static,
{
    let mut backoff = inner.center.retry().backoff();
    loop {
        let Some(changes) = watcher.as_mut() else {
            backoff.wait().await;
            watcher = inner.load().await;
            if watcher.is_some() {
                backoff.succeeded();
            }
            continue;
        };
        let events = match changes {
            Changes::Key(events) => events,
            Changes::Gray(watches) => {
                if !inner.follow_labeled(watches).await {
                    watcher = None;
                }
                continue;
            }
            Changes::Prefix(events) => {
                match events.next().await {
                    // Any change (one that does not decode too): read them all.
                    Some(Ok(_)) | Some(Err(Error::Codec { .. })) => {
                        if !inner.reread().await {
                            watcher = None;
                        }
                    }
                    Some(Err(e)) => inner.record_error(ConfigManagerError::Store(Arc::new(e))),
                    None => watcher = None,
                }
                continue;
            }
        };
        match events.next().await {
            Some(Ok(event)) => {
                inner.status.synced();
                match event.kind {
                    ConfigEventKind::Put => inner.offer(event.version, event.value.map(Ok)),
                    ConfigEventKind::Delete => inner.offer(event.version, None),
                }
            }
            Some(Err(Error::Codec { key, reason })) => {
                // The watch goes on; the version is unknown here, so the value is
                // refused without moving the version.
                warn!(key, reason, "config value rejected: does not decode");
                crate::telemetry::config_change("undecodable");
                inner.record_error(ConfigManagerError::Undecodable {
                    version: None,
                    reason,
                });
            }
            Some(Err(e)) => inner.record_error(ConfigManagerError::Store(Arc::new(e))),
            None => watcher = None,
        }
    }
}

impl<T> std::fmt::Debug for ConfigManagerBuilder<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigManagerBuilder")
            .field("key", &self.segments.join("/"))
            .field("validator", &self.validator.is_some())
            .field("updater", &self.updater.is_some())
            .finish_non_exhaustive()
    }
}
