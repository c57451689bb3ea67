//! How config values are stored: JSON by default; TOML and YAML behind features;
//! plain text. Chosen per center and per key prefix
//! ([`ConfigCenter::with_codec`](super::ConfigCenter::with_codec),
//! [`ConfigCenter::with_codec_for`](super::ConfigCenter::with_codec_for)).

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::sealed::Keyring;
use crate::error::{Error, Result};

/// A format for config values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Codec {
    /// JSON (serde_json). The default.
    #[default]
    Json,
    /// TOML (feature `toml`): the value must be a table at the top (a struct
    /// or a map), as in a TOML file.
    #[cfg(feature = "toml")]
    Toml,
    /// YAML (feature `yaml`, through serde_yaml_ng).
    #[cfg(feature = "yaml")]
    Yaml,
    /// The UTF-8 bytes of a string, with no quoting: for values that are text
    /// (a `String`, or a type that serializes as one). Anything else is `Codec`.
    Text,
}

impl Codec {
    /// Its name in messages ("json", "toml", "yaml", "text").
    pub fn name(self) -> &'static str {
        match self {
            Codec::Json => "json",
            #[cfg(feature = "toml")]
            Codec::Toml => "toml",
            #[cfg(feature = "yaml")]
            Codec::Yaml => "yaml",
            Codec::Text => "text",
        }
    }

    /// The stored bytes of `value` at `key`; `Codec { key }` if it does not
    /// encode in this format.
    pub fn encode<T: Serialize + ?Sized>(self, key: &str, value: &T) -> Result<Vec<u8>> {
        let failed = |reason: String| Error::Codec {
            key: key.to_string(),
            reason: format!("{}: {reason}", self.name()),
        };
        match self {
            Codec::Json => serde_json::to_vec(value).map_err(|e| failed(e.to_string())),
            #[cfg(feature = "toml")]
            Codec::Toml => toml::to_string(value)
                .map(String::into_bytes)
                .map_err(|e| failed(e.to_string())),
            #[cfg(feature = "yaml")]
            Codec::Yaml => serde_yaml_ng::to_string(value)
                .map(String::into_bytes)
                .map_err(|e| failed(e.to_string())),
            Codec::Text => match serde_json::to_value(value) {
                Ok(serde_json::Value::String(s)) => Ok(s.into_bytes()),
                Ok(other) => Err(failed(format!(
                    "the value is not a string but {}",
                    kind(&other)
                ))),
                Err(e) => Err(failed(e.to_string())),
            },
        }
    }

    /// The value stored as `bytes` at `key`; `Codec { key }` if they do not
    /// decode as `T` in this format.
    pub fn decode<T: DeserializeOwned>(self, key: &str, bytes: &[u8]) -> Result<T> {
        let failed = |reason: String| Error::Codec {
            key: key.to_string(),
            reason: format!("{}: {reason}", self.name()),
        };
        let text = || std::str::from_utf8(bytes).map_err(|e| failed(e.to_string()));
        match self {
            Codec::Json => serde_json::from_slice(bytes).map_err(|e| failed(e.to_string())),
            #[cfg(feature = "toml")]
            Codec::Toml => toml::from_str(text()?).map_err(|e| failed(e.to_string())),
            #[cfg(feature = "yaml")]
            Codec::Yaml => serde_yaml_ng::from_str(text()?).map_err(|e| failed(e.to_string())),
            Codec::Text => {
                let s = serde::de::value::StrDeserializer::<serde::de::value::Error>::new(text()?);
                T::deserialize(s).map_err(|e| failed(e.to_string()))
            }
        }
    }
}

fn kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// A center's codecs: a default, and per key prefix (the longest match wins);
/// and the keyrings that encrypt the values under some prefixes.
#[derive(Clone, Debug, Default)]
pub(crate) struct Codecs {
    pub(crate) default: Codec,
    pub(crate) by_prefix: Arc<Vec<(String, Codec)>>,
    pub(crate) sealed: Arc<Vec<(String, Keyring)>>,
}

impl Codecs {
    /// The codec of `key` (relative to the config root).
    pub(crate) fn of(&self, key: &str) -> Codec {
        longest(&self.by_prefix, key).map_or(self.default, |c| *c)
    }

    /// The keyring that encrypts `key`'s values, if any.
    pub(crate) fn keyring_of(&self, key: &str) -> Option<&Keyring> {
        longest(&self.sealed, key)
    }

    /// `value` as stored at `key`: in its codec, then sealed if its prefix
    /// is encrypted.
    pub(crate) fn encode<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<Vec<u8>> {
        let bytes = self.of(key).encode(key, value)?;
        match self.keyring_of(key) {
            Some(ring) => ring.seal(key, &bytes),
            None => Ok(bytes),
        }
    }

    /// The value stored as `bytes` at `key`: opened if its prefix is
    /// encrypted, then decoded in its codec.
    pub(crate) fn decode<T: DeserializeOwned>(&self, key: &str, bytes: &[u8]) -> Result<T> {
        match self.keyring_of(key) {
            Some(ring) => self.of(key).decode(key, &ring.open(key, bytes)?),
            None => self.of(key).decode(key, bytes),
        }
    }
}

/// The rule of the longest prefix of `key` in `rules`.
fn longest<'a, R>(rules: &'a [(String, R)], key: &str) -> Option<&'a R> {
    rules
        .iter()
        .filter(|(p, _)| key.starts_with(p.as_str()))
        .max_by_key(|(p, _)| p.len())
        .map(|(_, r)| r)
}
