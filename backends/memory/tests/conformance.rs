//! coordkit-memory against the whole conformance suite, on tokio's paused clock.

use std::sync::Arc;

use async_trait::async_trait;
use coordkit::LeaseId;
use coordkit_conformance::{Faults, Harness, TestClient};
use coordkit_memory::MemoryBackend;

struct MemoryHarness {
    store: MemoryBackend,
}

struct MemoryFaults(MemoryBackend);

impl Faults for MemoryFaults {
    fn fail_next(&self, n: u64) {
        self.0.fail_next(n)
    }
    fn lose_next_response(&self) {
        self.0.lose_next_response()
    }
    fn stall_keep_alives(&self) {
        self.0.stall_keep_alives()
    }
    fn resume_keep_alives(&self) {
        self.0.resume_keep_alives()
    }
    fn cut_watches(&self) {
        self.0.cut_watches()
    }
    fn partition(&self) {
        self.0.partition()
    }
    fn heal(&self) {
        self.0.heal()
    }
    fn expire_lease(&self, id: LeaseId) {
        self.0.expire_lease(id);
    }
    fn watch_resumes(&self) -> Option<u64> {
        Some(self.0.watch_resumes())
    }
}

#[async_trait]
impl Harness for MemoryHarness {
    async fn client(&self) -> TestClient {
        let client = self.store.client();
        TestClient {
            backend: Arc::new(client.clone()),
            faults: Some(Arc::new(MemoryFaults(client))),
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
