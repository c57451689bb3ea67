//! Planted bugs of watches (18, 26–31).

use coordkit::{
    Backend, Error, EventKind, KeyRange, RangeRequest, Result, WatchRequest, WatchStart,
    WatchStream,
};
use futures::StreamExt;

use super::PlantedClient;

impl PlantedClient {
    pub(super) async fn planted_watch(
        &self,
        mut request: WatchRequest,
    ) -> Result<(WatchStream, Option<WatchStart>)> {
        let asked_prev_kv = request.prev_kv;
        if self.is(28) {
            request.prev_kv = true;
        }
        if self.is(30) {
            // Bug 30: every key is seen, not only the watched ones.
            request.keys = KeyRange::Prefix(Vec::new());
        }
        let now = self.inner.revision();
        if let Some(start) = request.start_revision {
            if self.is(27) && start <= now {
                // Bug 27: a watch from a past revision starts at the present.
                request.start_revision = None;
            }
            if self.is(31) && start > now + 1 {
                // Bug 31: a watch from the future gets what comes before it.
                request.start_revision = Some(now + 1);
            }
        }
        if let (true, Some(start)) = (self.is(29), request.start_revision) {
            let probe = RangeRequest::key("planted").at_revision(start);
            if let Err(Error::Compacted { compact_revision }) = self.inner.range(probe).await {
                // Bug 29: replays what is left instead of failing.
                request.start_revision = Some(compact_revision + 1);
            }
        }
        let (stream, start) = self.inner.watch_reporting_start(request).await?;
        let (bug, view) = (self.bug, self.view());
        let stream = stream.map(move |answer| {
            let mut response = answer?;
            if bug == 18 {
                // Bug 18: a revision of several writes shows only its first.
                response.events.truncate(1);
            }
            for event in &mut response.events {
                if bug == 28 && event.kind == EventKind::Delete {
                    // Bug 28: a delete event carries the old value.
                    if let Some(prev) = event.prev_kv.clone() {
                        event.kv = prev;
                    }
                }
                if bug == 26 || !asked_prev_kv {
                    event.prev_kv = None;
                }
                view.show(&mut event.kv);
                if let Some(prev) = &mut event.prev_kv {
                    view.show(prev);
                }
            }
            Ok(response)
        });
        Ok((stream.boxed(), start))
    }
}
