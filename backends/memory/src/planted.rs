//! Deliberate bugs, one at a time, to measure what the conformance suite
//! catches (`scripts/sensitivity.sh`). Only with the `planted-bugs` feature,
//! and only when `COORD_PLANTED_BUG=<n>` names one; never in a normal build.

/// Every planted bug: its number and the rule it breaks (one per line:
/// `scripts/sensitivity.sh` reads them).
#[rustfmt::skip]
pub const BUGS: &[(u32, &str)] = &[
    (1, "a range at a past revision reads the latest state"),
    (2, "count is taken after the limit"),
    (3, "descending sort by create revision is ignored"),
    (4, "`more` is never set"),
    (5, "max_create_revision filter excludes the revision itself"),
    (6, "count_only still returns key-values"),
    (7, "a prefix range also returns the key after the prefix"),
    (8, "a read at a future revision is allowed"),
    (9, "a read at a compacted revision is allowed"),
    (10, "a txn's compares need only one to hold"),
    (11, "a txn whose compares fail runs no branch"),
    (12, "a put with an unknown lease applies"),
    (13, "an update resets create_revision"),
    (14, "an update does not bump version"),
    (15, "a put never returns prev_kv"),
    (16, "a delete never returns prev_kvs"),
    (17, "a writing txn reports the old revision"),
    (18, "a multi-write txn publishes only its first event"),
    (19, "a delete that deletes nothing advances the revision"),
    (20, "an expired lease leaves its keys"),
    (21, "a revoke leaves the keys"),
    (22, "lease time-to-live lists no keys"),
    (23, "a keep-alive does not extend the lease"),
    (24, "compaction at a future revision is accepted"),
    (25, "compacting an already compacted revision is accepted"),
    (26, "watch events never carry prev_kv"),
    (27, "a watch from a past revision does not replay"),
    (28, "a delete event carries the old value"),
    (29, "a watch from a compacted revision replays what is left"),
    (30, "a prefix watch also sees keys outside the prefix"),
    (31, "a watch from a future revision gets earlier revisions"),
    (32, "fail_next(n) fails n + 1 calls"),
    (33, "a lost response's write does not apply"),
    (34, "a stalled keep-alive hangs instead of failing"),
    (35, "a partition does not fail calls"),
    (36, "cut_watches does nothing"),
    (37, "a partition leaves watches connected"),
    (38, "lease grants below the minimum TTL are accepted"),
    (39, "a txn writing one key twice is accepted"),
    (40, "an empty key is accepted by range"),
    (41, "lease ids are reused after a revoke"),
    (42, "a range inside a txn does not see the txn's earlier writes"),
    (43, "an observed read is answered one revision behind the newest write"),
    (44, "an observed read with a write is accepted and applies"),
];

/// Whether bug `n` is planted in this run.
#[cfg(feature = "planted-bugs")]
pub(crate) fn on(n: u32) -> bool {
    static PLANTED: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
    *PLANTED.get_or_init(|| {
        std::env::var("COORD_PLANTED_BUG")
            .ok()
            .and_then(|v| v.parse().ok())
    }) == Some(n)
}

/// Whether bug `n` is planted in this run: never without the feature.
#[cfg(not(feature = "planted-bugs"))]
#[inline(always)]
pub(crate) const fn on(_: u32) -> bool {
    false
}
