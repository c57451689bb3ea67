//! Writes on a version: compare-and-set, a conditional delete and all-or-nothing
//! batches — each retried through lost answers, recognising its own write.

use serde::Serialize;

use super::{validate_key, ConfigCenter, ConfigChange, Version};
use crate::ambiguous::{first_change_after, outcome_unknown};
use crate::backend::{
    Compare, CompareOp, DeleteRequest, KeyValue, PutRequest, RangeRequest, Txn, TxnOp,
    TxnOpResponse, TxnResponse,
};
use crate::error::{Error, Result};

/// The change of one key that a conditional write makes.
struct Effect<'a> {
    full: String,
    /// `Some(value)` puts it, `None` deletes it.
    value: Option<&'a [u8]>,
}

impl ConfigCenter {
    /// Write raw bytes at `key` only if its version is `expected` (0: only if
    /// absent); returns the new version, or `VersionConflict { key, current }`.
    ///
    /// Retried through lost answers under the retry policy: a retry whose compare
    /// fails against this call's own earlier write (the key's first change after
    /// `expected` put this value) returns that write's version. `OutcomeUnknown`
    /// when no try's answer came and the store shows none applied: the value may
    /// still be written later. Cancelling it leaves the key either written by
    /// this call once, or as it was.
    #[tracing::instrument(level = "debug", name = "coord.config.compare_and_set", skip_all, fields(key = %key), err(level = "debug"))]
    pub async fn compare_and_set_bytes(
        &self,
        key: &str,
        value: impl Into<Vec<u8>>,
        expected: Version,
    ) -> Result<Version> {
        validate_key(key)?;
        super::validate_version_or_zero(expected)?;
        let value: Vec<u8> = value.into();
        let full = self.full(key);
        let effects = [Effect {
            full: full.clone(),
            value: Some(&value),
        }];
        let txn = Txn::new()
            .when([Compare::mod_revision(
                full.clone(),
                CompareOp::Equal,
                expected,
            )])
            .and_then([PutRequest::new(full.clone(), value.clone())])
            .or_else([RangeRequest::key(full)]);
        let r = self
            .write_on_versions("config compare_and_set", txn, (key, expected), &effects)
            .await?;
        match r {
            Ok(version) => Ok(version),
            Err(resp) => Err(Error::VersionConflict {
                key: key.to_string(),
                current: current_version(resp.responses.first()),
            }),
        }
    }

    /// Write `value` as JSON at `key` only if its version is `expected` (0: only if
    /// absent); returns the new version, or `VersionConflict { key, current }`
    /// carrying the current version (0 if absent). Lost answers as for
    /// [`ConfigCenter::compare_and_set_bytes`].
    pub async fn compare_and_set<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        expected: Version,
    ) -> Result<Version> {
        validate_key(key)?;
        let bytes = self.codecs().encode(key, value)?;
        self.compare_and_set_bytes(key, bytes, expected).await
    }

    /// Delete `key` only if its version is `expected`: `VersionConflict`
    /// carrying the current version otherwise, `NotFound` if it is absent.
    /// One transaction: nothing written after the caller's read is deleted.
    ///
    /// A retry after a lost answer that finds the key's first change after
    /// `expected` to be a delete reports success (that delete is the only one the
    /// compare allowed). Cancelling it leaves the key either deleted or as it was.
    pub async fn delete_if_version(&self, key: &str, expected: Version) -> Result<()> {
        validate_key(key)?;
        super::validate_version(expected)?;
        let full = self.full(key);
        let effects = [Effect {
            full: full.clone(),
            value: None,
        }];
        let txn = Txn::new()
            .when([Compare::mod_revision(
                full.clone(),
                CompareOp::Equal,
                expected,
            )])
            .and_then([DeleteRequest::key(full.clone())])
            .or_else([RangeRequest::key(full)]);
        let r = self
            .write_on_versions("config delete_if_version", txn, (key, expected), &effects)
            .await?;
        let Err(resp) = r else {
            return Ok(());
        };
        match current_version(resp.responses.first()) {
            0 => Err(Error::NotFound {
                key: key.to_string(),
            }),
            current => Err(Error::VersionConflict {
                key: key.to_string(),
                current,
            }),
        }
    }

    /// Apply several changes at once, all or nothing: each sets or deletes a key,
    /// optionally only if the key's version is the one expected (0: only if
    /// absent). Returns the one version all the writes share.
    ///
    /// Errors: `VersionConflict` naming the first key (in the order given) whose
    /// version is not the expected one, with its current version — and nothing is
    /// written; `InvalidArgument` for no changes, a key named twice, a bad key or
    /// more changes than the backend takes in one transaction; `OutcomeUnknown`
    /// when no try's answer came and the store does not show the batch applied
    /// (it may still apply, whole). A retry whose compares fail against this
    /// call's own earlier batch (the first compared key's first change after its
    /// expected version made every change of the batch) returns that batch's
    /// version. Cancelling it leaves either every change applied or none.
    pub async fn update_many(&self, changes: Vec<ConfigChange>) -> Result<Version> {
        if changes.is_empty() {
            return Err(Error::invalid("changes", "must not be empty"));
        }
        let mut seen = std::collections::HashSet::new();
        let (mut compares, mut writes, mut reads, mut effects) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut first_compared = None;
        for c in &changes {
            validate_key(&c.key)?;
            if !seen.insert(c.key.as_str()) {
                return Err(Error::invalid(
                    "changes",
                    format!("{} is named twice", c.key),
                ));
            }
            let full = self.full(&c.key);
            if let Some(expected) = c.expected {
                super::validate_version_or_zero(expected)?;
                first_compared.get_or_insert((c.key.as_str(), expected));
                compares.push(Compare::mod_revision(
                    full.clone(),
                    CompareOp::Equal,
                    expected,
                ));
            }
            writes.push(match &c.value {
                Some(v) => TxnOp::Put(PutRequest::new(full.clone(), v.clone())),
                None => TxnOp::Delete(DeleteRequest::key(full.clone())),
            });
            reads.push(TxnOp::Range(RangeRequest::key(full.clone())));
            effects.push(Effect {
                full,
                value: c.value.as_deref(),
            });
        }
        let txn = Txn::new().when(compares).and_then(writes).or_else(reads);
        let Some(first_compared) = first_compared else {
            // No compare: nothing to recognise; a try in doubt may still apply.
            return self
                .retry
                .run("config update_many", |_| self.backend.txn(txn.clone()))
                .await
                .map(|r| r.revision)
                .map_err(|e| outcome_unknown("config update_many", e));
        };
        let resp = match self
            .write_on_versions("config update_many", txn, first_compared, &effects)
            .await?
        {
            Ok(version) => return Ok(version),
            Err(resp) => resp,
        };
        for (c, range) in changes.iter().zip(resp.responses.iter()) {
            let current = current_version(Some(range));
            if c.expected.is_some_and(|e| e != current) {
                return Err(Error::VersionConflict {
                    key: c.key.clone(),
                    current,
                });
            }
        }
        Err(Error::unavailable(
            "update_many's compare failed, yet every key read back at its expected version",
        ))
    }

    /// Send `txn` — a write whose compares include `compared` (a key and the
    /// version it must have) and whose success branch makes `effects` — under
    /// the retry policy. `Ok(Ok(version))` when it applied, by the try that
    /// answered or an earlier one whose answer never came; `Ok(Err(response))`
    /// when its compares failed against someone else's change (the failure
    /// branch's reads); `OutcomeUnknown` when no answer came and none is seen to
    /// have applied.
    async fn write_on_versions(
        &self,
        operation: &'static str,
        txn: Txn,
        compared: (&str, Version),
        effects: &[Effect<'_>],
    ) -> Result<std::result::Result<Version, TxnResponse>> {
        let mut in_doubt = false;
        let sent = self
            .retry
            .run(operation, |attempt| {
                in_doubt |= attempt > 1;
                self.backend.txn(txn.clone())
            })
            .await;
        let resp = match sent {
            Ok(resp) if resp.succeeded => return Ok(Ok(resp.revision)),
            Ok(resp) if !in_doubt => return Ok(Err(resp)),
            Ok(resp) => Some(resp),
            Err(e) if e.is_retryable() => None,
            Err(e) => return Err(e),
        };
        // An earlier try may have applied: the compared key's first change after
        // its expected version is the only revision it could have applied at.
        let (key, expected) = compared;
        let full = self.full(key);
        let ended = if expected == 0 {
            let now = self.backend.range(RangeRequest::key(full.clone())).await;
            now.map(|r| r.kvs.first().map(|kv| kv.create_revision))
        } else {
            first_change_after(self.backend.as_ref(), &full, expected).await
        };
        // A change whose author the store can no longer show (unreachable,
        // history compacted) leaves the outcome unknown, never a conflict.
        let unknown = || {
            outcome_unknown(
                operation,
                "no try's answer came, and the store does not show it applied",
            )
        };
        match (ended, resp) {
            (Ok(Some(at)), resp) => match (self.made_at(at, effects).await, resp) {
                (Some(true), _) => Ok(Ok(at)),
                (Some(false), Some(resp)) => Ok(Err(resp)),
                _ => Err(unknown()),
            },
            _ => Err(unknown()),
        }
    }

    /// Whether the store's state at revision `at` is `effects`, each made at `at`:
    /// then the write that applied at `at` was this call's (or one exactly like it).
    /// `None` when the store cannot tell (unreachable, history compacted).
    async fn made_at(&self, at: crate::backend::Revision, effects: &[Effect<'_>]) -> Option<bool> {
        for effect in effects {
            let read = RangeRequest::key(effect.full.clone()).at_revision(at);
            let then = self.backend.range(read).await.ok()?;
            let made = match (effect.value, then.kvs.first()) {
                (Some(value), Some(kv)) => kv.mod_revision == at && kv.value == value,
                (None, None) => self.deleted_at(&effect.full, at).await?,
                _ => false,
            };
            if !made {
                return Some(false);
            }
        }
        Some(true)
    }

    /// Whether `full` existed just before revision `at` (so `at` deleted it);
    /// `None` when the store cannot tell.
    async fn deleted_at(&self, full: &str, at: crate::backend::Revision) -> Option<bool> {
        let before = RangeRequest::key(full).at_revision(at - 1);
        let then = self.backend.range(before).await.ok()?;
        Some(!then.kvs.is_empty())
    }
}

/// The version a failure branch's read found (0: absent).
fn current_version(read: Option<&TxnOpResponse>) -> Version {
    match read {
        Some(TxnOpResponse::Range(r)) => r.kvs.first().map_or(0, |kv: &KeyValue| kv.mod_revision),
        _ => 0,
    }
}
