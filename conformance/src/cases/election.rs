//! Leader election: order, observation, hand-over, loss.

use coordkit::{BackendExt, Error, LatchState, Leader, LeaderStream, OwnershipLost, Result};
use futures::StreamExt;

use crate::context::text;
use crate::context::{assert_invalid, wait_for_keys, wait_until, PATIENCE};
use crate::Ctx;

const QUEUE: &str = "coord/election/e/";

fn queue(name: &str) -> String {
    format!("coord/election/{name}/")
}

async fn next_leader(stream: &mut LeaderStream, what: &str) -> Result<Option<Leader>> {
    match tokio::time::timeout(PATIENCE, stream.next()).await {
        Ok(Some(item)) => item,
        Ok(None) => panic!("observation ended while waiting for {what}"),
        Err(_) => panic!("no leader change within {PATIENCE:?} while waiting for {what}"),
    }
}

/// An observer sees every leader change in order: nobody, the first leader, its new
/// proclamation, the successor after a resignation, nobody again.
pub async fn election_changes_are_observed_in_order(ctx: Ctx) -> Result<()> {
    let b = ctx.backend();
    let watcher = ctx.other_coordinator().await;
    let mut changes = watcher.election().observe("e")?;
    assert_eq!(next_leader(&mut changes, "the empty start").await?, None);

    let first = ctx.coordinator().election().campaign("e", "one").await?;
    let seen = next_leader(&mut changes, "the first leader")
        .await?
        .expect("a leader");
    assert_eq!(
        (seen.value_str(), seen.fencing_token),
        ("one".into(), first.fencing_token())
    );
    assert_eq!(seen.key, first.key());

    let second = ctx.other_coordinator().await;
    let queued = tokio::spawn(async move { second.election().campaign("e", "two").await });
    wait_for_keys(b.as_ref(), QUEUE, 2).await?;
    first.proclaim("one, again").await?;
    let seen = next_leader(&mut changes, "the new proclamation")
        .await?
        .expect("a leader");
    assert_eq!(
        (seen.value_str(), seen.fencing_token),
        ("one, again".into(), first.fencing_token())
    );
    assert!(!first.is_expired(), "its own proclamation is not a loss");

    let first_token = first.fencing_token();
    first.resign().await?;
    let second = tokio::time::timeout(PATIENCE, queued)
        .await
        .expect("the second candidate leads")
        .expect("task")?;
    let seen = next_leader(&mut changes, "the successor")
        .await?
        .expect("a leader");
    assert_eq!(
        (seen.value_str(), seen.fencing_token),
        ("two".into(), second.fencing_token())
    );
    assert!(second.fencing_token() > first_token);
    assert_eq!(watcher.election().leader("e").await?, Some(seen));

    second.resign().await?;
    assert_eq!(next_leader(&mut changes, "nobody").await?, None);
    assert_eq!(watcher.election().leader("e").await?, None);
    Ok(())
}

/// A leader whose lease ends stops being the leader: `lost()` completes, proclaim
/// and resign are `NotLeader`, and the queued candidate takes over.
pub async fn leader_whose_lease_ends_is_replaced(ctx: Ctx) -> Result<()> {
    let b = ctx.backend();
    let leader = ctx.coordinator().election().campaign("e", "first").await?;
    let second = ctx.other_coordinator().await;
    let queued = tokio::spawn(async move { second.election().campaign("e", "second").await });
    wait_for_keys(b.as_ref(), QUEUE, 2).await?;
    b.lease_revoke(leader.session().lease()).await?;
    let why = tokio::time::timeout(PATIENCE, leader.lost())
        .await
        .expect("lost");
    assert!(
        matches!(why, OwnershipLost::SessionLost | OwnershipLost::KeyDeleted),
        "{why:?}"
    );
    let next = tokio::time::timeout(PATIENCE, queued)
        .await
        .expect("the next candidate leads")
        .expect("task")?;
    let watcher = ctx.other_coordinator().await;
    let now = watcher.election().leader("e").await?.expect("a leader");
    assert_eq!(now.fencing_token, next.fencing_token());
    assert_eq!(text(&now.value), "second");
    assert!(matches!(
        leader.proclaim("still me").await,
        Err(Error::NotLeader { .. })
    ));
    assert!(matches!(
        leader.resign().await,
        Err(Error::NotLeader { .. })
    ));
    next.resign().await?;
    Ok(())
}

/// A queued candidate whose lease ends gets `LockExpired` and never leads.
pub async fn queued_candidate_whose_lease_ends_gets_lock_expired(ctx: Ctx) -> Result<()> {
    let b = ctx.backend();
    let leader = ctx.coordinator().election().campaign("e", "first").await?;
    let candidate = ctx.other_coordinator().await;
    let lease = candidate
        .session(coordkit::DEFAULT_ELECTION_TTL)
        .await?
        .lease();
    let queued = tokio::spawn(async move { candidate.election().campaign("e", "second").await });
    wait_for_keys(b.as_ref(), QUEUE, 2).await?;
    b.lease_revoke(lease).await?;
    leader.resign().await?;
    let outcome = tokio::time::timeout(PATIENCE, queued)
        .await
        .expect("the campaign ended")
        .expect("task");
    assert!(
        matches!(outcome, Err(Error::LockExpired { .. })),
        "{outcome:?}"
    );
    let watcher = ctx.other_coordinator().await;
    assert_eq!(watcher.election().leader("e").await?, None);
    Ok(())
}

/// A dropped leadership resigns in the background; a closed coordinator's
/// leadership ends at once.
pub async fn dropped_or_closed_leadership_hands_over(ctx: Ctx) -> Result<()> {
    let watcher = ctx.other_coordinator().await;
    let a = ctx.coordinator();
    drop(a.election().campaign("e", "dropped").await?);
    wait_until("the dropped leadership is gone", || async {
        Ok(watcher.election().leader("e").await?.is_none())
    })
    .await?;
    let b = ctx.other_coordinator().await;
    let leadership = b.election().campaign("e", "closed").await?;
    b.close().await?;
    assert!(leadership.is_expired());
    assert_eq!(watcher.election().leader("e").await?, None);
    Ok(())
}

/// Bad names are `InvalidArgument` for every election call; a value over the limit
/// is `InvalidArgument` too.
pub async fn election_input_is_validated(ctx: Ctx) -> Result<()> {
    let a = ctx.coordinator();
    for name in ["", "a/b", "tab\t"] {
        assert_invalid(a.election().campaign(name, "v").await, "name");
        assert_invalid(a.election().leader(name).await, "name");
        assert_invalid(a.election().observe(name).map(|_| ()), "name");
    }
    let big = vec![b'x'; ctx.backend().limits().max_value_bytes + 1];
    assert_invalid(a.election().campaign("e", big.clone()).await, "value");
    let leader = a.election().campaign("e", "ok").await?;
    assert_invalid(leader.proclaim(big).await, "value");
    leader.resign().await?;
    assert!(ctx.backend().get_prefix("coord/").await?.is_empty());
    Ok(())
}

/// Two leader latches: the first leads; when its lease is revoked it sees
/// `Follower`, the other leads with a larger token, and the first campaigns again
/// by itself (its key is back in the queue); when the other closes, the first
/// leads again with a larger token still; closing it leaves no key.
pub async fn leader_latch_campaigns_again_after_losing(ctx: Ctx) -> Result<()> {
    let ttl = ctx.recipe_ttl();
    let b = ctx.backend();
    let first_coord = ctx.other_coordinator().await;
    let first = first_coord.election().with_ttl(ttl).latch("latch", "first");
    let led = tokio::time::timeout(PATIENCE, first.wait_until_leader())
        .await
        .expect("a lone latch leads")
        .expect("the latch did not stop");
    let second_coord = ctx.other_coordinator().await;
    let second = second_coord
        .election()
        .with_ttl(ttl)
        .latch("latch", "second");
    wait_for_keys(b.as_ref(), &queue("latch"), 2).await?;
    assert!(
        !second.is_leader(),
        "a second latch must not lead while the first does"
    );
    let LatchState::Leader {
        fencing_token: first_token,
        ..
    } = led
    else {
        panic!("wait_until_leader returned {led:?}");
    };
    let holder = ctx
        .coordinator()
        .election()
        .holders_and_waiters("latch")
        .await?;
    let first_lease = holder[0].lease.expect("the leader's key has a lease");
    b.lease_revoke(first_lease).await?;
    let mut states = first.states();
    tokio::time::timeout(PATIENCE, states.wait_for(|s| !s.is_leader()))
        .await
        .expect("the first latch sees its loss")
        .expect("latch alive");
    let taken = tokio::time::timeout(PATIENCE, second.wait_until_leader())
        .await
        .expect("the second latch leads after the first's loss")
        .expect("the latch did not stop");
    let second_token = match &taken {
        LatchState::Leader { fencing_token, .. } => *fencing_token,
        other => panic!("expected the leader state, got {other:?}"),
    };
    assert!(
        second_token > first_token,
        "the new leader's token must be larger"
    );
    // The first latch campaigns again by itself.
    wait_for_keys(b.as_ref(), &queue("latch"), 2).await?;
    second.close().await;
    let again = tokio::time::timeout(PATIENCE, first.wait_until_leader())
        .await
        .expect("the first latch leads again after the second closed")
        .expect("the latch did not stop");
    match again {
        LatchState::Leader { fencing_token, .. } => assert!(
            fencing_token > second_token,
            "a re-won leadership must carry a larger token"
        ),
        other => panic!("expected the leader state, got {other:?}"),
    }
    first.close().await;
    wait_for_keys(b.as_ref(), &queue("latch"), 0).await?;
    Ok(())
}

/// After a restart a leader resumes on its old lease: given the lease and the
/// fencing token of a leader key written before (here by hand, as a crashed
/// process left it), `resume` returns the leadership with that token, keeps the
/// lease alive past its TTL, and can resign. A wrong token or an ended lease is
/// `LockExpired`; a key queued behind another leader is `NotLeader`.
pub async fn election_resumes_on_the_same_lease_after_a_restart(ctx: Ctx) -> Result<()> {
    let ttl = ctx.recipe_ttl();
    let b = ctx.backend();
    let grant = b.lease_grant(ttl.as_secs() as i64).await?;
    let key = format!("{}{}", queue("r"), grant.id);
    let token = b.put_with_lease(key.as_str(), "node-a", grant.id).await?;
    let c = ctx.coordinator();
    let wrong = c.election().resume("r", grant.id, token + 1).await;
    assert!(
        matches!(&wrong, Err(Error::LockExpired { .. })),
        "resuming with another token must be LockExpired, got {wrong:?}"
    );
    // The failed resume revokes the lease (in the background): its key goes.
    wait_for_keys(b.as_ref(), &queue("r"), 0).await?;
    let grant = b.lease_grant(ttl.as_secs() as i64).await?;
    let key = format!("{}{}", queue("r"), grant.id);
    let token = b.put_with_lease(key.as_str(), "node-a", grant.id).await?;
    let resumed = c.election().resume("r", grant.id, token).await?;
    assert_eq!(
        resumed.fencing_token(),
        token,
        "a resumed leadership keeps its token"
    );
    assert_eq!(resumed.key(), key);
    let leader = c.election().leader("r").await?.expect("a leader");
    assert_eq!(leader.value_str(), "node-a");
    // The resumed session keeps the lease alive past its TTL.
    tokio::time::sleep(ttl + std::time::Duration::from_secs(2)).await;
    assert!(
        !resumed.is_expired(),
        "a resumed leadership must be kept alive"
    );
    b.lease_time_to_live(grant.id)
        .await
        .expect("the resumed lease is alive past its TTL");
    resumed.proclaim("node-a:2").await?;
    resumed.resign().await?;
    wait_for_keys(b.as_ref(), &queue("r"), 0).await?;
    // An ended lease.
    let gone = b.lease_grant(ttl.as_secs() as i64).await?;
    let gone_token = b
        .put_with_lease(format!("{}{}", queue("r"), gone.id), "x", gone.id)
        .await?;
    b.lease_revoke(gone.id).await?;
    let ended = c.election().resume("r", gone.id, gone_token).await;
    assert!(
        matches!(&ended, Err(Error::LockExpired { .. })),
        "resuming an ended lease must be LockExpired, got {ended:?}"
    );
    // A key queued behind another leader.
    let other = ctx.other_coordinator().await;
    let leading = other.election().with_ttl(ttl).campaign("r", "b").await?;
    let queued = b.lease_grant(ttl.as_secs() as i64).await?;
    let queued_token = b
        .put_with_lease(format!("{}{}", queue("r"), queued.id), "a", queued.id)
        .await?;
    let behind = c.election().resume("r", queued.id, queued_token).await;
    assert!(
        matches!(&behind, Err(Error::NotLeader { .. })),
        "resuming a queued key must be NotLeader, got {behind:?}"
    );
    leading.resign().await?;
    Ok(())
}

/// A resume never ends a lease it did not come to own, and a resumed leadership
/// is the coordinator's: a second resume of a held leadership is `LockConflict`
/// and leaves the held lease alive; a resume dropped at any poll leaves the
/// lease it was taking over alive (to its TTL); `close()` revokes a resumed
/// leadership's lease, so its key goes at once.
pub async fn a_resume_ends_no_lease_it_does_not_own_and_close_releases_it(ctx: Ctx) -> Result<()> {
    let ttl = ctx.recipe_ttl();
    let b = ctx.backend();
    let c = ctx.coordinator();
    let grant = b.lease_grant(ttl.as_secs() as i64).await?;
    let token = b
        .put_with_lease(format!("{}{}", queue("held"), grant.id), "a", grant.id)
        .await?;
    let resumed = c.election().resume("held", grant.id, token).await?;
    let again = c.election().resume("held", grant.id, token).await;
    assert!(
        matches!(&again, Err(Error::LockConflict { .. })),
        "resuming a held leadership must be LockConflict, got {again:?}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    b.lease_time_to_live(grant.id)
        .await
        .expect("a refused resume must not revoke the held leadership's lease");
    assert!(!resumed.is_expired(), "the held leadership goes on");
    assert_eq!(
        c.election().leader("held").await?.map(|l| l.fencing_token),
        Some(token),
        "the held leadership still leads"
    );

    // Dropped after each number of polls: the lease is left alive.
    let elections = c.election();
    for polls in 0..6 {
        let other = b.lease_grant(ttl.as_secs() as i64).await?;
        let token = b
            .put_with_lease(format!("{}{}", queue("dropped"), other.id), "x", other.id)
            .await?;
        let mut call = Box::pin(elections.resume("dropped", other.id, token));
        let mut finished = false;
        for _ in 0..polls {
            if futures::poll!(call.as_mut()).is_ready() {
                finished = true;
                break;
            }
            tokio::task::yield_now().await;
        }
        drop(call);
        if finished {
            break; // the call completed: nothing left to drop
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        b.lease_time_to_live(other.id).await.unwrap_or_else(|e| {
            panic!("a resume dropped after {polls} polls revoked the lease: {e:?}")
        });
        b.lease_revoke(other.id).await?;
    }

    c.close().await?;
    wait_for_keys(b.as_ref(), &queue("held"), 0).await?;
    let gone = b.lease_time_to_live(grant.id).await;
    assert!(
        matches!(gone, Err(Error::LeaseNotFound { .. })),
        "close() must revoke a resumed leadership's lease, got {gone:?}"
    );
    drop(resumed);
    Ok(())
}
