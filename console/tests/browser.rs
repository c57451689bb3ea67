//! The console in a real headless Chromium, driven over WebDriver
//! (chromedriver): what an operator sees change live, and what clicking does.
//! The console runs in process on the memory store; every wait is on the
//! page's state, never a sleep.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`./scripts/test.sh`
//! installs them and runs these with `--include-ignored`; a missing browser
//! fails). `COORD_CHROMEDRIVER` and `COORD_CHROMIUM` name other binaries;
//! screenshots go to `COORD_CONSOLE_SCREENSHOTS` (the README's are made with
//! `COORD_CONSOLE_SCREENSHOTS=docs/console`), else to a temporary directory.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use coordkit::{BackendExt, Coordinator, ServiceInfo};
use coordkit_console::{Console, ConsoleOptions};
use coordkit_memory::MemoryBackend;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

const NEEDS_BROWSER: &str = "needs Chromium and chromedriver (./scripts/test.sh installs them)";
/// How long a page may take to reach a state before the test fails.
const PATIENCE: Duration = Duration::from_secs(30);

/// A console on a fresh memory store, and a browser signed in to it.
struct Session {
    store: MemoryBackend,
    coordinator: Coordinator,
    client: Client,
    base: String,
    _driver: Driver,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// The chromedriver process in a process group of its own, with the browser
/// it starts: the whole group is killed when the test ends however it ends
/// (a failed test never closes its session, and chromedriver killed alone
/// would leave the browser running).
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let group = format!("-{}", self.0.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.0.wait();
    }
}

fn binary(variable: &str, default: &str) -> String {
    std::env::var(variable).unwrap_or_else(|_| default.to_string())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Session {
    async fn start() -> Self {
        let store = MemoryBackend::new().client();
        let coordinator = Coordinator::new(Arc::new(store.clone()));
        let console = Console::new(coordinator.clone(), ConsoleOptions::new()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let login = format!("{base}{}", console.login_path());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(console.serve(listener, async {
            let _ = stopped.await;
        }));
        let (driver, client) = browser().await;
        client.goto(&login).await.unwrap();
        let session = Session {
            store,
            coordinator,
            client,
            base,
            _driver: driver,
            _stop: stop,
        };
        session.until("the login lands on Services", "document.querySelector('h1') && document.querySelector('h1').textContent === 'Services'").await;
        session
    }

    /// Open `path` and wait for its live parts to connect.
    async fn open(&self, path: &str) {
        self.client
            .goto(&format!("{}{path}", self.base))
            .await
            .unwrap();
        self.until(
            &format!("{path} loaded with its live parts connected"),
            "document.readyState === 'complete' && [...document.querySelectorAll('[data-live]')].every(e => e.dataset.connected === 'yes')",
        )
        .await;
    }

    /// Wait until `condition` (a JavaScript expression) holds on the page.
    async fn until(&self, what: &str, condition: &str) -> Value {
        let script = format!("return ({condition}) || null;");
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Ok(value) = self.client.execute(&script, vec![]).await {
                if !value.is_null() && value != json!(false) {
                    return value;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the page never showed: {what}\n{}",
                self.client.source().await.unwrap_or_default()
            );
            // The next look at the page; the browser's own event loop runs meanwhile.
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn text(&self, css: &str) -> String {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
    }

    /// A mark set on the page now; [`Session::same_page`] tells whether it
    /// survived (no reload happened).
    async fn mark(&self) {
        self.client
            .execute("window.coordkitTestMark = 42; return null;", vec![])
            .await
            .unwrap();
    }

    async fn same_page(&self) -> bool {
        self.client
            .execute("return window.coordkitTestMark === 42;", vec![])
            .await
            .unwrap()
            == json!(true)
    }

    async fn screenshot(&self, name: &str) {
        let dir = std::env::var_os("COORD_CONSOLE_SCREENSHOTS")
            .map(PathBuf::from)
            .unwrap_or_else(|| std::env::temp_dir().join("coordkit-console-screenshots"));
        std::fs::create_dir_all(&dir).unwrap();
        let png = self.client.screenshot().await.unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    async fn value(&self, key: &str) -> String {
        let (bytes, _) = self
            .coordinator
            .config()
            .get_bytes_with_version(key)
            .await
            .unwrap();
        String::from_utf8(bytes).unwrap()
    }
}

/// chromedriver on a free port, and a headless Chromium session from it.
async fn browser() -> (Driver, Client) {
    let chromedriver = binary("COORD_CHROMEDRIVER", "chromedriver");
    let chromium = binary("COORD_CHROMIUM", "/usr/bin/chromium");
    let port = free_port();
    let child = Command::new(&chromedriver)
        .arg(format!("--port={port}"))
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{NEEDS_BROWSER}: cannot run {chromedriver}: {e}"));
    let driver = Driver(child);
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,860", "--hide-scrollbars"]
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let attempt = ClientBuilder::new(connector.clone())
            .capabilities(capabilities.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await;
        match attempt {
            Ok(client) => return (driver, client),
            Err(e) if tokio::time::Instant::now() < deadline => {
                // chromedriver still starting: it answers once it listens.
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!(
                "{NEEDS_BROWSER}: no browser session from {chromedriver} with {chromium}: {e}"
            ),
        }
    }
}

const TTL: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium and chromedriver (./scripts/test.sh installs them)"]
async fn an_instance_appears_counts_down_and_vanishes_without_a_reload() {
    let s = Session::start().await;
    let registry = s.coordinator.registry();
    let _web = registry
        .register(
            ServiceInfo::new("web-1", "web", "10.0.0.7", 80).with_tag("edge"),
            TTL,
        )
        .await
        .unwrap();
    s.open("/services/api").await;
    s.mark().await;
    assert!(s
        .text("#instances, p.empty")
        .await
        .contains("No instance of api"));
    let info = ServiceInfo::new("api-1", "api", "10.0.0.5", 8080)
        .with_metadata("zone", "eu-west-1a")
        .with_tag("v2")
        .with_weight(10);
    // api-1 is registered by another process, which will be cut off.
    let process = s.store.client();
    let other = Coordinator::new(Arc::new(process.clone()));
    let _api = other.registry().register(info, TTL).await.unwrap();
    s.until(
        "api-1 appears",
        "document.querySelector('tr[data-instance=\"api-1\"]')",
    )
    .await;
    let first = s
        .until(
            "its lease time shows",
            "document.querySelector('tr[data-instance=\"api-1\"] .ttl').textContent",
        )
        .await;
    let first: u64 = first
        .as_str()
        .unwrap()
        .trim_end_matches('s')
        .parse()
        .unwrap();
    s.until(
        "the lease time counts down",
        &format!("parseInt(document.querySelector('tr[data-instance=\"api-1\"] .ttl').textContent) < {first}"),
    )
    .await;
    let _api2 = registry
        .register(
            ServiceInfo::new("api-2", "api", "10.0.0.6", 8080)
                .with_health(coordkit::InstanceHealth::Warning),
            TTL,
        )
        .await
        .unwrap();
    s.until(
        "api-2 appears",
        "document.querySelector('tr[data-instance=\"api-2\"]')",
    )
    .await;
    s.screenshot("service").await;
    let key = s.coordinator.keys().instance("api", "api-1");
    let lease = s
        .store
        .get(key)
        .await
        .unwrap()
        .unwrap()
        .lease
        .expect("a leased instance");
    // The process is cut off (it cannot register again), and its lease ends.
    process.partition();
    assert!(s.store.expire_lease(lease), "the lease was live");
    s.until(
        "api-1 vanishes",
        "!document.querySelector('tr[data-instance=\"api-1\"]')",
    )
    .await;
    assert!(s.same_page().await, "no reload happened");
    s.open("/services").await;
    s.until("the index lists both services", "document.querySelector('tr[data-service=\"web\"]') && document.querySelector('tr[data-service=\"api\"]')").await;
    s.screenshot("services").await;
    s.client.clone().close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium and chromedriver (./scripts/test.sh installs them)"]
async fn an_edit_shows_its_diff_and_is_stored() {
    let s = Session::start().await;
    let config = s.coordinator.config();
    for (key, value) in [
        ("payments/limits", r#"{"rps":100,"burst":20}"#),
        ("payments/db/pool", r#"{"max":16,"idle":4}"#),
        ("payments/db/replica", r#"{"host":"db-2","lag_ms":50}"#),
        ("payments/flags", r#"{"new_checkout":false}"#),
        ("search/limits", r#"{"rps":400}"#),
    ] {
        config
            .set_bytes(key, value.as_bytes().to_vec())
            .await
            .unwrap();
    }
    s.open("/config?prefix=payments/").await;
    s.screenshot("config").await;
    s.open("/config/key?k=payments/limits").await;
    s.click("#edit").await;
    s.until("the edit form", "document.querySelector('#editor')")
        .await;
    let editor = s.client.find(Locator::Css("#editor")).await.unwrap();
    editor.clear().await.unwrap();
    editor
        .send_keys("{\"rps\": 250, \"burst\": 20}")
        .await
        .unwrap();
    s.click("form button[type=submit]").await;
    s.until(
        "the diff",
        "document.querySelector('pre.diff del') && document.querySelector('pre.diff ins')",
    )
    .await;
    assert!(s.text("pre.diff del").await.contains("\"rps\": 100"));
    assert!(s.text("pre.diff ins").await.contains("\"rps\": 250"));
    assert_eq!(
        s.value("payments/limits").await,
        r#"{"rps":100,"burst":20}"#,
        "a review stores nothing"
    );
    s.screenshot("config-diff").await;
    s.click("form button[type=submit]").await;
    s.until("back on the key, at its new value", "document.querySelector('#value') && document.querySelector('#value').textContent.includes('250')").await;
    assert_eq!(
        s.value("payments/limits").await,
        r#"{"rps": 250, "burst": 20}"#
    );
    // Invalid JSON is caught in the page before it is sent.
    s.click("#edit").await;
    s.until("the edit form", "document.querySelector('#editor')")
        .await;
    let editor = s.client.find(Locator::Css("#editor")).await.unwrap();
    editor.clear().await.unwrap();
    editor.send_keys("{\"rps\": ").await.unwrap();
    s.click("form button[type=submit]").await;
    s.until(
        "the page says it is not JSON",
        "!document.querySelector('#invalid').hidden",
    )
    .await;
    assert!(s.text("#invalid").await.contains("Not valid JSON"));
    s.client.clone().close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium and chromedriver (./scripts/test.sh installs them)"]
async fn a_change_behind_the_page_fails_the_publish_and_keeps_theirs() {
    let s = Session::start().await;
    let config = s.coordinator.config();
    config
        .set_bytes("app/limits", br#"{"rps":100}"#.to_vec())
        .await
        .unwrap();
    s.open("/config/edit?k=app/limits").await;
    let editor = s.client.find(Locator::Css("#editor")).await.unwrap();
    editor.clear().await.unwrap();
    editor.send_keys("{\"rps\": 300}").await.unwrap();
    s.click("form button[type=submit]").await;
    s.until("the diff", "document.querySelector('pre.diff ins')")
        .await;
    // Someone else publishes while the diff is on screen.
    config
        .set_bytes("app/limits", br#"{"rps":120}"#.to_vec())
        .await
        .unwrap();
    s.click("form button[type=submit]").await;
    s.until("the conflict", "document.querySelector('#conflict')")
        .await;
    assert!(s.text("#conflict").await.contains("Nothing was written"));
    assert!(
        s.text("pre.diff del").await.contains("\"rps\": 120"),
        "theirs"
    );
    assert!(
        s.text("pre.diff ins").await.contains("\"rps\": 300"),
        "yours"
    );
    assert_eq!(s.value("app/limits").await, r#"{"rps":120}"#, "theirs kept");
    s.screenshot("config-conflict").await;
    s.client.clone().close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium and chromedriver (./scripts/test.sh installs them)"]
async fn two_versions_are_compared_and_one_is_rolled_back_to() {
    let s = Session::start().await;
    let config = s.coordinator.config();
    let mut versions = Vec::new();
    for rps in [100, 200, 300] {
        versions.push(
            config
                .set_bytes("app/limits", format!("{{\"rps\":{rps}}}").into_bytes())
                .await
                .unwrap(),
        );
    }
    s.open("/config/history?k=app/limits").await;
    s.click(&format!("input[name=a][value=\"{}\"]", versions[0]))
        .await;
    s.click(&format!("input[name=b][value=\"{}\"]", versions[2]))
        .await;
    s.click("form.compare button[type=submit]").await;
    s.until("the comparison", "document.querySelector('#compared')")
        .await;
    assert!(s.text("#compared").await.contains(&format!(
        "Version {} against version {}",
        versions[0], versions[2]
    )));
    assert!(s.text("pre.diff del").await.contains("\"rps\": 100"));
    assert!(s.text("pre.diff ins").await.contains("\"rps\": 300"));
    s.screenshot("config-history").await;
    s.click(&format!("tr[data-version=\"{}\"] a.action", versions[0]))
        .await;
    s.until(
        "the rollback says what it restores",
        "document.querySelector('#restores')",
    )
    .await;
    let restores = s.text("#restores").await;
    assert!(
        restores.contains(&format!("value of version {}", versions[0]))
            && restores.contains(&format!("over version {}", versions[2])),
        "{restores}"
    );
    s.click("form button[type=submit]").await;
    s.until("back on the history with a new version", "document.querySelectorAll('tr[data-version]').length === 4 && !document.querySelector('#restores')").await;
    assert_eq!(s.value("app/limits").await, r#"{"rps":100}"#);
    s.client.clone().close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium and chromedriver (./scripts/test.sh installs them)"]
async fn a_lock_holder_waiter_and_handoff_are_seen_live_with_rising_tokens() {
    let s = Session::start().await;
    s.open("/locks").await;
    s.mark().await;
    let node_b = Coordinator::new(Arc::new(s.store.clone()));
    let held = s
        .coordinator
        .lock()
        .acquire("nightly-report", TTL)
        .await
        .unwrap();
    let first = held.fencing_token();
    let row = |token: i64, role: &str| {
        format!("[...document.querySelectorAll('table[data-queue=\"nightly-report\"] tr[data-token=\"{token}\"] td.role')].some(td => td.textContent === '{role}')")
    };
    s.until("the holder", &row(first, "holder")).await;
    let waiter = tokio::spawn({
        let node_b = node_b.clone();
        async move { node_b.lock().acquire("nightly-report", TTL).await }
    });
    let token = s
        .until("a waiter", "(() => { const r = document.querySelectorAll('table[data-queue=\"nightly-report\"] tbody tr'); return r.length === 2 && r[1].querySelector('td.role').textContent === 'waiting' ? r[1].dataset.token : null; })()")
        .await;
    let second: i64 = token.as_str().unwrap().parse().unwrap();
    assert!(
        second > first,
        "the waiter's token {second} is above the holder's {first}"
    );
    let _leader = s
        .coordinator
        .election()
        .campaign("scheduler", "node-a")
        .await
        .unwrap();
    s.until(
        "the leader",
        "document.querySelector('table[data-queue=\"scheduler\"]')",
    )
    .await;
    s.screenshot("locks").await;
    held.unlock().await.unwrap();
    s.until("the handoff", &row(second, "holder")).await;
    s.until(
        "the old holder gone",
        &format!("!document.querySelector('tr[data-token=\"{first}\"]')"),
    )
    .await;
    let guard = waiter.await.unwrap().unwrap();
    assert_eq!(guard.fencing_token(), second);
    assert!(s.same_page().await, "no reload happened");
    s.open("/cluster").await;
    s.until(
        "the cluster page",
        "document.querySelector('#console-health')",
    )
    .await;
    s.screenshot("cluster").await;
    s.client.clone().close().await.unwrap();
}
