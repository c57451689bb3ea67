//! What the backend reports of the cluster and of itself: each member's
//! state, and the streams it has opened.

/// One endpoint's answer to [`EtcdBackend::member_status`](crate::EtcdBackend::member_status).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemberStatus {
    /// The endpoint as configured.
    pub endpoint: String,
    /// Its state, or why it could not be asked.
    pub status: std::result::Result<MemberState, String>,
}

/// What one etcd member says of itself.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemberState {
    /// The member's id.
    pub member_id: u64,
    /// The id of the member it takes for the leader (0: none known).
    pub leader_id: u64,
    /// The store's revision as this member has applied it.
    pub revision: i64,
    /// The raft term.
    pub raft_term: u64,
    /// The raft index.
    pub raft_index: u64,
    /// The database's size on disk, in bytes.
    pub db_size: i64,
    /// The server's version.
    pub version: String,
}

/// Streams the backend has opened, for tests and benchmarks that check the sharing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamStats {
    /// Watch streams opened (1 while nothing broke or moved).
    pub watch_streams: u64,
    /// Keep-alive streams opened (1 while nothing broke or moved).
    pub keep_alive_streams: u64,
    /// Times a watch was cut because its consumer fell a full buffer behind.
    pub watch_stalls: u64,
    /// [`ReadConsistency::Observed`](coordkit::ReadConsistency::Observed) reads
    /// that a member behind this backend's newest observed revision answered,
    /// sent again as linearizable reads.
    pub observed_reads_resent: u64,
    /// Idle watches of one key that a reconnect resumed just after a read of
    /// their key rather than from the old revision they were owed.
    pub watches_brought_forward: u64,
    /// Watches of one key that a reconnect served by one watch of their
    /// directory (read a page at a time) instead of one of their own.
    pub watches_grouped: u64,
}
