//! A key prefix that isolates tenants (and test cases) sharing one store.

use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;

use super::{
    validate, Backend, Capabilities, Event, KeyRange, KeyValue, LeaseGrant, LeaseId, LeaseInfo,
    Limits, RangeRequest, RangeResponse, Revision, Txn, TxnOp, TxnOpResponse, TxnResponse,
    WatchRequest, WatchStream,
};
use crate::error::Result;

/// A backend seen through a key prefix.
///
/// Every key the caller names is prefixed on the way in and stripped on the way out
/// (results, events, lease key lists), so a namespace sees only its own keys and an
/// empty prefix range means "every key of this namespace". Leases and revisions are
/// shared with the whole store, as in etcd's namespace wrapper.
#[derive(Clone)]
pub struct Namespaced {
    inner: Arc<dyn Backend>,
    prefix: Vec<u8>,
}

impl std::fmt::Debug for Namespaced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Namespaced")
            .field("backend", &self.inner.name())
            .field("prefix", &String::from_utf8_lossy(&self.prefix))
            .finish()
    }
}

impl Namespaced {
    /// Wrap `inner` so that every key lives under `prefix`.
    pub fn new(inner: Arc<dyn Backend>, prefix: impl Into<Vec<u8>>) -> Self {
        Namespaced {
            inner,
            prefix: prefix.into(),
        }
    }

    /// The prefix.
    pub fn prefix(&self) -> &[u8] {
        &self.prefix
    }

    fn add(&self, key: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.prefix.len() + key.len());
        k.extend_from_slice(&self.prefix);
        k.extend_from_slice(key);
        k
    }

    fn add_range(&self, keys: &KeyRange) -> KeyRange {
        match keys {
            KeyRange::Key(k) => KeyRange::Key(self.add(k)),
            KeyRange::Prefix(p) => KeyRange::Prefix(self.add(p)),
        }
    }

    fn strip(&self, mut kv: KeyValue) -> KeyValue {
        if kv.key.starts_with(&self.prefix) {
            kv.key.drain(..self.prefix.len());
        }
        kv
    }

    fn strip_range(&self, mut resp: RangeResponse) -> RangeResponse {
        resp.kvs = resp.kvs.into_iter().map(|kv| self.strip(kv)).collect();
        resp
    }

    fn add_request(&self, mut request: RangeRequest) -> RangeRequest {
        request.keys = self.add_range(&request.keys);
        request
    }
}

#[async_trait]
impl Backend for Namespaced {
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
        validate::range(&request)?;
        let resp = self.inner.range(self.add_request(request)).await?;
        Ok(self.strip_range(resp))
    }

    async fn txn(&self, mut txn: Txn) -> Result<TxnResponse> {
        validate::txn(&txn, &self.inner.limits())?;
        for c in &mut txn.compares {
            c.key = self.add(&c.key);
        }
        for op in txn.success.iter_mut().chain(txn.failure.iter_mut()) {
            match op {
                TxnOp::Put(p) => p.key = self.add(&p.key),
                TxnOp::Delete(d) => d.keys = self.add_range(&d.keys),
                TxnOp::Range(r) => r.keys = self.add_range(&r.keys),
            }
        }
        let mut resp = self.inner.txn(txn).await?;
        for r in &mut resp.responses {
            match r {
                TxnOpResponse::Put { prev_kv } => {
                    *prev_kv = prev_kv.take().map(|kv| self.strip(kv))
                }
                TxnOpResponse::Delete { prev_kvs, .. } => {
                    *prev_kvs = std::mem::take(prev_kvs)
                        .into_iter()
                        .map(|kv| self.strip(kv))
                        .collect()
                }
                TxnOpResponse::Range(range) => {
                    *range = self.strip_range(std::mem::replace(
                        range,
                        RangeResponse {
                            kvs: Vec::new(),
                            count: 0,
                            more: false,
                            revision: 0,
                        },
                    ))
                }
            }
        }
        Ok(resp)
    }

    async fn lease_grant(&self, ttl: i64) -> Result<LeaseGrant> {
        self.inner.lease_grant(ttl).await
    }

    async fn lease_keep_alive(&self, id: LeaseId) -> Result<i64> {
        self.inner.lease_keep_alive(id).await
    }

    async fn lease_revoke(&self, id: LeaseId) -> Result<()> {
        self.inner.lease_revoke(id).await
    }

    async fn lease_time_to_live(&self, id: LeaseId) -> Result<LeaseInfo> {
        let mut info = self.inner.lease_time_to_live(id).await?;
        info.keys = info
            .keys
            .into_iter()
            .filter(|k| k.starts_with(&self.prefix))
            .map(|k| k[self.prefix.len()..].to_vec())
            .collect();
        Ok(info)
    }

    async fn watch(&self, request: WatchRequest) -> Result<WatchStream> {
        Ok(self.watch_reporting_start(request).await?.0)
    }

    async fn watch_reporting_start(
        &self,
        mut request: WatchRequest,
    ) -> Result<(WatchStream, Option<crate::backend::WatchStart>)> {
        validate::watch(&request)?;
        request.keys = self.add_range(&request.keys);
        let (stream, start) = self.inner.watch_reporting_start(request).await?;
        Ok((self.strip_stream(stream), start))
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        self.inner.compact(revision).await
    }
}

impl Namespaced {
    /// The watch stream with the namespace taken off its keys.
    fn strip_stream(&self, stream: WatchStream) -> WatchStream {
        let this = self.clone();
        stream
            .map(move |item| {
                item.map(|mut resp| {
                    resp.events = resp
                        .events
                        .into_iter()
                        .map(|e| Event {
                            kind: e.kind,
                            kv: this.strip(e.kv),
                            prev_kv: e.prev_kv.map(|kv| this.strip(kv)),
                        })
                        .collect();
                    resp
                })
            })
            .boxed()
    }
}
