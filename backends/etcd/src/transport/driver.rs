//! A connection's task: it does the connection's reads and writes, and pings
//! the member after a quiet spell while calls or streams are open, closing the
//! connection when a ping goes unanswered (a member that stopped answering
//! while its TCP connection stays up). No ping goes out while nothing is open:
//! etcd takes pings on an idle connection as abuse.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::Settings;

/// What the pings look at: when the member last sent anything, and how many
/// calls or streams are open.
pub(super) struct Activity {
    since: Instant,
    /// Microseconds from `since` to the last read that brought bytes.
    last_read: AtomicU64,
    streams: AtomicUsize,
}

impl Activity {
    pub(super) fn new() -> Self {
        Activity {
            since: Instant::now(),
            last_read: AtomicU64::new(0),
            streams: AtomicUsize::new(0),
        }
    }

    fn read_now(&self) {
        let micros = u64::try_from(self.since.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.last_read.store(micros, Ordering::Relaxed);
    }

    fn last_read(&self) -> Instant {
        self.since + std::time::Duration::from_micros(self.last_read.load(Ordering::Relaxed))
    }
}

/// One open call or stream, counted while this lives.
pub(super) struct StreamOpen(Arc<Activity>);

impl StreamOpen {
    pub(super) fn new(activity: Arc<Activity>) -> Self {
        activity.streams.fetch_add(1, Ordering::Relaxed);
        StreamOpen(activity)
    }
}

impl Drop for StreamOpen {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The connection's socket, noting when bytes arrive.
pub(super) struct Watched {
    tcp: TcpStream,
    activity: Arc<Activity>,
}

impl Watched {
    pub(super) fn new(tcp: TcpStream, activity: Arc<Activity>) -> Self {
        Watched { tcp, activity }
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.tcp).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.read_now();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// Run `connection` in a task of its own, and its keep-alive pings in another
/// (so that the connection's task, woken for every frame, has no timer to look
/// at). Returns the flag set once the connection has ended, or was closed for
/// an unanswered ping; dropping the connection fails its open calls and
/// streams, and the next call connects anew.
pub(super) fn start(
    mut connection: h2::client::Connection<Watched, Bytes>,
    activity: Arc<Activity>,
    settings: &Settings,
    address: &str,
) -> Arc<AtomicBool> {
    let closed = Arc::new(AtomicBool::new(false));
    let pings = connection.ping_pong();
    let running = {
        let (closed, address) = (closed.clone(), address.to_string());
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(endpoint = %address, error = %e, "etcd connection ended");
            }
            closed.store(true, Ordering::SeqCst);
        })
    };
    if let Some(pings) = pings {
        let unanswered = ping(pings, activity, closed.clone(), settings.clone());
        let (closed, address) = (closed.clone(), address.to_string());
        let timeout = settings.keep_alive_timeout;
        tokio::spawn(async move {
            if unanswered.await {
                tracing::warn!(
                    endpoint = %address,
                    ?timeout,
                    "etcd did not answer a keep-alive ping: closing the connection"
                );
                closed.store(true, Ordering::SeqCst);
                running.abort();
            }
        });
    }
    closed
}

/// Ping after each quiet spell while something is open; true when a ping went
/// unanswered, false when the connection ended first.
async fn ping(
    mut pings: h2::PingPong,
    activity: Arc<Activity>,
    closed: Arc<AtomicBool>,
    settings: Settings,
) -> bool {
    let interval = settings.keep_alive_interval;
    while !closed.load(Ordering::SeqCst) {
        let now = Instant::now();
        let quiet_from = activity.last_read() + interval;
        let open = activity.streams.load(Ordering::Relaxed) > 0;
        if !(open && quiet_from <= now) {
            // Not due: look again when it could be (a full interval from now
            // while it is quiet with nothing open).
            let wake = if quiet_from > now {
                quiet_from
            } else {
                now + interval
            };
            tokio::time::sleep_until(wake).await;
            continue;
        }
        if pings.send_ping(h2::Ping::opaque()).is_err() {
            return false;
        }
        let pong = std::future::poll_fn(|cx| pings.poll_pong(cx));
        match tokio::time::timeout(settings.keep_alive_timeout, pong).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return false,
            Err(_) => return !closed.load(Ordering::SeqCst),
        }
    }
    false
}
