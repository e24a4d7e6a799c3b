//! Runs the conformance suite and MongoDB-specific checks against a real
//! server speaking the MongoDB wire protocol.
//!
//! No MongoDB server can be installed from the package registries this
//! project may use, so `scripts/secantus.sh` installs SecantusDB (PyPI) into a
//! virtual environment, starts it on a free loopback port and writes its URL
//! to `/tmp/tessera-secantus/url`. The tests use `TESSERA_TEST_MONGODB_URL`
//! if set, else that file. Each test works in a database of its own,
//! `tessera_test_<random hex>`, dropped at the end. If no server can be
//! reached the tests are skipped with a loud message, unless
//! `TESSERA_REQUIRE_SERVICES` is set (as in CI), in which case they fail.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tessera::{
    DeviceInfo, SessionData, SessionEngine, SessionId, SessionRecord, SessionStore, StoreError, Timestamp, WriteOutcome,
};
use tessera_store_mongodb::mongodb::bson::spec::BinarySubtype;
use tessera_store_mongodb::mongodb::bson::{doc, Binary, Bson, DateTime, Document};
use tessera_store_mongodb::mongodb::{self, Collection};
use tessera_store_mongodb::MongoStore;

const URL_FILE: &str = "/tmp/tessera-secantus/url";
const HOUR: Duration = Duration::from_secs(3600);

/// The server's URL without a database, e.g. `mongodb://127.0.0.1:27017`,
/// or why there is none.
fn server_url() -> Result<String, String> {
    let url = match std::env::var("TESSERA_TEST_MONGODB_URL") {
        Ok(url) => url,
        Err(_) => std::fs::read_to_string(URL_FILE)
            .map_err(|e| {
                format!(
                    "TESSERA_TEST_MONGODB_URL is not set and {URL_FILE} is unreadable ({e}); run scripts/secantus.sh"
                )
            })?
            .trim()
            .to_owned(),
    };
    let rest = url.strip_prefix("mongodb://").ok_or_else(|| format!("{url:?} is not a mongodb:// URL"))?;
    let hosts = rest.split(['/', '?']).next().unwrap_or_default();
    Ok(format!("mongodb://{hosts}"))
}

/// A private database on the test server.
struct TestDb {
    /// The URL of the private database.
    url: String,
    store: MongoStore,
}

impl TestDb {
    /// A connected store in a fresh database, or `None` (after saying so
    /// loudly) when no server is reachable and services are not required.
    async fn new() -> Option<TestDb> {
        let server = server_url();
        let name = format!("tessera_test_{:016x}", rand::random::<u64>());
        let connected = match &server {
            Ok(server) => {
                let url = format!("{server}/{name}");
                match MongoStore::connect(&url).await {
                    Ok(store) => Ok((url, store)),
                    Err(error) => Err(format!("{server}: {error}")),
                }
            }
            Err(why) => Err(why.clone()),
        };
        match connected {
            Ok((url, store)) => Some(TestDb { url, store }),
            Err(error) => {
                if std::env::var_os("TESSERA_REQUIRE_SERVICES").is_some() {
                    panic!("MongoDB unreachable and TESSERA_REQUIRE_SERVICES is set: {error}");
                }
                eprintln!("SKIPPED: MongoDB unreachable: {error}");
                None
            }
        }
    }

    fn raw(&self) -> &Collection<Document> {
        self.store.collection()
    }

    /// Documents in the collection, counted behind the store's back.
    async fn count(&self, filter: Document) -> u64 {
        self.raw().count_documents(filter).await.unwrap()
    }

    /// Drops the TTL index, so that expired documents stay until the store
    /// itself removes them (the test server's TTL monitor runs every second).
    async fn without_ttl_monitor(&self) {
        self.raw().drop_index("tessera_sessions_expires_at").await.unwrap();
        self.raw().create_index(mongodb::IndexModel::builder().keys(doc! { "expires_at": 1 }).build()).await.unwrap();
    }

    async fn drop_database(self) {
        let database = self.store.client().database(&self.raw().namespace().db);
        database.drop().await.unwrap();
        self.store.client().clone().shutdown().await;
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

fn binary(bytes: &[u8]) -> Binary {
    Binary { subtype: BinarySubtype::Generic, bytes: bytes.to_vec() }
}

#[tokio::test]
async fn passes_the_conformance_suite() {
    let Some(db) = TestDb::new().await else { return };
    tessera_store_conformance::run(Arc::new(db.store.clone())).await;
    db.drop_database().await;
}

#[tokio::test]
async fn indexes_are_created_idempotently_and_documents_are_as_documented() {
    let Some(db) = TestDb::new().await else { return };
    db.store.create_indexes().await.unwrap();
    MongoStore::connect(&db.url).await.expect("a second connect finds the indexes in place");

    let indexes: Vec<Document> = {
        use futures::TryStreamExt;
        let cursor = db
            .store
            .client()
            .database(&db.raw().namespace().db)
            .run_cursor_command(doc! { "listIndexes": "tessera_sessions" })
            .await
            .unwrap();
        cursor.try_collect().await.unwrap()
    };
    let ttl = indexes.iter().find(|i| i.get_str("name") == Ok("tessera_sessions_expires_at")).expect("TTL index");
    assert_eq!(ttl.get_document("key").unwrap(), &doc! { "expires_at": 1 });
    assert_eq!(ttl.get("expireAfterSeconds").and_then(|v| v.as_i64().or(v.as_i32().map(i64::from))), Some(0));
    let by_user = indexes.iter().find(|i| i.get_str("name") == Ok("tessera_sessions_user_id")).expect("user index");
    assert_eq!(by_user.get_document("partialFilterExpression").unwrap(), &doc! { "user_id": { "$type": "string" } });

    let rec = record(Some("shape"), 60_000);
    db.store.create(&rec).await.unwrap();
    let stored = db.raw().find_one(doc! { "_id": binary(rec.key.as_bytes()) }).await.unwrap().unwrap();
    assert_eq!(stored.get_i64("version").unwrap(), 1);
    assert_eq!(stored.get_str("user_id").unwrap(), "shape");
    assert_eq!(stored.get_binary_generic("data").unwrap(), &rec.data.to_json());
    assert_eq!(stored.get_datetime("expires_at").unwrap(), &DateTime::from_millis(rec.expires_at.as_millis()));
    assert_eq!(db.store.count_live().await.unwrap(), 1);
    db.drop_database().await;
}

#[tokio::test]
async fn the_ttl_index_frees_expired_documents_by_itself() {
    // MongoDB's TTL monitor runs every 60 s; scripts/secantus.sh starts
    // SecantusDB with a 1 s sweep. Either way the document must go without
    // any call to purge_expired.
    let Some(db) = TestDb::new().await else { return };
    let dead = record(None, -1000);
    let live = record(None, 3_600_000);
    db.store.create(&dead).await.unwrap();
    db.store.create(&live).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(130);
    while db.count(doc! { "_id": binary(dead.key.as_bytes()) }).await > 0 {
        assert!(Instant::now() < deadline, "the TTL index did not delete the expired document");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(db.store.load(&live.key).await.unwrap(), Some(live));
    db.drop_database().await;
}

#[tokio::test]
async fn undecodable_documents_are_corrupt_and_the_engine_drops_them() {
    let Some(db) = TestDb::new().await else { return };
    let id = SessionId::generate();
    let key = id.key();
    let user = format!("user-{:016x}", rand::random::<u64>());
    let expires_at = DateTime::from_millis(Timestamp::now().plus(HOUR).as_millis());
    let id_filter = doc! { "_id": binary(key.as_bytes()) };
    db.raw()
        .insert_one(doc! {
            "_id": binary(key.as_bytes()), "version": 1_i64, "user_id": &user, "data": binary(b"{not json"),
            "created_at": 0_i64, "last_active": 0_i64, "expires_at": expires_at, "device": "garbage is tolerated",
        })
        .await
        .unwrap();
    assert!(matches!(db.store.load(&key).await, Err(StoreError::Corrupt(_))), "load of bad JSON is Corrupt");
    assert!(matches!(db.store.list_for_user(&user).await, Err(StoreError::Corrupt(_))), "listing it is Corrupt");

    let cases: [(&str, Bson); 4] = [
        ("data", binary(b"[1,2]").into()),
        ("version", "one".into()),
        ("created_at", 1.5.into()),
        ("data", "{}".into()),
    ];
    for (field, value) in cases {
        db.raw().update_one(id_filter.clone(), doc! { "$set": { field: value } }).await.unwrap();
        assert!(matches!(db.store.load(&key).await, Err(StoreError::Corrupt(_))), "bad {field} is Corrupt");
        db.raw()
            .update_one(
                id_filter.clone(),
                doc! { "$set": { "data": binary(b"{}"), "version": 1_i64, "created_at": 0_i64 } },
            )
            .await
            .unwrap();
        assert!(db.store.load(&key).await.unwrap().is_some(), "repaired");
    }
    db.raw().update_one(id_filter.clone(), doc! { "$set": { "data": binary(b"{oops") } }).await.unwrap();

    let engine = SessionEngine::new(Arc::new(db.store.clone()));
    let session = engine.load(Some(&id.encode()), DeviceInfo::default()).await.unwrap();
    assert!(session.is_empty(), "the engine starts afresh on a corrupt record");
    assert_eq!(db.count(doc! {}).await, 0, "the engine deleted the corrupt record");
    db.drop_database().await;
}

#[tokio::test]
async fn expired_documents_stay_dead_until_purged() {
    let Some(db) = TestDb::new().await else { return };
    db.without_ttl_monitor().await;
    let store = &db.store;

    let dead = record(Some("someone"), -1000);
    assert_eq!(store.create(&dead).await.unwrap(), WriteOutcome::Written);
    assert_eq!(db.count(doc! {}).await, 1, "the expired document is stored until purged");
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
    assert_eq!(store.destroy_for_user("someone", None).await.unwrap(), 0, "expired documents are not counted");
    assert_eq!(db.count(doc! {}).await, 0, "but they are freed");

    // destroy frees an expired document too, without counting it.
    assert_eq!(store.create(&dead).await.unwrap(), WriteOutcome::Written);
    assert!(!store.destroy(&dead.key).await.unwrap());
    assert_eq!(db.count(doc! {}).await, 0);

    // An expired document that is still stored does not block its key.
    assert_eq!(store.create(&dead).await.unwrap(), WriteOutcome::Written);
    let live = SessionRecord { expires_at: Timestamp::now().plus(HOUR), ..dead.clone() };
    assert_eq!(store.create(&live).await.unwrap(), WriteOutcome::Written, "an expired document is replaced");
    assert_eq!(store.load(&dead.key).await.unwrap(), Some(live.clone()));
    assert_eq!(store.create(&live).await.unwrap(), WriteOutcome::Conflict, "a live document is not");

    // Nor the key a regenerate moves to.
    let old = record(Some("someone"), 3_600_000);
    store.create(&old).await.unwrap();
    let stale = record(None, -1000);
    store.create(&stale).await.unwrap();
    let moved = SessionRecord { key: stale.key, version: 2, ..old.clone() };
    assert_eq!(store.regenerate(&old.key, 1, &moved).await.unwrap(), WriteOutcome::Written);
    assert_eq!(store.load(&stale.key).await.unwrap(), Some(moved));
    assert!(store.load(&old.key).await.unwrap().is_none());
    db.drop_database().await;
}

#[tokio::test]
async fn purge_expired_deletes_in_batches_and_spares_live_documents() {
    let Some(db) = TestDb::new().await else { return };
    db.without_ttl_monitor().await;
    let now = Timestamp::now().as_millis();
    let expired: Vec<Document> = (0..2500_i64)
        .map(|i| {
            let key = SessionId::generate().key();
            doc! {
                "_id": binary(key.as_bytes()), "version": 1_i64, "user_id": format!("user-{}", i % 7),
                "data": binary(b"{}"), "created_at": now, "last_active": now,
                "expires_at": DateTime::from_millis(now - 1 - i), "device": binary(b"{}"),
            }
        })
        .collect();
    db.raw().insert_many(expired).await.unwrap();
    let live: Vec<SessionRecord> = (0..5).map(|_| record(Some("user-1"), 3_600_000)).collect();
    for rec in &live {
        db.store.create(rec).await.unwrap();
    }
    assert_eq!(db.count(doc! {}).await, 2505);

    assert_eq!(db.store.purge_expired().await.unwrap(), 2500, "every expired document, over several batches");
    assert_eq!(db.count(doc! {}).await, 5, "only live documents are left");
    for rec in &live {
        assert_eq!(db.store.load(&rec.key).await.unwrap().as_ref(), Some(rec), "live documents untouched");
    }
    assert_eq!(db.store.purge_expired().await.unwrap(), 0, "nothing left to purge");
    db.drop_database().await;
}

#[tokio::test]
async fn an_unreachable_server_fails_fast_with_unavailable() {
    // Port 1 on loopback: nothing listens there, so connecting is refused.
    let store = MongoStore::connect_lazy("mongodb://127.0.0.1:1/test").await.unwrap();
    let rec = record(None, 60_000);
    let bound = Duration::from_secs(6);

    let started = Instant::now();
    let outcome = tokio::time::timeout(bound, store.load(&rec.key)).await.expect("load must not hang");
    assert!(matches!(outcome, Err(StoreError::Unavailable(_))), "load: {outcome:?}");
    let outcome = tokio::time::timeout(bound, store.create(&rec)).await.expect("create must not hang");
    assert!(matches!(outcome, Err(StoreError::Unavailable(_))), "create: {outcome:?}");
    let outcome = tokio::time::timeout(bound, store.ping()).await.expect("ping must not hang");
    assert!(matches!(outcome, Err(StoreError::Unavailable(_))), "ping: {outcome:?}");
    assert!(started.elapsed() < Duration::from_secs(15), "took {:?}", started.elapsed());

    let outcome = tokio::time::timeout(bound, MongoStore::connect("mongodb://127.0.0.1:1/test"))
        .await
        .expect("connect must not hang");
    assert!(matches!(outcome, Err(StoreError::Unavailable(_))), "connect: {:?}", outcome.err());
    assert!(matches!(MongoStore::connect_lazy("not a url").await, Err(StoreError::Unavailable(_))));
    let no_database = MongoStore::connect_lazy("mongodb://127.0.0.1:1").await.expect_err("a database is required");
    assert!(no_database.to_string().contains("must name a database"), "{no_database}");
}

#[tokio::test]
async fn racing_regenerates_and_destroys_leave_one_live_record_at_most() {
    let Some(db) = TestDb::new().await else { return };
    let store = db.store.clone();

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
    db.drop_database().await;
}

#[tokio::test]
async fn concurrent_independent_regenerates_all_succeed() {
    let Some(db) = TestDb::new().await else { return };
    let olds: Vec<SessionRecord> = (0..40).map(|_| record(Some("crowd"), 3_600_000)).collect();
    for old in &olds {
        db.store.create(old).await.unwrap();
    }
    let mut tasks = tokio::task::JoinSet::new();
    for old in olds {
        let store = db.store.clone();
        tasks.spawn(async move {
            let next = SessionRecord { key: SessionId::generate().key(), version: 2, ..old.clone() };
            store.regenerate(&old.key, 1, &next).await
        });
    }
    for outcome in tasks.join_all().await {
        assert_eq!(outcome.unwrap(), WriteOutcome::Written);
    }
    assert_eq!(db.store.list_for_user("crowd").await.unwrap().len(), 40);
    db.drop_database().await;
}

/// Kills the child server when the test ends, however it ends.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_standalone_server_is_refused_at_connect() {
    // `regenerate` needs transactions, which a standalone mongod refuses;
    // SecantusDB's --standalone mode answers `hello` as one does.
    let venv = std::env::var("TESSERA_SECANTUS_VENV").unwrap_or_else(|_| "/opt/tessera-secantus".into());
    let daemon = std::path::Path::new(&venv).join("bin/secantusd-py");
    if !daemon.exists() {
        if std::env::var_os("TESSERA_REQUIRE_SERVICES").is_some() {
            panic!("{} is missing: run scripts/secantus.sh", daemon.display());
        }
        eprintln!("SKIPPED: {} is missing: run scripts/secantus.sh", daemon.display());
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let _server = Child(
        std::process::Command::new(&daemon)
            .args(["--standalone", "--host", "127.0.0.1", "--port", &port.to_string(), "--storage-path", ":memory:"])
            .args(["--log-level", "WARNING"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the standalone server did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let error = MongoStore::connect(&format!("mongodb://127.0.0.1:{port}/test"))
        .await
        .expect_err("a standalone server cannot run regenerate's transaction");
    assert!(matches!(error, StoreError::Unavailable(_)), "{error}");
    assert!(error.to_string().contains("standalone"), "{error}");
}
