//! How to reach etcd.

use std::time::Duration;

use coordkit::{Limits, RetryPolicy};

/// Connection settings for [`crate::EtcdBackend`].
#[derive(Clone, Debug)]
pub struct EtcdConfig {
    /// etcd client URLs. Default: `http://127.0.0.1:2379`.
    pub endpoints: Vec<String>,
    /// User name for etcd's authentication, if enabled.
    pub username: Option<String>,
    /// Password for `username`.
    pub password: Option<String>,
    /// How long to wait for a connection. Default 5 s.
    pub connect_timeout: Duration,
    /// How long one request may take before it fails with `Timeout`. Default 5 s.
    pub request_timeout: Duration,
    /// The bounds coordkit enforces before sending; they must not exceed the server's
    /// (`--max-request-bytes`, `--max-txn-ops`, the minimum lease TTL, which is
    /// 1.5 × the election timeout rounded up: 2 s with etcd's defaults).
    pub limits: Limits,
    /// Retries of operations that are safe to repeat, used by the
    /// [`Coordinator`](coordkit::Coordinator) that [`crate::connect`] builds. Default: 5
    /// attempts, 200 ms doubling to at most 5 s.
    pub retry: RetryPolicy,
    /// TLS to etcd (feature `tls`).
    #[cfg(feature = "tls")]
    pub tls: Option<etcd_client::TlsOptions>,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        EtcdConfig {
            endpoints: vec!["http://127.0.0.1:2379".to_string()],
            username: None,
            password: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            limits: Limits::default(),
            retry: RetryPolicy::default(),
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

impl EtcdConfig {
    /// The defaults with these endpoints.
    pub fn with_endpoints<S: Into<String>>(endpoints: impl IntoIterator<Item = S>) -> Self {
        EtcdConfig {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }

    /// Authenticate as `username`.
    pub fn with_user(mut self, username: impl Into<String>, password: impl Into<String>) -> Self {
        self.username = Some(username.into());
        self.password = Some(password.into());
        self
    }

    /// Use `retry` for operations that are safe to repeat.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Endpoints from a comma-separated list, such as `COORD_ETCD_ENDPOINTS`.
    pub fn from_endpoint_list(list: &str) -> Self {
        Self::with_endpoints(
            list.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| {
                    if s.contains("://") {
                        s.to_string()
                    } else {
                        format!("http://{s}")
                    }
                }),
        )
    }
}
