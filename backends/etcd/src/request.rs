//! How a request reaches etcd: the endpoints in turn, with a timeout each, and
//! rounds when none took it (`call`); the unconditional single writes sent as
//! plain puts and deletes; reads that finish on the server; and etcd's answers
//! in coordkit's terms.

use std::future::Future;

use coordkit::{Error, RangeResponse, Result, Revision, Txn, TxnOpResponse, TxnResponse};
use etcd_client as etcd;

use crate::convert::{self, Context};
use crate::EtcdBackend;

/// The largest answer taken from etcd (a range over a large prefix, a batch
/// of watch events): tonic's default of 4 MiB refused a read of 100,000 keys.
pub(crate) const MAX_ANSWER_BYTES: usize = 256 * 1024 * 1024;

/// The KV client of `c`, taking answers up to [`MAX_ANSWER_BYTES`].
pub(crate) fn kv(c: &etcd::Client) -> etcd::KvClient {
    c.kv_client().max_decoding_message_size(MAX_ANSWER_BYTES)
}

impl EtcdBackend {
    /// Run one etcd call under the request timeout on the first healthy endpoint,
    /// mapping its error.
    ///
    /// `call` makes the request for a client; it is called again for the next
    /// endpoint only when the request provably never reached a member (so a write
    /// cannot apply twice), and once more on the same endpoint after refreshing an
    /// auth token that etcd calls old. When no endpoint took the request (every
    /// one refused it before it was sent: etcd restarting, say — with one
    /// endpoint too), the round is tried again under the config's retry policy
    /// (its attempts, backoff and deadline), so callers need no backoff of their
    /// own for a request that never left. A timeout sets the endpoint aside and
    /// returns `Timeout` (a write may have applied). Each attempt's future is boxed
    /// once: held inline, tonic's call futures made every backend future several
    /// KiB, copied on each move.
    pub(crate) async fn call<T, F, Fut>(
        &self,
        operation: &'static str,
        ctx: Context<'_>,
        mut call: F,
    ) -> Result<T>
    where
        F: FnMut(&etcd::Client) -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd::Error>> + Send,
    {
        let endpoints = &self.inner.endpoints;
        let limit = self.inner.config.request_timeout;
        let retry = &self.inner.config.retry;
        let started = tokio::time::Instant::now();
        let mut last = None;
        let mut refreshed = false;
        let mut round = 1;
        loop {
            let order = endpoints.order();
            let mut k = 0;
            while let Some(&i) = order.get(k) {
                let url = endpoints.url(i);
                let ctx = Context {
                    endpoint: Some(url),
                    ..ctx
                };
                let client = match endpoints.client(i).await {
                    Ok(c) => c,
                    Err(e) if e.is_retryable() => {
                        endpoints.set_aside(i, "cannot connect");
                        last = Some(e);
                        k += 1;
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                match tokio::time::timeout(limit, Box::pin(call(client))).await {
                    Err(_) => {
                        endpoints.set_aside(i, "a request timed out");
                        return Err(Error::Timeout { operation });
                    }
                    Ok(Ok(v)) => {
                        endpoints.answered(i);
                        return Ok(v);
                    }
                    Ok(Err(e)) if convert::never_sent(&e) => {
                        tracing::debug!(operation, endpoint = url, error = %e, "not sent; trying the next endpoint");
                        endpoints.set_aside(i, "a request could not be sent");
                        last = Some(convert::error(e, ctx));
                        k += 1;
                    }
                    Ok(Err(e)) if convert::auth_revision_old(&e) && !refreshed => {
                        refreshed = true;
                        // Boxed: a rare path, kept out of every request's future.
                        Box::pin(client.refresh_token())
                            .await
                            .map_err(|e| convert::error(e, ctx))?;
                    }
                    Ok(Err(e)) => return Err(convert::error(e, ctx)),
                }
            }
            // No endpoint took it: another round, if the policy allows one.
            let delay = retry.jittered_delay(round);
            let past_deadline = retry
                .deadline
                .is_some_and(|d| started.elapsed() + delay > d);
            if round >= retry.max_attempts.max(1) || past_deadline || order.is_empty() {
                break;
            }
            tracing::debug!(
                operation,
                round,
                ?delay,
                "no endpoint took the request; trying again"
            );
            tokio::time::sleep(delay).await;
            round += 1;
        }
        Err(last.unwrap_or_else(|| Error::unavailable("no etcd endpoint")))
    }

    /// The revision of an answer's header (0 without one), recorded as
    /// observed.
    pub(crate) fn seen(&self, header: Option<&etcd::ResponseHeader>) -> i64 {
        let revision = header.map_or(0, |h| h.revision());
        self.inner.observed.see(revision);
        revision
    }

    /// An unconditional single put, sent as a plain Put.
    pub(crate) async fn plain_put(
        &self,
        p: coordkit::PutRequest,
        ctx: Context<'_>,
    ) -> Result<TxnResponse> {
        let options = convert::put_options(&p);
        let (key, value) = (p.key, p.value);
        let mut resp = self
            .call("put", ctx, |c| {
                let (mut kv, key, value) = (kv(c), key.clone(), value.clone());
                let options = options.clone();
                async move { kv.put(key, value, Some(options)).await }
            })
            .await?;
        let revision = self.seen(resp.header());
        Ok(TxnResponse {
            succeeded: true,
            revision,
            responses: vec![TxnOpResponse::Put {
                prev_kv: resp.take_prev_key().map(convert::into_kv),
            }],
        })
    }

    /// An unconditional single delete, sent as a plain Delete.
    pub(crate) async fn plain_delete(
        &self,
        d: coordkit::DeleteRequest,
        ctx: Context<'_>,
    ) -> Result<TxnResponse> {
        let (key, options) = convert::delete_options(d);
        let mut resp = self
            .call("delete", ctx, |c| {
                let (mut kv, key, options) = (kv(c), key.clone(), options.clone());
                async move { kv.delete(key, Some(options)).await }
            })
            .await?;
        let revision = self.seen(resp.header());
        Ok(TxnResponse {
            succeeded: true,
            revision,
            responses: vec![TxnOpResponse::Delete {
                deleted: resp.deleted(),
                prev_kvs: resp
                    .take_prev_kvs()
                    .into_iter()
                    .map(convert::into_kv)
                    .collect(),
            }],
        })
    }
}

/// etcd's answer to a transaction at `revision`, in coordkit's terms.
pub(crate) fn txn_response(resp: etcd::TxnResponse, revision: i64) -> TxnResponse {
    let responses = resp
        .op_responses()
        .into_iter()
        .map(|r| match r {
            etcd::TxnOpResponse::Put(mut p) => TxnOpResponse::Put {
                prev_kv: p.take_prev_key().map(convert::into_kv),
            },
            etcd::TxnOpResponse::Delete(mut d) => TxnOpResponse::Delete {
                deleted: d.deleted(),
                prev_kvs: d
                    .take_prev_kvs()
                    .into_iter()
                    .map(convert::into_kv)
                    .collect(),
            },
            etcd::TxnOpResponse::Get(g) => {
                let mut r = range_response(g, revision);
                r.revision = revision;
                TxnOpResponse::Range(r)
            }
            // coordkit never sends nested transactions.
            etcd::TxnOpResponse::Txn(_) => TxnOpResponse::Range(RangeResponse {
                kvs: Vec::new(),
                count: 0,
                more: false,
                revision,
            }),
        })
        .collect();
    TxnResponse {
        succeeded: resp.succeeded(),
        responses,
        revision,
    }
}

pub(crate) fn range_response(mut resp: etcd::GetResponse, revision: Revision) -> RangeResponse {
    RangeResponse {
        count: resp.count(),
        more: resp.more(),
        revision: resp.header().map_or(revision, |h| h.revision()),
        kvs: resp.take_kvs().into_iter().map(convert::into_kv).collect(),
    }
}

/// A read-only transaction, sent so that dropping the caller's future does not
/// cancel it on the server: etcd 3.5.0–3.5.4 panic (and exit) when a read-only
/// transaction's request is cancelled while they apply it (etcd-io/etcd#14110,
/// fixed in 3.5.5). The request runs in its own task; a caller that goes away
/// leaves it to finish, and its answer is dropped. Writes go through raft,
/// which does not see the request's cancellation, and are sent as they are.
///
/// The task ends when etcd answers or the connection breaks: a member that
/// stops answering loses its connection to the HTTP/2 keep-alive
/// (`keep_alive_timeout`), which ends every request on it. So at most the reads
/// sent within that time outlive their callers.
pub(crate) async fn finished_on_the_server<T: Send + 'static>(
    request: impl Future<Output = std::result::Result<T, etcd::Error>> + Send + 'static,
) -> std::result::Result<T, etcd::Error> {
    match tokio::spawn(request).await {
        Ok(answer) => answer,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(etcd::Error::GRpcStatus(tonic::Status::cancelled(
            "the runtime shut down before etcd answered",
        ))),
    }
}

/// Which part of a transaction's writes is the larger, to name it when etcd
/// refuses the request as too large.
pub(crate) fn larger_part(txn: &Txn) -> &'static str {
    let (mut keys, mut values) = (0usize, 0usize);
    for op in txn.success.iter().chain(&txn.failure) {
        match op {
            coordkit::TxnOp::Put(p) => {
                keys += p.key.len();
                values += p.value.len();
            }
            coordkit::TxnOp::Delete(_) | coordkit::TxnOp::Range(_) => {}
        }
    }
    if keys > values {
        "key"
    } else {
        "value"
    }
}
