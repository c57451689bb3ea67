//! The keepers of a coordinator's registrations: one watch per service, not one
//! per registration; an owner whose write the service's follower had already
//! passed when it joined still judges every change of its key since its write.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use coordkit::testing::{Intercept, Intercepted};
use coordkit::{
    Backend, BackendExt, Coordinator, RegistrationState, Result, ServiceInfo, Txn, TxnResponse,
};
use coordkit_memory::MemoryBackend;
use tokio::sync::Notify;

const TTL: Duration = Duration::from_secs(10);

async fn state_becomes(
    registration: &coordkit::Registration,
    want: RegistrationState,
) -> RegistrationState {
    let mut states = registration.watch_state();
    let reached = tokio::time::timeout(Duration::from_secs(30), states.wait_for(|s| *s == want))
        .await
        .is_ok();
    let now = *states.borrow();
    assert!(reached, "state stayed {now:?}, wanted {want:?}");
    now
}

/// The lease a key is on now.
async fn lease_of(store: &MemoryBackend, key: &str) -> coordkit::LeaseId {
    let kv = store.get(key).await.unwrap().expect("the key is there");
    kv.lease.expect("on a lease")
}

#[tokio::test(start_paused = true)]
async fn registrations_of_one_service_share_one_watch() {
    let store = MemoryBackend::new();
    let c = Coordinator::new(Arc::new(store.client()));
    let before = store.open_watches();
    let mut held = Vec::new();
    for i in 0..50 {
        let info = ServiceInfo::new(format!("i-{i}"), "svc", "10.0.0.1", 7000 + i);
        held.push(c.registry().register(info, TTL).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        store.open_watches() - before,
        1,
        "one watch for the service's 50 registrations"
    );
    // Each is still kept: one removed by someone else stops as `Removed`, the
    // others stay registered.
    assert_eq!(c.registry().deregister("i-7").await.unwrap(), 1);
    state_becomes(&held[7], RegistrationState::Removed).await;
    assert!(held
        .iter()
        .enumerate()
        .all(|(i, r)| i == 7 || r.state() == RegistrationState::Registered));
    // A lost lease: every registration on it is written again.
    let lease = lease_of(&store, held[0].key()).await;
    store.expire_lease(lease);
    for (i, r) in held.iter().enumerate().filter(|(i, _)| *i != 7) {
        tokio::time::timeout(Duration::from_secs(30), async {
            while store.get(r.key()).await.unwrap().and_then(|kv| kv.lease) == Some(lease)
                || store.get(r.key()).await.unwrap().is_none()
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("registration {i} was not written again"));
        assert_eq!(r.state(), RegistrationState::Registered);
    }
    drop(held);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        store.open_watches(),
        before,
        "the service's watch ends with its last registration"
    );
}

/// Holds the answer of one register write (applied in the store) until released.
struct HoldOne {
    armed: AtomicBool,
    applied: Notify,
    release: Notify,
}

#[async_trait::async_trait]
impl Intercept<MemoryBackend> for HoldOne {
    async fn txn(&self, inner: &MemoryBackend, txn: Txn) -> Result<TxnResponse> {
        let hold = txn.writes() && self.armed.swap(false, Ordering::SeqCst);
        let answer = inner.txn(txn).await;
        if hold {
            self.applied.notify_one();
            self.release.notified().await;
        }
        answer
    }
}

/// B's write is applied; someone may overwrite B's key; other changes of the
/// service follow; only then does B learn its write's revision and join. B must
/// judge what changed since its write, whether the service's follower started
/// before B's write (A registered first) or after it, and whether it still
/// keeps those changes (a few) or not (more than it keeps).
#[tokio::test(start_paused = true)]
async fn an_owner_joining_after_the_follower_passed_its_write_sees_what_changed_since() {
    for overwrite in [true, false] {
        for (a_first, changes) in [(true, 3), (true, 1100), (false, 3), (false, 1100)] {
            let case = format!("overwrite {overwrite}, A first {a_first}, {changes} changes");
            joining_late(overwrite, a_first, changes, &case).await;
        }
    }
}

async fn joining_late(overwrite: bool, a_first: bool, changes: usize, case: &str) {
    let store = MemoryBackend::new();
    let faulty = Arc::new(Intercepted::new(
        store.client(),
        HoldOne {
            armed: AtomicBool::new(false),
            applied: Notify::new(),
            release: Notify::new(),
        },
    ));
    let backend: Arc<dyn Backend> = faulty.clone();
    let c = Coordinator::new(backend);
    let registry = c.registry();
    let register_a = || registry.register(ServiceInfo::new("a", "svc", "10.0.0.1", 7000), TTL);
    let a = if a_first {
        Some(register_a().await.unwrap())
    } else {
        None
    };
    faulty.intercept().armed.store(true, Ordering::SeqCst);
    let registry_b = c.registry();
    let b = tokio::spawn(async move {
        registry_b
            .register(ServiceInfo::new("b", "svc", "10.0.0.2", 7000), TTL)
            .await
    });
    faulty.intercept().applied.notified().await;
    let b_key = "coord/service/svc/b";
    assert!(
        store.get(b_key).await.unwrap().is_some(),
        "{case}: B's write applied"
    );
    if overwrite {
        store.put(b_key, b"someone else's".to_vec()).await.unwrap();
    }
    let a = match a {
        Some(a) => a,
        None => register_a().await.unwrap(),
    };
    for i in 0..changes {
        store
            .put(format!("coord/service/svc/other-{i}"), b"x".to_vec())
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    faulty.intercept().release.notify_one();
    let b = b.await.unwrap().unwrap();
    if overwrite {
        state_becomes(&b, RegistrationState::Replaced).await;
    } else {
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(b.state(), RegistrationState::Registered, "{case}");
        // And it follows later changes.
        assert_eq!(c.registry().deregister("b").await.unwrap(), 1);
        state_becomes(&b, RegistrationState::Removed).await;
    }
    assert_eq!(a.state(), RegistrationState::Registered, "{case}");
}

/// Two registrations of one id on one coordinator: the second's write replaces
/// the first's, which stops as `Replaced`; the second stays kept. The service's
/// watch lags (as a store's may), so the second joins before the first could
/// see its write.
#[tokio::test(start_paused = true)]
async fn a_second_registration_of_one_id_here_replaces_the_first() {
    let store = MemoryBackend::new();
    let client = store.client();
    client.lag_new_watches(Some(Duration::from_secs(1)));
    let c = Coordinator::new(Arc::new(client.clone()));
    let info = || ServiceInfo::new("dup", "svc", "10.0.0.1", 7000);
    let first = c.registry().register(info(), TTL).await.unwrap();
    let second = c
        .registry()
        .register(info().with_weight(2), TTL)
        .await
        .unwrap();
    state_becomes(&first, RegistrationState::Replaced).await;
    assert_eq!(second.state(), RegistrationState::Registered);
    // The second is still followed: removed by someone else, it says so.
    assert_eq!(c.registry().deregister("dup").await.unwrap(), 1);
    state_becomes(&second, RegistrationState::Removed).await;
}

/// Counts write transactions in flight (each held 10 ms), and the most at once.
#[derive(Default)]
struct InFlight {
    now: std::sync::atomic::AtomicUsize,
    most: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl Intercept<MemoryBackend> for InFlight {
    async fn txn(&self, inner: &MemoryBackend, txn: Txn) -> Result<TxnResponse> {
        if !txn.writes() {
            return inner.txn(txn).await;
        }
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(10)).await;
        let answer = inner.txn(txn).await;
        self.now.fetch_sub(1, Ordering::SeqCst);
        answer
    }
}

/// A lost session takes all its registrations with it; they are written again
/// a few at a time (at most 64 at once), not all at once.
#[tokio::test(start_paused = true)]
async fn registrations_of_a_lost_session_are_written_again_a_few_at_a_time() {
    let store = MemoryBackend::new();
    let counting = Arc::new(Intercepted::new(store.client(), InFlight::default()));
    let backend: Arc<dyn Backend> = counting.clone();
    let c = Coordinator::new(backend);
    let mut held = Vec::new();
    for i in 0..300 {
        let info = ServiceInfo::new(format!("i-{i}"), "svc", "10.0.0.1", 7000);
        held.push(c.registry().register(info, TTL).await.unwrap());
    }
    let lease = lease_of(&store, held[0].key()).await;
    counting.intercept().most.store(0, Ordering::SeqCst);
    store.expire_lease(lease);
    for r in &held {
        state_becomes(r, RegistrationState::Registered).await;
        tokio::time::timeout(Duration::from_secs(60), async {
            while store.get(r.key()).await.unwrap().is_none() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("written again");
    }
    let most = counting.intercept().most.load(Ordering::SeqCst);
    assert!(
        (2..=64).contains(&most),
        "{most} writes in flight at once while 300 registrations were written again"
    );
}
