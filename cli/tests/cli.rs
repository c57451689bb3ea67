//! `coordctl` end to end against a real etcd (`./scripts/test.sh` starts one and
//! runs these with `--include-ignored`): the built binary, its output in both
//! formats, its exit codes, and interop with `etcdctl`.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde_json::Value;

mod common;
use common::console::{form_field, http, ConsoleProcess};

#[path = "../../backends/etcd/tests/common/process.rs"]
#[allow(dead_code)]
mod process;

const NEEDS_ETCD: &str = "needs etcd (./scripts/test.sh runs it)";

fn endpoints() -> String {
    std::env::var("COORD_ETCD_ENDPOINTS").expect("COORD_ETCD_ENDPOINTS (./scripts/test.sh sets it)")
}

/// A namespace of its own for each test.
fn namespace() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "cli-{}-{}/",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

fn coordctl(ns: &str) -> Command {
    let mut c = Command::new(assert_cmd::cargo::cargo_bin("coordctl"));
    c.env("COORD_ETCD_ENDPOINTS", endpoints())
        .env_remove("COORD_POSTGRES_URL")
        .args(["--namespace", ns]);
    c
}

fn etcdctl() -> Command {
    let mut c = Command::new("etcdctl");
    c.env("ETCDCTL_API", "3")
        .args(["--endpoints", &endpoints()]);
    c
}

fn run(c: &mut Command) -> Output {
    c.stdin(Stdio::null()).output().expect("runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Run, expect exit `code`, return stdout.
fn ok(c: &mut Command, code: i32) -> String {
    let o = run(c);
    assert_eq!(
        o.status.code(),
        Some(code),
        "{c:?}: stdout {} stderr {}",
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

fn json_lines(s: &str) -> Vec<Value> {
    s.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect()
}

fn spawn(c: &mut Command) -> Child {
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawns")
}

fn first_line(child: &mut Child) -> String {
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().expect("stdout"))
        .read_line(&mut line)
        .expect("reads");
    line
}

fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..600 {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("gave up waiting until {what}");
}

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("coordctl-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    path
}

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
#[ignore = "needs etcd (./scripts/test.sh runs it)"]
fn config_commands_in_both_formats() {
    let _ = NEEDS_ETCD;
    let ns = namespace();
    let set = ok(
        coordctl(&ns).args(["config", "set", "app/limits", r#"{"rps": 100}"#]),
        0,
    );
    assert!(set.contains("version"), "{set}");
    let v1 = json_lines(&ok(
        coordctl(&ns).args(["-o", "json", "config", "get", "app/limits"]),
        0,
    ))[0]["version"]
        .as_i64()
        .unwrap();
    // From stdin.
    let mut child = coordctl(&ns)
        .args(["-o", "json", "config", "set", "app/limits", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(br#"{"rps": 200, "burst": 10}"#)
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let v2 = json_lines(&stdout(&out))[0]["version"].as_i64().unwrap();
    assert!(v2 > v1);
    let table = ok(coordctl(&ns).args(["config", "get", "app/limits"]), 0);
    assert!(
        table.contains(r#"{"rps": 200, "burst": 10}"#) && table.contains(&v2.to_string()),
        "{table}"
    );
    let got = json_lines(&ok(
        coordctl(&ns).args(["-o", "json", "config", "get", "app/limits"]),
        0,
    ));
    assert_eq!(got[0]["value"]["burst"], 10);
    // History with diffs, both formats.
    let history = ok(coordctl(&ns).args(["config", "history", "app/limits"]), 0);
    assert!(
        history.contains("-  \"rps\": 100") && history.contains("+  \"rps\": 200"),
        "{history}"
    );
    let history = json_lines(&ok(
        coordctl(&ns).args(["-o", "json", "config", "history", "app/limits"]),
        0,
    ));
    assert_eq!(history.len(), 2);
    assert_eq!(history[0]["version"].as_i64(), Some(v2));
    assert!(history[0]["diff_from_previous"]
        .as_str()
        .unwrap()
        .contains("+  \"burst\": 10"));
    // Compare-and-set: a stale version is a conflict naming the current one.
    let o = run(coordctl(&ns).args([
        "config",
        "set",
        "app/limits",
        "{}",
        "--if-version",
        &v1.to_string(),
    ]));
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("at version {v2}")),
        "{}",
        stderr(&o)
    );
    // Diff and rollback.
    let diff = ok(
        coordctl(&ns).args(["config", "diff", "app/limits", &v1.to_string()]),
        0,
    );
    assert!(diff.contains("+  \"burst\": 10"), "{diff}");
    // A rollback over a version not the current one is a conflict, and writes nothing.
    let o = run(coordctl(&ns).args([
        "config",
        "rollback",
        "app/limits",
        "--to",
        &v1.to_string(),
        "--if-version",
        &v1.to_string(),
    ]));
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("at version {v2}")),
        "{}",
        stderr(&o)
    );
    let rolled = json_lines(&ok(
        coordctl(&ns).args([
            "-o",
            "json",
            "config",
            "rollback",
            "app/limits",
            "--to",
            &v1.to_string(),
            "--if-version",
            &v2.to_string(),
        ]),
        0,
    ));
    assert_eq!(rolled[0]["rolled_back_to"].as_i64(), Some(v1));
    let now = json_lines(&ok(
        coordctl(&ns).args(["-o", "json", "config", "get", "app/limits"]),
        0,
    ));
    assert_eq!(now[0]["value"], serde_json::json!({"rps": 100}));
    // List, delete, and not found.
    assert!(ok(coordctl(&ns).args(["config", "list"]), 0).contains("app/limits"));
    let listed = json_lines(&ok(
        coordctl(&ns).args(["-o", "json", "config", "list", "app/"]),
        0,
    ));
    assert_eq!(listed[0]["key"], "app/limits");
    let got = json_lines(&ok(
        coordctl(&ns).args(["-o", "json", "config", "get", "app/limits"]),
        0,
    ));
    let current = got[0]["version"].as_i64().unwrap();
    let o = run(coordctl(&ns).args([
        "config",
        "delete",
        "app/limits",
        "--if-version",
        &v1.to_string(),
    ]));
    assert_eq!(
        o.status.code(),
        Some(4),
        "deleting a stale version: {}",
        stderr(&o)
    );
    assert!(
        stderr(&o).contains(&format!("at version {current}")),
        "{}",
        stderr(&o)
    );
    ok(
        coordctl(&ns).args([
            "config",
            "delete",
            "app/limits",
            "--if-version",
            &current.to_string(),
        ]),
        0,
    );
    let o = run(coordctl(&ns).args(["config", "get", "app/limits"]));
    assert_eq!(o.status.code(), Some(3), "a missing key exits 3");
    ok(coordctl(&ns).args(["config", "delete", "app/limits"]), 3);
}

#[test]
#[ignore = "needs etcd (./scripts/test.sh runs it)"]
fn config_watch_prints_each_change() {
    let ns = namespace();
    let mut watch =
        spawn(coordctl(&ns).args(["-o", "json", "config", "watch", "app/", "--prefix"]));
    // The watch starts after connecting: write until its first line shows up.
    std::thread::sleep(Duration::from_millis(500));
    ok(coordctl(&ns).args(["config", "set", "app/a", "1"]), 0);
    ok(coordctl(&ns).args(["config", "set", "app/a", "2"]), 0);
    ok(coordctl(&ns).args(["config", "delete", "app/a"]), 0);
    let mut lines = Vec::new();
    let mut reader = BufReader::new(watch.stdout.take().unwrap());
    for _ in 0..3 {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        lines.push(serde_json::from_str::<Value>(&line).unwrap());
    }
    signal(&watch, "TERM");
    assert!(watch.wait().unwrap().success());
    let events: Vec<(&str, Value)> = lines
        .iter()
        .map(|l| (l["event"].as_str().unwrap(), l["value"].clone()))
        .collect();
    assert_eq!(
        events,
        [
            ("put", Value::from(1)),
            ("put", Value::from(2)),
            ("delete", Value::Null)
        ]
    );
}

#[test]
#[ignore = "needs etcd (./scripts/test.sh runs it)"]
fn services_register_list_show_deregister() {
    let ns = namespace();
    let mut registered = spawn(coordctl(&ns).args([
        "register",
        "api",
        "api-1",
        "127.0.0.1",
        "8080",
        "--meta",
        "zone=a",
        "--meta",
        "version=2",
        "--tag",
        "grpc",
        "--weight",
        "3",
        "--ttl",
        "5s",
    ]));
    let line = first_line(&mut registered);
    assert!(line.contains(&format!("{ns}service/api/api-1")), "{line}");
    let services = ok(coordctl(&ns).arg("services"), 0);
    assert!(
        services
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["api", "1"]),
        "{services}"
    );
    let listed = json_lines(&ok(coordctl(&ns).args(["-o", "json", "services"]), 0));
    assert_eq!(
        listed[0],
        serde_json::json!({"service": "api", "instances": 1})
    );
    let table = ok(coordctl(&ns).args(["service", "api"]), 0);
    assert!(
        table.contains("api-1")
            && table.contains("127.0.0.1")
            && table.contains("version=2,zone=a"),
        "{table}"
    );
    let shown = json_lines(&ok(coordctl(&ns).args(["-o", "json", "service", "api"]), 0));
    assert_eq!(shown[0]["port"], 8080);
    assert_eq!(shown[0]["metadata"]["zone"], "a");
    assert_eq!(
        (&shown[0]["health"], &shown[0]["weight"], &shown[0]["tags"]),
        (
            &serde_json::json!("passing"),
            &serde_json::json!(3),
            &serde_json::json!(["grpc"])
        )
    );
    let ttl = shown[0]["ttl_left_secs"].as_i64().expect("a lease TTL");
    assert!((1..=5).contains(&ttl), "ttl left {ttl}");
    // SIGTERM: the registration removes itself.
    signal(&registered, "TERM");
    assert!(registered.wait().unwrap().success());
    let after = json_lines(&ok(coordctl(&ns).args(["-o", "json", "services"]), 0));
    assert!(after.is_empty(), "{after:?}");
    // deregister: of a key written by another, and of a missing one.
    ok(
        etcdctl().args([
            "put",
            &format!("{ns}service/web/w1"),
            r#"{"id":"w1","name":"web","address":"h","port":1}"#,
        ]),
        0,
    );
    let out = ok(coordctl(&ns).args(["deregister", "web", "w1"]), 0);
    assert!(out.contains("web/w1"), "{out}");
    ok(coordctl(&ns).args(["deregister", "web", "w1"]), 3);
}

#[test]
#[ignore = "needs etcd (./scripts/test.sh runs it)"]
fn lock_with_a_command_holds_it_while_another_waits() {
    let ns = namespace();
    let token_file = temp("token");
    let second_file = temp("second");
    let mut first = spawn(coordctl(&ns).args([
        "lock",
        "job",
        "--",
        "sh",
        "-c",
        &format!(
            "echo $COORD_FENCING_TOKEN $COORD_LOCK_KEY > {}; sleep 2",
            token_file.display()
        ),
    ]));
    wait_until("the first command runs", || token_file.exists());
    let mut second = spawn(coordctl(&ns).args([
        "lock",
        "job",
        "--",
        "sh",
        "-c",
        &format!("echo $COORD_FENCING_TOKEN > {}", second_file.display()),
    ]));
    let queue = json_lines(&ok(coordctl(&ns).args(["-o", "json", "locks", "job"]), 0));
    wait_until("the second coordctl is queued", || {
        json_lines(&ok(coordctl(&ns).args(["-o", "json", "locks", "job"]), 0)).len() == 2
    });
    assert!(!queue.is_empty());
    assert!(
        !second_file.exists(),
        "the second command ran while the first held the lock"
    );
    assert!(first.wait().unwrap().success());
    assert!(second.wait().unwrap().success());
    let recorded = std::fs::read_to_string(&token_file).unwrap();
    let mut parts = recorded.split_whitespace();
    let token: i64 = parts.next().unwrap().parse().expect("a numeric token");
    assert!(parts.next().unwrap().starts_with(&format!("{ns}lock/job/")));
    let second_token: i64 = std::fs::read_to_string(&second_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        second_token > token,
        "tokens increase: {token} then {second_token}"
    );
    // The command's own status is coordctl's.
    ok(
        coordctl(&ns).args(["lock", "job", "--", "sh", "-c", "exit 7"]),
        7,
    );
    // --try on a held lock: conflict.
    let mut holder = spawn(coordctl(&ns).args(["lock", "held"]));
    let line = first_line(&mut holder);
    assert!(line.contains(&format!("{ns}lock/held/")), "{line}");
    ok(coordctl(&ns).args(["lock", "held", "--try"]), 4);
    ok(coordctl(&ns).args(["lock", "held", "--wait", "300ms"]), 4);
    let names = ok(coordctl(&ns).arg("locks"), 0);
    assert!(names.contains("held"), "{names}");
    signal(&holder, "INT");
    assert!(holder.wait().unwrap().success());
    ok(
        coordctl(&ns).args(["lock", "held", "--try", "--", "true"]),
        0,
    );
}

#[test]
#[ignore = "needs etcd (./scripts/test.sh runs it)"]
fn a_sigkilled_holder_loses_the_lock_to_the_waiter_after_its_ttl() {
    let ns = namespace();
    let mut holder = spawn(coordctl(&ns).args(["lock", "k", "--ttl", "2s"]));
    first_line(&mut holder);
    let mut waiter = spawn(coordctl(&ns).args(["lock", "k", "--ttl", "2s", "--", "true"]));
    wait_until("the waiter is queued", || {
        json_lines(&ok(coordctl(&ns).args(["-o", "json", "locks", "k"]), 0)).len() == 2
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        waiter.try_wait().unwrap().is_none(),
        "the waiter got the lock while the holder lived"
    );
    signal(&holder, "KILL");
    let _ = holder.wait();
    assert!(
        waiter.wait().unwrap().success(),
        "the waiter takes the lock once the dead holder's lease ends"
    );
}

#[test]
#[ignore = "needs etcd (./scripts/test.sh runs it)"]
fn a_revoked_lease_stops_the_command_and_exits_lost() {
    let ns = namespace();
    let marker = temp("terminated");
    // Short sleeps: no long-lived orphan keeps the output pipes open after it.
    let script = format!(
        "trap 'echo term > {}; exit 143' TERM; while true; do sleep 0.1; done",
        marker.display()
    );
    let mut held =
        spawn(coordctl(&ns).args(["lock", "r", "--grace", "2s", "--", "sh", "-c", &script]));
    wait_until("the lock is held", || {
        json_lines(&ok(coordctl(&ns).args(["-o", "json", "locks", "r"]), 0)).len() == 1
    });
    let queue = json_lines(&ok(coordctl(&ns).args(["-o", "json", "locks", "r"]), 0));
    let lease = queue[0]["lease"].as_str().expect("a lease").to_string();
    std::thread::sleep(Duration::from_millis(300)); // the trap is set
    ok(etcdctl().args(["lease", "revoke", &lease]), 0);
    let status = held.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(held.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(5), "a lost lock exits 5; stderr {err}");
    // CMD's own shell may say it was terminated; coordctl says one line.
    let ours = err.lines().filter(|l| l.starts_with("coordctl:")).count();
    assert_eq!(ours, 1, "one line of coordctl's on stderr: {err}");
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap().trim(),
        "term",
        "the command got SIGTERM"
    );
}

#[test]
#[ignore = "needs etcd (./scripts/test.sh runs it)"]
fn a_release_that_fails_after_the_command_keeps_the_commands_status() {
    // An etcd of this test's own, paused once CMD has done its work.
    assert!(process::etcd_binary_available());
    let etcd = process::EtcdProcess::start();
    let ns = namespace();
    let (started, go) = (temp("release-started"), temp("release-go"));
    let script = format!(
        "touch {}; while [ ! -f {} ]; do sleep 0.05; done; exit 3",
        started.display(),
        go.display()
    );
    let mut held = spawn(
        coordctl(&ns)
            .env("COORD_ETCD_ENDPOINTS", etcd.endpoint())
            .args(["lock", "p", "--", "sh", "-c", &script]),
    );
    wait_until("CMD runs", || started.exists());
    etcd.signal("STOP");
    std::fs::write(&go, "").unwrap();
    let status = held.wait().unwrap();
    etcd.signal("CONT");
    let mut err = String::new();
    std::io::Read::read_to_string(held.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(
        status.code(),
        Some(3),
        "CMD's status, not the release's; stderr {err}"
    );
    assert!(
        err.lines()
            .any(|l| l.contains("the release after") && l.contains("failed")),
        "the failed release is said on stderr: {err}"
    );
}

#[test]
#[ignore = "needs etcd (./scripts/test.sh runs it)"]
fn a_lost_lock_stops_the_commands_children_too() {
    let ns = namespace();
    let marker = temp("grandchild-terminated");
    // CMD is a shell whose child does the work: the child must stop as well.
    let worker = format!(
        "trap 'echo term > {}; exit 143' TERM; while true; do sleep 0.1; done",
        marker.display()
    );
    let script = format!("sh -c \"{worker}\" & wait");
    let mut held =
        spawn(coordctl(&ns).args(["lock", "g", "--grace", "2s", "--", "sh", "-c", &script]));
    wait_until("the lock is held", || {
        json_lines(&ok(coordctl(&ns).args(["-o", "json", "locks", "g"]), 0)).len() == 1
    });
    let queue = json_lines(&ok(coordctl(&ns).args(["-o", "json", "locks", "g"]), 0));
    let lease = queue[0]["lease"].as_str().expect("a lease").to_string();
    std::thread::sleep(Duration::from_millis(500)); // the grandchild's trap is set
    ok(etcdctl().args(["lease", "revoke", &lease]), 0);
    let status = held.wait().unwrap();
    assert_eq!(status.code(), Some(5), "a lost lock exits 5");
    wait_until("the grandchild got SIGTERM", || {
        std::fs::read_to_string(&marker).is_ok_and(|m| m.trim() == "term")
    });
}

#[test]
#[ignore = "needs etcd (./scripts/test.sh runs it)"]
fn a_signal_while_queued_removes_the_queued_key_at_once() {
    let ns = namespace();
    let mut holder = spawn(coordctl(&ns).args(["lock", "q", "--ttl", "30s"]));
    first_line(&mut holder);
    let mut waiter = spawn(coordctl(&ns).args(["lock", "q", "--ttl", "30s"]));
    wait_until("the waiter is queued", || {
        json_lines(&ok(coordctl(&ns).args(["-o", "json", "locks", "q"]), 0)).len() == 2
    });
    signal(&waiter, "INT");
    let status = waiter.wait().unwrap();
    assert_eq!(status.code(), Some(130), "SIGINT while queued exits 130");
    // Gone now, not at the end of its 30 s TTL.
    let queue = json_lines(&ok(coordctl(&ns).args(["-o", "json", "locks", "q"]), 0));
    assert_eq!(
        queue.len(),
        1,
        "the queued key is removed on exit: {queue:?}"
    );
    signal(&holder, "TERM");
    assert_eq!(holder.wait().unwrap().code(), Some(0));
}

#[test]
#[ignore = "needs etcd (./scripts/test.sh runs it)"]
fn interop_with_etcdctl_lock_both_ways() {
    let ns = namespace();
    let name = format!("{ns}lock/shared");
    // etcdctl holds: coordctl's --try conflicts, a waiting coordctl gets it after.
    let held = temp("etcdctl-held");
    let mut etcd_holder = spawn(etcdctl().args([
        "lock",
        &name,
        "--",
        "sh",
        "-c",
        &format!("echo held > {}; sleep 2", held.display()),
    ]));
    wait_until("etcdctl holds the lock", || held.exists());
    ok(coordctl(&ns).args(["lock", "shared", "--try"]), 4);
    let queue = json_lines(&ok(
        coordctl(&ns).args(["-o", "json", "locks", "shared"]),
        0,
    ));
    assert_eq!(queue.len(), 1, "coordctl sees etcdctl's key: {queue:?}");
    ok(coordctl(&ns).args(["lock", "shared", "--", "true"]), 0);
    assert!(etcd_holder.wait().unwrap().success());
    // coordctl holds: etcdctl waits until it is done.
    let ours = temp("coordctl-held");
    let theirs = temp("etcdctl-got");
    let mut coord_holder = spawn(coordctl(&ns).args([
        "lock",
        "shared",
        "--",
        "sh",
        "-c",
        &format!("echo held > {}; sleep 2", ours.display()),
    ]));
    wait_until("coordctl holds the lock", || ours.exists());
    let mut etcd_waiter = spawn(etcdctl().args([
        "lock",
        &name,
        "--",
        "sh",
        "-c",
        &format!("echo got > {}", theirs.display()),
    ]));
    wait_until("etcdctl is queued", || {
        json_lines(&ok(
            coordctl(&ns).args(["-o", "json", "locks", "shared"]),
            0,
        ))
        .len()
            == 2
    });
    assert!(
        !theirs.exists(),
        "etcdctl got the lock while coordctl held it"
    );
    assert!(coord_holder.wait().unwrap().success());
    assert!(etcd_waiter.wait().unwrap().success());
    assert!(theirs.exists());
}

#[test]
#[ignore = "needs etcd (./scripts/test.sh runs it)"]
fn elect_elections_status_and_completions() {
    let ns = namespace();
    let mut observer = spawn(coordctl(&ns).args(["-o", "json", "elect", "e", "--observe"]));
    let first = serde_json::from_str::<Value>(&first_line(&mut observer)).unwrap();
    assert_eq!(first["leader"], Value::Null, "no leader yet: {first}");
    let mut leader = spawn(coordctl(&ns).args(["elect", "e", "node-a"]));
    let line = first_line(&mut leader);
    assert!(line.contains(&format!("{ns}election/e/")), "{line}");
    let seen = serde_json::from_str::<Value>(&first_line(&mut observer)).unwrap();
    assert_eq!(seen["leader"], "node-a");
    let listed = ok(coordctl(&ns).args(["elections", "e"]), 0);
    assert!(
        listed.contains("holder") && listed.contains("node-a"),
        "{listed}"
    );
    let json = json_lines(&ok(coordctl(&ns).args(["-o", "json", "elections"]), 0));
    assert_eq!(json[0], serde_json::json!({"name": "e", "queued": 1}));
    let o = run(coordctl(&ns).args(["elect", "e", "node-b", "--try"]));
    assert_eq!(o.status.code(), Some(4));
    assert!(
        stderr(&o).contains("election \"e\" has a leader"),
        "{}",
        stderr(&o)
    );
    signal(&leader, "TERM");
    assert!(leader.wait().unwrap().success());
    signal(&observer, "TERM");
    let _ = observer.wait();
    // elect with a command: COORD_LEADER_KEY.
    let out = ok(
        coordctl(&ns).args([
            "elect",
            "e",
            "v",
            "--",
            "sh",
            "-c",
            "echo $COORD_LEADER_KEY",
        ]),
        0,
    );
    assert!(out.contains(&format!("{ns}election/e/")), "{out}");
    let status = ok(coordctl(&ns).arg("status"), 0);
    assert!(
        status.contains(&endpoints()) && status.contains("healthy"),
        "{status}"
    );
    let status = json_lines(&ok(coordctl(&ns).args(["-o", "json", "status"]), 0));
    assert_eq!(status[0]["healthy"], true);
    assert_eq!(status[0]["is_leader"], true);
    assert!(status[0]["revision"].as_i64().unwrap() > 0);
    let completions = ok(
        Command::new(assert_cmd::cargo::cargo_bin("coordctl")).args(["completions", "bash"]),
        0,
    );
    assert!(completions.contains("coordctl"), "a bash completion script");
}

#[test]
#[ignore = "needs etcd (./scripts/test.sh runs it)"]
fn bad_input_gives_one_line_and_its_exit_code() {
    let ns = namespace();
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (vec!["lock", ""], 2, "name"),
        (vec!["lock", "a/b"], 2, "name"),
        (vec!["lock", "x", "--ttl", "100ms"], 2, "ttl"),
        (vec!["config", "set", "k", "not json"], 2, "not JSON"),
        (vec!["config", "get", ""], 2, "key"),
        (vec!["service", ""], 2, "service name"),
        (vec!["register", "api", "i", "h", "0"], 2, "port"),
        (vec!["lock", "x", "--", "/no/such/program"], 2, "cannot run"),
    ];
    for (args, code, says) in cases {
        let o = run(coordctl(&ns).args(&args));
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(code), "{args:?}: {err}");
        assert_eq!(
            err.lines().count(),
            1,
            "{args:?}: one line on stderr, got {err}"
        );
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    let o = run(Command::new(assert_cmd::cargo::cargo_bin("coordctl"))
        .env_remove("COORD_ETCD_ENDPOINTS")
        .env_remove("COORD_POSTGRES_URL")
        .args([
            "--endpoints",
            "http://127.0.0.1:1",
            "--timeout",
            "1s",
            "config",
            "get",
            "k",
        ]));
    assert_eq!(o.status.code(), Some(6), "unreachable: {}", stderr(&o));
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    let o = run(Command::new(assert_cmd::cargo::cargo_bin("coordctl"))
        .env_remove("COORD_ETCD_ENDPOINTS")
        .env_remove("COORD_POSTGRES_URL")
        .args(["config", "get", "k"]));
    assert_eq!(o.status.code(), Some(2), "no endpoints: {}", stderr(&o));
}

/// Every key under namespace `ns` with its last write's revision, as etcdctl
/// reports them (other tests write to the same etcd meanwhile).
fn writes_under(ns: &str) -> Vec<(String, i64)> {
    let out = ok(etcdctl().args(["get", "--prefix", ns, "-w", "json"]), 0);
    let doc: Value = serde_json::from_str(&out).unwrap();
    let kvs = doc["kvs"].as_array().cloned().unwrap_or_default();
    kvs.iter()
        .map(|kv| {
            (
                kv["key"].as_str().unwrap().to_string(),
                kv["mod_revision"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[test]
#[ignore = "needs etcd (./scripts/test.sh runs it)"]
fn console_serves_edits_on_version_and_refuses_what_it_must() {
    let ns = namespace();
    ok(
        coordctl(&ns).args(["config", "set", "app/db", r#"{"pool": 5}"#]),
        0,
    );
    let console = ConsoleProcess::start(coordctl(&ns).arg("console"), None);
    let origin = format!("http://{}", console.addr);
    let anonymous = format!(
        "GET /services HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        console.addr
    );
    assert_eq!(http(&console.addr, &anonymous).0, 401);
    let foreign = format!(
        "GET /services HTTP/1.1\r\nHost: evil.example\r\nCookie: {}\r\nConnection: close\r\n\r\n",
        console.cookie
    );
    assert_eq!(http(&console.addr, &foreign).0, 421);
    let (status, view) = console.get("/config/key?k=app/db");
    assert_eq!(status, 200);
    assert!(view.contains("&quot;pool&quot;: 5"), "{view}");
    let (_, cluster) = console.get("/cluster");
    assert!(
        cluster.contains(&endpoints().split(',').next().unwrap().to_string()),
        "{cluster}"
    );
    assert!(
        cluster.contains("healthy") && cluster.contains("id=\"backend\">etcd"),
        "{cluster}"
    );
    let (_, edit) = console.get("/config/edit?k=app/db");
    let csrf = form_field(&edit, "csrf");
    let loaded = form_field(&edit, "version");
    let form = format!("key=app%2Fdb&version={loaded}&value=%7B%22pool%22%3A9%7D&csrf={csrf}");
    let before = writes_under(&ns);
    assert_eq!(
        console
            .post("/config/publish", "http://evil.example", &form)
            .0,
        403
    );
    assert_eq!(
        console
            .post("/config/publish", &origin, &form.replace(&csrf, "0"))
            .0,
        403
    );
    assert_eq!(writes_under(&ns), before, "refused changes write nothing");
    assert_eq!(console.post("/config/publish", &origin, &form).0, 303);
    let got = json_lines(&ok(
        coordctl(&ns).args(["-o", "json", "config", "get", "app/db"]),
        0,
    ));
    assert_eq!(got[0]["value"]["pool"], 9);
    let (status, conflict) = console.post("/config/publish", &origin, &form);
    assert_eq!(status, 409, "the version loaded has moved on: {conflict}");
    assert!(conflict.contains("Nothing was written"));
    console.stop();
}

#[test]
#[ignore = "needs etcd (./scripts/test.sh runs it)"]
fn a_read_only_console_with_a_token_file_moves_nothing() {
    let ns = namespace();
    ok(
        coordctl(&ns).args(["config", "set", "app/db", r#"{"pool": 5}"#]),
        0,
    );
    let token_file = temp("console-token");
    std::fs::write(&token_file, "a-fixed-console-token-0001\n").unwrap();
    let token_arg = token_file.to_str().unwrap();
    let console = ConsoleProcess::start(
        coordctl(&ns).args(["console", "--read-only", "--token-file", token_arg]),
        Some("a-fixed-console-token-0001"),
    );
    let origin = format!("http://{}", console.addr);
    let (_, view) = console.get("/config/key?k=app/db");
    assert!(
        view.contains("read-only") && !view.contains("method=\"post\""),
        "{view}"
    );
    let before = writes_under(&ns);
    let version = json_lines(&ok(
        coordctl(&ns).args(["-o", "json", "config", "get", "app/db"]),
        0,
    ))[0]["version"]
        .clone();
    for (path, form) in [
        (
            "/config/publish",
            format!("key=app%2Fdb&version={version}&value=1&csrf=x"),
        ),
        (
            "/config/delete",
            format!("key=app%2Fdb&version={version}&csrf=x"),
        ),
        (
            "/config/rollback",
            format!("key=app%2Fdb&to={version}&expected={version}&csrf=x"),
        ),
    ] {
        assert_eq!(console.post(path, &origin, &form).0, 403, "{path}");
    }
    assert_eq!(writes_under(&ns), before, "the store did not move");
    console.stop();
    let o = run(coordctl(&ns).args(["console", "--listen", "0.0.0.0:0"]));
    assert_eq!(
        o.status.code(),
        Some(2),
        "non-loopback needs --allow-remote: {}",
        stderr(&o)
    );
    std::fs::write(&token_file, "short\n").unwrap();
    let o = run(coordctl(&ns).args(["console", "--token-file", token_arg]));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

#[test]
#[ignore = "needs etcd (./scripts/test.sh runs it)"]
fn config_export_then_import_elsewhere_round_trips_and_compares() {
    let (prod, staging) = (namespace(), namespace());
    ok(
        coordctl(&prod).args([
            "config",
            "set",
            "app/limits",
            r#"{ "rps":100,  "burst": 20 }"#,
        ]),
        0,
    );
    ok(
        coordctl(&prod).args(["config", "set", "app/motd", r#""<b>hi</b>""#]),
        0,
    );
    let file = temp("export.yaml");
    let file_arg = file.to_str().unwrap();
    ok(
        coordctl(&prod).args(["config", "export", "app/", "-f", file_arg]),
        0,
    );
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.contains("key: app/limits") && text.contains("codec: json"),
        "{text}"
    );
    // A dry run shows the diff and writes nothing.
    let shown = ok(
        coordctl(&staging).args(["config", "import", file_arg, "--dry-run"]),
        0,
    );
    assert!(
        shown.contains("create app/limits") && shown.contains("2 to change"),
        "{shown}"
    );
    let listed = ok(coordctl(&staging).args(["-o", "json", "config", "list"]), 0);
    assert!(listed.trim().is_empty(), "{listed}");
    ok(coordctl(&staging).args(["config", "import", file_arg]), 0);
    let exported = |ns: &str| -> Vec<Value> {
        let out = ok(
            coordctl(ns).args(["config", "export", "--format", "json"]),
            0,
        );
        let doc: Value = serde_json::from_str(&out).unwrap();
        doc["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| json_pick(k, &["key", "codec", "text"]))
            .collect()
    };
    assert_eq!(exported(&prod), exported(&staging), "exact round trip");
    let again = ok(coordctl(&staging).args(["config", "import", file_arg]), 0);
    assert!(again.contains("0 to change, 2 unchanged"), "{again}");
    // The import diffs against the store as it is when it runs: a key changed
    // there since is shown and overwritten (a change between the diff and the
    // write is refused: the library's conformance case).
    ok(
        coordctl(&prod).args(["config", "set", "app/limits", r#"{"rps": 1}"#]),
        0,
    );
    ok(
        coordctl(&prod).args(["config", "export", "app/", "-f", file_arg]),
        0,
    );
    ok(
        coordctl(&staging).args(["config", "set", "app/limits", r#"{"rps": 2}"#]),
        0,
    );
    let o = run(coordctl(&staging).args(["config", "import", file_arg, "--prune"]));
    assert_eq!(
        o.status.code(),
        Some(0),
        "planned against the current state: {}",
        stderr(&o)
    );
    let got = json_lines(&ok(
        coordctl(&staging).args(["-o", "json", "config", "get", "app/limits"]),
        0,
    ));
    assert_eq!(got[0]["value"]["rps"], 1);
}

/// `value` with only `fields`.
fn json_pick(value: &Value, fields: &[&str]) -> Value {
    let picked: serde_json::Map<String, Value> = fields
        .iter()
        .filter_map(|f| value.get(*f).map(|v| (f.to_string(), v.clone())))
        .collect();
    Value::Object(picked)
}

#[test]
#[ignore = "needs etcd (./scripts/test.sh runs it)"]
fn config_set_and_get_with_a_keyring_seal_and_open() {
    let ns = namespace();
    let keys = temp("keys.txt");
    // Two keys: k2 seals, k1 (rotated out) still opens.
    std::fs::write(
        &keys,
        "# id key\nk2 AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=\nk1 AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\n",
    )
    .unwrap();
    let keys_arg = keys.to_str().unwrap();
    ok(
        coordctl(&ns).args([
            "config",
            "set",
            "secrets/db",
            r#""hunter2""#,
            "--keyring",
            keys_arg,
        ]),
        0,
    );
    let stored = ok(coordctl(&ns).args(["config", "get", "secrets/db"]), 0);
    assert!(
        stored.contains("coordkit-sealed:v1:k2:") && !stored.contains("hunter2"),
        "{stored}"
    );
    let raw = ok(
        etcdctl().args([
            "get",
            &format!("{ns}config/secrets/db"),
            "--print-value-only",
        ]),
        0,
    );
    assert!(!raw.contains("hunter2"), "{raw}");
    let opened = json_lines(&ok(
        coordctl(&ns).args([
            "-o",
            "json",
            "config",
            "get",
            "secrets/db",
            "--keyring",
            keys_arg,
        ]),
        0,
    ));
    assert_eq!(opened[0]["value"], "hunter2");
    let wrong = temp("wrong.txt");
    std::fs::write(&wrong, "k2 CQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQk=\n").unwrap();
    let o = run(coordctl(&ns).args([
        "config",
        "get",
        "secrets/db",
        "--keyring",
        wrong.to_str().unwrap(),
    ]));
    assert_eq!(o.status.code(), Some(2), "a wrong key: {}", stderr(&o));
    assert!(stderr(&o).contains("does not open") && !stdout(&o).contains("hunter2"));
}

#[test]
#[ignore = "needs etcd (./scripts/test.sh runs it)"]
fn a_persistent_registration_stays_until_deregistered() {
    let ns = namespace();
    let out = json_lines(&ok(
        coordctl(&ns).args([
            "-o",
            "json",
            "register",
            "db",
            "db-1",
            "10.0.0.9",
            "5432",
            "--persistent",
        ]),
        0,
    ));
    assert_eq!(out[0]["persistent"], true, "{out:?}");
    // The process has exited: the instance stays, with no lease.
    let raw = ok(
        etcdctl().args(["get", &format!("{ns}service/db/db-1"), "-w", "json"]),
        0,
    );
    let doc: Value = serde_json::from_str(&raw).unwrap();
    assert!(doc["kvs"][0].get("lease").is_none(), "no lease: {raw}");
    let shown = json_lines(&ok(coordctl(&ns).args(["-o", "json", "service", "db"]), 0));
    assert_eq!(shown.len(), 1, "{shown:?}");
    ok(coordctl(&ns).args(["deregister", "db", "db-1"]), 0);
    let listed = ok(coordctl(&ns).args(["-o", "json", "service", "db"]), 0);
    assert!(listed.trim().is_empty(), "{listed}");
    let o = run(coordctl(&ns).args([
        "register",
        "db",
        "db-2",
        "10.0.0.9",
        "5432",
        "--persistent",
        "--ttl",
        "5s",
    ]));
    assert_eq!(o.status.code(), Some(2), "--persistent has no TTL");
}

#[test]
#[ignore = "needs etcd (./scripts/test.sh runs it)"]
fn config_gray_set_show_promote_and_drop() {
    let ns = namespace();
    ok(
        coordctl(&ns).args(["config", "set", "prod/shop/limit", "100"]),
        0,
    );
    ok(
        coordctl(&ns).args([
            "config",
            "gray",
            "set",
            "prod/shop/limit",
            "200",
            "--selector",
            "zone=eu-1",
        ]),
        0,
    );
    let shown = json_lines(&ok(
        coordctl(&ns).args(["-o", "json", "config", "gray", "show", "prod/shop/limit"]),
        0,
    ));
    assert_eq!(shown[0]["selector"]["zone"], "eu-1");
    assert_eq!(shown[0]["value"], 200);
    let version = shown[0]["version"].as_i64().unwrap();
    let main = json_lines(&ok(
        coordctl(&ns).args(["-o", "json", "config", "get", "prod/shop/limit"]),
        0,
    ));
    assert_eq!(main[0]["value"], 100, "the main value stays");
    let stale = run(coordctl(&ns).args([
        "config",
        "gray",
        "promote",
        "prod/shop/limit",
        "--if-version",
        &(version - 1).to_string(),
    ]));
    assert_eq!(stale.status.code(), Some(4), "{}", stderr(&stale));
    ok(
        coordctl(&ns).args([
            "config",
            "gray",
            "promote",
            "prod/shop/limit",
            "--if-version",
            &version.to_string(),
        ]),
        0,
    );
    let main = json_lines(&ok(
        coordctl(&ns).args(["-o", "json", "config", "get", "prod/shop/limit"]),
        0,
    ));
    assert_eq!(main[0]["value"], 200, "promoted");
    let none = run(coordctl(&ns).args(["config", "gray", "show", "prod/shop/limit"]));
    assert_eq!(none.status.code(), Some(3), "the release is gone");
    ok(
        coordctl(&ns).args([
            "config",
            "gray",
            "set",
            "prod/shop/limit",
            "300",
            "--selector",
            "zone=eu-1",
        ]),
        0,
    );
    ok(
        coordctl(&ns).args(["config", "gray", "drop", "prod/shop/limit"]),
        0,
    );
    assert_eq!(
        run(coordctl(&ns).args(["config", "gray", "show", "prod/shop/limit"]))
            .status
            .code(),
        Some(3)
    );
    let bad = run(coordctl(&ns).args([
        "config",
        "gray",
        "set",
        "prod/shop/limit",
        "1",
        "--selector",
        "zone",
    ]));
    assert_eq!(bad.status.code(), Some(2));
}

/// A prober's JSON lines, read in a thread as they come.
fn lines_of(child: &mut Child) -> std::sync::mpsc::Receiver<Value> {
    let (tx, rx) = std::sync::mpsc::channel();
    let out = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                if tx.send(v).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

/// The next line of `rx` with `event` (others skipped), within 30 s.
fn next_event(rx: &std::sync::mpsc::Receiver<Value>, event: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(v) if v["event"] == event => return v,
            Ok(_) => {}
            Err(e) => panic!("no {event:?} line: {e}"),
        }
    }
}

/// The health and prober `coordctl service` shows for the only instance.
fn probed(ns: &str, service: &str) -> (String, String) {
    let shown = json_lines(&ok(
        coordctl(ns).args(["-o", "json", "service", service]),
        0,
    ));
    let i = &shown[0];
    (
        i["health"].as_str().unwrap_or_default().to_string(),
        i["probe"]["prober"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

#[test]
#[ignore = "needs etcd (./scripts/test.sh runs it)"]
fn probers_take_turns_and_follow_an_instance_stopped_and_started() {
    let ns = namespace();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let mut registered =
        spawn(coordctl(&ns).args(["register", "web", "web-1", "127.0.0.1", &port]));
    assert!(first_line(&mut registered).contains("registered"));
    let prober = |name: &str| {
        spawn(coordctl(&ns).args([
            "-o",
            "json",
            "probe",
            "web=tcp",
            "--name",
            name,
            "--interval",
            "200ms",
            "--rise",
            "2",
            "--fall",
            "2",
            "--ttl",
            "2s",
        ]))
    };
    let mut a = prober("a");
    let a_lines = lines_of(&mut a);
    next_event(&a_lines, "active");
    let mut b = prober("b");
    let b_lines = lines_of(&mut b);
    let v = next_event(&a_lines, "verdict");
    assert_eq!(
        (v["id"].as_str(), v["health"].as_str()),
        (Some("web-1"), Some("passing"))
    );
    assert_eq!(probed(&ns, "web"), ("passing".into(), "a".into()));
    // The instance stops: critical, from the active prober only.
    drop(listener);
    let v = next_event(&a_lines, "verdict");
    assert_eq!(v["health"], "critical", "{v}");
    assert_eq!(probed(&ns, "web"), ("critical".into(), "a".into()));
    assert!(b_lines
        .try_iter()
        .all(|v| v["event"] != "active" && v["event"] != "verdict"));
    // The active prober dies without a word: the other takes over after its TTL.
    signal(&a, "KILL");
    let _ = a.wait();
    next_event(&b_lines, "active");
    let listener =
        std::net::TcpListener::bind(("127.0.0.1", port.parse::<u16>().unwrap())).unwrap();
    let v = next_event(&b_lines, "verdict");
    assert_eq!(v["health"], "passing", "{v}");
    assert_eq!(probed(&ns, "web"), ("passing".into(), "b".into()));
    drop(listener);
    signal(&b, "TERM");
    assert_eq!(b.wait().unwrap().code(), Some(0));
    signal(&registered, "TERM");
    assert_eq!(registered.wait().unwrap().code(), Some(0));
    let o = run(coordctl(&ns).args(["probe", "web=udp"]));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}
