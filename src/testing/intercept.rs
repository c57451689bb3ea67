//! A backend that forwards every call to another, except the calls a test
//! changes: how a test injects one fault without writing a whole backend.

use async_trait::async_trait;

use crate::backend::{
    Backend, Capabilities, LeaseGrant, LeaseId, LeaseInfo, Limits, RangeRequest, RangeResponse,
    Revision, Txn, TxnResponse, WatchRequest, WatchStart, WatchStream,
};
use crate::error::Result;

/// The calls an [`Intercepted`] backend hands to a test before (or instead of)
/// its inner backend. Every method forwards to `inner` unless overridden, so an
/// implementation overrides only the calls its fault changes.
///
/// `watch` and `watch_reporting_start` are separate calls: a recipe that wants
/// to know where its watch starts calls only the second, so a fault on watches
/// usually overrides both.
///
/// Dropping a call's future drops the interceptor's: a call not overridden
/// leaves what the inner backend's contract says; an override decides for
/// itself (one that holds a call back should not hold a lock across awaits).
#[async_trait]
pub trait Intercept<B: Backend>: Send + Sync + 'static {
    /// [`Backend::range`].
    async fn range(&self, inner: &B, request: RangeRequest) -> Result<RangeResponse> {
        inner.range(request).await
    }
    /// [`Backend::txn`].
    async fn txn(&self, inner: &B, txn: Txn) -> Result<TxnResponse> {
        inner.txn(txn).await
    }
    /// [`Backend::lease_grant`].
    async fn lease_grant(&self, inner: &B, ttl: i64) -> Result<LeaseGrant> {
        inner.lease_grant(ttl).await
    }
    /// [`Backend::lease_keep_alive`].
    async fn lease_keep_alive(&self, inner: &B, id: LeaseId) -> Result<i64> {
        inner.lease_keep_alive(id).await
    }
    /// [`Backend::lease_revoke`].
    async fn lease_revoke(&self, inner: &B, id: LeaseId) -> Result<()> {
        inner.lease_revoke(id).await
    }
    /// [`Backend::lease_time_to_live`].
    async fn lease_time_to_live(&self, inner: &B, id: LeaseId) -> Result<LeaseInfo> {
        inner.lease_time_to_live(id).await
    }
    /// [`Backend::watch`].
    async fn watch(&self, inner: &B, request: WatchRequest) -> Result<WatchStream> {
        inner.watch(request).await
    }
    /// [`Backend::watch_reporting_start`].
    async fn watch_reporting_start(
        &self,
        inner: &B,
        request: WatchRequest,
    ) -> Result<(WatchStream, Option<WatchStart>)> {
        inner.watch_reporting_start(request).await
    }
    /// [`Backend::compact`].
    async fn compact(&self, inner: &B, revision: Revision) -> Result<()> {
        inner.compact(revision).await
    }
}

/// A [`Backend`] that is `inner` with some calls intercepted by `I` (see
/// [`Intercept`]). Its name, limits and capabilities are `inner`'s.
pub struct Intercepted<B, I> {
    inner: B,
    intercept: I,
}

impl<B: Backend, I: Intercept<B>> Intercepted<B, I> {
    /// `inner`, with the calls `intercept` overrides going through it.
    pub fn new(inner: B, intercept: I) -> Self {
        Intercepted { inner, intercept }
    }

    /// The interceptor, for a test to arm or read.
    pub fn intercept(&self) -> &I {
        &self.intercept
    }

    /// The backend calls are forwarded to.
    pub fn inner(&self) -> &B {
        &self.inner
    }
}

impl<B, I> std::fmt::Debug for Intercepted<B, I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Intercepted").finish_non_exhaustive()
    }
}

#[async_trait]
impl<B: Backend, I: Intercept<B>> Backend for Intercepted<B, I> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn limits(&self) -> Limits {
        self.inner.limits()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn range(&self, request: RangeRequest) -> Result<RangeResponse> {
        self.intercept.range(&self.inner, request).await
    }
    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        self.intercept.txn(&self.inner, txn).await
    }
    async fn lease_grant(&self, ttl: i64) -> Result<LeaseGrant> {
        self.intercept.lease_grant(&self.inner, ttl).await
    }
    async fn lease_keep_alive(&self, id: LeaseId) -> Result<i64> {
        self.intercept.lease_keep_alive(&self.inner, id).await
    }
    async fn lease_revoke(&self, id: LeaseId) -> Result<()> {
        self.intercept.lease_revoke(&self.inner, id).await
    }
    async fn lease_time_to_live(&self, id: LeaseId) -> Result<LeaseInfo> {
        self.intercept.lease_time_to_live(&self.inner, id).await
    }
    async fn watch(&self, request: WatchRequest) -> Result<WatchStream> {
        self.intercept.watch(&self.inner, request).await
    }
    async fn watch_reporting_start(
        &self,
        request: WatchRequest,
    ) -> Result<(WatchStream, Option<WatchStart>)> {
        self.intercept
            .watch_reporting_start(&self.inner, request)
            .await
    }
    async fn compact(&self, revision: Revision) -> Result<()> {
        self.intercept.compact(&self.inner, revision).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    /// A backend that answers one fixed range and counts the calls that reach it.
    struct Fixed(AtomicU64);

    #[async_trait]
    impl Backend for Fixed {
        fn name(&self) -> &'static str {
            "fixed"
        }
        fn limits(&self) -> Limits {
            Limits::default()
        }
        fn capabilities(&self) -> Capabilities {
            Capabilities::NONE
        }
        async fn range(&self, _: RangeRequest) -> Result<RangeResponse> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(RangeResponse {
                kvs: Vec::new(),
                count: 7,
                more: false,
                revision: 3,
            })
        }
        async fn txn(&self, _: Txn) -> Result<TxnResponse> {
            unreachable!("not called")
        }
        async fn lease_grant(&self, _: i64) -> Result<LeaseGrant> {
            unreachable!("not called")
        }
        async fn lease_keep_alive(&self, _: LeaseId) -> Result<i64> {
            unreachable!("not called")
        }
        async fn lease_revoke(&self, _: LeaseId) -> Result<()> {
            unreachable!("not called")
        }
        async fn lease_time_to_live(&self, _: LeaseId) -> Result<LeaseInfo> {
            unreachable!("not called")
        }
        async fn watch(&self, _: WatchRequest) -> Result<WatchStream> {
            unreachable!("not called")
        }
        async fn compact(&self, _: Revision) -> Result<()> {
            unreachable!("not called")
        }
    }

    /// Forwards everything.
    struct Nothing;
    impl Intercept<Fixed> for Nothing {}

    /// Answers ranges itself.
    struct Ranges;
    #[async_trait]
    impl Intercept<Fixed> for Ranges {
        async fn range(&self, _: &Fixed, _: RangeRequest) -> Result<RangeResponse> {
            Err(crate::error::Error::unavailable("intercepted"))
        }
    }

    #[tokio::test]
    async fn calls_not_intercepted_reach_the_inner_backend() {
        let b = Intercepted::new(Fixed(AtomicU64::new(0)), Nothing);
        assert_eq!(b.name(), "fixed");
        assert_eq!(b.range(RangeRequest::key("k")).await.unwrap().count, 7);
        assert_eq!(b.inner().0.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_intercepted_call_is_the_interceptor_s() {
        let b = Intercepted::new(Fixed(AtomicU64::new(0)), Ranges);
        assert!(b.range(RangeRequest::key("k")).await.is_err());
        assert_eq!(b.inner().0.load(Ordering::SeqCst), 0);
    }
}
