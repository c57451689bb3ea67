use coordkit::{
    BackendExt, Compare, CompareOp, LeaseId, PutRequest, RangeRequest, Result, Txn, WatchRequest,
};

use crate::context::assert_invalid;
use crate::Ctx;

/// An empty key is rejected by every call that takes one, naming the argument.
pub async fn empty_key_is_invalid_everywhere(ctx: Ctx) -> Result<()> {
    // The backend itself, not only through the suite's namespace wrapper (which
    // validates too, and would hide a backend that does not).
    let raw = ctx.raw_client().await.backend;
    assert_invalid(raw.get("").await, "key");
    assert_invalid(
        raw.txn(Txn::new().and_then([PutRequest::new("", "v")]))
            .await,
        "key",
    );
    let b = ctx.backend();
    assert_invalid(b.put("", "v").await, "key");
    assert_invalid(b.get("").await, "key");
    assert_invalid(b.delete("").await, "key");
    assert_invalid(b.watch(WatchRequest::key("")).await.map(|_| ()), "key");
    assert_invalid(
        b.txn(Txn::new().when([Compare::version("", CompareOp::Equal, 0)]))
            .await,
        "compare.key",
    );
    assert_invalid(
        b.txn(Txn::new().or_else([RangeRequest::key("")])).await,
        "key",
    );
    Ok(())
}

/// TTLs of zero, below zero, below the backend's minimum or above its maximum are
/// rejected; the minimum itself is accepted.
pub async fn ttl_rules_are_enforced(ctx: Ctx) -> Result<()> {
    let b = ctx.backend();
    let limits = b.limits();
    assert_invalid(b.lease_grant(0).await, "ttl");
    assert_invalid(b.lease_grant(-5).await, "ttl");
    if limits.min_lease_ttl > 1 {
        assert_invalid(b.lease_grant(limits.min_lease_ttl - 1).await, "ttl");
    }
    assert_invalid(b.lease_grant(limits.max_lease_ttl + 1).await, "ttl");
    let grant = b.lease_grant(limits.min_lease_ttl).await?;
    assert_eq!(grant.ttl, limits.min_lease_ttl);
    b.lease_revoke(grant.id).await?;
    // A lease id nobody granted is unknown, not a crash.
    let r = b.lease_keep_alive(LeaseId(0x0bad_0bad_0bad)).await;
    assert!(
        matches!(r, Err(coordkit::Error::LeaseNotFound { .. })),
        "{r:?}"
    );
    Ok(())
}

/// A value over the backend's limit is rejected before it reaches the store; one at
/// the limit is stored whole.
pub async fn value_over_the_limit_is_invalid(ctx: Ctx) -> Result<()> {
    let b = ctx.backend();
    let max = b.limits().max_value_bytes;
    assert_invalid(b.put("big", vec![7u8; max + 1]).await, "value");
    assert!(b.get("big").await?.is_none());
    let rev = b.put("big", vec![7u8; max - 64]).await?;
    let kv = b.get("big").await?.unwrap();
    assert_eq!((kv.value.len(), kv.mod_revision), (max - 64, rev));
    Ok(())
}

/// Zero or negative revisions are rejected wherever a revision is given.
pub async fn non_positive_revisions_are_invalid(ctx: Ctx) -> Result<()> {
    let b = ctx.backend();
    assert_invalid(
        b.range(RangeRequest::key("k").at_revision(0)).await,
        "revision",
    );
    assert_invalid(
        b.range(RangeRequest::prefix("k").with_max_create_revision(0))
            .await,
        "max_create_revision",
    );
    assert_invalid(
        b.watch(WatchRequest::key("k").from_revision(-1))
            .await
            .map(|_| ()),
        "start_revision",
    );
    assert_invalid(b.compact(0).await, "revision");
    assert_invalid(b.compare_and_swap("k", -1, "v").await, "expected");
    Ok(())
}

/// A branch with more operations than the backend allows is rejected whole.
pub async fn too_many_txn_ops_is_invalid(ctx: Ctx) -> Result<()> {
    let b = ctx.backend();
    let n = b.limits().max_txn_ops + 1;
    let ops: Vec<_> = (0..n)
        .map(|i| PutRequest::new(format!("t/{i}"), "v"))
        .collect();
    assert_invalid(b.txn(Txn::new().and_then(ops)).await, "txn");
    assert!(b.get_prefix("t/").await?.is_empty());
    Ok(())
}
