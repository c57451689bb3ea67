//! The prober: checks the instances of chosen services at an interval and
//! records verdicts, while it leads its service set's election.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{broadcast, oneshot, watch};
use tracing::{info, info_span, warn, Instrument};

use super::check::{Check, Outcome};
use super::streak::Streak;
use super::verdict::now_unix_ms;
use super::{ProbeTarget, ProbeVerdict};
use crate::backend::{Compare, Revision};
use crate::error::{Error, Result};
use crate::recipes::election::ElectionService;
use crate::recipes::latch::{LatchState, LeaderLatch};
use crate::registry::{segment, InstanceHealth, RegistryService};

/// What a [`Prober`] checks, how often, and when it changes a verdict.
///
/// ```
/// use std::time::Duration;
/// use coordkit::{Check, ProberConfig};
/// let config = ProberConfig::new("prober-a")
///     .service("orders", Check::http("/healthz"))
///     .service("db", Check::Tcp)
///     .interval(Duration::from_secs(5))
///     .remove_after(Duration::from_secs(600));
/// assert_eq!(config.group(), "db+orders");
/// ```
#[derive(Clone, Debug)]
pub struct ProberConfig {
    name: String,
    services: BTreeMap<String, Check>,
    group: Option<String>,
    interval: Duration,
    timeout: Duration,
    rise: u32,
    fall: u32,
    remove_after: Option<Duration>,
    ttl: Duration,
    at_once: usize,
}

impl ProberConfig {
    /// A prober named `name` (written into its verdicts and its election
    /// value), with no services yet; every 5 s, 2 s timeout, 2 passes to say
    /// passing, 3 failures to say critical, no removal, a 10 s session.
    pub fn new(name: impl Into<String>) -> Self {
        ProberConfig {
            name: name.into(),
            services: BTreeMap::new(),
            group: None,
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            rise: 2,
            fall: 3,
            remove_after: None,
            ttl: Duration::from_secs(10),
            at_once: 32,
        }
    }

    /// Check the instances of service `name` with `check`.
    pub fn service(mut self, name: impl Into<String>, check: Check) -> Self {
        self.services.insert(name.into(), check);
        self
    }

    /// The election that makes one prober of a service set active:
    /// `probe:<group>`. By default the service names, sorted, joined by `+`;
    /// probers with the same group take turns, whatever else they check.
    pub fn with_group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// The group this config campaigns in (see [`ProberConfig::with_group`]).
    pub fn group(&self) -> String {
        self.group.clone().unwrap_or_else(|| {
            self.services
                .keys()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join("+")
        })
    }

    /// How often every instance is checked.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// How long one check may take before it counts as failed.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Checks in a row before a verdict changes: `rise` passes to say
    /// passing, `fall` failures to say critical (each at least 1).
    pub fn thresholds(mut self, rise: u32, fall: u32) -> Self {
        self.rise = rise;
        self.fall = fall;
        self
    }

    /// Remove a persistent instance whose verdict has said critical for this
    /// long (it fails the check that finds the deadline passed, too).
    /// Ephemeral instances are never removed: they end with their lease.
    pub fn remove_after(mut self, after: Duration) -> Self {
        self.remove_after = Some(after);
        self
    }

    /// The TTL of the prober's session in its election: how long a prober
    /// that dies silently stays active before another takes over.
    pub fn session_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Checks run at once, at most.
    pub fn checks_at_once(mut self, n: usize) -> Self {
        self.at_once = n;
        self
    }

    fn validate(&self) -> Result<()> {
        segment("name", &self.name)?;
        if self.services.is_empty() {
            return Err(Error::invalid("services", "name at least one service"));
        }
        for name in self.services.keys() {
            segment("service", name)?;
        }
        crate::queue_name::validate_name(&self.group())?;
        for (what, d) in [("interval", self.interval), ("timeout", self.timeout)] {
            if d.is_zero() {
                return Err(Error::invalid(what, "must be above zero"));
            }
        }
        if self.rise == 0 || self.fall == 0 {
            return Err(Error::invalid(
                "thresholds",
                "rise and fall must be at least 1",
            ));
        }
        if self.at_once == 0 {
            return Err(Error::invalid("checks_at_once", "must be at least 1"));
        }
        Ok(())
    }
}

/// What a [`Prober`] did, for logs and tests ([`Prober::events`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProberEvent {
    /// It leads its group and probes, fencing its writes with this token.
    Active {
        /// The leadership's fencing token.
        fencing_token: Revision,
    },
    /// It lost or left the lead; another prober of the group may be active.
    Standby,
    /// It recorded a new verdict on an instance.
    Verdict {
        /// The service.
        service: String,
        /// The instance's id.
        id: String,
        /// The new verdict's health.
        health: InstanceHealth,
        /// What the check saw.
        detail: String,
    },
    /// It removed a persistent instance critical for longer than the deadline.
    Removed {
        /// The service.
        service: String,
        /// The instance's id.
        id: String,
    },
    /// A read or write failed; it goes on at the next round.
    Failed {
        /// What failed.
        error: String,
    },
}

/// A running prober ([`RegistryService::prober`]). While it leads its group's
/// election it checks every instance of its services each interval and
/// records a verdict when a threshold is crossed; the others wait, and one of
/// them takes over within a session TTL when the active one dies.
///
/// # Behavior
/// - Every write ([`RegistryService::record_verdict`], [`RegistryService::remove_probed`])
///   compares on the instance as read and on the leadership (its fencing
///   compare): a prober that lost the lead, a registration updated or made
///   again since the read, another prober's newer verdict — nothing is written.
/// - A prober that becomes active starts from the stored verdicts: a verdict
///   holds until the thresholds call for another, and a critical verdict's
///   `since` carries over, so a removal deadline counts across probers.
/// - Store errors are reported ([`ProberEvent::Failed`]) and the round goes on
///   at the next interval; the election retries by itself.
/// - [`Prober::close`] resigns and stops; dropping it stops it and hands the
///   lead over in the background.
#[derive(Debug)]
pub struct Prober {
    active: watch::Receiver<bool>,
    events: broadcast::Sender<ProberEvent>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl RegistryService {
    /// Start a prober (feature `probe`): it campaigns in `probe:<group>` and,
    /// while it leads, probes (see [`Prober`]). Needs a tokio runtime; returns
    /// at once. Errors: `InvalidArgument` for a config that is not valid.
    pub fn prober(&self, config: ProberConfig) -> Result<Prober> {
        config.validate()?;
        let latch = ElectionService::new(self.coord.clone())
            .with_ttl(config.ttl)
            .latch(format!("probe:{}", config.group()), config.name.clone());
        let (active_tx, active) = watch::channel(false);
        let (events, _) = broadcast::channel(256);
        let (stop, stopped) = oneshot::channel();
        let span = info_span!("coord.prober", prober = %config.name);
        let run = Run {
            registry: self.clone(),
            config,
            events: events.clone(),
            active: active_tx,
            book: HashMap::new(),
        };
        let task = tokio::spawn(run.go(latch, stopped).instrument(span));
        Ok(Prober {
            active,
            events,
            stop: Some(stop),
            task,
        })
    }
}

impl Prober {
    /// Whether it leads its group and probes now.
    pub fn is_active(&self) -> bool {
        *self.active.borrow()
    }

    /// Wait until it is active.
    pub async fn wait_until_active(&self) {
        let mut active = self.active.clone();
        let _ = active.wait_for(|a| *a).await;
    }

    /// What it does from now on (a slow reader loses the oldest events).
    pub fn events(&self) -> broadcast::Receiver<ProberEvent> {
        self.events.subscribe()
    }

    /// Stop probing and resign the lead; waits for a round in progress to end
    /// (its checks, each bounded by the timeout, and its writes) and for the
    /// resignation (cancelling leaves it to the background).
    pub async fn close(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        if self.stop.is_some() {
            // Dropping the task drops the latch: its leadership is handed over.
            self.task.abort();
        }
    }
}

/// What the prober knows of one registration.
struct Tracked {
    created: Revision,
    streak: Streak,
}

struct Run {
    registry: RegistryService,
    config: ProberConfig,
    events: broadcast::Sender<ProberEvent>,
    active: watch::Sender<bool>,
    /// By instance key (`<service>/<id>`).
    book: HashMap<(String, String), Tracked>,
}

impl Run {
    async fn go(mut self, latch: LeaderLatch, mut stop: oneshot::Receiver<()>) {
        let mut states = latch.states();
        loop {
            let state = tokio::select! {
                s = states.wait_for(|s| !matches!(s, LatchState::Follower)) => s.map(|s| s.clone()).ok(),
                _ = &mut stop => break,
            };
            let (fencing_token, fence) = match &state {
                Some(s @ LatchState::Leader { fencing_token, .. }) => (*fencing_token, s.compare()),
                other => {
                    warn!(state = ?other, "the prober's election stopped");
                    break;
                }
            };
            info!(fencing_token, "active: probing");
            self.active.send_replace(true);
            self.tell(ProberEvent::Active { fencing_token });
            // Start from the stored verdicts.
            self.book.clear();
            let mut tick = tokio::time::interval(self.config.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let stopped = loop {
                tokio::select! {
                    _ = tick.tick() => self.round(fence.clone()).await,
                    changed = states.changed() => {
                        if changed.is_err() || !states.borrow().is_leader() {
                            break false;
                        }
                    }
                    _ = &mut stop => break true,
                }
            };
            self.active.send_replace(false);
            self.tell(ProberEvent::Standby);
            info!("standby");
            if stopped {
                break;
            }
        }
        self.active.send_replace(false);
        latch.close().await;
    }

    fn tell(&self, event: ProberEvent) {
        let _ = self.events.send(event);
    }

    /// Check every instance of every service once.
    async fn round(&mut self, fence: Option<Compare>) {
        let services: Vec<(String, Check)> = self
            .config
            .services
            .iter()
            .map(|(s, c)| (s.clone(), c.clone()))
            .collect();
        for (service, check) in services {
            let targets = match self.registry.probe_targets(&service).await {
                Ok(t) => t,
                Err(e) => {
                    warn!(%service, error = %e, "cannot read the instances");
                    self.tell(ProberEvent::Failed {
                        error: format!("reading {service}: {e}"),
                    });
                    continue;
                }
            };
            self.book
                .retain(|(s, id), _| s != &service || targets.iter().any(|t| &t.info.id == id));
            let timeout = self.config.timeout;
            let checked: Vec<(ProbeTarget, Outcome)> = futures::stream::iter(targets)
                .map(|t| {
                    let check = &check;
                    async move {
                        let outcome = check.run(&t.info.address, t.info.port, timeout).await;
                        (t, outcome)
                    }
                })
                .buffer_unordered(self.config.at_once)
                .collect()
                .await;
            for (target, outcome) in checked {
                self.judge(&service, target, outcome, fence.clone()).await;
            }
        }
    }

    /// Count one check of `target`; record a verdict the thresholds call for,
    /// or remove a persistent instance past its deadline.
    async fn judge(
        &mut self,
        service: &str,
        target: ProbeTarget,
        outcome: Outcome,
        fence: Option<Compare>,
    ) {
        let (rise, fall) = (self.config.rise, self.config.fall);
        let stored = target.current_verdict().map(|v| v.health);
        let tracked = self
            .book
            .entry((service.to_string(), target.info.id.clone()))
            .or_insert_with(|| Tracked {
                created: target.create_revision,
                streak: Streak::from(stored),
            });
        if tracked.created != target.create_revision {
            *tracked = Tracked {
                created: target.create_revision,
                streak: Streak::from(stored),
            };
        }
        let change = tracked.streak.observe(outcome.passed, rise, fall);
        if let Some(health) = change {
            let verdict = ProbeVerdict::new(
                health,
                target.create_revision,
                now_unix_ms(),
                outcome.detail.clone(),
                self.config.name.clone(),
            );
            match self.registry.record_verdict(&target, &verdict, fence).await {
                Ok(true) => {
                    tracked.streak.stored(health);
                    info!(%service, id = %target.info.id, ?health, detail = %outcome.detail, "verdict");
                    self.tell(ProberEvent::Verdict {
                        service: service.to_string(),
                        id: target.info.id.clone(),
                        health,
                        detail: outcome.detail,
                    });
                }
                // The instance or its verdict changed since the read: read again next round.
                Ok(false) => {}
                Err(e) => self.failed(service, &target, "record a verdict", e),
            }
            return;
        }
        if outcome.passed || !self.past_deadline(&target) {
            return;
        }
        match self.registry.remove_probed(&target, fence).await {
            Ok(true) => {
                warn!(%service, id = %target.info.id, "removed: critical past the deadline");
                self.book
                    .remove(&(service.to_string(), target.info.id.clone()));
                self.tell(ProberEvent::Removed {
                    service: service.to_string(),
                    id: target.info.id.clone(),
                });
            }
            Ok(false) => {}
            Err(e) => self.failed(service, &target, "remove", e),
        }
    }

    /// Whether `target` is a persistent instance whose stored verdict has said
    /// critical for longer than the removal deadline.
    fn past_deadline(&self, target: &ProbeTarget) -> bool {
        let Some(after) = self.config.remove_after else {
            return false;
        };
        let since = match target.current_verdict() {
            Some(v) if v.health == InstanceHealth::Critical => v.since_unix_ms,
            _ => return false,
        };
        target.info.persistent
            && target.lease.is_none()
            && now_unix_ms().saturating_sub(since) >= after.as_millis() as u64
    }

    fn failed(&self, service: &str, target: &ProbeTarget, what: &str, e: Error) {
        warn!(%service, id = %target.info.id, error = %e, "cannot {what}");
        self.tell(ProberEvent::Failed {
            error: format!("{what} for {service}/{}: {e}", target.info.id),
        });
    }
}
