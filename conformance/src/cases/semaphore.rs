//! Semaphores and read-write locks: admission, order, fencing, expiry while
//! queued, cancellation, mismatched permits.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use coordkit::{Coordinator, Error, LockGuard, OwnershipLost, PutRequest, Result, Revision, Txn};

use crate::context::{assert_invalid, count_keys, wait_for_keys, PATIENCE};
use crate::lock_safety::Hold;
use crate::Ctx;

fn semaphore(name: &str) -> String {
    format!("coord/semaphore/{name}/")
}

fn rwlock(name: &str) -> String {
    format!("coord/rwlock/{name}/")
}

/// A fenced write under `guard`: a put of `key` only while the guard's key is
/// the same; its revision.
async fn fenced_write(c: &Coordinator, guard: &LockGuard, key: &str) -> Result<Revision> {
    let txn = Txn::new()
        .when([guard.compare()])
        .and_then([PutRequest::new(key, guard.fencing_token().to_string())]);
    let r = c.backend().txn(txn).await?;
    assert!(
        r.succeeded,
        "a holder's fenced write failed while it held {}",
        guard.key()
    );
    Ok(r.revision)
}

/// 6 coordinators × 8 acquisitions of a semaphore with 3 permits, each hold
/// making two fenced writes: at no store revision do more than 3 holds overlap
/// (the lock-safety checker), every fenced write lands, and tokens are distinct.
pub async fn semaphore_admits_at_most_its_permits(ctx: Ctx) -> Result<()> {
    let ttl = ctx.recipe_ttl();
    let holds = Arc::new(Mutex::new(Vec::new()));
    let clock = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for client in 0..6 {
        let c = ctx.other_coordinator().await;
        let (holds, clock) = (holds.clone(), clock.clone());
        tasks.push(tokio::spawn(async move {
            for round in 0..8 {
                let guard = c.semaphore().acquire("pool", 3, ttl).await?;
                let acquired = clock.fetch_add(1, Ordering::SeqCst);
                let key = format!("work/{client}/{round}");
                let first = fenced_write(&c, &guard, &key).await?;
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                let last = fenced_write(&c, &guard, &key).await?;
                holds.lock().unwrap().push(Hold {
                    client,
                    token: guard.fencing_token(),
                    acquired,
                    writes: vec![first, last],
                });
                guard.unlock().await?;
            }
            c.close().await
        }));
    }
    for t in tasks {
        t.await.expect("contender task")?;
    }
    let holds = holds.lock().unwrap().clone();
    assert_eq!(
        holds.len(),
        48,
        "every one of the 48 acquisitions must complete"
    );
    if let Err(e) = crate::lock_safety::check_permits(&holds, 3) {
        panic!("the semaphore over-admitted: {e}");
    }
    Ok(())
}

/// A release of any holder admits the first waiter, however long it has waited:
/// with 3 permits held and two waiters queued for longer than any early look,
/// releasing the oldest permit admits the first waiter, then the middle one the
/// second, while the newest holder (the key nearest the waiters) holds on.
pub async fn semaphore_release_of_any_holder_admits_the_next_waiter(ctx: Ctx) -> Result<()> {
    let ttl = ctx.recipe_ttl();
    let b = ctx.backend();
    let c = ctx.coordinator();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(c.semaphore().try_acquire("any", 3, ttl).await?);
    }
    let mut waiters = Vec::new();
    for i in 0..2 {
        let waiter = ctx.other_coordinator().await;
        waiters.push(tokio::spawn(async move {
            let guard = waiter.semaphore().acquire("any", 3, ttl).await?;
            Ok::<_, Error>((waiter, guard))
        }));
        wait_for_keys(b.as_ref(), &semaphore("any"), 4 + i).await?;
    }
    // Long past the waiters' early looks: from here only their watches wake them.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let newest = held.pop().expect("three permits");
    let mut admitted = Vec::new();
    for (i, guard) in held.into_iter().enumerate() {
        guard.unlock().await?;
        let (waiter, guard) = tokio::time::timeout(PATIENCE, waiters.remove(0))
            .await
            .unwrap_or_else(|_| {
                panic!("waiter {i} was not admitted after an older holder released")
            })
            .expect("waiter task")?;
        admitted.push((waiter, guard));
    }
    assert!(!newest.is_expired(), "the newest holder still holds");
    for (_, guard) in admitted {
        guard.unlock().await?;
    }
    newest.unlock().await?;
    Ok(())
}

/// A waiter with as many claims before it as permits stays queued when a newer
/// holder releases: 2 permits held (older, newer), two waiters queued; the newer
/// holder's release admits the first waiter only — the second still has it and
/// the older holder before it, though it watched the released key — and the
/// older holder's release then admits the second. Never three holders.
pub async fn semaphore_release_of_a_newer_holder_admits_no_one_past_the_permits(
    ctx: Ctx,
) -> Result<()> {
    let ttl = ctx.recipe_ttl();
    let b = ctx.backend();
    let c = ctx.coordinator();
    let older = c.semaphore().try_acquire("newer", 2, ttl).await?;
    let newer = c.semaphore().try_acquire("newer", 2, ttl).await?;
    let mut waiters = Vec::new();
    for i in 0..2 {
        let waiter = ctx.other_coordinator().await;
        waiters.push(tokio::spawn(async move {
            let guard = waiter.semaphore().acquire("newer", 2, ttl).await?;
            Ok::<_, Error>((waiter, guard))
        }));
        wait_for_keys(b.as_ref(), &semaphore("newer"), 3 + i).await?;
    }
    let second = waiters.pop().expect("two waiters");
    let first = waiters.pop().expect("two waiters");
    newer.unlock().await?;
    let (_first_c, first) = tokio::time::timeout(PATIENCE, first)
        .await
        .expect("the first waiter is admitted when a holder releases")
        .expect("waiter task")?;
    // Past the second waiter's looks and glances after its wake.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(
        !second.is_finished(),
        "a third holder was admitted to a semaphore of 2 permits"
    );
    older.unlock().await?;
    let (_second_c, second) = tokio::time::timeout(PATIENCE, second)
        .await
        .expect("the second waiter is admitted when the older holder releases")
        .expect("waiter task")?;
    first.unlock().await?;
    second.unlock().await?;
    Ok(())
}

/// Three permits are held at once, even by one coordinator; a fourth
/// `try_acquire` is `LockConflict` and leaves no key; waiters are admitted in
/// arrival order as permits free up, and `holders_and_waiters` lists the queue.
pub async fn semaphore_shares_its_permits_then_serves_waiters_in_order(ctx: Ctx) -> Result<()> {
    let ttl = ctx.recipe_ttl();
    let b = ctx.backend();
    let c = ctx.coordinator();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(c.semaphore().try_acquire("s", 3, ttl).await?);
    }
    let err = c.semaphore().try_acquire("s", 3, ttl).await.unwrap_err();
    assert!(
        matches!(&err, Error::LockConflict { name } if name == "s"),
        "a fourth try on 3 held permits must be LockConflict, got {err:?}"
    );
    assert_eq!(
        count_keys(b.as_ref(), &semaphore("s")).await?,
        3,
        "a failed try must leave no key"
    );
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..3 {
        let waiter = ctx.other_coordinator().await;
        let order = order.clone();
        tasks.push(tokio::spawn(async move {
            let guard = waiter.semaphore().acquire("s", 3, ttl).await?;
            order.lock().unwrap().push(i);
            Ok::<_, Error>((waiter, guard))
        }));
        wait_for_keys(b.as_ref(), &semaphore("s"), 4 + i).await?;
    }
    let queue = c.semaphore().holders_and_waiters("s").await?;
    assert_eq!(queue.len(), 6, "three holders and three waiters: {queue:?}");
    assert!(
        queue
            .windows(2)
            .all(|p| p[0].fencing_token < p[1].fencing_token),
        "the queue must be in arrival order: {queue:?}"
    );
    let mut admitted = Vec::new();
    for (i, guard) in held.into_iter().enumerate() {
        guard.unlock().await?;
        let (waiter, guard) = tokio::time::timeout(PATIENCE, tasks.remove(0))
            .await
            .expect("a freed permit admits the next waiter")
            .expect("waiter task")?;
        assert_eq!(
            *order.lock().unwrap(),
            (0..=i as i64).collect::<Vec<_>>(),
            "waiters must be admitted one per freed permit, in arrival order"
        );
        admitted.push((waiter, guard));
    }
    for (_, guard) in admitted {
        guard.unlock().await?;
    }
    Ok(())
}

/// A session's claims of one semaphore or read-write lock reuse their keys:
/// one claim after another takes the same key (with a new, higher fencing
/// token each time); two held at once take two keys, and a key freed by a
/// release is the next one taken. A dropped guard's key is reused only after
/// its cleanup; the queue then settles at the one key held. So a busy queue's
/// key space stays as large as its holders and waiters, and the store's index
/// does not fill with dead keys between compactions.
pub async fn shared_claims_of_one_session_reuse_their_keys(ctx: Ctx) -> Result<()> {
    let ttl = ctx.recipe_ttl();
    let b = ctx.backend();
    let c = ctx.coordinator();
    let first = c.semaphore().acquire("reuse", 2, ttl).await?;
    let key = first.key().to_string();
    let mut token = first.fencing_token();
    first.unlock().await?;
    for _ in 0..4 {
        let again = c.semaphore().acquire("reuse", 2, ttl).await?;
        assert_eq!(
            again.key(),
            key,
            "one claim after another takes the same key"
        );
        assert!(
            again.fencing_token() > token,
            "a reused key must come with a higher fencing token ({} after {token})",
            again.fencing_token()
        );
        token = again.fencing_token();
        again.unlock().await?;
    }
    let a = c.semaphore().acquire("reuse", 2, ttl).await?;
    let other = c.semaphore().acquire("reuse", 2, ttl).await?;
    assert_ne!(a.key(), other.key(), "two claims held at once share a key");
    let freed = a.key().to_string();
    a.unlock().await?;
    let next = c.semaphore().acquire("reuse", 2, ttl).await?;
    assert_eq!(next.key(), freed, "the key a release freed is taken next");
    // A dropped guard: its cleanup runs in the background; whichever key the next
    // claim takes, the queue settles at the two held.
    drop(next);
    let after_drop = c.semaphore().acquire("reuse", 2, ttl).await?;
    wait_for_keys(b.as_ref(), &semaphore("reuse"), 2).await?;
    assert!(
        after_drop.is_held().await?,
        "the claim after a dropped guard holds"
    );
    after_drop.unlock().await?;
    other.unlock().await?;
    // Readers too.
    let read = c.rw_lock().read("reuse", ttl).await?;
    let read_key = read.key().to_string();
    read.unlock().await?;
    let read = c.rw_lock().read("reuse", ttl).await?;
    assert_eq!(
        read.key(),
        read_key,
        "one read after another takes the same key"
    );
    read.unlock().await?;
    assert_eq!(count_keys(b.as_ref(), &rwlock("reuse")).await?, 0);
    Ok(())
}

/// A client that asks for another number of permits than the semaphore's
/// holders fails with `InvalidArgument` naming `permits`, leaves no key, and is
/// not admitted; `permits` of 0 and bad names are refused.
pub async fn semaphore_with_mismatched_permits_is_invalid(ctx: Ctx) -> Result<()> {
    let ttl = ctx.recipe_ttl();
    let b = ctx.backend();
    let c = ctx.coordinator();
    let held = c.semaphore().acquire("m", 2, ttl).await?;
    let other = ctx.other_coordinator().await;
    assert_invalid(other.semaphore().acquire("m", 5, ttl).await, "permits");
    assert_invalid(other.semaphore().try_acquire("m", 1, ttl).await, "permits");
    assert_eq!(
        count_keys(b.as_ref(), &semaphore("m")).await?,
        1,
        "a refused client must leave no key"
    );
    assert_invalid(c.semaphore().acquire("z", 0, ttl).await, "permits");
    assert_invalid(c.semaphore().acquire("", 1, ttl).await, "name");
    assert_invalid(c.semaphore().acquire("a/b", 1, ttl).await, "name");
    held.unlock().await?;
    Ok(())
}

/// A queued semaphore waiter whose lease ends gets `LockExpired`; a holder whose
/// lease ends loses its permit (`lost` says so) and the permit goes to the next
/// waiter; a cancelled waiter removes its key while its lease lives on.
pub async fn semaphore_lease_loss_and_cancellation_free_the_queue(ctx: Ctx) -> Result<()> {
    let ttl = ctx.recipe_ttl();
    let b = ctx.backend();
    let holder_coord = ctx.other_coordinator().await;
    let holder = holder_coord.semaphore().acquire("q", 1, ttl).await?;
    // A waiter whose lease is revoked while it waits.
    let doomed = ctx.other_coordinator().await;
    let doomed_lease = doomed.session(ttl).await?.lease();
    let queued = tokio::spawn(async move { doomed.semaphore().acquire("q", 1, ttl).await });
    wait_for_keys(b.as_ref(), &semaphore("q"), 2).await?;
    b.lease_revoke(doomed_lease).await?;
    let outcome = tokio::time::timeout(PATIENCE, queued)
        .await
        .expect("the queued acquire ended")
        .expect("task");
    assert!(
        matches!(&outcome, Err(Error::LockExpired { name }) if name == "q"),
        "a waiter whose lease ended must get LockExpired, got {outcome:?}"
    );
    // A cancelled waiter leaves no key, though its lease lives.
    let quitter = ctx.other_coordinator().await;
    let quitter_lease = quitter.session(ttl).await?.lease();
    let task = {
        let quitter = quitter.clone();
        tokio::spawn(async move { quitter.semaphore().acquire("q", 1, ttl).await })
    };
    wait_for_keys(b.as_ref(), &semaphore("q"), 2).await?;
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    wait_for_keys(b.as_ref(), &semaphore("q"), 1).await?;
    b.lease_time_to_live(quitter_lease)
        .await
        .expect("the key went with the cancellation, not with the lease");
    // The holder's lease ends: it loses the permit, the next waiter gets it.
    let next = ctx.other_coordinator().await;
    let waiting = tokio::spawn(async move { next.semaphore().acquire("q", 1, ttl).await });
    wait_for_keys(b.as_ref(), &semaphore("q"), 2).await?;
    b.lease_revoke(holder.session().lease()).await?;
    let why = tokio::time::timeout(PATIENCE, holder.lost())
        .await
        .expect("lost() completes when the holder's lease ends");
    assert!(
        matches!(why, OwnershipLost::SessionLost | OwnershipLost::KeyDeleted),
        "a permit whose lease ended must be lost, got {why:?}"
    );
    let guard = tokio::time::timeout(PATIENCE, waiting)
        .await
        .expect("the freed permit goes to the waiter")
        .expect("task")?;
    assert!(guard.fencing_token() > holder.fencing_token());
    guard.unlock().await?;
    Ok(())
}

/// Readers share; a writer waits for them and excludes everyone; a reader that
/// arrives after a waiting writer waits behind it (writers are not starved);
/// when the writer releases, the readers queued behind it hold together.
pub async fn rw_lock_readers_share_and_writers_are_not_starved(ctx: Ctx) -> Result<()> {
    let ttl = ctx.recipe_ttl();
    let b = ctx.backend();
    let c = ctx.coordinator();
    let r1 = c.rw_lock().try_read("rw", ttl).await?;
    let r2 = c.rw_lock().try_read("rw", ttl).await?;
    let err = c.rw_lock().try_write("rw", ttl).await.unwrap_err();
    assert!(
        matches!(err, Error::LockConflict { .. }),
        "a writer must not hold while readers do, got {err:?}"
    );
    let w = ctx.other_coordinator().await;
    let writer = tokio::spawn(async move { w.rw_lock().write("rw", ttl).await });
    wait_for_keys(b.as_ref(), &rwlock("rw"), 3).await?;
    let late = c.rw_lock().try_read("rw", ttl).await.unwrap_err();
    assert!(
        matches!(late, Error::LockConflict { .. }),
        "a reader arriving after a waiting writer must wait behind it, got {late:?}"
    );
    let mut readers = Vec::new();
    for _ in 0..2 {
        let r = ctx.other_coordinator().await;
        readers.push(tokio::spawn(
            async move { r.rw_lock().read("rw", ttl).await },
        ));
    }
    wait_for_keys(b.as_ref(), &rwlock("rw"), 5).await?;
    r1.unlock().await?;
    assert!(
        !writer.is_finished(),
        "the writer must wait for every reader"
    );
    r2.unlock().await?;
    let writing = tokio::time::timeout(PATIENCE, writer)
        .await
        .expect("the writer holds once the readers left")
        .expect("task")?;
    let queue = c.rw_lock().holders_and_waiters("rw").await?;
    let kinds: Vec<String> = queue
        .iter()
        .map(|e| crate::context::text(&e.value))
        .collect();
    assert_eq!(
        kinds,
        ["write", "read", "read"],
        "the queue after the readers left"
    );
    writing.unlock().await?;
    for r in readers {
        let guard = tokio::time::timeout(PATIENCE, r)
            .await
            .expect("both readers hold together after the writer")
            .expect("task")?;
        drop(guard);
    }
    Ok(())
}

/// 4 coordinators × 12 random reads and writes (1 in 3 a write), each hold making
/// two fenced writes: no writer's span of writes overlaps another hold's
/// (checked by `lock_safety::check_read_write`); cancelled and lease-lost waiters
/// are covered by the semaphore cases, which share the code.
pub async fn rw_lock_writers_exclude_everyone(ctx: Ctx) -> Result<()> {
    let ttl = ctx.recipe_ttl();
    let holds = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for client in 0..4 {
        let c = ctx.other_coordinator().await;
        let holds = holds.clone();
        tasks.push(tokio::spawn(async move {
            for round in 0..12 {
                let write = (client + round) % 3 == 0;
                let guard = if write {
                    c.rw_lock().write("data", ttl).await?
                } else {
                    c.rw_lock().read("data", ttl).await?
                };
                let key = format!("rw/{client}/{round}");
                let first = fenced_write(&c, &guard, &key).await?;
                tokio::time::sleep(std::time::Duration::from_millis(3)).await;
                let last = fenced_write(&c, &guard, &key).await?;
                holds.lock().unwrap().push((
                    Hold {
                        client,
                        token: guard.fencing_token(),
                        acquired: 0,
                        writes: vec![first, last],
                    },
                    write,
                ));
                guard.unlock().await?;
            }
            c.close().await
        }));
    }
    for t in tasks {
        t.await.expect("contender task")?;
    }
    let holds = holds.lock().unwrap().clone();
    assert_eq!(holds.len(), 48, "every one of the 48 holds must complete");
    if let Err(e) = crate::lock_safety::check_read_write(&holds) {
        panic!("the read-write lock is not safe: {e}");
    }
    Ok(())
}

/// A read-write lock's queued writer whose lease ends gets `LockExpired`; a
/// cancelled queued reader removes its key; a writer whose lease ends while
/// holding loses it (`lost` fires) and the readers queued behind it hold.
pub async fn rw_lock_lease_loss_and_cancellation_free_the_queue(ctx: Ctx) -> Result<()> {
    let ttl = ctx.recipe_ttl();
    let b = ctx.backend();
    let reader = ctx.coordinator().rw_lock().read("f", ttl).await?;
    // A queued writer whose lease is revoked.
    let doomed = ctx.other_coordinator().await;
    let doomed_lease = doomed.session(ttl).await?.lease();
    let queued = tokio::spawn(async move { doomed.rw_lock().write("f", ttl).await });
    wait_for_keys(b.as_ref(), &rwlock("f"), 2).await?;
    b.lease_revoke(doomed_lease).await?;
    let outcome = tokio::time::timeout(PATIENCE, queued)
        .await
        .expect("the queued write ended")
        .expect("task");
    assert!(
        matches!(&outcome, Err(Error::LockExpired { .. })),
        "a queued writer whose lease ended must get LockExpired, got {outcome:?}"
    );
    reader.unlock().await?;
    // A writer holds; a cancelled reader behind it leaves no key.
    let writer_coord = ctx.other_coordinator().await;
    let writer = writer_coord.rw_lock().write("f", ttl).await?;
    let quitter = ctx.other_coordinator().await;
    let task = tokio::spawn(async move { quitter.rw_lock().read("f", ttl).await });
    wait_for_keys(b.as_ref(), &rwlock("f"), 2).await?;
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    wait_for_keys(b.as_ref(), &rwlock("f"), 1).await?;
    // The writer's lease ends while it holds: readers behind it get in.
    let r = ctx.other_coordinator().await;
    let behind = tokio::spawn(async move { r.rw_lock().read("f", ttl).await });
    wait_for_keys(b.as_ref(), &rwlock("f"), 2).await?;
    b.lease_revoke(writer.session().lease()).await?;
    let why = tokio::time::timeout(PATIENCE, writer.lost())
        .await
        .expect("lost() completes when the writer's lease ends");
    assert!(
        matches!(why, OwnershipLost::SessionLost | OwnershipLost::KeyDeleted),
        "a write hold whose lease ended must be lost, got {why:?}"
    );
    tokio::time::timeout(PATIENCE, behind)
        .await
        .expect("the reader behind the lost writer holds")
        .expect("task")?
        .unlock()
        .await?;
    Ok(())
}
