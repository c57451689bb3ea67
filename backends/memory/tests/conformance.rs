//! coordkit-memory against the whole conformance suite, on tokio's paused clock.

use std::sync::Arc;

use async_trait::async_trait;
use coordkit_conformance::{Harness, TestClient};
use coordkit_memory::MemoryBackend;

struct MemoryHarness {
    store: MemoryBackend,
}

#[async_trait]
impl Harness for MemoryHarness {
    async fn client(&self) -> TestClient {
        let client = self.store.client();
        TestClient {
            backend: Arc::new(client.clone()),
            faults: Some(Arc::new(client)),
        }
    }
}

fn harness() -> Option<Arc<dyn Harness>> {
    Some(Arc::new(MemoryHarness {
        store: MemoryBackend::new(),
    }))
}

coordkit_conformance::conformance_tests!(harness, start_paused = true);
coordkit_conformance::fault_tests!(harness, start_paused = true);
