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
