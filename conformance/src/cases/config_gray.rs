//! Gray release: a second value served to the managers whose labels match,
//! promoted to the main value or dropped, each on the version reviewed.

use std::sync::{Arc, Mutex};

use coordkit::config::Labels;
use coordkit::{ConfigCenter, ConfigManager, Error, Result};
use futures::FutureExt;

use crate::cases::ambiguous::sweep;
use crate::context::{assert_invalid, wait_until};
use crate::Ctx;

const KEY: &str = "prod/shop/limit";

fn labels(zone: &str) -> Labels {
    Labels::from([("zone".to_string(), zone.to_string())])
}

/// The sweeps' setup: the key at 1, a release of 2 for zone eu-1.
fn with_release(c: coordkit::Coordinator) -> futures::future::BoxFuture<'static, Result<()>> {
    async move {
        c.config().set(KEY, &1u32).await?;
        c.config()
            .set_gray(KEY, &2u32, labels("eu-1"))
            .await
            .map(drop)
    }
    .boxed()
}

/// A manager that records every value it applies.
async fn manager(
    config: &ConfigCenter,
    zone: Option<&str>,
) -> Result<(ConfigManager<u32>, Arc<Mutex<Vec<u32>>>)> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let mut builder = ConfigManager::builder(config, "prod", "shop", "limit", 0u32)
        .updater(move |_, new| record.lock().unwrap().push(*new));
    if let Some(zone) = zone {
        builder = builder.labels(labels(zone));
    }
    Ok((builder.start().await?, seen))
}

/// A gray value reaches exactly the managers whose labels match (others,
/// labelled or not, never apply it, and follow the main value meanwhile);
/// promoting it on a stale version is a conflict that writes nothing;
/// promoted on the version read, it becomes the main value (in history) and
/// every manager serves it; a new gray release dropped sends the matching
/// manager back to the main value.
pub async fn config_gray_release_reaches_exactly_the_matching_managers(ctx: Ctx) -> Result<()> {
    let c = ctx.coordinator();
    let config = c.config();
    config.set(KEY, &1u32).await?;
    let (eu, eu_seen) = manager(&config, Some("eu-1")).await?;
    let (us, us_seen) = manager(&config, Some("us-1")).await?;
    let (plain, plain_seen) = manager(&config, None).await?;
    for m in [&eu, &us, &plain] {
        assert_eq!(*m.current(), 1);
    }
    let v_gray = config.set_gray(KEY, &2u32, labels("eu-1")).await?;
    let gray = config.gray(KEY).await?.expect("a gray release");
    assert_eq!(
        (gray.version, gray.selector.clone()),
        (v_gray, labels("eu-1"))
    );
    wait_until("the eu manager serves the gray value", || async {
        Ok(*eu.current() == 2)
    })
    .await?;
    // The main value moves on: the others follow it, eu stays on gray.
    config.set(KEY, &3u32).await?;
    wait_until("the others serve the new main value", || async {
        Ok(*us.current() == 3 && *plain.current() == 3)
    })
    .await?;
    assert_eq!(*eu.current(), 2, "gray over main");
    assert_eq!(*us_seen.lock().unwrap(), [1, 3], "never the gray value");
    assert_eq!(*plain_seen.lock().unwrap(), [1, 3], "never the gray value");
    // Promote: a stale version conflicts and writes nothing.
    let stale = config.promote_gray(KEY, v_gray - 1).await;
    assert!(
        matches!(stale, Err(Error::VersionConflict { current, .. }) if current == v_gray),
        "{stale:?}"
    );
    assert_eq!(config.get::<u32>(KEY).await?, 3);
    let promoted = config.promote_gray(KEY, v_gray).await?;
    assert!(config.gray(KEY).await?.is_none(), "the release is gone");
    let (now, version) = config.get_with_version::<u32>(KEY).await?;
    assert_eq!((now, version), (2, promoted));
    let history: Vec<u32> = config
        .history::<u32>(KEY, 3)
        .await?
        .iter()
        .map(|v| v.value)
        .collect();
    assert_eq!(history, [2, 3, 1], "the promotion is in the history");
    wait_until("every manager serves the promoted value", || async {
        Ok([&eu, &us, &plain].iter().all(|m| *m.current() == 2))
    })
    .await?;
    // A new release, dropped: eu goes back to the main value.
    let v5 = config.set_gray(KEY, &5u32, labels("eu-1")).await?;
    wait_until("eu serves the new gray value", || async {
        Ok(*eu.current() == 5)
    })
    .await?;
    assert!(matches!(
        config.drop_gray(KEY, v5 + 100).await,
        Err(Error::VersionConflict { .. })
    ));
    config.drop_gray(KEY, v5).await?;
    wait_until("eu serves the main value again", || async {
        Ok(*eu.current() == 2)
    })
    .await?;
    assert_eq!(*eu_seen.lock().unwrap(), [1, 2, 2, 5, 2]);
    assert!(matches!(
        config.drop_gray(KEY, v5).await,
        Err(Error::VersionConflict { current: 0, .. })
    ));
    // Refused input.
    assert_invalid(config.set_gray(KEY, &1u32, Labels::new()).await, "selector");
    let composed = ConfigManager::builder_prefix(&config, "prod/", 0u32)
        .labels(labels("eu-1"))
        .start()
        .await;
    assert_invalid(composed.map(drop), "labels");
    Ok(())
}

/// A promotion whose answer is lost, late or held is reported applied (the
/// main value is the gray one, at the version returned, the release gone) or
/// unknown (promoted whole or not at all); never a conflict.
pub async fn ambiguous_a_gray_promotion_is_whole(ctx: Ctx) -> Result<()> {
    sweep(
        &ctx,
        "config promote_gray",
        with_release,
        |c| {
            async move {
                let gray = c.config().gray(KEY).await?.expect("a release");
                c.config().promote_gray(KEY, gray.version).await
            }
            .boxed()
        },
        |r, plain, label| async move {
            let main = plain.config().get_with_version::<u32>(KEY).await.unwrap();
            let gray = plain.config().gray(KEY).await.unwrap();
            match r {
                Ok(v) => assert_eq!((main, gray.is_none()), ((2, v), true), "{label}"),
                Err(Error::OutcomeUnknown { .. }) => assert!(
                    (main.0 == 1 && gray.is_some()) || (main.0 == 2 && gray.is_none()),
                    "{label}: whole or nothing ({main:?}, {gray:?})"
                ),
                Err(e) => panic!("{label}: {e:?}"),
            }
        },
    )
    .await?;
    Ok(())
}

/// Publishing and dropping a gray release whose answer is lost, late or held:
/// reported done (the release there with its value; gone) or unknown (either
/// state), never a conflict against its own write.
pub async fn ambiguous_a_gray_release_is_set_and_dropped_once(ctx: Ctx) -> Result<()> {
    sweep(
        &ctx,
        "config set_gray",
        |c| async move { c.config().set(KEY, &1u32).await.map(drop) }.boxed(),
        |c| async move { c.config().set_gray(KEY, &2u32, labels("eu-1")).await }.boxed(),
        |r, plain, label| async move {
            let gray = plain.config().gray(KEY).await.unwrap();
            match r {
                Ok(v) => {
                    let g = gray.unwrap_or_else(|| panic!("{label}: reported set"));
                    assert_eq!((g.version, g.value), (v, b"2".to_vec()), "{label}");
                }
                Err(Error::OutcomeUnknown { .. }) => {}
                Err(e) => panic!("{label}: {e:?}"),
            }
        },
    )
    .await?;
    sweep(
        &ctx,
        "config drop_gray",
        with_release,
        |c| {
            async move {
                let gray = c.config().gray(KEY).await?.expect("a release");
                c.config().drop_gray(KEY, gray.version).await
            }
            .boxed()
        },
        |r, plain, label| async move {
            let gray = plain.config().gray(KEY).await.unwrap();
            match r {
                Ok(()) => assert!(gray.is_none(), "{label}: reported dropped"),
                Err(Error::OutcomeUnknown { .. }) => {}
                Err(e) => panic!("{label}: {e:?}"),
            }
            assert_eq!(
                plain.config().get::<u32>(KEY).await.unwrap(),
                1,
                "{label}: main untouched"
            );
        },
    )
    .await?;
    Ok(())
}
