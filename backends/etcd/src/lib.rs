//! # coordkit-etcd
//!
//! The etcd v3 backend for coordkit, through the `etcd-client` crate.
//!
//! ```no_run
//! use std::time::Duration;
//! use coordkit_etcd::EtcdConfig;
//!
//! # async fn demo() -> coordkit::Result<()> {
//! let coordinator = coordkit_etcd::connect(EtcdConfig::with_endpoints(["http://127.0.0.1:2379"])).await?;
//! let guard = coordinator.lock().acquire("nightly-report", Duration::from_secs(15)).await?;
//! // ... the work, writing through txns carrying guard.compare() ...
//! guard.unlock().await?;
//! # Ok(()) }
//! ```
//!
//! [`EtcdBackend`] alone is the primitive (a [`coordkit::Backend`]), for direct use or
//! for [`coordkit::Coordinator::builder`] with other options.
//!
//! One backend holds one etcd client per endpoint and picks the member for each
//! call itself: the first healthy endpoint, starting from the one that answered
//! last. An endpoint that cannot be connected, times out, or leaves a stream silent
//! is set aside for a while, so one sick member of a cluster costs at most one
//! timeout. Every request carries etcd's `hasleader` requirement: a member cut off
//! from the quorum refuses at once instead of hanging. An `http://` member is
//! reached over one HTTP/2 connection of the backend's own, which a call writes
//! its request into from the caller's task; an `https://` one over
//! etcd-client's channel, which does the TLS (see docs/running-against-etcd.md).
//!
//! All watches share one gRPC watch stream and all lease keep-alives share one
//! keep-alive stream. Both streams have a liveness bound (a fifth of the smallest
//! live lease TTL, at most [`EtcdConfig::stream_liveness`]): a stream that leaves a
//! request unanswered that long is moved to another member, so a session is never
//! lost to one sick member while a quorum is reachable. A watch whose stream moves
//! or breaks is resumed from the last delivered revision + 1: no gap, no duplicate;
//! it yields `Compacted` only when etcd has compacted past that point. A consumer
//! that stops reading never holds up the other watches (see [`EtcdBackend::watch`]).
//!
//! Each request is bounded by [`EtcdConfig::request_timeout`]. A request that
//! provably never reached a member (no connection, or refused for want of a
//! leader) is sent to the next endpoint, writes included. A write that timed out
//! or whose connection broke may or may not have applied and is not repeated
//! here; the recipes retry only what cannot apply twice.
//!
//! Building needs `protoc` (Debian: `protobuf-compiler`) for etcd-client.

#![warn(missing_docs, missing_debug_implementations)]

mod config;
mod convert;
mod endpoints;
mod keepalive;
mod observed;
mod request;
mod status;
mod transport;
mod watch;

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use async_trait::async_trait;
use coordkit::backend::validate;
use coordkit::{
    Backend, Capabilities, Error, LeaseGrant, LeaseId, LeaseInfo, Limits, Live, RangeRequest,
    RangeResponse, ReadConsistency, Result, Revision, Txn, TxnResponse, WatchRequest,
    WatchResponse, WatchStart, WatchStream,
};
use etcd_client as etcd;
use futures::{Stream, StreamExt};
use request::{finished_on_the_server, larger_part, range_response, txn_response};
use tokio::sync::{mpsc, oneshot};

pub use config::EtcdConfig;

/// TLS settings for [`EtcdConfig::tls`] (feature `tls`): re-exported from
/// etcd-client (which takes them from tonic), so no direct dependency is needed.
///
/// ```no_run
/// # fn demo(ca_pem: Vec<u8>, cert_pem: Vec<u8>, key_pem: Vec<u8>) {
/// use coordkit_etcd::{Certificate, EtcdConfig, Identity, TlsOptions};
/// let mut config = EtcdConfig::with_endpoints(["https://etcd-1:2379"]);
/// config.tls = Some(
///     TlsOptions::new()
///         .ca_certificate(Certificate::from_pem(ca_pem))
///         .identity(Identity::from_pem(cert_pem, key_pem)), // for client-cert auth
/// );
/// # }
/// ```
#[cfg(feature = "tls")]
pub use etcd_client::{Certificate, Identity, TlsOptions};

/// Connect to etcd and return a [`Coordinator`](coordkit::Coordinator) over it, with
/// the default namespace (`coord/`) and the config's retry policy.
///
/// Errors: as [`EtcdBackend::connect`], and `InvalidArgument` for a bad retry policy.
pub async fn connect(config: EtcdConfig) -> Result<coordkit::Coordinator> {
    config.retry.validate()?;
    let retry = config.retry.clone();
    let backend = EtcdBackend::connect(config).await?;
    coordkit::Coordinator::builder(Arc::new(backend))
        .retry(retry)
        .build()
}
use convert::Context;
pub use status::{MemberState, MemberStatus, StreamStats};

/// Keep-alive requests waiting for the hub, at most (callers wait beyond).
const KEEP_ALIVE_QUEUE: usize = 1024;

struct Inner {
    endpoints: Arc<endpoints::Endpoints>,
    config: EtcdConfig,
    watches: Arc<watch::Mailbox>,
    keep_alives: mpsc::Sender<keepalive::Request>,
    liveness: Arc<keepalive::Liveness>,
    next_watch: AtomicI64,
    watch_counters: Arc<watch::Counters>,
    keep_alive_streams: Arc<AtomicU64>,
    observed: Arc<observed::Observed>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Ends the watch hub; the keep-alive hub ends with its queue's sender.
        self.watches.close();
    }
}

/// A coordkit backend on etcd v3. Clones share the connection.
#[derive(Clone)]
pub struct EtcdBackend {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for EtcdBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdBackend")
            .field("endpoints", &self.inner.config.endpoints)
            .finish_non_exhaustive()
    }
}

impl EtcdBackend {
    /// Connect to etcd. Fails with `Unavailable` or `Timeout` if no endpoint answers
    /// within the connect timeout, `AuthFailed` for bad credentials, and
    /// `InvalidArgument` for a bad config.
    pub async fn connect(config: EtcdConfig) -> Result<Self> {
        let backend = Self::connect_lazily(config)?;
        // Fail now, not at the first call, if etcd does not answer (a status call
        // needs no permission on any key), and refuse an etcd older than 3.4:
        // the backend relies on client-chosen watch ids.
        let status = backend
            .call("status", Context::default(), |c| {
                let mut maintenance = c.maintenance_client();
                async move { maintenance.status().await }
            })
            .await
            .map_err(|e| with_tls_hint(e, &backend.inner.config))?;
        check_version(status.version())?;
        Ok(backend)
    }

    /// A backend that connects on its first call instead of now: it can be made
    /// while etcd is unreachable (a service starting during an outage, serving a
    /// [`ConfigManager`](coordkit::ConfigManager) snapshot), and its calls fail
    /// with `Unavailable` or `Timeout` until etcd answers. Unlike
    /// [`EtcdBackend::connect`] it does not check etcd's version up front.
    ///
    /// Errors: `InvalidArgument` for a bad config. Needs a tokio runtime.
    pub fn connect_lazily(config: EtcdConfig) -> Result<Self> {
        config.validate()?;
        let mut options = etcd::ConnectOptions::new()
            .with_connect_timeout(config.connect_timeout)
            .with_keep_alive(config.keep_alive_interval, config.keep_alive_timeout)
            // etcd counts pings on a connection without streams as abuse.
            .with_keep_alive_while_idle(false)
            .with_require_leader(true)
            .with_auto_token_refresh(true);
        if let (Some(user), Some(password)) = (&config.username, &config.password) {
            options = options.with_user(user.clone(), password.clone());
        }
        #[cfg(feature = "tls")]
        if let Some(tls) = &config.tls {
            options = options.with_tls(tls.clone());
        }
        let direct = transport::Settings {
            connect_timeout: config.connect_timeout,
            keep_alive_interval: config.keep_alive_interval,
            keep_alive_timeout: config.keep_alive_timeout,
        };
        let endpoints = Arc::new(endpoints::Endpoints::new(
            &config.endpoints,
            options,
            direct,
        ));
        let mailbox = Arc::new(watch::Mailbox::default());
        let (ka_tx, ka_rx) = mpsc::channel(KEEP_ALIVE_QUEUE);
        let watch_counters = Arc::new(watch::Counters::default());
        let keep_alive_streams = Arc::new(AtomicU64::new(0));
        let liveness = Arc::new(keepalive::Liveness::new(config.stream_liveness));
        let observed = Arc::new(observed::Observed::default());
        tokio::spawn(watch::run(
            endpoints.clone(),
            liveness.clone(),
            mailbox.clone(),
            watch_counters.clone(),
            observed.clone(),
        ));
        tokio::spawn(keepalive::run(
            endpoints.clone(),
            liveness.clone(),
            ka_rx,
            keep_alive_streams.clone(),
        ));
        let backend = EtcdBackend {
            inner: Arc::new(Inner {
                endpoints,
                config,
                watches: mailbox,
                keep_alives: ka_tx,
                liveness,
                next_watch: AtomicI64::new(1),
                watch_counters,
                keep_alive_streams,
                observed,
            }),
        };
        Ok(backend)
    }

    /// Each configured endpoint's own status, asked of that endpoint alone
    /// (etcd's maintenance `Status`), in the configured order: for operators
    /// (`coordctl status`). An endpoint that does not answer within the request
    /// timeout is reported with its error, never skipped.
    pub async fn member_status(&self) -> Vec<MemberStatus> {
        let endpoints = &self.inner.endpoints;
        let limit = self.inner.config.request_timeout;
        let mut out = Vec::with_capacity(endpoints.len());
        for i in 0..endpoints.len() {
            let endpoint = endpoints.url(i).to_string();
            let asked = async {
                let client = endpoints.client(i).await?;
                client
                    .maintenance_client()
                    .status()
                    .await
                    .map_err(|e| convert::error(e, Context::default()))
            };
            let status = match tokio::time::timeout(limit, asked).await {
                Ok(Ok(s)) => Ok(MemberState {
                    member_id: s.header().map_or(0, |h| h.member_id()),
                    leader_id: s.leader(),
                    revision: s.header().map_or(0, |h| h.revision()),
                    raft_term: s.raft_term(),
                    raft_index: s.raft_index(),
                    db_size: s.db_size(),
                    version: s.version().to_string(),
                }),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no answer within {limit:?}")),
            };
            out.push(MemberStatus { endpoint, status });
        }
        out
    }

    /// How many watch and keep-alive streams this backend has opened.
    pub fn stream_stats(&self) -> StreamStats {
        StreamStats {
            watch_streams: self
                .inner
                .watch_counters
                .streams_opened
                .load(Ordering::Relaxed),
            keep_alive_streams: self.inner.keep_alive_streams.load(Ordering::Relaxed),
            watch_stalls: self.inner.watch_counters.stalls.load(Ordering::Relaxed),
            observed_reads_resent: self.inner.observed.resent.load(Ordering::Relaxed),
            watches_brought_forward: self
                .inner
                .watch_counters
                .brought_forward
                .load(Ordering::Relaxed),
            watches_grouped: self.inner.watch_counters.grouped.load(Ordering::Relaxed),
        }
    }
}

/// A connect that failed below gRPC (no answer at all) says what to check about
/// TLS: a TLS server reached over http://, or https:// settings it refused.
fn with_tls_hint(e: Error, config: &EtcdConfig) -> Error {
    let https = config.endpoints.iter().any(|u| u.starts_with("https://"));
    match e {
        Error::Unavailable { reason, source }
            if reason.contains("transport error")
                || reason.contains("operation was canceled")
                || reason.contains("h2 protocol error")
                || reason.contains("http/2 handshake") =>
        {
            let hint = if https {
                "check the TLS settings: the CA that signed etcd's certificate, and a client certificate if etcd requires one (--client-cert-auth)"
            } else {
                "if etcd serves TLS, use https:// endpoints with coordkit-etcd's `tls` feature"
            };
            Error::Unavailable {
                reason: format!("{reason} ({hint})"),
                source,
            }
        }
        e => e,
    }
}

#[async_trait]
impl Backend for EtcdBackend {
    fn name(&self) -> &'static str {
        convert::BACKEND
    }

    fn limits(&self) -> Limits {
        self.inner.config.limits
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::NONE
            .with_compaction(true)
            .with_watch_start(true)
    }

    async fn range(&self, request: RangeRequest) -> Result<RangeResponse> {
        validate::range(&request)?;
        let (key, options) = convert::get(request);
        let resp = self
            .call("range", Context::default(), |c| {
                let (mut kv, key, options) = (crate::request::kv(c), key.clone(), options.clone());
                async move { kv.get(key, Some(options)).await }
            })
            .await;
        match resp {
            Ok(resp) => {
                let resp = range_response(resp, 0);
                self.inner.observed.see(resp.revision);
                Ok(resp)
            }
            Err(e) => Err(self.with_compaction_revision(e).await),
        }
    }

    async fn txn(&self, mut txn: Txn) -> Result<TxnResponse> {
        validate::txn(&txn, &self.inner.config.limits)?;
        let ctx = Context {
            lease: txn
                .success
                .iter()
                .chain(&txn.failure)
                .find_map(|op| match op {
                    coordkit::TxnOp::Put(p) => p.lease.map(|l| l.0),
                    _ => None,
                }),
            endpoint: None,
            larger: Some(larger_part(&txn)),
        };
        // An unconditional single write is sent as a plain Put or Delete: the same
        // atomic effect, and etcd 3.4 serves it without the read view a Txn opens
        // (which copies its write buffer per request: 7x slower under load).
        if txn.compares.is_empty() && txn.failure.is_empty() && txn.success.len() == 1 {
            match txn.success.pop() {
                Some(coordkit::TxnOp::Put(p)) => return self.plain_put(p, ctx).await,
                Some(coordkit::TxnOp::Delete(d)) => return self.plain_delete(d, ctx).await,
                // A lone read goes out as a transaction (a read-only one).
                Some(read) => txn.success.push(read),
                None => {}
            }
        }
        // An observed read goes to the member asked without a round through the
        // leader (serializable), unless that member is behind the floor.
        let floor = match txn.consistency {
            ReadConsistency::Observed => Some(self.inner.observed.revision()),
            _ => None,
        };
        let read_only = txn
            .success
            .iter()
            .chain(&txn.failure)
            .all(|op| matches!(op, coordkit::TxnOp::Range(_)));
        let linearizable = floor.map(|_| convert::txn(txn.clone(), false));
        let request = convert::txn(txn, floor.is_some());
        let send = |request: etcd::Txn| {
            self.call("txn", ctx, move |c| {
                let (mut kv, request) = (crate::request::kv(c), request.clone());
                async move {
                    if read_only {
                        finished_on_the_server(async move { kv.txn(request).await }).await
                    } else {
                        kv.txn(request).await
                    }
                }
            })
        };
        let mut resp = send(request).await?;
        if let (Some(floor), Some(linearizable)) = (floor, linearizable) {
            if resp.header().map_or(0, |h| h.revision()) < floor {
                self.inner.observed.resent.fetch_add(1, Ordering::Relaxed);
                resp = send(linearizable).await?;
            }
        }
        let revision = self.seen(resp.header());
        Ok(txn_response(resp, revision))
    }

    async fn lease_grant(&self, ttl: i64) -> Result<LeaseGrant> {
        validate::ttl(ttl, &self.inner.config.limits)?;
        let resp = self
            .call("lease grant", Context::default(), |c| {
                let mut lease = c.lease_client();
                async move { lease.grant(ttl, None).await }
            })
            .await?;
        if !resp.error().is_empty() {
            return Err(Error::unavailable(format!(
                "etcd refused the lease: {}",
                resp.error()
            )));
        }
        self.inner.liveness.granted(resp.id(), resp.ttl());
        Ok(LeaseGrant {
            id: LeaseId(resp.id()),
            ttl: resp.ttl(),
        })
    }

    async fn lease_keep_alive(&self, id: LeaseId) -> Result<i64> {
        let (reply, answer) = oneshot::channel();
        let limit = self.inner.config.request_timeout;
        let ask = async {
            self.inner
                .keep_alives
                .send(keepalive::Request { id: id.0, reply })
                .await
                .map_err(|_| Error::Closed {
                    what: "etcd keep-alive stream",
                })?;
            match answer.await {
                Err(_) => Err(Error::unavailable("etcd keep-alive stream closed")),
                Ok(r) => r,
            }
        };
        match tokio::time::timeout(limit, ask).await {
            Err(_) => Err(Error::Timeout {
                operation: "lease keep-alive",
            }),
            Ok(r) => r,
        }
    }

    async fn lease_revoke(&self, id: LeaseId) -> Result<()> {
        let result = self
            .call("lease revoke", Context::lease(id.0), |c| {
                let mut lease = c.lease_client();
                async move { lease.revoke(id.0).await }
            })
            .await;
        if matches!(result, Ok(_) | Err(Error::LeaseNotFound { .. })) {
            self.inner.liveness.ended(id.0);
        }
        result.map(|_| ())
    }

    async fn lease_time_to_live(&self, id: LeaseId) -> Result<LeaseInfo> {
        let options = etcd::LeaseTimeToLiveOptions::new().with_keys();
        let resp = self
            .call("lease time-to-live", Context::lease(id.0), |c| {
                let (mut lease, options) = (c.lease_client(), options.clone());
                async move { lease.time_to_live(id.0, Some(options)).await }
            })
            .await?;
        if resp.ttl() < 0 {
            self.inner.liveness.ended(id.0);
            return Err(Error::LeaseNotFound { id: id.0 });
        }
        let mut keys = resp.keys().to_vec();
        keys.sort();
        Ok(LeaseInfo {
            id,
            granted_ttl: resp.granted_ttl(),
            remaining_ttl: resp.ttl(),
            keys,
        })
    }

    /// See [`Backend::watch`]. On etcd, each watch buffers at most 1024 responses
    /// for its consumer; a consumer that falls further behind has its etcd watch
    /// cut (nothing else waits for it) and resumed from the first revision it has
    /// not seen once it has read the buffer, or told `Compacted` if etcd compacted
    /// that revision meanwhile.
    async fn watch(&self, request: WatchRequest) -> Result<WatchStream> {
        Ok(self.watch_reporting_start(request).await?.0)
    }

    /// See [`Backend::watch_reporting_start`]. A watch from now reports the
    /// revision etcd created it at (the header of its creation: etcd starts it
    /// right after), so a caller that read at that revision or later missed
    /// nothing.
    async fn watch_reporting_start(
        &self,
        request: WatchRequest,
    ) -> Result<(WatchStream, Option<WatchStart>)> {
        validate::watch(&request)?;
        let mut start = request.start_revision.map(|s| s - 1);
        let id = self.inner.next_watch.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = watch::buffer::buffer(watch::WATCH_BUFFER);
        let stalled = Arc::new(AtomicBool::new(false));
        // A watch from now returns once etcd created it: every change committed
        // after this call returns is delivered.
        let (created, confirmed, live, told) = match request.start_revision {
            Some(_) => (None, None, None, None),
            None => {
                let (created, confirmed) = oneshot::channel();
                let (live, told) = oneshot::channel();
                (Some(created), Some(confirmed), Some(live), Some(told))
            }
        };
        let posted = self.inner.watches.post(watch::Command::Open {
            id,
            keys: request.keys,
            prev_kv: request.prev_kv,
            start: request.start_revision,
            created,
            live,
            tx,
            stalled: stalled.clone(),
        });
        if !posted {
            return Err(Error::Closed {
                what: "etcd watch stream",
            });
        }
        let stream = EtcdWatch {
            rx,
            id,
            stalled,
            mailbox: self.inner.watches.clone(),
        };
        if let Some(confirmed) = confirmed {
            match tokio::time::timeout(self.inner.config.request_timeout, confirmed).await {
                // The first revision the watch is owed.
                Ok(Ok(next)) if next > 0 => start = Some(next - 1),
                Ok(Ok(_)) => {}
                // Refused at creation: the stream carries the reason.
                Ok(Err(_)) => {}
                Err(_) => return Err(Error::Timeout { operation: "watch" }),
            }
        }
        // A watch from a revision may be catching up: never known live.
        let live = match told {
            Some(told) => Live::later(async move { told.await.unwrap_or(false) }),
            None => Live::known(false),
        };
        Ok((
            stream.boxed(),
            start.map(|after| WatchStart::after(after).with_live(live)),
        ))
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        validate::compact(revision)?;
        let options = etcd::CompactionOptions::new().with_physical();
        let done = self
            .call("compact", Context::default(), |c| {
                let (mut kv, options) = (crate::request::kv(c), options.clone());
                async move { kv.compact(revision, Some(options)).await }
            })
            .await;
        match done {
            Ok(_) => Ok(()),
            Err(e) => Err(self.with_compaction_revision(e).await),
        }
    }
}

impl EtcdBackend {
    /// etcd's answer to a read or compaction below its compaction point does not
    /// say where that point is; a watch from revision 1 does. Fills it in so that
    /// `Compacted::compact_revision` means the same on every backend (the oldest
    /// readable revision). Other errors, and a probe that fails, pass through.
    async fn with_compaction_revision(&self, error: Error) -> Error {
        if !matches!(
            error,
            Error::Compacted {
                compact_revision: 0
            }
        ) {
            return error;
        }
        let probe = WatchRequest::key("\0coordkit/compaction-probe").from_revision(1);
        let first = async {
            let mut stream = self.watch(probe).await.ok()?;
            stream.next().await
        };
        match tokio::time::timeout(self.inner.config.request_timeout, first).await {
            Ok(Some(Err(compacted @ Error::Compacted { .. }))) => compacted,
            _ => error,
        }
    }
}

/// etcd 3.4 or newer: older servers do not honour client-chosen watch ids.
fn check_version(version: &str) -> Result<()> {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if (major, minor) < (3, 4) {
        return Err(Error::invalid(
            "endpoints",
            format!("etcd {version} is too old: coordkit needs etcd 3.4 or newer"),
        ));
    }
    Ok(())
}

/// One watch on the shared stream; dropping it cancels the watch.
struct EtcdWatch {
    rx: watch::buffer::Receiver,
    id: i64,
    stalled: Arc<AtomicBool>,
    mailbox: Arc<watch::Mailbox>,
}

impl Stream for EtcdWatch {
    type Item = Result<WatchResponse>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        let polled = self.rx.poll_recv(cx);
        if polled.is_pending() && self.stalled.swap(false, Ordering::AcqRel) {
            // Everything buffered is read: the hub may follow the keys again.
            self.mailbox.post(watch::Command::Resume { id: self.id });
        }
        polled
    }
}

impl Drop for EtcdWatch {
    fn drop(&mut self) {
        self.mailbox.post(watch::Command::Close { id: self.id });
    }
}

impl From<EtcdBackend> for Arc<dyn Backend> {
    fn from(b: EtcdBackend) -> Self {
        Arc::new(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coordkit::BackendExt;

    /// An observed read answered from a state behind this backend's floor is
    /// sent again as a linearizable read; one answered at or past it is not.
    #[tokio::test]
    #[ignore = "needs etcd (COORD_ETCD_ENDPOINTS; ./scripts/test.sh starts one)"]
    async fn observed_read_behind_the_floor_is_sent_again_linearizably() {
        let list = std::env::var("COORD_ETCD_ENDPOINTS")
            .expect("COORD_ETCD_ENDPOINTS is not set: this test needs an etcd");
        let b = EtcdBackend::connect(EtcdConfig::from_endpoint_list(&list))
            .await
            .expect("etcd answers");
        let key = format!("observed-resend/{}", std::process::id());
        let written = b.put(key.clone(), "v").await.expect("put");
        let read = Txn::new()
            .and_then([RangeRequest::key(key.clone())])
            .with_consistency(ReadConsistency::Observed);
        let r = b.txn(read.clone()).await.expect("observed read");
        assert!(r.revision >= written);
        assert_eq!(b.stream_stats().observed_reads_resent, 0);
        // No member has this revision: the serializable answer is behind it.
        b.inner.observed.see(r.revision + 1_000_000);
        let r = b.txn(read).await.expect("observed read, resent");
        let kvs = &r.first_range().expect("the read").kvs;
        assert_eq!(kvs[0].value, b"v");
        assert_eq!(b.stream_stats().observed_reads_resent, 1);
        b.delete(key).await.expect("delete");
    }
}
