//! Live parts of a page: a server-sent event stream that sends a part anew
//! each time a key under its prefix changes. The one way the console follows
//! the store.
//!
//! The watch is opened before the part is read, so no change between the read
//! and the watch is missed (at worst one render too many). When the watch
//! fails or ends (a reconnect, a compaction), it is opened again after the
//! coordinator's retry policy's delay, and the part is read anew: what changed
//! meanwhile is in that read. Changes that come together are sent as one.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use coordkit::{Backoff, WatchRequest, WatchStream};
use futures::{Stream, StreamExt};
use maud::Markup;

use crate::Shared;

/// How long changes are gathered before a part is sent again.
const GATHER: Duration = Duration::from_millis(100);

/// The stream of a live part: `render` now, then after every change under
/// `prefix`, until the client goes or the console shuts down.
pub(crate) fn part<R, F>(
    shared: Shared,
    prefix: String,
    render: R,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>>
where
    R: Fn(Shared) -> F + Send + Sync + 'static,
    F: Future<Output = Markup> + Send,
{
    let closing = shared.closing.subscribe();
    let state = Follow {
        prefix,
        watch: None,
        backoff: shared.retry.backoff(),
        shared,
    };
    let parts = futures::stream::unfold((state, render), |(mut state, render)| async move {
        state.next_change().await;
        let html = render(state.shared.clone()).await.into_string();
        Some((
            Ok(Event::default().event("part").data(html)),
            (state, render),
        ))
    });
    let mut closed = closing;
    let until_closed = async move {
        let _ = closed.wait_for(|c| *c).await;
    };
    Sse::new(parts.take_until(Box::pin(until_closed))).keep_alive(KeepAlive::default())
}

/// Where a live part is in following its prefix.
struct Follow {
    shared: Shared,
    prefix: String,
    watch: Option<WatchStream>,
    /// The waits between failed opens.
    backoff: Backoff,
}

impl Follow {
    /// Wait until the part should be rendered: at once when no watch is open
    /// (after opening one), else at the next change.
    async fn next_change(&mut self) {
        loop {
            let Some(watch) = self.watch.as_mut() else {
                self.open().await;
                return;
            };
            match watch.next().await {
                Some(Ok(_)) => {
                    self.gather().await;
                    return;
                }
                Some(Err(e)) => {
                    tracing::debug!(prefix = %self.prefix, "live watch failed: {e}");
                    self.watch = None;
                }
                None => self.watch = None,
            }
        }
    }

    /// Open the watch, waiting out the retry policy's delay between failures.
    async fn open(&mut self) {
        loop {
            let request = WatchRequest::prefix(self.prefix.clone());
            match self.shared.backend().watch(request).await {
                Ok(watch) => {
                    self.watch = Some(watch);
                    self.backoff.succeeded();
                    return;
                }
                Err(e) => {
                    tracing::debug!(prefix = %self.prefix, "live watch not opened: {e}");
                    self.backoff.wait().await;
                }
            }
        }
    }

    /// Take in the changes that follow within [`GATHER`].
    async fn gather(&mut self) {
        let deadline = tokio::time::Instant::now() + GATHER;
        while let Some(watch) = self.watch.as_mut() {
            match tokio::time::timeout_at(deadline, watch.next()).await {
                Err(_) => return,
                Ok(Some(Ok(_))) => {}
                Ok(_) => self.watch = None,
            }
        }
    }
}
