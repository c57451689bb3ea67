//! coordkit's locks and elections against etcd's own implementation of the same
//! protocol: the real `etcdctl lock` and `etcdctl elect` (Go `concurrency` package),
//! in both directions.

mod common;

use std::process::Stdio;
use std::time::Duration;

use coordkit::{BackendExt, Coordinator, Error, QueueName, RangeRequest};
use futures::StreamExt;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

const PATIENCE: Duration = Duration::from_secs(60);

/// A running etcdctl with its output lines.
struct Etcdctl {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Etcdctl {
    fn spawn(endpoints: &str, args: &[&str]) -> Self {
        let mut child = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg("--endpoints")
            .arg(endpoints)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("etcdctl runs (Debian package etcd-client; ./scripts/test.sh installs it)");
        let lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        Etcdctl { child, lines }
    }

    async fn line(&mut self, what: &str) -> String {
        tokio::time::timeout(PATIENCE, self.lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("etcdctl printed nothing within {PATIENCE:?} ({what})"))
            .expect("reading etcdctl's output")
            .unwrap_or_else(|| panic!("etcdctl ended before printing {what}"))
    }

    fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("etcdctl status").is_none()
    }

    /// Ctrl-C: etcdctl unlocks / resigns and exits.
    async fn interrupt(&mut self) {
        let pid = self.child.id().expect("running").to_string();
        let sent = Command::new("kill").args(["-INT", &pid]).status().await;
        assert!(sent.expect("kill runs").success());
        let status = tokio::time::timeout(PATIENCE, self.child.wait())
            .await
            .expect("etcdctl exits on SIGINT")
            .expect("etcdctl status");
        assert!(status.success(), "etcdctl exited with {status}");
    }
}

struct Fixture {
    coordinator: Coordinator,
    endpoints: String,
    name: String,
}

async fn fixture(case: &str) -> Option<Fixture> {
    let config = common::etcd_config()?;
    let endpoints = config.endpoints.join(",");
    let coordinator = coordkit_etcd::connect(config).await.expect("connect");
    let name = format!(
        "interop-{case}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    Some(Fixture {
        coordinator,
        endpoints,
        name,
    })
}

async fn keys(c: &Coordinator, prefix: &str) -> Vec<coordkit::KeyValue> {
    c.backend()
        .range(RangeRequest::prefix(prefix))
        .await
        .expect("range")
        .kvs
}

async fn wait_for_keys(c: &Coordinator, prefix: &str, n: usize) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while keys(c, prefix).await.len() != n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{prefix} never had {n} keys"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `etcdctl lock coord/lock/x` holds: coordkit's `x` is a conflict, then queues behind
/// it and gets the lock when etcdctl unlocks, with a larger fencing token.
#[tokio::test]
#[ignore = "needs etcd (./scripts/test.sh runs it)"]
async fn etcdctl_lock_excludes_coord_and_hands_over() {
    let Some(f) = fixture("lock-a").await else {
        return;
    };
    let etcd_name = format!("coord/lock/{}", f.name);
    let mut etcdctl = Etcdctl::spawn(&f.endpoints, &["lock", &etcd_name]);
    let etcd_key = etcdctl.line("the key it holds").await;
    assert!(etcd_key.starts_with(&format!("{etcd_name}/")), "{etcd_key}");
    let etcd_rev = f
        .coordinator
        .backend()
        .get(etcd_key.clone())
        .await
        .unwrap()
        .unwrap()
        .create_revision;

    let ttl = Duration::from_secs(10);
    let err = f
        .coordinator
        .lock()
        .try_acquire(&f.name, ttl)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::LockConflict { .. }), "{err:?}");
    assert_eq!(
        keys(&f.coordinator, &format!("{etcd_name}/")).await.len(),
        1
    );

    let waiting = {
        let (c, name) = (f.coordinator.clone(), f.name.clone());
        tokio::spawn(async move { c.lock().acquire(&name, ttl).await })
    };
    wait_for_keys(&f.coordinator, &format!("{etcd_name}/"), 2).await;
    assert!(!waiting.is_finished(), "coord took a lock etcdctl holds");
    // Inspection sees etcdctl's key as the holder, with its lease's time left.
    let queue = f
        .coordinator
        .lock()
        .holders_and_waiters(&f.name)
        .await
        .unwrap();
    assert_eq!(queue.len(), 2, "{queue:?}");
    assert_eq!(queue[0].key, etcd_key, "etcdctl holds: {queue:?}");
    assert_eq!(queue[0].fencing_token, etcd_rev);
    assert!(queue[0].ttl_left.is_some(), "etcdctl's lease: {queue:?}");
    etcdctl.interrupt().await;
    let guard = tokio::time::timeout(PATIENCE, waiting)
        .await
        .expect("coord got the lock after etcdctl unlocked")
        .unwrap()
        .unwrap();
    assert!(guard.fencing_token() > etcd_rev);
    guard.unlock().await.unwrap();
    f.coordinator.close().await.unwrap();
}

/// The prefix a Go service gives `concurrency.NewMutex(s, "/my-lock/")` (etcd's
/// own example), outside any coordkit namespace: `etcdctl lock /my-lock/` holds it,
/// and coordkit's lock on `QueueName::etcd_prefix("/my-lock/")` is a conflict, then
/// queues behind it (key `/my-lock//<lease>`) and takes it when etcdctl unlocks.
#[tokio::test]
#[ignore = "needs etcd (./scripts/test.sh runs it)"]
async fn etcdctl_lock_on_a_go_prefix_excludes_coord_and_hands_over() {
    let Some(f) = fixture("go-prefix-a").await else {
        return;
    };
    let pfx = format!("/{}/", f.name);
    let queue = format!("{pfx}/");
    let name = QueueName::etcd_prefix(pfx.clone());
    let mut etcdctl = Etcdctl::spawn(&f.endpoints, &["lock", &pfx]);
    let etcd_key = etcdctl.line("the key it holds").await;
    assert!(etcd_key.starts_with(&queue), "{etcd_key}");

    let ttl = Duration::from_secs(10);
    let err = f
        .coordinator
        .lock()
        .try_acquire(&name, ttl)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::LockConflict { .. }), "{err:?}");
    assert_eq!(keys(&f.coordinator, &queue).await.len(), 1, "no key left");

    let waiting = {
        let (c, name) = (f.coordinator.clone(), name.clone());
        tokio::spawn(async move { c.lock().acquire(name, ttl).await })
    };
    wait_for_keys(&f.coordinator, &queue, 2).await;
    assert!(!waiting.is_finished(), "coord took a lock etcdctl holds");
    let holders = f
        .coordinator
        .lock()
        .holders_and_waiters(&name)
        .await
        .unwrap();
    assert_eq!(holders[0].key, etcd_key, "etcdctl holds: {holders:?}");
    etcdctl.interrupt().await;
    let guard = tokio::time::timeout(PATIENCE, waiting)
        .await
        .expect("coord got the lock after etcdctl unlocked")
        .unwrap()
        .unwrap();
    assert_eq!(guard.key(), format!("{queue}{}", guard.session().lease()));
    guard.unlock().await.unwrap();
    assert!(keys(&f.coordinator, &queue).await.is_empty());
    f.coordinator.close().await.unwrap();
}

/// coordkit holds `QueueName::etcd_prefix("/my-lock/")`: `etcdctl lock /my-lock/
/// <command>` queues and runs its command only after coordkit unlocks.
#[tokio::test]
#[ignore = "needs etcd (./scripts/test.sh runs it)"]
async fn coord_lock_on_a_go_prefix_excludes_etcdctl() {
    let Some(f) = fixture("go-prefix-b").await else {
        return;
    };
    let pfx = format!("/{}/", f.name);
    let queue = format!("{pfx}/");
    let guard = f
        .coordinator
        .lock()
        .acquire(QueueName::etcd_prefix(pfx.clone()), Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(guard.key(), format!("{queue}{}", guard.session().lease()));
    let mut etcdctl = Etcdctl::spawn(&f.endpoints, &["lock", &pfx, "echo", "etcdctl-ran"]);
    wait_for_keys(&f.coordinator, &queue, 2).await;
    assert!(
        etcdctl.is_running(),
        "etcdctl went ahead while coord held the lock"
    );
    guard.unlock().await.unwrap();
    assert_eq!(etcdctl.line("its command's output").await, "etcdctl-ran");
    assert!(etcdctl.child.wait().await.unwrap().success());
    wait_for_keys(&f.coordinator, &queue, 0).await;
    f.coordinator.close().await.unwrap();
}

/// coordkit holds `x`: `etcdctl lock coord/lock/x <command>` queues and runs its
/// command only after coordkit unlocks.
#[tokio::test]
#[ignore = "needs etcd (./scripts/test.sh runs it)"]
async fn coord_lock_excludes_etcdctl() {
    let Some(f) = fixture("lock-b").await else {
        return;
    };
    let etcd_name = format!("coord/lock/{}", f.name);
    let guard = f
        .coordinator
        .lock()
        .acquire(&f.name, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(
        guard.key(),
        format!("{etcd_name}/{}", guard.session().lease())
    );
    let mut etcdctl = Etcdctl::spawn(&f.endpoints, &["lock", &etcd_name, "echo", "etcdctl-ran"]);
    wait_for_keys(&f.coordinator, &format!("{etcd_name}/"), 2).await;
    assert!(
        etcdctl.is_running(),
        "etcdctl went ahead while coord held the lock"
    );
    guard.unlock().await.unwrap();
    assert_eq!(etcdctl.line("its command's output").await, "etcdctl-ran");
    let status = etcdctl.child.wait().await.unwrap();
    assert!(status.success());
    wait_for_keys(&f.coordinator, &format!("{etcd_name}/"), 0).await;
    f.coordinator.close().await.unwrap();
}

/// coordkit leads: `etcdctl elect -l` sees coordkit's value; `etcdctl elect` queues and
/// leads after coordkit resigns, and coordkit's `leader()` and `observe()` see it.
#[tokio::test]
#[ignore = "needs etcd (./scripts/test.sh runs it)"]
async fn coord_and_etcdctl_elect_agree_on_the_leader() {
    let Some(f) = fixture("elect-a").await else {
        return;
    };
    let etcd_name = format!("coord/election/{}", f.name);
    let mut observed = f.coordinator.election().observe(&f.name).unwrap();
    assert_eq!(observed.next().await.unwrap().unwrap(), None);
    let leadership = f
        .coordinator
        .election()
        .campaign(&f.name, "coord-leader")
        .await
        .unwrap();
    let seen = observed.next().await.unwrap().unwrap().unwrap();
    assert_eq!(seen.value_str(), "coord-leader");

    let mut listener = Etcdctl::spawn(&f.endpoints, &["elect", "-l", &etcd_name]);
    assert_eq!(listener.line("the leader's key").await, leadership.key());
    assert_eq!(listener.line("the leader's value").await, "coord-leader");

    let mut candidate = Etcdctl::spawn(&f.endpoints, &["elect", &etcd_name, "etcdctl-leader"]);
    wait_for_keys(&f.coordinator, &format!("{etcd_name}/"), 2).await;
    assert!(candidate.is_running());
    leadership.resign().await.unwrap();
    let etcd_key = candidate.line("its key once elected").await;
    assert_eq!(
        candidate.line("its value once elected").await,
        "etcdctl-leader"
    );

    let leader = f
        .coordinator
        .election()
        .leader(&f.name)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (leader.key.as_str(), leader.value_str().as_str()),
        (etcd_key.as_str(), "etcdctl-leader")
    );
    let seen = observed.next().await.unwrap().unwrap().unwrap();
    assert_eq!(seen, leader);
    assert_eq!(listener.line("the new leader's key").await, etcd_key);
    assert_eq!(
        listener.line("the new leader's value").await,
        "etcdctl-leader"
    );

    candidate.interrupt().await;
    assert_eq!(observed.next().await.unwrap().unwrap(), None);
    f.coordinator.close().await.unwrap();
}

/// `etcdctl elect` leads: coordkit's campaign queues behind it and leads once etcdctl
/// resigns.
#[tokio::test]
#[ignore = "needs etcd (./scripts/test.sh runs it)"]
async fn coord_campaign_waits_for_etcdctl_leader() {
    let Some(f) = fixture("elect-b").await else {
        return;
    };
    let etcd_name = format!("coord/election/{}", f.name);
    let mut leader = Etcdctl::spawn(&f.endpoints, &["elect", &etcd_name, "etcdctl-first"]);
    leader.line("its key once elected").await;
    let current = f
        .coordinator
        .election()
        .leader(&f.name)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(current.value_str(), "etcdctl-first");
    let campaign = {
        let (c, name) = (f.coordinator.clone(), f.name.clone());
        tokio::spawn(async move { c.election().campaign(&name, "coord-second").await })
    };
    wait_for_keys(&f.coordinator, &format!("{etcd_name}/"), 2).await;
    assert!(!campaign.is_finished(), "coord led while etcdctl did");
    leader.interrupt().await;
    let leadership = tokio::time::timeout(PATIENCE, campaign)
        .await
        .expect("coord leads after etcdctl resigned")
        .unwrap()
        .unwrap();
    assert!(leadership.fencing_token() > current.fencing_token);
    let now = f
        .coordinator
        .election()
        .leader(&f.name)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(now.value_str(), "coord-second");
    leadership.resign().await.unwrap();
    f.coordinator.close().await.unwrap();
}
