//! A 3-member etcd cluster on free loopback ports with temporary data dirs, each
//! member behind its own [`Proxy`], with signals to stop, continue, kill and
//! restart a member.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::proxy::Proxy;

/// The `etcd` binary to run: `$COORD_ETCD_BIN`, else `etcd` on `PATH`.
pub fn etcd_bin() -> String {
    std::env::var("COORD_ETCD_BIN").unwrap_or_else(|_| "etcd".to_string())
}

/// The `etcdctl` binary: `$COORD_ETCDCTL_BIN`, else `etcdctl` on `PATH`.
pub fn etcdctl_bin() -> String {
    std::env::var("COORD_ETCDCTL_BIN").unwrap_or_else(|_| "etcdctl".to_string())
}

/// Whether an etcd binary can be run here.
pub fn etcd_available() -> bool {
    Command::new(etcd_bin())
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// One member: its process, ports and proxy.
pub struct Member {
    /// The member's name in the cluster (`m0`, `m1`, `m2`).
    pub name: String,
    /// The port etcd serves clients on (direct, not through the proxy).
    pub client_port: u16,
    peer_port: u16,
    dir: PathBuf,
    child: Option<Child>,
    /// The proxy in front of the client port; clients under test go through it.
    pub proxy: Proxy,
}

impl Member {
    /// The member's own client URL (bypassing the proxy).
    pub fn direct_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    fn signal(&self, sig: i32) {
        if let Some(pid) = self.pid() {
            // SAFETY: kill(2) on a child process id this struct owns.
            unsafe {
                libc::kill(pid, sig);
            }
        }
    }

    /// SIGSTOP: the member stops answering, its sockets stay open.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// SIGCONT after [`Member::pause`].
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    /// SIGKILL, and reap the process.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether the process is running (not killed).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

/// A running cluster; dropping it kills every member and removes the data dirs.
pub struct Cluster {
    /// The members, in start order.
    pub members: Vec<Member>,
    initial: String,
    base: PathBuf,
}

impl Cluster {
    /// Start an `n`-member cluster and wait until every member answers. A
    /// member that exits while starting (its port taken between the pick and
    /// the bind) makes it start again on other ports, up to three times.
    pub async fn start(n: usize) -> Cluster {
        for attempt in 1..=3 {
            let mut cluster = Self::launch(n).await;
            match cluster.wait_started().await {
                Ok(()) => return cluster,
                Err(i) => eprintln!(
                    "cluster start {attempt}: member {i} exited while starting; log: {}",
                    std::fs::read_to_string(cluster.members[i].dir.join("etcd.log"))
                        .unwrap_or_default()
                ),
            }
        }
        panic!("no cluster of {n} started in three attempts");
    }

    /// New members on new ports, spawned.
    async fn launch(n: usize) -> Cluster {
        let base = std::env::temp_dir().join(format!(
            "coordkit-cluster-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        let mut members = Vec::new();
        for i in 0..n {
            let client_port = free_port();
            let target: SocketAddr = ([127, 0, 0, 1], client_port).into();
            members.push(Member {
                name: format!("m{i}"),
                client_port,
                peer_port: free_port(),
                dir: base.join(format!("m{i}")),
                child: None,
                proxy: Proxy::start(target).await.expect("a proxy"),
            });
        }
        let initial = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Cluster {
            members,
            initial,
            base,
        };
        for i in 0..n {
            cluster.spawn(i, "new");
        }
        cluster
    }

    /// Wait until every member answers; `Err(i)` as soon as member `i` has
    /// exited instead.
    async fn wait_started(&mut self) -> Result<(), usize> {
        for i in 0..self.members.len() {
            for _ in 0..300 {
                let exited = self.members[i]
                    .child
                    .as_mut()
                    .is_some_and(|c| !matches!(c.try_wait(), Ok(None)));
                if exited {
                    return Err(i);
                }
                if self.etcdctl(i, &["endpoint", "health"]).await.is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        for i in 0..self.members.len() {
            self.wait_healthy(i).await;
        }
        Ok(())
    }

    fn spawn(&mut self, i: usize, state: &str) {
        let initial = self.initial.clone();
        let m = &mut self.members[i];
        std::fs::create_dir_all(&m.dir).expect("a data dir");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(m.dir.join("etcd.log"))
            .expect("a log file");
        let client = m.direct_url();
        let peer = format!("http://127.0.0.1:{}", m.peer_port);
        let child = Command::new(etcd_bin())
            .args(["--name", &m.name])
            .args(["--data-dir", &m.dir.join("data").to_string_lossy()])
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &initial])
            .args(["--initial-cluster-state", state])
            .args(["--initial-cluster-token", "coordkit-test"])
            .args(["--heartbeat-interval", "100", "--election-timeout", "1000"])
            .arg("--unsafe-no-fsync")
            .stdout(log.try_clone().expect("a log file"))
            .stderr(log)
            .spawn()
            .expect("etcd starts ($COORD_ETCD_BIN or etcd on PATH)");
        m.child = Some(child);
    }

    /// Restart a killed member on its data dir.
    pub async fn restart(&mut self, i: usize) {
        assert!(!self.members[i].is_running(), "member {i} is running");
        self.spawn(i, "existing");
        self.wait_healthy(i).await;
    }

    /// Wait until member `i` answers a linearizable read (it has a leader).
    pub async fn wait_healthy(&self, i: usize) {
        for _ in 0..300 {
            if self.etcdctl(i, &["endpoint", "health"]).await.is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "member {i} not healthy in 30 s; log: {}",
            std::fs::read_to_string(self.members[i].dir.join("etcd.log")).unwrap_or_default()
        );
    }

    /// Run etcdctl against member `i` directly; its stdout, or `None` on failure.
    pub async fn etcdctl(&self, i: usize, args: &[&str]) -> Option<String> {
        let out = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::process::Command::new(etcdctl_bin())
                .env("ETCDCTL_API", "3")
                .args(["--endpoints", &self.members[i].direct_url()])
                .args(["--command-timeout", "2s"])
                .args(args)
                .kill_on_drop(true)
                .output(),
        )
        .await
        .ok()?
        .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The index of the current leader, as the running members report it.
    pub async fn leader(&self) -> Option<usize> {
        let mut ids = Vec::new();
        let mut leader = None;
        for i in 0..self.members.len() {
            let status = if self.members[i].is_running() {
                self.etcdctl(i, &["endpoint", "status", "-w", "json"]).await
            } else {
                None
            };
            let member_id = status
                .as_deref()
                .and_then(|s| number_after(s, "\"member_id\":"));
            if let Some(l) = status
                .as_deref()
                .and_then(|s| number_after(s, "\"leader\":"))
            {
                leader = Some(l);
            }
            ids.push(member_id);
        }
        let leader = leader?;
        ids.iter().position(|id| *id == Some(leader))
    }

    /// The proxy URLs of every member: what a client under test is given.
    pub fn proxy_urls(&self) -> Vec<String> {
        self.members.iter().map(|m| m.proxy.url()).collect()
    }
}

fn number_after(s: &str, tag: &str) -> Option<u64> {
    let start = s.find(tag)? + tag.len();
    let digits: String = s[start..]
        .chars()
        .skip_while(|c| c.is_whitespace())
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            m.resume();
            m.kill();
        }
        let _ = std::fs::remove_dir_all(&self.base);
    }
}
