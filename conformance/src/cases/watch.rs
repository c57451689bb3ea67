use std::collections::HashSet;
use std::time::Duration;

use coordkit::{
    Backend, BackendExt, Error, EventKind, Namespaced, PutRequest, RangeRequest, Result, Txn,
    WatchRequest, WatchStart,
};
use futures::StreamExt;

use crate::context::text;
use crate::context::{assert_invalid, next_response, PATIENCE};
use crate::Ctx;

/// A watch from now delivers later puts and deletes, one response per revision.
pub async fn watch_from_now_sees_puts_and_deletes(ctx: Ctx) -> Result<()> {
    let b = ctx.backend();
    b.put("before", "x").await?;
    let mut w = b.watch(WatchRequest::prefix("")).await?;
    let r1 = b.put("a", "1").await?;
    assert!(b.delete("a").await?);
    let first = next_response(&mut w, "the put").await?;
    assert_eq!(first.revision, r1);
    assert_eq!(first.events[0].kind, EventKind::Put);
    assert_eq!(text(&first.events[0].kv.value), "1");
    let second = next_response(&mut w, "the delete").await?;
    assert!(second.revision > r1);
    assert_eq!(second.events[0].kind, EventKind::Delete);
    assert_eq!(text(&second.events[0].kv.key), "a");
    Ok(())
}

/// `watch_reporting_start` names a revision no older than every change before
/// the call, and delivers every change after it; a backend with the
/// `watch_start` capability always names one, and says that a watch from now
/// created while nothing is written is live.
pub async fn watch_reporting_start_misses_nothing_after_it(ctx: Ctx) -> Result<()> {
    let b = ctx.backend();
    let before = b.put("s/a", "1").await?;
    // The suite may share its server with other clients: a write of theirs
    // between the creation and its check leaves a watch not known live. Such a
    // watch is tried again; one created while nothing was written must be live.
    let mut tries = 0;
    let (mut w, start) = loop {
        let (w, start) = b.watch_reporting_start(WatchRequest::prefix("s/")).await?;
        let Some(WatchStart {
            after: start,
            mut live,
            ..
        }) = start
        else {
            assert!(
                !b.capabilities().watch_start,
                "a backend with the watch_start capability named no start"
            );
            return Ok(());
        };
        assert!(
            start >= before,
            "the watch starts after {start}, before the put at {before} that preceded it"
        );
        let live = tokio::time::timeout(Duration::from_secs(5), &mut live).await;
        if live == Ok(true) {
            break (w, start);
        }
        let now = b.current_revision().await?;
        tries += 1;
        assert!(
            now > start && tries < 20,
            "a watch created while nothing was written is not reported live ({live:?}; \
             the store is still at {now}, the watch started after {start}; try {tries})"
        );
    };
    let after = b.put("s/b", "2").await?;
    let r = next_response(&mut w, "the put after the watch").await?;
    assert_eq!(r.revision, after);
    assert!(r.revision > start);
    // With a start revision, the watch starts right before it.
    let (mut replay, from) = b
        .watch_reporting_start(WatchRequest::prefix("s/").from_revision(before))
        .await?;
    if let Some(from) = from.map(|f| f.after) {
        assert_eq!(
            from,
            before - 1,
            "a watch from {before} starts after {from}"
        );
    }
    let first = next_response(&mut replay, "the replayed put").await?;
    assert_eq!(first.revision, before);
    Ok(())
}

/// A watch from a past revision replays history from there, then follows.
pub async fn watch_replays_from_a_past_revision(ctx: Ctx) -> Result<()> {
    let b = ctx.backend();
    let mut revs = Vec::new();
    for i in 0..5 {
        revs.push(b.put("r", i.to_string()).await?);
    }
    let mut w = b
        .watch(WatchRequest::key("r").from_revision(revs[1]))
        .await?;
    for (i, rev) in revs.iter().enumerate().skip(1) {
        let r = next_response(&mut w, "replayed puts").await?;
        assert_eq!(r.revision, *rev);
        assert_eq!(r.events[0].kv.value, i.to_string().as_bytes());
    }
    let live = b.put("r", "live").await?;
    assert_eq!(next_response(&mut w, "the live put").await?.revision, live);
    Ok(())
}

/// A watch from a future revision delivers nothing earlier: its first response
/// is the first change at or after that revision.
pub async fn watch_from_a_future_revision_starts_there(ctx: Ctx) -> Result<()> {
    let b = ctx.backend();
    let now = b.put("f", "0").await?;
    let mut w = b
        .watch(WatchRequest::key("f").from_revision(now + 3))
        .await?;
    let mut revs = Vec::new();
    for i in 1..=4 {
        revs.push(b.put("f", i.to_string()).await?);
    }
    let first = next_response(&mut w, "the first put at or after the start").await?;
    assert!(
        first.revision >= now + 3,
        "a watch from revision {} delivered revision {}",
        now + 3,
        first.revision
    );
    let expected = revs
        .iter()
        .copied()
        .find(|r| *r >= now + 3)
        .expect("a put there");
    assert_eq!(first.revision, expected);
    Ok(())
}

/// A prefix watch sees only keys under the prefix.
pub async fn watch_prefix_sees_only_the_prefix(ctx: Ctx) -> Result<()> {
    let b = ctx.backend();
    let mut w = b.watch(WatchRequest::prefix("in/")).await?;
    b.put("out", "x").await?;
    b.put("in", "x").await?;
    let rev = b.put("in/a", "x").await?;
    let r = next_response(&mut w, "the put under the prefix").await?;
    assert_eq!(r.revision, rev);
    assert_eq!(r.events.len(), 1);
    assert_eq!(text(&r.events[0].kv.key), "in/a");
    Ok(())
}

/// Writes from many connections reach one watcher in revision order, each exactly once.
pub async fn watch_across_many_writers_is_ordered_without_gaps(ctx: Ctx) -> Result<()> {
    let b = ctx.backend();
    let mut w = b.watch(WatchRequest::prefix("m/")).await?;
    let mut tasks = Vec::new();
    for t in 0..4 {
        let c = ctx.client().await.backend;
        tasks.push(tokio::spawn(async move {
            let mut revs = Vec::new();
            for i in 0..25 {
                revs.push(c.put(format!("m/{t}/{i}"), "v").await?);
            }
            Ok::<_, Error>(revs)
        }));
    }
    let mut written = HashSet::new();
    for t in tasks {
        written.extend(t.await.expect("writer panicked")?);
    }
    assert_eq!(written.len(), 100);
    let mut last = 0;
    let mut seen = HashSet::new();
    while seen.len() < 100 {
        let r = next_response(&mut w, "the writers' puts").await?;
        assert!(r.revision > last, "revision {} after {last}", r.revision);
        last = r.revision;
        assert_eq!(r.events.len(), 1);
        assert!(seen.insert(r.revision));
    }
    assert_eq!(seen, written);
    Ok(())
}

/// With prev_kv, events carry the value before the change.
pub async fn watch_prev_kv_carries_previous_values(ctx: Ctx) -> Result<()> {
    let b = ctx.backend();
    let mut plain = b.watch(WatchRequest::key("p")).await?;
    let mut w = b.watch(WatchRequest::key("p").with_prev_kv()).await?;
    b.put("p", "1").await?;
    b.put("p", "2").await?;
    b.delete("p").await?;
    let r = next_response(&mut w, "first put").await?;
    assert_eq!(r.events[0].prev_kv, None);
    let r = next_response(&mut w, "second put").await?;
    assert_eq!(text(&r.events[0].prev_kv.as_ref().unwrap().value), "1");
    let r = next_response(&mut w, "delete").await?;
    assert_eq!(text(&r.events[0].prev_kv.as_ref().unwrap().value), "2");
    for _ in 0..3 {
        let r = next_response(&mut plain, "events without prev_kv").await?;
        assert_eq!(r.events[0].prev_kv, None);
    }
    Ok(())
}

/// A delete event's key-value holds the key and the deleting revision, nothing else.
pub async fn watch_delete_event_carries_key_and_revision_only(ctx: Ctx) -> Result<()> {
    let b = ctx.backend();
    b.put("d", "value").await?;
    let mut w = b.watch(WatchRequest::key("d")).await?;
    b.delete("d").await?;
    let r = next_response(&mut w, "the delete").await?;
    let kv = &r.events[0].kv;
    assert_eq!(r.events[0].kind, EventKind::Delete);
    assert_eq!(text(&kv.key), "d");
    assert_eq!(kv.mod_revision, r.revision);
    assert_eq!((kv.create_revision, kv.version), (0, 0));
    assert!(kv.value.is_empty());
    assert_eq!(kv.lease, None);
    Ok(())
}

/// A lease's expiry reaches a watcher as one response deleting all its keys.
pub async fn watch_lease_expiry_arrives_as_one_response(ctx: Ctx) -> Result<()> {
    let b = ctx.backend();
    let grant = b.lease_grant(ctx.min_ttl()).await?;
    let mut w = b.watch(WatchRequest::prefix("lx/").with_prev_kv()).await?;
    b.txn(Txn::new().and_then([
        PutRequest::new("lx/a", "1").with_lease(grant.id),
        PutRequest::new("lx/b", "2").with_lease(grant.id),
    ]))
    .await?;
    let put = next_response(&mut w, "the leased puts").await?;
    assert_eq!(put.events.len(), 2);
    let gone = next_response(&mut w, "the expiry").await?;
    assert_eq!(gone.events.len(), 2);
    for e in &gone.events {
        assert_eq!(e.kind, EventKind::Delete);
        assert_eq!(e.prev_kv.as_ref().unwrap().lease, Some(grant.id));
    }
    Ok(())
}

/// A watch starting below the compaction revision yields `Compacted` and ends.
pub async fn watch_from_compacted_revision_yields_compacted(ctx: Ctx) -> Result<()> {
    let b = ctx.backend();
    if !b.capabilities().compaction {
        return expect_unsupported(&ctx).await;
    }
    let _compaction = ctx.compaction().await;
    let old = b.put("w", "1").await?;
    let now = b.put("w", "2").await?;
    b.compact(now).await?;
    let mut w = b.watch(WatchRequest::key("w").from_revision(old)).await?;
    match tokio::time::timeout(PATIENCE, w.next()).await {
        Ok(Some(Err(Error::Compacted { compact_revision }))) => assert_eq!(
            compact_revision, now,
            "Compacted::compact_revision must be the revision compacted at (the oldest readable)"
        ),
        other => panic!("expected Compacted, got {other:?}"),
    }
    assert!(tokio::time::timeout(PATIENCE, w.next())
        .await
        .unwrap()
        .is_none());
    // From the compaction revision on, history is still there.
    let mut ok = b.watch(WatchRequest::key("w").from_revision(now)).await?;
    assert_eq!(
        next_response(&mut ok, "the kept revision").await?.revision,
        now
    );
    Ok(())
}

/// Reads below the compaction revision are `Compacted`; at it, they work.
pub async fn range_at_compacted_revision_is_compacted(ctx: Ctx) -> Result<()> {
    let b = ctx.backend();
    if !b.capabilities().compaction {
        return expect_unsupported(&ctx).await;
    }
    let _compaction = ctx.compaction().await;
    let old = b.put("c", "1").await?;
    let now = b.put("c", "2").await?;
    b.compact(now).await?;
    let result = b.range(RangeRequest::key("c").at_revision(old)).await;
    match result {
        Err(Error::Compacted { compact_revision }) => assert_eq!(
            compact_revision, now,
            "a read below the compaction point must report that point (the oldest readable revision)"
        ),
        other => panic!("a read at compacted revision {old} must be Compacted, got {other:?}"),
    }
    let at = b.range(RangeRequest::key("c").at_revision(now)).await?;
    assert_eq!(text(&at.kvs[0].value), "2");
    Ok(())
}

/// Compacting again at or below the compaction revision is `Compacted`; a future
/// revision is invalid; a backend without compaction says `Unsupported`.
pub async fn compact_rules(ctx: Ctx) -> Result<()> {
    let b = ctx.backend();
    if !b.capabilities().compaction {
        return expect_unsupported(&ctx).await;
    }
    let _compaction = ctx.compaction().await;
    let now = b.put("x", "1").await?;
    b.compact(now).await?;
    let again = b.compact(now).await;
    match again {
        Err(Error::Compacted { compact_revision }) => assert_eq!(
            compact_revision, now,
            "compacting again must report the compaction revision already in force"
        ),
        other => panic!("compacting again at {now} must be Compacted, got {other:?}"),
    }
    assert_invalid(b.compact(now + 1_000_000).await, "revision");
    Ok(())
}

async fn expect_unsupported(ctx: &Ctx) -> Result<()> {
    let b = ctx.backend();
    let rev = b.current_revision().await?;
    let result = b.compact(rev).await;
    assert!(
        matches!(result, Err(Error::Unsupported { .. })),
        "{result:?}"
    );
    Ok(())
}

/// Two namespaces on one store hold the same key apart, and each sees its own keys
/// without the prefix, in reads, results and events.
pub async fn namespaces_isolate_keys_and_strip_their_prefix(ctx: Ctx) -> Result<()> {
    let b = ctx.backend();
    let one = Namespaced::new(b.clone(), "one/");
    let two = Namespaced::new(b.clone(), "two/");
    let mut w = one.watch(WatchRequest::prefix("")).await?;
    one.put("k", "1").await?;
    two.put("k", "2").await?;
    assert_eq!(text(&one.get("k").await?.unwrap().value), "1");
    assert_eq!(text(&two.get("k").await?.unwrap().key), "k");
    assert_eq!(one.get_prefix("").await?.len(), 1);
    let keys: Vec<_> = b
        .get_prefix("")
        .await?
        .iter()
        .map(|kv| kv.key_str())
        .collect();
    assert_eq!(keys, ["one/k", "two/k"]);
    let r = next_response(&mut w, "the namespaced put").await?;
    assert_eq!(r.events.len(), 1);
    assert_eq!(text(&r.events[0].kv.key), "k");
    assert_eq!(one.delete_prefix("").await?, 1);
    assert!(two.get("k").await?.is_some());
    Ok(())
}
