//! Exit codes scripts can rely on, and the one line printed for an error.

use std::process::ExitCode;

/// Success.
pub const OK: u8 = 0;
/// Any failure without a code of its own.
pub const FAILED: u8 = 1;
/// Bad input: a flag, a name, a TTL, a value (clap's usage errors use 2 too).
pub const BAD_INPUT: u8 = 2;
/// What was asked for does not exist (a config key, a service instance).
pub const NOT_FOUND: u8 = 3;
/// Held by another, or changed by another: a `--try` on a held lock, a
/// compare-and-set whose version is not the current one.
pub const CONFLICT: u8 = 4;
/// A lock or leadership was lost while held (lease ended, key deleted).
pub const LOST: u8 = 5;
/// etcd could not be reached, or did not answer in time.
pub const UNAVAILABLE: u8 = 6;
/// Authentication failed or permission denied.
pub const AUTH: u8 = 7;

/// The table printed by `--help`.
pub const TABLE: &str = "Exit codes: 0 ok, 1 failed, 2 bad input, 3 not found, 4 conflict \
(held by another, or a version mismatch), 5 lost (a held lock or leadership ended), \
6 unavailable (etcd unreachable or too slow), 7 authentication or permission. \
`lock -- CMD` and `elect -- CMD` exit with CMD's own status (a release that fails \
after CMD is reported on stderr only); SIGINT or SIGTERM while queued exits 130 or 143, \
with the queued key removed.";

/// An error of a command: the line to print and the exit code.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
        }
    }

    pub fn bad_input(message: impl Into<String>) -> Self {
        Failure::new(BAD_INPUT, message)
    }

    /// Print the one line on stderr and give the exit code.
    pub fn report(self) -> ExitCode {
        eprintln!("coordctl: {}", self.message);
        ExitCode::from(self.code)
    }
}

impl From<coordkit::Error> for Failure {
    fn from(e: coordkit::Error) -> Self {
        use coordkit::Error as E;
        let code = match &e {
            E::NotFound { .. } => NOT_FOUND,
            E::VersionConflict { .. } | E::LockConflict { .. } => CONFLICT,
            E::LockExpired { .. } | E::NotLeader { .. } | E::LockNotHeld { .. } => LOST,
            E::InvalidArgument { .. } | E::Codec { .. } => BAD_INPUT,
            E::Unavailable { .. } | E::Timeout { .. } | E::Overloaded { .. } | E::Alarm { .. } => {
                UNAVAILABLE
            }
            E::AuthFailed { .. } | E::PermissionDenied { .. } => AUTH,
            _ => FAILED,
        };
        Failure::new(code, e.to_string())
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::new(FAILED, e.to_string())
    }
}

pub type Outcome<T = ()> = std::result::Result<T, Failure>;
