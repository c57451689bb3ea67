//! Export and import of config: one environment's keys as a document (what
//! `coordctl config export` writes), the diff it would make in another, and
//! the import applied with compare-and-set on what was diffed.
//! Run with `cargo run --example config_transfer`.

use coordkit::{Codec, Coordinator};

#[tokio::main]
async fn main() -> coordkit::Result<()> {
    let store = coordkit_examples::Store::from_env();
    let backend = store.backend().await?;
    let environment = |ns: &str| Coordinator::builder(backend.clone()).namespace(ns).build();
    let (prod, staging) = (environment("prod/")?, environment("staging/")?);
    let codecs = |c: &Coordinator| c.config().with_codec_for("shop/toml/", Codec::Toml);
    let (from, to) = (codecs(&prod)?, codecs(&staging)?);

    from.set_bytes("shop/limits", br#"{"rps": 100, "burst": 20}"#.to_vec())
        .await?;
    from.set_bytes("shop/toml/db", b"pool = 5\nhost = \"db-1\"\n".to_vec())
        .await?;
    to.set_bytes("shop/limits", br#"{"rps": 50}"#.to_vec())
        .await?;

    let export = from.export("shop/").await?;
    println!(
        "exported {} keys at revision {}:",
        export.keys.len(),
        export.revision
    );
    println!(
        "{}",
        serde_json::to_string_pretty(&export).unwrap_or_default()
    );

    let plan = to.plan_import(&export, false).await?;
    for change in &plan.changes {
        let over = change.before.as_ref().map_or(0, |(v, _)| *v);
        println!(
            "would {} {} (over version {over})",
            if over == 0 { "create" } else { "update" },
            change.key
        );
    }
    let report = to.apply_import(&plan).await;
    for (keys, version) in &report.applied {
        println!("applied {keys:?} at version {version}");
    }
    assert!(report.failed.is_none(), "{:?}", report.failed);
    let again = to.plan_import(&export, false).await?;
    println!(
        "planned again: {} to change, {} unchanged",
        again.changes.len(),
        again.unchanged
    );
    for key in ["shop/limits", "shop/toml/db"] {
        for c in [&from, &to] {
            c.delete_if_version(key, c.get_bytes_with_version(key).await?.1)
                .await?;
        }
    }
    prod.close().await?;
    staging.close().await?;
    Ok(())
}
