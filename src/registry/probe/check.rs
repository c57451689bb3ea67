//! How a prober checks one instance: a TCP connect, an HTTP GET's status, or
//! the standard gRPC health service.

use std::time::Duration;

use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::error::{Error, Result};

/// What a prober asks an instance (at its registered address and port).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Check {
    /// A TCP connection is accepted.
    Tcp,
    /// `GET <path>` over HTTP/1.1 answers with a 2xx status.
    Http {
        /// The path asked, starting with `/`.
        path: String,
    },
    /// The standard gRPC health service (`grpc.health.v1.Health/Check`)
    /// answers `SERVING` for `service` (empty: the server as a whole).
    Grpc {
        /// The service name asked about.
        service: String,
    },
}

/// One check's result: passed or not, and what was seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub(crate) passed: bool,
    pub(crate) detail: String,
}

impl Outcome {
    fn failed(detail: impl Into<String>) -> Self {
        Outcome {
            passed: false,
            detail: detail.into(),
        }
    }
}

impl Check {
    /// `GET path`, passing on a 2xx status.
    pub fn http(path: impl Into<String>) -> Self {
        Check::Http { path: path.into() }
    }

    /// The gRPC health service, asked about `service` (empty: the whole server).
    pub fn grpc(service: impl Into<String>) -> Self {
        Check::Grpc {
            service: service.into(),
        }
    }

    /// Check the instance at `address:port`, giving up after `timeout`.
    pub(crate) async fn run(&self, address: &str, port: u16, timeout: Duration) -> Outcome {
        let authority = if address.contains(':') {
            format!("[{address}]:{port}")
        } else {
            format!("{address}:{port}")
        };
        let checked = tokio::time::timeout(timeout, self.ask(&authority)).await;
        match checked {
            Ok(outcome) => outcome,
            Err(_) => Outcome::failed(format!("no answer within {timeout:?}")),
        }
    }

    async fn ask(&self, authority: &str) -> Outcome {
        match self {
            Check::Tcp => match TcpStream::connect(authority).await {
                Ok(_) => Outcome {
                    passed: true,
                    detail: "connected".into(),
                },
                Err(e) => Outcome::failed(e.to_string()),
            },
            Check::Http { path } => http(authority, path).await,
            Check::Grpc { service } => grpc(authority, service).await,
        }
    }
}

async fn http(authority: &str, path: &str) -> Outcome {
    let stream = match TcpStream::connect(authority).await {
        Ok(s) => s,
        Err(e) => return Outcome::failed(e.to_string()),
    };
    let (mut sender, connection) =
        match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
            Ok(pair) => pair,
            Err(e) => return Outcome::failed(format!("HTTP: {e}")),
        };
    // The connection is driven by a task of its own (it may close as soon as
    // the answer is in: an HTTP/1.0 server), ended with this check.
    let driver = AbortOnDrop(tokio::spawn(async move {
        let _ = connection.await;
    }));
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::USER_AGENT, "coordkit-prober")
        .body(Empty::<Bytes>::new());
    let request = match request {
        Ok(r) => r,
        Err(e) => return Outcome::failed(format!("HTTP: {e}")),
    };
    let answer = sender.send_request(request).await;
    drop(driver);
    match answer {
        Ok(resp) => Outcome {
            passed: resp.status().is_success(),
            detail: format!("HTTP {}", resp.status().as_u16()),
        },
        Err(e) => Outcome::failed(format!("HTTP: {e}")),
    }
}

async fn grpc(authority: &str, service: &str) -> Outcome {
    let endpoint = match tonic::transport::Endpoint::from_shared(format!("http://{authority}")) {
        Ok(e) => e,
        Err(e) => return Outcome::failed(format!("gRPC: {e}")),
    };
    let channel = match endpoint.connect().await {
        Ok(c) => c,
        Err(e) => return Outcome::failed(format!("gRPC: {}", source_text(&e))),
    };
    let asked = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_string(),
        })
        .await;
    match asked {
        Ok(resp) => {
            let status = resp.into_inner().status();
            Outcome {
                passed: status == ServingStatus::Serving,
                detail: format!("gRPC {}", status.as_str_name()),
            }
        }
        Err(status) => Outcome::failed(format!("gRPC {:?}: {}", status.code(), status.message())),
    }
}

/// A task aborted when this is dropped (a check that ends, or times out).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// An error with its causes, for a detail line.
fn source_text(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

impl std::str::FromStr for Check {
    type Err = Error;

    /// `tcp`, `http` (path `/`), `http:/health`, `grpc` (the whole server) or
    /// `grpc:<service>`.
    fn from_str(s: &str) -> Result<Self> {
        let (kind, arg) = s.split_once(':').map_or((s, None), |(k, a)| (k, Some(a)));
        match (kind, arg) {
            ("tcp", None) => Ok(Check::Tcp),
            ("http", None) => Ok(Check::http("/")),
            ("http", Some(path)) if path.starts_with('/') => Ok(Check::http(path)),
            ("grpc", arg) => Ok(Check::grpc(arg.unwrap_or_default())),
            _ => Err(Error::invalid(
                "check",
                format!("expected tcp, http, http:/<path>, grpc or grpc:<service> (got {s:?})"),
            )),
        }
    }
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Check::Tcp => write!(f, "tcp"),
            Check::Http { path } => write!(f, "http:{path}"),
            Check::Grpc { service } if service.is_empty() => write!(f, "grpc"),
            Check::Grpc { service } => write!(f, "grpc:{service}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_are_read_from_their_text_and_written_back() {
        for text in [
            "tcp",
            "http:/",
            "http:/health",
            "grpc",
            "grpc:orders.v1.Orders",
        ] {
            let check: Check = text.parse().unwrap();
            assert_eq!(check.to_string(), text);
        }
        assert_eq!("http".parse::<Check>().unwrap(), Check::http("/"));
        for bad in ["", "udp", "http:health", "tcp:80"] {
            assert!(bad.parse::<Check>().is_err(), "{bad:?} accepted");
        }
    }

    /// A server that answers and closes at once (HTTP/1.0, as Python's
    /// `http.server`): the answer counts, however the close races it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_answer_followed_by_a_close_passes() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await;
            }
        });
        for _ in 0..50 {
            let outcome = Check::http("/")
                .run("127.0.0.1", port, Duration::from_secs(5))
                .await;
            assert_eq!(
                outcome,
                Outcome {
                    passed: true,
                    detail: "HTTP 200".into()
                }
            );
        }
    }

    #[tokio::test]
    async fn a_closed_port_fails_each_check_with_what_was_seen() {
        // A port just freed: nothing listens on it.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        for check in [Check::Tcp, Check::http("/"), Check::grpc("")] {
            let outcome = check.run("127.0.0.1", port, Duration::from_secs(5)).await;
            assert!(!outcome.passed, "{check}: {outcome:?}");
            assert!(!outcome.detail.is_empty());
        }
    }
}
