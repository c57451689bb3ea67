//! Leader election, on the protocol of etcd's `concurrency.Election`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{self, BoxStream};
use futures::StreamExt;

use crate::backend::{
    Backend, Compare, EventKind, KeyRange, KeyValue, RangeRequest, Revision, SortOrder,
};
use crate::claim::{Claim, Kind, OwnershipLost, Wait};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::follow::{Change, Follower};
use crate::queue_name::QueueName;
use crate::retry::{Backoff, RetryPolicy};
use crate::session::Session;

/// The session TTL of campaigns unless [`ElectionService::with_ttl`] says otherwise:
/// how long a crashed leader keeps its leadership at most.
pub const DEFAULT_ELECTION_TTL: Duration = Duration::from_secs(10);

/// Leader election of one [`Coordinator`](crate::Coordinator) (see
/// [`Coordinator::election`](crate::Coordinator::election)).
///
/// An election named `x` is the key prefix `<namespace>election/x/`; candidates
/// queue exactly as lock waiters do, and the first key's value is the leader's
/// proclamation. This is etcd's `concurrency.Election` protocol, so
/// `etcdctl elect coord/election/x` and coordkit agree on who leads election `x`
/// (namespace `coord/`).
///
/// # Behavior
/// - Candidates become leader in the order they campaigned.
/// - After waiting, a candidate re-checks its own key in one transaction, as lock
///   waiters do: a candidate whose lease ended while queued gets `LockExpired`.
/// - Tasks of one coordinator campaigning for the same name queue locally first.
///
/// # Example
///
/// ```
/// # use std::{sync::Arc, time::Duration};
/// # use coordkit::Coordinator;
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> coordkit::Result<()> {
/// let coordinator = Coordinator::new(Arc::new(coordkit_memory::MemoryBackend::new()));
/// let election = coordinator.election();
/// let leadership = election.campaign("scheduler", "node-a:8080").await?;
/// leadership.proclaim("node-a:9090").await?;
/// let leader = election.leader("scheduler").await?.expect("a leader");
/// assert_eq!(leader.value_str(), "node-a:9090");
/// assert_eq!(leader.fencing_token, leadership.fencing_token());
/// leadership.resign().await?;
/// assert!(election.leader("scheduler").await?.is_none());
/// # coordinator.close().await }
/// ```
#[derive(Clone)]
pub struct ElectionService {
    coord: Arc<Context>,
    ttl: Duration,
}

/// Who leads an election, as read from the store.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Leader {
    /// The leader's key (namespace included).
    pub key: String,
    /// The leader's proclaimed value.
    pub value: Vec<u8>,
    /// The leader's fencing token (its key's create revision), the same number
    /// as [`Leadership::fencing_token`].
    pub fencing_token: Revision,
}

impl Leader {
    fn from_kv(kv: &KeyValue) -> Self {
        Leader {
            key: kv.key_str(),
            value: kv.value.clone(),
            fencing_token: kv.create_revision,
        }
    }

    /// The value as text (lossy for invalid UTF-8).
    pub fn value_str(&self) -> String {
        String::from_utf8_lossy(&self.value).into_owned()
    }
}

/// Leader changes of one election: the current state first, then one item per
/// change — `Some(leader)` when a new leader takes over or the leader proclaims a
/// new value, `None` when nobody leads. Store errors arrive as items and the stream
/// goes on (resuming its watch, rereading after a compaction).
pub type LeaderStream = BoxStream<'static, Result<Option<Leader>>>;

impl ElectionService {
    pub(crate) fn new(coord: Arc<Context>) -> Self {
        ElectionService {
            coord,
            ttl: DEFAULT_ELECTION_TTL,
        }
    }

    /// Campaign with sessions of `ttl` instead of [`DEFAULT_ELECTION_TTL`].
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Wait until this candidate leads the election `name`, proclaiming `value`.
    ///
    /// Errors: `InvalidArgument` for a bad name (empty, `/`, control characters),
    /// a TTL out of bounds or a value over the backend's limit; `LockExpired` if the
    /// session was lost while queued; `Closed` after the coordinator was closed.
    ///
    /// Dropping this future at any await leaves no key: one already written is
    /// deleted by the coordinator's cleanup.
    pub async fn campaign(
        &self,
        name: impl Into<QueueName>,
        value: impl Into<Vec<u8>>,
    ) -> Result<Leadership> {
        self.claim(name.into(), value.into(), Wait::UntilOwner)
            .await
    }

    /// Lead the election `name` only if nobody leads it: `LockConflict` at once
    /// otherwise, leaving no key behind. Other errors, and cancellation, as for
    /// [`ElectionService::campaign`].
    pub async fn try_campaign(
        &self,
        name: impl Into<QueueName>,
        value: impl Into<Vec<u8>>,
    ) -> Result<Leadership> {
        self.claim(name.into(), value.into(), Wait::No).await
    }

    /// Resume a leadership after a restart (etcd's `ResumeElection`, made safe):
    /// take over `lease` (granted before the restart, and still alive) and the
    /// leader key it holds in `name`, checked in one transaction to still exist
    /// with create revision `fencing_token` on that lease and to lead.
    ///
    /// Keep [`Leadership::session`]'s lease id and [`Leadership::fencing_token`]
    /// somewhere that survives the restart to use this. Until it is resumed the
    /// lease is kept alive by nobody: resume within its TTL. A resumed
    /// leadership's session is this coordinator's from then on:
    /// [`Coordinator::close`](crate::Coordinator::close) revokes it.
    ///
    /// Errors: `LockConflict` if a task of this coordinator holds or claims
    /// `name` — refused before the lease is touched; `LockExpired` if the lease or
    /// the key is gone (or the key has another create revision); `NotLeader` if
    /// the key is there but queued behind another; `InvalidArgument` for a bad
    /// name. After `LockExpired` or `NotLeader` the taken-over lease is revoked
    /// (in the background, at once), so no stale claim lingers; after a store
    /// error, and if this call is cancelled, the lease is left as it was, to
    /// expire at its TTL. A lease this coordinator keeps already (one of its own
    /// sessions) is never revoked by this call.
    pub async fn resume(
        &self,
        name: impl Into<QueueName>,
        lease: crate::backend::LeaseId,
        fencing_token: Revision,
    ) -> Result<Leadership> {
        let name = name.into();
        let prefix = self.coord.claims.queue_prefix(Kind::Election, &name)?;
        self.coord.check_open()?;
        let turn = self
            .coord
            .claims
            .turn_now(&prefix)
            .ok_or_else(|| Error::LockConflict {
                name: name.as_str().to_string(),
            })?;
        let expired = |e| match e {
            Error::LeaseNotFound { .. } => Error::LockExpired {
                name: name.as_str().to_string(),
            },
            e => e,
        };
        let (session, taken_over) = match self.coord.live_session(lease).await {
            Some(own) => (own, false),
            None => {
                let backend = self.coord.backend.clone();
                let retry = self.coord.retry.clone();
                let session = crate::session::Session::resume_unowned(backend, lease, retry)
                    .await
                    .map_err(expired)?;
                (session, true)
            }
        };
        let adopted = self
            .coord
            .claims
            .adopt(Kind::Election, &name, session.clone(), fencing_token, turn)
            .await;
        match adopted {
            Ok(claim) => {
                if taken_over {
                    session.own();
                    self.coord.adopt_session(&session);
                }
                Ok(Leadership { claim })
            }
            Err(e @ (Error::LockExpired { .. } | Error::NotLeader { .. })) if taken_over => {
                tokio::spawn(async move {
                    let _ = session.close().await;
                });
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    pub(crate) fn coord_retry(&self) -> crate::retry::RetryPolicy {
        self.coord.retry.clone()
    }

    async fn claim(&self, name: QueueName, value: Vec<u8>, wait: Wait) -> Result<Leadership> {
        let claim = self
            .coord
            .claim(Kind::Election, &name, self.ttl, value, wait)
            .await?;
        Ok(Leadership { claim })
    }

    /// The leader of `name` and the candidates waiting, in order, each with its
    /// fencing token and lease's time left (see
    /// [`LockService::holders_and_waiters`](crate::LockService::holders_and_waiters)).
    pub async fn holders_and_waiters(
        &self,
        name: impl Into<QueueName>,
    ) -> Result<Vec<crate::claim::QueueEntry>> {
        self.coord.claims.queue(Kind::Election, &name.into()).await
    }

    /// The current leader of `name`, if any.
    pub async fn leader(&self, name: impl Into<QueueName>) -> Result<Option<Leader>> {
        let prefix = self
            .coord
            .claims
            .queue_prefix(Kind::Election, &name.into())?;
        let first = RangeRequest::prefix(prefix)
            .sort_by_create_revision(SortOrder::Ascend)
            .with_limit(1);
        let backend = &self.coord.backend;
        let resp = self
            .coord
            .retry
            .run("read leader", |_| backend.range(first.clone()))
            .await?;
        Ok(resp.kvs.first().map(Leader::from_kv))
    }

    /// Follow the leader of `name`; see [`LeaderStream`].
    pub fn observe(&self, name: impl Into<QueueName>) -> Result<LeaderStream> {
        let prefix = self
            .coord
            .claims
            .queue_prefix(Kind::Election, &name.into())?;
        let observer = Observer {
            backend: self.coord.backend.clone(),
            retry: self.coord.retry.clone(),
            prefix,
            follower: None,
            candidates: HashMap::new(),
            last: None,
            backoff: self.coord.retry.backoff(),
        };
        Ok(stream::unfold(observer, |mut o| async move {
            let item = o.next_change().await;
            Some((item, o))
        })
        .boxed())
    }
}

/// Leadership of an election, held until resigned or lost.
///
/// Dropping it without [`Leadership::resign`] resigns in the background: the
/// coordinator's cleanup deletes the key, retrying until it is gone or the
/// session is lost (see [`LockGuard`](crate::LockGuard)).
#[must_use = "dropping a Leadership resigns at once"]
pub struct Leadership {
    claim: Claim,
}

impl Leadership {
    /// Replace the proclaimed value, if still the leader; `NotLeader` otherwise.
    ///
    /// Retried under the policy. Every try, including one whose response was
    /// lost or that was cancelled, is recorded first, so [`Leadership::lost`]
    /// never takes this leader's own write for someone else's. On a timeout the
    /// value may or may not have been written.
    pub async fn proclaim(&self, value: impl Into<Vec<u8>>) -> Result<()> {
        let value = value.into();
        crate::backend::validate::value(&value, &self.claim.backend().limits())?;
        if self.claim.write_value(value).await? {
            Ok(())
        } else {
            Err(self.not_leader())
        }
    }

    /// Step down: delete the key if it is still this leader's (retried under the
    /// policy; never deletes a successor's key). `NotLeader` if leadership was
    /// already lost (the key gone before this call).
    ///
    /// On a store error, and if this call is cancelled, the handle is gone and
    /// the resignation goes on in the background as for a drop.
    pub async fn resign(self) -> Result<()> {
        self.claim.release().await.map_err(|e| match e {
            Error::LockNotHeld { .. } => self.not_leader(),
            e => e,
        })
    }

    /// Completes when leadership ends, saying why (see
    /// [`LockGuard::lost`](crate::LockGuard::lost)).
    pub async fn lost(&self) -> OwnershipLost {
        self.claim.lost().await
    }

    /// Whether leadership has ended, from local knowledge only.
    pub fn is_expired(&self) -> bool {
        self.claim.is_expired()
    }

    /// The leader's fencing token: its key's create revision, strictly increasing
    /// across successive leaders.
    pub fn fencing_token(&self) -> Revision {
        self.claim.token()
    }

    /// A compare that holds only while this leadership's key is the same key.
    pub fn compare(&self) -> Compare {
        self.claim.compare()
    }

    /// The leader's key (namespace included).
    pub fn key(&self) -> &str {
        self.claim.key()
    }

    /// The election's name.
    pub fn name(&self) -> &str {
        self.claim.name()
    }

    /// The session holding the leadership.
    pub fn session(&self) -> &Session {
        self.claim.session()
    }

    fn not_leader(&self) -> Error {
        Error::NotLeader {
            name: self.claim.name().to_string(),
        }
    }
}

impl std::fmt::Debug for Leadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leadership")
            .field("key", &self.key())
            .field("fencing_token", &self.fencing_token())
            .field("expired", &self.is_expired())
            .finish()
    }
}

/// The state behind [`ElectionService::observe`]: every candidate of the election
/// (key → create revision and value), kept current by a [`Follower`].
struct Observer {
    backend: Arc<dyn Backend>,
    retry: RetryPolicy,
    prefix: String,
    follower: Option<Follower>,
    candidates: HashMap<Vec<u8>, (Revision, Vec<u8>)>,
    /// What was reported last (`None`: nothing yet).
    last: Option<Option<Leader>>,
    /// Failed starts of the follower in a row.
    backoff: Backoff,
}

impl Observer {
    fn leader(&self) -> Option<Leader> {
        self.candidates
            .iter()
            .min_by_key(|(_, (create, _))| *create)
            .map(|(key, (create, value))| Leader {
                key: String::from_utf8_lossy(key).into_owned(),
                value: value.clone(),
                fencing_token: *create,
            })
    }

    fn apply(&mut self, change: Change) {
        match change.kind {
            EventKind::Put => {
                self.candidates
                    .insert(change.key, (change.create_revision, change.value));
            }
            EventKind::Delete => {
                self.candidates.remove(&change.key);
            }
        }
    }

    /// The leader if it differs from what was reported last.
    fn change(&mut self) -> Option<Option<Leader>> {
        let now = self.leader();
        if self.last.as_ref() == Some(&now) {
            return None;
        }
        self.last = Some(now.clone());
        Some(now)
    }

    async fn next_change(&mut self) -> Result<Option<Leader>> {
        loop {
            let next = match self.follower.as_mut() {
                Some(follower) => follower.next().await.map(|c| vec![c]),
                None => Follower::start(
                    self.backend.clone(),
                    self.retry.clone(),
                    KeyRange::prefix(self.prefix.clone()),
                )
                .await
                .map(|(follower, snapshot)| {
                    self.follower = Some(follower);
                    snapshot
                }),
            };
            match next {
                Ok(changes) => {
                    self.backoff.succeeded();
                    for c in changes {
                        self.apply(c);
                    }
                    if let Some(change) = self.change() {
                        return Ok(change);
                    }
                }
                Err(e) => {
                    // The follower backs off itself; a failed start does here.
                    if self.follower.is_none() {
                        self.backoff.wait().await;
                    }
                    return Err(e);
                }
            }
        }
    }
}

impl std::fmt::Debug for ElectionService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ElectionService")
            .field("namespace", &self.coord.keys.namespace())
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}
