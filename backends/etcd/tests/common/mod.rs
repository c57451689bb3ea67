//! Reaching the etcd the tests run against.

#![allow(dead_code)]

pub mod process;

use coordkit_etcd::EtcdConfig;

/// The etcd named by `COORD_ETCD_ENDPOINTS`. The tests that need it are
/// `#[ignore]`d (a plain `cargo test` shows them as ignored); run with
/// `--include-ignored` and no etcd, they fail here, never pass by skipping.
pub fn etcd_config() -> Option<EtcdConfig> {
    match std::env::var("COORD_ETCD_ENDPOINTS") {
        Ok(list) if !list.trim().is_empty() => Some(EtcdConfig::from_endpoint_list(&list)),
        _ => panic!(
            "COORD_ETCD_ENDPOINTS is not set: this test needs an etcd (./scripts/test.sh starts one)"
        ),
    }
}
