//! An etcd process of a test's own, to kill and restart.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use coordkit_etcd::{EtcdBackend, EtcdConfig};

/// A private etcd: its own data dir and loopback ports. The one way the tests
/// start an etcd of their own (plain, or serving TLS).
pub struct EtcdProcess {
    pub client_port: u16,
    peer_port: u16,
    pub dir: PathBuf,
    /// `http` or `https`.
    scheme: &'static str,
    /// Flags given at every (re)start.
    always: Vec<String>,
    child: Option<Child>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Whether the `etcd` binary is here; its absence fails the test (the tests that
/// need it are `#[ignore]`d, so a plain `cargo test` does not run them).
pub fn etcd_binary_available() -> bool {
    let found = Command::new("etcd")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(
        found,
        "no etcd binary on PATH: this test needs one (./scripts/test.sh installs it)"
    );
    found
}

impl EtcdProcess {
    /// Start a fresh etcd.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Start a fresh etcd with extra flags.
    pub fn start_with(extra: &[&str]) -> Self {
        Self::start_in("http", |_| Vec::new(), extra)
    }

    /// Start a fresh etcd serving `https`: `prepare` writes what it needs into
    /// the data dir's parent (certificates) and returns the flags that name them.
    #[allow(dead_code)]
    pub fn start_tls(prepare: impl FnOnce(&std::path::Path) -> Vec<String>) -> Self {
        Self::start_in("https", prepare, &[])
    }

    fn start_in(
        scheme: &'static str,
        prepare: impl FnOnce(&std::path::Path) -> Vec<String>,
        extra: &[&str],
    ) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "coordkit-etcd-test-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).expect("a data dir");
        let always = prepare(&dir);
        let mut p = EtcdProcess {
            client_port: 0,
            peer_port: 0,
            dir,
            scheme,
            always,
            child: None,
        };
        // A port picked free may be taken before etcd binds it (another test,
        // another process): etcd then exits at once. Start again on others.
        for _ in 0..3 {
            p.client_port = free_port();
            p.peer_port = free_port();
            p.restart_with(p.client_port, extra);
            if p.wait_listening() {
                return p;
            }
            p.kill();
            let _ = std::fs::remove_dir_all(p.dir.join("data"));
        }
        panic!(
            "etcd did not start three times; its log ends:\n{}",
            p.log_tail()
        );
    }

    /// Wait until the client port takes a TCP connection (`true`), or the
    /// process exits (`false`).
    fn wait_listening(&mut self) -> bool {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.client_port));
        for _ in 0..600 {
            if !self.is_running() {
                return false;
            }
            if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
                // Someone else's listener answers too: etcd, failing to bind,
                // exits within moments.
                std::thread::sleep(Duration::from_millis(200));
                return self.is_running();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// The last lines etcd wrote to its log (`<dir>/etcd.log`).
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    pub fn endpoint(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme, self.client_port)
    }

    /// (Re)start the process on the same data dir, serving clients on `port`.
    pub fn restart_on(&mut self, port: u16) {
        self.restart_with(port, &[]);
    }

    /// (Re)start with extra etcd flags.
    pub fn restart_with(&mut self, port: u16, extra: &[&str]) {
        assert!(self.child.is_none(), "etcd is running");
        let client = format!("{}://127.0.0.1:{port}", self.scheme);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new("etcd")
            .args(["--name", "coord-fault"])
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("coord-fault={peer}")])
            .arg("--unsafe-no-fsync")
            .args(&self.always)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(self.log())
            .spawn()
            .expect("etcd starts");
        self.child = Some(child);
    }

    /// Where etcd's log goes: `<dir>/etcd.log`, appended at each (re)start.
    fn log(&self) -> Stdio {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("etcd.log"))
            .map_or_else(|_| Stdio::null(), Stdio::from)
    }

    /// Kill the process and serve the same data on another port, out of reach of
    /// clients connected to the first one (a partition); returns that port.
    pub fn hide(&mut self) -> u16 {
        self.kill();
        let port = free_port();
        self.restart_on(port);
        port
    }

    /// Send `signal` (e.g. "STOP", "CONT") to the process: a paused etcd keeps
    /// its port, so no other test can take it meanwhile.
    #[allow(dead_code)]
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("etcd is running").id();
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill -{signal} {pid}");
    }

    /// SIGKILL the process and wait for it.
    /// Whether the process is still running (not exited on its own).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Connect, retrying while etcd starts.
    pub async fn connect_to(port: u16) -> EtcdBackend {
        let mut config = EtcdConfig::with_endpoints([format!("http://127.0.0.1:{port}")]);
        config.connect_timeout = Duration::from_secs(2);
        for _ in 0..100 {
            if let Ok(b) = EtcdBackend::connect(config.clone()).await {
                return b;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("etcd on port {port} did not come up");
    }
}

impl Drop for EtcdProcess {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
