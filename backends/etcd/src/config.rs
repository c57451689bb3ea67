//! How to reach etcd.

use std::time::Duration;

use coordkit::{Limits, RetryPolicy};

/// Connection settings for [`crate::EtcdBackend`].
///
/// `Debug` prints the password as `<redacted>`.
#[derive(Clone)]
#[non_exhaustive]
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
    /// HTTP/2 keep-alive: a ping on a connection that carries a call or a
    /// stream, once this long has passed without a frame from the member.
    /// Default 5 s, etcd's `--grpc-keepalive-min-time` (pinging more often makes
    /// etcd close the connection as abusive).
    pub keep_alive_interval: Duration,
    /// HTTP/2 keep-alive: a connection whose ping is not answered this fast is
    /// closed. Default 3 s.
    pub keep_alive_timeout: Duration,
    /// The most a watch or keep-alive stream may leave a request unanswered
    /// before the backend moves it to another endpoint. The bound in force is a
    /// fifth of the smallest live lease TTL (at least 0.5 s), capped by this.
    /// Default 3 s.
    pub stream_liveness: Duration,
    /// The bounds coordkit enforces before sending; they must not exceed the server's
    /// (`--max-request-bytes`, `--max-txn-ops`, the minimum lease TTL, which is
    /// 1.5 × the election timeout rounded up: 2 s with etcd's defaults).
    pub limits: Limits,
    /// Retries of operations that are safe to repeat, used by the
    /// [`Coordinator`](coordkit::Coordinator) that [`crate::connect`] builds. Default: 5
    /// attempts, 200 ms doubling to at most 5 s.
    pub retry: RetryPolicy,
    /// TLS to etcd (feature `tls`): needed for, and only for, `https://`
    /// endpoints. See [`crate::TlsOptions`].
    #[cfg(feature = "tls")]
    pub tls: Option<crate::TlsOptions>,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        EtcdConfig {
            endpoints: vec!["http://127.0.0.1:2379".to_string()],
            username: None,
            password: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            keep_alive_interval: Duration::from_secs(5),
            keep_alive_timeout: Duration::from_secs(3),
            stream_liveness: Duration::from_secs(3),
            limits: Limits::default(),
            retry: RetryPolicy::default(),
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

impl std::fmt::Debug for EtcdConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("EtcdConfig");
        d.field("endpoints", &self.endpoints)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("keep_alive_interval", &self.keep_alive_interval)
            .field("keep_alive_timeout", &self.keep_alive_timeout)
            .field("stream_liveness", &self.stream_liveness)
            .field("limits", &self.limits)
            .field("retry", &self.retry);
        #[cfg(feature = "tls")]
        d.field("tls", &self.tls.as_ref().map(|_| "<set>"));
        d.finish()
    }
}

impl EtcdConfig {
    /// Check the settings: at least one endpoint, each an `http://` or `https://`
    /// URL (`https://` needs the `tls` feature), user and password both set or
    /// both unset, timeouts above zero, and a valid retry policy.
    pub fn validate(&self) -> coordkit::Result<()> {
        use coordkit::Error;
        if self.endpoints.is_empty() {
            return Err(Error::invalid(
                "endpoints",
                "at least one endpoint is needed",
            ));
        }
        let https = self
            .endpoints
            .iter()
            .filter(|e| e.starts_with("https://"))
            .count();
        if https > 0 && https < self.endpoints.len() {
            return Err(Error::invalid(
                "endpoints",
                "mixes http:// and https:// endpoints: one cluster speaks one of them",
            ));
        }
        #[cfg(feature = "tls")]
        match (https > 0, self.tls.is_some()) {
            (true, false) => {
                return Err(Error::invalid(
                    "tls",
                    "https:// endpoints need `tls` set (at least the CA that signed etcd's certificate)",
                ))
            }
            (false, true) => {
                return Err(Error::invalid(
                    "endpoints",
                    "`tls` is set but the endpoints are http://: use https:// URLs",
                ))
            }
            _ => {}
        }
        for e in &self.endpoints {
            if e.starts_with("https://") {
                if cfg!(not(feature = "tls")) {
                    return Err(Error::invalid(
                        "endpoints",
                        format!("{e} is https: enable coordkit-etcd's `tls` feature"),
                    ));
                }
            } else if !e.starts_with("http://") {
                return Err(Error::invalid(
                    "endpoints",
                    format!("{e} is not an http:// or https:// URL"),
                ));
            }
        }
        if self.username.is_some() != self.password.is_some() {
            return Err(Error::invalid(
                "username",
                "user and password go together: set both (with_user) or neither",
            ));
        }
        for (name, d) in [
            ("connect_timeout", self.connect_timeout),
            ("request_timeout", self.request_timeout),
            ("keep_alive_interval", self.keep_alive_interval),
            ("keep_alive_timeout", self.keep_alive_timeout),
            ("stream_liveness", self.stream_liveness),
        ] {
            if d.is_zero() {
                return Err(Error::invalid(name, "must be above zero"));
            }
        }
        self.retry.validate()
    }

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
