//! Leases: TTL'd ownership of keys.

use super::kv::LeaseId;

/// A granted lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseGrant {
    /// The new lease's id.
    pub id: LeaseId,
    /// Its TTL in seconds, as granted.
    pub ttl: i64,
}

/// What the store knows of a live lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseInfo {
    /// The lease's id.
    pub id: LeaseId,
    /// The TTL in seconds it was granted with (and is renewed to by each keep-alive).
    pub granted_ttl: i64,
    /// Seconds left before it expires unless kept alive (rounded down).
    pub remaining_ttl: i64,
    /// The keys attached to it, sorted.
    pub keys: Vec<Vec<u8>>,
}
