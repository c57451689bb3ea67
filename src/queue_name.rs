//! What a lock, semaphore, read-write lock or election is called on the store.

use std::fmt;

use crate::error::{Error, Result};
use crate::keys::KeyLayout;

/// The name of a queue of claims — a lock, a semaphore, a read-write lock or an
/// election — and so the key prefix its contenders write under.
///
/// Every method that takes a lock or election name takes `impl Into<QueueName>`,
/// so a plain `&str` or `String` is a [`QueueName::named`] name. To join a queue
/// that another program made under a prefix of its own, such as a Go service
/// using etcd's `concurrency` package or `etcdctl lock`, name it by that prefix
/// with [`QueueName::etcd_prefix`].
///
/// ```
/// use coordkit::QueueName;
///
/// // Lock `jobs` of a coordinator in namespace `coord/`: keys `coord/lock/jobs/<lease>`.
/// let named: QueueName = "jobs".into();
/// // What `concurrency.NewMutex(s, "/my-lock/")` and `etcdctl lock /my-lock/` use:
/// // keys `/my-lock//<lease>`, whatever the coordinator's namespace.
/// let go = QueueName::etcd_prefix("/my-lock/");
/// assert_eq!(go.as_str(), "/my-lock/");
/// # let _ = named;
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct QueueName {
    text: String,
    raw: bool,
}

impl QueueName {
    /// A name in the coordinator's namespace: the queue is
    /// `<namespace><recipe>/<name>/` (lock `x` of namespace `coord/` is
    /// `coord/lock/x/`, election `x` is `coord/election/x/`).
    ///
    /// The name must be non-empty and hold no `/` (the queue of one name would
    /// contain another's) and no control characters; the recipe's call returns
    /// `InvalidArgument` naming `name` otherwise.
    pub fn named(name: impl Into<String>) -> Self {
        QueueName {
            text: name.into(),
            raw: false,
        }
    }

    /// The queue etcd's Go `concurrency` package makes for `pfx`: keys
    /// `<pfx>/<lease hex>`, exactly as `concurrency.NewMutex(s, pfx)`,
    /// `concurrency.NewElection(s, pfx)`, `etcdctl lock pfx` and `etcdctl elect pfx`
    /// write them. The coordinator's namespace is not applied (a
    /// [`Namespaced`](crate::Namespaced) backend's prefix still is), so a
    /// coordkit lock on `QueueName::etcd_prefix("/my-lock/")` and a Go service's
    /// `NewMutex(s, "/my-lock/")` exclude each other, with the same guarantees as
    /// a named lock. `etcd_prefix("coord/lock/x")` is lock `x` of namespace `coord/`.
    ///
    /// `pfx` must be non-empty and hold no control characters (`InvalidArgument`
    /// naming `prefix` otherwise); `/` is allowed anywhere.
    pub fn etcd_prefix(pfx: impl Into<String>) -> Self {
        QueueName {
            text: pfx.into(),
            raw: true,
        }
    }

    /// The name, or the prefix as given to [`QueueName::etcd_prefix`].
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether this names a queue by an etcd prefix rather than in a namespace.
    pub fn is_etcd_prefix(&self) -> bool {
        self.raw
    }

    /// The key prefix of the queue: `<namespace><segment>/<name>/` or `<pfx>/`.
    /// Checks the name first (see [`QueueName::named`] and
    /// [`QueueName::etcd_prefix`] for the rules).
    pub(crate) fn key_prefix(&self, keys: &KeyLayout, segment: &str) -> Result<String> {
        self.validate()?;
        Ok(if self.raw {
            format!("{}/", self.text)
        } else {
            keys.queue(segment, &self.text)
        })
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if !self.raw {
            return validate_name(&self.text);
        }
        if self.text.is_empty() {
            return Err(Error::invalid("prefix", "must not be empty"));
        }
        if self.text.chars().any(char::is_control) {
            return Err(Error::invalid(
                "prefix",
                format!("must not contain control characters (got {:?})", self.text),
            ));
        }
        Ok(())
    }
}

/// A name in a namespace (a lock's, an election's, a counter's, a barrier's):
/// non-empty, no `/` (it would nest one queue in another), no control characters.
pub(crate) fn validate_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::invalid("name", "must not be empty"));
    }
    if name.contains('/') {
        return Err(Error::invalid(
            "name",
            format!("must not contain '/' (got {name:?}): the queue of one name would contain another's"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(Error::invalid(
            "name",
            format!("must not contain control characters (got {name:?})"),
        ));
    }
    Ok(())
}

impl fmt::Display for QueueName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl From<&str> for QueueName {
    fn from(name: &str) -> Self {
        QueueName::named(name)
    }
}

impl From<String> for QueueName {
    fn from(name: String) -> Self {
        QueueName::named(name)
    }
}

impl From<&String> for QueueName {
    fn from(name: &String) -> Self {
        QueueName::named(name.as_str())
    }
}

impl From<&QueueName> for QueueName {
    fn from(name: &QueueName) -> Self {
        name.clone()
    }
}
