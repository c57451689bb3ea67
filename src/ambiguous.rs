//! Writes whose answer never came: telling one's own earlier write from
//! someone else's, from the store's history.
//!
//! A store applies a write it has received even when the caller timed out or went
//! away, so a write that failed with a retryable error may have applied already
//! (a lost answer), may apply a moment later (a late apply), or seconds later
//! (a held write). A recipe that retries such a write compares on the state it
//! read: at most one of its tries can then apply, and it is the first change of
//! the compared key after that read. [`first_change_after`] finds that change; the
//! recipe then asks whether it carries its own identity (a tag, a value, a lease).

use std::time::Duration;

use futures::StreamExt;

use crate::backend::{Backend, RangeRequest, Revision, WatchRequest};
use crate::error::{Error, Result};

/// How long to wait for the watch to deliver a change the store already holds.
const PATIENCE: Duration = Duration::from_secs(5);

/// The revision of the first change of `key` after store revision `read_at`
/// (a put or a delete), from the store's history; `None` while the key is as it
/// was at `read_at` — then a write compared on that state may still apply.
///
/// Errors: `Compacted` when history no longer reaches `read_at`; store errors.
/// A key that was absent at `read_at` and is absent now counts as unchanged.
pub(crate) async fn first_change_after(
    backend: &dyn Backend,
    key: &str,
    read_at: Revision,
) -> Result<Option<Revision>> {
    let now = backend.range(RangeRequest::key(key)).await?;
    match now.kvs.first() {
        Some(kv) if kv.mod_revision <= read_at => return Ok(None),
        Some(_) => {}
        None => {
            let then = backend
                .range(RangeRequest::key(key).at_revision(read_at.max(1)))
                .await?;
            if then.kvs.is_empty() {
                return Ok(None);
            }
        }
    }
    // It changed since: a watch from just after the read delivers that change first.
    let mut watch = backend
        .watch(WatchRequest::key(key).from_revision(read_at + 1))
        .await?;
    match tokio::time::timeout(PATIENCE, watch.next()).await {
        Ok(Some(Ok(resp))) => Ok(Some(resp.revision)),
        Ok(Some(Err(e))) => Err(e),
        Ok(None) => Err(Error::unavailable(format!(
            "the watch of {key} ended before it delivered a change the store holds"
        ))),
        Err(_) => Err(Error::Timeout {
            operation: "reading a key's history",
        }),
    }
}

/// The error for a write that may or may not have applied, after `why`.
pub(crate) fn outcome_unknown(operation: &'static str, why: impl std::fmt::Display) -> Error {
    Error::OutcomeUnknown {
        operation,
        reason: why.to_string(),
    }
}
