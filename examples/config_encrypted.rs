//! Encrypted config values: a prefix whose values are sealed with AES-256-GCM
//! in the store, read back in clear by the typed calls, and a key rotation.
//! Run with `cargo run --example config_encrypted`.

use coordkit::config::Keyring;

#[tokio::main]
async fn main() -> coordkit::Result<()> {
    let store = coordkit_examples::Store::from_env();
    let coordinator = store.coordinator().await?;
    let plain = coordinator.config();
    // In production the key comes from a secret store, never from the code.
    let keyring = Keyring::new("2026-12", [42; 32])?;
    let secrets = plain.with_encryption_for("payments/secrets/", keyring.clone())?;

    secrets
        .set("payments/secrets/db-password", "hunter2")
        .await?;
    let (stored, _) = plain
        .get_bytes_with_version("payments/secrets/db-password")
        .await?;
    println!("in the store: {}", String::from_utf8_lossy(&stored));
    let password: String = secrets.get("payments/secrets/db-password").await?;
    println!("read back with the keyring: {password}");
    match plain.get::<String>("payments/secrets/db-password").await {
        Err(e) => println!("read without it: {e}"),
        Ok(v) => println!("unexpected: {v}"),
    }

    // Rotation: a new key seals from now on; the old one still opens.
    let rotated = plain.with_encryption_for(
        "payments/secrets/",
        keyring.rotated_to("2027-01", [43; 32])?,
    )?;
    println!(
        "old value, rotated keyring: {}",
        rotated
            .get::<String>("payments/secrets/db-password")
            .await?
    );
    rotated
        .set("payments/secrets/db-password", "correct horse")
        .await?;
    let (stored, version) = plain
        .get_bytes_with_version("payments/secrets/db-password")
        .await?;
    println!(
        "sealed with the new key: {}",
        String::from_utf8_lossy(&stored[..30])
    );
    plain
        .delete_if_version("payments/secrets/db-password", version)
        .await?;
    coordinator.close().await?;
    Ok(())
}
