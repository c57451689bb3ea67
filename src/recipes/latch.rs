//! A leader latch: campaigns in the background, re-campaigns after each loss,
//! and tells the caller whether it leads.

use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tracing::{debug, warn};

use crate::backend::{Compare, CompareOp, Revision};
use crate::claim::OwnershipLost;
use crate::error::Error;
use crate::recipes::election::ElectionService;

/// What a [`LeaderLatch`] is now.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LatchState {
    /// Not leading: campaigning, or waiting to campaign again after an error.
    Follower,
    /// Leading, with the leadership's key and fencing token.
    Leader {
        /// The leader's key (namespace included).
        key: String,
        /// Its fencing token: strictly greater than every earlier leader's.
        fencing_token: Revision,
    },
    /// Stopped: by [`LeaderLatch::close`], or because the coordinator was closed
    /// or the election's input is invalid (the error says which).
    Stopped {
        /// Why, when not closed by the caller.
        error: Option<String>,
    },
}

impl LatchState {
    /// Whether this is the leader state.
    pub fn is_leader(&self) -> bool {
        matches!(self, LatchState::Leader { .. })
    }

    /// A compare that holds only while this leadership lasts (`None` unless
    /// leader): put it in writes that must happen only while leading.
    pub fn compare(&self) -> Option<Compare> {
        match self {
            LatchState::Leader { key, fencing_token } => Some(Compare::create_revision(
                key.clone(),
                CompareOp::Equal,
                *fencing_token,
            )),
            _ => None,
        }
    }
}

/// A candidate that stays in an election until closed (Curator's `LeaderLatch`
/// with `autoRequeue`): it campaigns, leads until its leadership is lost (session
/// lost, key deleted or changed), then campaigns again, by itself.
///
/// # Behavior
/// - [`LeaderLatch::states`] yields every change: `Follower`, then `Leader` each
///   time it wins (with a new, larger fencing token), `Follower` again as soon as
///   the loss is seen. A leader must stop acting as one when it sees `Follower`,
///   and should fence its writes with [`LatchState::compare`]: between a loss in
///   the store and the latch seeing it, another candidate may already lead.
/// - Store errors while campaigning are retried with the coordinator's retry
///   policy's delays, for ever; `Closed` and `InvalidArgument` stop the latch.
/// - [`LeaderLatch::close`] resigns (if leading) and stops; dropping the latch
///   stops it too and the leadership is handed over in the background, as for a
///   dropped [`Leadership`](crate::Leadership).
#[derive(Debug)]
pub struct LeaderLatch {
    state: watch::Receiver<LatchState>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl ElectionService {
    /// Start a [`LeaderLatch`] in the election `name`, proclaiming `value` while
    /// it leads. Needs a tokio runtime; returns at once.
    pub fn latch(
        &self,
        name: impl Into<crate::queue_name::QueueName>,
        value: impl Into<Vec<u8>>,
    ) -> LeaderLatch {
        let (tx, state) = watch::channel(LatchState::Follower);
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(run(self.clone(), name.into(), value.into(), tx, stopped));
        LeaderLatch {
            state,
            stop: Some(stop),
            task,
        }
    }
}

impl LeaderLatch {
    /// The state now.
    pub fn state(&self) -> LatchState {
        self.state.borrow().clone()
    }

    /// Whether it leads now (local knowledge).
    pub fn is_leader(&self) -> bool {
        self.state.borrow().is_leader()
    }

    /// A receiver of every state change (the current state first).
    pub fn states(&self) -> watch::Receiver<LatchState> {
        self.state.clone()
    }

    /// Wait until it leads; the leader state. `Err` with the reason if the latch
    /// stopped first.
    pub async fn wait_until_leader(&self) -> Result<LatchState, LatchState> {
        let mut states = self.state.clone();
        let state = states
            .wait_for(|s| s.is_leader() || matches!(s, LatchState::Stopped { .. }))
            .await
            .map(|s| s.clone())
            .unwrap_or(LatchState::Stopped { error: None });
        if state.is_leader() {
            Ok(state)
        } else {
            Err(state)
        }
    }

    /// Resign if leading, and stop campaigning. Waits until the resignation is
    /// done (or handed to the background on a store error). Cancelling it leaves the
    /// latch stopping in the background: it resigns all the same.
    pub async fn close(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for LeaderLatch {
    fn drop(&mut self) {
        // Dropping the task drops its leadership: the cleanup hands it over.
        if self.stop.is_some() {
            self.task.abort();
        }
    }
}

async fn run(
    election: ElectionService,
    name: crate::queue_name::QueueName,
    value: Vec<u8>,
    state: watch::Sender<LatchState>,
    mut stop: oneshot::Receiver<()>,
) {
    let retry = election.coord_retry();
    let mut backoff = retry.backoff();
    loop {
        state.send_replace(LatchState::Follower);
        let campaign = tokio::select! {
            c = election.campaign(&name, value.clone()) => c,
            _ = &mut stop => break,
        };
        let leadership = match campaign {
            Ok(l) => l,
            Err(e @ (Error::Closed { .. } | Error::InvalidArgument { .. })) => {
                state.send_replace(LatchState::Stopped {
                    error: Some(e.to_string()),
                });
                return;
            }
            Err(e) => {
                let wait = backoff.failed().max(Duration::from_millis(10));
                warn!(election = %name, error = %e, "latch: campaign failed; trying again");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => continue,
                    _ = &mut stop => break,
                }
            }
        };
        backoff.succeeded();
        state.send_replace(LatchState::Leader {
            key: leadership.key().to_string(),
            fencing_token: leadership.fencing_token(),
        });
        debug!(election = %name, token = leadership.fencing_token(), "latch: leading");
        tokio::select! {
            why = leadership.lost() => {
                warn!(election = %name, ?why, "latch: leadership lost; campaigning again");
                if why == OwnershipLost::Released {
                    break;
                }
            }
            _ = &mut stop => {
                state.send_replace(LatchState::Follower);
                let _ = leadership.resign().await;
                break;
            }
        }
    }
    state.send_replace(LatchState::Stopped { error: None });
}
