//! Registrations under faults the conformance sweep does not make: a health
//! write that failed is written at the next check; a session whose lease the
//! store ended is replaced before a register fails on it; a re-registration
//! whose answer was lost recognises its own write.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use coordkit::testing::{Intercept, Intercepted};
use coordkit::BackendExt;
use coordkit::{
    Backend, Coordinator, Error, InstanceHealth, Result, RetryPolicy, ServiceFilter, ServiceInfo,
    Txn, TxnResponse,
};
use coordkit_memory::MemoryBackend;

/// Refuses the next `n` write transactions (nothing applied).
struct FailWrites(AtomicU64);

#[async_trait::async_trait]
impl Intercept<MemoryBackend> for FailWrites {
    async fn txn(&self, inner: &MemoryBackend, txn: Txn) -> Result<TxnResponse> {
        let refuse = txn.writes()
            && self
                .0
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
        if refuse {
            return Err(Error::unavailable("refused (test)"));
        }
        inner.txn(txn).await
    }
}

#[tokio::test(start_paused = true)]
async fn a_health_write_that_failed_is_written_at_the_next_check() {
    let store = MemoryBackend::new();
    let faulty = Arc::new(Intercepted::new(
        store.client(),
        FailWrites(AtomicU64::new(0)),
    ));
    let backend: Arc<dyn Backend> = faulty.clone();
    let c = Coordinator::builder(backend)
        .retry(RetryPolicy::none())
        .build()
        .unwrap();
    let info = ServiceInfo::new("i-1", "svc", "10.0.0.1", 7000);
    let registration = c
        .registry()
        .register(info, Duration::from_secs(10))
        .await
        .unwrap();
    // The checker's first write (Passing -> Critical) fails.
    faulty.intercept().0.store(1, Ordering::SeqCst);
    registration
        .check_health(Duration::from_secs(1), || async {
            InstanceHealth::Critical
        })
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let observer = Coordinator::new(Arc::new(store.client()));
    let now = observer
        .registry()
        .discover_matching("svc", &ServiceFilter::all())
        .await
        .unwrap();
    assert_eq!(
        now[0].health,
        InstanceHealth::Passing,
        "the first write failed"
    );
    // The next check writes it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let now = observer
        .registry()
        .discover_matching("svc", &ServiceFilter::all())
        .await
        .unwrap();
    assert_eq!(
        now[0].health,
        InstanceHealth::Critical,
        "written at the next check"
    );
    registration.deregister().await.unwrap();
}

/// A session whose lease the store ended behind its back (as an etcd restart
/// can): the next register is made on a fresh lease, never `LeaseNotFound`.
#[tokio::test(start_paused = true)]
async fn a_register_on_a_lease_the_store_ended_goes_on_a_fresh_one() {
    let store = MemoryBackend::new();
    let c = Coordinator::new(Arc::new(store.client()));
    let ttl = Duration::from_secs(10);
    let first = c
        .registry()
        .register(ServiceInfo::new("i-1", "svc", "10.0.0.1", 7000), ttl)
        .await
        .unwrap();
    let old = c.session(ttl).await.unwrap().lease();
    store.expire_lease(old);
    let second = c
        .registry()
        .register(ServiceInfo::new("i-2", "svc", "10.0.0.2", 7000), ttl)
        .await
        .expect("registered on a fresh lease");
    let kv = store.get(second.key()).await.unwrap().expect("written");
    assert_ne!(kv.lease, Some(old), "not on the ended lease");
    drop(first);
    second.deregister().await.unwrap();
}

/// A re-registration whose create was applied but answered lost (after the
/// lease was lost) recognises its own write: the registration goes on as
/// `Registered`, not `Replaced`, and the instance stays advertised.
#[tokio::test(start_paused = true)]
async fn a_reregistration_whose_answer_was_lost_goes_on() {
    use coordkit::testing::{AmbiguousWrites, WriteFault};
    use coordkit::RegistrationState;
    let store = MemoryBackend::new();
    let faulty = Arc::new(Intercepted::new(store.client(), AmbiguousWrites::new()));
    let backend: Arc<dyn Backend> = faulty.clone();
    let c = Coordinator::new(backend);
    let registration = c
        .registry()
        .register(
            ServiceInfo::new("i-1", "svc", "10.0.0.1", 7000),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    let key = registration.key().to_string();
    let lease = store
        .get(key.as_str())
        .await
        .unwrap()
        .unwrap()
        .lease
        .unwrap();
    // The lease ends; the keeper's next write, its re-registration, is lost.
    faulty.intercept().arm(1, WriteFault::Lost);
    store.expire_lease(lease);
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(faulty.intercept().fired(), "the re-registration wrote");
    assert_eq!(registration.state(), RegistrationState::Registered);
    let kv = store.get(key.as_str()).await.unwrap().expect("advertised");
    assert_ne!(kv.lease, Some(lease), "on a new lease");
    registration.deregister().await.unwrap();
    assert!(
        store.get(key.as_str()).await.unwrap().is_none(),
        "deregistered"
    );
}
