//! Barriers and double barriers: gates, rounds, dead participants, cancellation.

use std::time::Duration;

use coordkit::{Error, Result};

use crate::context::{assert_invalid, count_keys, wait_for_keys, PATIENCE};
use crate::Ctx;

fn waiters(name: &str) -> String {
    format!("coord/double-barrier/{name}/waiters/")
}

/// A set barrier holds every waiter until it is removed, then lets all go;
/// setting it twice says so; waiting on a barrier not set returns at once.
pub async fn barrier_holds_waiters_until_removed(ctx: Ctx) -> Result<()> {
    let c = ctx.coordinator();
    c.barrier().wait("gate").await?; // not set: returns at once
    assert!(c.barrier().set("gate").await?, "the first set sets it");
    assert!(
        !c.barrier().set("gate").await?,
        "a second set must say it was set"
    );
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let w = ctx.other_coordinator().await;
        tasks.push(tokio::spawn(async move { w.barrier().wait("gate").await }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        tasks.iter().all(|t| !t.is_finished()),
        "a waiter went through a set barrier"
    );
    assert!(c.barrier().remove("gate").await?);
    for t in tasks {
        tokio::time::timeout(PATIENCE, t)
            .await
            .expect("a removed barrier lets every waiter go")
            .expect("task")?;
    }
    assert!(
        !c.barrier().remove("gate").await?,
        "removing it again says it was not set"
    );
    assert_invalid(c.barrier().set("").await, "name");
    Ok(())
}

/// Three participants of a double barrier of 3: the first two wait in `enter`
/// until the third arrives, then all start; `leave` waits until all have left;
/// afterwards no key of the barrier is left and a second round works the same.
pub async fn double_barrier_starts_and_finishes_together(ctx: Ctx) -> Result<()> {
    let ttl = ctx.recipe_ttl();
    let b = ctx.backend();
    for round in 0..2 {
        let mut entering = Vec::new();
        for _ in 0..2 {
            let p = ctx.other_coordinator().await;
            entering.push(tokio::spawn(async move {
                p.barrier().enter("work", 3, ttl).await
            }));
        }
        wait_for_keys(b.as_ref(), &waiters("work"), 2).await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            entering.iter().all(|t| !t.is_finished()),
            "round {round}: a participant started before all 3 entered"
        );
        let third = ctx.coordinator().barrier().enter("work", 3, ttl).await?;
        let mut entries = Vec::new();
        for t in entering {
            entries.push(
                tokio::time::timeout(PATIENCE, t)
                    .await
                    .expect("the third arrival lets the others start")
                    .expect("task")?,
            );
        }
        let leaving: Vec<_> = entries
            .into_iter()
            .map(|e| tokio::spawn(e.leave()))
            .collect();
        wait_for_keys(b.as_ref(), &waiters("work"), 1).await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            leaving.iter().all(|t| !t.is_finished()),
            "round {round}: a participant finished leaving while another was still in"
        );
        third.leave().await?;
        for t in leaving {
            tokio::time::timeout(PATIENCE, t)
                .await
                .expect("the last leave lets the others finish")
                .expect("task")?;
        }
        assert_eq!(
            count_keys(b.as_ref(), "coord/double-barrier/work/").await?,
            0,
            "round {round}: the barrier left keys behind"
        );
    }
    assert_invalid(
        ctx.coordinator().barrier().enter("x", 0, ttl).await,
        "count",
    );
    Ok(())
}

/// A participant whose lease ends while it waits in `enter` gets `LockExpired`
/// and no longer counts; a cancelled `enter` removes its key; a participant that
/// dies after entering does not hold up the others' `leave`.
pub async fn double_barrier_dead_or_cancelled_participants_do_not_count(ctx: Ctx) -> Result<()> {
    let ttl = ctx.recipe_ttl();
    let b = ctx.backend();
    let doomed = ctx.other_coordinator().await;
    let doomed_lease = doomed.session(ttl).await?.lease();
    let waiting = tokio::spawn(async move { doomed.barrier().enter("d", 2, ttl).await });
    wait_for_keys(b.as_ref(), &waiters("d"), 1).await?;
    b.lease_revoke(doomed_lease).await?;
    let outcome = tokio::time::timeout(PATIENCE, waiting)
        .await
        .expect("the waiting enter ended")
        .expect("task");
    assert!(
        matches!(&outcome, Err(Error::LockExpired { .. })),
        "a participant whose lease ended must get LockExpired, got {outcome:?}"
    );
    assert_eq!(count_keys(b.as_ref(), &waiters("d")).await?, 0);
    // A cancelled enter leaves no key.
    let quitter = ctx.other_coordinator().await;
    let task = tokio::spawn(async move { quitter.barrier().enter("d", 2, ttl).await });
    wait_for_keys(b.as_ref(), &waiters("d"), 1).await?;
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    wait_for_keys(b.as_ref(), &waiters("d"), 0).await?;
    // Two real participants; one dies after entering: the other's leave completes.
    let first = ctx.other_coordinator().await;
    let dying = ctx.other_coordinator().await;
    let dying_lease = dying.session(ttl).await?.lease();
    let entering = tokio::spawn(async move { first.barrier().enter("d", 2, ttl).await });
    wait_for_keys(b.as_ref(), &waiters("d"), 1).await?;
    let dying_entry = dying.barrier().enter("d", 2, ttl).await?;
    let entry = tokio::time::timeout(PATIENCE, entering)
        .await
        .expect("two participants start")
        .expect("task")?;
    b.lease_revoke(dying_lease).await?;
    tokio::time::timeout(PATIENCE, entry.leave())
        .await
        .expect("a dead participant must not hold up leave")?;
    drop(dying_entry);
    Ok(())
}
