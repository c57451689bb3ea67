//! Keys, values, revisions and lease ids.

use std::fmt;

/// A point in the store's history: a fresh store is at revision 1, and every write
/// (a put, a delete that deletes something, a transaction with such writes, a lease
/// ending with keys attached) advances the one global revision by exactly one.
pub type Revision = i64;

/// The id of a lease: TTL'd ownership of keys. Displayed as lowercase hex, the form
/// etcd's lock and election keys use.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaseId(pub i64);

impl fmt::Debug for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LeaseId({:x})", self.0)
    }
}

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

/// A key with its value and MVCC metadata, as of some revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: Vec<u8>,
    /// The value (empty in the `kv` of a delete event).
    pub value: Vec<u8>,
    /// The revision of the put that created the key (since its last delete).
    pub create_revision: Revision,
    /// The revision of the last write to the key.
    pub mod_revision: Revision,
    /// Number of puts since creation: 1 after the creating put; 0 once deleted.
    pub version: i64,
    /// The lease the key is attached to, if any.
    pub lease: Option<LeaseId>,
}

impl KeyValue {
    /// The key as text, lossily (for messages).
    pub fn key_str(&self) -> String {
        String::from_utf8_lossy(&self.key).into_owned()
    }
}

/// Which keys an operation addresses: one key, or every key with a prefix.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KeyRange {
    /// Exactly this key. Must not be empty.
    Key(Vec<u8>),
    /// Every key starting with these bytes; the empty prefix means every key.
    Prefix(Vec<u8>),
}

impl KeyRange {
    /// One key.
    pub fn key(key: impl Into<Vec<u8>>) -> Self {
        KeyRange::Key(key.into())
    }

    /// Every key under a prefix.
    pub fn prefix(prefix: impl Into<Vec<u8>>) -> Self {
        KeyRange::Prefix(prefix.into())
    }

    /// Whether `key` falls in this range.
    pub fn contains(&self, key: &[u8]) -> bool {
        match self {
            KeyRange::Key(k) => k.as_slice() == key,
            KeyRange::Prefix(p) => key.starts_with(p),
        }
    }

    /// Whether two ranges share at least one possible key.
    pub fn overlaps(&self, other: &KeyRange) -> bool {
        match (self, other) {
            (KeyRange::Key(a), KeyRange::Key(b)) => a == b,
            (KeyRange::Key(k), KeyRange::Prefix(p)) | (KeyRange::Prefix(p), KeyRange::Key(k)) => {
                k.starts_with(p)
            }
            (KeyRange::Prefix(a), KeyRange::Prefix(b)) => a.starts_with(b) || b.starts_with(a),
        }
    }

    /// The key bytes (the key itself, or the prefix).
    pub fn start(&self) -> &[u8] {
        match self {
            KeyRange::Key(k) | KeyRange::Prefix(k) => k,
        }
    }

    /// The exclusive end of a prefix range in etcd's encoding: the prefix with its last
    /// byte below 0xff incremented and what follows dropped; `[0]` (every key) when no
    /// such byte exists.
    pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
        let mut end = prefix.to_vec();
        while let Some(last) = end.pop() {
            if last < 0xff {
                end.push(last + 1);
                return end;
            }
        }
        vec![0]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_the_last_byte_below_ff() {
        assert_eq!(KeyRange::prefix_end(b"ab"), b"ac".to_vec());
        assert_eq!(KeyRange::prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(KeyRange::prefix_end(b"\xff\xff"), vec![0]);
        assert_eq!(KeyRange::prefix_end(b""), vec![0]);
    }

    #[test]
    fn overlap_covers_keys_and_prefixes() {
        assert!(KeyRange::key("a/b").overlaps(&KeyRange::prefix("a/")));
        assert!(!KeyRange::key("b").overlaps(&KeyRange::prefix("a/")));
        assert!(KeyRange::prefix("a").overlaps(&KeyRange::prefix("a/b")));
        assert!(!KeyRange::key("a").overlaps(&KeyRange::key("b")));
    }

    #[test]
    fn lease_id_displays_as_lowercase_hex() {
        assert_eq!(LeaseId(0x694d_7f1a_2b3c).to_string(), "694d7f1a2b3c");
    }
}
