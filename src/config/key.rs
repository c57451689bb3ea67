//! Config keys: `/`-separated paths relative to the config root.

use crate::error::{Error, Result};

/// A config key: non-empty segments separated by single `/`, none of them `.` or
/// `..`, no leading or trailing `/`, no control characters.
pub(crate) fn validate_key(key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::invalid("key", "must not be empty"));
    }
    validate_path("key", key, false)
}

/// A prefix of config keys: empty (everything) or key-like, optionally ending in `/`.
pub(crate) fn validate_prefix(prefix: &str) -> Result<()> {
    if prefix.is_empty() {
        return Ok(());
    }
    validate_path("prefix", prefix, true)
}

fn validate_path(argument: &'static str, path: &str, trailing_slash: bool) -> Result<()> {
    if path.chars().any(char::is_control) {
        return Err(Error::invalid(
            argument,
            format!("must not contain control characters (got {path:?})"),
        ));
    }
    if path.starts_with('/') {
        return Err(Error::invalid(
            argument,
            format!("must not start with '/' (got {path:?}): keys are relative to the config root"),
        ));
    }
    let body = if trailing_slash {
        path.strip_suffix('/').unwrap_or(path)
    } else {
        path
    };
    for segment in body.split('/') {
        match segment {
            "" => {
                return Err(Error::invalid(
                    argument,
                    format!(
                        "must not contain empty segments ('//' or a trailing '/'; got {path:?})"
                    ),
                ))
            }
            "." | ".." => {
                return Err(Error::invalid(
                    argument,
                    format!("must not contain '.' or '..' segments (got {path:?})"),
                ))
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        for good in ["a", "app/db/url", "a.b/c-d_e", "ünï/cödé"] {
            validate_key(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        for bad in [
            "", "/a", "//a", "a//b", "a/", "a/../b", "..", "./a", "a\nb", "a\0",
        ] {
            assert!(
                matches!(
                    validate_key(bad),
                    Err(Error::InvalidArgument {
                        argument: "key",
                        ..
                    })
                ),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn prefixes() {
        for good in ["", "app", "app/", "app/db/"] {
            validate_prefix(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        for bad in ["/", "/app", "app//", "a/../", "a\t"] {
            assert!(validate_prefix(bad).is_err(), "{bad:?} accepted");
        }
    }
}
