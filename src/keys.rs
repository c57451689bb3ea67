//! The key layout: where every recipe keeps its keys under a coordinator's
//! namespace, in one place (the recipes, the claim machinery and `coordctl`
//! all ask here).
//!
//! | keys | of |
//! |---|---|
//! | `<ns>lock/<name>/<lease hex>` | a lock's queue (etcd's `concurrency.Mutex`, `etcdctl lock`) |
//! | `<ns>election/<name>/<lease hex>` | an election's candidates (etcd's `concurrency.Election`) |
//! | `<ns>semaphore/<name>/<lease hex>-<n hex>` | a semaphore's permits and waiters |
//! | `<ns>rwlock/<name>/<lease hex>-<n hex>` | a read-write lock's readers and writers |
//! | `<ns>counter/<name>`, `<ns>counter-writer/<name>` | a counter, and the tag of its last write |
//! | `<ns>barrier/<name>` | a barrier |
//! | `<ns>double-barrier/<name>/waiters/<lease hex>-<n hex>`, `…/ready` | a double barrier |
//! | `<ns>service/<name>/<id>`, `<ns>service-id/<id>/<name>` | an instance, and its id index |
//! | `<ns>service/<name>/<id>/probe` | a prober's verdict on the instance (on its lease) |
//! | `<ns>config/<path>` | a config value |
//!
//! `<n hex>` is the lowest number the session's other keys of the same name
//! leave free, so a busy queue's key space stays as small as its holders and
//! waiters (see the claim machinery's `key_hold`).

use crate::backend::LeaseId;

/// What follows an instance's key in the key of a prober's verdict on it.
pub(crate) const PROBE_SUFFIX: &str = "/probe";

/// Where the recipes of a coordinator with namespace `namespace` keep their
/// keys (see the module docs for the table).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyLayout {
    namespace: String,
}

impl KeyLayout {
    /// The layout under `namespace`, taken as given (a coordinator's namespace
    /// ends with `/`, or is empty).
    pub fn new(namespace: impl Into<String>) -> Self {
        KeyLayout {
            namespace: namespace.into(),
        }
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Every lock's queue: `<ns>lock/`.
    pub fn locks(&self) -> String {
        self.queues("lock")
    }

    /// Every election's candidates: `<ns>election/`.
    pub fn elections(&self) -> String {
        self.queues("election")
    }

    /// Every semaphore's holders and waiters: `<ns>semaphore/`.
    pub fn semaphores(&self) -> String {
        self.queues("semaphore")
    }

    /// Every queue of one kind (`lock`, `election`, `semaphore`, `rwlock`):
    /// `<ns><segment>/`.
    pub(crate) fn queues(&self, segment: &str) -> String {
        format!("{}{segment}/", self.namespace)
    }

    /// The queue of `name` (checked by the caller): `<ns><segment>/<name>/`.
    pub(crate) fn queue(&self, segment: &str, name: &str) -> String {
        format!("{}{segment}/{name}/", self.namespace)
    }

    /// Counter `name`: `<ns>counter/<name>`.
    pub fn counter(&self, name: &str) -> String {
        format!("{}counter/{name}", self.namespace)
    }

    /// The tag of counter `name`'s last write: `<ns>counter-writer/<name>`.
    pub fn counter_writer(&self, name: &str) -> String {
        format!("{}counter-writer/{name}", self.namespace)
    }

    /// Barrier `name`: `<ns>barrier/<name>`.
    pub fn barrier(&self, name: &str) -> String {
        format!("{}barrier/{name}", self.namespace)
    }

    /// Double barrier `name`'s participants: `<ns>double-barrier/<name>/waiters/`.
    pub fn double_barrier_waiters(&self, name: &str) -> String {
        format!("{}double-barrier/{name}/waiters/", self.namespace)
    }

    /// Double barrier `name`'s gate: `<ns>double-barrier/<name>/ready`.
    pub fn double_barrier_ready(&self, name: &str) -> String {
        format!("{}double-barrier/{name}/ready", self.namespace)
    }

    /// Every service's instances: `<ns>service/`.
    pub fn services(&self) -> String {
        format!("{}service/", self.namespace)
    }

    /// Service `name`'s instances: `<ns>service/<name>/`.
    pub fn service(&self, name: &str) -> String {
        format!("{}service/{name}/", self.namespace)
    }

    /// Instance `id` of service `name`: `<ns>service/<name>/<id>`.
    pub fn instance(&self, name: &str, id: &str) -> String {
        format!("{}{id}", self.service(name))
    }

    /// A prober's verdict on instance `id` of service `name`:
    /// `<ns>service/<name>/<id>/probe`. Under the service's prefix, so one read
    /// or watch of the service sees instances and verdicts together.
    pub fn probe_verdict(&self, name: &str, id: &str) -> String {
        format!("{}{PROBE_SUFFIX}", self.instance(name, id))
    }

    /// The services instance `id` is registered in: `<ns>service-id/<id>/`.
    pub fn id_index(&self, id: &str) -> String {
        format!("{}service-id/{id}/", self.namespace)
    }

    /// The index entry of instance `id` in service `name`:
    /// `<ns>service-id/<id>/<name>`.
    pub fn id_index_entry(&self, id: &str, name: &str) -> String {
        format!("{}{name}", self.id_index(id))
    }

    /// The config values: `<ns>config/`.
    pub fn config(&self) -> String {
        format!("{}config/", self.namespace)
    }

    /// The config values' gray releases: `<ns>config-gray/` (each at its
    /// config key under it).
    pub fn config_gray(&self) -> String {
        format!("{}config-gray/", self.namespace)
    }

    /// The key a health probe reads (never written): `<ns>health`.
    pub(crate) fn health_probe(&self) -> String {
        format!("{}health", self.namespace)
    }
}

/// A session's one key in an exclusive queue (`prefix`, ending in `/`):
/// `<prefix><lease hex>`.
pub(crate) fn exclusive_claim(prefix: &str, lease: LeaseId) -> String {
    format!("{prefix}{lease}")
}

/// The stem of a session's numbered keys in a queue (`prefix`):
/// `<prefix><lease hex>-`; a key is the stem and a number (see [`numbered`]).
pub(crate) fn numbered_stem(prefix: &str, lease: LeaseId) -> String {
    format!("{prefix}{lease}-")
}

/// Key number `n` of `stem`: `<stem><n hex>`.
pub(crate) fn numbered(stem: &str, n: u64) -> String {
    format!("{stem}{n:x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_matches_the_table() {
        let keys = KeyLayout::new("ns/");
        assert_eq!(keys.locks(), "ns/lock/");
        assert_eq!(keys.queue("semaphore", "s"), "ns/semaphore/s/");
        assert_eq!(keys.counter("n"), "ns/counter/n");
        assert_eq!(keys.counter_writer("n"), "ns/counter-writer/n");
        assert_eq!(keys.barrier("b"), "ns/barrier/b");
        assert_eq!(
            keys.double_barrier_waiters("d"),
            "ns/double-barrier/d/waiters/"
        );
        assert_eq!(keys.double_barrier_ready("d"), "ns/double-barrier/d/ready");
        assert_eq!(keys.instance("svc", "i-1"), "ns/service/svc/i-1");
        assert_eq!(keys.id_index_entry("i-1", "svc"), "ns/service-id/i-1/svc");
        assert_eq!(keys.probe_verdict("svc", "i-1"), "ns/service/svc/i-1/probe");
        assert_eq!(keys.config(), "ns/config/");
        let lease = LeaseId(0x2a);
        assert_eq!(exclusive_claim("ns/lock/l/", lease), "ns/lock/l/2a");
        let stem = numbered_stem("ns/rwlock/r/", lease);
        assert_eq!(numbered(&stem, 10), "ns/rwlock/r/2a-a");
    }
}
