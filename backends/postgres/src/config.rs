//! How to reach the database and how the backend behaves there.

use std::time::Duration;

use coordkit::{Error, Result};

/// The connection and behaviour of a [`PostgresBackend`](crate::PostgresBackend).
///
/// ```
/// use coordkit_postgres::PostgresConfig;
///
/// let config = PostgresConfig::new("postgres://app@127.0.0.1:5432/app")
///     .with_schema("coordkit_orders")
///     .with_pool_size(16);
/// assert_eq!(config.schema(), "coordkit_orders");
/// ```
#[derive(Clone, Debug)]
pub struct PostgresConfig {
    pub(crate) url: String,
    pub(crate) schema: String,
    pub(crate) pool_size: usize,
    pub(crate) request_timeout: Duration,
    pub(crate) poll_interval: Duration,
    pub(crate) listen: bool,
    pub(crate) reap_interval: Duration,
}

impl PostgresConfig {
    /// A database URL (`postgres://user:password@host:port/database`, or the
    /// `key=value` form of libpq), with the defaults: schema `coordkit`, a pool
    /// of 8 connections, a 10 s request timeout, LISTEN/NOTIFY wake-ups with a
    /// safety poll every 500 ms, and overdue leases looked for every 200 ms.
    pub fn new(url: impl Into<String>) -> Self {
        PostgresConfig {
            url: url.into(),
            schema: "coordkit".to_string(),
            pool_size: 8,
            request_timeout: Duration::from_secs(10),
            poll_interval: Duration::from_millis(500),
            listen: true,
            reap_interval: Duration::from_millis(200),
        }
    }

    /// The Postgres schema holding this store's tables, so several stores (or
    /// apps) share one database: lowercase ASCII letters, digits and `_`, not
    /// starting with a digit, at most 48 bytes. Created on connect if missing.
    pub fn with_schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// The most connections the handle's pool opens (at least 1). The watch
    /// feed, when a watch is open, holds one more for LISTEN.
    pub fn with_pool_size(mut self, size: usize) -> Self {
        self.pool_size = size;
        self
    }

    /// How long one call may take before it fails with `Timeout` (a write that
    /// timed out may or may not have applied).
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How often the watch feed reads the history log without a notification:
    /// the bound on how late an event is when a notification is lost or the
    /// listening connection died silently, and the whole delay in poll-only mode.
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Poll only, without LISTEN: for a pooler in transaction mode (PgBouncer),
    /// which does not keep a session's LISTEN. Events then arrive within the
    /// poll interval.
    pub fn poll_only(mut self) -> Self {
        self.listen = false;
        self
    }

    /// How often this handle looks for leases past their deadline, and ends
    /// them (any handle may; one is enough).
    pub fn with_reap_interval(mut self, interval: Duration) -> Self {
        self.reap_interval = interval;
        self
    }

    /// The schema's name.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// The URL with any password replaced by `***`, for messages.
    pub fn redacted_url(&self) -> String {
        redact(&self.url)
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let s = self.schema.as_bytes();
        let valid = !s.is_empty()
            && s.len() <= 48
            && !s[0].is_ascii_digit()
            && s.iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_');
        if !valid {
            return Err(Error::invalid(
                "schema",
                format!(
                    "{:?}: lowercase ASCII letters, digits and `_`, not starting with a digit, 1 to 48 bytes",
                    self.schema
                ),
            ));
        }
        if self.pool_size == 0 {
            return Err(Error::invalid("pool_size", "must be at least 1"));
        }
        if self.request_timeout.is_zero()
            || self.poll_interval.is_zero()
            || self.reap_interval.is_zero()
        {
            return Err(Error::invalid(
                "interval",
                "the request timeout, poll interval and reap interval must be positive",
            ));
        }
        Ok(())
    }
}

/// `url` with the password of a `scheme://user:password@` part or a
/// `password=` pair hidden.
fn redact(url: &str) -> String {
    if let Some(rest) = url.split_once("://") {
        if let Some((auth, host)) = rest.1.split_once('@') {
            if let Some((user, _)) = auth.split_once(':') {
                return format!("{}://{user}:***@{host}", rest.0);
            }
        }
        return url.to_string();
    }
    url.split_whitespace()
        .map(|pair| match pair.split_once('=') {
            Some(("password", _)) => "password=***".to_string(),
            _ => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_never_shows_in_messages() {
        assert_eq!(
            redact("postgres://u:secret@h:5/db"),
            "postgres://u:***@h:5/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            redact("host=h password=secret user=u"),
            "host=h password=*** user=u"
        );
    }

    #[test]
    fn a_schema_name_is_checked_before_it_reaches_sql() {
        for bad in ["", "1abc", "Coord", "a-b", "a\"b", &"x".repeat(49)] {
            let err = PostgresConfig::new("x")
                .with_schema(bad)
                .validate()
                .unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::InvalidArgument {
                        argument: "schema",
                        ..
                    }
                ),
                "{bad:?}"
            );
        }
        PostgresConfig::new("x")
            .with_schema("app_1")
            .validate()
            .unwrap();
    }
}
