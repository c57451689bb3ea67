//! The one error type shared by the primitive, every backend and every recipe.

/// The result type used throughout coordkit.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A boxed error kept as the [`std::error::Error::source`] of an [`Error`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in coordkit.
///
/// Each variant means the same thing on every backend; a backend converts its own
/// errors into these. Match on the variants you act upon and treat the rest as fatal;
/// [`Error::is_retryable`] says which failures may succeed when tried again.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The key does not exist.
    #[error("key not found: {key}")]
    NotFound {
        /// The key, as the caller named it.
        key: String,
    },
    /// A compare-and-set found another version than the one expected.
    #[error("version conflict on {key}: the current version is {current}")]
    VersionConflict {
        /// The key, as the caller named it.
        key: String,
        /// The key's current version (mod revision); 0 when the key does not exist.
        current: i64,
    },
    /// The lock is held by someone else (returned by non-blocking acquisition).
    #[error("lock {name} is held by another owner")]
    LockConflict {
        /// The lock's name.
        name: String,
    },
    /// The caller does not hold the lock (released already, or taken over).
    #[error("lock {name} is not held")]
    LockNotHeld {
        /// The lock's name.
        name: String,
    },
    /// The lock's lease ended before or while it was held.
    #[error("lock {name} expired: its lease ended")]
    LockExpired {
        /// The lock's name.
        name: String,
    },
    /// The caller is not (or no longer) the leader of the election.
    #[error("not the leader of election {name}")]
    NotLeader {
        /// The election's name.
        name: String,
    },
    /// The lease does not exist: it expired, was revoked, or never existed.
    #[error("lease {id:x} not found (expired, revoked or never granted)")]
    LeaseNotFound {
        /// The lease's id.
        id: i64,
    },
    /// The requested revision has been compacted away.
    #[error("revision compacted: the store keeps history from revision {compact_revision} only")]
    Compacted {
        /// The store's compaction revision: the oldest revision still readable.
        compact_revision: i64,
    },
    /// Bad input: the named argument breaks the stated rule. Never retryable.
    #[error("invalid argument `{argument}`: {reason}")]
    InvalidArgument {
        /// The argument's name.
        argument: &'static str,
        /// The rule it breaks.
        reason: String,
    },
    /// The store could not be reached, or the connection broke before an answer.
    ///
    /// A write that failed this way may or may not have been applied, unless the
    /// backend knows it was never sent (then it has already tried the other endpoints).
    #[error("store unavailable: {reason}")]
    Unavailable {
        /// What failed, naming the endpoint where the backend knows it.
        reason: String,
        /// The underlying error, where there is one.
        #[source]
        source: Option<BoxError>,
    },
    /// The store is overloaded and refused the request before applying it (etcd: "too
    /// many requests"). Retryable after a pause.
    #[error("store overloaded: {reason}")]
    Overloaded {
        /// The store's message.
        reason: String,
    },
    /// The store raised an alarm that refuses writes until an operator acts (etcd's
    /// `NOSPACE`: the backend database reached its quota; compact, defragment and
    /// disarm it). Not retryable.
    #[error("store alarm {alarm}: {reason}")]
    Alarm {
        /// The alarm's name, as the store calls it (`NOSPACE`, `CORRUPT`).
        alarm: String,
        /// The store's message.
        reason: String,
    },
    /// A write may or may not have been applied, and the store could not tell in
    /// time: an answer was lost (or a write was still in flight) and the checks
    /// that would recognise it were refused or inconclusive. Not retryable as it
    /// is: read the state the write was to change before deciding to write again
    /// (a counter's value, a config key's version).
    #[error(
        "{operation}: the outcome is unknown (the write may or may not have applied): {reason}"
    )]
    OutcomeUnknown {
        /// The operation whose write is in doubt.
        operation: &'static str,
        /// Why it could not be told.
        reason: String,
    },
    /// The operation did not complete within its deadline.
    ///
    /// A write that failed this way may or may not have been applied.
    #[error("{operation} timed out")]
    Timeout {
        /// The operation that timed out.
        operation: &'static str,
    },
    /// The store rejected the credentials (wrong user or password, or auth is not
    /// enabled while credentials were given).
    #[error("authentication failed: {reason}")]
    AuthFailed {
        /// The store's reason.
        reason: String,
    },
    /// The authenticated user lacks permission for this key or operation (etcd:
    /// its roles do not grant it). Not retryable; an operator grants the role.
    #[error("permission denied: {reason}")]
    PermissionDenied {
        /// The store's reason.
        reason: String,
    },
    /// A value could not be encoded or decoded.
    #[error("codec error for {key}: {reason}")]
    Codec {
        /// The key whose value failed.
        key: String,
        /// The codec's message.
        reason: String,
    },
    /// The backend does not support this operation (see [`crate::Capabilities`]).
    #[error("{operation} is not supported by the {backend} backend")]
    Unsupported {
        /// The operation.
        operation: &'static str,
        /// The backend's name.
        backend: &'static str,
    },
    /// The handle was closed and can no longer be used.
    #[error("{what} is closed")]
    Closed {
        /// What was closed.
        what: &'static str,
    },
    /// Any other backend failure, with its source.
    #[error("{backend} backend error: {source}")]
    Backend {
        /// The backend's name.
        backend: &'static str,
        /// The backend's own error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
}

impl Error {
    /// The variant's name in snake case (`unavailable`, `lock_expired`, …): a
    /// stable label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::NotFound { .. } => "not_found",
            Error::VersionConflict { .. } => "version_conflict",
            Error::LockConflict { .. } => "lock_conflict",
            Error::LockNotHeld { .. } => "lock_not_held",
            Error::LockExpired { .. } => "lock_expired",
            Error::NotLeader { .. } => "not_leader",
            Error::LeaseNotFound { .. } => "lease_not_found",
            Error::Compacted { .. } => "compacted",
            Error::InvalidArgument { .. } => "invalid_argument",
            Error::Unavailable { .. } => "unavailable",
            Error::Overloaded { .. } => "overloaded",
            Error::Alarm { .. } => "alarm",
            Error::OutcomeUnknown { .. } => "outcome_unknown",
            Error::Timeout { .. } => "timeout",
            Error::AuthFailed { .. } => "auth_failed",
            Error::PermissionDenied { .. } => "permission_denied",
            Error::Codec { .. } => "codec",
            Error::Unsupported { .. } => "unsupported",
            Error::Closed { .. } => "closed",
            Error::Backend { .. } => "backend",
        }
    }

    /// Whether the same call may succeed if tried again (the store was unreachable,
    /// slow or overloaded). A retried write may apply twice unless it is guarded by a compare.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Unavailable { .. } | Error::Timeout { .. } | Error::Overloaded { .. }
        )
    }

    /// Shorthand for [`Error::InvalidArgument`].
    pub fn invalid(argument: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidArgument {
            argument,
            reason: reason.into(),
        }
    }

    /// Shorthand for [`Error::Unavailable`].
    pub fn unavailable(reason: impl Into<String>) -> Self {
        Error::Unavailable {
            reason: reason.into(),
            source: None,
        }
    }

    /// [`Error::Unavailable`] keeping the underlying error as its source.
    pub fn unavailable_from(reason: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::Unavailable {
            reason: reason.into(),
            source: Some(source.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transport_failures_are_retryable() {
        assert!(Error::unavailable("down").is_retryable());
        assert!(Error::Timeout { operation: "range" }.is_retryable());
        assert!(!Error::invalid("key", "empty").is_retryable());
        assert!(!Error::Compacted {
            compact_revision: 3
        }
        .is_retryable());
        assert!(!Error::LeaseNotFound { id: 1 }.is_retryable());
        assert!(Error::Overloaded {
            reason: "too many requests".into()
        }
        .is_retryable());
        assert!(!Error::Alarm {
            alarm: "NOSPACE".into(),
            reason: "database space exceeded".into()
        }
        .is_retryable());
        assert!(!Error::PermissionDenied {
            reason: "no role".into()
        }
        .is_retryable());
    }
}
