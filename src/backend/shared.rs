//! A shared backend is a backend: `Arc<dyn Backend>` (or `Arc` of any backend)
//! forwards every call, so it can be wrapped again (in [`Intercepted`],
//! [`Namespaced`](super::Namespaced)) without a forwarding type of its own.
//!
//! [`Intercepted`]: crate::testing::Intercepted

use std::sync::Arc;

use async_trait::async_trait;

use super::{
    Backend, Capabilities, LeaseGrant, LeaseId, LeaseInfo, Limits, RangeRequest, RangeResponse,
    Revision, Txn, TxnResponse, WatchRequest, WatchStart, WatchStream,
};
use crate::error::Result;

#[async_trait]
impl<T: Backend + ?Sized> Backend for Arc<T> {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn limits(&self) -> Limits {
        (**self).limits()
    }
    fn capabilities(&self) -> Capabilities {
        (**self).capabilities()
    }
    async fn range(&self, request: RangeRequest) -> Result<RangeResponse> {
        (**self).range(request).await
    }
    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        (**self).txn(txn).await
    }
    async fn lease_grant(&self, ttl: i64) -> Result<LeaseGrant> {
        (**self).lease_grant(ttl).await
    }
    async fn lease_keep_alive(&self, id: LeaseId) -> Result<i64> {
        (**self).lease_keep_alive(id).await
    }
    async fn lease_revoke(&self, id: LeaseId) -> Result<()> {
        (**self).lease_revoke(id).await
    }
    async fn lease_time_to_live(&self, id: LeaseId) -> Result<LeaseInfo> {
        (**self).lease_time_to_live(id).await
    }
    async fn watch(&self, request: WatchRequest) -> Result<WatchStream> {
        (**self).watch(request).await
    }
    async fn watch_reporting_start(
        &self,
        request: WatchRequest,
    ) -> Result<(WatchStream, Option<WatchStart>)> {
        (**self).watch_reporting_start(request).await
    }
    async fn compact(&self, revision: Revision) -> Result<()> {
        (**self).compact(revision).await
    }
}
