//! All lease keep-alives of one backend over one keep-alive stream, which leaves a
//! member that stops answering.
//!
//! A hub task owns the stream; callers send a lease id and get the renewed TTL (or
//! `LeaseNotFound`) back. Answers come in request order per lease id.
//!
//! Liveness: a renewal unanswered for the [`Liveness`] bound (a fifth of the
//! smallest live lease TTL, within the config's limits) means the member carrying
//! the stream stopped answering (stopped, blackholed, cut off from the quorum). The
//! hub sets that endpoint aside, opens the stream on the next one, and sends the
//! unanswered renewals again there (renewing twice is harmless), so a session
//! keeps its lease while any healthy member is reachable. Opening is bounded by
//! the same bound per endpoint. Per-lease state lives only while a renewal of that
//! lease is unanswered.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coordkit::{Error, Result};
use etcd_client as etcd;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::convert::{self, Context};
use crate::endpoints::Endpoints;

pub(crate) struct Request {
    pub(crate) id: i64,
    pub(crate) reply: oneshot::Sender<Result<i64>>,
}

/// The TTLs of the leases this backend granted and has not seen end, from which
/// the streams' liveness bound follows. Both hubs ask for the bound on every
/// message, so the smallest TTL is kept ready (a count per TTL), not searched for.
///
/// A lease may end on a path this backend never sees (left to expire, revoked by
/// another client): each lease is forgotten once its TTL has surely passed since
/// its last grant or renewal, so the state stays bounded by the leases alive and
/// a dead lease's TTL never holds the bound down.
pub(crate) struct Liveness {
    ttls: Mutex<Ttls>,
    /// The bound with no lease live, and the most it may be.
    max: Duration,
    /// The least it may be: a member under load may take this long to answer.
    min: Duration,
}

#[derive(Default)]
struct Ttls {
    /// Each live lease's TTL and when it surely ends without a renewal.
    by_lease: HashMap<i64, (i64, Instant)>,
    /// How many live leases have each TTL.
    count: BTreeMap<i64, usize>,
    /// (end, lease) per grant or renewal, soonest first; an entry whose lease
    /// was renewed since is stale and skipped when it comes due.
    ends: BinaryHeap<Reverse<(Instant, i64)>>,
}

impl Liveness {
    pub(crate) fn new(max: Duration) -> Self {
        Liveness {
            ttls: Mutex::new(Ttls::default()),
            max,
            min: Duration::from_millis(500).min(max),
        }
    }

    fn ttls(&self) -> std::sync::MutexGuard<'_, Ttls> {
        self.ttls.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn granted(&self, id: i64, ttl: i64) {
        let mut t = self.ttls();
        let end = surely_ended(ttl);
        if let Some((old, _)) = t.by_lease.insert(id, (ttl, end)) {
            t.forget(old);
        }
        *t.count.entry(ttl).or_default() += 1;
        t.ends.push(Reverse((end, id)));
    }

    /// A keep-alive of `id` was answered with `ttl` seconds left.
    pub(crate) fn renewed(&self, id: i64, ttl: i64) {
        let mut t = self.ttls();
        let end = surely_ended(ttl);
        if let Some(entry) = t.by_lease.get_mut(&id) {
            entry.1 = end;
            t.ends.push(Reverse((end, id)));
        }
    }

    pub(crate) fn ended(&self, id: i64) {
        let mut t = self.ttls();
        if let Some((ttl, _)) = t.by_lease.remove(&id) {
            t.forget(ttl);
        }
    }

    /// Leases tracked (for tests).
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.ttls().by_lease.len()
    }

    /// How long a stream may leave a request unanswered before it is abandoned:
    /// a fifth of the smallest live TTL, within `[min, max]`. With keep-alives
    /// sent at a third of the TTL and a session's local deadline at about nine
    /// tenths of it, a renewal that hits a dead member is re-sent elsewhere with
    /// more than a third of the TTL to spare.
    pub(crate) fn bound(&self) -> Duration {
        let mut t = self.ttls();
        t.forget_ended(Instant::now());
        match t.count.keys().next() {
            Some(&ttl) => {
                Duration::from_millis(u64::try_from(ttl).unwrap_or(0).saturating_mul(200))
                    .clamp(self.min, self.max)
            }
            None => self.max,
        }
    }
}

/// When a lease granted or renewed now for `ttl` seconds has surely ended, if
/// nobody renews it: its TTL and a second more.
fn surely_ended(ttl: i64) -> Instant {
    Instant::now() + Duration::from_secs(u64::try_from(ttl).unwrap_or(0).saturating_add(1))
}

impl Ttls {
    /// Forget the leases whose end has passed without a renewal.
    fn forget_ended(&mut self, now: Instant) {
        while let Some(Reverse((end, id))) = self.ends.peek().copied() {
            if end > now {
                break;
            }
            self.ends.pop();
            if self.by_lease.get(&id).is_some_and(|&(_, e)| e <= now) {
                if let Some((ttl, _)) = self.by_lease.remove(&id) {
                    self.forget(ttl);
                }
            }
        }
    }

    fn forget(&mut self, ttl: i64) {
        if let Some(n) = self.count.get_mut(&ttl) {
            *n -= 1;
            if *n == 0 {
                self.count.remove(&ttl);
            }
        }
    }
}

type Stream = (etcd::LeaseKeeper, etcd::LeaseKeepAliveStream);

fn answer(id: i64, ttl: i64) -> Result<i64> {
    if ttl <= 0 {
        Err(Error::LeaseNotFound { id })
    } else {
        Ok(ttl)
    }
}

struct Waiting {
    sent: Instant,
    reply: oneshot::Sender<Result<i64>>,
}

struct Hub {
    endpoints: Arc<Endpoints>,
    liveness: Arc<Liveness>,
    streams_opened: Arc<AtomicU64>,
    /// The open stream and the endpoint it is on.
    stream: Option<(usize, Stream)>,
    /// Unanswered renewals per lease, oldest first.
    pending: HashMap<i64, VecDeque<Waiting>>,
}

pub(crate) async fn run(
    endpoints: Arc<Endpoints>,
    liveness: Arc<Liveness>,
    mut requests: mpsc::Receiver<Request>,
    streams_opened: Arc<AtomicU64>,
) {
    let mut hub = Hub {
        endpoints,
        liveness,
        streams_opened,
        stream: None,
        pending: HashMap::new(),
    };
    loop {
        let oldest = hub.oldest_unanswered();
        let bound = hub.liveness.bound();
        let message = async {
            match &mut hub.stream {
                Some((_, (_, responses))) => responses.message().await,
                None => std::future::pending().await,
            }
        };
        let silent = async {
            match oldest {
                Some(sent) => tokio::time::sleep_until(sent + bound).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            req = requests.recv() => {
                let Some(req) = req else { return };
                hub.pending.entry(req.id).or_default().push_back(Waiting {
                    sent: Instant::now(),
                    reply: req.reply,
                });
                hub.send(req.id).await;
            }
            msg = message => match msg {
                Ok(Some(resp)) => hub.answered(resp.id(), resp.ttl()),
                Ok(None) | Err(_) => {
                    hub.abandon("the keep-alive stream broke");
                    hub.resend_all().await;
                }
            },
            _ = silent => {
                hub.abandon("a keep-alive went unanswered past the liveness bound");
                hub.resend_all().await;
            }
        }
    }
}

impl Hub {
    fn oldest_unanswered(&self) -> Option<Instant> {
        self.stream.as_ref()?;
        self.pending
            .values()
            .filter_map(|q| q.front().map(|w| w.sent))
            .min()
    }

    fn answered(&mut self, id: i64, ttl: i64) {
        if let Some(queue) = self.pending.get_mut(&id) {
            if let Some(w) = queue.pop_front() {
                let _ = w.reply.send(answer(id, ttl));
            }
            if queue.is_empty() {
                self.pending.remove(&id);
            }
        }
        if let Some((i, _)) = &self.stream {
            self.endpoints.answered(*i);
        }
        if ttl <= 0 {
            self.liveness.ended(id);
        } else {
            self.liveness.renewed(id, ttl);
        }
    }

    fn abandon(&mut self, why: &str) {
        if let Some((i, _)) = self.stream.take() {
            tracing::warn!(endpoint = %self.endpoints.url(i), reason = why, "leaving the etcd keep-alive stream");
            self.endpoints.set_aside(i, why);
        }
    }

    /// Send one renewal of `id`, opening a stream first if there is none. Returns
    /// whether a stream is open afterwards.
    async fn send(&mut self, id: i64) -> bool {
        if self.stream.is_none() {
            self.open(id).await;
            // The renewal that opened the stream is answered to etcd-client, not
            // to us: the one below brings the TTL back.
        }
        let bound = self.liveness.bound();
        let Some((_, (keeper, _))) = &mut self.stream else {
            return false;
        };
        if !self.pending.contains_key(&id) {
            return true;
        }
        // With etcd-client's `pub-response-field`, one keeper renews any lease.
        keeper.id = id;
        match tokio::time::timeout(bound, keeper.keep_alive()).await {
            Ok(Ok(())) => true,
            Ok(Err(_)) => {
                self.abandon("the keep-alive stream closed");
                false
            }
            Err(_) => {
                self.abandon("the keep-alive stream does not take requests");
                false
            }
        }
    }

    /// Send every unanswered renewal again, on a new stream (opened on the next
    /// endpoint; each try bounded). Ends when every renewal is sent or has failed.
    async fn resend_all(&mut self) {
        for _attempt in 0..=self.endpoints.len() {
            let now = Instant::now();
            for w in self.pending.values_mut().flatten() {
                w.sent = now;
            }
            let work: Vec<(i64, usize)> =
                self.pending.iter().map(|(id, q)| (*id, q.len())).collect();
            let mut all_sent = true;
            'leases: for (id, count) in work {
                for _ in 0..count {
                    if !self.send(id).await {
                        all_sent = false;
                        break 'leases;
                    }
                }
            }
            if all_sent || self.pending.is_empty() {
                return;
            }
        }
    }

    /// Open a stream on the first endpoint that takes it within the bound, with a
    /// renewal of `id`. When no endpoint does, the renewals waiting fail with
    /// `Unavailable` (the session retries them).
    async fn open(&mut self, id: i64) {
        let bound = self.liveness.bound();
        let mut last = None;
        for i in self.endpoints.order() {
            let url = self.endpoints.url(i).to_string();
            let client = match self.endpoints.client(i).await {
                Ok(c) => c,
                Err(e) => {
                    self.endpoints.set_aside(i, "cannot connect");
                    last = Some(e);
                    continue;
                }
            };
            let mut leases = client.lease_client();
            match tokio::time::timeout(bound, leases.keep_alive(id)).await {
                Ok(Ok(s)) => {
                    self.streams_opened.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(endpoint = %url, "etcd keep-alive stream opened");
                    self.stream = Some((i, s));
                    return;
                }
                Ok(Err(e)) => {
                    let err = convert::error(
                        e,
                        Context {
                            lease: Some(id),
                            endpoint: Some(&url),
                            larger: None,
                        },
                    );
                    if let Error::LeaseNotFound { .. } = err {
                        // The member answered: the lease is gone, not the member.
                        self.endpoints.answered(i);
                        self.liveness.ended(id);
                        self.fail(id, || Error::LeaseNotFound { id });
                        return;
                    }
                    self.endpoints
                        .set_aside(i, "cannot open a keep-alive stream");
                    last = Some(err);
                }
                Err(_) => {
                    self.endpoints
                        .set_aside(i, "opening a keep-alive stream timed out");
                    last = Some(Error::unavailable(format!(
                        "opening a keep-alive stream at {url} timed out after {bound:?}"
                    )));
                }
            }
        }
        let reason = last.map_or_else(|| "no endpoint".to_string(), |e| e.to_string());
        for (_, queue) in self.pending.drain() {
            for w in queue {
                let _ = w.reply.send(Err(Error::unavailable(format!(
                    "no etcd endpoint takes a keep-alive stream: {reason}"
                ))));
            }
        }
    }

    fn fail(&mut self, id: i64, err: impl Fn() -> Error) {
        if let Some(queue) = self.pending.remove(&id) {
            for w in queue {
                let _ = w.reply.send(Err(err()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_follows_the_smallest_live_ttl() {
        let l = Liveness::new(Duration::from_secs(3));
        assert_eq!(l.bound(), Duration::from_secs(3));
        l.granted(1, 10);
        assert_eq!(l.bound(), Duration::from_secs(2));
        l.granted(2, 2);
        l.granted(3, 2);
        assert_eq!(l.bound(), Duration::from_millis(500)); // 400 ms, raised to the floor
        l.ended(2);
        assert_eq!(l.bound(), Duration::from_millis(500));
        l.ended(3);
        l.ended(3); // twice: no harm
        assert_eq!(l.bound(), Duration::from_secs(2));
        l.granted(4, 60);
        assert_eq!(l.bound(), Duration::from_secs(2));
        l.ended(1);
        assert_eq!(l.bound(), Duration::from_secs(3)); // 12 s, capped
        l.ended(4);
        assert_eq!(l.bound(), Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_left_to_expire_is_forgotten_after_its_ttl() {
        let l = Liveness::new(Duration::from_secs(3));
        l.granted(1, 2); // never renewed, never seen to end
        l.granted(2, 10);
        assert_eq!(l.bound(), Duration::from_millis(500));
        tokio::time::sleep(Duration::from_secs(2)).await;
        l.renewed(2, 10);
        assert_eq!(
            l.bound(),
            Duration::from_millis(500),
            "2 s is not surely past"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(
            l.bound(),
            Duration::from_secs(2),
            "lease 1 forgotten: 10 s rules"
        );
        assert_eq!(l.tracked(), 1);
        // Lease 2 is kept alive by renewals; left alone it goes too.
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_secs(3)).await;
            l.renewed(2, 10);
            assert_eq!(l.tracked(), 1, "a renewed lease stays");
        }
        tokio::time::sleep(Duration::from_secs(12)).await;
        assert_eq!(l.bound(), Duration::from_secs(3));
        assert_eq!(l.tracked(), 0, "nothing left of a lease nobody renewed");
    }
}
