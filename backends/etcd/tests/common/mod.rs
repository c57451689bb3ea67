//! Reaching the etcd the tests run against.

#![allow(dead_code)]

pub mod process;

use coordkit_etcd::EtcdConfig;

/// The etcd named by `COORD_ETCD_ENDPOINTS`, or `None` (printing why) when it is not
/// set. With `COORD_REQUIRE_ETCD=1` a missing etcd is a failure, never a skip.
pub fn etcd_config() -> Option<EtcdConfig> {
    match std::env::var("COORD_ETCD_ENDPOINTS") {
        Ok(list) if !list.trim().is_empty() => Some(EtcdConfig::from_endpoint_list(&list)),
        _ => {
            if std::env::var("COORD_REQUIRE_ETCD").as_deref() == Ok("1") {
                panic!("COORD_REQUIRE_ETCD=1 but COORD_ETCD_ENDPOINTS is not set: etcd tests cannot be skipped");
            }
            eprintln!(
                "etcd tests skipped: set COORD_ETCD_ENDPOINTS (./scripts/test.sh does) to run them"
            );
            None
        }
    }
}
