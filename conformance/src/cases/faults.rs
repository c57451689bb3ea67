use std::time::Duration;

use coordkit::{BackendExt, Error, EventKind, Result, WatchRequest};
use futures::StreamExt;

use crate::context::text;
use crate::context::{assert_quiet, next_response, PATIENCE};
use crate::Ctx;

/// `fail_next(n)` fails exactly the next n calls, with a retryable error.
pub async fn failed_calls_fail_exactly_n_times(ctx: Ctx) -> Result<()> {
    let b = ctx.backend();
    let f = ctx.faults();
    b.put("k", "v").await?;
    f.fail_next(3);
    for _ in 0..3 {
        let err = b.get("k").await.unwrap_err();
        assert!(err.is_retryable(), "{err:?}");
    }
    assert_eq!(text(&b.get("k").await?.unwrap().value), "v");
    Ok(())
}

/// A write whose response is lost reports `Unavailable` but has committed.
pub async fn lost_response_write_is_committed(ctx: Ctx) -> Result<()> {
    let b = ctx.backend();
    ctx.faults().lose_next_response();
    let err = b.put("k", "committed").await.unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    assert_eq!(text(&b.get("k").await?.unwrap().value), "committed");
    Ok(())
}

/// While keep-alives go unanswered, the lease runs out and its keys go; resumed
/// keep-alives then find the lease gone.
pub async fn stalled_keep_alives_let_the_lease_expire(ctx: Ctx) -> Result<()> {
    let b = ctx.backend();
    let f = ctx.faults();
    let grant = b.lease_grant(ctx.min_ttl().max(3)).await?;
    b.put_with_lease("s", "v", grant.id).await?;
    let mut w = b.watch(WatchRequest::key("s")).await?;
    f.stall_keep_alives();
    let err = b.lease_keep_alive(grant.id).await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    let gone = next_response(&mut w, "the expiry of the unrenewed lease").await?;
    assert_eq!(gone.events[0].kind, EventKind::Delete);
    f.resume_keep_alives();
    let r = b.lease_keep_alive(grant.id).await;
    assert!(matches!(r, Err(Error::LeaseNotFound { .. })), "{r:?}");
    Ok(())
}

/// A cut watch resumes from its last delivered revision + 1: nothing lost, nothing
/// repeated.
pub async fn cut_watch_resumes_without_gap_or_duplicate(ctx: Ctx) -> Result<()> {
    let b = ctx.backend();
    let writer = ctx.client().await.backend;
    let mut w = b.watch(WatchRequest::prefix("c/")).await?;
    let mut written = Vec::new();
    for i in 0..30 {
        written.push(writer.put(format!("c/{}", i % 7), i.to_string()).await?);
        if i % 10 == 4 {
            ctx.faults().cut_watches();
        }
    }
    let mut seen = Vec::new();
    while seen.len() < written.len() {
        seen.push(
            next_response(&mut w, "puts around the cuts")
                .await?
                .revision,
        );
    }
    assert_eq!(seen, written);
    assert_quiet(&mut w, "no duplicates after the cuts").await;
    Ok(())
}

/// A watch cut while the store is compacted past its position yields `Compacted`.
pub async fn cut_watch_after_compaction_yields_compacted(ctx: Ctx) -> Result<()> {
    let b = ctx.backend();
    let f = ctx.faults();
    let writer = ctx.client().await.backend;
    let mut w = b.watch(WatchRequest::key("k")).await?;
    let first = writer.put("k", "1").await?;
    assert_eq!(next_response(&mut w, "first put").await?.revision, first);
    f.partition();
    writer.put("k", "2").await?;
    let now = writer.put("k", "3").await?;
    let _compaction = ctx.compaction().await;
    writer.compact(now).await?;
    f.heal();
    match tokio::time::timeout(PATIENCE, w.next()).await {
        Ok(Some(Err(Error::Compacted { compact_revision }))) => assert_eq!(compact_revision, now),
        other => panic!("expected Compacted after the resume, got {other:?}"),
    }
    Ok(())
}

/// A partitioned client's calls fail; its watch catches up with everything written
/// meanwhile once the partition heals.
pub async fn partition_fails_calls_and_watch_catches_up_after_heal(ctx: Ctx) -> Result<()> {
    let b = ctx.backend();
    let f = ctx.faults();
    let writer = ctx.client().await.backend;
    let mut w = b.watch(WatchRequest::prefix("p/")).await?;
    f.partition();
    let err = b.get("p/x").await.unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    assert!(b.watch(WatchRequest::key("p/y")).await.is_err());
    let mut written = Vec::new();
    for i in 0..5 {
        written.push(writer.put(format!("p/{i}"), "v").await?);
    }
    assert_quiet(&mut w, "partitioned watch").await;
    f.heal();
    for rev in written {
        assert_eq!(next_response(&mut w, "catch-up").await?.revision, rev);
    }
    assert!(b.get("p/0").await?.is_some());
    Ok(())
}

/// A partition of one client leaves the others working.
pub async fn partition_leaves_other_clients_working(ctx: Ctx) -> Result<()> {
    let cut = ctx.client().await;
    let other = ctx.client().await.backend;
    cut.faults.as_ref().expect("faults").partition();
    assert!(cut.backend.put("k", "v").await.is_err());
    other.put("k", "v").await?;
    assert_eq!(text(&other.get("k").await?.unwrap().value), "v");
    cut.faults.as_ref().unwrap().heal();
    assert_eq!(text(&cut.backend.get("k").await?.unwrap().value), "v");
    Ok(())
}

/// Expiring a lease by injection deletes its keys at once, as its TTL running out would.
pub async fn expired_lease_deletes_its_keys_at_once(ctx: Ctx) -> Result<()> {
    let b = ctx.backend();
    let grant = b.lease_grant(3600).await?;
    b.put_with_lease("x/1", "v", grant.id).await?;
    b.put_with_lease("x/2", "v", grant.id).await?;
    ctx.faults().expire_lease(grant.id);
    assert!(b.get_prefix("x/").await?.is_empty());
    let r = b.lease_time_to_live(grant.id).await;
    assert!(matches!(r, Err(Error::LeaseNotFound { .. })), "{r:?}");
    Ok(())
}

/// The injected faults take effect (a fault that does nothing would let every
/// fault case pass without its fault), each checked by its effect, with no way
/// for a harness to opt out: failed calls fail and reach nothing; a lost
/// response applies and reports a retryable error; a partition fails calls and
/// heals; a stalled keep-alive fails promptly with a retryable error rather than
/// hang; a cut watch reconnects (its resume count grows) and misses nothing; a
/// lagging watch delivers nothing during its lag.
pub async fn injected_faults_take_effect(ctx: Ctx) -> Result<()> {
    let b = ctx.backend();
    let faults = ctx.faults();
    b.put("f", "0").await?;

    faults.fail_next(1);
    let failed = b.put("failed", "1").await;
    assert!(
        failed.as_ref().is_err_and(|e| e.is_retryable()),
        "fail_next: the call must fail with a retryable error, got {failed:?}"
    );
    assert!(
        b.get("failed").await?.is_none(),
        "fail_next: a failed call must not reach the store"
    );
    faults.lose_next_response();
    let lost = b.put("lost", "1").await;
    assert!(
        lost.as_ref().is_err_and(|e| e.is_retryable()),
        "lose_next_response: the caller must get a retryable error, got {lost:?}"
    );
    assert!(
        b.get("lost").await?.is_some(),
        "lose_next_response: the write must have applied"
    );

    faults.partition();
    let err = b
        .get("f")
        .await
        .expect_err("a partitioned client's call must fail");
    assert!(
        err.is_retryable(),
        "a partition's failure is retryable: {err:?}"
    );
    faults.heal();
    assert!(b.get("f").await?.is_some(), "a healed client's call works");

    let lease = b.lease_grant(ctx.min_ttl().max(5)).await?;
    faults.stall_keep_alives();
    let stalled = tokio::time::timeout(Duration::from_secs(10), b.lease_keep_alive(lease.id))
        .await
        .expect("a stalled keep-alive must fail within 10 s, not hang");
    let err = stalled.expect_err("a stalled keep-alive must fail");
    assert!(
        err.is_retryable(),
        "a stalled keep-alive's failure is retryable: {err:?}"
    );
    faults.resume_keep_alives();
    b.lease_keep_alive(lease.id).await?;

    let mut w = b.watch(WatchRequest::key("w")).await?;
    let first = b.put("w", "1").await?;
    assert_eq!(
        next_response(&mut w, "the put before the cut")
            .await?
            .revision,
        first
    );
    let resumes = faults.watch_resumes();
    faults.cut_watches();
    let second = b.put("w", "2").await?;
    assert_eq!(
        next_response(&mut w, "the put after the cut")
            .await?
            .revision,
        second,
        "a cut watch resumes from where it stopped"
    );
    assert!(
        faults.watch_resumes() > resumes,
        "cut_watches() did not cut the watch (no reconnect)"
    );

    // A lagging watch delivers nothing during its lag, then everything in order.
    let lag = Duration::from_secs(2);
    faults.lag_new_watches(Some(lag));
    let mut lagging = b.watch(WatchRequest::key("l")).await?;
    faults.lag_new_watches(None);
    let opened = tokio::time::Instant::now();
    let put = b.put("l", "1").await?;
    let early = tokio::time::timeout(lag / 4, lagging.next()).await;
    assert!(
        early.is_err(),
        "a lagging watch delivered during its lag: {early:?}"
    );
    let late = next_response(&mut lagging, "the lagging watch's put").await?;
    assert_eq!(late.revision, put);
    if ctx.paused_clock() {
        assert!(
            opened.elapsed() >= lag / 2,
            "the lagging watch delivered after {:?}",
            opened.elapsed()
        );
    }
    Ok(())
}

/// The same concurrent history with one client's responses lost and calls
/// failed now and then (outcomes unknown): still linearizable, each unknown
/// write placed where it may have applied, or nowhere.
pub async fn concurrent_history_with_lost_responses_is_linearizable(ctx: Ctx) -> Result<()> {
    let mut clients = vec![ctx.backend()];
    for _ in 0..3 {
        clients.push(ctx.client().await.backend);
    }
    let faults = ctx.faults();
    let inject = move |i: usize| {
        if i % 7 == 3 {
            faults.lose_next_response();
        } else if i % 11 == 5 {
            faults.fail_next(1);
        }
    };
    let history = crate::linearizability::run_history(clients, 3, 60, 23, inject).await;
    let unknown = history
        .iter()
        .filter(|o| o.outcome == crate::linearizability::Outcome::Unknown)
        .count();
    assert!(
        unknown > 0,
        "no outcome was unknown: the faults did not take effect"
    );
    if let Err(violation) = crate::linearizability::check(&history) {
        panic!("the store is not linearizable: {violation}");
    }
    Ok(())
}
