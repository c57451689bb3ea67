//! A reference model of the primitive, and the case that holds a backend to it on
//! random operation sequences drawn with proptest.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use coordkit::{
    Backend, BackendExt, Compare, CompareOp, DeleteRequest, Error, EventKind, KeyValue, LeaseId,
    Namespaced, PutRequest, RangeRequest, Result, Revision, Txn, TxnOpResponse, WatchRequest,
};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use tokio::time::Instant;

use crate::context::next_response;
use crate::Ctx;

/// How long after its deadline a lease may still be alive: etcd checks expiry
/// every 500 ms, so it ends a lease up to about that late; the model allows 1 s.
pub const EXPIRY_TOLERANCE: Duration = Duration::from_secs(1);

const KEYS: [&str; 5] = ["a", "ab", "b", "c/1", "c/2"];
const PREFIXES: [&str; 3] = ["a", "c/", "z"];

/// One random step.
#[derive(Clone, Debug)]
enum Op {
    Put {
        key: usize,
        value: u8,
        lease: Option<usize>,
    },
    Delete {
        key: usize,
    },
    DeletePrefix {
        prefix: usize,
    },
    /// Put if the key's version equals `version`, else delete the key.
    CasVersion {
        key: usize,
        version: i64,
        value: u8,
    },
    Grant {
        ttl: i64,
    },
    Revoke {
        lease: usize,
    },
    KeepAlive {
        lease: usize,
    },
    /// Let time pass (only on a paused clock).
    Advance {
        millis: u64,
    },
}

fn op_strategy(timed: bool) -> BoxedStrategy<Op> {
    let k = 0..KEYS.len();
    let basic = prop_oneof![
        4 => (k.clone(), any::<u8>(), proptest::option::of(0usize..4))
            .prop_map(|(key, value, lease)| Op::Put { key, value, lease }),
        2 => k.clone().prop_map(|key| Op::Delete { key }),
        1 => (0..PREFIXES.len()).prop_map(|prefix| Op::DeletePrefix { prefix }),
        2 => (k, 0i64..4, any::<u8>())
            .prop_map(|(key, version, value)| Op::CasVersion { key, version, value }),
        1 => (1i64..4).prop_map(|ttl| Op::Grant { ttl }),
        1 => (0usize..4).prop_map(|lease| Op::Revoke { lease }),
        1 => (0usize..4).prop_map(|lease| Op::KeepAlive { lease }),
    ];
    if timed {
        prop_oneof![8 => basic, 1 => (100u64..2500).prop_map(|millis| Op::Advance { millis })]
            .boxed()
    } else {
        basic.boxed()
    }
}

struct ModelLease {
    id: LeaseId,
    ttl: i64,
    deadline: Instant,
    alive: bool,
}

/// The reference: a plain map and a list of leases; revisions are the backend's.
#[derive(Default)]
struct Model {
    kvs: BTreeMap<Vec<u8>, KeyValue>,
    leases: Vec<ModelLease>,
    last_revision: Revision,
}

impl Model {
    fn lease(&self, i: usize) -> Option<&ModelLease> {
        if self.leases.is_empty() {
            None
        } else {
            self.leases.get(i % self.leases.len())
        }
    }

    fn end_lease(&mut self, id: LeaseId) {
        self.kvs.retain(|_, kv| kv.lease != Some(id));
        if let Some(l) = self.leases.iter_mut().find(|l| l.id == id) {
            l.alive = false;
        }
    }

    /// Ends the leases past their deadline. A lease may end any time within
    /// [`EXPIRY_TOLERANCE`] after its deadline, so for one inside that window the
    /// backend decides (asked with `lease_time_to_live`); past the window it must
    /// have ended, and before its deadline it must not have.
    async fn expire(&mut self, b: &Arc<dyn Backend>, now: Instant) -> Result<()> {
        let mut ended = Vec::new();
        for l in self.leases.iter().filter(|l| l.alive && l.deadline <= now) {
            if now >= l.deadline + EXPIRY_TOLERANCE {
                ended.push(l.id);
                continue;
            }
            match b.lease_time_to_live(l.id).await {
                Err(Error::LeaseNotFound { .. }) => ended.push(l.id),
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
        for id in ended {
            self.end_lease(id);
        }
        Ok(())
    }

    fn put(&mut self, key: &[u8], value: Vec<u8>, lease: Option<LeaseId>, rev: Revision) {
        let prev = self.kvs.get(key);
        let kv = KeyValue {
            key: key.to_vec(),
            value,
            create_revision: prev.map_or(rev, |p| p.create_revision),
            mod_revision: rev,
            version: prev.map_or(1, |p| p.version + 1),
            lease,
        };
        self.kvs.insert(key.to_vec(), kv);
    }

    fn new_revision(&mut self, rev: Revision) {
        assert!(
            rev > self.last_revision,
            "write revision {rev} not above {}",
            self.last_revision
        );
        self.last_revision = rev;
    }
}

async fn apply(b: &Arc<dyn Backend>, m: &mut Model, op: &Op, timed: bool) -> Result<()> {
    if timed {
        m.expire(b, Instant::now()).await?;
    }
    match op {
        Op::Put { key, value, lease } => {
            let key = KEYS[*key].as_bytes();
            let lease = lease.and_then(|i| m.lease(i)).map(|l| (l.id, l.alive));
            let mut put = PutRequest::new(key, vec![*value]);
            put.lease = lease.map(|(id, _)| id);
            let result = b.txn(Txn::new().and_then([put])).await;
            match (lease, result) {
                (Some((_, false)), Err(Error::LeaseNotFound { .. })) => {}
                (Some((_, false)), other) => panic!("put on an ended lease gave {other:?}"),
                (_, Ok(r)) => {
                    m.new_revision(r.revision);
                    m.put(key, vec![*value], lease.map(|(id, _)| id), r.revision);
                }
                (_, Err(e)) => return Err(e),
            }
        }
        Op::Delete { key } => {
            let name = KEYS[*key];
            let deleted = b.delete_range(DeleteRequest::key(name)).await?;
            let expected = m.kvs.remove(name.as_bytes()).is_some() as i64;
            assert_eq!(deleted, expected, "delete of {name}");
        }
        Op::DeletePrefix { prefix } => {
            let p = PREFIXES[*prefix].as_bytes();
            let deleted = b.delete_prefix(p).await?;
            let before = m.kvs.len();
            m.kvs.retain(|k, _| !k.starts_with(p));
            assert_eq!(deleted, (before - m.kvs.len()) as i64, "prefix delete");
        }
        Op::CasVersion {
            key,
            version,
            value,
        } => {
            let key = KEYS[*key].as_bytes();
            let holds = m.kvs.get(key).map_or(0, |kv| kv.version) == *version;
            let r = b
                .txn(
                    Txn::new()
                        .when([Compare::version(key, CompareOp::Equal, *version)])
                        .and_then([PutRequest::new(key, vec![*value])])
                        .or_else([DeleteRequest::key(key)]),
                )
                .await?;
            assert_eq!(r.succeeded, holds, "version compare");
            if holds {
                m.new_revision(r.revision);
                m.put(key, vec![*value], None, r.revision);
            } else {
                let existed = m.kvs.remove(key).is_some() as i64;
                match &r.responses[0] {
                    TxnOpResponse::Delete { deleted, .. } => assert_eq!(*deleted, existed),
                    other => panic!("expected a delete result, got {other:?}"),
                }
            }
        }
        Op::Grant { ttl } => {
            let ttl = if timed { *ttl } else { 600 };
            let ttl = ttl.max(b.limits().min_lease_ttl);
            let g = b.lease_grant(ttl).await?;
            m.leases.push(ModelLease {
                id: g.id,
                ttl,
                deadline: Instant::now() + Duration::from_secs(ttl as u64),
                alive: true,
            });
        }
        Op::Revoke { lease } => {
            let Some((id, alive)) = m.lease(*lease).map(|l| (l.id, l.alive)) else {
                return Ok(());
            };
            match (alive, b.lease_revoke(id).await) {
                (true, Ok(())) => m.end_lease(id),
                (false, Err(Error::LeaseNotFound { .. })) => {}
                (_, other) => panic!("revoke of lease alive={alive} gave {other:?}"),
            }
        }
        Op::KeepAlive { lease } => {
            let Some((id, alive, ttl)) = m.lease(*lease).map(|l| (l.id, l.alive, l.ttl)) else {
                return Ok(());
            };
            match (alive, b.lease_keep_alive(id).await) {
                (true, Ok(t)) => {
                    assert_eq!(t, ttl);
                    let l = m.leases.iter_mut().find(|l| l.id == id).unwrap();
                    l.deadline = Instant::now() + Duration::from_secs(ttl as u64);
                }
                (false, Err(Error::LeaseNotFound { .. })) => {}
                (_, other) => panic!("keep-alive of lease alive={alive} gave {other:?}"),
            }
        }
        Op::Advance { millis } => {
            tokio::time::sleep(Duration::from_millis(*millis)).await;
            m.expire(b, Instant::now()).await?;
        }
    }
    Ok(())
}

/// Draw the sequences up front (proptest's runner is not `Send`), from a fixed seed
/// so that every run checks the same sequences.
fn draw(cases: usize, steps: usize, timed: bool) -> Vec<Vec<Op>> {
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    );
    let strategy = proptest::collection::vec(op_strategy(timed), steps);
    (0..cases)
        .map(|_| {
            strategy
                .new_tree(&mut runner)
                .expect("strategy draws a value")
                .current()
        })
        .collect()
}

async fn check_state(b: &Arc<dyn Backend>, m: &Model, after: &Op) -> Result<()> {
    let actual = b.range(RangeRequest::prefix("")).await?.kvs;
    let expected: Vec<KeyValue> = m.kvs.values().cloned().collect();
    assert_eq!(
        actual, expected,
        "state differs from the model after {after:?}"
    );
    Ok(())
}

/// Random sequences of puts, deletes, transactions, lease grants, revokes,
/// keep-alives (and, on a paused clock, time passing) give the responses and the
/// final state a reference model predicts; a watch replaying the whole run rebuilds
/// that final state. The paused-clock run draws 64 sequences of 40 steps; a real
/// clock 8 of 25 (real leases do not expire mid-run there).
pub async fn random_operations_match_the_model(ctx: Ctx) -> Result<()> {
    let timed = ctx.paused_clock();
    let (cases, steps) = if timed { (64, 40) } else { (8, 25) };
    for (case, ops) in draw(cases, steps, timed).into_iter().enumerate() {
        let b: Arc<dyn Backend> = Arc::new(Namespaced::new(ctx.backend(), format!("{case}/")));
        let start = b.current_revision().await?;
        let mut m = Model {
            last_revision: start,
            ..Model::default()
        };
        for op in &ops {
            apply(&b, &mut m, op, timed).await?;
            check_state(&b, &m, op).await?;
        }
        // Replay the run through a watch and rebuild the final state from its events.
        let end = b.current_revision().await?;
        let mut rebuilt: BTreeMap<Vec<u8>, KeyValue> = BTreeMap::new();
        if end > start {
            let mut w = b
                .watch(WatchRequest::prefix("").from_revision(start + 1))
                .await?;
            let mut last = start;
            // The model knows the revision of its last put, not of later deletes or
            // lease expiries; and on a shared store `end` may belong to another
            // case's write that this watch never sees. So read until the last put is
            // in and the rebuilt state matches, or the store's revision is reached.
            while last < m.last_revision || rebuilt != m.kvs {
                let r = next_response(&mut w, "the replay of the run").await?;
                assert!(r.revision > last);
                last = r.revision;
                for e in r.events {
                    match e.kind {
                        EventKind::Put => {
                            rebuilt.insert(e.kv.key.clone(), e.kv);
                        }
                        EventKind::Delete => {
                            rebuilt.remove(&e.kv.key);
                        }
                    }
                }
                if last >= end {
                    break;
                }
            }
        }
        assert_eq!(rebuilt, m.kvs, "watch replay of case {case} ({ops:?})");
        for l in m.leases.iter().filter(|l| l.alive) {
            let _ = b.lease_revoke(l.id).await;
        }
    }
    Ok(())
}
