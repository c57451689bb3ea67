use std::time::Duration;

use coordkit::{BackendExt, Error, EventKind, PutRequest, Result, Txn, WatchRequest};

use crate::context::next_response;
use crate::context::text;
use crate::Ctx;

/// time-to-live reports the granted TTL, the remaining TTL and the attached keys.
pub async fn lease_time_to_live_lists_attached_keys(ctx: Ctx) -> Result<()> {
    let b = ctx.backend();
    let grant = b.lease_grant(60).await?;
    assert_eq!(grant.ttl, 60);
    b.put_with_lease("l/1", "a", grant.id).await?;
    b.put_with_lease("l/2", "b", grant.id).await?;
    let info = b.lease_time_to_live(grant.id).await?;
    assert_eq!(info.id, grant.id);
    assert_eq!(info.granted_ttl, 60);
    assert!(
        info.remaining_ttl > 50 && info.remaining_ttl <= 60,
        "{info:?}"
    );
    assert_eq!(info.keys, vec![b"l/1".to_vec(), b"l/2".to_vec()]);
    assert_eq!(b.get("l/1").await?.unwrap().lease, Some(grant.id));
    b.lease_revoke(grant.id).await?;
    Ok(())
}

/// When a lease runs out, all its keys are deleted in one revision and the lease is
/// gone.
pub async fn lease_expiry_deletes_all_keys_in_one_revision(ctx: Ctx) -> Result<()> {
    let b = ctx.backend();
    let ttl = ctx.min_ttl();
    let grant = b.lease_grant(ttl).await?;
    let r = b
        .txn(Txn::new().and_then([
            PutRequest::new("e/1", "a").with_lease(grant.id),
            PutRequest::new("e/2", "b").with_lease(grant.id),
            PutRequest::new("e/3", "c").with_lease(grant.id),
        ]))
        .await?;
    b.put("e/keep", "no lease").await?;
    let mut w = b
        .watch(WatchRequest::prefix("e/").from_revision(r.revision + 1))
        .await?;
    let _ = next_response(&mut w, "the unleased put").await?;
    let gone = next_response(&mut w, "the lease's expiry").await?;
    assert_eq!(gone.events.len(), 3, "{gone:?}");
    assert!(gone.events.iter().all(|e| e.kind == EventKind::Delete));
    assert!(b.get("e/1").await?.is_none());
    assert!(b.get("e/keep").await?.is_some());
    match b.lease_time_to_live(grant.id).await {
        Err(Error::LeaseNotFound { id }) => assert_eq!(id, grant.id.0),
        other => panic!("expected LeaseNotFound, got {other:?}"),
    }
    Ok(())
}

/// Keep-alives renew a lease past its original deadline.
pub async fn keep_alive_extends_the_lease(ctx: Ctx) -> Result<()> {
    let b = ctx.backend();
    // Renewing every TTL/2 leaves TTL/2 of slack for a slow machine.
    let ttl = ctx.min_ttl().max(4);
    let grant = b.lease_grant(ttl).await?;
    b.put_with_lease("ka", "v", grant.id).await?;
    let step = Duration::from_millis(ttl as u64 * 1000 / 2);
    // Three half-TTL steps: 1.5 TTLs in all, past the first deadline.
    for _ in 0..3 {
        tokio::time::sleep(step).await;
        assert_eq!(b.lease_keep_alive(grant.id).await?, ttl);
    }
    assert!(
        b.get("ka").await?.is_some(),
        "kept-alive lease lost its key"
    );
    assert!(b.lease_time_to_live(grant.id).await?.remaining_ttl >= ttl - 1);
    b.lease_revoke(grant.id).await?;
    Ok(())
}

/// A revoked lease deletes its keys at once and is then unknown everywhere.
pub async fn revoke_deletes_keys_and_forgets_the_lease(ctx: Ctx) -> Result<()> {
    let b = ctx.backend();
    let grant = b.lease_grant(60).await?;
    b.put_with_lease("r/1", "a", grant.id).await?;
    b.put_with_lease("r/2", "b", grant.id).await?;
    b.lease_revoke(grant.id).await?;
    assert!(b.get_prefix("r/").await?.is_empty());
    for result in [
        b.lease_keep_alive(grant.id).await.map(|_| ()),
        b.lease_time_to_live(grant.id).await.map(|_| ()),
        b.lease_revoke(grant.id).await,
        b.put_with_lease("r/3", "c", grant.id).await.map(|_| ()),
    ] {
        assert!(
            matches!(result, Err(Error::LeaseNotFound { id }) if id == grant.id.0),
            "{result:?}"
        );
    }
    Ok(())
}

/// A put naming an unknown lease fails with LeaseNotFound and applies nothing, not
/// even the other operations of its transaction.
pub async fn put_with_unknown_lease_is_lease_not_found_and_applies_nothing(ctx: Ctx) -> Result<()> {
    let b = ctx.backend();
    let grant = b.lease_grant(60).await?;
    b.lease_revoke(grant.id).await?;
    let result = b
        .txn(Txn::new().and_then([
            PutRequest::new("u/plain", "x"),
            PutRequest::new("u/leased", "y").with_lease(grant.id),
        ]))
        .await;
    assert!(
        matches!(result, Err(Error::LeaseNotFound { .. })),
        "{result:?}"
    );
    assert!(b.get_prefix("u/").await?.is_empty());
    Ok(())
}

/// Writing a leased key without a lease detaches it: it outlives the lease.
pub async fn put_without_lease_detaches_the_key(ctx: Ctx) -> Result<()> {
    let b = ctx.backend();
    let grant = b.lease_grant(60).await?;
    b.put_with_lease("k", "leased", grant.id).await?;
    b.put("k", "free").await?;
    assert_eq!(b.get("k").await?.unwrap().lease, None);
    assert!(b.lease_time_to_live(grant.id).await?.keys.is_empty());
    b.lease_revoke(grant.id).await?;
    assert_eq!(text(&b.get("k").await?.unwrap().value), "free");
    Ok(())
}
