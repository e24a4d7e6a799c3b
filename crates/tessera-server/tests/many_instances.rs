//! Several tessera instances sharing one store: sessions move between them,
//! logout anywhere ends the session everywhere, and concurrent writes spread
//! over both instances lose nothing, on every store (MongoDB's case runs
//! against SecantusDB, see scripts/secantus.sh).

mod harness;
mod services;

use std::sync::Arc;

use harness::{test_config, unique_name, TestServer};
use tessera::{ManualClock, SessionStore};
use tessera_server::AppConfig;

const PASSWORD: &str = "correct horse battery";

/// Two instances over the same users database and session store.
async fn pair(database_url: String, configure: impl Fn(&mut AppConfig)) -> (TestServer, TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let mut config = test_config(dir.path(), &clock);
    config.database_url = database_url;
    configure(&mut config);
    let first = TestServer::start(config.clone(), clock.clone()).await;
    let second = TestServer::start(config, clock).await;
    (first, second, dir)
}

/// Log in on one, use on the other, log out on the other, the first refuses.
async fn sessions_cross_instances(first: &TestServer, second: &TestServer) {
    let name = unique_name("roamer");
    let mut on_first = first.browser();
    assert_eq!(on_first.register(&name, PASSWORD).await.status, 303);
    let mut on_second = on_first.clone();
    on_second.base = second.base.clone();
    let profile = on_second.get("/profile").await;
    assert_eq!(profile.status, 200, "the session made on the first instance works on the second");
    assert_eq!(profile.element_text("username").as_deref(), Some(name.as_str()));
    let old = on_second.session_id().unwrap();
    assert_eq!(on_second.logout().await.status, 303);
    let mut replay = first.browser();
    replay.cookies.insert("__Host-id".into(), old);
    assert_eq!(replay.get("/profile").await.status, 303, "logged out on the second, refused on the first");
}

/// 50 concurrent profile views with one cookie, alternating instances, raise
/// the counter by exactly 50.
async fn counter_is_exact(first: &TestServer, second: &TestServer) {
    let mut browser = first.browser();
    browser.register(&unique_name("counter"), PASSWORD).await;
    let before: u64 = browser.get("/profile").await.element_text("visits").unwrap().parse().unwrap();
    let views = (0..50).map(|i| {
        let mut clone = browser.clone();
        clone.base = if i % 2 == 0 { first.base.clone() } else { second.base.clone() };
        tokio::spawn(async move { clone.get("/profile").await.status })
    });
    for status in futures::future::join_all(views).await {
        assert_eq!(status.unwrap(), 200);
    }
    let after: u64 = browser.get("/profile").await.element_text("visits").unwrap().parse().unwrap();
    assert_eq!(after, before + 51, "no increment lost across instances");
}

async fn run_all(first: TestServer, second: TestServer) {
    sessions_cross_instances(&first, &second).await;
    counter_is_exact(&first, &second).await;
    first.stop().await;
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_store_shared_in_process() {
    let store: Arc<dyn SessionStore> = Arc::new(tessera_store_memory::MemoryStore::new());
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("users.db").display());
    let (first, second, _dir) = pair(url, |config| config.session_store = Some(store.clone())).await;
    run_all(first, second).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_file_shared() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("shared.db").display());
    let (first, second, _dir) = pair(url, |_| {}).await;
    run_all(first, second).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_users_and_sessions() {
    if !services::reachable("PostgreSQL", "127.0.0.1:5432") {
        return;
    }
    let (first, second, _dir) = pair(services::postgres_url(), |_| {}).await;
    run_all(first, second).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_sessions_postgres_users() {
    if !services::reachable("PostgreSQL", "127.0.0.1:5432") || !services::reachable("Redis", "127.0.0.1:6379") {
        return;
    }
    let redis = services::redis_url();
    let (first, second, _dir) =
        pair(services::postgres_url(), |config| config.session_store_url = Some(redis.clone())).await;
    run_all(first, second).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_cluster_sessions() {
    if !services::reachable("Redis Cluster", "127.0.0.1:7101") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("users.db").display());
    let (first, second, _dir) = pair(url, |config| {
        config.session_store_url = Some("redis+cluster://127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103".into())
    })
    .await;
    run_all(first, second).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mariadb_sessions() {
    let Some(store) = services::mysql_url() else { return };
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("users.db").display());
    let (first, second, _dir) = pair(url, |config| config.session_store_url = Some(store.clone())).await;
    run_all(first, second).await;
    // The sessions really lived there, not in the users' SQLite file.
    let behind = tessera_store_mysql::MySqlStore::connect(&store).await.unwrap();
    assert!(behind.count_live().await.unwrap() >= 1, "the instances kept their sessions in MariaDB");
    behind.pool().close().await;
    services::drop_mysql_database(&store);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mongodb_sessions() {
    let Some(store) = services::mongodb_url() else { return };
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("users.db").display());
    let (first, second, _dir) = pair(url, |config| config.session_store_url = Some(store.clone())).await;
    run_all(first, second).await;
    // The sessions really lived there, not in the users' SQLite file.
    let behind = tessera_store_mongodb::MongoStore::connect(&store).await.unwrap();
    assert!(behind.count_live().await.unwrap() >= 1, "the instances kept their sessions in MongoDB");
    behind.client().database(&behind.collection().namespace().db).drop().await.unwrap();
}

/// Sessions sealed in cookies: any instance sharing the database (and so the
/// sealing keys and revocation marks) accepts them, and logout on one makes
/// the cookie worthless on the other. The exact-counter check does not apply:
/// concurrent requests cannot be merged when the browser holds the state.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cookie_sessions_across_instances() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("users.db").display());
    let (first, second, _dir) = pair(url, |config| config.session_store_url = Some("cookie://".into())).await;
    sessions_cross_instances(&first, &second).await;
    // The cookie holds the session itself, yet carries no readable data.
    let mut browser = first.browser();
    let name = unique_name("sealed");
    browser.register(&name, PASSWORD).await;
    let cookie = browser.session_id().unwrap();
    assert!(!cookie.contains(&name) && cookie.len() > 100, "sealed, not signed-in-the-clear: {cookie}");
    assert_eq!(browser.get("/profile").await.element_text("visits").as_deref(), Some("1"));
    assert_eq!(browser.get("/profile").await.element_text("visits").as_deref(), Some("2"));
    first.stop().await;
    second.stop().await;
}
