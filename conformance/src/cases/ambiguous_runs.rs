//! Seeded random runs: several tasks on two coordinators mix counter adds,
//! fenced writes under a lock, semaphore permits, config batches and a double
//! barrier, while writes of one coordinator are answered lost, late or held at
//! random — and, in the fault cases, that coordinator is also partitioned, its
//! watches cut and its session's lease expired, and the store compacted; the
//! invariants hold at the end of every run. A run is a seed: on a paused clock (the memory backend)
//! the same seed replays the same run (`COORD_SEEDS=17` runs seed 17 alone,
//! `COORD_SEEDS=0-499` five hundred of them; `scripts/seeds.sh` does that).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coordkit::testing::{AmbiguousWrites, Faults, Intercepted, WriteFault};
use coordkit::{
    Backend, BackendExt, Compare, CompareOp, ConfigChange, Coordinator, Error, Namespaced,
    PutRequest, Result, Txn,
};

use crate::Ctx;

/// The seeds run: `COORD_SEEDS` (`17`, `0-499`, `3,9,12`), else a few.
fn seeds() -> Vec<u64> {
    let Ok(spec) = std::env::var("COORD_SEEDS") else {
        return (0..6).collect();
    };
    spec.split(',')
        .flat_map(|part| match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (a.trim().parse().unwrap_or(0), b.trim().parse().unwrap_or(0));
                (a..=b).collect::<Vec<u64>>()
            }
            None => part.trim().parse().ok().into_iter().collect(),
        })
        .collect()
}

/// What the tasks of one run share: the keys of the semaphore's permits held
/// now and the most held at once (counting only holders whose key the store
/// still has: a holder whose lease expired holds nothing), the lock's last
/// fencing token, and whether tokens ever went backwards.
#[derive(Default, Debug)]
struct Watched {
    permit_keys: Mutex<Vec<String>>,
    most_permits_held: AtomicUsize,
    last_token: Mutex<i64>,
    token_went_back: AtomicBool,
}

/// What the tasks of one run saw.
#[derive(Default, Debug)]
struct Tally {
    adds_ok: i64,
    adds_unknown: i64,
    fenced_ok: i64,
    fenced_unknown: i64,
}

/// Random runs keep every invariant: the counter is within the adds that
/// succeeded and those whose outcome is unknown or that were cancelled (never
/// above: no add counted twice); the lock-fenced counter likewise (no fenced
/// write lost or doubled, no two holders writing on the same base); the lock's
/// fencing tokens only grow; a 2-permit semaphore never has more than 2
/// holders; every config batch applied whole (its two keys always equal);
/// a double barrier that lets one participant through lets the other through
/// too (or the other failed); after `close()` no key on a lease is left.
pub async fn ambiguous_random_runs_keep_every_invariant(ctx: Ctx) -> Result<()> {
    each_seed(&ctx, false).await
}

/// The same runs, and meanwhile the faulty coordinator's client is partitioned
/// for a moment, its watches cut and its session's lease expired, and the store
/// compacted, at random times: the same invariants hold.
pub async fn ambiguous_random_runs_under_partitions_compaction_and_expiry(ctx: Ctx) -> Result<()> {
    let _compaction = ctx.compaction().await;
    each_seed(&ctx, true).await
}

async fn each_seed(ctx: &Ctx, chaos: bool) -> Result<()> {
    for seed in seeds() {
        run(ctx, seed, chaos).await.map_err(|e| {
            Error::invalid(
                "seed",
                format!("seed {seed} (COORD_SEEDS={seed} replays it): {e}"),
            )
        })?;
    }
    Ok(())
}

async fn run(ctx: &Ctx, seed: u64, chaos: bool) -> Result<()> {
    fastrand::seed(seed);
    let prefix = format!("seed-{seed}{}/", if chaos { "-chaos" } else { "" });
    let store: Arc<dyn Backend> = Arc::new(Namespaced::new(ctx.backend(), prefix.clone()));
    // Under chaos the faulty coordinator has a client of its own, so that a
    // partition cuts it alone.
    let (faulty_store, faults) = if chaos {
        let client = ctx.client().await;
        let faults = client.faults.expect("the fault cases need Faults");
        let own: Arc<dyn Backend> = Arc::new(Namespaced::new(client.backend, prefix));
        (own, Some(faults))
    } else {
        (store.clone(), None)
    };
    let writes = Arc::new(Intercepted::new(faulty_store, AmbiguousWrites::new()));
    let faulty = Coordinator::new(writes.clone() as Arc<dyn Backend>);
    let plain = Coordinator::new(store.clone());
    let ttl = ctx.recipe_ttl();
    let watched = Arc::new(Watched::default());
    let done = Arc::new(AtomicBool::new(false));
    let chaos_task = faults.map(|faults| {
        let (faulty, store, done) = (faulty.clone(), ctx.backend(), done.clone());
        tokio::spawn(stir(faults, faulty, store, ttl, seed, done))
    });
    let gate = tokio::spawn(double_barrier_rounds(faulty.clone(), plain.clone(), ttl));
    let mut tasks = Vec::new();
    for task in 0..4u64 {
        let c = if task == 3 {
            plain.clone()
        } else {
            faulty.clone()
        };
        let writes = writes.clone();
        let watched = watched.clone();
        let store = store.clone();
        let mut rng = fastrand::Rng::with_seed(seed.wrapping_mul(31).wrapping_add(task));
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            for step in 0..6u64 {
                if task != 3 && rng.u8(..3) == 0 {
                    let fault =
                        [WriteFault::Lost, WriteFault::Late, WriteFault::Held][rng.usize(..3)];
                    writes.intercept().arm(rng.u64(1..=3), fault);
                }
                match rng.u8(..5) {
                    0 => match c.counter().add("n", 1).await {
                        Ok(_) => tally.adds_ok += 1,
                        Err(Error::OutcomeUnknown { .. }) => tally.adds_unknown += 1,
                        Err(_) => {}
                    },
                    // An add cancelled at a random moment: it may or may not apply.
                    1 => {
                        let patience = Duration::from_millis(rng.u64(0..20));
                        match tokio::time::timeout(patience, c.counter().add("n", 1)).await {
                            Ok(Ok(_)) => tally.adds_ok += 1,
                            Ok(Err(Error::OutcomeUnknown { .. })) | Err(_) => {
                                tally.adds_unknown += 1
                            }
                            Ok(Err(_)) => {}
                        }
                    }
                    2 => fenced_write(&c, ttl, &mut tally, &watched).await,
                    3 => hold_a_permit(&c, store.as_ref(), ttl, &watched).await,
                    _ => {
                        let v = (task * 100 + step) as i64;
                        let batch = || -> Result<Vec<ConfigChange>> {
                            Ok(vec![
                                ConfigChange::set("a", &v)?,
                                ConfigChange::set("b", &v)?,
                            ])
                        };
                        if let Ok(changes) = batch() {
                            let _ = c.config().update_many(changes).await;
                        }
                    }
                }
            }
            tally
        }));
    }
    let mut tally = Tally::default();
    let gate = gate
        .await
        .map_err(|e| Error::invalid("task", e.to_string()));
    let joined = futures::future::join_all(tasks).await;
    done.store(true, Ordering::SeqCst);
    if let Some(chaos_task) = chaos_task {
        chaos_task
            .await
            .map_err(|e| Error::invalid("task", e.to_string()))?;
    }
    gate??;
    for t in joined {
        let t = t.map_err(|e| Error::invalid("task", e.to_string()))?;
        tally.adds_ok += t.adds_ok;
        tally.adds_unknown += t.adds_unknown;
        tally.fenced_ok += t.fenced_ok;
        tally.fenced_unknown += t.fenced_unknown;
    }
    writes.intercept().settle(writes.inner()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let n = plain.counter().get("n").await?;
    let within = |got: i64, ok: i64, unknown: i64| ok <= got && got <= ok + unknown;
    if !within(n, tally.adds_ok, tally.adds_unknown) {
        return Err(Error::invalid("counter", format!("{n} after {tally:?}")));
    }
    let fenced = plain.counter().get("fenced").await?;
    if !within(fenced, tally.fenced_ok, tally.fenced_unknown) {
        return Err(Error::invalid(
            "fenced",
            format!("{fenced} after {tally:?}"),
        ));
    }
    let most = watched.most_permits_held.load(Ordering::SeqCst);
    if most > 2 {
        return Err(Error::invalid(
            "semaphore",
            format!("{most} holders of 2 permits"),
        ));
    }
    if watched.token_went_back.load(Ordering::SeqCst) {
        return Err(Error::invalid(
            "fencing",
            "a lock's fencing token went backwards",
        ));
    }
    let a = plain.config().get::<i64>("a").await.ok();
    let b = plain.config().get::<i64>("b").await.ok();
    if a != b {
        return Err(Error::invalid(
            "batch",
            format!("a = {a:?}, b = {b:?}: a batch applied in part"),
        ));
    }
    faulty.close().await?;
    plain.close().await?;
    let leased = super::ambiguous::leased_keys(store.as_ref()).await?;
    if !leased.is_empty() {
        return Err(Error::invalid(
            "leftovers",
            format!("left after close: {leased:?}"),
        ));
    }
    Ok(())
}

/// Under lock `l`, add one to the counter `fenced` with a write guarded by the
/// lock's compare and the value read (so two holders at once, or a stale one,
/// could not both count).
async fn fenced_write(c: &Coordinator, ttl: Duration, tally: &mut Tally, watched: &Watched) {
    let Ok(Ok(guard)) =
        tokio::time::timeout(Duration::from_secs(30), c.lock().acquire("l", ttl)).await
    else {
        return;
    };
    {
        let mut last = watched.last_token.lock().unwrap_or_else(|e| e.into_inner());
        if guard.fencing_token() <= *last {
            watched.token_went_back.store(true, Ordering::SeqCst);
        }
        *last = guard.fencing_token();
    }
    let store = c.backend();
    if let Ok(current) = store.get("coord/counter/fenced").await {
        let (n, rev) = current.map_or((0, 0), |kv| {
            (
                String::from_utf8_lossy(&kv.value)
                    .parse::<i64>()
                    .unwrap_or(0),
                kv.mod_revision,
            )
        });
        let write = Txn::new()
            .when([
                guard.compare(),
                Compare::mod_revision("coord/counter/fenced", CompareOp::Equal, rev),
            ])
            .and_then([PutRequest::new("coord/counter/fenced", (n + 1).to_string())]);
        match store.txn(write).await {
            Ok(r) if r.succeeded => tally.fenced_ok += 1,
            Ok(_) => {}
            Err(_) => tally.fenced_unknown += 1,
        }
    }
    let _ = guard.unlock().await;
}

/// Hold one of the 2 permits of semaphore `s` a moment, counting the holders
/// the store still has a key of (`store`: a client no fault touches).
async fn hold_a_permit(c: &Coordinator, store: &dyn Backend, ttl: Duration, watched: &Watched) {
    let semaphores = c.semaphore();
    let acquire = semaphores.acquire("s", 2, ttl);
    let Ok(Ok(permit)) = tokio::time::timeout(Duration::from_secs(30), acquire).await else {
        return;
    };
    let key = permit.key().to_string();
    let others = {
        let mut held = watched
            .permit_keys
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let others = held.clone();
        held.push(key.clone());
        others
    };
    let mut live = 1;
    for other in others {
        if let Ok(Some(_)) = store.get(other.as_str()).await {
            live += 1;
        }
    }
    watched.most_permits_held.fetch_max(live, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(5)).await;
    watched
        .permit_keys
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|k| *k != key);
    let _ = permit.unlock().await;
}

/// Three rounds of a 2-party double barrier, one party on each coordinator:
/// when one party's `enter` returns `Ok`, the other's does not hang (it is let
/// through, or fails). Leaving is not judged (a party whose enter failed may
/// keep its key until its lease ends).
async fn double_barrier_rounds(
    faulty: Coordinator,
    plain: Coordinator,
    ttl: Duration,
) -> Result<()> {
    let patience = Duration::from_secs(60);
    for round in 0..3 {
        let gate = format!("gate-{round}");
        let (a, b) = (faulty.barrier(), plain.barrier());
        let (a, b) = tokio::join!(
            tokio::time::timeout(patience, a.enter(&gate, 2, ttl)),
            tokio::time::timeout(patience, b.enter(&gate, 2, ttl)),
        );
        let through = |r: &std::result::Result<Result<_>, _>| matches!(r, Ok(Ok(_)));
        if (through(&a) && b.is_err()) || (through(&b) && a.is_err()) {
            return Err(Error::invalid(
                "barrier",
                format!("{gate}: one party went through, the other hangs"),
            ));
        }
        let leave = |r: std::result::Result<Result<coordkit::DoubleBarrierEntry>, _>| async move {
            if let Ok(Ok(entry)) = r {
                let _ = tokio::time::timeout(patience, entry.leave()).await;
            }
        };
        tokio::join!(leave(a), leave(b));
    }
    Ok(())
}

/// The faults of a chaos run, at random moments until `done`: a partition of
/// the faulty coordinator's client for a moment, a cut of its watches, the
/// expiry of its session's lease, a compaction of the store at its current
/// revision. Ends healed.
async fn stir(
    faults: Arc<dyn Faults>,
    faulty: Coordinator,
    store: Arc<dyn Backend>,
    ttl: Duration,
    seed: u64,
    done: Arc<AtomicBool>,
) {
    let mut rng = fastrand::Rng::with_seed(seed.wrapping_mul(97).wrapping_add(13));
    while !done.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(rng.u64(10..150))).await;
        match rng.u8(..4) {
            0 => {
                faults.partition();
                tokio::time::sleep(Duration::from_millis(rng.u64(20..400))).await;
                faults.heal();
            }
            1 => faults.cut_watches(),
            2 => {
                if let Ok(session) = faulty.session(ttl).await {
                    faults.expire_lease(session.lease());
                }
            }
            _ => {
                if let Ok(now) = store.current_revision().await {
                    let _ = store.compact(now).await;
                }
            }
        }
    }
    faults.heal();
}
