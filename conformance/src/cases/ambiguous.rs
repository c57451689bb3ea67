//! Every write survives an answer it never got: each recipe operation runs with
//! its k-th store write answered lost, late (the caller gets `Timeout`; the write
//! applies just before the next write, after a retry has read) or held (applied
//! after the call returned), for every k, and must then meet its documented
//! post-condition; after `close()` no key on a lease is left. The model is
//! `tests/cancel.rs`, which drops every call at every poll. The faults come from
//! [`AmbiguousWrites`], which wraps any backend: every backend runs the sweep.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use coordkit::testing::{AmbiguousWrites, Intercepted, WriteFault};
use coordkit::{Backend, BackendExt, ConfigChange, Coordinator, Error, Namespaced, Result};
use futures::future::BoxFuture;
use futures::FutureExt;

use crate::Ctx;

const FAULTS: [WriteFault; 3] = [WriteFault::Lost, WriteFault::Late, WriteFault::Held];

type Shared = Arc<dyn Backend>;

/// One run, in a namespace of its own: a coordinator whose writes go through
/// the interceptor, and a plain one on the same store to look with.
struct World {
    faulty: Coordinator,
    writes: Arc<Intercepted<Shared, AmbiguousWrites>>,
    plain: Coordinator,
}

fn world(ctx: &Ctx, run: usize) -> World {
    let store: Shared = Arc::new(Namespaced::new(ctx.backend(), format!("run-{run}/")));
    let writes = Arc::new(Intercepted::new(store.clone(), AmbiguousWrites::new()));
    let backend: Shared = writes.clone();
    World {
        faulty: Coordinator::new(backend),
        writes,
        plain: Coordinator::new(store),
    }
}

/// Long enough for background work (cleanups, keepers) to act: on a paused
/// clock any time is free; on a real one, a short wait.
fn settle_time(ctx: &Ctx) -> Duration {
    if ctx.paused_clock() {
        Duration::from_secs(1)
    } else {
        Duration::from_millis(300)
    }
}

/// Run `op` once with nothing armed to count its writes, then once per write
/// position and fault; `setup` runs first on the plain coordinator (its writes
/// are not counted); `check` gets the call's result and the plain coordinator
/// once every late or held write has reached the store. Returns the number of
/// runs with a fault.
pub(crate) async fn sweep<T, Setup, Op, Check, CheckFut>(
    ctx: &Ctx,
    name: &str,
    setup: Setup,
    op: Op,
    check: Check,
) -> Result<usize>
where
    T: std::fmt::Debug,
    Setup: Fn(Coordinator) -> BoxFuture<'static, Result<()>>,
    Op: Fn(Coordinator) -> BoxFuture<'static, Result<T>>,
    Check: Fn(Result<T>, Coordinator, String) -> CheckFut,
    CheckFut: Future<Output = ()>,
{
    let counting = world(ctx, 0);
    setup(counting.plain.clone()).await.unwrap();
    counting.writes.intercept().arm(0, WriteFault::Lost);
    op(counting.faulty.clone()).await.unwrap();
    let n = counting.writes.intercept().writes();
    assert!(n >= 1, "{name} makes no write");
    eprintln!("sweep: {name}: {n} write(s) x {} faults", FAULTS.len());
    counting.faulty.close().await.unwrap();
    let mut runs = 0;
    for k in 1..=n {
        for fault in FAULTS {
            let w = world(ctx, runs + 1);
            setup(w.plain.clone()).await.unwrap();
            w.writes.intercept().arm(k, fault);
            let label = format!("{name}, write {k} of {n} {fault:?}");
            let result = tokio::time::timeout(Duration::from_secs(120), op(w.faulty.clone()))
                .await
                .unwrap_or_else(|_| panic!("{label}: the call hangs"));
            // On a real clock an operation's writes may vary from run to run
            // (who closes a double barrier's gate): a position past this run's
            // writes has no fault to give, and the run stands as a plain one.
            let writes = w.writes.intercept().writes();
            assert!(
                w.writes.intercept().fired() || (!ctx.paused_clock() && writes < k),
                "{label}: the fault was not given ({writes} writes)"
            );
            w.writes.intercept().settle(w.writes.inner()).await;
            tokio::time::sleep(settle_time(ctx)).await;
            check(result, w.plain.clone(), label.clone()).await;
            w.faulty.close().await.unwrap();
            // Nothing outlives its owner: after close(), no key on a lease is left.
            let leased = leased_keys(w.plain.backend().as_ref()).await?;
            assert!(leased.is_empty(), "{label}: left after close: {leased:?}");
            runs += 1;
        }
    }
    Ok(runs)
}

/// The keys on a lease under the store's root: none may outlive their owner's
/// `close()`.
pub(crate) async fn leased_keys(store: &dyn Backend) -> Result<Vec<String>> {
    let all = store.range(coordkit::RangeRequest::prefix("")).await?;
    Ok(all
        .kvs
        .iter()
        .filter(|kv| kv.lease.is_some())
        .map(|kv| kv.key_str())
        .collect())
}

/// The keys under `prefix` on `plain`'s store: none may be left once a claim
/// was released, even by a write of its that landed late.
async fn keys_under(plain: &Coordinator, prefix: &str) -> Vec<String> {
    let resp = plain
        .backend()
        .range(coordkit::RangeRequest::prefix(prefix))
        .await
        .expect("a read");
    resp.kvs.iter().map(|kv| kv.key_str()).collect()
}

fn nothing(_: Coordinator) -> BoxFuture<'static, Result<()>> {
    async { Ok(()) }.boxed()
}

/// A counter add whose write is lost, late or held counts once: `Ok(v)` means the
/// counter is `v` (1); `OutcomeUnknown` means 0 or 1; never 2.
pub async fn ambiguous_a_counter_add_counts_once(ctx: Ctx) -> Result<()> {
    sweep(
        &ctx,
        "counter add",
        nothing,
        |c| async move { c.counter().add("n", 1).await }.boxed(),
        |r, plain, label| async move {
            let now = plain.counter().get("n").await.unwrap();
            match r {
                Ok(v) => assert_eq!((v, now), (1, 1), "{label}"),
                Err(Error::OutcomeUnknown { .. }) => assert!(now <= 1, "{label}: {now}"),
                Err(e) => panic!("{label}: {e:?} (counter at {now})"),
            }
        },
    )
    .await?;
    Ok(())
}

/// A counter compare-and-set that applied reports `true`, even when a retry
/// finds its own write; `OutcomeUnknown` leaves the old or the new value.
pub async fn ambiguous_a_counter_compare_and_set_reports_its_own_write(ctx: Ctx) -> Result<()> {
    sweep(
        &ctx,
        "counter compare_and_set",
        nothing,
        |c| async move { c.counter().compare_and_set("n", 0, 5).await }.boxed(),
        |r, plain, label| async move {
            let now = plain.counter().get("n").await.unwrap();
            match r {
                Ok(swapped) => assert_eq!((swapped, now), (true, 5), "{label}"),
                Err(Error::OutcomeUnknown { .. }) => assert!(now == 0 || now == 5, "{label}"),
                Err(e) => panic!("{label}: {e:?}"),
            }
        },
    )
    .await?;
    Ok(())
}

/// A barrier set is set and says `true`, however its write was answered.
pub async fn ambiguous_a_barrier_set_reports_its_own_write(ctx: Ctx) -> Result<()> {
    sweep(
        &ctx,
        "barrier set",
        nothing,
        |c| async move { c.barrier().set("gate").await }.boxed(),
        |r, plain, label| async move {
            let set = plain
                .backend()
                .get("coord/barrier/gate")
                .await
                .unwrap()
                .is_some();
            assert!(set, "{label}: the barrier is not set");
            assert!(r.unwrap_or_else(|e| panic!("{label}: {e:?}")), "{label}");
        },
    )
    .await?;
    Ok(())
}

/// A barrier remove leaves the barrier removed and says `true`, however its
/// delete was answered.
pub async fn ambiguous_a_barrier_remove_reports_its_own_delete(ctx: Ctx) -> Result<()> {
    sweep(
        &ctx,
        "barrier remove",
        |c| async move { c.barrier().set("gate").await.map(drop) }.boxed(),
        |c| async move { c.barrier().remove("gate").await }.boxed(),
        |r, plain, label| async move {
            let set = plain
                .backend()
                .get("coord/barrier/gate")
                .await
                .unwrap()
                .is_some();
            assert!(!set, "{label}: the barrier is still set");
            assert!(r.unwrap_or_else(|e| panic!("{label}: {e:?}")), "{label}");
        },
    )
    .await?;
    Ok(())
}

/// The last of two participants to enter a double barrier opens it whatever
/// became of its writes' answers: both enter and leave, nobody hangs.
pub async fn ambiguous_last_to_enter_a_double_barrier_opens_it(ctx: Ctx) -> Result<()> {
    sweep(
        &ctx,
        "double barrier enter (the last of 2)",
        |c| {
            async move {
                // The first participant, on a connection of its own, waits inside.
                let first = c.barrier();
                tokio::spawn(async move {
                    let entry = first.enter("batch", 2, Duration::from_secs(10)).await?;
                    entry.leave().await
                });
                tokio::time::sleep(Duration::from_millis(300)).await;
                Ok(())
            }
            .boxed()
        },
        |c| {
            async move {
                // A second coordinator (its own session) on the same faulty store.
                let second = Coordinator::new(c.backend().clone());
                let entry = second
                    .barrier()
                    .enter("batch", 2, Duration::from_secs(10))
                    .await?;
                entry.leave().await?;
                second.close().await
            }
            .boxed()
        },
        |r, _, label| async move {
            r.unwrap_or_else(|e| panic!("{label}: {e:?}"));
        },
    )
    .await?;
    Ok(())
}

/// A config batch (`update_many`) is reported applied with its version, or
/// `OutcomeUnknown` with all or none of it applied — never `VersionConflict`
/// against its own writes.
pub async fn ambiguous_a_config_batch_is_reported_as_applied_or_unknown_never_as_a_conflict(
    ctx: Ctx,
) -> Result<()> {
    sweep(
        &ctx,
        "config update_many",
        nothing,
        |c| {
            async move {
                c.config()
                    .update_many(vec![
                        ConfigChange::set("a", &1)?.if_version(0),
                        ConfigChange::set("b", &2)?.if_version(0),
                    ])
                    .await
            }
            .boxed()
        },
        |r, plain, label| async move {
            let a = plain.config().get_with_version::<i32>("a").await.ok();
            let b = plain.config().get_with_version::<i32>("b").await.ok();
            match r {
                Ok(v) => assert_eq!((a, b), (Some((1, v)), Some((2, v))), "{label}"),
                Err(Error::OutcomeUnknown { .. }) => {
                    assert_eq!(a.is_some(), b.is_some(), "{label}: all or nothing")
                }
                Err(e) => panic!("{label}: {e:?}"),
            }
        },
    )
    .await?;
    Ok(())
}

/// A config compare-and-set that applied returns its version, even when a retry
/// finds its own write; never `VersionConflict` against it.
pub async fn ambiguous_a_config_compare_and_set_reports_its_own_write(ctx: Ctx) -> Result<()> {
    sweep(
        &ctx,
        "config compare_and_set",
        |c| async move { c.config().set("k", &1).await.map(drop) }.boxed(),
        |c| {
            async move {
                let (_, v) = c.config().get_with_version::<i32>("k").await?;
                c.config().compare_and_set("k", &2, v).await
            }
            .boxed()
        },
        |r, plain, label| async move {
            let (now, version) = plain.config().get_with_version::<i32>("k").await.unwrap();
            match r {
                Ok(v) => assert_eq!((now, version), (2, v), "{label}"),
                Err(Error::OutcomeUnknown { .. }) => assert!(now == 1 || now == 2, "{label}"),
                Err(e) => panic!("{label}: {e:?} (k = {now})"),
            }
        },
    )
    .await?;
    Ok(())
}

/// A config `delete_if_version` that applied says so, even when a retry finds the
/// key gone by its own delete.
pub async fn ambiguous_a_config_delete_if_version_reports_its_own_delete(ctx: Ctx) -> Result<()> {
    sweep(
        &ctx,
        "config delete_if_version",
        |c| async move { c.config().set("k", &1).await.map(drop) }.boxed(),
        |c| {
            async move {
                let (_, v) = c.config().get_with_version::<i32>("k").await?;
                c.config().delete_if_version("k", v).await
            }
            .boxed()
        },
        |r, plain, label| async move {
            let gone = plain.config().get::<i32>("k").await.is_err();
            match r {
                Ok(()) => assert!(gone, "{label}: still there"),
                Err(Error::OutcomeUnknown { .. }) => {}
                Err(e) => panic!("{label}: {e:?} (gone: {gone})"),
            }
        },
    )
    .await?;
    Ok(())
}

/// A config rollback that applied returns its version with the old value back.
pub async fn ambiguous_a_config_rollback_reports_its_own_write(ctx: Ctx) -> Result<()> {
    sweep(
        &ctx,
        "config rollback",
        |c| {
            async move {
                c.config().set("k", &1).await?;
                c.config().set("k", &2).await.map(drop)
            }
            .boxed()
        },
        |c| {
            async move {
                let history = c.config().history::<i32>("k", 2).await?;
                c.config().rollback("k", history[1].version).await
            }
            .boxed()
        },
        |r, plain, label| async move {
            let (now, version) = plain.config().get_with_version::<i32>("k").await.unwrap();
            match r {
                Ok(v) => assert_eq!((now, version), (1, v), "{label}"),
                Err(Error::OutcomeUnknown { .. }) => assert!(now == 1 || now == 2, "{label}"),
                Err(e) => panic!("{label}: {e:?} (k = {now})"),
            }
        },
    )
    .await?;
    Ok(())
}

/// A rollback on the version the caller saw that applied returns its version
/// with the old value back; a retry never reports the caller's own write as a
/// conflict.
pub async fn ambiguous_a_config_rollback_if_version_reports_its_own_write(ctx: Ctx) -> Result<()> {
    sweep(
        &ctx,
        "config rollback_if_version",
        |c| {
            async move {
                c.config().set("k", &1).await?;
                c.config().set("k", &2).await.map(drop)
            }
            .boxed()
        },
        |c| {
            async move {
                let history = c.config().history::<i32>("k", 2).await?;
                let (shown, old) = (history[0].version, history[1].version);
                c.config().rollback_if_version("k", old, shown).await
            }
            .boxed()
        },
        |r, plain, label| async move {
            let (now, version) = plain.config().get_with_version::<i32>("k").await.unwrap();
            match r {
                Ok(v) => assert_eq!((now, version), (1, v), "{label}"),
                Err(Error::OutcomeUnknown { .. }) => assert!(now == 1 || now == 2, "{label}"),
                Err(e) => panic!("{label}: {e:?} (k = {now})"),
            }
        },
    )
    .await?;
    Ok(())
}

/// Sweep `acquire` then `is_held` then `unlock` of one guard kind: what it
/// took is held, and nothing is left under `queue` after the release — a late
/// copy of a claim write included.
async fn sweep_a_guard(
    ctx: &Ctx,
    name: &str,
    queue: &'static str,
    acquire: fn(Coordinator) -> BoxFuture<'static, Result<coordkit::LockGuard>>,
) -> Result<()> {
    sweep(
        ctx,
        name,
        nothing,
        |c| {
            async move {
                let guard = acquire(c).await?;
                let held = guard.is_held().await?;
                guard.unlock().await?;
                Ok(held)
            }
            .boxed()
        },
        |r, plain, label| async move {
            let left = keys_under(&plain, queue).await;
            assert!(left.is_empty(), "{label}: left after the release: {left:?}");
            if let Ok(held) = r {
                assert!(held, "{label}: acquired but not held");
            }
        },
    )
    .await?;
    Ok(())
}

/// A lock acquired through lost, late or held writes is held, and unlocks;
/// `close()` leaves no key.
pub async fn ambiguous_a_lock_acquire_holds_or_leaves_no_key_and_unlocks(ctx: Ctx) -> Result<()> {
    sweep_a_guard(&ctx, "lock acquire + unlock", "coord/lock/l/", |c| {
        async move { c.lock().acquire("l", Duration::from_secs(10)).await }.boxed()
    })
    .await
}

/// A semaphore permit taken through lost, late or held writes is held, and
/// given back; `close()` leaves no key.
pub async fn ambiguous_a_semaphore_permit_is_taken_and_given_back(ctx: Ctx) -> Result<()> {
    sweep_a_guard(
        &ctx,
        "semaphore acquire + unlock",
        "coord/semaphore/s/",
        |c| async move { c.semaphore().acquire("s", 2, Duration::from_secs(10)).await }.boxed(),
    )
    .await
}

/// A leadership won, proclaimed and resigned through lost, late or held writes
/// leads with the proclaimed value; `close()` leaves no key.
pub async fn ambiguous_a_leadership_is_won_proclaimed_and_resigned(ctx: Ctx) -> Result<()> {
    sweep(
        &ctx,
        "election campaign + proclaim + resign",
        nothing,
        |c| {
            async move {
                let leadership = c.election().campaign("e", "a").await?;
                leadership.proclaim("b").await?;
                let leader = c.election().leader("e").await?.map(|l| l.value_str());
                leadership.resign().await?;
                Ok(leader)
            }
            .boxed()
        },
        |r, plain, label| async move {
            let left = keys_under(&plain, "coord/election/e/").await;
            assert!(left.is_empty(), "{label}: left after the release: {left:?}");
            if let Ok(leader) = r {
                assert_eq!(leader.as_deref(), Some("b"), "{label}");
            }
        },
    )
    .await?;
    Ok(())
}

/// A registration updated and then deregistered through lost, late or held
/// writes is not advertised afterwards, even when a register write held past
/// the deregistration lands (the cleanup removes it).
pub async fn ambiguous_a_registration_updated_then_deregistered_is_gone(ctx: Ctx) -> Result<()> {
    sweep(
        &ctx,
        "register + update + deregister",
        nothing,
        |c| {
            async move {
                let info = coordkit::ServiceInfo::new("i-1", "svc", "10.0.0.1", 7000);
                let registration = c.registry().register(info, Duration::from_secs(10)).await?;
                let updated = registration.update(|i| i.weight = 7).await;
                registration.deregister().await?;
                updated.map(|i| i.weight)
            }
            .boxed()
        },
        |r, plain, label| async move {
            let left = plain.registry().discover("svc").await.unwrap();
            assert!(left.is_empty(), "{label}: still advertised: {left:?}");
            match r {
                Ok(weight) => assert_eq!(weight, 7, "{label}"),
                Err(Error::OutcomeUnknown { .. }) => {}
                Err(e) => panic!("{label}: {e:?}"),
            }
        },
    )
    .await?;
    Ok(())
}

/// A counter `set` leaves the new value, however its write was answered, and
/// returns the previous one when it says `Ok`.
pub async fn ambiguous_a_counter_set_leaves_its_value(ctx: Ctx) -> Result<()> {
    sweep(
        &ctx,
        "counter set",
        |c| async move { c.counter().add("n", 3).await.map(drop) }.boxed(),
        |c| async move { c.counter().set("n", 9).await }.boxed(),
        |r, plain, label| async move {
            let now = plain.counter().get("n").await.unwrap();
            match r {
                Ok(previous) => assert_eq!((previous, now), (3, 9), "{label}"),
                Err(Error::OutcomeUnknown { .. }) => assert!(now == 3 || now == 9, "{label}"),
                Err(e) => panic!("{label}: {e:?}"),
            }
        },
    )
    .await?;
    Ok(())
}

/// A config `set` and a `delete` (plain writes, not conditional) leave what they
/// wrote when they say `Ok`; after an error the key is as before or as written.
pub async fn ambiguous_a_config_set_then_delete_leaves_no_key(ctx: Ctx) -> Result<()> {
    sweep(
        &ctx,
        "config set + delete",
        nothing,
        |c| {
            async move {
                c.config().set("k", &1).await?;
                c.config().delete("k").await
            }
            .boxed()
        },
        |r, plain, label| async move {
            let now = plain.config().get::<i32>("k").await.ok();
            match r {
                Ok(_) => assert_eq!(now, None, "{label}: deleted"),
                Err(_) => assert!(now.is_none() || now == Some(1), "{label}: {now:?}"),
            }
        },
    )
    .await?;
    Ok(())
}

/// A write lock of a read-write lock taken through lost, late or held writes is
/// held, and released; `close()` leaves no key.
pub async fn ambiguous_a_write_lock_is_taken_and_released(ctx: Ctx) -> Result<()> {
    sweep_a_guard(&ctx, "rw_lock write + unlock", "coord/rwlock/rw/", |c| {
        async move { c.rw_lock().write("rw", Duration::from_secs(10)).await }.boxed()
    })
    .await
}

/// A registration's health set through lost, late or held writes is what the
/// store advertises once the call says `Ok`.
pub async fn ambiguous_a_health_change_is_advertised(ctx: Ctx) -> Result<()> {
    sweep(
        &ctx,
        "register + set_health",
        nothing,
        |c| {
            async move {
                let info = coordkit::ServiceInfo::new("i-1", "svc", "10.0.0.1", 7000);
                let registration = c.registry().register(info, Duration::from_secs(10)).await?;
                let set = registration
                    .set_health(coordkit::InstanceHealth::Critical)
                    .await;
                let seen = c
                    .registry()
                    .discover_matching("svc", &coordkit::ServiceFilter::all())
                    .await?;
                set.map(|_| (seen.first().map(|i| i.health), registration))
            }
            .boxed()
        },
        |r, _, label| async move {
            match r {
                Ok((seen, _registration)) => {
                    assert_eq!(seen, Some(coordkit::InstanceHealth::Critical), "{label}")
                }
                Err(Error::OutcomeUnknown { .. }) => {}
                Err(e) => panic!("{label}: {e:?}"),
            }
        },
    )
    .await?;
    Ok(())
}

/// A leadership resumed after a restart, then proclaimed and resigned through
/// lost, late or held writes, leads with the proclaimed value; `close()` leaves
/// no key (the taken-over lease included).
pub async fn ambiguous_a_resumed_leadership_proclaims_and_resigns(ctx: Ctx) -> Result<()> {
    sweep(
        &ctx,
        "election resume + proclaim + resign",
        |c| {
            async move {
                // What a process left before its restart: a leader key on its lease.
                let b = c.backend();
                let grant = b.lease_grant(10).await?;
                let key = format!("coord/election/r/{}", grant.id);
                let token = b.put_with_lease(key, "a", grant.id).await?;
                b.put("left", format!("{} {token}", grant.id.0))
                    .await
                    .map(drop)
            }
            .boxed()
        },
        |c| {
            async move {
                let left = c.backend().get("left").await?.expect("setup");
                let text = String::from_utf8_lossy(&left.value).into_owned();
                let (lease, token) = text.split_once(' ').expect("two numbers");
                let lease = coordkit::LeaseId(lease.parse().expect("a lease"));
                let resumed = c
                    .election()
                    .resume("r", lease, token.parse().expect("a token"))
                    .await?;
                resumed.proclaim("b").await?;
                let leader = c.election().leader("r").await?.map(|l| l.value_str());
                resumed.resign().await?;
                Ok(leader)
            }
            .boxed()
        },
        |r, plain, label| async move {
            let left = keys_under(&plain, "coord/election/r/").await;
            assert!(left.is_empty(), "{label}: left after the release: {left:?}");
            match r {
                Ok(leader) => assert_eq!(leader.as_deref(), Some("b"), "{label}"),
                Err(e) => panic!("{label}: {e:?}"),
            }
        },
    )
    .await?;
    Ok(())
}
