//! Postgres failures as coordkit errors.

use coordkit::Error;
use tokio_postgres::error::SqlState;

/// A failure of `during`, as a coordkit error: connection failures and a
/// server going away are `Unavailable` (retryable; a write's outcome is then
/// unknown unless the caller knows it never committed), a cancelled statement
/// `Timeout`, credentials `AuthFailed`, a missing grant `PermissionDenied`,
/// the rest `Backend`.
pub(crate) fn from_pg(e: tokio_postgres::Error, during: &'static str) -> Error {
    let Some(db) = e.as_db_error() else {
        return Error::unavailable_from(format!("postgres: {during}: {e}"), e);
    };
    let code = db.code();
    if [
        SqlState::ADMIN_SHUTDOWN,
        SqlState::CRASH_SHUTDOWN,
        SqlState::CANNOT_CONNECT_NOW,
        SqlState::TOO_MANY_CONNECTIONS,
        SqlState::T_R_SERIALIZATION_FAILURE,
        SqlState::T_R_DEADLOCK_DETECTED,
        SqlState::CONNECTION_FAILURE,
        SqlState::CONNECTION_EXCEPTION,
        SqlState::READ_ONLY_SQL_TRANSACTION,
    ]
    .contains(code)
    {
        let reason = format!("postgres: {during}: {}", db.message());
        return Error::unavailable_from(reason, e);
    }
    if *code == SqlState::QUERY_CANCELED {
        return Error::Timeout { operation: during };
    }
    if *code == SqlState::INVALID_PASSWORD || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
    {
        return Error::AuthFailed {
            reason: db.message().to_string(),
        };
    }
    if *code == SqlState::INSUFFICIENT_PRIVILEGE {
        return Error::PermissionDenied {
            reason: db.message().to_string(),
        };
    }
    if *code == SqlState::DISK_FULL {
        return Error::Alarm {
            alarm: "DISK_FULL".to_string(),
            reason: db.message().to_string(),
        };
    }
    Error::Backend {
        backend: "postgres",
        source: Box::new(e),
    }
}

/// A failure to get a pooled connection.
pub(crate) fn from_pool(e: deadpool_postgres::PoolError) -> Error {
    match e {
        deadpool_postgres::PoolError::Backend(e) => from_pg(e, "connect"),
        other => Error::unavailable_from(format!("postgres: no connection: {other}"), other),
    }
}
