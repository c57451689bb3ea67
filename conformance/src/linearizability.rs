//! Linearizability: concurrent clients run random single-key operations against a
//! store, the history is recorded with real-time call and return points, and a
//! Wing–Gong search (with Lowe's memoisation, partitioned by key as Porcupine
//! does) looks for an order of the operations that a single register per key
//! could have produced. An operation whose outcome is unknown (its call failed:
//! it may or may not have applied) may take effect at any point after its call,
//! or never.
//!
//! [`run_history`] records a history against any backend; [`check`] checks one.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use coordkit::{Backend, Compare, CompareOp, DeleteRequest, PutRequest, RangeRequest, Txn};

/// One operation on one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Read the key's value.
    Get,
    /// Write the value.
    Put(String),
    /// Delete the key.
    Delete,
    /// Write `new` only if the value is `expected` (`None`: absent).
    CompareAndSet {
        /// The value the key must have.
        expected: Option<String>,
        /// The value written.
        new: String,
    },
}

/// What the store answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A read's value (`None`: absent).
    Read(Option<String>),
    /// A write applied.
    Written,
    /// A compare-and-set's verdict.
    Swapped(bool),
    /// The call failed: it may or may not have applied.
    Unknown,
}

/// One operation of a history, with its real-time interval.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    /// Which client ran it.
    pub client: usize,
    /// The key.
    pub key: String,
    /// What it did.
    pub action: Action,
    /// What the store answered.
    pub outcome: Outcome,
    /// When it was called (a logical clock shared by all clients).
    pub call: u64,
    /// When it returned; for an unknown outcome, when the caller gave up.
    pub ret: u64,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{}..{}] client {} {:?} {:?} -> {:?}",
            self.call, self.ret, self.client, self.key, self.action, self.outcome
        )
    }
}

/// Why a history is not linearizable: the key, and its operations in call order.
#[derive(Clone, Debug)]
pub struct Violation {
    /// The key whose operations admit no single-register order.
    pub key: String,
    /// Every operation on that key, in call order.
    pub operations: Vec<Operation>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "no linearization of the operations on {:?}:", self.key)?;
        for op in &self.operations {
            writeln!(f, "  {op}")?;
        }
        Ok(())
    }
}

/// The register's effect of `op` on `state`: `None` if the op's answer cannot
/// have come from that state.
fn step(state: &Option<String>, op: &Operation) -> Option<Option<String>> {
    let unknown = op.outcome == Outcome::Unknown;
    match (&op.action, &op.outcome) {
        (Action::Get, Outcome::Read(v)) => (v == state).then(|| state.clone()),
        (Action::Get, _) => Some(state.clone()),
        (Action::Put(v), _) => Some(Some(v.clone())),
        (Action::Delete, _) => Some(None),
        (Action::CompareAndSet { expected, new }, outcome) => {
            let holds = expected == state;
            match outcome {
                Outcome::Swapped(true) => holds.then(|| Some(new.clone())),
                Outcome::Swapped(false) => (!holds).then(|| state.clone()),
                _ if unknown && holds => Some(Some(new.clone())),
                _ => Some(state.clone()),
            }
        }
    }
}

/// Check one key's operations (Wing–Gong with memoisation). Unknown outcomes
/// return at "infinity": they may be placed anywhere after their call, and a
/// write that never happened is one placed after everything else.
fn check_key(ops: &[Operation]) -> bool {
    let n = ops.len();
    if n == 0 {
        return true;
    }
    // Events: (time, is_return, op); calls before returns at equal times.
    let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * n);
    for (i, op) in ops.iter().enumerate() {
        events.push((op.call, false, i));
        let ret = if op.outcome == Outcome::Unknown {
            u64::MAX
        } else {
            op.ret
        };
        events.push((ret, true, i));
    }
    events.sort();
    // A doubly linked list over the events, with a head sentinel at index len.
    let len = events.len();
    let head = len;
    let mut next: Vec<usize> = (1..=len).collect::<Vec<_>>();
    next.push(0);
    next[len - 1] = usize::MAX;
    let mut prev: Vec<usize> = (0..len)
        .map(|i| if i == 0 { head } else { i - 1 })
        .collect();
    prev.push(usize::MAX);
    next[head] = if len > 0 { 0 } else { usize::MAX };
    let mut call_at = vec![0; n];
    let mut ret_at = vec![0; n];
    for (idx, (_, is_ret, op)) in events.iter().enumerate() {
        if *is_ret {
            ret_at[*op] = idx;
        } else {
            call_at[*op] = idx;
        }
    }
    let unlink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, i: usize| {
        let (p, q) = (prev[i], next[i]);
        next[p] = q;
        if q != usize::MAX {
            prev[q] = p;
        }
    };
    let relink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, i: usize| {
        let (p, q) = (prev[i], next[i]);
        next[p] = i;
        if q != usize::MAX {
            prev[q] = i;
        }
    };
    let words = n.div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, Option<String>)> = HashSet::new();
    let mut stack: Vec<(usize, Option<String>)> = Vec::new();
    let mut state: Option<String> = None;
    let mut entry = next[head];
    // Only known-outcome operations must be linearized; unknown ones may be
    // left out (they never happened).
    let required: usize = ops.iter().filter(|o| o.outcome != Outcome::Unknown).count();
    let mut done_required = 0;
    loop {
        if done_required == required {
            return true;
        }
        if entry == usize::MAX {
            // Only unknown-outcome returns can be left: they never block.
            match stack.pop() {
                None => return false,
                Some((op, old)) => {
                    state = old;
                    linearized[op / 64] &= !(1 << (op % 64));
                    if ops[op].outcome != Outcome::Unknown {
                        done_required -= 1;
                    }
                    relink(&mut next, &mut prev, ret_at[op]);
                    relink(&mut next, &mut prev, call_at[op]);
                    entry = next[call_at[op]];
                    continue;
                }
            }
        }
        let (_, is_ret, op) = events[entry];
        if !is_ret {
            if let Some(new_state) = step(&state, &ops[op]) {
                let mut bits = linearized.clone();
                bits[op / 64] |= 1 << (op % 64);
                if cache.insert((bits.clone(), new_state.clone())) {
                    stack.push((op, state.clone()));
                    state = new_state;
                    linearized = bits;
                    if ops[op].outcome != Outcome::Unknown {
                        done_required += 1;
                    }
                    unlink(&mut next, &mut prev, call_at[op]);
                    unlink(&mut next, &mut prev, ret_at[op]);
                    entry = next[head];
                    continue;
                }
            }
            entry = next[entry];
        } else if ops[op].outcome == Outcome::Unknown {
            // An unknown operation's "return" is at infinity: it never forces
            // anything; skip it.
            entry = next[entry];
        } else {
            // A known operation returned before being linearized: backtrack.
            match stack.pop() {
                None => return false,
                Some((top, old)) => {
                    state = old;
                    linearized[top / 64] &= !(1 << (top % 64));
                    if ops[top].outcome != Outcome::Unknown {
                        done_required -= 1;
                    }
                    relink(&mut next, &mut prev, ret_at[top]);
                    relink(&mut next, &mut prev, call_at[top]);
                    entry = next[call_at[top]];
                }
            }
        }
    }
}

/// Check a history, key by key: `Err` names the first key with no linearization
/// and lists its operations.
pub fn check(history: &[Operation]) -> Result<(), Violation> {
    let mut by_key: BTreeMap<&str, Vec<Operation>> = BTreeMap::new();
    // A read whose outcome is unknown changes nothing and constrains nothing;
    // left in, it would only multiply the search (each unknown operation may be
    // placed anywhere after its call).
    for op in history.iter().filter(|o| !is_unknown_read(o)) {
        by_key.entry(&op.key).or_default().push(op.clone());
    }
    for (key, mut ops) in by_key {
        ops.sort_by_key(|o| o.call);
        if !check_key(&ops) {
            return Err(Violation {
                key: key.to_string(),
                operations: ops,
            });
        }
    }
    Ok(())
}

fn is_unknown_read(op: &Operation) -> bool {
    op.action == Action::Get && op.outcome == Outcome::Unknown
}

/// Run one action against a backend.
async fn perform(b: &dyn Backend, key: &str, action: &Action) -> Outcome {
    let result = match action {
        Action::Get => b.range(RangeRequest::key(key)).await.map(|r| {
            Outcome::Read(
                r.kvs
                    .first()
                    .map(|kv| String::from_utf8_lossy(&kv.value).into_owned()),
            )
        }),
        Action::Put(v) => b
            .txn(Txn::new().and_then([PutRequest::new(key, v.clone())]))
            .await
            .map(|_| Outcome::Written),
        Action::Delete => b
            .txn(Txn::new().and_then([DeleteRequest::key(key)]))
            .await
            .map(|_| Outcome::Written),
        Action::CompareAndSet { expected, new } => {
            let compare = match expected {
                Some(v) => Compare::value(key, CompareOp::Equal, v.clone()),
                None => Compare::create_revision(key, CompareOp::Equal, 0),
            };
            b.txn(
                Txn::new()
                    .when([compare])
                    .and_then([PutRequest::new(key, new.clone())]),
            )
            .await
            .map(|r| Outcome::Swapped(r.succeeded))
        }
    };
    result.unwrap_or(Outcome::Unknown)
}

/// How long a history client waits after a call that failed.
const AFTER_FAILURE: std::time::Duration = std::time::Duration::from_millis(250);

/// Run `per_client` random operations (seeded) from each of `clients`
/// concurrently, over `keys` keys, and return the history. `between` runs before
/// each operation of client 0 (to inject a fault); an operation that fails is
/// recorded with an unknown outcome, and its client waits 250 ms
/// before the next.
pub async fn run_history(
    clients: Vec<Arc<dyn Backend>>,
    keys: usize,
    per_client: usize,
    seed: u64,
    between: impl Fn(usize) + Send + Sync + 'static,
) -> Vec<Operation> {
    let clock = Arc::new(AtomicU64::new(0));
    let history = Arc::new(Mutex::new(Vec::new()));
    let between = Arc::new(between);
    let mut tasks = Vec::new();
    for (client, backend) in clients.into_iter().enumerate() {
        let (clock, history, between) = (clock.clone(), history.clone(), between.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(seed.wrapping_add(client as u64 * 7919));
            for i in 0..per_client {
                if client == 0 {
                    between(i);
                }
                let key = format!("lin/{}", rng.usize(..keys));
                let value = format!("c{client}-{i}");
                let action = match rng.u8(..10) {
                    0..=3 => Action::Get,
                    4..=6 => Action::Put(value),
                    7 => Action::Delete,
                    _ => Action::CompareAndSet {
                        expected: (rng.u8(..4) != 0)
                            .then(|| format!("c{}-{}", rng.usize(..3), rng.usize(..i.max(1)))),
                        new: value,
                    },
                };
                let call = clock.fetch_add(1, Ordering::SeqCst);
                let outcome = perform(backend.as_ref(), &key, &action).await;
                let ret = clock.fetch_add(1, Ordering::SeqCst);
                let failed = outcome == Outcome::Unknown;
                history.lock().unwrap().push(Operation {
                    client,
                    key,
                    action,
                    outcome,
                    call,
                    ret,
                });
                // Failures come in bursts while a member is down, and each
                // unknown outcome multiplies the checker's search: a client
                // whose call failed waits before its next.
                if failed {
                    tokio::time::sleep(AFTER_FAILURE).await;
                } else if rng.u8(..4) == 0 {
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("a history client panicked");
    }
    let mut h = history.lock().unwrap().clone();
    h.sort_by_key(|o| o.call);
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(call: u64, ret: u64, action: Action, outcome: Outcome) -> Operation {
        Operation {
            client: 0,
            key: "k".into(),
            action,
            outcome,
            call,
            ret,
        }
    }

    #[test]
    fn a_sequential_history_is_linearizable() {
        let h = [
            op(0, 1, Action::Put("a".into()), Outcome::Written),
            op(2, 3, Action::Get, Outcome::Read(Some("a".into()))),
            op(4, 5, Action::Delete, Outcome::Written),
            op(6, 7, Action::Get, Outcome::Read(None)),
        ];
        assert!(check(&h).is_ok());
    }

    /// Reads that failed (a burst while a member is down) are left out: each
    /// could be placed anywhere after its call, and 40 of them would make the
    /// search visit up to 2^40 states. A stale read after them is still caught.
    #[test]
    fn reads_with_unknown_outcomes_do_not_multiply_the_search() {
        let mut h = vec![op(0, 1, Action::Put("a".into()), Outcome::Written)];
        for i in 0..40 {
            h.push(op(2 + i, 100, Action::Get, Outcome::Unknown));
        }
        h.push(op(101, 102, Action::Put("b".into()), Outcome::Written));
        h.push(op(103, 104, Action::Get, Outcome::Read(Some("b".into()))));
        assert!(check(&h).is_ok());
        h.push(op(105, 106, Action::Get, Outcome::Read(Some("a".into()))));
        assert_eq!(check(&h).unwrap_err().operations.len(), 4);
    }

    #[test]
    fn a_stale_read_after_a_completed_write_is_not() {
        let h = [
            op(0, 1, Action::Put("a".into()), Outcome::Written),
            op(2, 3, Action::Put("b".into()), Outcome::Written),
            op(4, 5, Action::Get, Outcome::Read(Some("a".into()))),
        ];
        let v = check(&h).unwrap_err();
        assert_eq!(v.key, "k");
        assert_eq!(v.operations.len(), 3);
    }

    #[test]
    fn overlapping_operations_may_take_either_order() {
        let h = [
            op(0, 5, Action::Put("a".into()), Outcome::Written),
            op(1, 2, Action::Get, Outcome::Read(Some("a".into()))),
            op(3, 4, Action::Get, Outcome::Read(None)),
        ];
        // The put overlaps both reads, but the first saw it and the second did
        // not: no single order explains that.
        assert!(check(&h).is_err());
        let h = [
            op(0, 5, Action::Put("a".into()), Outcome::Written),
            op(1, 2, Action::Get, Outcome::Read(None)),
            op(3, 4, Action::Get, Outcome::Read(Some("a".into()))),
        ];
        assert!(check(&h).is_ok());
    }

    #[test]
    fn an_unknown_write_may_have_applied_or_not() {
        let applied = [
            op(0, 1, Action::Put("a".into()), Outcome::Unknown),
            op(2, 3, Action::Get, Outcome::Read(Some("a".into()))),
        ];
        assert!(check(&applied).is_ok());
        let not = [
            op(0, 1, Action::Put("a".into()), Outcome::Unknown),
            op(2, 3, Action::Get, Outcome::Read(None)),
        ];
        assert!(check(&not).is_ok());
        let lost = [
            op(0, 1, Action::Put("a".into()), Outcome::Written),
            op(2, 3, Action::Get, Outcome::Read(None)),
        ];
        assert!(check(&lost).is_err(), "an acknowledged write that vanished");
    }

    #[test]
    fn compare_and_set_verdicts_must_match_the_state() {
        let cas = |expected: Option<&str>, ok| {
            op(
                2,
                3,
                Action::CompareAndSet {
                    expected: expected.map(str::to_string),
                    new: "n".into(),
                },
                Outcome::Swapped(ok),
            )
        };
        let put = op(0, 1, Action::Put("a".into()), Outcome::Written);
        assert!(check(&[put.clone(), cas(Some("a"), true)]).is_ok());
        assert!(check(&[put.clone(), cas(Some("b"), false)]).is_ok());
        assert!(check(&[put.clone(), cas(Some("b"), true)]).is_err());
        assert!(check(&[put, cas(None, true)]).is_err());
    }
}
