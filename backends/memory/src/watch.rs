//! Watch streams that resume after a cut from the last delivered revision + 1.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use coordkit::{
    Error, KeyRange, Live, Result, Revision, WatchRequest, WatchResponse, WatchStart, WatchStream,
};
use futures::StreamExt;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::faults::ClientFaults;
use crate::Store;

struct Watch {
    store: Arc<Store>,
    client: Arc<ClientFaults>,
    keys: KeyRange,
    prev_kv: bool,
    /// The next revision owed to the caller.
    next: Revision,
    rx: Option<UnboundedReceiver<WatchResponse>>,
    ended: bool,
}

impl Watch {
    fn register(&mut self) -> Result<()> {
        self.store.counters.watches.fetch_add(1, Ordering::Relaxed);
        let rx = self
            .store
            .lock()
            .register(self.client.id, &self.keys, self.prev_kv, self.next)?;
        self.rx = Some(rx);
        Ok(())
    }

    async fn next_item(&mut self) -> Option<Result<WatchResponse>> {
        if self.ended {
            return None;
        }
        loop {
            if let Some(rx) = &mut self.rx {
                match rx.recv().await {
                    Some(resp) => {
                        self.next = resp.revision + 1;
                        return Some(Ok(resp));
                    }
                    // The registration was cut: reconnect below.
                    None => self.rx = None,
                }
            }
            self.client.healed().await;
            self.client.note_watch_resume();
            if let Err(e) = self.register() {
                self.ended = true;
                return Some(Err(e));
            }
        }
    }
}

/// Open a watch, and the revision it starts after; a start revision already
/// compacted gives a stream whose only item is `Compacted`, as etcd does.
pub(crate) fn open(
    store: Arc<Store>,
    client: Arc<ClientFaults>,
    request: WatchRequest,
) -> Result<(WatchStream, WatchStart)> {
    let next = match request.start_revision {
        Some(r) => r,
        None => store.lock().revision() + 1,
    };
    let mut watch = Watch {
        store,
        client,
        keys: request.keys,
        prev_kv: request.prev_kv,
        next,
        rx: None,
        ended: false,
    };
    if let Err(e) = watch.register() {
        match e {
            Error::Compacted { .. } => {
                return Ok((
                    futures::stream::once(async move { Err(e) }).boxed(),
                    WatchStart::after(next - 1),
                ));
            }
            e => return Err(e),
        }
    }
    // A lagging watch (an injected fault) holds everything back until its lag ends.
    let held_until = watch
        .client
        .watch_lag()
        .map(|lag| tokio::time::Instant::now() + lag);
    let stream = futures::stream::unfold((watch, held_until), |(mut w, held)| async move {
        if let Some(until) = held {
            tokio::time::sleep_until(until).await;
        }
        let item = w.next_item().await?;
        Some((item, (w, None)))
    })
    .boxed();
    // Live unless held back by the fault (like a watch etcd registered lagging).
    let start = WatchStart::after(next - 1).with_live(Live::known(held_until.is_none()));
    Ok((stream, start))
}
