//! Following a service: a stream of instance changes, and a local cache.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use futures::stream::{self, BoxStream};
use futures::{Stream, StreamExt};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tracing::warn;

use super::protection::{CacheOptions, Guard};
use super::view::ServiceView;
use super::ServiceInfo;
use crate::error::Result;
use crate::follow::{Change, Follower};

/// Whether an instance came or went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ServiceEventKind {
    /// Registered, or its registration changed.
    Put,
    /// Deregistered, expired, or replaced by something that is not an instance.
    Delete,
}

/// A change of a service's instances.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServiceEvent {
    /// Came or went.
    pub kind: ServiceEventKind,
    /// The instance (for a delete: as last seen).
    pub service: ServiceInfo,
}

/// The instances of a service as a stream: one `Put` per instance present when
/// the watch started, then every change in order. After a compaction past its
/// position it rereads and emits the difference, so no delete is missed. Store
/// errors arrive as items while it reconnects.
#[must_use = "a watch delivers nothing unless polled"]
pub struct ServiceWatch {
    events: BoxStream<'static, Result<ServiceEvent>>,
}

impl ServiceWatch {
    pub(crate) fn new(view: ServiceView, follower: Follower, snapshot: Vec<Change>) -> Self {
        let state = (view, follower, VecDeque::from(snapshot));
        let events = stream::unfold(state, |(mut view, mut follower, mut queued)| async move {
            loop {
                let change = match queued.pop_front() {
                    Some(c) => c,
                    None => match follower.next().await {
                        Ok(c) => c,
                        Err(e) => return Some((Err(e), (view, follower, queued))),
                    },
                };
                if let Some(event) = view.apply(&change) {
                    return Some((Ok(event), (view, follower, queued)));
                }
            }
        })
        .boxed();
        ServiceWatch { events }
    }
}

impl Stream for ServiceWatch {
    type Item = Result<ServiceEvent>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.events.poll_next_unpin(cx)
    }
}

impl std::fmt::Debug for ServiceWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceWatch").finish_non_exhaustive()
    }
}

/// A local view of a service's instances, kept current by a watch in the
/// background.
///
/// [`ServiceCache::instances`] answers from memory — a lock-free read, no I/O. The
/// view resumes after a broken watch and rereads after a compaction, emitting the
/// difference as events ([`ServiceCache::subscribe`]), so no instance lingers after
/// it is gone. Dropping the cache stops the watch.
///
/// **Empty-push protection** (on by default, [`CacheOptions`]): when a change
/// would leave the service with no instance (or fewer than a chosen fraction
/// of those seen within the departures window), the cache keeps serving the
/// instances it last saw — to [`ServiceCache::instances`], pickers, channels
/// and subscribers alike — says so in [`ServiceCache::health`]
/// ([`SyncHealth::protected`](crate::SyncHealth::protected)) and the gauge
/// `coordkit_service_cache_protected`, logs a warning once, and follows the
/// store again as soon as enough instances are back. A service scaled to zero
/// on purpose is therefore still served its last instances: turn it off with
/// [`EmptyPushProtection::Off`](super::EmptyPushProtection::Off) where that matters.
///
/// While it cannot follow the store (a partition, a failing watch), it serves the
/// instances it last knew; [`ServiceCache::health`] (and
/// [`Coordinator::health`](crate::Coordinator::health)) then says it is stale, and
/// a warning is logged once, an info line when it follows again.
#[must_use = "dropping a ServiceCache stops following the registry"]
pub struct ServiceCache {
    name: String,
    instances: Arc<ArcSwap<Vec<ServiceInfo>>>,
    /// Made by the first `subscribe`: a cache nobody subscribes to holds no
    /// event buffer.
    events: Arc<OnceLock<broadcast::Sender<ServiceEvent>>>,
    status: Arc<crate::health::SyncStatus>,
    task: JoinHandle<()>,
}

impl ServiceCache {
    pub(crate) fn start(
        name: &str,
        mut view: ServiceView,
        (mut follower, snapshot): (Follower, Vec<Change>),
        options: CacheOptions,
        coord: &crate::context::Context,
    ) -> Self {
        let status = crate::health::SyncStatus::new(format!("service {name}"));
        coord.followers.add(&status);
        for change in &snapshot {
            view.apply(change);
        }
        let mut guard = Guard::new(name, options, &view.instances());
        let instances = Arc::new(ArcSwap::from_pointee(guard.served()));
        crate::telemetry::cache_size(name, instances.load().len());
        let service = name.to_string();
        let events: Arc<OnceLock<broadcast::Sender<ServiceEvent>>> = Arc::default();
        let task = {
            let instances = instances.clone();
            let events = events.clone();
            let status = status.clone();
            tokio::spawn(async move {
                loop {
                    match follower.next().await {
                        Ok(change) => {
                            status.synced();
                            let Some(event) = view.apply(&change) else {
                                continue;
                            };
                            let served = guard.apply(event, &view.instances());
                            status.holding(guard.holding());
                            if served.is_empty() {
                                continue;
                            }
                            instances.store(Arc::new(guard.served()));
                            crate::telemetry::cache_size(&service, instances.load().len());
                            if let Some(events) = events.get() {
                                for event in served {
                                    let _ = events.send(event);
                                }
                            }
                        }
                        Err(e) => {
                            status.failed(&e);
                            warn!(error = %e, "service cache: watch failed; resuming");
                        }
                    }
                }
            })
        };
        ServiceCache {
            name: name.to_string(),
            instances,
            events,
            status,
            task,
        }
    }

    /// The service's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The instances served now, by id, from memory (with empty-push
    /// protection holding, the ones last seen: see the type's docs).
    pub fn instances(&self) -> Arc<Vec<ServiceInfo>> {
        self.instances.load_full()
    }

    /// The instances now that `filter` matches, by id, from memory.
    pub fn instances_matching(&self, filter: &super::ServiceFilter) -> Vec<ServiceInfo> {
        self.instances
            .load()
            .iter()
            .filter(|i| filter.matches(i))
            .cloned()
            .collect()
    }

    /// Whether the cache follows the store or serves stale data.
    pub fn health(&self) -> crate::health::SyncHealth {
        self.status.health()
    }

    /// The changes applied from now on. A receiver that falls more than 1,024
    /// events behind gets `Lagged` and should resync from
    /// [`ServiceCache::instances`].
    pub fn subscribe(&self) -> broadcast::Receiver<ServiceEvent> {
        self.events
            .get_or_init(|| broadcast::channel(1024).0)
            .subscribe()
    }
}

impl Drop for ServiceCache {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl std::fmt::Debug for ServiceCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceCache")
            .field("name", &self.name)
            .field("instances", &self.instances.load().len())
            .finish()
    }
}
