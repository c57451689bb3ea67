//! coordkit-etcd against the conformance suite, on a real etcd (`COORD_ETCD_ENDPOINTS`).

mod common;

use std::sync::Arc;

use async_trait::async_trait;
use coordkit_conformance::{Harness, TestClient};
use coordkit_etcd::{EtcdBackend, EtcdConfig};

struct EtcdHarness {
    config: EtcdConfig,
}

#[async_trait]
impl Harness for EtcdHarness {
    async fn client(&self) -> TestClient {
        let backend = EtcdBackend::connect(self.config.clone())
            .await
            .unwrap_or_else(|e| {
                panic!("cannot connect to etcd at {:?}: {e}", self.config.endpoints)
            });
        TestClient {
            backend: Arc::new(backend),
            faults: None,
        }
    }
}

fn harness() -> Option<Arc<dyn Harness>> {
    let config = common::etcd_config()?;
    Some(Arc::new(EtcdHarness { config }))
}

coordkit_conformance::conformance_tests!(
    harness,
    start_paused = false,
    ignore = "needs etcd (./scripts/test.sh runs it)"
);
