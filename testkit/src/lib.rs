//! coordkit's own test support, not published: a 3-member etcd cluster on free
//! loopback ports ([`Cluster`]), a TCP fault proxy in front of each member
//! ([`Proxy`]: pass, blackhole, reset, delay), and signals to pause, continue,
//! kill and restart a member. Used by the cluster tests of coordkit-etcd and by
//! `scripts/chaos.sh`.

#![warn(missing_docs)]

pub mod cluster;
pub mod proxy;

pub use cluster::{etcd_available, Cluster, Member};
pub use proxy::{Mode, Proxy};
