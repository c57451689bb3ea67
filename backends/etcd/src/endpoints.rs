//! The members the backend talks to: one etcd client per endpoint, and which of
//! them are set aside as sick.
//!
//! etcd-client balances one channel over every endpoint, so a call or a stream may
//! land on any member, a sick one included (a stopped or blackholed member still
//! accepts TCP). The backend instead picks the member itself: every call and every
//! long-lived stream goes to the first healthy endpoint in order, starting from the
//! one that answered last. An endpoint that failed to connect, timed out, or left a
//! stream silent past its liveness bound is set aside for [`COOLDOWN`]; while every
//! endpoint is set aside, the one whose cooldown ends first is tried.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use coordkit::{Error, Result};
use etcd_client as etcd;
use tokio::sync::OnceCell;
use tokio::time::Instant;

use crate::convert::{self, Context};
use crate::transport;

/// How long an endpoint that failed stays set aside.
pub(crate) const COOLDOWN: Duration = Duration::from_secs(10);

struct Member {
    url: String,
    client: OnceCell<etcd::Client>,
    sick_until: Mutex<Option<Instant>>,
}

/// Every endpoint of the config, each with its own client.
pub(crate) struct Endpoints {
    members: Vec<Member>,
    /// The endpoint tried first: the last one that answered.
    current: AtomicUsize,
    options: etcd::ConnectOptions,
    connect_timeout: Duration,
    /// How plaintext members are connected to (see `transport`).
    direct: transport::Settings,
}

impl Endpoints {
    pub(crate) fn new(
        urls: &[String],
        options: etcd::ConnectOptions,
        direct: transport::Settings,
    ) -> Self {
        Endpoints {
            members: urls
                .iter()
                .map(|url| Member {
                    url: url.clone(),
                    client: OnceCell::new(),
                    sick_until: Mutex::new(None),
                })
                .collect(),
            current: AtomicUsize::new(0),
            options,
            connect_timeout: direct.connect_timeout,
            direct,
        }
    }

    /// The endpoints in the order to try them: healthy ones from the current one
    /// on, then the set-aside ones, soonest back first.
    pub(crate) fn order(&self) -> Vec<usize> {
        let n = self.members.len();
        let start = self.current.load(Ordering::Relaxed) % n.max(1);
        let now = Instant::now();
        let mut healthy = Vec::with_capacity(n);
        let mut sick = Vec::new();
        for i in (0..n).map(|k| (start + k) % n) {
            match self.sick_until(i) {
                Some(until) if until > now => sick.push((until, i)),
                _ => healthy.push(i),
            }
        }
        sick.sort();
        healthy.extend(sick.into_iter().map(|(_, i)| i));
        healthy
    }

    fn sick_until(&self, i: usize) -> Option<Instant> {
        *self.members[i]
            .sick_until
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn url(&self, i: usize) -> &str {
        &self.members[i].url
    }

    pub(crate) fn len(&self) -> usize {
        self.members.len()
    }

    /// Set endpoint `i` aside for [`COOLDOWN`]; the next call starts elsewhere.
    pub(crate) fn set_aside(&self, i: usize, why: &str) {
        let until = Instant::now() + COOLDOWN;
        *self.members[i]
            .sick_until
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(until);
        let _ = self.current.compare_exchange(
            i,
            (i + 1) % self.members.len(),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        tracing::warn!(endpoint = %self.members[i].url, reason = why, cooldown = ?COOLDOWN, "etcd endpoint set aside");
    }

    /// Endpoint `i` answered: it is healthy, and the first to try next time.
    pub(crate) fn answered(&self, i: usize) {
        let member = &self.members[i];
        let mut sick = member.sick_until.lock().unwrap_or_else(|p| p.into_inner());
        if sick.take().is_some() {
            tracing::info!(endpoint = %member.url, "etcd endpoint answers again");
        }
        drop(sick);
        self.current.store(i, Ordering::Relaxed);
    }

    /// The client of endpoint `i`, connecting it first if needed (with credentials,
    /// that is a round trip). Errors are mapped and name the endpoint.
    /// Once connected, it answers without awaiting anything; the connection's
    /// future (several KiB) is boxed, out of every request's future.
    pub(crate) async fn client(&self, i: usize) -> Result<&etcd::Client> {
        match self.members[i].client.get() {
            Some(client) => Ok(client),
            None => Box::pin(self.connect(i)).await,
        }
    }

    async fn connect(&self, i: usize) -> Result<&etcd::Client> {
        let member = &self.members[i];
        let connect = member.client.get_or_try_init(|| async {
            let options = Some(self.options.clone());
            let connect = async {
                match transport::Direct::for_url(&member.url, self.direct.clone()) {
                    Some(direct) => {
                        etcd::Client::from_channel(direct.into_channel(), options).await
                    }
                    None => etcd::Client::connect([member.url.as_str()], options).await,
                }
            };
            match tokio::time::timeout(self.connect_timeout, connect).await {
                Err(_) => Err(Error::unavailable(format!(
                    "connecting to {} timed out after {:?}",
                    member.url, self.connect_timeout
                ))),
                Ok(r) => r.map_err(|e| convert::error(e, Context::at(&member.url))),
            }
        });
        connect.await
    }
}
