//! The input rules every backend enforces, in one place.
//!
//! Backends call these before touching the store so that bad input fails the same
//! way everywhere: [`Error::InvalidArgument`] naming the argument and the rule.

use super::{KeyRange, Limits, RangeRequest, ReadConsistency, Txn, TxnOp, WatchRequest};
use crate::error::{Error, Result};

/// A key must not be empty.
pub fn key(argument: &'static str, key: &[u8]) -> Result<()> {
    if key.is_empty() {
        return Err(Error::invalid(argument, "must not be empty"));
    }
    Ok(())
}

/// A single key must not be empty; a prefix may be (every key).
pub fn key_range(argument: &'static str, keys: &KeyRange) -> Result<()> {
    match keys {
        KeyRange::Key(k) => key(argument, k),
        KeyRange::Prefix(_) => Ok(()),
    }
}

/// A value must fit the backend's limit.
pub fn value(value: &[u8], limits: &Limits) -> Result<()> {
    if value.len() > limits.max_value_bytes {
        return Err(Error::invalid(
            "value",
            format!(
                "{} bytes is larger than this backend's limit of {} bytes",
                value.len(),
                limits.max_value_bytes
            ),
        ));
    }
    Ok(())
}

/// A TTL must lie within the backend's bounds.
pub fn ttl(ttl: i64, limits: &Limits) -> Result<()> {
    if ttl <= 0 {
        return Err(Error::invalid(
            "ttl",
            format!("must be positive, got {ttl}"),
        ));
    }
    if ttl < limits.min_lease_ttl {
        return Err(Error::invalid(
            "ttl",
            format!(
                "{ttl} s is below this backend's minimum lease TTL of {} s",
                limits.min_lease_ttl
            ),
        ));
    }
    if ttl > limits.max_lease_ttl {
        return Err(Error::invalid(
            "ttl",
            format!("{ttl} s is above the maximum of {} s", limits.max_lease_ttl),
        ));
    }
    Ok(())
}

/// A range: a non-empty key, a positive revision, a limit that fits.
pub fn range(request: &RangeRequest) -> Result<()> {
    key_range("key", &request.keys)?;
    if let Some(r) = request.revision {
        if r <= 0 {
            return Err(Error::invalid(
                "revision",
                format!("must be positive, got {r}"),
            ));
        }
    }
    if let Some(r) = request.max_create_revision {
        if r <= 0 {
            return Err(Error::invalid(
                "max_create_revision",
                format!("must be positive, got {r}"),
            ));
        }
    }
    if let Some(l) = request.limit {
        if l == 0 {
            // etcd reads a limit of 0 as "no limit": refused, so that no backend
            // has to pick between "nothing" and "everything".
            return Err(Error::invalid(
                "limit",
                "must be at least 1 (no limit is None)",
            ));
        }
        if l > i64::MAX as u64 {
            return Err(Error::invalid("limit", "must fit in an i64"));
        }
    }
    Ok(())
}

/// A transaction: valid keys and values, branches within the op limit, and no two
/// writes of one branch touching the same key.
pub fn txn(txn: &Txn, limits: &Limits) -> Result<()> {
    if txn.consistency != ReadConsistency::Latest && txn.writes() {
        return Err(Error::invalid(
            "consistency",
            format!(
                "{:?} is for transactions that only read; one that writes is always answered from the newest state",
                txn.consistency
            ),
        ));
    }
    for c in &txn.compares {
        key("compare.key", &c.key)?;
    }
    for branch in [&txn.success, &txn.failure] {
        if branch.len() > limits.max_txn_ops {
            return Err(Error::invalid(
                "txn",
                format!(
                    "{} operations in one branch; the limit is {}",
                    branch.len(),
                    limits.max_txn_ops
                ),
            ));
        }
        let mut total = 0usize;
        let mut written: Vec<KeyRange> = Vec::new();
        for op in branch {
            match op {
                TxnOp::Put(p) => {
                    key("key", &p.key)?;
                    value(&p.value, limits)?;
                    total += p.value.len();
                }
                TxnOp::Delete(d) => key_range("key", &d.keys)?,
                TxnOp::Range(r) => range(r)?,
            }
            if let Some(w) = op.written() {
                if written.iter().any(|prev| prev.overlaps(&w)) {
                    return Err(Error::invalid(
                        "txn",
                        format!(
                            "two writes in one branch touch the same key ({})",
                            String::from_utf8_lossy(w.start())
                        ),
                    ));
                }
                written.push(w);
            }
        }
        if total > limits.max_value_bytes {
            return Err(Error::invalid(
                "txn",
                format!(
                    "{total} bytes of values in one branch is larger than this backend's limit of {} bytes",
                    limits.max_value_bytes
                ),
            ));
        }
    }
    Ok(())
}

/// A watch: a non-empty key and a positive start revision.
pub fn watch(request: &WatchRequest) -> Result<()> {
    key_range("key", &request.keys)?;
    if let Some(r) = request.start_revision {
        if r <= 0 {
            return Err(Error::invalid(
                "start_revision",
                format!("must be positive, got {r}"),
            ));
        }
    }
    Ok(())
}

/// A compaction revision must be positive.
pub fn compact(revision: i64) -> Result<()> {
    if revision <= 0 {
        return Err(Error::invalid(
            "revision",
            format!("must be positive, got {revision}"),
        ));
    }
    Ok(())
}
