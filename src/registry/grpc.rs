//! gRPC: a balanced tonic channel over a service's instances, and a
//! `tower::discover` stream (feature `grpc`).

use std::collections::HashSet;

use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc::Sender;
use tonic::transport::channel::Change as ChannelChange;
use tonic::transport::{Channel, Endpoint};
use tower::discover::Change;
use tracing::{debug, warn};

use super::{RegistryService, ServiceEventKind, ServiceInfo};
use crate::Result;

/// Instances as `tower::discover` changes, keyed by instance id: usable as a
/// `tower::discover::Discover` by any tower balancer.
pub type DiscoverStream = BoxStream<'static, Result<Change<String, ServiceInfo>>>;

fn endpoint(info: &ServiceInfo) -> Option<Endpoint> {
    match Endpoint::from_shared(format!("http://{}", info.authority())) {
        Ok(e) => Some(e),
        Err(e) => {
            warn!(id = %info.id, authority = %info.authority(), error = %e, "instance address is not a valid URI; not balancing to it");
            None
        }
    }
}

async fn insert(
    tx: &Sender<ChannelChange<String, Endpoint>>,
    known: &mut HashSet<String>,
    info: &ServiceInfo,
) -> bool {
    let Some(endpoint) = endpoint(info) else {
        return true;
    };
    known.insert(info.id.clone());
    debug!(id = %info.id, authority = %info.authority(), "balancing to instance");
    tx.send(ChannelChange::Insert(info.id.clone(), endpoint))
        .await
        .is_ok()
}

async fn remove(
    tx: &Sender<ChannelChange<String, Endpoint>>,
    known: &mut HashSet<String>,
    id: &str,
) -> bool {
    if !known.remove(id) {
        return true;
    }
    debug!(id, "no longer balancing to instance");
    tx.send(ChannelChange::Remove(id.to_string())).await.is_ok()
}

impl RegistryService {
    /// A tonic channel that balances requests over the instances of `name`,
    /// following them while in use: new instances are added, removed ones dropped.
    /// Each instance is reached at `http://<address>:<port>`.
    ///
    /// The channel is fed by a [`ServiceCache`](super::ServiceCache) kept by a
    /// background task, which ends when every clone of the channel is dropped.
    pub async fn channel(&self, name: &str) -> Result<Channel> {
        let cache = self.cache(name).await?;
        let (channel, tx) = Channel::balance_channel::<String>(64);
        // Subscribe before reading the instances, so no change falls in between.
        let mut events = cache.subscribe();
        let initial = cache.instances();
        tokio::spawn(async move {
            let mut known = HashSet::new();
            for info in initial.iter() {
                if !insert(&tx, &mut known, info).await {
                    return;
                }
            }
            loop {
                let event = tokio::select! {
                    _ = tx.closed() => return,
                    event = events.recv() => event,
                };
                let open = match event {
                    Ok(e) if e.kind == ServiceEventKind::Put => {
                        insert(&tx, &mut known, &e.service).await
                    }
                    Ok(e) => remove(&tx, &mut known, &e.service.id).await,
                    Err(RecvError::Lagged(_)) => {
                        // Missed events: align with the cache's current view.
                        let now = cache.instances();
                        let ids: HashSet<_> = now.iter().map(|i| i.id.clone()).collect();
                        let stale: Vec<_> = known.difference(&ids).cloned().collect();
                        let mut open = true;
                        for id in stale {
                            open &= remove(&tx, &mut known, &id).await;
                        }
                        for info in now.iter() {
                            open &= insert(&tx, &mut known, info).await;
                        }
                        open
                    }
                    Err(RecvError::Closed) => return,
                };
                if !open {
                    return;
                }
            }
        });
        Ok(channel)
    }

    /// The instances of `name` as `tower::discover` changes: an `Insert` per
    /// current instance, then `Insert` / `Remove` as they come and go.
    pub async fn discover_changes(&self, name: &str) -> Result<DiscoverStream> {
        let watch = self.watch(name).await?;
        Ok(watch
            .map(|event| {
                event.map(|e| match e.kind {
                    ServiceEventKind::Put => Change::Insert(e.service.id.clone(), e.service),
                    ServiceEventKind::Delete => Change::Remove(e.service.id),
                })
            })
            .boxed())
    }
}
