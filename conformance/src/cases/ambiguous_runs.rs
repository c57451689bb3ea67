//! Seeded random runs: several tasks on two coordinators mix counter adds,
//! fenced writes under a lock and config batches, while writes of one
//! coordinator are answered lost, late or held at random; the invariants hold at
//! the end of every run. A run is a seed: on a paused clock (the memory backend)
//! the same seed replays the same run (`COORD_SEEDS=17` runs seed 17 alone,
//! `COORD_SEEDS=0-499` five hundred of them; `scripts/seeds.sh` does that).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coordkit::testing::{AmbiguousWrites, Intercepted, WriteFault};
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

/// What the tasks of one run share: permits held now and at most, the lock's
/// last fencing token, and whether tokens ever went backwards.
#[derive(Default, Debug)]
struct Watched {
    permits_held: AtomicUsize,
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
/// after `close()` no key on a lease is left.
pub async fn ambiguous_random_runs_keep_every_invariant(ctx: Ctx) -> Result<()> {
    for seed in seeds() {
        run(&ctx, seed).await.map_err(|e| {
            Error::invalid(
                "seed",
                format!("seed {seed} (COORD_SEEDS={seed} replays it): {e}"),
            )
        })?;
    }
    Ok(())
}

async fn run(ctx: &Ctx, seed: u64) -> Result<()> {
    fastrand::seed(seed);
    let store: Arc<dyn Backend> = Arc::new(Namespaced::new(ctx.backend(), format!("seed-{seed}/")));
    let writes = Arc::new(Intercepted::new(store.clone(), AmbiguousWrites::new()));
    let faulty = Coordinator::new(writes.clone() as Arc<dyn Backend>);
    let plain = Coordinator::new(store.clone());
    let ttl = ctx.recipe_ttl();
    let watched = Arc::new(Watched::default());
    let mut tasks = Vec::new();
    for task in 0..4u64 {
        let c = if task == 3 {
            plain.clone()
        } else {
            faulty.clone()
        };
        let writes = writes.clone();
        let watched = watched.clone();
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
                    3 => hold_a_permit(&c, ttl, &watched).await,
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
    for t in tasks {
        let t = t.await.map_err(|e| Error::invalid("task", e.to_string()))?;
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

/// Hold one of the 2 permits of semaphore `s` a moment, counting the holders.
async fn hold_a_permit(c: &Coordinator, ttl: Duration, watched: &Watched) {
    let semaphores = c.semaphore();
    let acquire = semaphores.acquire("s", 2, ttl);
    let Ok(Ok(permit)) = tokio::time::timeout(Duration::from_secs(30), acquire).await else {
        return;
    };
    let now = watched.permits_held.fetch_add(1, Ordering::SeqCst) + 1;
    watched.most_permits_held.fetch_max(now, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(5)).await;
    watched.permits_held.fetch_sub(1, Ordering::SeqCst);
    let _ = permit.unlock().await;
}
