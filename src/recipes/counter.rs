//! Distributed counters: a signed 64-bit integer per name, exact under concurrency.

use std::sync::Arc;

use crate::backend::{
    Backend, Compare, CompareOp, KeyValue, PutRequest, RangeRequest, Revision, Txn,
};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::keys::KeyLayout;
use crate::queue_name::validate_name;

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
/// - Each write also puts a tag naming the call and the try in
///   `<namespace>counter-writer/x`, in the same transaction. A try whose answer
///   never came (lost, or still in flight: it may apply late) is never taken for
///   "not applied": the counter's first change after the value it read is looked
///   up (a watch from that revision) with the tag as of that revision. If the
///   change was this call's, the call succeeds with that try's value; if another
///   client's, that try can never apply and the add is computed again; while the
///   counter has not moved, the next try compares on the same state, so at most
///   one try ever applies.
/// - When the tries run out while one is still in doubt (or the store cannot
///   tell: unreachable, history compacted), the call fails with
///   `OutcomeUnknown`: the add may or may not have applied, exactly once at
///   most. Read the counter before adding again. Any other error means the
///   counter was not changed by this call.
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
    coord: Arc<Context>,
}

impl CounterService {
    pub(crate) fn new(coord: Arc<Context>) -> Self {
        CounterService { coord }
    }

    fn key(&self, name: &str) -> Result<String> {
        validate_name(name)?;
        Ok(self.coord.keys.counter(name))
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
                async move { crate::backend::BackendExt::get(backend.as_ref(), key).await }
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
    ///
    /// Every try tags its write with this call's identity; a try whose answer
    /// never came stays in doubt until the counter's first change after its read
    /// shows whose it was (see `Doubts`), so a late or held write is never
    /// counted twice.
    async fn update(
        &self,
        key: &str,
        mut next: impl FnMut(i64) -> Result<Option<i64>>,
    ) -> Result<(bool, i64)> {
        let backend = &self.coord.backend;
        let retry = &self.coord.retry;
        let mut doubts = Doubts {
            writer: writer_key(&self.coord.keys, key),
            call: format!("{:016x}", fastrand::u64(..)),
            tries: Vec::new(),
        };
        let mut backoff = retry.backoff();
        loop {
            if let Some(new) = doubts.resolve(backend.as_ref(), key).await {
                return Ok((true, new));
            }
            let read = RangeRequest::key(key);
            let resp = match retry
                .run("read counter", |_| backend.range(read.clone()))
                .await
            {
                Ok(resp) => resp,
                Err(e) => return Err(doubts.unknown_after(e)),
            };
            let (current, base) = parse(key, resp.kvs.first())?;
            // The counter moved since a try in doubt read it: that change settles
            // the try (it is the only one its compare allowed), and it may be the
            // try itself, applied late. Never write on it before knowing whose it
            // was; if the store cannot say (unreachable, history compacted), the
            // outcome is unknown.
            if doubts.moved_since_a_try(base) {
                if let Some(new) = doubts.resolve(backend.as_ref(), key).await {
                    return Ok((true, new));
                }
                if doubts.moved_since_a_try(base) {
                    return Err(doubts.unknown_after(Error::unavailable(
                        "the store cannot say whose change followed a write in doubt",
                    )));
                }
            }
            let Some(new) = next(current)? else {
                return Ok((false, current));
            };
            // The writer key, written in the same revision, names this try.
            let write = Txn::new()
                .when([Compare::mod_revision(key, CompareOp::Equal, base)])
                .and_then([
                    PutRequest::new(key, new.to_string()),
                    PutRequest::new(doubts.writer.as_str(), doubts.tag(doubts.tries.len())),
                ]);
            match backend.txn(write).await {
                Ok(r) if r.succeeded => return Ok((true, new)),
                Ok(_) => continue, // someone else wrote first, or a try of ours in doubt
                Err(e) if e.is_retryable() => {
                    doubts.tries.push(Try {
                        read_at: resp.revision,
                        new,
                        settled: false,
                    });
                    let wait = backoff.failed();
                    if backoff.exhausted() {
                        return match doubts.resolve(backend.as_ref(), key).await {
                            Some(new) => Ok((true, new)),
                            None => Err(doubts.unknown_after(e)),
                        };
                    }
                    tokio::time::sleep(wait).await;
                }
                Err(e) => return Err(doubts.unknown_after(e)),
            }
        }
    }
}

/// The tries of one counter update whose answers never came.
struct Doubts {
    /// The counter's writer key.
    writer: String,
    /// This call's identity; a try's tag is `<call>-<try>`.
    call: String,
    tries: Vec<Try>,
}

/// One try in doubt: it compared on the state read at store revision `read_at`
/// and would have written `new`.
struct Try {
    read_at: Revision,
    new: i64,
    /// Known: it did not apply, and never will.
    settled: bool,
}

impl Doubts {
    fn tag(&self, i: usize) -> String {
        format!("{}-{i}", self.call)
    }

    /// The value a try of this call wrote, if one is seen to have applied. Each
    /// try in doubt is settled by the counter's first change after its read: that
    /// change is the only one its compare allowed, and it is this call's if the
    /// writer key took one of its tags at the same revision. A try whose read the
    /// counter has not moved from may still apply: it stays in doubt, and the next
    /// try compares on the same state, so at most one of them ever applies.
    async fn resolve(&mut self, backend: &dyn Backend, key: &str) -> Option<i64> {
        for i in 0..self.tries.len() {
            if self.tries[i].settled {
                continue;
            }
            let read_at = self.tries[i].read_at;
            let Ok(Some(at)) = crate::ambiguous::first_change_after(backend, key, read_at).await
            else {
                continue; // not applied yet, or the store cannot tell now
            };
            let writer = RangeRequest::key(self.writer.as_str()).at_revision(at);
            let Ok(then) = backend.range(writer).await else {
                continue;
            };
            let tag = then
                .kvs
                .first()
                .filter(|kv| kv.mod_revision == at)
                .map(|kv| kv.value.clone());
            let ours =
                (0..self.tries.len()).find(|&j| tag.as_deref() == Some(self.tag(j).as_bytes()));
            match ours {
                Some(j) => return Some(self.tries[j].new),
                None => self.tries[i].settled = true, // another client's change came first
            }
        }
        None
    }

    /// Whether a try still in doubt read the counter before revision `base`
    /// (the counter's last change): its fate is then decided, but not yet known.
    fn moved_since_a_try(&self, base: Revision) -> bool {
        self.tries.iter().any(|t| !t.settled && t.read_at < base)
    }

    /// `e` as it stands, or `OutcomeUnknown` when a try may still apply.
    fn unknown_after(&self, e: Error) -> Error {
        if self.tries.iter().all(|t| t.settled) {
            return e;
        }
        crate::ambiguous::outcome_unknown(
            "counter update",
            format!(
                "an earlier write's answer was lost and it may still apply ({e}); \
                 read the counter before writing again"
            ),
        )
    }
}

/// The key naming the last write of counter `key`: `<namespace>counter-writer/<name>`.
fn writer_key(keys: &KeyLayout, key: &str) -> String {
    let name = key.rsplit('/').next().unwrap_or(key);
    keys.counter_writer(name)
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
            .field("namespace", &self.coord.keys.namespace())
            .finish_non_exhaustive()
    }
}
