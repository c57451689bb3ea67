//! etcd-only behaviour under faults etcd can really produce: a killed and restarted
//! server, a compaction while a watch is disconnected, a lease revoked by another
//! client (etcdctl), and the sharing of one stream by many watches and leases.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use common::process::{etcd_binary_available, EtcdProcess};
use coordkit::{Backend, BackendExt, Error, WatchRequest};
use coordkit_etcd::{EtcdBackend, EtcdConfig};
use futures::StreamExt;

const PATIENCE: Duration = Duration::from_secs(60);

async fn next(w: &mut coordkit::WatchStream) -> coordkit::Result<coordkit::WatchResponse> {
    tokio::time::timeout(PATIENCE, w.next())
        .await
        .expect("a watch response in time")
        .expect("the watch stays open")
}

/// The next answer of `w` is `Compacted` at `revision`.
async fn expect_compacted(w: &mut coordkit::WatchStream, revision: i64) {
    match next(w).await {
        Err(Error::Compacted { compact_revision }) => assert_eq!(compact_revision, revision),
        other => panic!("expected Compacted, got {other:?}"),
    }
}

/// Wait (at most 60 s) until `b` opened a watch stream after `before`.
async fn stream_reopened(b: &EtcdBackend, before: coordkit_etcd::StreamStats) {
    let reopened = tokio::time::timeout(Duration::from_secs(60), async {
        while b.stream_stats().watch_streams == before.watch_streams {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    assert!(reopened.await.is_ok(), "the watch stream was opened again");
}

/// A watch survives etcd being killed and restarted: it resumes from the last
/// delivered revision + 1, so every write arrives once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs etcd (./scripts/test.sh runs it)"]
async fn watch_resumes_after_etcd_restart_without_gap_or_duplicate() {
    if !etcd_binary_available() {
        return;
    }
    let mut etcd = EtcdProcess::start();
    let b = EtcdProcess::connect_to(etcd.client_port).await;
    let mut w = b.watch(WatchRequest::prefix("r/")).await.unwrap();
    let mut written = Vec::new();
    for i in 0..5 {
        written.push(b.put(format!("r/{i}"), "before").await.unwrap());
    }
    for rev in &written[..3] {
        assert_eq!(next(&mut w).await.unwrap().revision, *rev);
    }
    etcd.kill();
    etcd.restart_on(etcd.client_port);
    let writer = EtcdProcess::connect_to(etcd.client_port).await;
    for i in 5..10 {
        written.push(writer.put(format!("r/{i}"), "after").await.unwrap());
    }
    let mut seen: Vec<i64> = written[..3].to_vec();
    while seen.len() < written.len() {
        seen.push(next(&mut w).await.unwrap().revision);
    }
    assert_eq!(seen, written, "resumed watch lost or repeated a revision");
    assert!(
        b.stream_stats().watch_streams >= 2,
        "the stream was not reopened"
    );
}

/// If etcd compacts past a disconnected watch's position, the resumed watch yields
/// `Compacted` instead of silently skipping.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs etcd (./scripts/test.sh runs it)"]
async fn watch_compacted_while_disconnected_yields_compacted() {
    if !etcd_binary_available() {
        return;
    }
    let mut etcd = EtcdProcess::start();
    let b = EtcdProcess::connect_to(etcd.client_port).await;
    let mut w = b.watch(WatchRequest::key("k")).await.unwrap();
    let first = b.put("k", "1").await.unwrap();
    assert_eq!(next(&mut w).await.unwrap().revision, first);
    // Serve the same data on another port, where our backend cannot reach it.
    let hidden_port = etcd.hide();
    let other = EtcdProcess::connect_to(hidden_port).await;
    other.put("k", "2").await.unwrap();
    let now = other.put("k", "3").await.unwrap();
    other.compact(now).await.unwrap();
    drop(other);
    etcd.kill();
    etcd.restart_on(etcd.client_port);
    match tokio::time::timeout(PATIENCE, w.next()).await {
        Ok(Some(Err(Error::Compacted { compact_revision }))) => assert_eq!(compact_revision, now),
        other => panic!("expected Compacted after the resume, got {other:?}"),
    }
}

/// A lease revoked by another client (etcdctl) is reported as `LeaseNotFound` by
/// keep-alive, time-to-live and put, and its keys are gone.
#[tokio::test]
#[ignore = "needs etcd (./scripts/test.sh runs it)"]
async fn lease_revoked_by_etcdctl_is_lease_not_found() {
    let Some(config) = common::etcd_config() else {
        return;
    };
    let b = EtcdBackend::connect(config.clone()).await.unwrap();
    let ns = format!("faults/revoke/{}/", std::process::id());
    let grant = b.lease_grant(30).await.unwrap();
    b.put_with_lease(format!("{ns}k"), "v", grant.id)
        .await
        .unwrap();
    assert_eq!(b.lease_keep_alive(grant.id).await.unwrap(), 30);
    let status = tokio::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg("--endpoints")
        .arg(config.endpoints.join(","))
        .args(["lease", "revoke", &grant.id.to_string()])
        .status()
        .await
        .expect("etcdctl runs");
    assert!(status.success(), "etcdctl lease revoke failed");
    assert!(b.get(format!("{ns}k")).await.unwrap().is_none());
    for r in [
        b.lease_keep_alive(grant.id).await.map(|_| ()),
        b.lease_time_to_live(grant.id).await.map(|_| ()),
        b.put_with_lease(format!("{ns}k"), "v", grant.id)
            .await
            .map(|_| ()),
    ] {
        assert!(
            matches!(r, Err(Error::LeaseNotFound { id }) if id == grant.id.0),
            "{r:?}"
        );
    }
}

/// Many watches and many kept-alive leases of one backend share one watch stream and
/// one keep-alive stream, and every watch receives its change.
#[tokio::test]
#[ignore = "needs etcd (./scripts/test.sh runs it)"]
async fn watches_and_keep_alives_share_one_stream_each() {
    let Some(config) = common::etcd_config() else {
        return;
    };
    let b = EtcdBackend::connect(config).await.unwrap();
    let ns = format!(
        "faults/shared/{}-{:?}/",
        std::process::id(),
        std::time::SystemTime::now()
    );
    let mut watches = Vec::new();
    for i in 0..200 {
        watches.push(
            b.watch(WatchRequest::key(format!("{ns}{i}")))
                .await
                .unwrap(),
        );
    }
    let mut leases = Vec::new();
    for _ in 0..50 {
        leases.push(b.lease_grant(30).await.unwrap().id);
    }
    for id in &leases {
        assert_eq!(b.lease_keep_alive(*id).await.unwrap(), 30);
    }
    for i in 0..200 {
        b.put(format!("{ns}{i}"), "v").await.unwrap();
    }
    let mut keys = HashSet::new();
    for w in &mut watches {
        let r = next(w).await.unwrap();
        keys.insert(r.events[0].kv.key.clone());
    }
    assert_eq!(keys.len(), 200);
    let stats = b.stream_stats();
    assert_eq!(stats.watch_streams, 1, "{stats:?}");
    assert_eq!(stats.keep_alive_streams, 1, "{stats:?}");
    for id in leases {
        b.lease_revoke(id).await.unwrap();
    }
}

/// A consumer that stops reading while more than a buffer's worth of revisions
/// arrive holds up nobody: another watch on the same stream gets every change as
/// it happens, the stalled watch is cut (counted in the stats), and once its
/// consumer reads again it gets every revision once, in order, with no gap.
#[tokio::test]
#[ignore = "needs etcd (./scripts/test.sh runs it)"]
async fn a_stalled_consumer_holds_up_nobody_and_misses_nothing() {
    let Some(config) = common::etcd_config() else {
        return;
    };
    let b = EtcdBackend::connect(config).await.unwrap();
    let ns = format!(
        "faults/stall/{}-{:?}/",
        std::process::id(),
        std::time::SystemTime::now()
    );
    let mut slow = b.watch(WatchRequest::prefix(ns.clone())).await.unwrap();
    let mut brisk = b.watch(WatchRequest::prefix(ns.clone())).await.unwrap();
    let writes = 1500;
    let mut revisions = Vec::new();
    for i in 0..writes {
        revisions.push(b.put(format!("{ns}k"), format!("{i}")).await.unwrap());
        // The brisk consumer keeps up as the writes happen.
        let r = next(&mut brisk).await.unwrap();
        assert_eq!(
            r.revision, revisions[i],
            "the brisk watch fell behind or skipped"
        );
    }
    assert!(
        b.stream_stats().watch_stalls >= 1,
        "the stalled watch was never cut: {:?}",
        b.stream_stats()
    );
    for (i, want) in revisions.iter().enumerate() {
        let r = next(&mut slow).await.unwrap();
        assert_eq!(
            r.revision, *want,
            "the stalled watch lost or repeated revision #{i}"
        );
        assert_eq!(r.events[0].kv.value, format!("{i}").into_bytes());
    }
}

/// Connecting to an address where nothing listens fails in time with a retryable error.
#[tokio::test]
#[ignore = "needs etcd (./scripts/test.sh runs it)"]
async fn connect_to_nothing_fails_retryably() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut config =
        coordkit_etcd::EtcdConfig::with_endpoints([format!("http://127.0.0.1:{port}")]);
    config.connect_timeout = Duration::from_secs(1);
    let err = EtcdBackend::connect(config).await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
}

/// A lock holder cut off from etcd (etcd restarted where the holder cannot reach
/// it) reports the lock lost at its local deadline, while etcd still has the lease;
/// once etcd expires it, another coordinator takes the lock, and the old holder's
/// fenced write is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs etcd (./scripts/test.sh runs it)"]
async fn lock_holder_cut_off_from_etcd_reports_loss_before_etcd_expires_it() {
    if !etcd_binary_available() {
        return;
    }
    let ttl = Duration::from_secs(3);
    let mut etcd = EtcdProcess::start();
    let holder = coordkit::Coordinator::new(std::sync::Arc::new(
        EtcdProcess::connect_to(etcd.client_port).await,
    ));
    let guard = holder.lock().acquire("x", ttl).await.unwrap();
    let lease = guard.session().lease();
    let hidden_port = etcd.hide();
    let other = coordkit::Coordinator::new(std::sync::Arc::new(
        EtcdProcess::connect_to(hidden_port).await,
    ));
    let why = tokio::time::timeout(PATIENCE, guard.lost())
        .await
        .expect("the holder noticed");
    assert_eq!(why, coordkit::OwnershipLost::SessionLost);
    assert!(guard.is_expired());
    other
        .backend()
        .lease_time_to_live(lease)
        .await
        .expect("etcd still has the lease when the holder reports the loss");
    let next = tokio::time::timeout(PATIENCE, other.lock().acquire("x", ttl))
        .await
        .expect("the lock is taken over once etcd expires the lease")
        .unwrap();
    assert!(next.fencing_token() > guard.fencing_token());
    let fenced = coordkit::Txn::new()
        .when([guard.compare()])
        .and_then([coordkit::PutRequest::new("fenced", "stale holder")]);
    assert!(!other.backend().txn(fenced).await.unwrap().succeeded);
    next.unlock().await.unwrap();
}

/// A config watch whose history etcd compacted while it was disconnected rereads
/// and delivers the current state, marked as a resync, then goes on live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs etcd (./scripts/test.sh runs it)"]
async fn config_watch_resyncs_after_etcd_compacted_while_disconnected() {
    if !etcd_binary_available() {
        return;
    }
    let mut etcd = EtcdProcess::start();
    let coordinator = coordkit::Coordinator::new(std::sync::Arc::new(
        EtcdProcess::connect_to(etcd.client_port).await,
    ));
    let config = coordinator.config();
    config.set("r/gone", &0).await.unwrap();
    let mut watcher = config.watch_prefix::<i32>("r/").await.unwrap();
    let first = config.set("r/a", &1).await.unwrap();
    let event = tokio::time::timeout(PATIENCE, watcher.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!((event.version, event.resync), (first, false));

    let hidden_port = etcd.hide();
    {
        let other = coordkit::Coordinator::new(std::sync::Arc::new(
            EtcdProcess::connect_to(hidden_port).await,
        ));
        let config = other.config();
        config.set("r/a", &2).await.unwrap();
        config.set("r/b", &1).await.unwrap();
        config.delete("r/gone").await.unwrap();
        let now = other.backend().current_revision().await.unwrap();
        other.backend().compact(now).await.unwrap();
    }
    etcd.kill();
    etcd.restart_on(etcd.client_port);

    let mut resynced = Vec::new();
    for _ in 0..3 {
        let e = tokio::time::timeout(PATIENCE, watcher.next())
            .await
            .expect("a resync event")
            .expect("open");
        match e {
            Ok(e) => resynced.push((e.kind, e.key, e.value, e.resync)),
            // Reconnecting may surface a transient store error first.
            Err(err) => assert!(err.is_retryable(), "{err:?}"),
        }
    }
    while resynced.len() < 3 {
        let e = tokio::time::timeout(PATIENCE, watcher.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        resynced.push((e.kind, e.key, e.value, e.resync));
    }
    use coordkit::ConfigEventKind::{Delete, Put};
    assert_eq!(
        resynced,
        [
            (Put, "r/a".to_string(), Some(2), true),
            (Put, "r/b".to_string(), Some(1), true),
            (Delete, "r/gone".to_string(), None, true),
        ]
    );
    let live = config.set("r/a", &3).await.unwrap();
    let e = tokio::time::timeout(PATIENCE, watcher.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!((e.version, e.value, e.resync), (live, Some(3), false));
}

async fn wait_for_instance(backend: &EtcdBackend, key: &str, present: bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Ok(kv) = backend.get(key.to_string()).await {
            if kv.is_some() == present {
                return;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{key} never became present={present}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A registration whose lease `etcdctl lease revoke` ends is back on a new lease.
#[tokio::test]
#[ignore = "needs etcd (./scripts/test.sh runs it)"]
async fn registration_returns_after_etcdctl_revokes_its_lease() {
    let Some(config) = common::etcd_config() else {
        return;
    };
    let endpoints = config.endpoints.join(",");
    let coordinator = coordkit_etcd::connect(config.clone()).await.unwrap();
    let coordinator = coordkit::Coordinator::builder(coordinator.backend().clone())
        .namespace(format!("faults/registry/{}/", std::process::id()))
        .build()
        .unwrap();
    let info = coordkit::ServiceInfo::new("i-1", "api", "127.0.0.1", 8080);
    let reg = coordinator
        .registry()
        .register(info.clone(), Duration::from_secs(5))
        .await
        .unwrap();
    let old = coordinator
        .backend()
        .get(reg.key().to_string())
        .await
        .unwrap()
        .unwrap()
        .lease
        .unwrap();
    let status = tokio::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg("--endpoints")
        .arg(&endpoints)
        .args(["lease", "revoke", &old.to_string()])
        .status()
        .await
        .expect("etcdctl runs");
    assert!(status.success());
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let kv = coordinator
            .backend()
            .get(reg.key().to_string())
            .await
            .unwrap();
        if kv.is_some_and(|kv| kv.lease.is_some_and(|l| l != old)) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never re-registered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        coordinator.registry().discover("api").await.unwrap(),
        [info]
    );
    reg.deregister().await.unwrap();
}

/// etcd restarted with its data lost (a fresh member on the same address): the
/// registration notices its lease is gone and registers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs etcd (./scripts/test.sh runs it)"]
async fn registration_returns_after_etcd_loses_its_data() {
    if !etcd_binary_available() {
        return;
    }
    let mut etcd = EtcdProcess::start();
    let coordinator = coordkit::Coordinator::new(std::sync::Arc::new(
        EtcdProcess::connect_to(etcd.client_port).await,
    ));
    let info = coordkit::ServiceInfo::new("i-1", "api", "127.0.0.1", 8080);
    let reg = coordinator
        .registry()
        .register(info.clone(), Duration::from_secs(3))
        .await
        .unwrap();
    etcd.kill();
    std::fs::remove_dir_all(etcd.dir.join("data")).unwrap();
    etcd.restart_on(etcd.client_port);
    let observer = EtcdProcess::connect_to(etcd.client_port).await;
    wait_for_instance(&observer, reg.key(), true).await;
    let mut states = reg.watch_state();
    tokio::time::timeout(
        PATIENCE,
        states.wait_for(|s| *s == coordkit::RegistrationState::Registered),
    )
    .await
    .expect("registered again")
    .unwrap();
    let key = reg.key().to_string();
    reg.deregister().await.unwrap();
    wait_for_instance(&observer, &key, false).await;
}

/// A service starting while etcd is down: `connect_lazily` gives a backend, a
/// ConfigManager with a snapshot file serves the snapshot (not the default),
/// and once etcd answers again it catches up with the store's newer value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs etcd (./scripts/test.sh runs it)"]
async fn config_manager_starts_from_its_snapshot_while_etcd_is_down() {
    let etcd = EtcdProcess::start();
    let up = Arc::new(EtcdProcess::connect_to(etcd.client_port).await);
    let config = coordkit::Coordinator::new(up.clone()).config();
    config.set("prod/shop/limit", &5u32).await.unwrap();
    let path = std::env::temp_dir().join(format!(
        "coordkit-etcd-snapshot-{}.json",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&path);
    let first = coordkit::ConfigManager::builder(&config, "prod", "shop", "limit", 1u32)
        .snapshot(&path)
        .start()
        .await
        .unwrap();
    assert_eq!(*first.current(), 5);
    first.stop();
    let newer = config.set("prod/shop/limit", &7u32).await.unwrap();
    drop(config);
    // Paused, not killed: it keeps its port (a restart could find it taken by
    // another test), and nothing answers.
    etcd.signal("STOP");
    // The restarted service: etcd unreachable.
    let mut lazy = EtcdConfig::with_endpoints([etcd.endpoint()]);
    lazy.connect_timeout = Duration::from_millis(500);
    lazy.request_timeout = Duration::from_millis(500);
    let backend =
        Arc::new(EtcdBackend::connect_lazily(lazy).expect("a lazy backend needs no etcd"));
    let restarted = coordkit::Coordinator::new(backend);
    let manager =
        coordkit::ConfigManager::builder(&restarted.config(), "prod", "shop", "limit", 1u32)
            .snapshot(&path)
            .start()
            .await
            .unwrap();
    assert_eq!(
        *manager.current(),
        5,
        "with etcd down the snapshot is served, not the default"
    );
    assert!(
        manager.last_error().is_some(),
        "the store error is reported"
    );
    etcd.signal("CONT");
    let mut caught_up = false;
    for _ in 0..1200 {
        if *manager.current() == 7 {
            caught_up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        caught_up,
        "the manager catches up once etcd is up (now {})",
        manager.current()
    );
    assert_eq!(manager.version(), newer);
    let _ = std::fs::remove_file(&path);
}

/// One endpoint, and etcd restarting: a request refused before it was sent (no
/// connection) is tried again under the retry policy inside the backend, and
/// lands once etcd is back — no backoff of the caller's own needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs etcd (./scripts/test.sh runs it)"]
async fn a_request_refused_before_it_was_sent_is_retried_until_etcd_is_back() {
    let mut etcd = EtcdProcess::start();
    let port = etcd.client_port;
    let backend = EtcdProcess::connect_to(port).await;
    backend.put("before", "1").await.unwrap();
    etcd.kill();
    // Until the client has seen the connection close, a request may still go
    // out on it (and fail as sent): wait until a read is refused before sending.
    let mut refused = false;
    for _ in 0..100 {
        match backend.get("before").await {
            Err(Error::Unavailable { reason, .. }) if reason.contains("connect") => {
                refused = true;
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    assert!(
        refused,
        "reads to a killed etcd must be refused before sending"
    );
    let restart = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(800));
        etcd.restart_on(port);
        etcd
    });
    let put = backend.put("after", "2").await;
    let _etcd = restart.join().unwrap();
    put.expect("a put never sent is retried until etcd is back");
    let kv = backend.get("after").await.unwrap().expect("written");
    assert_eq!(kv.value, b"2");
}

/// After its stream broke, an idle watch of one key whose key did not change
/// resumes just after a read of the key, not from the old revision it was
/// owed (etcd reads a resumed watch's history from that revision, 512 watches
/// a pass): a compaction past the old revision costs it nothing. A watch of a
/// key that changed, and one of a key created and deleted meanwhile, still get
/// every change — or `Compacted` when that history is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs etcd (./scripts/test.sh runs it)"]
async fn idle_watches_of_unchanged_keys_resume_near_the_present() {
    if !etcd_binary_available() {
        return;
    }
    let mut etcd = EtcdProcess::start();
    let b = EtcdProcess::connect_to(etcd.client_port).await;
    for compact in [false, true] {
        let round = if compact { "c" } else { "n" };
        let (same, changed, flash) = (
            format!("{round}/same"),
            format!("{round}/changed"),
            format!("{round}/flash"),
        );
        b.put(same.as_str(), "1").await.unwrap();
        b.put(changed.as_str(), "1").await.unwrap();
        let mut w_same = b.watch(WatchRequest::key(same.as_str())).await.unwrap();
        let mut w_changed = b.watch(WatchRequest::key(changed.as_str())).await.unwrap();
        let mut w_flash = b.watch(WatchRequest::key(flash.as_str())).await.unwrap();
        let before = b.stream_stats();
        // Changes the backend cannot see: etcd serves its data on another port.
        let hidden_port = etcd.hide();
        let other = EtcdProcess::connect_to(hidden_port).await;
        let changed_at = other.put(changed.as_str(), "2").await.unwrap();
        let created_at = other.put(flash.as_str(), "x").await.unwrap();
        assert!(other.delete(flash.as_str()).await.unwrap());
        let deleted_at = other.current_revision().await.unwrap();
        for i in 0..5 {
            other.put(format!("{round}/noise/{i}"), "n").await.unwrap();
        }
        let now = other.current_revision().await.unwrap();
        if compact {
            other.compact(now).await.unwrap();
        }
        drop(other);
        etcd.kill();
        etcd.restart_on(etcd.client_port);
        // The stream opens again only after the read that brings idle watches
        // forward: a write before that read would show the key changed and
        // (rightly) keep its watch's old revision.
        stream_reopened(&b, before).await;
        let writer = EtcdProcess::connect_to(etcd.client_port).await;
        let fresh = writer.put(same.as_str(), "2").await.unwrap();
        // The unchanged key's watch: straight to the fresh write, in both rounds.
        assert_eq!(next(&mut w_same).await.unwrap().revision, fresh);
        if compact {
            for w in [&mut w_changed, &mut w_flash] {
                expect_compacted(w, now).await;
            }
        } else {
            assert_eq!(next(&mut w_changed).await.unwrap().revision, changed_at);
            assert_eq!(next(&mut w_flash).await.unwrap().revision, created_at);
            assert_eq!(next(&mut w_flash).await.unwrap().revision, deleted_at);
        }
        // Only the unchanged key's: the changed one and the absent one keep
        // their revisions.
        assert_eq!(
            b.stream_stats().watches_brought_forward - before.watches_brought_forward,
            1,
            "the unchanged key's watch was brought forward, and only it"
        );
    }
}

/// After a reconnect, a watch of one key that changed exactly once meanwhile
/// (one put in the same life of the key as the last change it delivered) gets
/// that put from a read and resumes near the present: even with etcd's
/// history compacted past it (round "c"). A key changed twice, or deleted and
/// created again, still gets every change from the history (or `Compacted`).
/// More watches than one chunk are read and created a chunk at a time; a put
/// to every key made while they are (round "n") reaches each watch once, after
/// the one it missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs etcd (./scripts/test.sh runs it)"]
async fn watches_of_keys_changed_once_resume_from_a_read() {
    if !etcd_binary_available() {
        return;
    }
    // More than one chunk (1,024), so that later chunks are read with the
    // stream up and the round's fresh writes under way.
    const N: usize = 1_100;
    let mut etcd = EtcdProcess::start();
    let b = Arc::new(EtcdProcess::connect_to(etcd.client_port).await);
    for compact in [true, false] {
        let round = if compact { "c" } else { "n" };
        // Each key in a directory of its own, so that none is grouped.
        let keys: Vec<String> = (0..N).map(|i| format!("{round}/once/{i}/v")).collect();
        let (twice, reborn) = (format!("{round}/twice"), format!("{round}/reborn"));
        let mut watches = Vec::new();
        for k in keys.iter().chain([&twice, &reborn]) {
            b.put(k.as_str(), "0").await.unwrap();
            watches.push(b.watch(WatchRequest::key(k.as_str())).await.unwrap());
        }
        // Every watch delivers a change: the key's life and version are known.
        for (k, w) in keys.iter().chain([&twice, &reborn]).zip(watches.iter_mut()) {
            let at = b.put(k.as_str(), "1").await.unwrap();
            assert_eq!(next(w).await.unwrap().revision, at);
        }
        let before = b.stream_stats();
        let hidden_port = etcd.hide();
        let other = EtcdProcess::connect_to(hidden_port).await;
        let mut missed = Vec::new();
        for k in &keys {
            missed.push(other.put(k.as_str(), "2").await.unwrap());
        }
        let twice_at = [
            other.put(twice.as_str(), "2").await.unwrap(),
            other.put(twice.as_str(), "3").await.unwrap(),
        ];
        assert!(other.delete(reborn.as_str()).await.unwrap());
        let reborn_deleted = other.current_revision().await.unwrap();
        let reborn_at = other.put(reborn.as_str(), "2").await.unwrap();
        let now = other.current_revision().await.unwrap();
        if compact {
            other.compact(now).await.unwrap();
        }
        drop(other);
        etcd.kill();
        etcd.restart_on(etcd.client_port);
        stream_reopened(&b, before).await;
        // Round "n": one more put to every key while the chunks are read.
        let fresh = (!compact).then(|| {
            let (b, keys) = (b.clone(), keys.clone());
            tokio::spawn(async move {
                let mut at = Vec::new();
                for k in &keys {
                    at.push(b.put(k.as_str(), "3").await.unwrap());
                }
                at
            })
        });
        let mut watches = watches.into_iter();
        for (i, w) in watches.by_ref().take(N).enumerate() {
            let mut w = w;
            let got = next(&mut w).await.unwrap();
            assert_eq!(got.revision, missed[i], "key {i}: the put it missed");
            assert_eq!(got.events.len(), 1);
            assert_eq!(got.events[0].kv.value, b"2");
            if !compact {
                let got = next(&mut w).await.unwrap();
                assert_eq!(
                    got.events[0].kv.value, b"3",
                    "key {i}: then the fresh put, once"
                );
            }
        }
        let fresh_at = match fresh {
            Some(task) => task.await.unwrap(),
            None => Vec::new(),
        };
        assert!(fresh_at.iter().all(|&at| at > now));
        let (mut w_twice, mut w_reborn) = (watches.next().unwrap(), watches.next().unwrap());
        if compact {
            for w in [&mut w_twice, &mut w_reborn] {
                expect_compacted(w, now).await;
            }
        } else {
            for at in twice_at {
                assert_eq!(next(&mut w_twice).await.unwrap().revision, at);
            }
            assert_eq!(next(&mut w_reborn).await.unwrap().revision, reborn_deleted);
            assert_eq!(next(&mut w_reborn).await.unwrap().revision, reborn_at);
        }
        let stats = b.stream_stats();
        assert_eq!(
            stats.watches_grouped, before.watches_grouped,
            "none grouped"
        );
        let brought = stats.watches_brought_forward - before.watches_brought_forward;
        if compact {
            assert_eq!(brought, N as u64, "every key changed once, and only those");
        } else {
            // The first chunk is read before the stream opens, before the
            // fresh puts; later ones may find a key changed twice.
            assert!(
                brought >= 1024 && brought <= N as u64,
                "brought forward: {brought}"
            );
        }
    }
}

/// After a reconnect, the watches of one key of a directory holding at least 32
/// of them (and few other keys) come back as one watch of the directory, read a
/// page at a time: each still gets every change of its key once, in order — a
/// put it missed, two it missed, a delete and a new create, puts made while the
/// pages are read, later puts; one closed gets nothing more; one whose consumer falls a
/// full buffer behind leaves the group and catches up on its own. With the
/// history compacted past the revision owed (round "c"), the watches of keys
/// changed more than once are told `Compacted` and the others go on. The
/// watches of a directory with five times as many keys as watches are not
/// grouped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs etcd (./scripts/test.sh runs it)"]
async fn watches_of_one_directory_come_back_as_one_watch() {
    if !etcd_binary_available() {
        return;
    }
    // Three pages.
    const PAGE: usize = 500;
    const N: usize = 1_200;
    const SPARSE: usize = 40;
    let mut etcd = EtcdProcess::start();
    let b = Arc::new(EtcdProcess::connect_to(etcd.client_port).await);
    for compact in [false, true] {
        let round = if compact { "c" } else { "n" };
        let keys: Vec<String> = (0..N).map(|i| format!("{round}/dir/{i:04}")).collect();
        let sparse: Vec<String> = (0..SPARSE * 5)
            .map(|i| format!("{round}/sparse/{i:03}"))
            .collect();
        let mut watches = Vec::new();
        for k in &sparse {
            b.put(k.as_str(), "0").await.unwrap();
        }
        let mut sparse_watches = Vec::new();
        for k in sparse.iter().take(SPARSE) {
            sparse_watches.push(b.watch(WatchRequest::key(k.as_str())).await.unwrap());
        }
        for k in &keys {
            b.put(k.as_str(), "0").await.unwrap();
            watches.push(b.watch(WatchRequest::key(k.as_str())).await.unwrap());
        }
        // Values of 48 KiB: each page takes a while to read.
        let big = "1".repeat(48 << 10);
        for (k, w) in keys.iter().zip(watches.iter_mut()) {
            let at = b.put(k.as_str(), big.as_str()).await.unwrap();
            assert_eq!(next(w).await.unwrap().revision, at);
        }
        let before = b.stream_stats();
        let hidden_port = etcd.hide();
        let other = EtcdProcess::connect_to(hidden_port).await;
        // 0..40 once, 40..45 twice, 45 deleted and created again, the rest untouched.
        let mut missed: Vec<Vec<(i64, String)>> = vec![Vec::new(); N];
        for (i, k) in keys.iter().enumerate().take(45) {
            missed[i].push((other.put(k.as_str(), "2").await.unwrap(), "2".into()));
            if i >= 40 {
                missed[i].push((other.put(k.as_str(), "3").await.unwrap(), "3".into()));
            }
        }
        assert!(other.delete(keys[45].as_str()).await.unwrap());
        missed[45].push((other.current_revision().await.unwrap(), String::new()));
        missed[45].push((other.put(keys[45].as_str(), "2").await.unwrap(), "2".into()));
        let now = other.current_revision().await.unwrap();
        if compact {
            other.compact(now).await.unwrap();
        }
        drop(other);
        etcd.kill();
        etcd.restart_on(etcd.client_port);
        // Puts to the keys of the later pages while the hub comes back: some
        // land after the first page's read and before their own page's, and
        // are held for their watches meanwhile.
        let writer = EtcdProcess::connect_to(etcd.client_port).await;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writes = tokio::spawn({
            let (keys, stop) = (keys.clone(), stop.clone());
            async move {
                let mut written = Vec::new();
                for (n, i) in (PAGE..N).cycle().enumerate() {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    let value = format!("w{n}");
                    written.push((
                        i,
                        writer.put(keys[i].as_str(), value.clone()).await.unwrap(),
                        value,
                    ));
                }
                written
            }
        });
        stream_reopened(&b, before).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for (i, at, value) in writes.await.unwrap() {
            missed[i].push((at, value));
        }
        // The last watch is closed; then a put to every key.
        drop(watches.pop());
        for (i, k) in keys.iter().enumerate() {
            let at = b.put(k.as_str(), format!("f{i}")).await.unwrap();
            missed[i].push((at, format!("f{i}")));
        }
        for (i, w) in watches.iter_mut().enumerate() {
            if compact && (40..46).contains(&i) {
                expect_compacted(w, now).await;
                continue;
            }
            for (at, value) in &missed[i] {
                let got = next(w).await.unwrap();
                assert_eq!(got.revision, *at, "key {i}");
                assert_eq!(got.events[0].kv.value, value.as_bytes(), "key {i}");
            }
        }
        // The closed one counts if its page was read before it closed.
        let grouped = b.stream_stats().watches_grouped - before.watches_grouped;
        assert!(
            (N as u64 - 7..=N as u64 - 6).contains(&grouped),
            "every watch of the directory grouped but those its read cannot settle: {grouped}"
        );
        for (k, w) in sparse.iter().zip(sparse_watches.iter_mut()) {
            let at = b.put(k.as_str(), "s").await.unwrap();
            assert_eq!(next(w).await.unwrap().revision, at, "{k}");
        }
        // A consumer that falls behind: key 0's watch, not read while its
        // key is written more than a buffer's worth of times.
        let stalls = b.stream_stats().watch_stalls;
        let mut written = Vec::new();
        for n in 0..1_100 {
            written.push(b.put(keys[0].as_str(), format!("s{n}")).await.unwrap());
        }
        for at in written {
            assert_eq!(next(&mut watches[0]).await.unwrap().revision, at);
        }
        assert!(b.stream_stats().watch_stalls > stalls, "the watch was cut");
        // The others still hear their keys.
        let at = b.put(keys[1].as_str(), "5").await.unwrap();
        assert_eq!(next(&mut watches[1]).await.unwrap().revision, at);
    }
}
