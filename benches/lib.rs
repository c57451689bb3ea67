//! coordkit's benchmarks, as a library the bench binary (`coord.rs`) drives.
//!
//! Every figure against etcd is paired with a baseline measured in the same run on
//! the same etcd: the raw etcd-client calls doing the same work, and for locks
//! etcd's own lock service; on PostgreSQL, raw SQL doing the same work. Reports are ratios; absolute times drift on a shared
//! machine.

pub mod etcd;
pub mod handoffs;
pub mod measure;
pub mod memory;
pub mod postgres;
pub mod recipes;
pub mod scale;
