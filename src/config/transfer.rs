//! Export and import: a prefix's keys as a reviewable document (every key
//! with its codec, version and exact value), and an import that shows what it
//! would change and applies it with compare-and-set on what it compared.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::{validate_key, validate_prefix, ConfigCenter, ConfigChange, Version};
use crate::backend::{RangeRequest, Revision};
use crate::error::{Error, Result};

/// A prefix's config keys at one revision, as [`ConfigCenter::export`]
/// reads them: a document to review, keep or import elsewhere.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ConfigExport {
    /// The prefix exported (relative to the config root; empty: every key).
    pub prefix: String,
    /// The store revision of the read (for the reader; an import does not use it).
    pub revision: Revision,
    /// Every key under the prefix, in key order.
    pub keys: Vec<ExportedKey>,
}

/// One key of a [`ConfigExport`]: its value exactly as stored — as text when
/// it is UTF-8, else as base64.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ExportedKey {
    /// The key, relative to the config root.
    pub key: String,
    /// The codec its value is in (`json`, `toml`, `yaml`, `text`).
    pub codec: String,
    /// Its version when exported.
    pub version: Version,
    /// Whether the value is encrypted ([`ConfigCenter::with_encryption_for`]):
    /// then it is exported sealed, as stored, and opens only with the keyring.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub encrypted: bool,
    /// The value, when it is UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The value in standard base64, when it is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base64: Option<String>,
}

impl ExportedKey {
    /// The value's bytes; `InvalidArgument` unless exactly one of `text` and
    /// `base64` is there (and the base64 decodes).
    pub fn bytes(&self) -> Result<Vec<u8>> {
        match (&self.text, &self.base64) {
            (Some(text), None) => Ok(text.clone().into_bytes()),
            (None, Some(b64)) => base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| Error::invalid("base64", format!("{}: {e}", self.key))),
            _ => Err(Error::invalid(
                "value",
                format!("{}: give exactly one of text and base64", self.key),
            )),
        }
    }
}

/// What an import would change, read at one revision: each key whose value
/// differs, with the version and value it has now.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ImportPlan {
    /// The changes, in key order.
    pub changes: Vec<PlannedChange>,
    /// The keys of the document already at its value.
    pub unchanged: usize,
}

/// One change of an [`ImportPlan`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PlannedChange {
    /// The key, relative to the config root.
    pub key: String,
    /// Its version and value now (`None`: absent).
    pub before: Option<(Version, Vec<u8>)>,
    /// Its value after (`None`: deleted, with `prune`).
    pub after: Option<Vec<u8>>,
}

/// What [`ConfigCenter::apply_import`] did: the batches applied, in order,
/// and where it stopped, if it did.
#[derive(Debug)]
#[non_exhaustive]
pub struct ImportReport {
    /// Each batch applied: its keys and the version they share.
    pub applied: Vec<(Vec<String>, Version)>,
    /// The batch that failed (its keys, and why), after which nothing was
    /// tried; `None` when every batch applied.
    pub failed: Option<(Vec<String>, Error)>,
}

impl ConfigCenter {
    /// Every key under `prefix` (empty: all) read at one revision, with its
    /// codec, version and exact value. One read of the store (cancelling
    /// leaves nothing).
    pub async fn export(&self, prefix: &str) -> Result<ConfigExport> {
        validate_prefix(prefix)?;
        let full = self.full(prefix);
        let resp = self
            .retry
            .run("config export", |_| {
                self.backend.range(RangeRequest::prefix(full.clone()))
            })
            .await?;
        let keys = resp
            .kvs
            .iter()
            .map(|kv| {
                let key = self.relative(&kv.key_str()).to_string();
                let (text, base64) = match String::from_utf8(kv.value.clone()) {
                    Ok(text) => (Some(text), None),
                    Err(_) => (
                        None,
                        Some(base64::engine::general_purpose::STANDARD.encode(&kv.value)),
                    ),
                };
                ExportedKey {
                    codec: self.codec_of(&key).name().to_string(),
                    encrypted: self.is_encrypted(&key),
                    key,
                    version: kv.mod_revision,
                    text,
                    base64,
                }
            })
            .collect();
        Ok(ConfigExport {
            prefix: prefix.to_string(),
            revision: resp.revision,
            keys,
        })
    }

    /// What importing `export` here would change, compared with the store as
    /// it is now (one read): each key whose value differs; with `prune`, also
    /// every key under the document's prefix that it does not name (deleted).
    ///
    /// `InvalidArgument` (and nothing planned) for a key named twice, a bad
    /// key or one outside the document's prefix, a value that is not given
    /// exactly once, a key whose codec or encryption here differs from the
    /// document's; `Codec` for a text value that does not decode in it (or,
    /// encrypted, does not open with this center's keyring). A base64 value
    /// is taken as is. Only reads: cancelling leaves nothing.
    pub async fn plan_import(&self, export: &ConfigExport, prune: bool) -> Result<ImportPlan> {
        validate_prefix(&export.prefix)?;
        let mut wanted = std::collections::BTreeMap::new();
        for entry in &export.keys {
            validate_key(&entry.key)?;
            if !entry.key.starts_with(&export.prefix) {
                return Err(Error::invalid(
                    "key",
                    format!(
                        "{} is not under the document's prefix {:?}",
                        entry.key, export.prefix
                    ),
                ));
            }
            let codec = self.codec_of(&entry.key);
            if codec.name() != entry.codec {
                return Err(Error::invalid(
                    "codec",
                    format!(
                        "{} is {} in the document, {} here",
                        entry.key,
                        entry.codec,
                        codec.name()
                    ),
                ));
            }
            if entry.encrypted != self.is_encrypted(&entry.key) {
                let (doc, here) = if entry.encrypted {
                    ("encrypted", "not")
                } else {
                    ("not encrypted", "encrypted")
                };
                return Err(Error::invalid(
                    "encrypted",
                    format!("{} is {doc} in the document, {here} here", entry.key),
                ));
            }
            let bytes = entry.bytes()?;
            if entry.text.is_some() {
                // Text is what a reviewer may have edited: it must decode (an
                // encrypted value must open with this keyring). A base64
                // value is opaque bytes, imported as exported.
                self.codecs()
                    .decode::<serde::de::IgnoredAny>(&entry.key, &bytes)?;
            }
            if wanted.insert(entry.key.clone(), bytes).is_some() {
                return Err(Error::invalid(
                    "key",
                    format!("{} is named twice", entry.key),
                ));
            }
        }
        let full = self.full(&export.prefix);
        let now = self
            .retry
            .run("config plan import", |_| {
                self.backend.range(RangeRequest::prefix(full.clone()))
            })
            .await?;
        let mut current: std::collections::BTreeMap<String, (Version, Vec<u8>)> = now
            .kvs
            .into_iter()
            .map(|kv| {
                (
                    self.relative(&kv.key_str()).to_string(),
                    (kv.mod_revision, kv.value),
                )
            })
            .collect();
        let mut changes = Vec::new();
        let mut unchanged = 0;
        for (key, after) in wanted {
            let before = current.remove(&key);
            if before.as_ref().is_some_and(|(_, v)| *v == after) {
                unchanged += 1;
                continue;
            }
            changes.push(PlannedChange {
                key,
                before,
                after: Some(after),
            });
        }
        if prune {
            changes.extend(current.into_iter().map(|(key, before)| PlannedChange {
                key,
                before: Some(before),
                after: None,
            }));
            changes.sort_by(|a, b| a.key.cmp(&b.key));
        }
        Ok(ImportPlan { changes, unchanged })
    }

    /// Apply `plan`, each change only if its key is still at the version the
    /// plan read (absent: still absent): all in one transaction when the
    /// store takes that many operations in one, else in batches of that size
    /// in key order, each all or nothing, stopping at the first that fails.
    ///
    /// A batch fails with `VersionConflict` when a key moved since the plan
    /// (nothing of that batch written); ambiguous answers and cancellation
    /// leave each batch applied whole or not at all, as
    /// [`ConfigCenter::update_many`] (which each batch is).
    pub async fn apply_import(&self, plan: &ImportPlan) -> ImportReport {
        let mut report = ImportReport {
            applied: Vec::new(),
            failed: None,
        };
        let size = self.backend.limits().max_txn_ops.max(1);
        for batch in plan.changes.chunks(size) {
            let keys: Vec<String> = batch.iter().map(|c| c.key.clone()).collect();
            let changes = batch
                .iter()
                .map(|c| ConfigChange {
                    key: c.key.clone(),
                    value: c.after.clone(),
                    expected: Some(c.before.as_ref().map_or(0, |(v, _)| *v)),
                })
                .collect();
            match self.update_many(changes).await {
                Ok(version) => report.applied.push((keys, version)),
                Err(e) => {
                    report.failed = Some((keys, e));
                    break;
                }
            }
        }
        report
    }
}
