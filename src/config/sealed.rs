//! Encrypted config values (feature `encryption`): AES-256-GCM around a key's
//! codec, with a fresh random nonce per write and the id of the key that
//! sealed it stored beside the value, so keys can rotate.
//!
//! A sealed value is stored as ASCII:
//! `coordkit-sealed:v1:<key id>:<base64 of nonce ‖ ciphertext ‖ tag>`. The
//! config key (relative to the config root) is the associated data: a value
//! copied to another key does not open.

use std::collections::BTreeMap;
use std::sync::Arc;

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine as _;

use crate::error::{Error, Result};

const PREFIX: &str = "coordkit-sealed:v1:";
const NONCE: usize = 12;

/// The keys that seal and open config values: one current key (it seals),
/// and earlier ones kept to open what they sealed. Each key has an id
/// (stored with every value it seals). `Debug` never shows a key.
#[derive(Clone)]
pub struct Keyring {
    current: String,
    keys: Arc<BTreeMap<String, [u8; 32]>>,
}

impl Keyring {
    /// A keyring whose current key is `key` (32 bytes: AES-256), named `id`
    /// (1 to 64 characters of `A-Z a-z 0-9 _ . -`).
    pub fn new(id: impl Into<String>, key: [u8; 32]) -> Result<Self> {
        let id = checked_id(id.into())?;
        Ok(Keyring {
            current: id.clone(),
            keys: Arc::new(BTreeMap::from([(id, key)])),
        })
    }

    /// [`Keyring::new`] with the key in standard base64 (44 characters).
    pub fn from_base64(id: impl Into<String>, key: &str) -> Result<Self> {
        Self::new(id, decode_key(key)?)
    }

    /// With `key`, named `id`, kept to open values it sealed (a key rotated
    /// out). `InvalidArgument` if `id` is taken.
    pub fn with_previous(mut self, id: impl Into<String>, key: [u8; 32]) -> Result<Self> {
        let id = checked_id(id.into())?;
        if self.keys.contains_key(&id) {
            return Err(Error::invalid(
                "id",
                format!("key id {id} is in the keyring already"),
            ));
        }
        Arc::make_mut(&mut self.keys).insert(id, key);
        Ok(self)
    }

    /// With `key`, named `id`, as the current key (it seals from now on); the
    /// keys before it still open what they sealed.
    pub fn rotated_to(self, id: impl Into<String>, key: [u8; 32]) -> Result<Self> {
        let id: String = id.into();
        let mut ring = self.with_previous(id.clone(), key)?;
        ring.current = id;
        Ok(ring)
    }

    /// The id of the key that seals.
    pub fn current_id(&self) -> &str {
        &self.current
    }

    /// Seal `plain` (the codec's bytes of `key`'s value).
    pub(crate) fn seal(&self, key: &str, plain: &[u8]) -> Result<Vec<u8>> {
        let cipher = self.cipher(&self.current);
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let sealed = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plain,
                    aad: key.as_bytes(),
                },
            )
            .map_err(|_| codec_error(key, "cannot encrypt".into()))?;
        let mut body = nonce.to_vec();
        body.extend_from_slice(&sealed);
        let b64 = base64::engine::general_purpose::STANDARD.encode(body);
        Ok(format!("{PREFIX}{}:{b64}", self.current).into_bytes())
    }

    /// Open a sealed value of `key`: `Codec` if it is not sealed, sealed by a
    /// key not in the keyring, or does not open with it (a wrong key, a value
    /// changed or moved from another key).
    pub(crate) fn open(&self, key: &str, stored: &[u8]) -> Result<Vec<u8>> {
        let text = std::str::from_utf8(stored)
            .ok()
            .and_then(|t| t.strip_prefix(PREFIX))
            .ok_or_else(|| {
                codec_error(
                    key,
                    "the value is not encrypted (written without the keyring?)".into(),
                )
            })?;
        let (id, b64) = text
            .split_once(':')
            .ok_or_else(|| codec_error(key, "a sealed value without its key id".into()))?;
        if !self.keys.contains_key(id) {
            return Err(codec_error(
                key,
                format!("sealed with key {id}, which is not in the keyring"),
            ));
        }
        let body = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| codec_error(key, format!("a sealed value that is not base64: {e}")))?;
        if body.len() < NONCE {
            return Err(codec_error(key, "a sealed value too short".into()));
        }
        let (nonce, sealed) = body.split_at(NONCE);
        self.cipher(id)
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: key.as_bytes(),
                },
            )
            .map_err(|_| {
                codec_error(
                    key,
                    format!(
                        "does not open with key {id} (a wrong key, or a changed or moved value)"
                    ),
                )
            })
    }

    fn cipher(&self, id: &str) -> Aes256Gcm {
        let key = self.keys.get(id).expect("ids are checked before");
        Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key))
    }
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("current", &self.current)
            .field("ids", &self.keys.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

fn checked_id(id: String) -> Result<String> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(id)
    } else {
        Err(Error::invalid(
            "id",
            format!("a key id is 1 to 64 of A-Z a-z 0-9 _ . - (got {id:?})"),
        ))
    }
}

fn decode_key(b64: &str) -> Result<[u8; 32]> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|e| Error::invalid("key", format!("not base64: {e}")))?;
    bytes.try_into().map_err(|b: Vec<u8>| {
        Error::invalid(
            "key",
            format!("an AES-256 key is 32 bytes, not {}", b.len()),
        )
    })
}

fn codec_error(key: &str, reason: String) -> Error {
    Error::Codec {
        key: key.to_string(),
        reason: format!("encrypted: {reason}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_with_its_key_only_and_only_at_its_config_key() {
        let ring = Keyring::new("k1", [7; 32]).unwrap();
        let a = ring.seal("db/password", b"\"hunter2\"").unwrap();
        let b = ring.seal("db/password", b"\"hunter2\"").unwrap();
        assert_ne!(a, b, "a fresh nonce per write");
        assert!(
            a.starts_with(PREFIX.as_bytes()) && !String::from_utf8_lossy(&a).contains("hunter2")
        );
        assert_eq!(ring.open("db/password", &a).unwrap(), b"\"hunter2\"");
        assert!(ring.open("db/other", &a).is_err(), "moved to another key");
        let wrong = Keyring::new("k1", [8; 32]).unwrap();
        assert!(wrong.open("db/password", &a).is_err(), "a wrong key");
        let mut tampered = a.clone();
        let last = tampered.len() - 2;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        assert!(ring.open("db/password", &tampered).is_err(), "changed");
        assert!(
            ring.open("db/password", b"\"plain\"").is_err(),
            "not sealed"
        );
    }

    #[test]
    fn a_rotated_keyring_seals_with_the_new_key_and_opens_the_old() {
        let old = Keyring::new("k1", [1; 32]).unwrap();
        let sealed_old = old.seal("x", b"1").unwrap();
        let ring = old.rotated_to("k2", [2; 32]).unwrap();
        assert_eq!(ring.current_id(), "k2");
        let sealed_new = ring.seal("x", b"2").unwrap();
        assert!(String::from_utf8_lossy(&sealed_new).starts_with("coordkit-sealed:v1:k2:"));
        assert_eq!(ring.open("x", &sealed_old).unwrap(), b"1");
        let only_new = Keyring::new("k2", [2; 32]).unwrap();
        let e = only_new.open("x", &sealed_old).unwrap_err().to_string();
        assert!(e.contains("k1") && e.contains("not in the keyring"), "{e}");
        assert!(format!("{ring:?}").contains("k2") && !format!("{ring:?}").contains("[2"));
    }

    #[test]
    fn ids_and_keys_are_checked() {
        assert!(Keyring::new("", [0; 32]).is_err());
        assert!(Keyring::new("a b", [0; 32]).is_err());
        assert!(Keyring::new("k1", [0; 32])
            .unwrap()
            .with_previous("k1", [1; 32])
            .is_err());
        assert!(Keyring::from_base64("k", "c2hvcnQ=").is_err(), "5 bytes");
        let b64 = base64::engine::general_purpose::STANDARD.encode([9u8; 32]);
        assert!(Keyring::from_base64("k", &b64).is_ok());
    }
}
