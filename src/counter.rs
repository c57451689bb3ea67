//! Distributed counters: a signed 64-bit integer per name, exact under concurrency.

use std::sync::Arc;

use futures::StreamExt;

use crate::coordinator::CoordinatorInner;
use crate::queue_name::validate_name;
use crate::{
    Backend, Compare, CompareOp, Error, KeyValue, PutRequest, RangeRequest, Result, Revision, Txn,
    WatchRequest,
};

/// Distributed counters of one [`Coordinator`](crate::Coordinator) (see
/// [`Coordinator::counter`](crate::Coordinator::counter)), like Curator's
/// `DistributedAtomicLong`.
///
/// A counter named `x` is the key `<namespace>counter/x` holding the number in
/// decimal text (so `etcdctl get` shows it); a missing key reads as 0.
///
/// # Behavior
/// - `add` is a compare-and-set on the key's mod revision, repeated until it
///   lands: concurrent adds are exact (none lost, none doubled).
/// - Each write also puts a random tag in `<namespace>counter-writer/x`, in the
///   same transaction. A write whose answer was lost (a retryable error) is never
///   blindly sent again: the counter's first change after the value it read is
///   looked up (a watch from that revision) with the tag as of that revision. If
///   the change was this write's, the call succeeds; if another client's, the
///   add is computed again; if the store cannot tell (unreachable, or history
///   compacted meanwhile), the call fails with `Unavailable` saying the outcome
///   is unknown, rather than risk adding twice.
/// - Overflow past `i64` is `InvalidArgument` naming `delta`; a key holding
///   something other than a decimal `i64` is a `Codec` error.
/// - Cancelling a call leaves the counter either changed by exactly this add or
///   not at all.
///
/// # Example
///
/// ```
/// # use std::{sync::Arc, time::Duration};
/// # use coordkit::Coordinator;
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> coordkit::Result<()> {
/// let coordinator = Coordinator::new(Arc::new(coordkit_memory::MemoryBackend::new()));
/// let counter = coordinator.counter();
/// assert_eq!(counter.add("visits", 1).await?, 1);
/// assert_eq!(counter.add("visits", 41).await?, 42);
/// assert!(counter.compare_and_set("visits", 42, 0).await?);
/// assert_eq!(counter.get("visits").await?, 0);
/// # coordinator.close().await }
/// ```
#[derive(Clone)]
pub struct CounterService {
    coord: Arc<CoordinatorInner>,
}

impl CounterService {
    pub(crate) fn new(coord: Arc<CoordinatorInner>) -> Self {
        CounterService { coord }
    }

    fn key(&self, name: &str) -> Result<String> {
        validate_name(name)?;
        Ok(format!("{}counter/{name}", self.coord.namespace))
    }

    /// The counter's value (0 if it was never written).
    pub async fn get(&self, name: &str) -> Result<i64> {
        let key = self.key(name)?;
        let backend = &self.coord.backend;
        let kv = self
            .coord
            .retry
            .run("read counter", |_| {
                let key = key.clone();
                async move { crate::BackendExt::get(backend.as_ref(), key).await }
            })
            .await?;
        Ok(parse(&key, kv.as_ref())?.0)
    }

    /// Add `delta` (may be negative) and return the new value.
    pub async fn add(&self, name: &str, delta: i64) -> Result<i64> {
        let key = self.key(name)?;
        self.update(&key, |n| {
            n.checked_add(delta).map(Some).ok_or_else(|| {
                Error::invalid("delta", format!("{n} + {delta} overflows a 64-bit counter"))
            })
        })
        .await
        .map(|(_, new)| new)
    }

    /// Set the counter to `new` only if it is `expected` now: whether it was set.
    pub async fn compare_and_set(&self, name: &str, expected: i64, new: i64) -> Result<bool> {
        let key = self.key(name)?;
        let (swapped, _) = self
            .update(&key, |n| Ok((n == expected).then_some(new)))
            .await?;
        Ok(swapped)
    }

    /// Set the counter to `value` whatever it was; returns the previous value.
    pub async fn set(&self, name: &str, value: i64) -> Result<i64> {
        let key = self.key(name)?;
        let mut previous = 0;
        self.update(&key, |n| {
            previous = n;
            Ok(Some(value))
        })
        .await?;
        Ok(previous)
    }

    /// Read, compute the next value (`None`: leave it), write it if nothing
    /// changed meanwhile; repeat on a conflict. Returns (written, value now).
    async fn update(
        &self,
        key: &str,
        mut next: impl FnMut(i64) -> Result<Option<i64>>,
    ) -> Result<(bool, i64)> {
        let backend = &self.coord.backend;
        let retry = &self.coord.retry;
        let writer = writer_key(&self.coord.namespace, key);
        let mut failures = 0;
        loop {
            let read = RangeRequest::key(key);
            let resp = retry
                .run("read counter", |_| backend.range(read.clone()))
                .await?;
            let (current, base) = parse(key, resp.kvs.first())?;
            let Some(new) = next(current)? else {
                return Ok((false, current));
            };
            // The writer key, written in the same revision, tells this write
            // apart from any other if its answer is lost.
            let tag = format!("{:016x}", fastrand::u64(..));
            let write = Txn::new()
                .when([Compare::mod_revision(key, CompareOp::Equal, base)])
                .and_then([
                    PutRequest::new(key, new.to_string()),
                    PutRequest::new(writer.as_str(), tag.clone()),
                ]);
            match backend.txn(write).await {
                Ok(r) if r.succeeded => return Ok((true, new)),
                Ok(_) => continue, // someone else wrote first: compute again
                Err(e) if e.is_retryable() => {
                    failures += 1;
                    match landed(backend, key, &writer, base, resp.revision, tag.as_bytes()).await {
                        Some(false) if failures < retry.max_attempts.max(1) => {
                            tokio::time::sleep(retry.jittered_delay(failures)).await;
                        }
                        Some(false) => return Err(e),
                        Some(true) => return Ok((true, new)),
                        None => {
                            return Err(Error::unavailable(format!(
                                "the outcome of the write to {key} is unknown (its answer was lost: {e}); read the counter before trying again"
                            )))
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Whether a write over the key's state at `base` (read at store revision
/// `read_at`) landed: the first change of the counter after the read is the one
/// that won the compare on `base`, and it is this write's if the writer key
/// changed at that same revision to this write's `tag`. `None` when the store
/// cannot be asked (or history was compacted meanwhile).
async fn landed(
    backend: &Arc<dyn Backend>,
    key: &str,
    writer: &str,
    base: Revision,
    read_at: Revision,
    tag: &[u8],
) -> Option<bool> {
    let now = backend.range(RangeRequest::key(key)).await.ok()?;
    if now.kvs.first().map_or(0, |kv| kv.mod_revision) == base {
        return Some(false);
    }
    let mut watch = backend
        .watch(WatchRequest::key(key).from_revision(read_at + 1))
        .await
        .ok()?;
    let first = tokio::time::timeout(std::time::Duration::from_secs(5), watch.next())
        .await
        .ok()??
        .ok()?;
    let won_at = first.revision;
    let writer_then = backend
        .range(RangeRequest::key(writer).at_revision(won_at))
        .await
        .ok()?;
    Some(
        writer_then
            .kvs
            .first()
            .is_some_and(|kv| kv.mod_revision == won_at && kv.value == tag),
    )
}

/// The key naming the last write of counter `key`: `<namespace>counter-writer/<name>`.
fn writer_key(namespace: &str, key: &str) -> String {
    let name = key.rsplit('/').next().unwrap_or(key);
    format!("{namespace}counter-writer/{name}")
}

/// The counter's value and the key's mod revision (0 when missing).
fn parse(key: &str, kv: Option<&KeyValue>) -> Result<(i64, Revision)> {
    let Some(kv) = kv else {
        return Ok((0, 0));
    };
    let text = std::str::from_utf8(&kv.value).unwrap_or("");
    let n = text.trim().parse::<i64>().map_err(|_| Error::Codec {
        key: key.to_string(),
        reason: format!(
            "a counter holds a decimal 64-bit integer, found {:?}",
            String::from_utf8_lossy(&kv.value)
        ),
    })?;
    Ok((n, kv.mod_revision))
}

impl std::fmt::Debug for CounterService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CounterService")
            .field("namespace", &self.coord.namespace)
            .finish_non_exhaustive()
    }
}
