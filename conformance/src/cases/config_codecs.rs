//! Config values in other formats: TOML, YAML and text, per center and per key
//! prefix, through every typed call.

use coordkit::{Codec, ConfigEventKind, ConfigManager, Error, Result};
use serde::Deserialize;

use super::config::{db, next_event as next, Db};
use crate::context::{assert_invalid, text, wait_until};
use crate::Ctx;

fn codec_error<T: std::fmt::Debug>(r: Result<T>, key: &str) {
    match r {
        Err(Error::Codec { key: k, .. }) if k == key => {}
        other => panic!("expected Codec naming {key}, got {other:?}"),
    }
}

/// A center's codec applies to every key without one of its own, a prefix's
/// codec to the keys under it (the longest prefix wins): `set`, `get`,
/// `history`, watches, `change` in `update_many` and a `ConfigManager` all
/// encode and decode with it, and the store holds the format's own text (TOML
/// `url = "…"`, YAML `url: …`, text without quotes). A value that does not
/// encode in its codec (text that is not a string, TOML that is not a table) or
/// stored bytes that do not decode are `Codec { key }`; a bad prefix is
/// `InvalidArgument`.
pub async fn config_codecs_apply_per_center_and_per_key(ctx: Ctx) -> Result<()> {
    let c = ctx.coordinator();
    let config = c
        .config()
        .with_codec(Codec::Yaml)
        .with_codec_for("app/", Codec::Toml)?
        .with_codec_for("app/text/", Codec::Text)?;
    assert_eq!(config.codec_of("app/db"), Codec::Toml);
    assert_eq!(config.codec_of("app/text/motd"), Codec::Text);
    assert_eq!(config.codec_of("other/db"), Codec::Yaml);
    assert_eq!(c.config().codec_of("app/db"), Codec::Json);

    let v1 = config.set("app/db", &db(4)).await?;
    assert_eq!(
        text(&config.get_bytes("app/db").await?),
        "url = \"postgres://db\"\npool = 4\n"
    );
    assert_eq!(config.get::<Db>("app/db").await?, db(4));
    config.set("other/db", &db(5)).await?;
    assert_eq!(
        text(&config.get_bytes("other/db").await?),
        "url: postgres://db\npool: 5\n"
    );
    assert_eq!(config.get::<Db>("other/db").await?, db(5));
    config.set("app/text/motd", "hello \"world\"").await?;
    assert_eq!(
        text(&config.get_bytes("app/text/motd").await?),
        "hello \"world\""
    );
    assert_eq!(
        config.get::<String>("app/text/motd").await?,
        "hello \"world\""
    );

    codec_error(config.set("app/text/pool", &7).await, "app/text/pool");
    codec_error(config.set("app/port", &8080).await, "app/port");
    // Written as JSON by a center without codecs: TOML cannot read it.
    c.config().set("app/json", &db(1)).await?;
    codec_error(config.get::<Db>("app/json").await, "app/json");
    assert_invalid(config.with_codec_for("/bad", Codec::Text), "prefix");

    let mut w = config.watch_prefix::<Db>("app/").await?;
    let v2 = config.set("app/db", &db(8)).await?;
    let e = next(&mut w, "a TOML put").await?;
    assert_eq!(
        (e.kind, e.key.as_str(), e.value, e.version),
        (ConfigEventKind::Put, "app/db", Some(db(8)), v2)
    );
    let history = config.history::<Db>("app/db", 10).await?;
    assert_eq!(
        history
            .iter()
            .map(|v| (v.version, v.value.pool))
            .collect::<Vec<_>>(),
        [(v2, 8), (v1, 4)]
    );
    let v3 = config
        .update_many(vec![
            config.change("app/db", &db(9))?,
            config.change("app/text/motd", "bye")?,
        ])
        .await?;
    assert_eq!(
        text(&config.get_bytes("app/db").await?),
        "url = \"postgres://db\"\npool = 9\n"
    );
    assert_eq!(text(&config.get_bytes("app/text/motd").await?), "bye");

    let toml = config.with_codec_for("env/", Codec::Toml)?;
    let manager = ConfigManager::builder(&toml, "env", "svc", "db", db(0))
        .start()
        .await?;
    toml.set("env/svc/db", &db(3)).await?;
    wait_until("the manager decodes TOML", || async {
        Ok(manager.current().pool == 3)
    })
    .await?;
    assert!(v3 > v2);
    Ok(())
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
struct App {
    db: Db,
    name: String,
    verbose: bool,
}

/// A manager composed of the keys under a prefix assembles them into one value
/// (each key, in its codec, at the field its path names), follows a change of
/// any one of them with one updater call, ignores a write that assembles the
/// same value, refuses a key that is both a value and a folder (keeping the
/// value in force) until it is gone, reverts to the default once no key is
/// left, and refuses a prefix without a trailing `/`.
pub async fn config_manager_composes_a_value_from_a_prefix(ctx: Ctx) -> Result<()> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let c = ctx.coordinator();
    let config = c.config().with_codec_for("prod/api/name", Codec::Text)?;
    config.set("prod/api/db/url", "postgres://db").await?;
    config.set("prod/api/db/pool", &8).await?;
    config.set("prod/api/name", "api").await?;
    config.set("prod/api/verbose", &true).await?;
    config.set("prod/apix/other", &1).await?;
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let manager = ConfigManager::builder_prefix(&config, "prod/api/", App::default())
        .updater(move |_, _| {
            counted.fetch_add(1, Ordering::SeqCst);
        })
        .start()
        .await?;
    let want = App {
        db: db(8),
        name: "api".into(),
        verbose: true,
    };
    assert_eq!(*manager.current(), want);
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    config.set("prod/api/db/pool", &9).await?;
    wait_until("the pool change is applied", || async {
        Ok(manager.current().db.pool == 9)
    })
    .await?;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // The same value again: no call.
    config.set("prod/api/db/pool", &9).await?;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "a write of the same value is no change"
    );
    config.set("prod/api/verbose", &false).await?;
    wait_until("verbose turns false", || async {
        Ok(!manager.current().verbose)
    })
    .await?;
    assert_eq!(calls.load(Ordering::SeqCst), 3);

    config.set("prod/api/db", &1).await?;
    wait_until("the clash is refused", || async {
        Ok(manager.last_error().is_some())
    })
    .await?;
    assert_eq!(manager.current().db.pool, 9, "the value in force stays");
    config.delete("prod/api/db").await?;
    wait_until("the refusal clears", || async {
        Ok(manager.last_error().is_none())
    })
    .await?;

    for key in ["db/url", "db/pool", "name", "verbose"] {
        config.delete(&format!("prod/api/{key}")).await?;
    }
    wait_until("the default is back", || async {
        Ok(*manager.current() == App::default())
    })
    .await?;
    assert_eq!(manager.version(), 0);
    assert_invalid(
        ConfigManager::builder_prefix(&config, "prod/api", App::default())
            .start()
            .await,
        "prefix",
    );
    Ok(())
}
