//! Behaviour specific to the SQLite store: files, pragmas, corruption,
//! purging, sharing a pool.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use sqlx::sqlite::SqlitePoolOptions;
use tessera::{
    DeviceInfo, SessionData, SessionEngine, SessionId, SessionRecord, SessionStore, StoreError, Timestamp, WriteOutcome,
};
use tessera_store_sqlite::SqliteStore;

const HOUR: Duration = Duration::from_secs(3600);

fn url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("sessions.db").display())
}

fn record(user: Option<&str>, ttl: Duration) -> SessionRecord {
    let now = Timestamp::now();
    let mut data = SessionData::new();
    data.insert_value("user_id".into(), json!(42));
    data.insert_value("name".into(), json!("bench"));
    SessionRecord {
        key: SessionId::generate().key(),
        version: 1,
        user_id: user.map(str::to_owned),
        data,
        created_at: now,
        last_active: now,
        expires_at: now.plus(ttl),
        device: DeviceInfo::new(Some("192.0.2.1".into()), Some("test/1.0")),
    }
}

async fn row_count(store: &SqliteStore) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM tessera_sessions").fetch_one(store.pool()).await.unwrap()
}

#[tokio::test]
async fn creates_the_file_with_wal_and_full_sync() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested-name.db");
    assert!(!path.exists());
    // A plain path works as well as a sqlite: URL.
    let store = SqliteStore::connect(path.to_str().unwrap()).await.unwrap();
    assert!(path.exists(), "connect creates the file");
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(store.pool()).await.unwrap();
    assert_eq!(mode, "wal");
    let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous").fetch_one(store.pool()).await.unwrap();
    assert_eq!(synchronous, 2, "synchronous = FULL");
    let busy: i64 = sqlx::query_scalar("PRAGMA busy_timeout").fetch_one(store.pool()).await.unwrap();
    assert!(busy >= 1000, "busy_timeout is set ({busy} ms)");
    store.ping().await.unwrap();
    store.close().await;
}

#[tokio::test]
async fn sessions_survive_closing_and_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::connect(&url(dir.path())).await.unwrap();
    let rec = record(Some("alice"), HOUR);
    assert_eq!(store.create(&rec).await.unwrap(), WriteOutcome::Written);
    let mut saved = rec.clone();
    saved.version = 2;
    saved.data.insert_value("cart".into(), json!([1, 2, 3]));
    assert_eq!(store.save(&saved, 1).await.unwrap(), WriteOutcome::Written);
    store.close().await;
    drop(store);

    let reopened = SqliteStore::connect(&url(dir.path())).await.unwrap();
    assert_eq!(reopened.load(&rec.key).await.unwrap(), Some(saved.clone()));
    assert_eq!(reopened.list_for_user("alice").await.unwrap(), vec![saved]);
    reopened.close().await;
}

#[tokio::test]
async fn undecodable_rows_are_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::connect(&url(dir.path())).await.unwrap();
    let rec = record(Some("mallory"), HOUR);
    let now = Timestamp::now().as_millis();
    sqlx::query(
        "INSERT INTO tessera_sessions (key, version, user_id, data, created_at, last_active, expires_at, device) \
         VALUES (?1, 1, 'mallory', CAST('{not json' AS BLOB), ?2, ?2, ?3, CAST('{}' AS BLOB))",
    )
    .bind(rec.key.as_bytes().as_slice())
    .bind(now)
    .bind(now + 3_600_000)
    .execute(store.pool())
    .await
    .unwrap();
    assert!(matches!(store.load(&rec.key).await, Err(StoreError::Corrupt(_))), "load of invalid JSON data");
    assert!(matches!(store.list_for_user("mallory").await, Err(StoreError::Corrupt(_))), "listing it");

    // Wrong key length and a negative version are corrupt too.
    let short_key = SessionId::generate().key();
    sqlx::query("UPDATE tessera_sessions SET data = CAST('{}' AS BLOB), key = X'0102' WHERE key = ?1")
        .bind(rec.key.as_bytes().as_slice())
        .execute(store.pool())
        .await
        .unwrap();
    assert!(matches!(store.list_for_user("mallory").await, Err(StoreError::Corrupt(_))), "short key");
    sqlx::query("UPDATE tessera_sessions SET key = ?1, version = -3 WHERE key = X'0102'")
        .bind(short_key.as_bytes().as_slice())
        .execute(store.pool())
        .await
        .unwrap();
    assert!(matches!(store.load(&short_key).await, Err(StoreError::Corrupt(_))), "negative version");

    // The engine treats a corrupt record as gone and deletes it.
    let engine = SessionEngine::new(Arc::new(store.clone()));
    let id = SessionId::generate();
    sqlx::query(
        "INSERT INTO tessera_sessions (key, version, user_id, data, created_at, last_active, expires_at, device) \
         VALUES (?1, 1, NULL, CAST('[1,2' AS BLOB), ?2, ?2, ?3, CAST('{}' AS BLOB))",
    )
    .bind(id.key().as_bytes().as_slice())
    .bind(now)
    .bind(now + 3_600_000)
    .execute(store.pool())
    .await
    .unwrap();
    let session = engine.load(Some(&id.encode()), DeviceInfo::default()).await.unwrap();
    assert!(session.is_empty());
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tessera_sessions WHERE key = ?1")
        .bind(id.key().as_bytes().as_slice())
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(left, 0, "the engine removed the corrupt record");
    store.close().await;
}

#[tokio::test]
async fn purge_deletes_dead_rows_in_batches_and_keeps_live_ones() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::connect(&url(dir.path())).await.unwrap();
    let dead_at = Timestamp::now().as_millis() - 1;
    let mut tx = store.pool().begin().await.unwrap();
    for i in 0..2500 {
        let mut rec = record(Some(&format!("u{}", i % 7)), HOUR);
        rec.expires_at = Timestamp(dead_at);
        sqlx::query(
            "INSERT INTO tessera_sessions (key, version, user_id, data, created_at, last_active, expires_at, device) \
             VALUES (?1, 1, ?2, CAST('{}' AS BLOB), ?3, ?3, ?3, CAST('{}' AS BLOB))",
        )
        .bind(rec.key.as_bytes().as_slice())
        .bind(rec.user_id.as_deref())
        .bind(rec.expires_at.as_millis())
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    let live = record(Some("u1"), HOUR);
    store.create(&live).await.unwrap();
    assert_eq!(row_count(&store).await, 2501);
    assert_eq!(store.list_for_user("u1").await.unwrap().len(), 1, "dead rows are never listed");

    assert_eq!(store.purge_expired().await.unwrap(), 2500, "three batches: 1000 + 1000 + 500");
    assert_eq!(row_count(&store).await, 1);
    assert_eq!(store.purge_expired().await.unwrap(), 0);
    assert!(store.load(&live.key).await.unwrap().is_some());
    store.close().await;
}

#[tokio::test]
async fn purge_task_runs_periodically() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::connect(&url(dir.path())).await.unwrap();
    let short = record(None, Duration::from_millis(100));
    store.create(&short).await.unwrap();
    store.create(&record(None, HOUR)).await.unwrap();
    let task = store.spawn_purge_task(Duration::from_millis(50));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while row_count(&store).await != 1 {
        assert!(tokio::time::Instant::now() < deadline, "the purge task removed the expired row");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    task.abort();
    store.close().await;
}

#[tokio::test]
async fn a_shared_pool_coexists_with_application_migrations() {
    let dir = tempfile::tempdir().unwrap();
    let options = SqliteStore::connect_options(&url(dir.path())).unwrap();
    let pool = SqlitePoolOptions::new().max_connections(4).connect_with(options).await.unwrap();
    // The application's own table, in the same file.
    sqlx::query("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL)").execute(&pool).await.unwrap();
    let store = SqliteStore::from_pool(pool.clone());
    store.migrate().await.unwrap();
    store.migrate().await.unwrap();
    let rec = record(Some("1"), HOUR);
    store.create(&rec).await.unwrap();
    sqlx::query("INSERT INTO users (name) VALUES ('alice')").execute(&pool).await.unwrap();
    assert!(store.load(&rec.key).await.unwrap().is_some());
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_regenerations_have_one_winner() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::connect(&url(dir.path())).await.unwrap());
    let rec = record(Some("racer"), HOUR);
    store.create(&rec).await.unwrap();
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let store = Arc::clone(&store);
            let mut next = rec.clone();
            next.key = SessionId::generate().key();
            next.version = 2;
            tokio::spawn(async move { (store.regenerate(&rec.key, 1, &next).await.unwrap(), next.key) })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        let (outcome, key) = task.await.unwrap();
        match outcome {
            WriteOutcome::Written => winners.push(key),
            other => assert_eq!(other, WriteOutcome::Missing, "losers find the old key gone"),
        }
    }
    assert_eq!(winners.len(), 1);
    let listed: Vec<_> = store.list_for_user("racer").await.unwrap().into_iter().map(|r| r.key).collect();
    assert_eq!(listed, winners);
    store.close().await;
}

/// Issue #14 item 10: a database file the store creates, and the `-wal`
/// and `-shm` files beside it, are readable by the owner only.
#[cfg(unix)]
#[tokio::test]
async fn creates_its_files_readable_by_the_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::connect(&url(dir.path())).await.unwrap();
    store.create(&record(Some("alice"), HOUR)).await.unwrap();
    for name in ["sessions.db", "sessions.db-wal", "sessions.db-shm"] {
        let path = dir.path().join(name);
        let mode = std::fs::metadata(&path).unwrap_or_else(|e| panic!("{name}: {e}")).permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{name} is {:o}", mode & 0o777);
    }
    store.close().await;
}
