//! The SQLite store against the shared store conformance suite.

use std::sync::Arc;

use tessera_store_sqlite::SqliteStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("sessions.db").display());
    let store = SqliteStore::connect(&url).await.unwrap();
    tessera_store_conformance::run(Arc::new(store.clone())).await;
    store.close().await;
}
