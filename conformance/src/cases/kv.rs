use coordkit::{
    BackendExt, DeleteRequest, EventKind, PutRequest, RangeRequest, Result, SortOrder, Txn,
    TxnOpResponse, WatchRequest,
};

use crate::context::text;
use crate::context::{assert_invalid, next_response};
use crate::Ctx;

/// A new namespace holds no keys.
pub async fn fresh_namespace_is_empty(ctx: Ctx) -> Result<()> {
    let resp = ctx.backend().range(RangeRequest::prefix("")).await?;
    assert!(resp.kvs.is_empty(), "fresh namespace holds {:?}", resp.kvs);
    assert_eq!(resp.count, 0);
    assert!(resp.revision > 0, "revisions are positive");
    Ok(())
}

/// A put is read back with its value, revisions, version 1 and no lease.
pub async fn put_then_get_round_trips(ctx: Ctx) -> Result<()> {
    let b = ctx.backend();
    let rev = b.put("a", b"\x00binary\xff".to_vec()).await?;
    let kv = b.get("a").await?.expect("key written");
    assert_eq!(text(&kv.key), "a");
    assert_eq!(kv.value, b"\x00binary\xff");
    assert_eq!(
        (kv.create_revision, kv.mod_revision, kv.version),
        (rev, rev, 1)
    );
    assert_eq!(kv.lease, None);
    assert!(b.get("missing").await?.is_none());
    Ok(())
}

/// Every write gets a new revision, larger than every earlier one and equal to the
/// key's mod revision; the store's revision is never behind a write's.
pub async fn each_write_gets_a_larger_revision(ctx: Ctx) -> Result<()> {
    let b = ctx.backend();
    let before = b.current_revision().await?;
    let mut last = before;
    for i in 0..10 {
        let rev = b.put(format!("k{i}"), "v").await?;
        assert!(rev > last, "revision {rev} after {last}");
        assert_eq!(b.get(format!("k{i}")).await?.unwrap().mod_revision, rev);
        last = rev;
    }
    assert!(b.current_revision().await? >= last);
    // Seen through a watch, the ten writes are ten distinct revisions.
    let mut w = b
        .watch(WatchRequest::prefix("k").from_revision(before + 1))
        .await?;
    let mut seen = Vec::new();
    while seen.len() < 10 {
        let r = next_response(&mut w, "the ten puts").await?;
        assert_eq!(r.events.len(), 1);
        seen.push(r.revision);
    }
    assert!(seen.windows(2).all(|p| p[0] < p[1]));
    assert_eq!(*seen.last().unwrap(), last);
    Ok(())
}

/// Writing an existing key keeps its create revision and bumps its version.
pub async fn put_again_keeps_create_revision_and_bumps_version(ctx: Ctx) -> Result<()> {
    let b = ctx.backend();
    let r1 = b.put("a", "1").await?;
    let r2 = b.put("a", "2").await?;
    let r3 = b.put("a", "3").await?;
    let kv = b.get("a").await?.unwrap();
    assert_eq!(
        (kv.create_revision, kv.mod_revision, kv.version),
        (r1, r3, 3)
    );
    assert!(r1 < r2 && r2 < r3);
    assert_eq!(text(&kv.value), "3");
    Ok(())
}

/// After a delete, a put creates the key anew: new create revision, version 1.
pub async fn delete_then_put_recreates_the_key(ctx: Ctx) -> Result<()> {
    let b = ctx.backend();
    let r1 = b.put("a", "1").await?;
    b.put("a", "2").await?;
    assert!(b.delete("a").await?);
    assert!(b.get("a").await?.is_none());
    let r4 = b.put("a", "3").await?;
    let kv = b.get("a").await?.unwrap();
    assert_eq!((kv.create_revision, kv.version), (r4, 1));
    assert!(r4 > r1);
    Ok(())
}

/// Deleting a missing key deletes nothing and writes no revision.
pub async fn delete_of_missing_key_changes_nothing(ctx: Ctx) -> Result<()> {
    // Alone in the store: the revision check needs no other writer.
    let _alone = ctx.compaction().await;
    let b = ctx.backend();
    let before = b.put("present", "x").await?;
    let mut w = b
        .watch(WatchRequest::prefix("").from_revision(before + 1))
        .await?;
    let store_revision = b.range(RangeRequest::key("present")).await?.revision;
    let answer = b
        .txn(Txn::new().and_then([DeleteRequest::key("missing")]))
        .await?;
    assert_eq!(
        answer.revision, store_revision,
        "a delete that deleted nothing answered a revision the store is not at"
    );
    assert!(!b.delete("missing").await?);
    assert_eq!(b.delete_prefix("nothing/").await?, 0);
    let after = b.range(RangeRequest::key("present")).await?.revision;
    assert_eq!(
        after, store_revision,
        "a delete that deleted nothing advanced the store's revision from {store_revision} to {after}"
    );
    let marker = b.put("marker", "m").await?;
    let r = next_response(&mut w, "the marker put").await?;
    assert_eq!(r.revision, marker, "the empty deletes produced events");
    assert_eq!(text(&r.events[0].kv.key), "marker");
    Ok(())
}

/// A limit of 0 is `InvalidArgument` naming `limit` (etcd would read it as "no
/// limit", the words as "nothing": refused, so no two backends disagree).
pub async fn range_limit_zero_is_invalid(ctx: Ctx) -> Result<()> {
    let b = ctx.backend();
    b.put("z", "v").await?;
    assert_invalid(
        b.range(RangeRequest::prefix("").with_limit(0)).await,
        "limit",
    );
    Ok(())
}

/// A transaction without writes produces no event and changes no key.
pub async fn read_only_txn_keeps_the_revision(ctx: Ctx) -> Result<()> {
    let b = ctx.backend();
    let rev = b.put("a", "1").await?;
    let mut w = b
        .watch(WatchRequest::prefix("").from_revision(rev + 1))
        .await?;
    let resp = b
        .txn(Txn::new().and_then([RangeRequest::key("a"), RangeRequest::prefix("")]))
        .await?;
    assert!(resp.succeeded);
    assert!(resp.revision >= rev);
    let empty = b.txn(Txn::new()).await?;
    assert!(empty.succeeded && empty.responses.is_empty());
    // A lone read (a backend may send a lone write some other way, never a read).
    let lone = b.txn(Txn::new().and_then([RangeRequest::key("a")])).await?;
    assert!(lone.succeeded);
    let read = lone.first_range().expect("the lone read's response");
    assert_eq!(read.kvs.len(), 1);
    assert_eq!(text(&read.kvs[0].value), "1");
    assert_eq!(b.get("a").await?.unwrap().mod_revision, rev);
    let marker = b.put("marker", "m").await?;
    assert_eq!(next_response(&mut w, "marker").await?.revision, marker);
    Ok(())
}

/// A prefix range returns exactly the keys under the prefix, in key order.
pub async fn range_prefix_returns_only_the_prefix_in_key_order(ctx: Ctx) -> Result<()> {
    let b = ctx.backend();
    for k in ["p/c", "p/a", "q", "p", "p/b", "pa", "o"] {
        b.put(k, k).await?;
    }
    let kvs = b.get_prefix("p/").await?;
    let keys: Vec<_> = kvs.iter().map(|kv| kv.key.clone()).collect();
    assert_eq!(
        keys,
        vec![b"p/a".to_vec(), b"p/b".to_vec(), b"p/c".to_vec()]
    );
    let all = b.range(RangeRequest::prefix("")).await?;
    assert_eq!(all.count, 7);
    Ok(())
}

/// A limit truncates the result, sets `more`, and `count` reports every match.
pub async fn range_limit_reports_more_and_total_count(ctx: Ctx) -> Result<()> {
    let b = ctx.backend();
    for i in 0..5 {
        b.put(format!("l/{i}"), "v").await?;
    }
    let r = b.range(RangeRequest::prefix("l/").with_limit(2)).await?;
    assert_eq!(r.kvs.len(), 2);
    assert!(r.more);
    assert_eq!(r.count, 5);
    assert_eq!(text(&r.kvs[0].key), "l/0");
    let r = b.range(RangeRequest::prefix("l/").with_limit(5)).await?;
    assert!(!r.more);
    assert_eq!(r.kvs.len(), 5);
    Ok(())
}

/// Sorting by create revision works both ways, before the limit applies.
pub async fn range_sorts_by_create_revision(ctx: Ctx) -> Result<()> {
    let b = ctx.backend();
    for k in ["s/c", "s/a", "s/b"] {
        b.put(k, "v").await?;
    }
    b.put("s/c", "again").await?; // a rewrite keeps the create revision
    let asc = b
        .range(RangeRequest::prefix("s/").sort_by_create_revision(SortOrder::Ascend))
        .await?;
    let keys: Vec<_> = asc.kvs.iter().map(|kv| kv.key_str()).collect();
    assert_eq!(keys, ["s/c", "s/a", "s/b"]);
    let desc = b
        .range(
            RangeRequest::prefix("s/")
                .sort_by_create_revision(SortOrder::Descend)
                .with_limit(1),
        )
        .await?;
    assert_eq!(desc.kvs.len(), 1);
    assert_eq!(text(&desc.kvs[0].key), "s/b");
    assert!(desc.more);
    Ok(())
}

/// A range filtered by max create revision returns only the older keys (newest first
/// with a descending sort: the claim just before a waiter's own), and counts all.
pub async fn range_filters_by_max_create_revision(ctx: Ctx) -> Result<()> {
    let b = ctx.backend();
    let r1 = b.put("q/1", "v").await?;
    let r2 = b.put("q/2", "v").await?;
    let r3 = b.put("q/3", "v").await?;
    let before3 = b
        .range(
            RangeRequest::prefix("q/")
                .with_max_create_revision(r3 - 1)
                .sort_by_create_revision(SortOrder::Descend)
                .with_limit(1),
        )
        .await?;
    let keys: Vec<_> = before3.kvs.iter().map(|kv| kv.key_str()).collect();
    assert_eq!(keys, ["q/2"]);
    assert!(before3.more, "q/1 also matched");
    assert_eq!(before3.count, 3, "count ignores the filter, as on etcd");
    let none = b
        .range(RangeRequest::prefix("q/").with_max_create_revision(r1 - 1))
        .await?;
    assert!(none.kvs.is_empty());
    let upto2 = b
        .range(RangeRequest::prefix("q/").with_max_create_revision(r2))
        .await?;
    let keys: Vec<_> = upto2.kvs.iter().map(|kv| kv.key_str()).collect();
    assert_eq!(keys, ["q/1", "q/2"]);
    assert!(!upto2.more);
    // `more` counts what the filter lets through: q/3 is filtered out, so a limit
    // of 2 leaves nothing more.
    let filtered = b
        .range(
            RangeRequest::prefix("q/")
                .with_max_create_revision(r3 - 1)
                .with_limit(2),
        )
        .await?;
    assert_eq!(filtered.kvs.len(), 2);
    assert!(
        !filtered.more,
        "`more` must apply after the max_create_revision filter: only q/1 and q/2 match"
    );
    Ok(())
}

/// A count-only range returns the count and no key-values.
pub async fn range_count_only_returns_no_values(ctx: Ctx) -> Result<()> {
    let b = ctx.backend();
    for i in 0..3 {
        b.put(format!("c/{i}"), "v").await?;
    }
    let r = b.range(RangeRequest::prefix("c/").count_only()).await?;
    assert_eq!(r.count, 3);
    assert!(r.kvs.is_empty());
    assert!(
        !r.more,
        "a count-only range returns no key, so nothing is left to return"
    );
    let limited = b
        .range(RangeRequest::prefix("c/").count_only().with_limit(1))
        .await?;
    assert_eq!(limited.count, 3, "count ignores the limit");
    assert!(limited.kvs.is_empty());
    assert!(
        !limited.more,
        "a count-only range with a limit reports no more (as etcd does)"
    );
    Ok(())
}

/// A range at a past revision sees the store as it was, deleted keys included.
pub async fn range_at_past_revision_sees_old_state(ctx: Ctx) -> Result<()> {
    let b = ctx.backend();
    let r1 = b.put("h", "1").await?;
    let r2 = b.put("h", "2").await?;
    b.delete("h").await?;
    let at1 = b.range(RangeRequest::key("h").at_revision(r1)).await?;
    assert_eq!(text(&at1.kvs[0].value), "1");
    let at2 = b.range(RangeRequest::key("h").at_revision(r2)).await?;
    assert_eq!(
        (at2.kvs[0].value.as_slice(), at2.kvs[0].version),
        (&b"2"[..], 2)
    );
    assert!(b.get("h").await?.is_none());
    let before = b.range(RangeRequest::key("h").at_revision(r1 - 1)).await?;
    assert!(before.kvs.is_empty());
    Ok(())
}

/// Reading at a revision the store has not reached is invalid.
pub async fn range_at_future_revision_is_invalid(ctx: Ctx) -> Result<()> {
    let b = ctx.backend();
    let now = b.current_revision().await?;
    assert_invalid(
        b.range(RangeRequest::key("x").at_revision(now + 1_000_000))
            .await,
        "revision",
    );
    Ok(())
}

/// A prefix delete removes exactly the keys under the prefix, in one revision.
pub async fn delete_prefix_deletes_only_the_prefix_in_one_revision(ctx: Ctx) -> Result<()> {
    let b = ctx.backend();
    for k in ["d/1", "d/2", "d/3", "d", "e/1"] {
        b.put(k, "v").await?;
    }
    let start = b.current_revision().await?;
    let mut w = b
        .watch(WatchRequest::prefix("").from_revision(start + 1))
        .await?;
    assert_eq!(b.delete_prefix("d/").await?, 3);
    let r = next_response(&mut w, "the prefix delete").await?;
    assert_eq!(r.events.len(), 3);
    assert!(r.events.iter().all(|e| e.kind == EventKind::Delete));
    let left: Vec<_> = b
        .get_prefix("")
        .await?
        .iter()
        .map(|kv| kv.key_str())
        .collect();
    assert_eq!(left, ["d", "e/1"]);
    Ok(())
}

/// Puts and deletes return the previous key-values when asked.
pub async fn prev_kv_on_put_and_delete(ctx: Ctx) -> Result<()> {
    let b = ctx.backend();
    let resp = b
        .txn(Txn::new().and_then([PutRequest::new("a", "1").with_prev_kv()]))
        .await?;
    assert_eq!(resp.responses[0], TxnOpResponse::Put { prev_kv: None });
    let resp = b
        .txn(Txn::new().and_then([PutRequest::new("a", "2").with_prev_kv()]))
        .await?;
    match &resp.responses[0] {
        TxnOpResponse::Put { prev_kv: Some(kv) } => assert_eq!(text(&kv.value), "1"),
        other => panic!("expected the previous value, got {other:?}"),
    }
    b.put("a2", "x").await?;
    let resp = b
        .txn(Txn::new().and_then([DeleteRequest::prefix("a").with_prev_kv()]))
        .await?;
    match &resp.responses[0] {
        TxnOpResponse::Delete {
            deleted: 2,
            prev_kvs,
        } => {
            let values: Vec<_> = prev_kvs.iter().map(|kv| kv.value.clone()).collect();
            assert_eq!(values, vec![b"2".to_vec(), b"x".to_vec()]);
        }
        other => panic!("expected two deleted key-values, got {other:?}"),
    }
    Ok(())
}
