//! TLS against a real etcd: certificates made here (a CA, a server certificate
//! for 127.0.0.1, a client certificate), etcd serving https and requiring client
//! certificates. Needs the `tls` feature (`./scripts/test.sh` runs it).
#![cfg(feature = "tls")]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use coordkit::{BackendExt, Error};
use coordkit_etcd::{Certificate, EtcdBackend, EtcdConfig, Identity, TlsOptions};

mod common;
use common::process::{self, EtcdProcess};

fn openssl(dir: &Path, args: &[&str]) {
    let ok = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl runs (./scripts/test.sh installs it)");
    assert!(ok.success(), "openssl {args:?}");
}

/// A self-signed CA (`ca.key`, `ca.crt`) named `name`, in `dir`.
fn certificate_authority(dir: &Path, name: &str) {
    let subject = format!("/CN={name}");
    openssl(
        dir,
        &[
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
            "-days", "1", "-subj", &subject,
        ],
    );
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, in `dir`.
fn certificates(dir: &Path) {
    certificate_authority(dir, "coordkit test CA");
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n",
    )
    .unwrap();
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    for who in ["server", "client"] {
        let (key, csr, crt, ext) = (
            format!("{who}.key"),
            format!("{who}.csr"),
            format!("{who}.crt"),
            format!("{who}.ext"),
        );
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                &format!("/CN={who}"),
            ],
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &crt,
                "-days",
                "1",
                "-extfile",
                &ext,
            ],
        );
    }
}

/// etcd serving https on a free port, requiring client certificates.
struct TlsEtcd {
    _etcd: EtcdProcess,
    dir: PathBuf,
    port: u16,
}

impl TlsEtcd {
    fn start() -> TlsEtcd {
        assert!(process::etcd_binary_available());
        let etcd = EtcdProcess::start_tls(|dir| {
            certificates(dir);
            let file = |name: &str| dir.join(name).display().to_string();
            vec![
                "--cert-file".into(),
                file("server.crt"),
                "--key-file".into(),
                file("server.key"),
                "--client-cert-auth".into(),
                "--trusted-ca-file".into(),
                file("ca.crt"),
            ]
        });
        let (dir, port) = (etcd.dir.clone(), etcd.client_port);
        TlsEtcd {
            _etcd: etcd,
            dir,
            port,
        }
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.dir.join(name)).unwrap()
    }

    fn tls(&self, with_client_cert: bool) -> TlsOptions {
        let tls = TlsOptions::new().ca_certificate(Certificate::from_pem(self.read("ca.crt")));
        if with_client_cert {
            tls.identity(Identity::from_pem(
                self.read("client.crt"),
                self.read("client.key"),
            ))
        } else {
            tls
        }
    }

    fn config(&self, scheme: &str, tls: Option<TlsOptions>) -> EtcdConfig {
        let mut config =
            EtcdConfig::with_endpoints([format!("{scheme}://127.0.0.1:{}", self.port)]);
        config.connect_timeout = Duration::from_secs(3);
        config.tls = tls;
        config
    }

    /// Connect with the right settings, retrying while etcd starts.
    async fn connect(&self) -> EtcdBackend {
        let mut last = None;
        for _ in 0..100 {
            match EtcdBackend::connect(self.config("https", Some(self.tls(true)))).await {
                Ok(b) => return b,
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no TLS connection to etcd: {last:?}");
    }
}

/// Mutual TLS works end to end (the recipes too); what does not is refused with
/// an error that says so: no client certificate, a CA that did not sign the
/// server's certificate, `http://` to a TLS server, `https://` without `tls`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs etcd (./scripts/test.sh runs it)"]
async fn mutual_tls_works_and_mismatches_are_refused_clearly() {
    let etcd = TlsEtcd::start();
    let backend = etcd.connect().await;
    backend.put("k", "over tls").await.unwrap();
    assert_eq!(backend.get("k").await.unwrap().unwrap().value, b"over tls");
    let coordinator = coordkit::Coordinator::new(std::sync::Arc::new(backend));
    let guard = coordinator
        .lock()
        .acquire("tls", Duration::from_secs(5))
        .await
        .unwrap();
    guard.unlock().await.unwrap();

    // No client certificate: the server refuses the handshake.
    let err = EtcdBackend::connect(etcd.config("https", Some(etcd.tls(false))))
        .await
        .unwrap_err();
    assert!(
        err.is_retryable() || matches!(err, Error::Unavailable { .. }),
        "{err:?}"
    );
    eprintln!("without a client certificate: {err}");

    // A CA that did not sign the server's certificate.
    let other = std::env::temp_dir().join(format!("coordkit-tls-other-{}", etcd.port));
    std::fs::create_dir_all(&other).unwrap();
    certificate_authority(&other, "another CA");
    let wrong = TlsOptions::new()
        .ca_certificate(Certificate::from_pem(
            std::fs::read(other.join("ca.crt")).unwrap(),
        ))
        .identity(Identity::from_pem(
            etcd.read("client.crt"),
            etcd.read("client.key"),
        ));
    let err = EtcdBackend::connect(etcd.config("https", Some(wrong)))
        .await
        .unwrap_err();
    eprintln!("with another CA: {err}");
    assert!(
        err.to_string().contains("UnknownIssuer") || err.to_string().contains("CA"),
        "the error does not name the certificate problem: {err}"
    );
    let _ = std::fs::remove_dir_all(other);

    // http:// to a TLS server.
    let err = EtcdBackend::connect(etcd.config("http", None))
        .await
        .unwrap_err();
    let text = err.to_string();
    eprintln!("http to a TLS server: {text}");
    assert!(
        text.contains("https") || text.contains("TLS"),
        "the error does not hint at TLS: {text}"
    );

    // https:// without `tls`, and `tls` with http://: refused before connecting.
    let err = EtcdBackend::connect(etcd.config("https", None))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidArgument { argument, .. } if *argument == "tls"),
        "{err:?}"
    );
    let err = EtcdBackend::connect(etcd.config("http", Some(etcd.tls(true))))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidArgument { argument, .. } if *argument == "endpoints"),
        "{err:?}"
    );
}
