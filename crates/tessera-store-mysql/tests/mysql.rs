//! Runs the conformance suite and MySQL-specific checks against a real
//! MariaDB (or MySQL) server.
//!
//! The server is found through `TESSERA_TEST_MYSQL_URL` (default
//! `mysql://root@127.0.0.1:3306/test`). Each test works in a database of its
//! own, `tessera_test_<random hex>`, dropped at the end. If the server cannot
//! be reached the tests are skipped with a loud message, unless
//! `TESSERA_REQUIRE_SERVICES` is set (as in CI), in which case they fail.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::{Connection, MySqlConnection};
use tessera::{
    DeviceInfo, SessionData, SessionEngine, SessionId, SessionRecord, SessionStore, StoreError, Timestamp, WriteOutcome,
};
use tessera_store_mysql::{Migrator, MySqlConnectOptions, MySqlPool, MySqlPoolOptions, MySqlStore};

const DEFAULT_URL: &str = "mysql://root@127.0.0.1:3306/test";
const HOUR: Duration = Duration::from_secs(3600);

/// A private database on the test server.
struct TestDb {
    /// Connections to the base database, for set-up, tear-down and for
    /// inspecting tables behind the store's back.
    admin: MySqlPool,
    name: String,
    /// Connection options that select the private database.
    options: MySqlConnectOptions,
}

impl TestDb {
    /// Creates a fresh database, or returns `None` (after saying so loudly)
    /// when the server is unreachable and services are not required.
    async fn new() -> Option<TestDb> {
        let url = std::env::var("TESSERA_TEST_MYSQL_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned());
        let base: MySqlConnectOptions = url.parse().expect("TESSERA_TEST_MYSQL_URL must be a mysql:// URL");
        // A single connection first: unlike a pool, it reports why it failed.
        let probe = match tokio::time::timeout(Duration::from_secs(5), MySqlConnection::connect_with(&base)).await {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err("no answer within 5 s".to_owned()),
        };
        match probe {
            Ok(connection) => connection.close().await.unwrap(),
            Err(error) => {
                if std::env::var_os("TESSERA_REQUIRE_SERVICES").is_some() {
                    panic!("MySQL/MariaDB unreachable at {url} and TESSERA_REQUIRE_SERVICES is set: {error}");
                }
                eprintln!("SKIPPED: MySQL/MariaDB unreachable at {url}: {error}");
                return None;
            }
        }
        let admin = MySqlPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(base.clone())
            .await
            .unwrap();
        let name = format!("tessera_test_{:016x}", rand::random::<u64>());
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&admin).await.unwrap();
        let options = base.database(&name);
        Some(TestDb { admin, name, options })
    }

    /// A migrated store working in this database.
    async fn store(&self) -> MySqlStore {
        MySqlStore::connect_with(self.options.clone()).await.unwrap()
    }

    /// Rows of the sessions table in this database, counted behind the store's back.
    async fn count(&self, condition: &str) -> i64 {
        let sql = format!("SELECT COUNT(*) FROM {}.tessera_sessions WHERE {condition}", self.name);
        sqlx::query_scalar(&sql).fetch_one(&self.admin).await.unwrap()
    }

    async fn drop_database(self) {
        sqlx::query(&format!("DROP DATABASE {}", self.name)).execute(&self.admin).await.unwrap();
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
    db.drop_database().await;
}

#[tokio::test]
async fn mariadb_urls_are_accepted_and_migrations_are_idempotent() {
    let Some(db) = TestDb::new().await else { return };
    let url = std::env::var("TESSERA_TEST_MYSQL_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned());
    let (server, _) = url.rsplit_once('/').unwrap();
    let mariadb = format!("{}/{}", server.replacen("mysql://", "mariadb://", 1), db.name);
    let store = MySqlStore::connect(&mariadb).await.unwrap();
    store.migrate().await.unwrap();

    // An application with its own sqlx migrations in the same database: its
    // migrator must ignore ours, and ours must ignore its.
    let dir = std::env::temp_dir().join(format!("tessera-mysql-app-migrations-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("1_app_things.sql"), "CREATE TABLE app_things (id BIGINT PRIMARY KEY);").unwrap();
    let mut app = Migrator::new(dir.as_path()).await.unwrap();
    app.set_ignore_missing(true);
    app.run(store.pool()).await.unwrap();
    store.migrate().await.unwrap();
    app.run(store.pool()).await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();

    let sql = format!("SELECT version FROM {}._sqlx_migrations ORDER BY version", db.name);
    let versions: Vec<i64> = sqlx::query_scalar(&sql).fetch_all(&db.admin).await.unwrap();
    assert_eq!(versions, vec![1, 1_000_001]);
    let ours = tessera_store_mysql::migrator();
    assert!(ours.iter().all(|m| (1_000_000..=1_999_999).contains(&m.version)), "our versions stay in our range");

    assert_eq!(store.create(&record(None, 60_000)).await.unwrap(), WriteOutcome::Written);
    assert_eq!(store.count_live().await.unwrap(), 1);
    store.pool().close().await;
    db.drop_database().await;
}

#[tokio::test]
async fn user_ids_compare_byte_for_byte() {
    // A VARCHAR with the usual collations would find "Alice" for "alice" and
    // "bob " for "bob"; user IDs are binary, so neither happens.
    let Some(db) = TestDb::new().await else { return };
    let store = db.store().await;
    let base = format!("user-{:016x}", rand::random::<u64>());
    let variants = [base.clone(), base.to_uppercase(), format!("{base} "), format!("{base}\u{e9}"), format!("{base}e")];
    for user in &variants {
        store.create(&record(Some(user), 60_000)).await.unwrap();
    }
    for user in &variants {
        let listed = store.list_for_user(user).await.unwrap();
        assert_eq!(listed.len(), 1, "{user:?}");
        assert_eq!(listed[0].user_id.as_deref(), Some(user.as_str()));
    }
    assert_eq!(store.destroy_for_user(&base, None).await.unwrap(), 1, "only the exact user's session");
    assert_eq!(db.count("true").await, 4);
    store.pool().close().await;
    db.drop_database().await;
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
        "INSERT INTO {}.tessera_sessions (`key`, version, user_id, data, created_at, last_active, expires_at, device)
         VALUES (?, 1, ?, ?, 0, 0, ?, ?)",
        db.name
    );
    sqlx::query(&sql)
        .bind(key.as_bytes().as_slice())
        .bind(user.as_bytes())
        .bind(b"{not json".as_slice())
        .bind(expires_at)
        .bind(b"garbage device is tolerated".as_slice())
        .execute(&db.admin)
        .await
        .unwrap();

    assert!(matches!(store.load(&key).await, Err(StoreError::Corrupt(_))), "load of bad JSON is Corrupt");
    assert!(matches!(store.list_for_user(&user).await, Err(StoreError::Corrupt(_))), "listing it is Corrupt");

    // A JSON value that is not an object is corrupt too, and so is a user ID
    // that is not UTF-8.
    let sql = format!("UPDATE {}.tessera_sessions SET data = ? WHERE `key` = ?", db.name);
    sqlx::query(&sql).bind(b"[1,2]".as_slice()).bind(key.as_bytes().as_slice()).execute(&db.admin).await.unwrap();
    assert!(matches!(store.load(&key).await, Err(StoreError::Corrupt(_))), "non-object data is Corrupt");
    let sql = format!("UPDATE {}.tessera_sessions SET data = '{{}}', user_id = X'FF00' WHERE `key` = ?", db.name);
    sqlx::query(&sql).bind(key.as_bytes().as_slice()).execute(&db.admin).await.unwrap();
    assert!(matches!(store.load(&key).await, Err(StoreError::Corrupt(_))), "a non-UTF-8 user is Corrupt");

    let engine = SessionEngine::new(Arc::new(store.clone()));
    let session = engine.load(Some(&id.encode()), DeviceInfo::default()).await.unwrap();
    assert!(session.is_empty(), "the engine starts afresh on a corrupt record");
    assert_eq!(db.count("true").await, 0, "the engine deleted the corrupt record");

    store.pool().close().await;
    db.drop_database().await;
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
    assert_eq!(store.count_live().await.unwrap(), 0);
    assert_eq!(store.destroy_for_user("someone", None).await.unwrap(), 0, "expired rows are not counted");
    assert_eq!(db.count("true").await, 0, "but they are freed");

    // destroy frees an expired row too, without counting it.
    assert_eq!(store.create(&dead).await.unwrap(), WriteOutcome::Written);
    assert!(!store.destroy(&dead.key).await.unwrap());
    assert_eq!(db.count("true").await, 0);

    // An expired row that is still stored does not block its key.
    assert_eq!(store.create(&dead).await.unwrap(), WriteOutcome::Written);
    let live = SessionRecord { expires_at: Timestamp::now().plus(HOUR), ..dead.clone() };
    assert_eq!(store.create(&live).await.unwrap(), WriteOutcome::Written, "an expired row is replaced");
    assert_eq!(store.load(&dead.key).await.unwrap(), Some(live.clone()));
    assert_eq!(store.create(&live).await.unwrap(), WriteOutcome::Conflict, "a live row is not");

    // Nor the key a regenerate moves to.
    let old = record(Some("someone"), 3_600_000);
    store.create(&old).await.unwrap();
    let stale = record(None, -1000);
    store.create(&stale).await.unwrap();
    let moved = SessionRecord { key: stale.key, version: 2, ..old.clone() };
    assert_eq!(store.regenerate(&old.key, 1, &moved).await.unwrap(), WriteOutcome::Written);
    assert_eq!(store.load(&stale.key).await.unwrap(), Some(moved));
    assert!(store.load(&old.key).await.unwrap().is_none());

    store.pool().close().await;
    db.drop_database().await;
}

#[tokio::test]
async fn purge_expired_deletes_in_batches_and_spares_live_rows() {
    let Some(db) = TestDb::new().await else { return };
    let store = db.store().await;

    // 2500 expired rows (two and a half batches), inserted in one statement
    // per 500 to keep the test quick.
    let now = Timestamp::now().as_millis();
    for chunk in 0..5 {
        let mut sql = format!(
            "INSERT INTO {}.tessera_sessions (`key`, version, user_id, data, created_at, last_active, expires_at, device) VALUES ",
            db.name
        );
        let mut values = Vec::new();
        for i in 0..500 {
            let n = chunk * 500 + i;
            values.push(format!(
                "(UNHEX(SHA2('{n}-{}', 256)), 1, 'user-{}', '{{}}', {now}, {now}, {}, '{{}}')",
                db.name,
                n % 7,
                now - 1 - n
            ));
        }
        sql.push_str(&values.join(", "));
        sqlx::query(&sql).execute(&db.admin).await.unwrap();
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
    db.drop_database().await;
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
    db.drop_database().await;
}

#[tokio::test]
async fn an_unreachable_server_fails_fast_with_unavailable() {
    // Port 1 on loopback: nothing listens there, so connecting is refused.
    let store = MySqlStore::connect_lazy("mysql://root@127.0.0.1:1/test").unwrap();
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

    let outcome = tokio::time::timeout(bound, MySqlStore::connect("mysql://root@127.0.0.1:1/test"))
        .await
        .expect("connect must not hang");
    assert!(matches!(outcome, Err(StoreError::Unavailable(_))), "connect: {:?}", outcome.err());
    assert!(matches!(MySqlStore::connect_lazy("not a url"), Err(StoreError::Unavailable(_))));
}

#[tokio::test]
async fn the_pool_recovers_when_its_connections_are_killed() {
    // What a server restart does to a pool: every connection is dropped by
    // the server. Only this store's connections are killed, by their IDs.
    let Some(db) = TestDb::new().await else { return };
    let store = db.store().await;
    let rec = record(None, 3_600_000);
    store.create(&rec).await.unwrap();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(store.pool().acquire().await.unwrap());
    }
    let mut ids = Vec::new();
    for connection in &mut held {
        let id: u64 = sqlx::query_scalar("SELECT CONNECTION_ID()").fetch_one(&mut **connection).await.unwrap();
        ids.push(id);
    }
    drop(held);
    for id in ids {
        sqlx::query(&format!("KILL CONNECTION {id}")).execute(&db.admin).await.unwrap();
    }

    store.ping().await.expect("the pool replaces dead connections by itself");
    assert_eq!(store.load(&rec.key).await.unwrap(), Some(rec.clone()));
    for _ in 0..5 {
        store.load(&rec.key).await.unwrap();
    }

    store.pool().close().await;
    db.drop_database().await;
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
        store.destroy_for_user("racer", None).await.unwrap();
    }

    store.pool().close().await;
    db.drop_database().await;
}

#[tokio::test]
async fn concurrent_independent_regenerates_do_not_deadlock() {
    // Many logins at once, each moving its own session to a fresh key: none
    // may fail with a lock wait or deadlock error.
    let Some(db) = TestDb::new().await else { return };
    let store = db.store().await;
    let olds: Vec<SessionRecord> = (0..40).map(|_| record(Some("crowd"), 3_600_000)).collect();
    for old in &olds {
        store.create(old).await.unwrap();
    }
    let mut tasks = tokio::task::JoinSet::new();
    for old in olds {
        let store = store.clone();
        tasks.spawn(async move {
            let next = SessionRecord { key: SessionId::generate().key(), version: 2, ..old.clone() };
            store.regenerate(&old.key, 1, &next).await
        });
    }
    for outcome in tasks.join_all().await {
        assert_eq!(outcome.unwrap(), WriteOutcome::Written);
    }
    assert_eq!(store.list_for_user("crowd").await.unwrap().len(), 40);
    store.pool().close().await;
    db.drop_database().await;
}
