//! coordkit-postgres against the conformance suite, on a real PostgreSQL
//! (`COORD_POSTGRES_URL`; `./scripts/test.sh` starts one).

use std::sync::Arc;

use async_trait::async_trait;
use coordkit_conformance::{Harness, TestClient};
use coordkit_postgres::{PostgresBackend, PostgresConfig};

struct PostgresHarness {
    config: PostgresConfig,
}

#[async_trait]
impl Harness for PostgresHarness {
    async fn client(&self) -> TestClient {
        let backend = PostgresBackend::connect(self.config.clone())
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "cannot connect to postgres at {}: {e}",
                    self.config.redacted_url()
                )
            });
        TestClient {
            backend: Arc::new(backend),
            faults: None,
        }
    }
}

/// The server named by `COORD_POSTGRES_URL`; these tests are `#[ignore]`d, and
/// run without it they fail here, never pass by skipping.
fn harness() -> Option<Arc<dyn Harness>> {
    let url = std::env::var("COORD_POSTGRES_URL").unwrap_or_else(|_| {
        panic!("COORD_POSTGRES_URL is not set: this test needs PostgreSQL (./scripts/test.sh starts one)")
    });
    // One schema per run of this binary: every client of a run shares it.
    let schema = format!("conformance_{}", std::process::id());
    Some(Arc::new(PostgresHarness {
        config: PostgresConfig::new(url)
            .with_schema(schema)
            .with_pool_size(4),
    }))
}

coordkit_conformance::conformance_tests!(
    harness,
    start_paused = false,
    ignore = "needs PostgreSQL (./scripts/test.sh runs it)"
);
