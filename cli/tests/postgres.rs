//! `coordctl` on PostgreSQL (`COORD_POSTGRES_URL`; `./scripts/test.sh` starts
//! a server and runs these with `--include-ignored`): each kind of command —
//! status, config, services, locks and elections with a command — and the
//! rule for choosing between etcd and Postgres.

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::Value;

fn url() -> String {
    std::env::var("COORD_POSTGRES_URL").expect(
        "COORD_POSTGRES_URL is not set: these tests need PostgreSQL (./scripts/test.sh sets it)",
    )
}

/// A namespace of its own for each test.
fn namespace() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "pg-cli-{}-{}/",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

fn coordctl(ns: &str) -> Command {
    let mut c = Command::new(assert_cmd::cargo::cargo_bin("coordctl"));
    c.env("COORD_POSTGRES_URL", url())
        .env_remove("COORD_ETCD_ENDPOINTS")
        .args(["--postgres-schema", "cli_tests", "--namespace", ns]);
    c
}

fn run(c: &mut Command) -> Output {
    c.stdin(Stdio::null()).output().expect("runs")
}

/// Run, expect exit `code`, return stdout.
fn ok(c: &mut Command, code: i32) -> String {
    let o = run(c);
    assert_eq!(
        o.status.code(),
        Some(code),
        "{c:?}: stdout {} stderr {}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn json_lines(s: &str) -> Vec<Value> {
    s.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect()
}

#[test]
#[ignore = "needs PostgreSQL (./scripts/test.sh runs it)"]
fn status_config_services_locks_and_elections_on_postgres() {
    let ns = namespace();
    let status = json_lines(&ok(coordctl(&ns).args(["-o", "json", "status"]), 0));
    assert_eq!(status[0]["healthy"], true);
    assert_eq!(status[0]["schema"], "cli_tests");
    assert!(
        !status[0]["url"].as_str().unwrap().contains(":secret@"),
        "{status:?}"
    );
    // Config: set, get, history, rollback, delete.
    ok(
        coordctl(&ns).args(["config", "set", "app/limits", r#"{"rps": 100}"#]),
        0,
    );
    ok(
        coordctl(&ns).args(["config", "set", "app/limits", r#"{"rps": 200}"#]),
        0,
    );
    let got = json_lines(&ok(
        coordctl(&ns).args(["-o", "json", "config", "get", "app/limits"]),
        0,
    ));
    assert_eq!(got[0]["value"]["rps"], 200, "{got:?}");
    let history = json_lines(&ok(
        coordctl(&ns).args(["-o", "json", "config", "history", "app/limits"]),
        0,
    ));
    assert_eq!(history.len(), 2, "{history:?}");
    let first = history
        .iter()
        .find(|h| h["value"]["rps"] == 100)
        .unwrap_or_else(|| panic!("the first version in the history: {history:?}"));
    let to = first["version"].as_i64().expect("a version").to_string();
    ok(
        coordctl(&ns).args(["config", "rollback", "app/limits", "--to", &to]),
        0,
    );
    let got = json_lines(&ok(
        coordctl(&ns).args(["-o", "json", "config", "get", "app/limits"]),
        0,
    ));
    assert_eq!(got[0]["value"]["rps"], 100, "{got:?}");
    ok(coordctl(&ns).args(["config", "delete", "app/limits"]), 0);
    ok(coordctl(&ns).args(["config", "get", "app/limits"]), 3);
    // Services: register (held in the background), list, deregister.
    let mut registered = coordctl(&ns)
        .args([
            "register",
            "api",
            "api-1",
            "127.0.0.1",
            "8080",
            "--ttl",
            "5s",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(registered.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("service/api/api-1"), "{line}");
    let services = json_lines(&ok(coordctl(&ns).args(["-o", "json", "services"]), 0));
    assert_eq!(
        services[0],
        serde_json::json!({"service": "api", "instances": 1})
    );
    ok(coordctl(&ns).args(["deregister", "api", "api-1"]), 0);
    let _ = registered.kill();
    let _ = registered.wait();
    // A lock and an election around a command: its status is coordctl's.
    let out = ok(
        coordctl(&ns).args([
            "lock",
            "job",
            "--",
            "sh",
            "-c",
            "echo $COORD_FENCING_TOKEN; exit 7",
        ]),
        7,
    );
    assert!(out.trim().parse::<i64>().is_ok(), "a fencing token: {out}");
    let out = ok(
        coordctl(&ns).args([
            "elect",
            "e",
            "node-a",
            "--",
            "sh",
            "-c",
            "echo $COORD_LEADER_KEY",
        ]),
        0,
    );
    assert!(out.contains(&format!("{ns}election/e/")), "{out}");
    assert!(json_lines(&ok(coordctl(&ns).args(["-o", "json", "locks"]), 0)).is_empty());
}

#[test]
#[ignore = "needs PostgreSQL (./scripts/test.sh runs it)"]
fn a_flag_names_the_store_over_the_environment_and_two_of_a_kind_are_refused() {
    let ns = namespace();
    // A flag wins over the other store's variable.
    let status = json_lines(&ok(
        coordctl(&ns)
            .env("COORD_ETCD_ENDPOINTS", "http://127.0.0.1:1")
            .env_remove("COORD_POSTGRES_URL")
            .args(["-o", "json", "--postgres-url", &url(), "status"]),
        0,
    ));
    assert_eq!(status[0]["healthy"], true);
    // Both from the environment: refused, naming both.
    let o = run(coordctl(&ns)
        .env("COORD_ETCD_ENDPOINTS", "http://127.0.0.1:1")
        .arg("status"));
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("both etcd endpoints and a Postgres URL"),
        "{o:?}"
    );
}

#[path = "common/console.rs"]
mod console;

#[test]
#[ignore = "needs PostgreSQL (./scripts/test.sh runs it)"]
fn the_console_runs_on_postgres_and_never_shows_the_password() {
    let ns = namespace();
    ok(
        coordctl(&ns).args(["config", "set", "app/db", r#"{"pool": 5}"#]),
        0,
    );
    // A password in the URL (the test server trusts loopback and ignores it):
    // the Cluster page shows the URL without it.
    let with_password = url().replacen("://postgres@", "://postgres:hunter2-secret@", 1);
    assert_ne!(with_password, url(), "the test URL has the expected shape");
    let console = console::ConsoleProcess::start(
        coordctl(&ns).args(["console", "--postgres-url", &with_password]),
        None,
    );
    let (status, view) = console.get("/config/key?k=app/db");
    assert_eq!(status, 200, "{view}");
    assert!(view.contains("&quot;pool&quot;: 5"), "{view}");
    let (status, cluster) = console.get("/cluster");
    assert_eq!(status, 200);
    assert!(cluster.contains("id=\"backend\">PostgreSQL"), "{cluster}");
    assert!(
        cluster.contains("cli_tests") && cluster.contains("healthy"),
        "{cluster}"
    );
    assert!(!cluster.contains("hunter2"), "{cluster}");
    let (_, edit) = console.get("/config/edit?k=app/db");
    let form = format!(
        "key=app%2Fdb&version={}&value=%7B%22pool%22%3A6%7D&csrf={}",
        console::form_field(&edit, "version"),
        console::form_field(&edit, "csrf")
    );
    let origin = format!("http://{}", console.addr);
    assert_eq!(console.post("/config/publish", &origin, &form).0, 303);
    assert_eq!(console.post("/config/publish", &origin, &form).0, 409);
    let got = json_lines(&ok(
        coordctl(&ns).args(["-o", "json", "config", "get", "app/db"]),
        0,
    ));
    assert_eq!(got[0]["value"]["pool"], 6);
    console.stop();
}
