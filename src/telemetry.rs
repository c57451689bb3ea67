//! Metrics through the [`metrics`](https://docs.rs/metrics) facade, with the
//! `metrics` feature; without it every function here is empty and compiles away.
//! The names and labels are listed in the crate docs ("Metrics").

use crate::error::Error;

#[cfg(feature = "metrics")]
mod imp {
    use std::time::Duration;

    use metrics::{counter, gauge, histogram};

    pub fn claim_acquired(kind: &'static str, wait: Duration) {
        counter!("coordkit_claims_acquired_total", "kind" => kind).increment(1);
        histogram!("coordkit_claim_wait_seconds", "kind" => kind).record(wait.as_secs_f64());
    }

    pub fn claim_ended(kind: &'static str, reason: &'static str, held: Option<Duration>) {
        counter!("coordkit_claims_ended_total", "kind" => kind, "reason" => reason).increment(1);
        if let Some(held) = held {
            histogram!("coordkit_claim_hold_seconds", "kind" => kind).record(held.as_secs_f64());
        }
    }

    pub fn session_started() {
        gauge!("coordkit_sessions_alive").increment(1.0);
    }

    pub fn session_lost(reason: &'static str) {
        gauge!("coordkit_sessions_alive").decrement(1.0);
        counter!("coordkit_sessions_lost_total", "reason" => reason).increment(1);
    }

    pub fn keep_alive_failed() {
        counter!("coordkit_keep_alive_failures_total").increment(1);
    }

    pub fn watch_resumed() {
        counter!("coordkit_watch_resumes_total").increment(1);
    }

    pub fn watch_resynced() {
        counter!("coordkit_watch_resyncs_total").increment(1);
    }

    pub fn registered() {
        counter!("coordkit_registrations_total").increment(1);
    }

    pub fn reregistered() {
        counter!("coordkit_reregistrations_total").increment(1);
    }

    pub fn cache_size(service: &str, instances: usize) {
        gauge!("coordkit_service_cache_instances", "service" => service.to_string())
            .set(instances as f64);
    }

    pub fn cache_protected(service: &str, holding: bool) {
        gauge!("coordkit_service_cache_protected", "service" => service.to_string())
            .set(if holding { 1.0 } else { 0.0 });
    }

    pub fn follower_stale(follower: &str, stale: bool) {
        gauge!("coordkit_follower_stale", "follower" => follower.to_string()).set(if stale {
            1.0
        } else {
            0.0
        });
    }

    pub fn config_change(result: &'static str) {
        counter!("coordkit_config_changes_total", "result" => result).increment(1);
    }

    pub fn backend_request(op: &'static str, took: Duration, error: Option<&'static str>) {
        histogram!("coordkit_backend_request_seconds", "op" => op).record(took.as_secs_f64());
        if let Some(kind) = error {
            counter!("coordkit_backend_errors_total", "op" => op, "kind" => kind).increment(1);
        }
    }
}

#[cfg(not(feature = "metrics"))]
#[allow(clippy::missing_const_for_fn)]
mod imp {
    use std::time::Duration;

    pub fn claim_acquired(_: &'static str, _: Duration) {}
    pub fn claim_ended(_: &'static str, _: &'static str, _: Option<Duration>) {}
    pub fn session_started() {}
    pub fn session_lost(_: &'static str) {}
    pub fn keep_alive_failed() {}
    pub fn watch_resumed() {}
    pub fn watch_resynced() {}
    pub fn registered() {}
    pub fn reregistered() {}
    pub fn cache_size(_: &str, _: usize) {}
    pub fn cache_protected(_: &str, _: bool) {}
    pub fn follower_stale(_: &str, _: bool) {}
    pub fn config_change(_: &'static str) {}
    pub fn backend_request(_: &'static str, _: Duration, _: Option<&'static str>) {}
}

pub(crate) use imp::*;

/// Time one backend request, counting its error by kind.
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) async fn timed<T>(
    op: &'static str,
    request: impl std::future::Future<Output = crate::error::Result<T>>,
) -> crate::error::Result<T> {
    let started = tokio::time::Instant::now();
    let result = request.await;
    backend_request(
        op,
        started.elapsed(),
        result.as_ref().err().map(Error::kind),
    );
    result
}

/// A backend whose every request is timed and whose errors are counted
/// (`coordkit_backend_request_seconds`, `coordkit_backend_errors_total`); the
/// coordinator wraps its backend in it when the `metrics` feature is on.
#[cfg(feature = "metrics")]
pub(crate) struct Metered(pub(crate) std::sync::Arc<dyn crate::backend::Backend>);

#[cfg(feature = "metrics")]
#[async_trait::async_trait]
impl crate::backend::Backend for Metered {
    fn name(&self) -> &'static str {
        self.0.name()
    }
    fn limits(&self) -> crate::backend::Limits {
        self.0.limits()
    }
    fn capabilities(&self) -> crate::backend::Capabilities {
        self.0.capabilities()
    }
    async fn range(
        &self,
        request: crate::backend::RangeRequest,
    ) -> crate::error::Result<crate::backend::RangeResponse> {
        timed("range", self.0.range(request)).await
    }
    async fn txn(
        &self,
        txn: crate::backend::Txn,
    ) -> crate::error::Result<crate::backend::TxnResponse> {
        timed("txn", self.0.txn(txn)).await
    }
    async fn lease_grant(&self, ttl: i64) -> crate::error::Result<crate::backend::LeaseGrant> {
        timed("lease_grant", self.0.lease_grant(ttl)).await
    }
    async fn lease_keep_alive(&self, id: crate::backend::LeaseId) -> crate::error::Result<i64> {
        timed("lease_keep_alive", self.0.lease_keep_alive(id)).await
    }
    async fn lease_revoke(&self, id: crate::backend::LeaseId) -> crate::error::Result<()> {
        timed("lease_revoke", self.0.lease_revoke(id)).await
    }
    async fn lease_time_to_live(
        &self,
        id: crate::backend::LeaseId,
    ) -> crate::error::Result<crate::backend::LeaseInfo> {
        timed("lease_time_to_live", self.0.lease_time_to_live(id)).await
    }
    async fn watch(
        &self,
        request: crate::backend::WatchRequest,
    ) -> crate::error::Result<crate::backend::WatchStream> {
        timed("watch", self.0.watch(request)).await
    }
    async fn watch_reporting_start(
        &self,
        request: crate::backend::WatchRequest,
    ) -> crate::error::Result<(
        crate::backend::WatchStream,
        Option<crate::backend::WatchStart>,
    )> {
        timed("watch", self.0.watch_reporting_start(request)).await
    }
    async fn compact(&self, revision: crate::backend::Revision) -> crate::error::Result<()> {
        timed("compact", self.0.compact(revision)).await
    }
}
