//! The memory store against the shared store conformance suite.

use std::sync::Arc;

use tessera_store_memory::MemoryStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unbounded_store_conforms() {
    tessera_store_conformance::run(Arc::new(MemoryStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bounded_store_conforms() {
    tessera_store_conformance::run(Arc::new(MemoryStore::with_max_capacity(10_000))).await;
}
