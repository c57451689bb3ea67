//! Export and import of config: an exact round trip in every codec, an
//! import that compares on what it planned (in batches beyond one
//! transaction), prune, and refused documents.

use coordkit::config::{ConfigExport, ExportedKey};
use coordkit::{Codec, ConfigCenter, Coordinator, Error, Result};

use futures::FutureExt;

use crate::cases::ambiguous::sweep;
use crate::context::assert_invalid;
use crate::Ctx;

/// The centers of one environment: JSON by default, TOML and text under
/// prefixes (the codecs an export records).
fn centers(c: &Coordinator) -> Result<ConfigCenter> {
    c.config()
        .with_codec_for("app/toml/", Codec::Toml)?
        .with_codec_for("app/text/", Codec::Text)
}

fn environment(ctx: &Ctx, namespace: &str) -> Coordinator {
    Coordinator::builder(ctx.backend())
        .namespace(namespace)
        .build()
        .expect("a namespace")
}

/// Keys in JSON (odd spacing, unsorted fields), TOML, text with markup and
/// new lines, and bytes that are not UTF-8 go from one environment to another:
/// the plan lists every key as new, the import applies it in one batch, and
/// the second environment's export holds the very same bytes and codecs; a
/// second plan changes nothing.
pub async fn config_export_and_import_round_trip_exactly(ctx: Ctx) -> Result<()> {
    let prod = environment(&ctx, "prod/");
    let staging = environment(&ctx, "staging/");
    let (from, to) = (centers(&prod)?, centers(&staging)?);
    from.set_bytes("app/limits", br#"{ "rps":100,  "burst" : 20 }"#.to_vec())
        .await?;
    from.set_bytes("app/toml/db", b"pool = 5\nhost = \"db-1\"\n".to_vec())
        .await?;
    from.set_bytes("app/text/motd", b"<b>hello</b>\nsecond line\n".to_vec())
        .await?;
    from.set_bytes("app/raw", vec![0xff, 0x00, 0x41]).await?;
    from.set_bytes("other/x", b"1".to_vec()).await?;
    let export = from.export("app/").await?;
    let keys: Vec<(&str, &str)> = export
        .keys
        .iter()
        .map(|k| (k.key.as_str(), k.codec.as_str()))
        .collect();
    assert_eq!(
        keys,
        [
            ("app/limits", "json"),
            ("app/raw", "json"),
            ("app/text/motd", "text"),
            ("app/toml/db", "toml")
        ]
    );
    assert!(
        export.keys[1].text.is_none() && export.keys[1].base64.is_some(),
        "not UTF-8: base64"
    );
    // The document survives serialization (what `coordctl config export` writes).
    let document: ConfigExport =
        serde_json::from_slice(&serde_json::to_vec(&export).unwrap()).unwrap();
    let plan = to.plan_import(&document, false).await?;
    assert_eq!(plan.changes.len(), 4);
    assert!(
        plan.changes.iter().all(|c| c.before.is_none()),
        "every key is new there"
    );
    let report = to.apply_import(&plan).await;
    assert!(report.failed.is_none(), "{:?}", report.failed);
    assert_eq!(report.applied.len(), 1, "one batch");
    let again = to.export("app/").await?;
    let content = |e: &ConfigExport| -> Vec<(String, String, Vec<u8>)> {
        e.keys
            .iter()
            .map(|k| (k.key.clone(), k.codec.clone(), k.bytes().unwrap()))
            .collect()
    };
    assert_eq!(content(&again), content(&export), "exact round trip");
    let replan = to.plan_import(&document, false).await?;
    assert!(replan.changes.is_empty());
    assert_eq!(replan.unchanged, 4);
    Ok(())
}

/// An import compares on what it planned: a key changed after the plan fails
/// its batch with `VersionConflict` and nothing of that batch is written.
/// Beyond one transaction's size it goes in batches in key order: those before
/// the failed one stay applied, none after it is tried. `prune` deletes the
/// keys of the prefix the document does not name.
pub async fn config_import_compares_on_what_it_planned(ctx: Ctx) -> Result<()> {
    let c = ctx.coordinator();
    let config = c.config();
    let per_txn = ctx.backend().limits().max_txn_ops;
    let n = per_txn * 2 + 3;
    let keys: Vec<ExportedKey> = (0..n)
        .map(|i| exported(&format!("bulk/k-{i:04}"), &i.to_string()))
        .collect();
    let document = document("bulk/", keys);
    let plan = config.plan_import(&document, false).await?;
    assert_eq!(plan.changes.len(), n);
    // Someone writes a key of the second batch after the plan.
    let moved = format!("bulk/k-{:04}", per_txn + 1);
    config.set_bytes(&moved, b"\"theirs\"".to_vec()).await?;
    let report = config.apply_import(&plan).await;
    assert_eq!(report.applied.len(), 1, "the first batch applied");
    assert_eq!(report.applied[0].0.len(), per_txn);
    let (failed, error) = report.failed.expect("the second batch failed");
    assert!(failed.contains(&moved));
    assert!(
        matches!(error, Error::VersionConflict { ref key, .. } if *key == moved),
        "{error:?}"
    );
    let listed = config.list("bulk/").await?;
    assert_eq!(
        listed.len(),
        per_txn + 1,
        "the first batch and theirs; nothing after"
    );
    assert_eq!(
        config.get_bytes_with_version(&moved).await?.0,
        b"\"theirs\""
    );
    // Planned again, the import completes; prune deletes what it does not name.
    config.set_bytes("bulk/extra", b"1".to_vec()).await?;
    let plan = config.plan_import(&document, true).await?;
    assert!(plan
        .changes
        .iter()
        .any(|c| c.key == "bulk/extra" && c.after.is_none()));
    let report = config.apply_import(&plan).await;
    assert!(report.failed.is_none(), "{:?}", report.failed);
    let listed = config.list("bulk/").await?;
    assert_eq!(listed.len(), n);
    assert!(!listed.iter().any(|k| k == "bulk/extra"));
    Ok(())
}

/// A document that cannot be imported as is changes nothing:
/// `InvalidArgument` for a key named twice, a key outside its prefix, a codec
/// that differs here, a text value that does not decode, a value given twice
/// or not at all.
pub async fn config_import_refuses_a_bad_document(ctx: Ctx) -> Result<()> {
    let c = ctx.coordinator();
    let config = centers(&c)?;
    let good = exported("app/a", "1");
    let bad = |keys: Vec<ExportedKey>| document("app/", keys);
    assert_invalid(
        config
            .plan_import(&bad(vec![good.clone(), good.clone()]), false)
            .await,
        "key",
    );
    assert_invalid(
        config
            .plan_import(&bad(vec![exported("web/a", "1")]), false)
            .await,
        "key",
    );
    let mut toml = good.clone();
    toml.codec = "toml".into();
    assert_invalid(config.plan_import(&bad(vec![toml]), false).await, "codec");
    let not_json = exported("app/a", "{not json");
    assert!(matches!(
        config.plan_import(&bad(vec![not_json]), false).await,
        Err(Error::Codec { .. })
    ));
    let mut both = good.clone();
    both.base64 = Some("MQ==".into());
    assert_invalid(config.plan_import(&bad(vec![both]), false).await, "value");
    let mut neither = good;
    neither.text = None;
    assert_invalid(
        config.plan_import(&bad(vec![neither]), false).await,
        "value",
    );
    assert!(config.list("").await?.is_empty(), "nothing written");
    Ok(())
}

/// An import whose batch's answer is lost, late or held is reported applied
/// (every key at the document's value, sharing the version returned) or
/// unknown (all or nothing), never as a conflict against its own write.
pub async fn ambiguous_an_import_is_reported_applied_or_unknown(ctx: Ctx) -> Result<()> {
    sweep(
        &ctx,
        "config apply_import",
        |c| async move { c.config().set("a", &1).await.map(drop) }.boxed(),
        |c| {
            async move {
                let doc = document("", vec![exported("a", "2"), exported("b", "3")]);
                let plan = c.config().plan_import(&doc, false).await?;
                let report = c.config().apply_import(&plan).await;
                match report.failed {
                    Some((_, e)) => Err(e),
                    None => Ok(report.applied.last().map(|(_, v)| *v)),
                }
            }
            .boxed()
        },
        |r, plain, label| async move {
            let a = plain.config().get_with_version::<i32>("a").await.ok();
            let b = plain.config().get_with_version::<i32>("b").await.ok();
            match r {
                Ok(Some(v)) => assert_eq!((a, b), (Some((2, v)), Some((3, v))), "{label}"),
                Err(Error::OutcomeUnknown { .. }) => {
                    let values = (a.map(|(x, _)| x), b.map(|(x, _)| x));
                    assert!(
                        values == (Some(1), None) || values == (Some(2), Some(3)),
                        "{label}: all or nothing, got {values:?}"
                    )
                }
                other => panic!("{label}: {other:?}"),
            }
        },
    )
    .await?;
    Ok(())
}

/// A JSON text entry of a document.
pub(crate) fn exported(key: &str, text: &str) -> ExportedKey {
    serde_json::from_value(serde_json::json!({
        "key": key, "codec": "json", "version": 0, "text": text
    }))
    .expect("an entry")
}

/// A document of `keys` under `prefix`.
pub(crate) fn document(prefix: &str, keys: Vec<ExportedKey>) -> ConfigExport {
    serde_json::from_value(serde_json::json!({
        "prefix": prefix, "revision": 0, "keys": keys
    }))
    .expect("a document")
}
