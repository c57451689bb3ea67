//! A manager with labels: it follows its key and the key's gray release, and
//! serves the gray value while the release's selector matches its labels.
//!
//! Any change of either key rereads both in one transaction (one revision),
//! so the manager never serves a mix of two moments; what it serves is offered
//! at the revision of that read.

use std::sync::Arc;

use futures::StreamExt;
use serde::de::DeserializeOwned;
use tracing::warn;

use super::{ConfigManagerError, ManagerInner};
use crate::backend::{RangeRequest, Txn, TxnOpResponse, WatchRequest, WatchStream};
use crate::config::{GrayRelease, Labels, Watcher};

/// The two watches of a manager with labels.
pub(super) struct Watches {
    main: Watcher<serde::de::IgnoredAny>,
    gray: WatchStream,
}

impl<T> ManagerInner<T>
where
    T: DeserializeOwned + Send + Sync + 'static,
{
    /// Open both watches, then read both keys and offer what `labels` are
    /// served; `None` (recorded) when the store did not answer.
    pub(super) async fn load_labeled(&self, labels: &Labels) -> Option<super::Changes<T>> {
        let opened = async {
            let main = self
                .center
                .watch::<serde::de::IgnoredAny>(&self.key)
                .await?;
            let gray_key = self.center.gray_key(&self.key);
            let gray = self
                .center
                .backend()
                .watch(WatchRequest::key(gray_key))
                .await?;
            crate::error::Result::Ok(Watches { main, gray })
        };
        let watches = match opened.await {
            Ok(w) => w,
            Err(e) => {
                warn!(key = %self.key, error = %e, "config store unreachable; serving the last good value");
                self.record_error(ConfigManagerError::Store(Arc::new(e)));
                return None;
            }
        };
        self.reread_labeled(labels)
            .await
            .then_some(super::Changes::Gray(watches))
    }

    /// Wait for a change of either key and reread both; `false` when a watch
    /// ended or the store did not answer (the caller loads again).
    pub(super) async fn follow_labeled(&self, watches: &mut Watches) -> bool {
        let Some(labels) = &self.labels else {
            return false;
        };
        let changed = tokio::select! {
            event = watches.main.next() => match event {
                Some(Ok(_)) | Some(Err(crate::error::Error::Codec { .. })) => true,
                Some(Err(e)) => {
                    self.record_error(ConfigManagerError::Store(Arc::new(e)));
                    false
                }
                None => false,
            },
            event = watches.gray.next() => match event {
                Some(Ok(_)) => true,
                Some(Err(e)) => {
                    self.record_error(ConfigManagerError::Store(Arc::new(e)));
                    false
                }
                None => false,
            },
        };
        changed && self.reread_labeled(labels).await
    }

    /// Read the key and its gray release at one revision and offer what
    /// `labels` are served (the default when neither); whether the store
    /// answered.
    async fn reread_labeled(&self, labels: &Labels) -> bool {
        let main_key = self.center.full(&self.key);
        let gray_key = self.center.gray_key(&self.key);
        let read = Txn::new().and_then([RangeRequest::key(main_key), RangeRequest::key(gray_key)]);
        let resp = match self.center.backend().txn(read).await {
            Ok(r) => r,
            Err(e) => {
                self.record_error(ConfigManagerError::Store(Arc::new(e)));
                return false;
            }
        };
        self.status.synced();
        let first = |i: usize| match resp.responses.get(i) {
            Some(TxnOpResponse::Range(r)) => r.kvs.first().cloned(),
            _ => None,
        };
        let (main, gray) = (first(0), first(1));
        let gray = gray.and_then(|kv| match GrayRelease::from_stored(&kv) {
            Ok(g) => g.matches(labels).then_some(g),
            Err(e) => {
                warn!(key = %self.key, error = %e, "unreadable gray release; serving the main value");
                None
            }
        });
        let (from, bytes) = match (gray, main) {
            (Some(g), _) => ((0, g.version), Some(g.value)),
            (None, Some(kv)) => ((kv.mod_revision, 0), Some(kv.value)),
            (None, None) => ((0, 0), None),
        };
        {
            let mut served = self.served_from.lock().unwrap_or_else(|e| e.into_inner());
            if *served == Some(from) {
                return true;
            }
            *served = Some(from);
        }
        match bytes {
            Some(bytes) => self.offer(resp.revision, Some(self.center.decode(&self.key, &bytes))),
            None => self.revert_to_default(),
        }
        true
    }
}
