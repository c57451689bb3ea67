//! Transactions: compares, then/else operations, and their results.

use super::kv::{KeyRange, KeyValue, LeaseId, Revision};
use super::range::{RangeRequest, RangeResponse};

/// How a compare relates the key's attribute to the given operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompareOp {
    /// attribute == operand
    Equal,
    /// attribute != operand
    NotEqual,
    /// attribute < operand
    Less,
    /// attribute > operand
    Greater,
}

impl CompareOp {
    /// Apply the operator to an ordering of attribute versus operand.
    pub fn holds(self, ordering: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::*;
        match self {
            CompareOp::Equal => ordering == Equal,
            CompareOp::NotEqual => ordering != Equal,
            CompareOp::Less => ordering == Less,
            CompareOp::Greater => ordering == Greater,
        }
    }
}

/// The attribute a compare looks at, with the operand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompareTarget {
    /// The value's bytes. A compare on the value of a missing key is always false.
    Value(Vec<u8>),
    /// The version (0 for a missing key).
    Version(i64),
    /// The create revision (0 for a missing key).
    CreateRevision(Revision),
    /// The mod revision (0 for a missing key).
    ModRevision(Revision),
    /// The attached lease (`None`: no lease, or a missing key).
    Lease(Option<LeaseId>),
}

/// One condition of a transaction, on one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compare {
    /// The key compared.
    pub key: Vec<u8>,
    /// The operator.
    pub op: CompareOp,
    /// The attribute and operand.
    pub target: CompareTarget,
}

impl Compare {
    /// Compare the key's value.
    pub fn value(key: impl Into<Vec<u8>>, op: CompareOp, value: impl Into<Vec<u8>>) -> Self {
        Self::new(key, op, CompareTarget::Value(value.into()))
    }
    /// Compare the key's version.
    pub fn version(key: impl Into<Vec<u8>>, op: CompareOp, version: i64) -> Self {
        Self::new(key, op, CompareTarget::Version(version))
    }
    /// Compare the key's create revision.
    pub fn create_revision(key: impl Into<Vec<u8>>, op: CompareOp, revision: Revision) -> Self {
        Self::new(key, op, CompareTarget::CreateRevision(revision))
    }
    /// Compare the key's mod revision.
    pub fn mod_revision(key: impl Into<Vec<u8>>, op: CompareOp, revision: Revision) -> Self {
        Self::new(key, op, CompareTarget::ModRevision(revision))
    }
    /// Compare the key's lease.
    pub fn lease(key: impl Into<Vec<u8>>, op: CompareOp, lease: Option<LeaseId>) -> Self {
        Self::new(key, op, CompareTarget::Lease(lease))
    }
    /// A compare from its parts.
    pub fn new(key: impl Into<Vec<u8>>, op: CompareOp, target: CompareTarget) -> Self {
        Compare {
            key: key.into(),
            op,
            target,
        }
    }

    /// Evaluate against the key's current state (`None`: missing), with etcd's rules.
    pub fn evaluate(&self, kv: Option<&KeyValue>) -> bool {
        let ordering = match (&self.target, kv) {
            (CompareTarget::Value(_), None) => return false,
            (CompareTarget::Value(v), Some(kv)) => kv.value.as_slice().cmp(v.as_slice()),
            (CompareTarget::Version(v), kv) => kv.map_or(0, |kv| kv.version).cmp(v),
            (CompareTarget::CreateRevision(r), kv) => kv.map_or(0, |kv| kv.create_revision).cmp(r),
            (CompareTarget::ModRevision(r), kv) => kv.map_or(0, |kv| kv.mod_revision).cmp(r),
            (CompareTarget::Lease(l), kv) => {
                let have = kv.and_then(|kv| kv.lease).map_or(0, |l| l.0);
                have.cmp(&l.map_or(0, |l| l.0))
            }
        };
        self.op.holds(ordering)
    }
}

/// Write a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PutRequest {
    /// The key.
    pub key: Vec<u8>,
    /// The value.
    pub value: Vec<u8>,
    /// Attach the key to this lease (it must exist); `None` detaches it from any lease.
    pub lease: Option<LeaseId>,
    /// Return the key-value as it was before the put.
    pub prev_kv: bool,
}

impl PutRequest {
    /// A put of `value` at `key`, without a lease.
    pub fn new(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        PutRequest {
            key: key.into(),
            value: value.into(),
            lease: None,
            prev_kv: false,
        }
    }
    /// Attach the key to a lease.
    pub fn with_lease(mut self, lease: LeaseId) -> Self {
        self.lease = Some(lease);
        self
    }
    /// Return the previous key-value.
    pub fn with_prev_kv(mut self) -> Self {
        self.prev_kv = true;
        self
    }
}

/// Delete one key or every key under a prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeleteRequest {
    /// The keys to delete.
    pub keys: KeyRange,
    /// Return the deleted key-values.
    pub prev_kv: bool,
}

impl DeleteRequest {
    /// Delete one key.
    pub fn key(key: impl Into<Vec<u8>>) -> Self {
        DeleteRequest {
            keys: KeyRange::Key(key.into()),
            prev_kv: false,
        }
    }
    /// Delete every key under a prefix.
    pub fn prefix(prefix: impl Into<Vec<u8>>) -> Self {
        DeleteRequest {
            keys: KeyRange::Prefix(prefix.into()),
            prev_kv: false,
        }
    }
    /// Return the deleted key-values.
    pub fn with_prev_kv(mut self) -> Self {
        self.prev_kv = true;
        self
    }
}

/// One operation of a transaction branch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnOp {
    /// A put.
    Put(PutRequest),
    /// A delete.
    Delete(DeleteRequest),
    /// A read; it sees the writes of earlier operations of the same branch.
    Range(RangeRequest),
}

impl TxnOp {
    /// The keys this operation writes, if it writes.
    pub fn written(&self) -> Option<KeyRange> {
        match self {
            TxnOp::Put(p) => Some(KeyRange::Key(p.key.clone())),
            TxnOp::Delete(d) => Some(d.keys.clone()),
            TxnOp::Range(_) => None,
        }
    }
}

impl From<PutRequest> for TxnOp {
    fn from(p: PutRequest) -> Self {
        TxnOp::Put(p)
    }
}
impl From<DeleteRequest> for TxnOp {
    fn from(d: DeleteRequest) -> Self {
        TxnOp::Delete(d)
    }
}
impl From<RangeRequest> for TxnOp {
    fn from(r: RangeRequest) -> Self {
        TxnOp::Range(r)
    }
}

/// How new the state that answers a read-only transaction must be.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ReadConsistency {
    /// The newest committed state (etcd: a linearizable read). The default.
    #[default]
    Latest,
    /// Any committed state that includes every revision this backend handle has
    /// observed (the responses to its calls, its watches' creations and events),
    /// though perhaps not the newest. On etcd this is a serializable read of the
    /// member asked, sent again as a linearizable one when that member is behind:
    /// no round through the leader, and no wait for writes in flight. Only for a
    /// transaction that writes nothing (else `InvalidArgument`).
    ///
    /// A state that includes revision `r` can only differ from the newest by
    /// changes after `r`: what a caller learned from an event at `r` (a key's
    /// delete, say) holds in the answer.
    Observed,
}

/// An atomic transaction: if every compare holds, the `success` operations run,
/// otherwise the `failure` operations; all their writes share one revision.
///
/// Within one branch no two writes may touch the same key (etcd's rule).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[must_use = "a transaction does nothing until passed to `Backend::txn`"]
pub struct Txn {
    /// The conditions, all of which must hold.
    pub compares: Vec<Compare>,
    /// Run when every compare holds.
    pub success: Vec<TxnOp>,
    /// Run otherwise.
    pub failure: Vec<TxnOp>,
    /// How new the answering state must be, for a transaction that only reads.
    pub consistency: ReadConsistency,
}

impl Txn {
    /// An empty transaction.
    pub fn new() -> Self {
        Self::default()
    }
    /// Add conditions.
    pub fn when(mut self, compares: impl IntoIterator<Item = Compare>) -> Self {
        self.compares.extend(compares);
        self
    }
    /// Add operations to the success branch.
    pub fn and_then<O: Into<TxnOp>>(mut self, ops: impl IntoIterator<Item = O>) -> Self {
        self.success.extend(ops.into_iter().map(Into::into));
        self
    }
    /// Add operations to the failure branch.
    pub fn or_else<O: Into<TxnOp>>(mut self, ops: impl IntoIterator<Item = O>) -> Self {
        self.failure.extend(ops.into_iter().map(Into::into));
        self
    }
    /// Answer a read-only transaction from a state this new (see
    /// [`ReadConsistency`]).
    pub fn with_consistency(mut self, consistency: ReadConsistency) -> Self {
        self.consistency = consistency;
        self
    }
    /// Whether any operation of either branch writes.
    pub fn writes(&self) -> bool {
        self.success
            .iter()
            .chain(&self.failure)
            .any(|op| op.written().is_some())
    }
}

/// The result of one transaction operation, in the order of the branch's operations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnOpResponse {
    /// A put's result.
    Put {
        /// The key-value before the put, when asked for and present.
        prev_kv: Option<KeyValue>,
    },
    /// A delete's result.
    Delete {
        /// How many keys were deleted.
        deleted: i64,
        /// The deleted key-values, when asked for.
        prev_kvs: Vec<KeyValue>,
    },
    /// A read's result.
    Range(RangeResponse),
}

/// The result of a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnResponse {
    /// Whether the compares held (the success branch ran).
    pub succeeded: bool,
    /// One result per operation of the branch that ran.
    pub responses: Vec<TxnOpResponse>,
    /// The store's revision after the transaction (its writes' revision, if any).
    pub revision: Revision,
}

impl TxnResponse {
    /// The first range result, if the branch had a read.
    pub fn first_range(&self) -> Option<&RangeResponse> {
        self.responses.iter().find_map(|r| match r {
            TxnOpResponse::Range(r) => Some(r),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(value: &str, version: i64) -> KeyValue {
        KeyValue {
            key: b"k".to_vec(),
            value: value.as_bytes().to_vec(),
            create_revision: 2,
            mod_revision: 5,
            version,
            lease: None,
        }
    }

    #[test]
    fn value_compare_on_missing_key_is_false_even_for_not_equal() {
        assert!(!Compare::value("k", CompareOp::NotEqual, "x").evaluate(None));
        assert!(Compare::value("k", CompareOp::NotEqual, "x").evaluate(Some(&kv("y", 1))));
    }

    #[test]
    fn missing_key_has_zero_revisions_and_version() {
        assert!(Compare::create_revision("k", CompareOp::Equal, 0).evaluate(None));
        assert!(Compare::version("k", CompareOp::Less, 1).evaluate(None));
        assert!(Compare::lease("k", CompareOp::Equal, None).evaluate(None));
        assert!(Compare::mod_revision("k", CompareOp::Greater, 4).evaluate(Some(&kv("a", 1))));
    }
}
