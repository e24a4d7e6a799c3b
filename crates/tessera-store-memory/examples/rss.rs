//! Measures resident memory per stored small session:
//! `cargo run --release -p tessera-store-memory --example rss -- [count] [anonymous|user]`.

use std::time::Duration;

use serde_json::json;
use tessera::{DeviceInfo, SessionData, SessionId, SessionRecord, SessionStore, Timestamp};
use tessera_store_memory::MemoryStore;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    pages * 4096
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let count: u64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(200_000);
    let with_user = args.next().as_deref() == Some("user");
    let store = MemoryStore::new();
    // Keys are generated up front so that their own memory is not counted.
    let keys: Vec<_> = (0..count).map(|_| SessionId::generate().key()).collect();
    let before = rss_bytes();
    let now = Timestamp::now();
    for (i, key) in keys.iter().enumerate() {
        let mut data = SessionData::new();
        data.insert_value("user_id".into(), json!(42));
        data.insert_value("name".into(), json!("bench"));
        let record = SessionRecord {
            key: *key,
            version: 1,
            user_id: with_user.then(|| format!("user-{}", i % 1000)),
            data,
            created_at: now,
            last_active: now,
            expires_at: now.plus(Duration::from_secs(3600)),
            device: DeviceInfo::default(),
        };
        store.create(&record).await.unwrap();
    }
    let entries = store.entry_count();
    let after = rss_bytes();
    println!(
        "{entries} sessions ({}): {} bytes RSS each",
        if with_user { "with user" } else { "anonymous" },
        (after - before) / entries.max(1)
    );
}
