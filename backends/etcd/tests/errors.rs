//! etcd's own refusals mapped onto coordkit's errors, on private etcd processes.

mod common;

use common::process::{etcd_binary_available, EtcdProcess};
use coordkit::{BackendExt, Error, Limits};
use coordkit_etcd::{EtcdBackend, EtcdConfig};

async fn etcdctl(endpoint: &str, args: &[&str]) {
    let status = tokio::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", endpoint])
        .args(args)
        .stdout(std::process::Stdio::null())
        .status()
        .await
        .expect("etcdctl runs");
    assert!(status.success(), "etcdctl {args:?} failed");
}

/// Wrong credentials fail with `AuthFailed`; right ones work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs etcd (./scripts/test.sh runs it)"]
async fn wrong_password_is_auth_failed() {
    if !etcd_binary_available() {
        return;
    }
    let etcd = EtcdProcess::start();
    drop(EtcdProcess::connect_to(etcd.client_port).await);
    let endpoint = etcd.endpoint();
    etcdctl(
        &endpoint,
        &["user", "add", "root", "--new-user-password=s3cret"],
    )
    .await;
    etcdctl(&endpoint, &["auth", "enable"]).await;
    let bad = EtcdConfig::with_endpoints([endpoint.clone()]).with_user("root", "wrong");
    let err = EtcdBackend::connect(bad).await.unwrap_err();
    assert!(matches!(err, Error::AuthFailed { .. }), "{err:?}");
    let good = EtcdConfig::with_endpoints([endpoint]).with_user("root", "s3cret");
    let b = EtcdBackend::connect(good).await.unwrap();
    b.put("k", "v").await.unwrap();
}

/// A value that passes coordkit's configured limit but not the server's
/// `--max-request-bytes` is `InvalidArgument` naming the value, and nothing is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs etcd (./scripts/test.sh runs it)"]
async fn server_side_request_limit_is_invalid_value() {
    if !etcd_binary_available() {
        return;
    }
    let etcd = EtcdProcess::start_with(&["--max-request-bytes", "4096"]);
    drop(EtcdProcess::connect_to(etcd.client_port).await);
    let mut config = EtcdConfig::with_endpoints([etcd.endpoint()]);
    config.limits = Limits::default(); // larger than this server accepts
    let b = EtcdBackend::connect(config).await.unwrap();
    let err = b.put("big", vec![1u8; 10_000]).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidArgument {
                argument: "value",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(b.get("big").await.unwrap().is_none());
}

/// A key that passes coordkit's checks but makes the request larger than the
/// server's `--max-request-bytes` is `InvalidArgument` naming the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs etcd (./scripts/test.sh runs it)"]
async fn server_side_request_limit_names_an_overlong_key() {
    if !etcd_binary_available() {
        return;
    }
    let etcd = EtcdProcess::start_with(&["--max-request-bytes", "4096"]);
    drop(EtcdProcess::connect_to(etcd.client_port).await);
    let b = EtcdBackend::connect(EtcdConfig::with_endpoints([etcd.endpoint()]))
        .await
        .unwrap();
    let key = "k".repeat(10_000);
    let err = b.put(key.as_str(), "small").await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidArgument {
                argument: "key",
                ..
            }
        ),
        "{err:?}"
    );
}

/// The NOSPACE alarm (backend quota reached) is `Alarm { alarm: "NOSPACE" }`, not
/// retryable: an operator must act.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs etcd (./scripts/test.sh runs it)"]
async fn nospace_alarm_is_its_own_error() {
    if !etcd_binary_available() {
        return;
    }
    let etcd = EtcdProcess::start_with(&["--quota-backend-bytes", "1048576"]);
    drop(EtcdProcess::connect_to(etcd.client_port).await);
    let b = EtcdBackend::connect(EtcdConfig::with_endpoints([etcd.endpoint()]))
        .await
        .unwrap();
    let value = vec![7u8; 100_000];
    let mut refused = None;
    for i in 0..200 {
        if let Err(e) = b.put(format!("fill/{i}"), value.clone()).await {
            refused = Some(e);
            break;
        }
    }
    let err = refused.expect("etcd never refused a write past its quota");
    match &err {
        Error::Alarm { alarm, .. } => assert_eq!(alarm, "NOSPACE"),
        other => panic!("expected the NOSPACE alarm, got {other:?}"),
    }
    assert!(!err.is_retryable());
}

/// A user whose role covers one prefix gets `PermissionDenied` outside it (and
/// `AuthFailed` stays for bad credentials).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs etcd (./scripts/test.sh runs it)"]
async fn missing_permission_is_permission_denied() {
    if !etcd_binary_available() {
        return;
    }
    let etcd = EtcdProcess::start();
    drop(EtcdProcess::connect_to(etcd.client_port).await);
    let endpoint = etcd.endpoint();
    for args in [
        &["user", "add", "root", "--new-user-password=s3cret"][..],
        &["user", "grant-role", "root", "root"],
        &["role", "add", "app"],
        &[
            "role",
            "grant-permission",
            "app",
            "--prefix=true",
            "readwrite",
            "coord/app/",
        ],
        &["user", "add", "app", "--new-user-password=pw"],
        &["user", "grant-role", "app", "app"],
        &["auth", "enable"],
    ] {
        etcdctl(&endpoint, args).await;
    }
    let b = EtcdBackend::connect(EtcdConfig::with_endpoints([endpoint]).with_user("app", "pw"))
        .await
        .unwrap();
    b.put("coord/app/x", "allowed").await.unwrap();
    let err = b.put("other/x", "denied").await.unwrap_err();
    assert!(matches!(err, Error::PermissionDenied { .. }), "{err:?}");
    assert!(!err.is_retryable());
}

/// A JWT issued before the auth store changed ("auth revision is old"; etcd's
/// simple tokens never are, they take the current revision) is refreshed and
/// the request sent once more: the caller sees no error, for writes and reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs etcd (./scripts/test.sh runs it)"]
async fn an_old_auth_revision_refreshes_the_token() {
    if !etcd_binary_available() {
        return;
    }
    let keys = std::env::temp_dir().join(format!("coordkit-jwt-{}", std::process::id()));
    std::fs::create_dir_all(&keys).unwrap();
    let (private, public) = (keys.join("jwt.key"), keys.join("jwt.pub"));
    for args in [
        vec!["genrsa", "-out", private.to_str().unwrap(), "2048"],
        vec![
            "rsa",
            "-in",
            private.to_str().unwrap(),
            "-pubout",
            "-out",
            public.to_str().unwrap(),
        ],
    ] {
        let ok = std::process::Command::new("openssl")
            .args(&args)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl runs (./scripts/test.sh installs it)");
        assert!(ok.success(), "openssl {args:?}");
    }
    let token = format!(
        "--auth-token=jwt,pub-key={},priv-key={},sign-method=RS256,ttl=10m",
        public.display(),
        private.display()
    );
    let etcd = EtcdProcess::start_with(&[&token]);
    drop(EtcdProcess::connect_to(etcd.client_port).await);
    let endpoint = etcd.endpoint();
    etcdctl(
        &endpoint,
        &["user", "add", "root", "--new-user-password=s3cret"],
    )
    .await;
    etcdctl(&endpoint, &["auth", "enable"]).await;
    let b = EtcdBackend::connect(
        EtcdConfig::with_endpoints([endpoint.clone()]).with_user("root", "s3cret"),
    )
    .await
    .unwrap();
    b.put("k", "before").await.unwrap();
    for i in 0..3 {
        // Each change of users or roles raises the auth revision and makes
        // every token issued before it old.
        let name = format!("other{i}");
        let user = [
            "--user=root:s3cret",
            "user",
            "add",
            &name,
            "--new-user-password=x",
        ];
        etcdctl(&endpoint, &user).await;
        let put = b.put("k", format!("after {i}")).await;
        assert!(put.is_ok(), "a put after auth change {i}: {put:?}");
        let role = format!("role{i}");
        etcdctl(&endpoint, &["--user=root:s3cret", "role", "add", &role]).await;
        let got = b.get("k").await;
        assert!(got.is_ok(), "a get after auth change {i}: {got:?}");
    }
    let _ = std::fs::remove_dir_all(keys);
}

/// A request that cannot reach the first endpoint (nothing listens there) goes
/// to the next one, writes included: the caller sees no connect error. With no
/// endpoint reachable, the error names the endpoint and keeps its source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs etcd (./scripts/test.sh runs it)"]
async fn unsent_requests_go_to_the_next_endpoint() {
    if !etcd_binary_available() {
        return;
    }
    let etcd = EtcdProcess::start();
    drop(EtcdProcess::connect_to(etcd.client_port).await);
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let b = EtcdBackend::connect(EtcdConfig::with_endpoints([dead.clone(), etcd.endpoint()]))
        .await
        .unwrap();
    for i in 0..20 {
        b.put(format!("k{i}"), "v").await.unwrap();
    }
    let mut only_dead = EtcdConfig::with_endpoints([dead.clone()]);
    only_dead.connect_timeout = std::time::Duration::from_secs(1);
    let err = EtcdBackend::connect(only_dead).await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert!(err.to_string().contains(&dead), "names no endpoint: {err}");
    assert!(
        std::error::Error::source(&err).is_some(),
        "the cause is gone: {err:?}"
    );
}

/// Bad configs are refused before any connection: one of user and password only,
/// a URL without a scheme, an https URL without the `tls` feature; `Debug`
/// never prints the password.
#[tokio::test]
async fn bad_configs_are_invalid_and_debug_redacts_the_password() {
    let mut half = EtcdConfig::with_endpoints(["http://127.0.0.1:1"]);
    half.username = Some("u".into());
    let err = EtcdBackend::connect(half).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidArgument {
                argument: "username",
                ..
            }
        ),
        "{err:?}"
    );
    let err = EtcdBackend::connect(EtcdConfig::with_endpoints(["127.0.0.1:2379"]))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidArgument {
                argument: "endpoints",
                ..
            }
        ),
        "{err:?}"
    );
    if cfg!(not(feature = "tls")) {
        let err = EtcdBackend::connect(EtcdConfig::with_endpoints(["https://127.0.0.1:2379"]))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("tls"), "{err}");
    }
    let config = EtcdConfig::with_endpoints(["http://127.0.0.1:1"]).with_user("u", "hunter2");
    let shown = format!("{config:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("<redacted>"), "{shown}");
}
