//! Reaching the PostgreSQL the tests run against (`COORD_POSTGRES_URL`).

#![allow(dead_code)]

use std::time::Duration;

use coordkit_postgres::{PostgresBackend, PostgresConfig};

/// The server's URL. The tests that need it are `#[ignore]`d (a plain `cargo
/// test` shows them as ignored); run with `--include-ignored` and no server,
/// they fail here, never pass by skipping.
pub fn url() -> String {
    match std::env::var("COORD_POSTGRES_URL") {
        Ok(url) if !url.trim().is_empty() => url,
        _ => panic!(
            "COORD_POSTGRES_URL is not set: this test needs PostgreSQL (./scripts/test.sh starts one)"
        ),
    }
}

/// A schema no other test uses: a store of its own, from revision 1.
pub fn fresh_schema(test: &str) -> String {
    format!("t_{}_{}", test, std::process::id())
}

/// A configuration for `schema` on the test server.
pub fn config(schema: &str) -> PostgresConfig {
    PostgresConfig::new(url())
        .with_schema(schema)
        .with_pool_size(4)
}

/// A handle to `schema`.
pub async fn connect(schema: &str) -> PostgresBackend {
    PostgresBackend::connect(config(schema))
        .await
        .unwrap_or_else(|e| panic!("cannot connect to postgres: {e}"))
}

/// A plain connection for the test's own statements (as an operator would
/// type them in psql).
pub async fn admin() -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&url(), tokio_postgres::NoTls)
        .await
        .expect("admin connection");
    tokio::spawn(connection);
    client
}

/// Terminate the watch feed's LISTEN connection of `schema`'s handles; returns
/// how many were terminated.
pub async fn terminate_feed_listeners(schema: &str) -> i64 {
    let rows = admin()
        .await
        .query(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
            &[&format!("coordkit-feed {schema}")],
        )
        .await
        .expect("terminate");
    rows[0].get(0)
}

/// Wait (up to 10 s) until a watch feed of `schema`'s handles listens.
pub async fn wait_for_feed_listener(schema: &str) {
    let admin = admin().await;
    for _ in 0..200 {
        let rows = admin
            .query(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                &[&format!("coordkit-feed {schema}")],
            )
            .await
            .expect("pg_stat_activity");
        if rows[0].get::<_, i64>(0) > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no watch feed of {schema} listened again within 10 s");
}

/// Restart the server (`pg_ctl restart`, as the postgres user when root),
/// from the data dir in `COORD_POSTGRES_DATA`.
pub fn restart_server() {
    let data = std::env::var("COORD_POSTGRES_DATA").unwrap_or_else(|_| {
        panic!("COORD_POSTGRES_DATA is not set: the restart test needs the server's data dir (./scripts/test.sh sets it)")
    });
    let pg_ctl = "/usr/lib/postgresql/15/bin/pg_ctl";
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false);
    let mut command = if root {
        let mut c = std::process::Command::new("runuser");
        c.args(["-u", "postgres", "--", pg_ctl]);
        c
    } else {
        std::process::Command::new(pg_ctl)
    };
    // The server keeps logging where scripts/postgres-lib.sh started it.
    let log = std::path::Path::new(&data).with_file_name("server.log");
    let status = command
        .args(["-D", &data, "-m", "fast", "-w", "-t", "30", "-l"])
        .arg(&log)
        .arg("restart")
        .stdout(std::process::Stdio::null())
        .status()
        .expect("pg_ctl");
    assert!(status.success(), "pg_ctl restart failed: {status}");
}

/// Retry `f` until it succeeds (the server may be coming back).
pub async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = coordkit::Result<T>>,
{
    let mut last = None;
    for _ in 0..200 {
        match f().await {
            Ok(v) => return v,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} never succeeded: {last:?}");
}
