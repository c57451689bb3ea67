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
use tracing::{info, warn};

use super::protection::{CacheOptions, Guard};
use super::view::ServiceView;
use super::warm::{Saved, Snapshot};
use super::ServiceInfo;
use crate::backend::{Backend, KeyRange};
use crate::error::Result;
use crate::follow::{Change, Follower};
use crate::health::SyncStatus;
use crate::retry::RetryPolicy;

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
    pub(crate) fn new(mut view: ServiceView, follower: Follower, snapshot: Vec<Change>) -> Self {
        // The snapshot whole first (an instance and a verdict beside it are
        // one instance), then one `Put` per instance.
        for change in &snapshot {
            view.apply(change);
        }
        let present: VecDeque<ServiceEvent> = view
            .instances()
            .into_iter()
            .map(|service| ServiceEvent {
                kind: ServiceEventKind::Put,
                service,
            })
            .collect();
        let state = (view, follower, present);
        let events = stream::unfold(state, |(mut view, mut follower, mut present)| async move {
            if let Some(event) = present.pop_front() {
                return Some((Ok(event), (view, follower, present)));
            }
            loop {
                let change = match follower.next().await {
                    Ok(c) => c,
                    Err(e) => return Some((Err(e), (view, follower, present))),
                };
                if let Some(event) = view.apply(&change) {
                    return Some((Ok(event), (view, follower, present)));
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
/// **Warm start** ([`CacheOptions::snapshot`]): the cache writes what it serves
/// to a file (atomically) at each change; made while the store does not
/// answer, it starts from that file instead of failing, says so in
/// [`ServiceCache::health`] (stale, [`SyncHealth::snapshot_age`](crate::SyncHealth::snapshot_age)),
/// and replaces it with what the store holds as soon as the store answers —
/// the snapshot never stands over a fresher view of the store.
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
    status: Arc<SyncStatus>,
    task: JoinHandle<()>,
}

/// How a cache begins: from the store, or (a warm start) from its snapshot
/// while the store does not answer.
pub(crate) enum Start {
    /// The store answered: its follower and the current entries.
    Store(Follower, Vec<Change>),
    /// It did not: the snapshot, and how to reach the store later.
    Snapshot(Saved, Reach),
}

/// What a cache started from a snapshot needs to follow the store later.
pub(crate) struct Reach {
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) retry: RetryPolicy,
    pub(crate) keys: KeyRange,
}

impl ServiceCache {
    pub(crate) fn start(
        name: &str,
        mut view: ServiceView,
        start: Start,
        options: CacheOptions,
        coord: &crate::context::Context,
    ) -> Self {
        let snapshot = options.snapshot.clone().map(Snapshot::new);
        let (status, live) = match &start {
            Start::Store(_, changes) => {
                for change in changes {
                    view.apply(change);
                }
                let status = SyncStatus::new(format!("service {name}"));
                (status, view.instances())
            }
            Start::Snapshot(saved, _) => {
                warn!(
                    service = name,
                    "the store does not answer: serving the service snapshot"
                );
                let status = SyncStatus::from_snapshot(format!("service {name}"), saved.saved_at);
                (status, saved.instances.clone())
            }
        };
        coord.followers.add(&status);
        let guard = Guard::new(name, options, &live);
        if let (Some(s), Start::Store(..)) = (&snapshot, &start) {
            s.save(name, &guard.served());
        }
        let instances = Arc::new(ArcSwap::from_pointee(guard.served()));
        crate::telemetry::cache_size(name, instances.load().len());
        let events: Arc<OnceLock<broadcast::Sender<ServiceEvent>>> = Arc::default();
        let mut feed = Feed {
            service: name.to_string(),
            view,
            guard,
            instances: instances.clone(),
            events: events.clone(),
            status: status.clone(),
            snapshot,
        };
        let task = tokio::spawn(async move {
            let mut follower = match start {
                Start::Store(follower, _) => follower,
                Start::Snapshot(_, reach) => feed.catch_up(reach).await,
            };
            loop {
                match follower.next().await {
                    Ok(change) => feed.apply(&change),
                    Err(e) => {
                        feed.status.failed(&e);
                        warn!(error = %e, "service cache: watch failed; resuming");
                    }
                }
            }
        });
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

/// What a cache's task keeps: the store's view, what is served from it, and
/// where the served instances go (readers, subscribers, the snapshot).
struct Feed {
    service: String,
    view: ServiceView,
    guard: Guard,
    instances: Arc<ArcSwap<Vec<ServiceInfo>>>,
    events: Arc<OnceLock<broadcast::Sender<ServiceEvent>>>,
    status: Arc<SyncStatus>,
    snapshot: Option<Snapshot>,
}

impl Feed {
    /// Take in a change of the store.
    fn apply(&mut self, change: &Change) {
        self.status.synced();
        let Some(event) = self.view.apply(change) else {
            return;
        };
        let served = self.guard.apply(event, &self.view.instances());
        self.status.holding(self.guard.holding());
        self.publish(served);
    }

    /// Started from a snapshot: read the store until it answers (backing off
    /// between tries), then serve what it holds — through the empty-push
    /// protection, as any change — and follow it from there.
    async fn catch_up(&mut self, reach: Reach) -> Follower {
        let mut backoff = reach.retry.backoff();
        loop {
            let started = Follower::start(
                reach.backend.clone(),
                reach.retry.clone(),
                reach.keys.clone(),
            )
            .await;
            match started {
                Ok((follower, changes)) => {
                    for change in &changes {
                        self.view.apply(change);
                    }
                    let served = self.guard.replace(&self.view.instances());
                    self.status.caught_up();
                    self.status.holding(self.guard.holding());
                    info!(service = %self.service, "the store answers: the service snapshot is replaced by what it holds");
                    self.publish(served);
                    return follower;
                }
                Err(e) => {
                    self.status.failed(&e);
                    backoff.wait().await;
                }
            }
        }
    }

    /// Changes to what is served: to readers, the snapshot and subscribers.
    fn publish(&self, served: Vec<ServiceEvent>) {
        if served.is_empty() {
            return;
        }
        let now = self.guard.served();
        if let Some(snapshot) = &self.snapshot {
            snapshot.save(&self.service, &now);
        }
        self.instances.store(Arc::new(now));
        crate::telemetry::cache_size(&self.service, self.instances.load().len());
        if let Some(events) = self.events.get() {
            for event in served {
                let _ = events.send(event);
            }
        }
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
