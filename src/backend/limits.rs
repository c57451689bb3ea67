//! What a backend accepts and what it can do.

/// Sizes and bounds a backend enforces; breaking one is [`crate::Error::InvalidArgument`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// The smallest lease TTL in seconds that the backend honours as asked (etcd raises
    /// smaller TTLs silently, so coordkit rejects them instead).
    pub min_lease_ttl: i64,
    /// The largest lease TTL in seconds.
    pub max_lease_ttl: i64,
    /// The largest value in bytes (etcd: 1.5 MiB request limit by default).
    pub max_value_bytes: usize,
    /// The largest number of operations in one transaction branch (etcd: 128).
    pub max_txn_ops: usize,
}

impl Limits {
    /// With a smallest lease TTL of `seconds` (etcd's is 2).
    pub const fn with_min_lease_ttl(mut self, seconds: i64) -> Self {
        self.min_lease_ttl = seconds;
        self
    }
}

impl Default for Limits {
    /// etcd's defaults: TTL ≥ 2 s, values ≤ 1.5 MiB less room for the request, 128 ops.
    fn default() -> Self {
        Limits {
            min_lease_ttl: 2,
            max_lease_ttl: 9_000_000_000,
            max_value_bytes: 1536 * 1024 - 4096,
            max_txn_ops: 128,
        }
    }
}

/// Optional abilities of a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// `compact` works; without it, `compact` returns [`crate::Error::Unsupported`].
    pub compaction: bool,
    /// [`Backend::watch_reporting_start`](crate::Backend::watch_reporting_start)
    /// always says where a watch starts (recipes then skip a read after each
    /// watch they open); without it, it may answer `None`.
    pub watch_start: bool,
}

impl Capabilities {
    /// No optional ability; add them with the `with_` methods.
    pub const NONE: Capabilities = Capabilities {
        compaction: false,
        watch_start: false,
    };

    /// With (or without) compaction.
    pub const fn with_compaction(mut self, compaction: bool) -> Self {
        self.compaction = compaction;
        self
    }

    /// With (or without) the start of each watch reported.
    pub const fn with_watch_start(mut self, watch_start: bool) -> Self {
        self.watch_start = watch_start;
        self
    }
}
