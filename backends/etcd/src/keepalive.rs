//! All lease keep-alives of one backend over one keep-alive stream.
//!
//! A hub task owns the stream; callers send a lease id and get the renewed TTL (or
//! `LeaseNotFound`) back. Answers come in request order per lease id. A broken stream
//! fails the calls in flight with `Unavailable` and is reopened by the next call.

use std::collections::{HashMap, VecDeque};

use coordkit::{Error, Result};
use etcd_client as etcd;
use tokio::sync::{mpsc, oneshot};

use crate::convert::{self, Context};

pub(crate) struct Request {
    pub(crate) id: i64,
    pub(crate) reply: oneshot::Sender<Result<i64>>,
}

type Stream = (etcd::LeaseKeeper, etcd::LeaseKeepAliveStream);

fn answer(id: i64, ttl: i64) -> Result<i64> {
    if ttl <= 0 {
        Err(Error::LeaseNotFound { id })
    } else {
        Ok(ttl)
    }
}

pub(crate) async fn run(
    client: etcd::Client,
    mut requests: mpsc::UnboundedReceiver<Request>,
    streams_opened: std::sync::Arc<std::sync::atomic::AtomicU64>,
) {
    let mut stream: Option<Stream> = None;
    let mut pending: HashMap<i64, VecDeque<oneshot::Sender<Result<i64>>>> = HashMap::new();
    loop {
        let message = async {
            match &mut stream {
                Some((_, responses)) => responses.message().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            req = requests.recv() => {
                let Some(req) = req else { return };
                if stream.is_none() {
                    // etcd-client opens the stream with one renewal of this lease and keeps
                    // its answer; the request below on the new stream brings the TTL back.
                    match client.lease_client().keep_alive(req.id).await {
                        Ok(s) => {
                            streams_opened.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            stream = Some(s);
                        }
                        Err(e) => {
                            let _ = req.reply.send(Err(convert::error(e, Context { lease: Some(req.id) })));
                            continue;
                        }
                    }
                }
                let Some((keeper, _)) = &mut stream else { continue };
                // With etcd-client's `pub-response-field`, one keeper renews any lease.
                keeper.id = req.id;
                let sent = keeper.keep_alive().await;
                if sent.is_ok() {
                    pending.entry(req.id).or_default().push_back(req.reply);
                } else {
                    let _ = req.reply.send(Err(Error::unavailable("etcd keep-alive stream closed")));
                    fail_all(&mut pending);
                    stream = None;
                }
            }
            msg = message => match msg {
                Ok(Some(resp)) => {
                    if let Some(reply) = pending.get_mut(&resp.id()).and_then(|q| q.pop_front()) {
                        let _ = reply.send(answer(resp.id(), resp.ttl()));
                    }
                }
                Ok(None) | Err(_) => {
                    tracing::warn!("etcd keep-alive stream broke; failing the keep-alives in flight");
                    fail_all(&mut pending);
                    stream = None;
                }
            },
        }
    }
}

fn fail_all(pending: &mut HashMap<i64, VecDeque<oneshot::Sender<Result<i64>>>>) {
    for (_, queue) in pending.drain() {
        for reply in queue {
            let _ = reply.send(Err(Error::unavailable("etcd keep-alive stream broke")));
        }
    }
}
