//! Empty-push protection: a [`ServiceCache`](super::ServiceCache) that keeps
//! serving the instances it last saw when a change would leave too few of
//! them (every lease of a service ending at once — a split of the registering
//! side, a mass restart — would otherwise take every instance from callers).

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{info, warn};

use super::{ServiceEvent, ServiceEventKind, ServiceInfo};
use crate::error::{Error, Result};

/// When a [`ServiceCache`](super::ServiceCache) holds on to instances that
/// left, rather than serve too few.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[non_exhaustive]
pub enum EmptyPushProtection {
    /// Serve exactly what the store holds, even nothing.
    Off,
    /// Hold when a change would leave no instance (the default).
    #[default]
    WhenEmpty,
    /// Hold when fewer than this fraction (above 0, at most 1) of the
    /// instances seen would remain: `BelowFraction(0.5)` holds when a service
    /// of 10 would drop to 4.
    BelowFraction(f64),
}

/// How a [`ServiceCache`](super::ServiceCache) follows its service:
/// [`RegistryService::cache_with`](super::RegistryService::cache_with).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct CacheOptions {
    /// When to hold on to instances that left. Default
    /// [`EmptyPushProtection::WhenEmpty`].
    pub protection: EmptyPushProtection,
    /// How long an instance that left still counts among the instances seen
    /// (so that leases ending one after the other within it are one drop, not
    /// many small ones). Default 60 s; while holding, nothing is forgotten.
    pub departures_window: Duration,
    /// Where to keep what the cache serves, for a warm start with the store
    /// down (see [`ServiceCache`](super::ServiceCache)); `None` (the default):
    /// no file.
    pub snapshot: Option<std::path::PathBuf>,
}

impl Default for CacheOptions {
    fn default() -> Self {
        CacheOptions {
            protection: EmptyPushProtection::WhenEmpty,
            departures_window: Duration::from_secs(60),
            snapshot: None,
        }
    }
}

impl CacheOptions {
    /// Protection when the service would be left empty, a 60 s window.
    pub fn new() -> Self {
        Self::default()
    }

    /// With `protection`.
    pub fn protection(mut self, protection: EmptyPushProtection) -> Self {
        self.protection = protection;
        self
    }

    /// With departures counted for `window`.
    pub fn departures_window(mut self, window: Duration) -> Self {
        self.departures_window = window;
        self
    }

    /// Keep what the cache serves in the file `path` (written atomically at
    /// each change), and start from it when the store does not answer at
    /// creation. A file of another service, or unreadable, is ignored.
    pub fn snapshot(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.snapshot = Some(path.into());
        self
    }

    /// `InvalidArgument` for a fraction outside (0, 1] or a zero window.
    pub fn validate(&self) -> Result<()> {
        if let EmptyPushProtection::BelowFraction(f) = self.protection {
            if !(f > 0.0 && f <= 1.0) {
                return Err(Error::invalid(
                    "protection",
                    format!("a fraction is above 0 and at most 1 (got {f})"),
                ));
            }
        }
        if self.departures_window.is_zero() {
            return Err(Error::invalid("departures_window", "must be above zero"));
        }
        Ok(())
    }

    /// Whether `live` instances are enough out of `seen`.
    fn enough(&self, live: usize, seen: usize) -> bool {
        match self.protection {
            EmptyPushProtection::Off => true,
            EmptyPushProtection::WhenEmpty => live > 0 || seen == 0,
            EmptyPushProtection::BelowFraction(f) => seen == 0 || live as f64 >= f * seen as f64,
        }
    }
}

/// The instances being held, and since when.
struct Hold {
    since: Instant,
    set: BTreeMap<String, ServiceInfo>,
}

/// What a cache serves, given what the store holds: the store's instances,
/// or, while holding, those and the ones that left.
pub(crate) struct Guard {
    service: String,
    options: CacheOptions,
    /// Instances that left within the window, by id, with when.
    departed: BTreeMap<String, (ServiceInfo, Instant)>,
    hold: Option<Hold>,
    /// What is served, by id.
    served: BTreeMap<String, ServiceInfo>,
    /// How many instances the store holds.
    live: usize,
}

impl Guard {
    pub(crate) fn new(service: &str, options: CacheOptions, live: &[ServiceInfo]) -> Self {
        Guard {
            service: service.to_string(),
            options,
            departed: BTreeMap::new(),
            hold: None,
            served: live.iter().map(|i| (i.id.clone(), i.clone())).collect(),
            live: live.len(),
        }
    }

    /// The instances served, by id.
    pub(crate) fn served(&self) -> Vec<ServiceInfo> {
        self.served.values().cloned().collect()
    }

    /// While holding: since when, how many instances are served, how many
    /// the store holds.
    pub(crate) fn holding(&self) -> Option<(Instant, usize, usize)> {
        let hold = self.hold.as_ref()?;
        Some((hold.since, self.served.len(), self.live))
    }

    /// Take in `event` (the store's change), with `live` the store's instances
    /// after it; the changes to what is served, for subscribers.
    pub(crate) fn apply(&mut self, event: ServiceEvent, live: &[ServiceInfo]) -> Vec<ServiceEvent> {
        let now = Instant::now();
        self.live = live.len();
        let id = event.service.id.clone();
        match event.kind {
            ServiceEventKind::Delete => {
                self.departed.insert(id, (event.service.clone(), now));
            }
            _ => {
                self.departed.remove(&id);
            }
        }
        self.forget_old_departures(now);
        let enough = self.enough(live.len());
        match (enough, self.hold.is_some()) {
            (true, false) => {
                // Following: what is served is what the store holds.
                self.apply_to_served(&event);
                vec![event]
            }
            _ => self.settle(enough, now, live),
        }
    }

    /// Serve `live` (the store's whole view, read anew after a warm start)
    /// in place of what is served: the instances that are not in it count as
    /// departures, as if each had left now.
    pub(crate) fn replace(&mut self, live: &[ServiceInfo]) -> Vec<ServiceEvent> {
        let now = Instant::now();
        self.live = live.len();
        for (id, info) in &self.served {
            if !live.iter().any(|i| &i.id == id) {
                self.departed.insert(id.clone(), (info.clone(), now));
            }
        }
        for info in live {
            self.departed.remove(&info.id);
        }
        let enough = self.enough(live.len());
        self.settle(enough, now, live)
    }

    fn forget_old_departures(&mut self, now: Instant) {
        if self.hold.is_none() {
            let window = self.options.departures_window;
            self.departed
                .retain(|_, (_, at)| now.saturating_duration_since(*at) <= window);
        }
    }

    /// Whether `live` instances are enough: against the held set while
    /// holding, else against those seen (live and departed).
    fn enough(&self, live: usize) -> bool {
        match &self.hold {
            Some(hold) => self.options.enough(live, hold.set.len()),
            None => self.options.enough(live, live + self.departed.len()),
        }
    }

    /// Start, go on or stop holding, and serve accordingly; the changes to
    /// what was served.
    fn settle(&mut self, enough: bool, now: Instant, live: &[ServiceInfo]) -> Vec<ServiceEvent> {
        match (enough, self.hold.is_some()) {
            (false, false) => self.start_holding(now, live),
            (true, true) => self.stop_holding(live.len()),
            _ => {}
        }
        self.serve(live)
    }

    fn apply_to_served(&mut self, event: &ServiceEvent) {
        let id = event.service.id.clone();
        match event.kind {
            ServiceEventKind::Delete => self.served.remove(&id),
            _ => self.served.insert(id, event.service.clone()),
        };
    }

    fn start_holding(&mut self, now: Instant, live: &[ServiceInfo]) {
        let mut set: BTreeMap<String, ServiceInfo> = self
            .departed
            .iter()
            .map(|(id, (info, _))| (id.clone(), info.clone()))
            .collect();
        set.extend(live.iter().map(|i| (i.id.clone(), i.clone())));
        warn!(
            service = %self.service,
            live = live.len(),
            held = set.len(),
            "empty-push protection: too few instances left; serving the ones last seen"
        );
        crate::telemetry::cache_protected(&self.service, true);
        self.hold = Some(Hold { since: now, set });
    }

    fn stop_holding(&mut self, live: usize) {
        if let Some(hold) = self.hold.take() {
            info!(
                service = %self.service,
                live,
                held_for = ?hold.since.elapsed(),
                "empty-push protection: enough instances again; following the store"
            );
        }
        crate::telemetry::cache_protected(&self.service, false);
        self.departed.clear();
    }

    /// Serve the held instances (if holding) with the live ones over them;
    /// the changes to what was served.
    fn serve(&mut self, live: &[ServiceInfo]) -> Vec<ServiceEvent> {
        let mut next = self
            .hold
            .as_ref()
            .map(|h| h.set.clone())
            .unwrap_or_default();
        next.extend(live.iter().map(|i| (i.id.clone(), i.clone())));
        let mut changes = Vec::new();
        for (id, info) in &self.served {
            if !next.contains_key(id) {
                changes.push(event(ServiceEventKind::Delete, info));
            }
        }
        for (id, info) in &next {
            if self.served.get(id) != Some(info) {
                changes.push(event(ServiceEventKind::Put, info));
            }
        }
        self.served = next;
        changes
    }
}

fn event(kind: ServiceEventKind, service: &ServiceInfo) -> ServiceEvent {
    ServiceEvent {
        kind,
        service: service.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: &str) -> ServiceInfo {
        ServiceInfo::new(id, "api", "10.0.0.1", 80)
    }

    fn ids(guard: &Guard) -> Vec<String> {
        guard.served().into_iter().map(|i| i.id).collect()
    }

    /// Remove `id` from `live` and tell the guard.
    fn leave(guard: &mut Guard, live: &mut Vec<ServiceInfo>, id: &str) -> Vec<ServiceEvent> {
        let i = live.iter().position(|i| i.id == id).unwrap();
        let gone = live.remove(i);
        guard.apply(event(ServiceEventKind::Delete, &gone), live)
    }

    fn come(guard: &mut Guard, live: &mut Vec<ServiceInfo>, id: &str) -> Vec<ServiceEvent> {
        live.push(info(id));
        live.sort_by(|a, b| a.id.cmp(&b.id));
        guard.apply(event(ServiceEventKind::Put, &info(id)), live)
    }

    #[tokio::test(start_paused = true)]
    async fn leases_ending_one_by_one_hold_the_whole_set_not_the_last_one() {
        let mut live: Vec<_> = ["a", "b", "c"].map(info).to_vec();
        let mut guard = Guard::new("api", CacheOptions::new(), &live);
        assert_eq!(leave(&mut guard, &mut live, "a").len(), 1);
        tokio::time::advance(Duration::from_secs(5)).await;
        leave(&mut guard, &mut live, "b");
        assert_eq!(ids(&guard), ["c"]);
        assert!(guard.holding().is_none());
        let changes = leave(&mut guard, &mut live, "c");
        let back: Vec<_> = changes
            .iter()
            .map(|e| (e.kind, e.service.id.as_str()))
            .collect();
        assert_eq!(
            back,
            [(ServiceEventKind::Put, "a"), (ServiceEventKind::Put, "b")],
            "those that left are served again; c is never removed"
        );
        assert_eq!(ids(&guard), ["a", "b", "c"], "the set before the drop");
        let (_, serving, live_now) = guard.holding().expect("holding");
        assert_eq!((serving, live_now), (3, 0));
        // One comes back: enough again; the others leave what is served.
        let changes = come(&mut guard, &mut live, "b");
        assert_eq!(ids(&guard), ["b"]);
        assert!(guard.holding().is_none());
        let gone: Vec<_> = changes
            .iter()
            .filter(|e| e.kind == ServiceEventKind::Delete)
            .map(|e| e.service.id.clone())
            .collect();
        assert_eq!(gone, ["a", "c"]);
    }

    #[tokio::test(start_paused = true)]
    async fn departures_older_than_the_window_are_forgotten() {
        let mut live: Vec<_> = ["a", "b"].map(info).to_vec();
        let mut guard = Guard::new("api", CacheOptions::new(), &live);
        leave(&mut guard, &mut live, "a");
        tokio::time::advance(Duration::from_secs(61)).await;
        leave(&mut guard, &mut live, "b");
        assert_eq!(ids(&guard), ["b"], "a left long before: only b is held");
    }

    #[tokio::test(start_paused = true)]
    async fn off_serves_exactly_the_store() {
        let mut live: Vec<_> = ["a"].map(info).to_vec();
        let options = CacheOptions::new().protection(EmptyPushProtection::Off);
        let mut guard = Guard::new("api", options, &live);
        leave(&mut guard, &mut live, "a");
        assert!(ids(&guard).is_empty());
        assert!(guard.holding().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_fraction_holds_below_it_and_lets_go_at_it() {
        let mut live: Vec<_> = ["a", "b", "c", "d"].map(info).to_vec();
        let options = CacheOptions::new().protection(EmptyPushProtection::BelowFraction(0.5));
        let mut guard = Guard::new("api", options, &live);
        leave(&mut guard, &mut live, "a");
        leave(&mut guard, &mut live, "b");
        assert_eq!(ids(&guard), ["c", "d"], "2 of 4 is enough");
        leave(&mut guard, &mut live, "c");
        assert_eq!(ids(&guard), ["a", "b", "c", "d"]);
        let (_, serving, live_now) = guard.holding().unwrap();
        assert_eq!((serving, live_now), (4, 1));
        come(&mut guard, &mut live, "e");
        assert_eq!(ids(&guard), ["d", "e"], "2 of the 4 held: enough");
    }

    #[tokio::test(start_paused = true)]
    async fn a_warm_start_replaced_by_an_empty_store_holds_the_snapshot() {
        let snapshot: Vec<_> = ["a", "b"].map(info).to_vec();
        let mut guard = Guard::new("api", CacheOptions::new(), &snapshot);
        assert!(guard.replace(&[]).is_empty(), "nothing leaves: held");
        assert_eq!(ids(&guard), ["a", "b"]);
        let changes = guard.replace(&[info("b"), info("c")]);
        assert_eq!(ids(&guard), ["b", "c"]);
        let kinds: Vec<_> = changes
            .iter()
            .map(|e| (e.kind, e.service.id.as_str()))
            .collect();
        assert_eq!(
            kinds,
            [
                (ServiceEventKind::Delete, "a"),
                (ServiceEventKind::Put, "c")
            ]
        );
    }

    #[test]
    fn options_are_checked() {
        for bad in [0.0, -1.0, 1.5, f64::NAN] {
            let o = CacheOptions::new().protection(EmptyPushProtection::BelowFraction(bad));
            assert!(o.validate().is_err(), "{bad}");
        }
        assert!(CacheOptions::new()
            .departures_window(Duration::ZERO)
            .validate()
            .is_err());
        assert!(CacheOptions::new().validate().is_ok());
    }
}
