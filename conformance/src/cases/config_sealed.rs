//! Encrypted config values: sealed in the store, opened by the typed calls,
//! watches and the manager; wrong, missing and rotated keys; export/import.

use coordkit::config::Keyring;
use coordkit::{ConfigCenter, ConfigManager, Error, Result};
use futures::StreamExt;

use crate::context::{wait_until, PATIENCE};
use crate::Ctx;

fn ring(id: &str, byte: u8) -> Keyring {
    Keyring::new(id, [byte; 32]).expect("a keyring")
}

fn sealed(center: &ConfigCenter, ring: Keyring) -> ConfigCenter {
    center
        .with_encryption_for("secrets/", ring)
        .expect("a prefix")
}

fn is_codec_error<T: std::fmt::Debug>(r: Result<T>, mentions: &str) -> bool {
    matches!(&r, Err(e @ Error::Codec { .. }) if e.to_string().contains(mentions))
}

/// Under an encrypted prefix the store holds only sealed bytes (a new nonce
/// each write); `get`, `compare_and_set`, `history`, a prefix watch and a
/// `ConfigManager` see the plain values. A center with another key, none, or
/// a value written in clear gets a `Codec` error, never garbage; after a
/// rotation the old values open and new ones are sealed with the new key;
/// export marks the keys encrypted and import checks they open.
pub async fn config_values_under_an_encrypted_prefix_are_sealed_in_the_store(
    ctx: Ctx,
) -> Result<()> {
    let c = ctx.coordinator();
    let plain = c.config();
    let config = sealed(&plain, ring("k1", 1));
    assert!(config.is_encrypted("secrets/db") && !config.is_encrypted("app/x"));
    let mut watch = config.watch_prefix::<String>("secrets/").await?;
    let v1 = config.set("secrets/db", "hunter2").await?;
    let (stored, _) = plain.get_bytes_with_version("secrets/db").await?;
    let stored = String::from_utf8(stored).expect("ASCII");
    assert!(
        stored.starts_with("coordkit-sealed:v1:k1:") && !stored.contains("hunter2"),
        "{stored}"
    );
    assert_eq!(config.get::<String>("secrets/db").await?, "hunter2");
    let v2 = config
        .compare_and_set("secrets/db", "correct horse", v1)
        .await?;
    let (again, _) = plain.get_bytes_with_version("secrets/db").await?;
    assert_ne!(again, stored.as_bytes(), "a new nonce");
    let history = config.history::<String>("secrets/db", 10).await?;
    let values: Vec<(&str, i64)> = history
        .iter()
        .map(|v| (v.value.as_str(), v.version))
        .collect();
    assert_eq!(values, [("correct horse", v2), ("hunter2", v1)]);
    for expected in ["hunter2", "correct horse"] {
        let event = tokio::time::timeout(PATIENCE, watch.next())
            .await
            .expect("an event");
        assert_eq!(event.expect("open")?.value.as_deref(), Some(expected));
    }
    config.set("secrets/app/password", "s3cret").await?;
    let manager = ConfigManager::builder(&config, "secrets", "app", "password", String::new())
        .start()
        .await?;
    assert_eq!(*manager.current(), "s3cret");
    config.set("secrets/app/password", "n3w").await?;
    wait_until("the manager opens the new value", || async {
        Ok(*manager.current() == "n3w")
    })
    .await?;

    // Another key, no key, a value in clear: errors that say so.
    assert!(is_codec_error(
        sealed(&plain, ring("k1", 9))
            .get::<String>("secrets/db")
            .await,
        "does not open"
    ));
    assert!(is_codec_error(
        sealed(&plain, ring("other", 1))
            .get::<String>("secrets/db")
            .await,
        "not in the keyring"
    ));
    assert!(matches!(
        plain.get::<String>("secrets/db").await,
        Err(Error::Codec { .. })
    ));
    plain.set("secrets/clear", "visible").await?;
    assert!(is_codec_error(
        config.get::<String>("secrets/clear").await,
        "not encrypted"
    ));

    // Rotation: the old value opens, new writes are sealed with k2.
    let rotated = sealed(&plain, ring("k1", 1).rotated_to("k2", [2; 32])?);
    assert_eq!(rotated.get::<String>("secrets/db").await?, "correct horse");
    rotated.set("secrets/db", "rotated").await?;
    let (stored, _) = plain.get_bytes_with_version("secrets/db").await?;
    assert!(stored.starts_with(b"coordkit-sealed:v1:k2:"));
    assert!(is_codec_error(
        config.get::<String>("secrets/db").await,
        "k2"
    ));

    // Export and import: sealed as stored, opened to check.
    plain.delete("secrets/clear").await?;
    let export = rotated.export("secrets/").await?;
    assert!(export.keys.iter().all(|k| k.encrypted), "{export:?}");
    let staging = coordkit::Coordinator::builder(ctx.backend())
        .namespace("staging/")
        .build()?;
    let staging_sealed = sealed(&staging.config(), ring("k1", 1).rotated_to("k2", [2; 32])?);
    let plan = staging_sealed.plan_import(&export, false).await?;
    assert!(staging_sealed.apply_import(&plan).await.failed.is_none());
    assert_eq!(staging_sealed.get::<String>("secrets/db").await?, "rotated");
    assert!(
        matches!(
            staging.config().plan_import(&export, false).await,
            Err(Error::InvalidArgument { .. })
        ),
        "a center that does not encrypt refuses an encrypted document"
    );
    assert!(
        matches!(
            sealed(&staging.config(), ring("k9", 9))
                .plan_import(&export, false)
                .await,
            Err(Error::Codec { .. })
        ),
        "nor does one whose keyring cannot open it"
    );
    drop(manager);
    Ok(())
}
