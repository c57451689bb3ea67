//! Choosing an instance per request from a [`ServiceCache`], on any backend and
//! with any client (HTTP, raw TCP, gRPC without tonic's balancer).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::{ServiceCache, ServiceFilter, ServiceInfo};

/// How a [`Picker`] spreads requests over the instances it may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PickStrategy {
    /// Each instance in turn (by id).
    RoundRobin,
    /// In proportion to [`ServiceInfo::weight`], interleaved (smooth weighted
    /// round-robin: weights 5, 1, 1 give `a a b a c a a` per 7 picks, never a
    /// burst of one instance longer than its share requires).
    Weighted,
    /// The instance with the fewest [`Picked`] handles alive (requests in
    /// flight), ties taken in turn.
    LeastOutstanding,
}

/// Picks one instance per request from a cache it owns: only instances its
/// [`ServiceFilter`] matches (by default passing ones) with a weight above 0.
///
/// Picking reads the cache's memory; no I/O. While the cache cannot follow the
/// store it picks from the instances it last knew (see [`ServiceCache::health`]).
///
/// ```
/// # async fn example(coord: coordkit::Coordinator) -> coordkit::Result<()> {
/// use coordkit::{PickStrategy, ServiceFilter};
/// let picker = coord
///     .registry()
///     .picker("api", PickStrategy::LeastOutstanding, ServiceFilter::new().tag("http"))
///     .await?;
/// if let Some(instance) = picker.pick() {
///     // Send the request to instance.authority(); the instance counts as busy
///     // until `instance` is dropped.
///     println!("{}", instance.authority());
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Picker {
    cache: ServiceCache,
    strategy: PickStrategy,
    filter: ServiceFilter,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    turn: usize,
    /// Smooth weighted round-robin: each instance's current weight.
    current: HashMap<String, i64>,
    /// Least outstanding: live handles per instance id.
    outstanding: HashMap<String, Arc<AtomicUsize>>,
}

/// A picked instance. Under [`PickStrategy::LeastOutstanding`] it counts as a
/// request in flight until dropped.
#[derive(Debug)]
pub struct Picked {
    info: ServiceInfo,
    outstanding: Option<Arc<AtomicUsize>>,
}

impl Picked {
    /// The instance.
    pub fn info(&self) -> &ServiceInfo {
        &self.info
    }
}

impl std::ops::Deref for Picked {
    type Target = ServiceInfo;
    fn deref(&self) -> &ServiceInfo {
        &self.info
    }
}

impl Drop for Picked {
    fn drop(&mut self) {
        if let Some(n) = &self.outstanding {
            n.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Picker {
    /// A picker over `cache`'s instances that `filter` matches.
    pub fn new(cache: ServiceCache, strategy: PickStrategy, filter: ServiceFilter) -> Self {
        Picker {
            cache,
            strategy,
            filter,
            state: Mutex::new(State::default()),
        }
    }

    /// The cache it picks from.
    pub fn cache(&self) -> &ServiceCache {
        &self.cache
    }

    /// The instances it may pick now, by id.
    pub fn candidates(&self) -> Vec<ServiceInfo> {
        self.cache
            .instances()
            .iter()
            .filter(|i| i.weight > 0 && self.filter.matches(i))
            .cloned()
            .collect()
    }

    /// One instance for the next request; `None` when no instance qualifies.
    pub fn pick(&self) -> Option<Picked> {
        let candidates = self.candidates();
        if candidates.is_empty() {
            return None;
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let n = candidates.len();
        let turn = state.turn;
        state.turn = state.turn.wrapping_add(1);
        let (chosen, outstanding) = match self.strategy {
            PickStrategy::RoundRobin => (turn % n, None),
            PickStrategy::Weighted => {
                state
                    .current
                    .retain(|id, _| candidates.iter().any(|c| &c.id == id));
                let total: i64 = candidates.iter().map(|c| i64::from(c.weight)).sum();
                let mut best = 0;
                let mut best_weight = i64::MIN;
                for (i, c) in candidates.iter().enumerate() {
                    let w = state.current.entry(c.id.clone()).or_insert(0);
                    *w += i64::from(c.weight);
                    if *w > best_weight {
                        best_weight = *w;
                        best = i;
                    }
                }
                if let Some(w) = state.current.get_mut(&candidates[best].id) {
                    *w -= total;
                }
                (best, None)
            }
            PickStrategy::LeastOutstanding => {
                // An instance that left the candidates keeps its count while
                // requests to it are in flight: if it comes back (a health
                // flap), it is not taken for idle. Counts of instances neither
                // candidates nor busy go, so the map is bounded by the
                // candidates and the live `Picked` handles.
                state.outstanding.retain(|id, n| {
                    n.load(Ordering::Acquire) > 0 || candidates.iter().any(|c| &c.id == id)
                });
                let counts: Vec<Arc<AtomicUsize>> = candidates
                    .iter()
                    .map(|c| state.outstanding.entry(c.id.clone()).or_default().clone())
                    .collect();
                let best = (0..n)
                    .map(|k| (turn + k) % n)
                    .min_by_key(|&i| counts[i].load(Ordering::Acquire))
                    .unwrap_or(0);
                counts[best].fetch_add(1, Ordering::AcqRel);
                (best, Some(counts[best].clone()))
            }
        };
        Some(Picked {
            info: candidates[chosen].clone(),
            outstanding,
        })
    }
}
