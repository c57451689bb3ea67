//! Queues named by an etcd prefix (`QueueName::etcd_prefix`): the keys a Go service
//! using etcd's `concurrency` package writes for the same prefix, whatever the
//! coordinator's namespace, with the same exclusion as a named lock. (The same
//! against the real `etcdctl lock` is in coordkit-etcd's `tests/interop.rs`.)

use std::sync::Arc;
use std::time::Duration;

use coordkit::{Backend, BackendExt, Coordinator, Error, QueueName, RangeRequest};
use coordkit_memory::MemoryBackend;
use futures::StreamExt;

const TTL: Duration = Duration::from_secs(10);

fn coordinator(store: &MemoryBackend, namespace: &str) -> Coordinator {
    Coordinator::builder(Arc::new(store.client()))
        .namespace(namespace)
        .build()
        .unwrap()
}

async fn keys(store: &MemoryBackend, prefix: &str) -> Vec<String> {
    let resp = store.range(RangeRequest::prefix(prefix)).await.unwrap();
    resp.kvs.iter().map(|kv| kv.key_str()).collect()
}

#[tokio::test(start_paused = true)]
async fn a_lock_on_an_etcd_prefix_writes_go_keys_and_excludes_every_namespace() {
    let store = MemoryBackend::new();
    let (a, b) = (coordinator(&store, "coord/"), coordinator(&store, "other/"));
    let go = QueueName::etcd_prefix("/my-lock/");
    let guard = a.lock().acquire(&go, TTL).await.unwrap();
    assert_eq!(
        guard.key(),
        format!("/my-lock//{}", guard.session().lease())
    );
    assert_eq!(
        keys(&store, "/my-lock//").await,
        vec![guard.key().to_string()]
    );

    let err = b.lock().try_acquire(&go, TTL).await.unwrap_err();
    assert!(matches!(err, Error::LockConflict { .. }), "{err:?}");
    assert_eq!(keys(&store, "/my-lock//").await.len(), 1, "no key left");
    let holders = b.lock().holders_and_waiters(&go).await.unwrap();
    assert_eq!(holders[0].fencing_token, guard.fencing_token());

    let waiting = tokio::spawn({
        let (b, go) = (b.clone(), go.clone());
        async move { b.lock().acquire(go, TTL).await }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!waiting.is_finished(), "b took a held lock");
    let token = guard.fencing_token();
    guard.unlock().await.unwrap();
    let next = waiting.await.unwrap().unwrap();
    assert!(next.fencing_token() > token);
    assert!(next.key().starts_with("/my-lock//"), "{}", next.key());
    next.unlock().await.unwrap();
    assert!(keys(&store, "/my-lock//").await.is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_etcd_prefix_and_the_name_it_spells_are_one_lock() {
    let store = MemoryBackend::new();
    let (a, b) = (coordinator(&store, "coord/"), coordinator(&store, "coord/"));
    let guard = a.lock().acquire("x", TTL).await.unwrap();
    let err = b
        .lock()
        .try_acquire(QueueName::etcd_prefix("coord/lock/x"), TTL)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::LockConflict { .. }), "{err:?}");
    guard.unlock().await.unwrap();
    let guard = b
        .lock()
        .try_acquire(QueueName::etcd_prefix("coord/lock/x"), TTL)
        .await
        .unwrap();
    assert_eq!(
        guard.key(),
        format!("coord/lock/x/{}", guard.session().lease())
    );
    guard.unlock().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_election_on_an_etcd_prefix_is_seen_by_leader_and_observe() {
    let store = MemoryBackend::new();
    let (a, b) = (coordinator(&store, "coord/"), coordinator(&store, "ns2/"));
    let go = QueueName::etcd_prefix("/svc-leader");
    let mut observed = b.election().observe(&go).unwrap();
    assert_eq!(observed.next().await.unwrap().unwrap(), None);
    let leadership = a.election().campaign(&go, "node-a").await.unwrap();
    assert!(leadership.key().starts_with("/svc-leader/"));
    let leader = b.election().leader(&go).await.unwrap().unwrap();
    assert_eq!(leader.value_str(), "node-a");
    let seen = observed.next().await.unwrap().unwrap().unwrap();
    assert_eq!(seen.value_str(), "node-a");
    let err = b.election().try_campaign(&go, "node-b").await.unwrap_err();
    assert!(matches!(err, Error::LockConflict { .. }), "{err:?}");
    leadership.resign().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn shared_claims_on_an_etcd_prefix_stay_under_it() {
    let store = MemoryBackend::new();
    let a = coordinator(&store, "coord/");
    let pfx = QueueName::etcd_prefix("jobs/slots");
    let one = a.semaphore().acquire(&pfx, 2, TTL).await.unwrap();
    let two = a.semaphore().acquire(&pfx, 2, TTL).await.unwrap();
    let err = a.semaphore().try_acquire(&pfx, 2, TTL).await.unwrap_err();
    assert!(matches!(err, Error::LockConflict { .. }), "{err:?}");
    assert_eq!(keys(&store, "jobs/slots/").await.len(), 2);
    assert!(keys(&store, "coord/")
        .await
        .iter()
        .all(|k| !k.contains("semaphore")));
    one.unlock().await.unwrap();
    two.unlock().await.unwrap();
    let read = a.rw_lock().read(&pfx, TTL).await.unwrap();
    assert!(read.key().starts_with("jobs/slots/"), "{}", read.key());
    read.unlock().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn bad_queue_names_are_refused_before_any_write() {
    let store = MemoryBackend::new();
    let a = coordinator(&store, "coord/");
    let before = store.get("anything").await.unwrap();
    for (name, argument) in [
        (QueueName::etcd_prefix(""), "prefix"),
        (QueueName::etcd_prefix("a\nb"), "prefix"),
        (QueueName::named("a/b"), "name"),
        (QueueName::named(""), "name"),
    ] {
        let err = a.lock().try_acquire(&name, TTL).await.unwrap_err();
        match err {
            Error::InvalidArgument { argument: got, .. } => assert_eq!(got, argument, "{name:?}"),
            other => panic!("{name:?}: {other:?}"),
        }
        assert!(a.election().observe(&name).is_err(), "{name:?}");
    }
    assert_eq!(before, None);
    assert!(keys(&store, "").await.is_empty(), "nothing written");
}
