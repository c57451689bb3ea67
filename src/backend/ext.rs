//! Conveniences over the primitive, for every backend.

use async_trait::async_trait;

use super::{
    Backend, Compare, CompareOp, DeleteRequest, KeyValue, LeaseId, PutRequest, RangeRequest,
    Revision, Txn, TxnOpResponse,
};
use crate::error::{Error, Result};

/// The outcome of [`BackendExt::create_if_absent`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Created {
    /// The key was created at this revision.
    Created(Revision),
    /// The key existed already; here it is.
    Exists(KeyValue),
}

/// Conveniences built from [`Backend`] calls, implemented for every backend.
///
/// Backends cannot override these: each is one primitive call, so every backend
/// gets the same semantics for free.
#[async_trait]
pub trait BackendExt: Backend {
    /// The key-value at `key`, if present.
    async fn get(&self, key: impl Into<Vec<u8>> + Send) -> Result<Option<KeyValue>> {
        let mut resp = self.range(RangeRequest::key(key)).await?;
        Ok(resp.kvs.pop())
    }

    /// Every key-value under `prefix`, in key order.
    async fn get_prefix(&self, prefix: impl Into<Vec<u8>> + Send) -> Result<Vec<KeyValue>> {
        Ok(self.range(RangeRequest::prefix(prefix)).await?.kvs)
    }

    /// Write `value` at `key` (detached from any lease); returns the write's revision.
    async fn put(
        &self,
        key: impl Into<Vec<u8>> + Send,
        value: impl Into<Vec<u8>> + Send,
    ) -> Result<Revision> {
        let txn = Txn::new().and_then([PutRequest::new(key, value)]);
        Ok(self.txn(txn).await?.revision)
    }

    /// Write `value` at `key` attached to `lease`; returns the write's revision.
    async fn put_with_lease(
        &self,
        key: impl Into<Vec<u8>> + Send,
        value: impl Into<Vec<u8>> + Send,
        lease: LeaseId,
    ) -> Result<Revision> {
        let txn = Txn::new().and_then([PutRequest::new(key, value).with_lease(lease)]);
        Ok(self.txn(txn).await?.revision)
    }

    /// Delete `key`; returns whether it existed.
    async fn delete(&self, key: impl Into<Vec<u8>> + Send) -> Result<bool> {
        Ok(self.delete_range(DeleteRequest::key(key)).await? > 0)
    }

    /// Delete every key under `prefix`; returns how many were deleted.
    async fn delete_prefix(&self, prefix: impl Into<Vec<u8>> + Send) -> Result<i64> {
        self.delete_range(DeleteRequest::prefix(prefix)).await
    }

    /// Run one delete; returns how many keys it deleted.
    async fn delete_range(&self, request: DeleteRequest) -> Result<i64> {
        let resp = self.txn(Txn::new().and_then([request])).await?;
        match resp.responses.first() {
            Some(TxnOpResponse::Delete { deleted, .. }) => Ok(*deleted),
            other => Err(Error::unavailable(format!(
                "{} backend answered a delete with {other:?}",
                self.name()
            ))),
        }
    }

    /// Create `key` only if it does not exist, in one transaction.
    async fn create_if_absent(
        &self,
        key: impl Into<Vec<u8>> + Send,
        value: impl Into<Vec<u8>> + Send,
        lease: Option<LeaseId>,
    ) -> Result<Created> {
        let key = key.into();
        let mut put = PutRequest::new(key.clone(), value);
        put.lease = lease;
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([put])
            .or_else([RangeRequest::key(key.clone())]);
        let resp = self.txn(txn).await?;
        if resp.succeeded {
            return Ok(Created::Created(resp.revision));
        }
        match resp.first_range().and_then(|r| r.kvs.first()) {
            Some(kv) => Ok(Created::Exists(kv.clone())),
            // Deleted between the compare and the read cannot happen inside one txn.
            None => Err(Error::unavailable(format!(
                "{} backend reported {} both absent and present",
                self.name(),
                String::from_utf8_lossy(&key)
            ))),
        }
    }

    /// Write `value` at `key` only if the key's mod revision is `expected`
    /// (0: only if absent). Returns the new revision, or
    /// [`Error::VersionConflict`] carrying the current mod revision (0 if absent).
    async fn compare_and_swap(
        &self,
        key: impl Into<Vec<u8>> + Send,
        expected: Revision,
        value: impl Into<Vec<u8>> + Send,
    ) -> Result<Revision> {
        let key = key.into();
        if expected < 0 {
            return Err(Error::invalid(
                "expected",
                format!("a mod revision is never negative, got {expected}"),
            ));
        }
        let txn = Txn::new()
            .when([Compare::mod_revision(
                key.clone(),
                CompareOp::Equal,
                expected,
            )])
            .and_then([PutRequest::new(key.clone(), value)])
            .or_else([RangeRequest::key(key.clone())]);
        let resp = self.txn(txn).await?;
        if resp.succeeded {
            return Ok(resp.revision);
        }
        let current = resp
            .first_range()
            .and_then(|r| r.kvs.first())
            .map_or(0, |kv| kv.mod_revision);
        Err(Error::VersionConflict {
            key: String::from_utf8_lossy(&key).into_owned(),
            current,
        })
    }

    /// The store's current revision.
    async fn current_revision(&self) -> Result<Revision> {
        Ok(self
            .range(RangeRequest::key(b"\0".to_vec()).count_only())
            .await?
            .revision)
    }
}

impl<B: Backend + ?Sized> BackendExt for B {}
