//! Gray (beta) release of a config value: a second value for a key, served
//! first to the [`ConfigManager`](super::ConfigManager)s whose instance labels
//! match its selector, then promoted to the main value or dropped.
//!
//! A key's gray release is stored at `<namespace>config-gray/<key>` as JSON:
//! the selector and the value's stored bytes (in the key's codec, sealed if
//! the key is encrypted) in base64.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::{validate_key, ConfigCenter, Version};
use crate::ambiguous::outcome_unknown;
use crate::backend::{
    BackendExt, Compare, CompareOp, DeleteRequest, KeyValue, PutRequest, RangeRequest, Txn, TxnOp,
    TxnOpResponse,
};
use crate::error::{Error, Result};

/// Labels an instance has, or a selector asks for: `name → value`.
pub type Labels = BTreeMap<String, String>;

/// A key's gray release, as [`ConfigCenter::gray`] reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct GrayRelease {
    /// The labels an instance must all have (same values) to be served it.
    pub selector: Labels,
    /// The value's stored bytes (in the key's codec; sealed if encrypted).
    pub value: Vec<u8>,
    /// The gray release's version (its own key's revision): what
    /// [`ConfigCenter::promote_gray`] and [`ConfigCenter::drop_gray`] compare on.
    pub version: Version,
}

impl GrayRelease {
    /// Whether an instance with `labels` is served this value: it has every
    /// label of the selector, with the same value.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.selector.iter().all(|(k, v)| labels.get(k) == Some(v))
    }

    pub(crate) fn from_stored(kv: &KeyValue) -> Result<Self> {
        let stored: Stored = serde_json::from_slice(&kv.value)
            .map_err(|e| Error::invalid("gray release", format!("{}: {e}", kv.key_str())))?;
        let value = base64::engine::general_purpose::STANDARD
            .decode(stored.value)
            .map_err(|e| Error::invalid("gray release", format!("{}: {e}", kv.key_str())))?;
        Ok(GrayRelease {
            selector: stored.selector,
            value,
            version: kv.mod_revision,
        })
    }
}

#[derive(Serialize, Deserialize)]
struct Stored {
    selector: Labels,
    value: String,
}

impl ConfigCenter {
    /// The store key of `key`'s gray release.
    pub(crate) fn gray_key(&self, key: &str) -> String {
        format!("{}{key}", self.gray_root)
    }

    /// Publish `value` (in `key`'s codec, sealed if encrypted) as `key`'s gray
    /// release for the instances whose labels match `selector` (replacing
    /// any gray release of `key`); returns its version. The main value is
    /// untouched: managers that do not match go on serving it.
    ///
    /// Errors: `InvalidArgument` for a bad key or an empty selector (that is
    /// a plain `set`); `OutcomeUnknown` when the answer never came (it is not
    /// retried: writing again is safe, the same value, but moves the version).
    /// Cancelling it leaves the release written whole or not at all.
    pub async fn set_gray<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        selector: Labels,
    ) -> Result<Version> {
        validate_key(key)?;
        let bytes = self.codecs.encode(key, value)?;
        self.set_gray_bytes(key, bytes, selector).await
    }

    /// [`ConfigCenter::set_gray`] with the stored bytes given.
    pub async fn set_gray_bytes(
        &self,
        key: &str,
        value: Vec<u8>,
        selector: Labels,
    ) -> Result<Version> {
        validate_key(key)?;
        if selector.is_empty() {
            return Err(Error::invalid(
                "selector",
                "a gray release names at least one label (without, use set)",
            ));
        }
        let stored = Stored {
            selector,
            value: base64::engine::general_purpose::STANDARD.encode(value),
        };
        let bytes =
            serde_json::to_vec(&stored).map_err(|e| Error::invalid("selector", e.to_string()))?;
        // One try: a try retried after a lost answer could land after the
        // retry and move the version returned.
        match self.backend.put(self.gray_key(key), bytes).await {
            Err(e) if e.is_retryable() => Err(outcome_unknown("config set gray", e)),
            other => other,
        }
    }

    /// `key`'s gray release, if it has one (a read: cancelling leaves nothing).
    pub async fn gray(&self, key: &str) -> Result<Option<GrayRelease>> {
        validate_key(key)?;
        let full = self.gray_key(key);
        let kv = self
            .retry
            .run("config gray", |_| self.backend.get(full.clone()))
            .await?;
        kv.as_ref().map(GrayRelease::from_stored).transpose()
    }

    /// Make `key`'s gray release its main value (a new version, in its
    /// history) and remove the gray release, in one transaction, only if the
    /// gray release is still at `expected` (the version reviewed); returns
    /// the main value's new version.
    ///
    /// Errors: `VersionConflict` (naming the gray key, with its current
    /// version, 0 if none) when it moved or is gone — nothing written;
    /// `OutcomeUnknown` when the answer never came (it is not retried: read
    /// the key to see). Cancelling leaves it promoted whole or not at all.
    pub async fn promote_gray(&self, key: &str, expected: Version) -> Result<Version> {
        let gray = self.expected_gray(key, expected).await?;
        let txn = Txn::new()
            .when([Compare::mod_revision(
                self.gray_key(key),
                CompareOp::Equal,
                expected,
            )])
            .and_then([
                TxnOp::Put(PutRequest::new(self.full(key), gray.value)),
                TxnOp::Delete(DeleteRequest::key(self.gray_key(key))),
            ])
            .or_else([RangeRequest::key(self.gray_key(key))]);
        self.gray_txn("config promote gray", key, txn).await
    }

    /// Remove `key`'s gray release, only if it is still at `expected`: every
    /// manager serves the main value again.
    ///
    /// Errors as for [`ConfigCenter::promote_gray`]. Cancelling it leaves the
    /// release there or gone, nothing else changed.
    pub async fn drop_gray(&self, key: &str, expected: Version) -> Result<()> {
        self.expected_gray(key, expected).await?;
        let txn = Txn::new()
            .when([Compare::mod_revision(
                self.gray_key(key),
                CompareOp::Equal,
                expected,
            )])
            .and_then([DeleteRequest::key(self.gray_key(key))])
            .or_else([RangeRequest::key(self.gray_key(key))]);
        self.gray_txn("config drop gray", key, txn).await.map(drop)
    }

    /// The gray release of `key` if it is at `expected`, else `VersionConflict`.
    async fn expected_gray(&self, key: &str, expected: Version) -> Result<GrayRelease> {
        super::validate_version(expected)?;
        match self.gray(key).await? {
            Some(gray) if gray.version == expected => Ok(gray),
            other => Err(Error::VersionConflict {
                key: self.gray_key(key),
                current: other.map_or(0, |g| g.version),
            }),
        }
    }

    /// One try of a gray release's transaction: its revision, a conflict
    /// with the gray key's version now, or unknown.
    async fn gray_txn(&self, operation: &'static str, key: &str, txn: Txn) -> Result<Version> {
        let resp = match self.backend.txn(txn).await {
            Ok(resp) => resp,
            Err(e) if e.is_retryable() => return Err(outcome_unknown(operation, e)),
            Err(e) => return Err(e),
        };
        if resp.succeeded {
            return Ok(resp.revision);
        }
        let current = match resp.responses.first() {
            Some(TxnOpResponse::Range(r)) => r.kvs.first().map_or(0, |kv| kv.mod_revision),
            _ => 0,
        };
        Err(Error::VersionConflict {
            key: self.gray_key(key),
            current,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_selector_matches_labels_that_include_it() {
        let gray = GrayRelease {
            selector: Labels::from([("zone".into(), "eu-1".into())]),
            value: Vec::new(),
            version: 1,
        };
        let labels = |pairs: &[(&str, &str)]| -> Labels {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(gray.matches(&labels(&[("zone", "eu-1"), ("app", "x")])));
        assert!(!gray.matches(&labels(&[("zone", "us-1")])));
        assert!(!gray.matches(&labels(&[])));
    }
}
