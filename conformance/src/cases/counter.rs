//! Counters: exact adds under concurrency and lost answers, compare-and-set, input.

use coordkit::{BackendExt, Error, Result};

use crate::context::assert_invalid;
use crate::Ctx;

/// 5 coordinators × 40 adds (+2 and -1 alternating) on one counter end at
/// exactly 5 × 20 × 1 = 100: no add is lost or doubled; a counter never written
/// reads 0.
pub async fn counter_adds_are_exact_under_concurrency(ctx: Ctx) -> Result<()> {
    assert_eq!(
        ctx.coordinator().counter().get("hits").await?,
        0,
        "a new counter reads 0"
    );
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let c = ctx.other_coordinator().await;
        tasks.push(tokio::spawn(async move {
            for i in 0..40 {
                c.counter()
                    .add("hits", if i % 2 == 0 { 2 } else { -1 })
                    .await?;
            }
            Ok::<_, Error>(())
        }));
    }
    for t in tasks {
        t.await.expect("adder task")?;
    }
    let total = ctx.coordinator().counter().get("hits").await?;
    assert_eq!(
        total, 100,
        "200 concurrent adds summing to 100 left {total}"
    );
    Ok(())
}

/// `compare_and_set` sets only from the expected value; `set` returns the
/// previous value; the value is stored as decimal text; overflow is
/// `InvalidArgument` naming `delta`; a key that is not a number is a `Codec`
/// error; bad names are refused.
pub async fn counter_compare_and_set_and_input_rules(ctx: Ctx) -> Result<()> {
    let c = ctx.coordinator();
    let counters = c.counter();
    assert_eq!(counters.add("n", 5).await?, 5);
    assert!(
        !counters.compare_and_set("n", 4, 9).await?,
        "set from a wrong expected value"
    );
    assert_eq!(counters.get("n").await?, 5);
    assert!(
        counters.compare_and_set("n", 5, 9).await?,
        "set from the expected value"
    );
    assert_eq!(
        counters.set("n", i64::MAX).await?,
        9,
        "set returns the previous value"
    );
    let stored = ctx
        .backend()
        .get("coord/counter/n")
        .await?
        .expect("the counter's key");
    assert_eq!(crate::context::text(&stored.value), i64::MAX.to_string());
    assert_invalid(counters.add("n", 1).await, "delta");
    assert_eq!(
        counters.get("n").await?,
        i64::MAX,
        "an overflowing add changes nothing"
    );
    ctx.backend().put("coord/counter/bad", "twelve").await?;
    let err = counters.add("bad", 1).await.unwrap_err();
    assert!(
        matches!(err, Error::Codec { .. }),
        "a non-numeric counter must be a Codec error, got {err:?}"
    );
    assert_invalid(counters.get("").await, "name");
    assert_invalid(counters.add("a/b", 1).await, "name");
    Ok(())
}

/// An add whose answer is lost (it applied) counts once, and an add whose call
/// failed before reaching the store counts once after its retry: the counter
/// is exact through both faults.
pub async fn counter_add_whose_answer_is_lost_counts_once(ctx: Ctx) -> Result<()> {
    let counters = ctx.coordinator().counter();
    assert_eq!(counters.add("f", 1).await?, 1);
    ctx.faults().lose_next_response();
    let after_lost = counters.add("f", 1).await?;
    assert_eq!(
        after_lost, 2,
        "an add whose answer was lost must report its own result"
    );
    assert_eq!(
        counters.get("f").await?,
        2,
        "an add whose answer was lost was counted twice or not at all"
    );
    ctx.faults().fail_next(1);
    assert_eq!(counters.add("f", 1).await?, 3);
    // Another client adds in between a lost answer and its check: still exact.
    let other = ctx.other_coordinator().await;
    other.counter().add("f", 10).await?;
    ctx.faults().lose_next_response();
    counters.add("f", 1).await?;
    assert_eq!(
        counters.get("f").await?,
        14,
        "adds around a lost answer must sum exactly"
    );
    Ok(())
}
