//! coordkit-memory against the whole conformance suite, on tokio's paused clock.

use std::sync::Arc;

use async_trait::async_trait;
use coordkit_conformance::{Harness, TestClient};
use coordkit_memory::MemoryBackend;

struct MemoryHarness {
    store: MemoryBackend,
    /// The bug `scripts/sensitivity.sh` plants in every client, if any.
    #[cfg(feature = "planted-bugs")]
    planted: Option<coordkit_memory::planted::PlantedStore>,
}

#[async_trait]
impl Harness for MemoryHarness {
    async fn client(&self) -> TestClient {
        let client = self.store.client();
        #[cfg(feature = "planted-bugs")]
        if let Some(planted) = &self.planted {
            let client = Arc::new(planted.client(client));
            return TestClient {
                backend: client.clone(),
                faults: Some(client),
            };
        }
        TestClient {
            backend: Arc::new(client.clone()),
            faults: Some(Arc::new(client)),
        }
    }
}

fn harness() -> Option<Arc<dyn Harness>> {
    Some(Arc::new(MemoryHarness {
        store: MemoryBackend::new(),
        #[cfg(feature = "planted-bugs")]
        planted: coordkit_memory::planted::planted_bug()
            .map(coordkit_memory::planted::PlantedStore::new),
    }))
}

coordkit_conformance::conformance_tests!(harness, start_paused = true);
coordkit_conformance::fault_tests!(harness, start_paused = true);
