//! Runs the conformance suite and PostgreSQL-specific checks against a real
//! server.
//!
//! The server is found through `TESSERA_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`). Each test works in a schema of
//! its own, `tessera_test_<random hex>`, selected with `search_path` and dropped
//! at the end. If the server cannot be reached the tests are skipped with a
//! loud message, unless `TESSERA_REQUIRE_SERVICES` is set (as in CI), in which
//! case they fail.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::{Connection, PgConnection};
use tessera::{
    DeviceInfo, SessionData, SessionEngine, SessionId, SessionRecord, SessionStore, StoreError, Timestamp, WriteOutcome,
};
use tessera_store_postgres::{Migrator, PgConnectOptions, PgPool, PgPoolOptions, PostgresStore};

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
const HOUR: Duration = Duration::from_secs(3600);

/// A private schema on the test server.
struct TestDb {
    /// Connections without the schema on the search path, for set-up,
    /// tear-down and for inspecting tables behind the store's back.
    admin: PgPool,
    schema: String,
    /// Connection options that select the schema.
    options: PgConnectOptions,
}

impl TestDb {
    /// Creates a fresh schema, or returns `None` (after saying so loudly) when
    /// the server is unreachable and services are not required.
    async fn new() -> Option<TestDb> {
        let url = std::env::var("TESSERA_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned());
        let base: PgConnectOptions = url.parse().expect("TESSERA_TEST_POSTGRES_URL must be a postgres:// URL");
        // A single connection first: unlike a pool, it reports why it failed
        // (refused, unknown host, authentication) rather than a bare time-out.
        let probe = match tokio::time::timeout(Duration::from_secs(5), PgConnection::connect_with(&base)).await {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err("no answer within 5 s".to_owned()),
        };
        match probe {
            Ok(connection) => connection.close().await.unwrap(),
            Err(error) => {
                if std::env::var_os("TESSERA_REQUIRE_SERVICES").is_some() {
                    panic!("PostgreSQL unreachable at {url} and TESSERA_REQUIRE_SERVICES is set: {error}");
                }
                eprintln!("SKIPPED: PostgreSQL unreachable at {url}: {error}");
                return None;
            }
        }
        let admin = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(base.clone())
            .await
            .unwrap();
        let schema = format!("tessera_test_{:016x}", rand::random::<u64>());
        sqlx::query(&format!("CREATE SCHEMA {schema}")).execute(&admin).await.unwrap();
        let options = base.options([("search_path", schema.as_str())]);
        Some(TestDb { admin, schema, options })
    }

    /// A migrated store working in this schema.
    async fn store(&self) -> PostgresStore {
        PostgresStore::connect_with(self.options.clone()).await.unwrap()
    }

    /// Rows of the sessions table in this schema, counted behind the store's back.
    async fn count(&self, condition: &str) -> i64 {
        let sql = format!("SELECT count(*) FROM {}.tessera_sessions WHERE {condition}", self.schema);
        sqlx::query_scalar(&sql).fetch_one(&self.admin).await.unwrap()
    }

    async fn drop_schema(self) {
        sqlx::query(&format!("DROP SCHEMA {} CASCADE", self.schema)).execute(&self.admin).await.unwrap();
        self.admin.close().await;
    }
}

fn record(user: Option<&str>, expires_in_ms: i64) -> SessionRecord {
    let now = Timestamp::now();
    let mut data = SessionData::new();
    data.insert_value("k".into(), json!("v"));
    SessionRecord {
        key: SessionId::generate().key(),
        version: 1,
        user_id: user.map(str::to_owned),
        data,
        created_at: now,
        last_active: now,
        expires_at: Timestamp(now.as_millis() + expires_in_ms),
        device: DeviceInfo::new(Some("127.0.0.1".into()), Some("test")),
    }
}

#[tokio::test]
async fn passes_the_conformance_suite() {
    let Some(db) = TestDb::new().await else { return };
    let store = db.store().await;
    tessera_store_conformance::run(Arc::new(store.clone())).await;
    store.pool().close().await;
    db.drop_schema().await;
}

#[tokio::test]
async fn migrations_are_idempotent_and_share_the_table_with_an_application() {
    let Some(db) = TestDb::new().await else { return };
    let store = db.store().await;
    store.migrate().await.unwrap();

    // An application with its own sqlx migrations in the same schema: its
    // migrator must ignore ours, and ours must ignore its.
    let dir = std::env::temp_dir().join(format!("tessera-app-migrations-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("1_app_things.sql"), "CREATE TABLE app_things (id BIGINT PRIMARY KEY);").unwrap();
    std::fs::write(dir.join("20261121000001_more.sql"), "ALTER TABLE app_things ADD COLUMN name TEXT;").unwrap();
    let mut app = Migrator::new(dir.as_path()).await.unwrap();
    app.set_ignore_missing(true);
    app.run(store.pool()).await.unwrap();
    store.migrate().await.unwrap();
    app.run(store.pool()).await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();

    let sql = format!("SELECT version FROM {}._sqlx_migrations ORDER BY version", db.schema);
    let versions: Vec<i64> = sqlx::query_scalar(&sql).fetch_all(&db.admin).await.unwrap();
    assert_eq!(versions, vec![1, 1_000_001, 20261121000001]);
    let ours = tessera_store_postgres::migrator();
    assert!(ours.iter().all(|m| (1_000_000..=1_999_999).contains(&m.version)), "our versions stay in our range");

    assert_eq!(store.create(&record(None, 60_000)).await.unwrap(), WriteOutcome::Written);
    store.pool().close().await;
    db.drop_schema().await;
}

#[tokio::test]
async fn undecodable_data_is_corrupt_and_the_engine_drops_it() {
    let Some(db) = TestDb::new().await else { return };
    let store = db.store().await;

    let id = SessionId::generate();
    let key = id.key();
    let user = format!("user-{:016x}", rand::random::<u64>());
    let expires_at = Timestamp::now().plus(HOUR).as_millis();
    let sql = format!(
        "INSERT INTO {}.tessera_sessions (key, version, user_id, data, created_at, last_active, expires_at, device)
         VALUES ($1, 1, $2, $3, 0, 0, $4, $5)",
        db.schema
    );
    sqlx::query(&sql)
        .bind(key.as_bytes().as_slice())
        .bind(&user)
        .bind(b"{not json".as_slice())
        .bind(expires_at)
        .bind(b"garbage device is tolerated".as_slice())
        .execute(&db.admin)
        .await
        .unwrap();

    assert!(matches!(store.load(&key).await, Err(StoreError::Corrupt(_))), "load of bad JSON is Corrupt");
    assert!(matches!(store.list_for_user(&user).await, Err(StoreError::Corrupt(_))), "listing it is Corrupt");

    // A JSON value that is not an object is corrupt too.
    let sql = format!("UPDATE {}.tessera_sessions SET data = $1 WHERE key = $2", db.schema);
    sqlx::query(&sql).bind(b"[1,2]".as_slice()).bind(key.as_bytes().as_slice()).execute(&db.admin).await.unwrap();
    assert!(matches!(store.load(&key).await, Err(StoreError::Corrupt(_))), "non-object data is Corrupt");

    let engine = SessionEngine::new(Arc::new(store.clone()));
    let session = engine.load(Some(&id.encode()), DeviceInfo::default()).await.unwrap();
    assert!(session.is_empty(), "the engine starts afresh on a corrupt record");
    assert_eq!(db.count("true").await, 0, "the engine deleted the corrupt record");

    store.pool().close().await;
    db.drop_schema().await;
}

#[tokio::test]
async fn expired_rows_stay_dead_until_purged() {
    let Some(db) = TestDb::new().await else { return };
    let store = db.store().await;

    let dead = record(Some("someone"), -1000);
    assert_eq!(store.create(&dead).await.unwrap(), WriteOutcome::Written);
    assert_eq!(db.count("true").await, 1, "the expired row is stored until purged");
    assert!(store.load(&dead.key).await.unwrap().is_none());
    let mut next = dead.clone();
    next.version = 2;
    next.expires_at = Timestamp::now().plus(HOUR);
    assert_eq!(store.save(&next, 1).await.unwrap(), WriteOutcome::Missing, "save never revives");
    assert!(!store.touch(&dead.key, Timestamp::now(), Timestamp::now().plus(HOUR)).await.unwrap());
    let fresh = SessionRecord { key: SessionId::generate().key(), ..next.clone() };
    assert_eq!(store.regenerate(&dead.key, 1, &fresh).await.unwrap(), WriteOutcome::Missing);
    assert!(store.load(&fresh.key).await.unwrap().is_none());
    assert!(store.list_for_user("someone").await.unwrap().is_empty());
    assert_eq!(store.destroy_for_user("someone", None).await.unwrap(), 0, "expired rows are not counted");
    assert_eq!(db.count("true").await, 0, "but they are freed");

    // An expired row that is still stored does not block its key.
    assert_eq!(store.create(&dead).await.unwrap(), WriteOutcome::Written);
    let live = SessionRecord { expires_at: Timestamp::now().plus(HOUR), ..dead.clone() };
    assert_eq!(store.create(&live).await.unwrap(), WriteOutcome::Written, "an expired row is replaced");
    assert_eq!(store.load(&dead.key).await.unwrap(), Some(live.clone()));
    assert_eq!(store.create(&live).await.unwrap(), WriteOutcome::Conflict, "a live row is not");

    store.pool().close().await;
    db.drop_schema().await;
}

#[tokio::test]
async fn purge_expired_deletes_in_batches_and_spares_live_rows() {
    let Some(db) = TestDb::new().await else { return };
    let store = db.store().await;

    for i in 0..2500 {
        let user = format!("user-{}", i % 7);
        assert_eq!(store.create(&record(Some(&user), -1 - i)).await.unwrap(), WriteOutcome::Written);
    }
    let live: Vec<SessionRecord> = (0..5).map(|_| record(Some("user-1"), 3_600_000)).collect();
    for rec in &live {
        store.create(rec).await.unwrap();
    }
    assert_eq!(db.count("true").await, 2505);

    assert_eq!(store.purge_expired().await.unwrap(), 2500, "every expired row, over several batches");
    assert_eq!(db.count("true").await, 5, "only live rows are left");
    for rec in &live {
        assert_eq!(store.load(&rec.key).await.unwrap().as_ref(), Some(rec), "live rows untouched");
    }
    assert_eq!(store.purge_expired().await.unwrap(), 0, "nothing left to purge");

    store.pool().close().await;
    db.drop_schema().await;
}

#[tokio::test]
async fn the_purge_task_deletes_expired_rows() {
    let Some(db) = TestDb::new().await else { return };
    let store = db.store().await;

    let live = record(None, 3_600_000);
    store.create(&live).await.unwrap();
    let task = store.spawn_purge_task(Duration::from_millis(100));
    // Rows that expire after the task started must be collected by a later round.
    for _ in 0..30 {
        store.create(&record(None, -5)).await.unwrap();
    }
    let short = record(None, 300);
    store.create(&short).await.unwrap();

    let deadline = Instant::now() + Duration::from_secs(10);
    while db.count("true").await > 1 {
        assert!(Instant::now() < deadline, "the purge task did not delete expired rows in time");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(store.load(&live.key).await.unwrap(), Some(live.clone()), "the live row survives");
    assert!(!task.is_finished(), "the task keeps running");
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());

    store.pool().close().await;
    db.drop_schema().await;
}

#[tokio::test]
async fn an_unreachable_server_fails_fast_with_unavailable() {
    // Port 1 on loopback: nothing listens there, so connecting is refused.
    let store = PostgresStore::connect_lazy("postgres://postgres@127.0.0.1:1/test").unwrap();
    let rec = record(None, 60_000);
    let bound = Duration::from_secs(6);

    let started = Instant::now();
    let outcome = tokio::time::timeout(bound, store.load(&rec.key)).await.expect("load must not hang");
    assert!(matches!(outcome, Err(StoreError::Unavailable(_))), "load: {outcome:?}");
    let outcome = tokio::time::timeout(bound, store.create(&rec)).await.expect("create must not hang");
    assert!(matches!(outcome, Err(StoreError::Unavailable(_))), "create: {outcome:?}");
    let outcome = tokio::time::timeout(bound, store.ping()).await.expect("ping must not hang");
    assert!(matches!(outcome, Err(StoreError::Unavailable(_))), "ping: {outcome:?}");
    let outcome = tokio::time::timeout(bound, store.migrate()).await.expect("migrate must not hang");
    assert!(matches!(outcome, Err(StoreError::Unavailable(_))), "migrate: {outcome:?}");
    assert!(started.elapsed() < Duration::from_secs(15), "took {:?}", started.elapsed());

    let outcome = tokio::time::timeout(bound, PostgresStore::connect("postgres://postgres@127.0.0.1:1/test"))
        .await
        .expect("connect must not hang");
    assert!(matches!(outcome, Err(StoreError::Unavailable(_))), "connect: {:?}", outcome.err());
    assert!(matches!(PostgresStore::connect_lazy("not a url"), Err(StoreError::Unavailable(_))));
}

#[tokio::test]
async fn the_pool_recovers_when_its_connections_are_killed() {
    // What a server restart does to a pool: every connection is dropped by
    // the server. Only this test's connections are killed, by application name.
    let Some(db) = TestDb::new().await else { return };
    let name = format!("tessera-recovery-{:016x}", rand::random::<u64>());
    let store = PostgresStore::connect_with(db.options.clone().application_name(&name)).await.unwrap();
    let rec = record(None, 3_600_000);
    store.create(&rec).await.unwrap();
    // Hold a few connections so that the pool keeps several idle ones.
    let held: Vec<_> = hold_connections(&store, 3).await;
    drop(held);

    let killed: Vec<bool> =
        sqlx::query_scalar("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1")
            .bind(&name)
            .fetch_all(&db.admin)
            .await
            .unwrap();
    assert!(!killed.is_empty() && killed.iter().all(|k| *k), "killed {killed:?}");

    store.ping().await.expect("the pool replaces dead connections by itself");
    assert_eq!(store.load(&rec.key).await.unwrap(), Some(rec.clone()));
    for _ in 0..5 {
        store.load(&rec.key).await.unwrap();
    }

    store.pool().close().await;
    db.drop_schema().await;
}

/// Checks out `n` connections at once, so that the pool has `n` open.
async fn hold_connections(store: &PostgresStore, n: usize) -> Vec<sqlx::pool::PoolConnection<sqlx::Postgres>> {
    let mut held = Vec::new();
    for _ in 0..n {
        held.push(store.pool().acquire().await.unwrap());
    }
    held
}

#[tokio::test]
async fn racing_regenerates_and_destroys_leave_one_live_record_at_most() {
    let Some(db) = TestDb::new().await else { return };
    let store = db.store().await;

    for _ in 0..5 {
        let old = record(Some("racer"), 3_600_000);
        store.create(&old).await.unwrap();
        let mut tasks = tokio::task::JoinSet::new();
        let mut new_keys = Vec::new();
        for i in 0..8 {
            let store = store.clone();
            let old = old.clone();
            let mut next = SessionRecord { key: SessionId::generate().key(), version: 2, ..old.clone() };
            next.data.insert_value("by".into(), json!(i));
            new_keys.push(next.key);
            tasks.spawn(async move { store.regenerate(&old.key, 1, &next).await.unwrap() });
        }
        let destroyer = store.clone();
        let old_key = old.key;
        tasks.spawn(async move {
            destroyer.destroy(&old_key).await.unwrap();
            // Not a regenerate: counts as no winner.
            WriteOutcome::Missing
        });
        let outcomes = tasks.join_all().await;
        let written = outcomes.iter().filter(|o| **o == WriteOutcome::Written).count();
        assert!(written <= 1, "at most one regenerate wins: {outcomes:?}");
        assert!(store.load(&old.key).await.unwrap().is_none(), "the old key is dead either way");
        let mut live = 0;
        for key in &new_keys {
            live += usize::from(store.load(key).await.unwrap().is_some());
        }
        assert!(live <= 1, "at most one new key lives");
        assert_eq!(live, written, "a new key lives only if its regenerate was reported Written");
        // The destroy may have run after the winner, in which case the new key
        // lives; clean up for the next round.
        store.destroy_for_user("racer", None).await.unwrap();
    }

    store.pool().close().await;
    db.drop_schema().await;
}
