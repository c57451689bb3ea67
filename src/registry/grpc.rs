//! gRPC: a balanced tonic channel over a service's instances, and a
//! `tower::discover` stream (feature `grpc`).

use std::collections::HashSet;
use std::sync::Arc;

use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc::Sender;
use tonic::transport::channel::Change as ChannelChange;
use tonic::transport::{Channel, Endpoint};
use tower::discover::Change;
use tracing::{debug, warn};

use super::{RegistryService, ServiceEventKind, ServiceFilter, ServiceInfo};
use crate::error::Result;

/// Instances as `tower::discover` changes, keyed by instance id: usable as a
/// `tower::discover::Discover` by any tower balancer.
pub type DiscoverStream = BoxStream<'static, Result<Change<String, ServiceInfo>>>;

/// How to reach an instance from a [`RegistryService::channel_with`] channel: the
/// URI scheme and any further settings of tonic's [`Endpoint`] (timeouts, origin,
/// TLS when tonic's TLS features are on).
///
/// ```
/// use std::time::Duration;
/// use coordkit::EndpointTemplate;
/// let template = EndpointTemplate::http()
///     .configure(|e| Ok(e.timeout(Duration::from_secs(2)).connect_timeout(Duration::from_secs(1))));
/// # let _ = template;
/// ```
#[derive(Clone)]
pub struct EndpointTemplate {
    scheme: &'static str,
    configure: Option<Arc<Configure>>,
}

type Configure =
    dyn Fn(Endpoint) -> std::result::Result<Endpoint, tonic::transport::Error> + Send + Sync;

impl EndpointTemplate {
    /// `http://<address>:<port>`, tonic's defaults.
    pub fn http() -> Self {
        EndpointTemplate {
            scheme: "http",
            configure: None,
        }
    }

    /// `https://<address>:<port>`: give the TLS settings with
    /// [`EndpointTemplate::configure`] (`Endpoint::tls_config`, with tonic's TLS
    /// features), or connections fail.
    pub fn https() -> Self {
        EndpointTemplate {
            scheme: "https",
            configure: None,
        }
    }

    /// Apply `f` to each instance's endpoint (after any earlier `configure`).
    /// An instance whose endpoint `f` refuses is left out, with a warning.
    pub fn configure<F>(mut self, f: F) -> Self
    where
        F: Fn(Endpoint) -> std::result::Result<Endpoint, tonic::transport::Error>
            + Send
            + Sync
            + 'static,
    {
        self.configure = Some(match self.configure.take() {
            None => Arc::new(f),
            Some(before) => Arc::new(move |e| f(before(e)?)),
        });
        self
    }

    /// The endpoint of one instance.
    pub fn endpoint(&self, info: &ServiceInfo) -> Result<Endpoint> {
        let uri = format!("{}://{}", self.scheme, info.authority());
        let endpoint = Endpoint::from_shared(uri.clone()).map_err(|e| {
            crate::error::Error::invalid("address", format!("{uri} is not a URI: {e}"))
        })?;
        match &self.configure {
            Some(f) => f(endpoint).map_err(|e| {
                crate::error::Error::invalid("endpoint template", format!("refused {uri}: {e}"))
            }),
            None => Ok(endpoint),
        }
    }
}

impl std::fmt::Debug for EndpointTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointTemplate")
            .field("scheme", &self.scheme)
            .field("configured", &self.configure.is_some())
            .finish()
    }
}

/// What a channel's feeder task balances to.
struct Feed {
    template: EndpointTemplate,
    filter: ServiceFilter,
    known: HashSet<String>,
}

impl Feed {
    /// Insert (or replace) `info` if wanted, else remove it; false once the
    /// channel is gone.
    async fn apply(
        &mut self,
        tx: &Sender<ChannelChange<String, Endpoint>>,
        info: &ServiceInfo,
    ) -> bool {
        if info.weight == 0 || !self.filter.matches(info) {
            return self.remove(tx, &info.id).await;
        }
        let endpoint = match self.template.endpoint(info) {
            Ok(e) => e,
            Err(e) => {
                warn!(id = %info.id, error = %e, "not balancing to instance");
                return self.remove(tx, &info.id).await;
            }
        };
        self.known.insert(info.id.clone());
        debug!(id = %info.id, authority = %info.authority(), "balancing to instance");
        tx.send(ChannelChange::Insert(info.id.clone(), endpoint))
            .await
            .is_ok()
    }

    async fn remove(&mut self, tx: &Sender<ChannelChange<String, Endpoint>>, id: &str) -> bool {
        if !self.known.remove(id) {
            return true;
        }
        debug!(id, "no longer balancing to instance");
        tx.send(ChannelChange::Remove(id.to_string())).await.is_ok()
    }
}

impl RegistryService {
    /// A tonic channel that balances requests over the passing instances of
    /// `name` (weight above 0), following them while in use: new instances are
    /// added, removed or unhealthy ones dropped. Each instance is reached at
    /// `http://<address>:<port>`; see [`RegistryService::channel_with`] for TLS,
    /// timeouts and filters.
    ///
    /// The channel is fed by a [`ServiceCache`](super::ServiceCache) kept by a
    /// background task, which ends when every clone of the channel is dropped.
    pub async fn channel(&self, name: &str) -> Result<Channel> {
        self.channel_with(name, EndpointTemplate::http(), ServiceFilter::new())
            .await
    }

    /// [`RegistryService::channel`] with each instance's endpoint made from
    /// `template`, over the instances `filter` matches (and of weight above 0).
    /// An instance that stops matching (its health drops, its tags change) leaves
    /// the channel; one that starts matching joins it.
    pub async fn channel_with(
        &self,
        name: &str,
        template: EndpointTemplate,
        filter: ServiceFilter,
    ) -> Result<Channel> {
        Ok(balance(self.cache(name).await?, template, filter))
    }

    /// [`RegistryService::channel_with`] fed by `cache` (made with the
    /// [`CacheOptions`](super::CacheOptions) of your choice, e.g. another
    /// empty-push protection); the channel owns it.
    pub fn channel_over(
        &self,
        cache: super::ServiceCache,
        template: EndpointTemplate,
        filter: ServiceFilter,
    ) -> Channel {
        balance(cache, template, filter)
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

/// A balanced channel fed from `cache` by a task that ends with the channel.
pub(crate) fn balance(
    cache: super::ServiceCache,
    template: EndpointTemplate,
    filter: ServiceFilter,
) -> Channel {
    let (channel, tx) = Channel::balance_channel::<String>(64);
    // Subscribe before reading the instances, so no change falls in between.
    let mut events = cache.subscribe();
    let initial = cache.instances();
    tokio::spawn(async move {
        let mut feed = Feed {
            template,
            filter,
            known: HashSet::new(),
        };
        for info in initial.iter() {
            if !feed.apply(&tx, info).await {
                return;
            }
        }
        loop {
            let event = tokio::select! {
                _ = tx.closed() => return,
                event = events.recv() => event,
            };
            let open = match event {
                Ok(e) if e.kind == ServiceEventKind::Put => feed.apply(&tx, &e.service).await,
                Ok(e) => feed.remove(&tx, &e.service.id).await,
                Err(RecvError::Lagged(_)) => {
                    // Missed events: align with the cache's current view.
                    let now = cache.instances();
                    let ids: HashSet<_> = now.iter().map(|i| i.id.clone()).collect();
                    let stale: Vec<_> = feed.known.difference(&ids).cloned().collect();
                    let mut open = true;
                    for id in stale {
                        open &= feed.remove(&tx, &id).await;
                    }
                    for info in now.iter() {
                        open &= feed.apply(&tx, info).await;
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
    channel
}
