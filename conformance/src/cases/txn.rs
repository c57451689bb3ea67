use std::sync::Arc;

use coordkit::{
    Backend, BackendExt, Compare, CompareOp, Created, DeleteRequest, Error, EventKind, PutRequest,
    RangeRequest, ReadConsistency, Result, Txn, TxnOp, TxnOpResponse, WatchRequest,
};

use crate::context::text;
use crate::context::{assert_invalid, next_response};
use crate::Ctx;

/// Run a txn guarded by `compare` that puts `then` on success and `else` on failure
/// into key "out"; return whether it succeeded and check the branch's effect.
async fn branch(b: &Arc<dyn Backend>, compare: Compare) -> Result<bool> {
    let resp = b
        .txn(
            Txn::new()
                .when([compare])
                .and_then([PutRequest::new("out", "then")])
                .or_else([PutRequest::new("out", "else")]),
        )
        .await?;
    let out = b.get("out").await?.unwrap().value;
    assert_eq!(out, if resp.succeeded { b"then" } else { b"else" });
    assert_eq!(resp.responses.len(), 1);
    Ok(resp.succeeded)
}

/// Value compares: each operator, true and false.
pub async fn compare_value_in_both_branches(ctx: Ctx) -> Result<()> {
    let b = ctx.backend();
    b.put("k", "m").await?;
    use CompareOp::*;
    for (op, operand, expect) in [
        (Equal, "m", true),
        (Equal, "x", false),
        (NotEqual, "x", true),
        (NotEqual, "m", false),
        (Less, "n", true),
        (Less, "a", false),
        (Greater, "a", true),
        (Greater, "z", false),
    ] {
        let got = branch(&b, Compare::value("k", op, operand)).await?;
        assert_eq!(got, expect, "value {op:?} {operand}");
    }
    Ok(())
}

/// Version compares: each operator, true and false.
pub async fn compare_version_in_both_branches(ctx: Ctx) -> Result<()> {
    let b = ctx.backend();
    b.put("k", "1").await?;
    b.put("k", "2").await?;
    use CompareOp::*;
    for (op, v, expect) in [
        (Equal, 2, true),
        (Equal, 1, false),
        (NotEqual, 1, true),
        (Less, 3, true),
        (Less, 2, false),
        (Greater, 1, true),
        (Greater, 2, false),
    ] {
        assert_eq!(
            branch(&b, Compare::version("k", op, v)).await?,
            expect,
            "{op:?} {v}"
        );
    }
    Ok(())
}

/// Create-revision compares: each operator, true and false.
pub async fn compare_create_revision_in_both_branches(ctx: Ctx) -> Result<()> {
    let b = ctx.backend();
    let c = b.put("k", "1").await?;
    b.put("k", "2").await?;
    use CompareOp::*;
    for (op, r, expect) in [
        (Equal, c, true),
        (Equal, c + 1, false),
        (NotEqual, c, false),
        (Less, c + 1, true),
        (Greater, c - 1, true),
        (Greater, c, false),
    ] {
        let got = branch(&b, Compare::create_revision("k", op, r)).await?;
        assert_eq!(got, expect, "{op:?} {r}");
    }
    Ok(())
}

/// Mod-revision compares: each operator, true and false.
pub async fn compare_mod_revision_in_both_branches(ctx: Ctx) -> Result<()> {
    let b = ctx.backend();
    b.put("k", "1").await?;
    let m = b.put("k", "2").await?;
    use CompareOp::*;
    for (op, r, expect) in [
        (Equal, m, true),
        (Equal, m - 1, false),
        (NotEqual, m - 1, true),
        (Less, m + 1, true),
        (Less, m, false),
        (Greater, m - 1, true),
    ] {
        let got = branch(&b, Compare::mod_revision("k", op, r)).await?;
        assert_eq!(got, expect, "{op:?} {r}");
    }
    Ok(())
}

/// Lease compares: attached lease, other lease, no lease.
pub async fn compare_lease_in_both_branches(ctx: Ctx) -> Result<()> {
    let b = ctx.backend();
    let lease = b.lease_grant(60).await?.id;
    let other = b.lease_grant(60).await?.id;
    b.put_with_lease("k", "v", lease).await?;
    b.put("plain", "v").await?;
    use CompareOp::*;
    assert!(branch(&b, Compare::lease("k", Equal, Some(lease))).await?);
    assert!(!branch(&b, Compare::lease("k", Equal, Some(other))).await?);
    assert!(branch(&b, Compare::lease("k", NotEqual, None)).await?);
    assert!(branch(&b, Compare::lease("plain", Equal, None)).await?);
    assert!(!branch(&b, Compare::lease("plain", NotEqual, None)).await?);
    b.lease_revoke(lease).await?;
    b.lease_revoke(other).await?;
    Ok(())
}

/// A missing key compares as version, revisions and lease 0; a value compare on it
/// is false whatever the operator.
pub async fn compare_on_missing_key_uses_zero_and_fails_on_value(ctx: Ctx) -> Result<()> {
    let b = ctx.backend();
    use CompareOp::*;
    assert!(branch(&b, Compare::version("nope", Equal, 0)).await?);
    assert!(branch(&b, Compare::create_revision("nope", Equal, 0)).await?);
    assert!(branch(&b, Compare::mod_revision("nope", Less, 1)).await?);
    assert!(branch(&b, Compare::lease("nope", Equal, None)).await?);
    assert!(!branch(&b, Compare::value("nope", NotEqual, "x")).await?);
    assert!(!branch(&b, Compare::value("nope", Equal, "")).await?);
    // Several compares: all must hold.
    b.put("k", "v").await?;
    let resp = b
        .txn(
            Txn::new()
                .when([
                    Compare::version("k", Equal, 1),
                    Compare::value("k", Equal, "other"),
                ])
                .and_then([PutRequest::new("k", "changed")]),
        )
        .await?;
    assert!(!resp.succeeded);
    assert_eq!(text(&b.get("k").await?.unwrap().value), "v");
    Ok(())
}

/// All writes of a transaction share one revision and reach a watcher as one response.
pub async fn multi_op_txn_is_atomic_and_watched_as_one_response(ctx: Ctx) -> Result<()> {
    let b = ctx.backend();
    b.put("x/old", "o").await?;
    let start = b.current_revision().await?;
    let mut w = b
        .watch(WatchRequest::prefix("x/").from_revision(start + 1))
        .await?;
    let resp = b
        .txn(Txn::new().and_then([
            TxnOp::Put(PutRequest::new("x/a", "1")),
            TxnOp::Put(PutRequest::new("x/b", "2")),
            TxnOp::Delete(DeleteRequest::key("x/old")),
            TxnOp::Put(PutRequest::new("x/c", "3")),
        ]))
        .await?;
    let r = next_response(&mut w, "the transaction").await?;
    assert_eq!(r.revision, resp.revision);
    let kinds: Vec<_> = r.events.iter().map(|e| (e.kind, e.kv.key_str())).collect();
    assert_eq!(
        kinds,
        [
            (EventKind::Put, "x/a".to_string()),
            (EventKind::Put, "x/b".to_string()),
            (EventKind::Delete, "x/old".to_string()),
            (EventKind::Put, "x/c".to_string()),
        ]
    );
    for key in ["x/a", "x/b", "x/c"] {
        assert_eq!(b.get(key).await?.unwrap().mod_revision, resp.revision);
    }
    Ok(())
}

/// A read inside a transaction sees the writes made earlier in the same branch.
pub async fn txn_range_sees_earlier_writes_of_the_same_txn(ctx: Ctx) -> Result<()> {
    let b = ctx.backend();
    let resp = b
        .txn(Txn::new().and_then([
            TxnOp::Range(RangeRequest::key("t")),
            TxnOp::Put(PutRequest::new("t", "new")),
            TxnOp::Range(RangeRequest::key("t")),
        ]))
        .await?;
    assert_eq!(
        resp.responses.len(),
        3,
        "a transaction answers each of its 3 operations, in order: {:?}",
        resp.responses
    );
    match (&resp.responses[0], &resp.responses[2]) {
        (TxnOpResponse::Range(before), TxnOpResponse::Range(after)) => {
            assert!(
                before.kvs.is_empty(),
                "a range before the txn's put must not see it: {:?}",
                before.kvs
            );
            let seen = after.kvs.first().unwrap_or_else(|| {
                panic!("a range after a put of the same txn must see the put; it saw no key")
            });
            assert_eq!(
                String::from_utf8_lossy(&seen.value),
                "new",
                "a range after a put of the same txn must see the new value"
            );
            assert_eq!(
                seen.mod_revision, resp.revision,
                "the put seen inside the txn carries the txn's revision"
            );
        }
        other => panic!("expected a range as the 1st and 3rd answers, got {other:?}"),
    }
    Ok(())
}

/// A read inside a transaction reports the transaction's revision: after the
/// transaction's writes when it has any, else the store's current revision.
pub async fn txn_range_reports_the_txn_revision(ctx: Ctx) -> Result<()> {
    let b = ctx.backend();
    let resp = b
        .txn(Txn::new().and_then([
            TxnOp::Put(PutRequest::new("rr", "1")),
            TxnOp::Range(RangeRequest::key("rr")),
        ]))
        .await?;
    match &resp.responses[1] {
        TxnOpResponse::Range(r) => assert_eq!(
            r.revision, resp.revision,
            "a read in a writing txn reports the txn's revision"
        ),
        other => panic!("expected a range as the 2nd answer, got {other:?}"),
    }
    let read = b
        .txn(Txn::new().and_then([TxnOp::Range(RangeRequest::key("rr"))]))
        .await?;
    match &read.responses[0] {
        TxnOpResponse::Range(r) => {
            assert_eq!(
                r.revision, read.revision,
                "a read in a read-only txn reports the txn's revision"
            );
            assert!(
                r.revision >= resp.revision,
                "and it is the store's current revision, not an older one"
            );
        }
        other => panic!("expected a range, got {other:?}"),
    }
    Ok(())
}

/// Two writes of one branch touching the same key are rejected, and nothing applies.
pub async fn txn_writing_one_key_twice_is_invalid(ctx: Ctx) -> Result<()> {
    // The backend itself, not only through the suite's namespace wrapper (which
    // validates too, and would hide a backend that does not).
    let raw = ctx.raw_client().await.backend;
    let key = format!("{}d", String::from_utf8_lossy(ctx.namespace()));
    assert_invalid(
        raw.txn(Txn::new().and_then([
            PutRequest::new(key.clone(), "1"),
            PutRequest::new(key.clone(), "2"),
        ]))
        .await,
        "txn",
    );
    let b = ctx.backend();
    assert_invalid(
        b.txn(Txn::new().and_then([PutRequest::new("d", "1"), PutRequest::new("d", "2")]))
            .await,
        "txn",
    );
    assert_invalid(
        b.txn(Txn::new().and_then([
            TxnOp::Put(PutRequest::new("p/x", "1")),
            TxnOp::Delete(DeleteRequest::prefix("p/")),
        ]))
        .await,
        "txn",
    );
    assert!(b.get("d").await?.is_none());
    assert!(b.get("p/x").await?.is_none());
    Ok(())
}

/// A compare-and-swap on a stale version fails with the current version; expected 0
/// creates only.
pub async fn compare_and_swap_conflict_carries_current_version(ctx: Ctx) -> Result<()> {
    let b = ctx.backend();
    let v1 = b.compare_and_swap("cas", 0, "1").await?;
    match b.compare_and_swap("cas", 0, "again").await {
        Err(Error::VersionConflict { current, key }) => {
            assert_eq!(current, v1);
            assert_eq!(key, "cas");
        }
        other => panic!("expected VersionConflict, got {other:?}"),
    }
    let v2 = b.compare_and_swap("cas", v1, "2").await?;
    match b.compare_and_swap("cas", v1, "stale").await {
        Err(Error::VersionConflict { current, .. }) => assert_eq!(current, v2),
        other => panic!("expected VersionConflict, got {other:?}"),
    }
    match b.compare_and_swap("absent", 5, "x").await {
        Err(Error::VersionConflict { current, .. }) => assert_eq!(current, 0),
        other => panic!("expected VersionConflict with 0, got {other:?}"),
    }
    assert_eq!(text(&b.get("cas").await?.unwrap().value), "2");
    Ok(())
}

/// `create_if_absent` creates once, then reports the existing key.
pub async fn create_if_absent_returns_the_existing_key(ctx: Ctx) -> Result<()> {
    let b = ctx.backend();
    let rev = match b.create_if_absent("c", "first", None).await? {
        Created::Created(rev) => rev,
        other => panic!("expected creation, got {other:?}"),
    };
    match b.create_if_absent("c", "second", None).await? {
        Created::Exists(kv) => {
            assert_eq!(text(&kv.value), "first");
            assert_eq!(kv.create_revision, rev);
        }
        other => panic!("expected the existing key, got {other:?}"),
    }
    Ok(())
}

/// 8 tasks × 50 read-CAS-retry increments of one counter end at exactly 400.
pub async fn concurrent_cas_increments_reach_exactly_400(ctx: Ctx) -> Result<()> {
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let b = ctx.client().await.backend;
        tasks.push(tokio::spawn(async move {
            for _ in 0..50 {
                loop {
                    let (n, version) = match b.get("counter").await? {
                        Some(kv) => (
                            String::from_utf8_lossy(&kv.value).parse::<u64>().unwrap(),
                            kv.mod_revision,
                        ),
                        None => (0, 0),
                    };
                    match b
                        .compare_and_swap("counter", version, (n + 1).to_string())
                        .await
                    {
                        Ok(_) => break,
                        Err(Error::VersionConflict { .. }) => continue,
                        Err(e) => return Err(e),
                    }
                }
            }
            Ok::<_, Error>(())
        }));
    }
    for t in tasks {
        t.await.expect("task panicked")?;
    }
    let kv = ctx.backend().get("counter").await?.unwrap();
    assert_eq!(text(&kv.value), "400");
    assert_eq!(kv.version, 400);
    Ok(())
}

/// Four clients run random gets, puts, deletes and compare-and-sets on three keys
/// at once: the recorded history has a linearization (checked key by key, as
/// Porcupine does; see `coordkit_conformance::linearizability`).
pub async fn concurrent_history_is_linearizable(ctx: Ctx) -> Result<()> {
    let mut clients = vec![ctx.backend()];
    for _ in 0..3 {
        clients.push(ctx.client().await.backend);
    }
    let history = crate::linearizability::run_history(clients, 3, 60, 11, |_| {}).await;
    assert_eq!(history.len(), 240);
    if let Err(violation) = crate::linearizability::check(&history) {
        panic!("the store is not linearizable: {violation}");
    }
    Ok(())
}

/// An `Observed` read-only transaction is answered from a state that includes
/// everything its handle has observed: its own writes, and the events its
/// watches delivered of another client's writes (compares and reads alike).
pub async fn observed_read_sees_what_its_handle_observed(ctx: Ctx) -> Result<()> {
    let b = ctx.backend();
    let other = ctx.client().await.backend;
    let observed = |key: &str, compare: Option<Compare>| {
        Txn::new()
            .when(compare)
            .and_then([RangeRequest::key(key)])
            .with_consistency(ReadConsistency::Observed)
    };
    let own = b.put("own", "1").await?;
    let r = b.txn(observed("own", None)).await?;
    assert!(
        r.succeeded && r.revision >= own,
        "{r:?} after a put at {own}"
    );
    let read = r.first_range().expect("the read's response");
    assert_eq!(text(&read.kvs[0].value), "1");
    let mut w = b.watch(WatchRequest::key("theirs")).await?;
    for i in 0..20 {
        let theirs = other.put("theirs", i.to_string()).await?;
        assert_eq!(next_response(&mut w, "their put").await?.revision, theirs);
        let seen = Compare::mod_revision("theirs", CompareOp::Equal, theirs);
        let r = b.txn(observed("theirs", Some(seen))).await?;
        assert!(
            r.succeeded && r.revision >= theirs,
            "an observed read after the event of revision {theirs} answered {r:?}"
        );
        let read = r.first_range().expect("the read's response");
        assert_eq!(text(&read.kvs[0].value), i.to_string());
    }
    Ok(())
}

/// `ReadConsistency::Observed` on a transaction that writes is `InvalidArgument`
/// naming `consistency`, and applies nothing.
pub async fn observed_read_with_a_write_is_invalid(ctx: Ctx) -> Result<()> {
    let raw = ctx.raw_client().await.backend;
    let key = format!("{}w", String::from_utf8_lossy(ctx.namespace()));
    let writes = [
        Txn::new().and_then([PutRequest::new(key.clone(), "1")]),
        Txn::new()
            .and_then([RangeRequest::key(key.clone())])
            .or_else([DeleteRequest::key(key.clone())]),
    ];
    for txn in writes {
        let txn = txn.with_consistency(ReadConsistency::Observed);
        assert_invalid(raw.txn(txn.clone()).await, "consistency");
    }
    let b = ctx.backend();
    assert_invalid(
        b.txn(
            Txn::new()
                .and_then([PutRequest::new("w", "1")])
                .with_consistency(ReadConsistency::Observed),
        )
        .await,
        "consistency",
    );
    assert!(b.get("w").await?.is_none(), "a refused write applied");
    Ok(())
}
