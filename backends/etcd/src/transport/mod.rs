//! The HTTP/2 connection to one plaintext (`http://`) etcd member.
//!
//! etcd-client's own channel (tonic's, over hyper) hands every call across
//! three tasks before it reaches the socket: a balancer's buffer, hyper's
//! dispatcher, then the connection; and the request's headers and its message
//! often leave in two writes. The backend already picks the member itself (one
//! client per endpoint, see `endpoints`), so here a call puts its request
//! straight into the connection (the `h2` crate's streams) from the caller's
//! task, headers and message together, and only the connection's task touches
//! the socket. On the benchmark's machine that is about a quarter less client
//! CPU per lock acquire+release (docs/performance.md). `https://` endpoints
//! keep etcd-client's channel, which does the TLS.
//!
//! The connection is made on first use and again after it closed, one attempt
//! at a time: callers waiting for an attempt that failed get its error rather
//! than queueing attempts of their own. A failed attempt is `Unavailable` with
//! "tcp connect error" in its message, and a request the connection could not
//! take (it had closed) says "request not sent": either way the backend knows
//! the request never left, so it may go to another endpoint. A request whose
//! connection turns out closed before it was taken is first tried once more
//! on a new connection. Any failure after the request was taken is the call's
//! (a connection reset mid-call stays ambiguous). Keep-alive pings (see
//! `driver`) close a connection that stops answering.

mod driver;
mod exchange;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri};
use tonic::body::Body;
use tonic::Status;

use self::driver::{Activity, Watched};

/// How connections to a member are made and kept.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) connect_timeout: Duration,
    /// A ping goes out after this long without a frame from the member, while
    /// calls or streams are open.
    pub(crate) keep_alive_interval: Duration,
    /// The connection closes if the ping's answer takes longer.
    pub(crate) keep_alive_timeout: Duration,
}

/// A cloneable gRPC channel to one member over one HTTP/2 connection.
#[derive(Clone)]
pub(crate) struct Direct {
    member: Arc<Member>,
}

/// Errors as tower carries them; tonic turns a boxed [`Status`] back into it.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

struct Member {
    authority: Authority,
    settings: Settings,
    /// The open connection, if any.
    open: Mutex<Option<Open>>,
    /// Held while connecting; the last attempt's failure, if it failed.
    connecting: tokio::sync::Mutex<Option<String>>,
    /// Connection attempts ended so far.
    attempts: AtomicU64,
}

/// One open connection: its sender, whether its task has ended, and what the
/// keep-alive pings look at.
#[derive(Clone)]
struct Open {
    send: h2::client::SendRequest<Bytes>,
    closed: Arc<AtomicBool>,
    activity: Arc<Activity>,
}

impl Direct {
    /// A channel to `url` (`http://host:port`), connecting on first use.
    /// `None` for a URL it does not serve (another scheme, a path, no port).
    pub(crate) fn for_url(url: &str, settings: Settings) -> Option<Self> {
        let uri: Uri = url.trim_end_matches('/').parse().ok()?;
        let plain = uri.scheme() == Some(&Scheme::HTTP);
        let bare = uri.path_and_query().is_none_or(|p| p.as_str() == "/");
        let authority = uri.authority()?.clone();
        (plain && bare && authority.port_u16().is_some()).then(|| Direct {
            member: Arc::new(Member {
                authority,
                settings,
                open: Mutex::new(None),
                connecting: tokio::sync::Mutex::default(),
                attempts: AtomicU64::new(0),
            }),
        })
    }

    /// As etcd-client's channel type.
    pub(crate) fn into_channel(self) -> etcd_client::Channel {
        etcd_client::Channel::Custom(tower::util::BoxCloneSyncService::new(self))
    }
}

impl Member {
    /// The open connection, connecting first if there is none.
    async fn connection(&self) -> Result<Open, Status> {
        if let Some(open) = self.open_connection() {
            return Ok(open);
        }
        let ended_before = self.attempts.load(Ordering::SeqCst);
        let mut last_failure = self.connecting.lock().await;
        if let Some(open) = self.open_connection() {
            return Ok(open);
        }
        // An attempt ended while this call waited, and failed: its answer is
        // this call's too.
        if self.attempts.load(Ordering::SeqCst) != ended_before {
            if let Some(failed) = &*last_failure {
                return Err(Status::unavailable(failed.clone()));
            }
        }
        let made = self.connect().await;
        *last_failure = made.as_ref().err().cloned();
        self.attempts.fetch_add(1, Ordering::SeqCst);
        let open = made.map_err(Status::unavailable)?;
        *self.open.lock().unwrap_or_else(|e| e.into_inner()) = Some(open.clone());
        Ok(open)
    }

    fn open_connection(&self) -> Option<Open> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        match &*open {
            Some(o) if !o.closed.load(Ordering::SeqCst) => Some(o.clone()),
            Some(_) => {
                *open = None;
                None
            }
            None => None,
        }
    }

    /// The connection marked by `closed` refused a request: mark it closed and
    /// forget it if it is still the open one.
    fn forget(&self, closed: &Arc<AtomicBool>) {
        closed.store(true, Ordering::SeqCst);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open
            .as_ref()
            .is_some_and(|o| Arc::ptr_eq(&o.closed, closed))
        {
            *open = None;
        }
    }

    /// Make a connection and start its task; the error says "tcp connect
    /// error" (nothing was sent).
    async fn connect(&self) -> Result<Open, String> {
        let s = &self.settings;
        let address = self.authority.as_str();
        let activity = Arc::new(Activity::new());
        let handshake = async {
            let tcp = tokio::net::TcpStream::connect(address)
                .await
                .map_err(|e| format!("tcp connect error: {address}: {e}"))?;
            tcp.set_nodelay(true)
                .map_err(|e| format!("tcp connect error: {address}: nodelay: {e}"))?;
            // hyper's defaults for a client, as etcd-client's channel had them.
            h2::client::Builder::new()
                .initial_window_size(2 * 1024 * 1024)
                .initial_connection_window_size(5 * 1024 * 1024)
                .max_send_buffer_size(1024 * 1024)
                .enable_push(false)
                .handshake::<_, Bytes>(Watched::new(tcp, activity.clone()))
                .await
                .map_err(|e| format!("tcp connect error: {address}: http/2 handshake: {e}"))
        };
        let (send, connection) = tokio::time::timeout(s.connect_timeout, handshake)
            .await
            .map_err(|_| {
                format!(
                    "tcp connect error: {address}: timed out after {:?}",
                    s.connect_timeout
                )
            })??;
        let closed = driver::start(connection, activity.clone(), s, address);
        Ok(Open {
            send,
            closed,
            activity,
        })
    }

    /// Send `request` on the open connection; on one found closed before it
    /// took the request, once more on a new one.
    async fn call(&self, request: Request<Body>) -> Result<Response<Body>, BoxError> {
        let (mut head, body) = request.into_parts();
        let mut uri = std::mem::take(&mut head.uri).into_parts();
        uri.scheme = Some(Scheme::HTTP);
        uri.authority = Some(self.authority.clone());
        head.uri = Uri::from_parts(uri)?;
        let mut open = self.connection().await?;
        let send = match open.send.ready().await {
            Ok(send) => send,
            Err(_) => {
                self.forget(&open.closed);
                open = self.connection().await?;
                open.send.ready().await.map_err(|e| {
                    self.forget(&open.closed);
                    Status::unavailable(format!("request not sent: {e}"))
                })?
            }
        };
        let exchange = exchange::start(send, Request::from_parts(head, ()), body, &open.activity)
            .map_err(|exchange::NotSent(e)| {
            self.forget(&open.closed);
            Status::unavailable(format!("request not sent: {e}"))
        })?;
        exchange.response().await
    }
}

impl tower::Service<Request<Body>> for Direct {
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, BoxError>> + Send>>;

    /// Always ready: a call waits in `call` for room on the connection, and a
    /// closed connection is replaced by the call that finds it closed.
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let member = self.member.clone();
        Box::pin(async move { member.call(request).await })
    }
}

#[cfg(test)]
mod tests;
