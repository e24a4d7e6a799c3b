//! Conformance and layout checks against a standalone Redis
//! (`TESSERA_TEST_REDIS_URL`, default `redis://127.0.0.1:6379`).

mod common;

use std::sync::Arc;
use std::time::Duration;

use redis::AsyncCommands;
use tessera::{SessionId, SessionStore, StoreError, Timestamp, WriteOutcome};
use tessera_store_conformance::record;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_standalone() {
    let Some(store) = common::standalone("conformance_standalone").await else { return };
    assert!(!store.is_cluster());
    tessera_store_conformance::run(Arc::new(store)).await;
}

async fn raw() -> redis::aio::MultiplexedConnection {
    redis::Client::open(common::standalone_url()).unwrap().get_multiplexed_async_connection().await.unwrap()
}

#[tokio::test]
async fn layout_and_native_expiry() {
    let Some(store) = common::standalone("layout_and_native_expiry").await else { return };
    let mut raw = raw().await;
    let rec = record(Some("layout-user"), Duration::from_secs(3600));
    assert_eq!(store.create(&rec).await.unwrap(), WriteOutcome::Written);

    let name = store.session_key(&rec.key);
    assert_eq!(name, format!("{}s:{{{}}}", store.prefix(), rec.key.to_hex()));
    let data: Vec<u8> = raw.hget(&name, "d").await.unwrap();
    assert_eq!(data, rec.data.to_json(), "data bytes are SessionData::to_json exactly");
    let device: Vec<u8> = raw.hget(&name, "dev").await.unwrap();
    assert_eq!(device, rec.device.to_json());
    let expire_at: i64 = redis::cmd("PEXPIRETIME").arg(&name).query_async(&mut raw).await.unwrap();
    assert_eq!(expire_at, rec.expires_at.as_millis(), "native expiry at expires_at");

    let index = store.user_index_key("layout-user");
    let score: f64 = raw.zscore(&index, rec.key.to_hex()).await.unwrap();
    assert_eq!(score as i64, rec.expires_at.as_millis());
    let index_expire: i64 = redis::cmd("PEXPIRETIME").arg(&index).query_async(&mut raw).await.unwrap();
    assert_eq!(index_expire, rec.expires_at.as_millis(), "index expires with its longest-lived member");

    // touch moves both the hash's expiry and the index score.
    let later = rec.expires_at.plus(Duration::from_secs(60));
    assert!(store.touch(&rec.key, rec.last_active.plus(Duration::from_secs(1)), later).await.unwrap());
    let expire_at: i64 = redis::cmd("PEXPIRETIME").arg(&name).query_async(&mut raw).await.unwrap();
    assert_eq!(expire_at, later.as_millis());
    let score: f64 = raw.zscore(&index, rec.key.to_hex()).await.unwrap();
    assert_eq!(score as i64, later.as_millis());

    assert_eq!(store.purge_expired().await.unwrap(), 0, "native expiry: nothing to purge");
    assert!(store.destroy(&rec.key).await.unwrap());
    let member: Option<f64> = raw.zscore(&index, rec.key.to_hex()).await.unwrap();
    assert_eq!(member, None, "destroy removes the index member");
}

#[tokio::test]
async fn corrupt_records_are_reported() {
    let Some(store) = common::standalone("corrupt_records_are_reported").await else { return };
    let mut raw = raw().await;
    let now = Timestamp::now().as_millis();
    let later = now + 3_600_000;

    let bad_data = SessionId::generate().key();
    let name = store.session_key(&bad_data);
    let _: () = redis::cmd("HSET")
        .arg(&name)
        .arg(&[("v", "1"), ("d", "{not json"), ("c", &now.to_string()), ("a", &now.to_string())])
        .arg("e")
        .arg(later)
        .query_async(&mut raw)
        .await
        .unwrap();
    let _: () = raw.pexpire(&name, 60_000).await.unwrap();
    assert!(matches!(store.load(&bad_data).await, Err(StoreError::Corrupt(_))), "bad data JSON");

    let bad_version = SessionId::generate().key();
    let name = store.session_key(&bad_version);
    let _: () = redis::cmd("HSET")
        .arg(&name)
        .arg(&[("v", "one"), ("d", "{}"), ("c", &now.to_string()), ("a", &now.to_string())])
        .arg("e")
        .arg(later)
        .query_async(&mut raw)
        .await
        .unwrap();
    let _: () = raw.pexpire(&name, 60_000).await.unwrap();
    assert!(matches!(store.load(&bad_version).await, Err(StoreError::Corrupt(_))), "bad version");

    let missing_field = SessionId::generate().key();
    let name = store.session_key(&missing_field);
    let _: () = raw.hset(&name, "v", "1").await.unwrap();
    let _: () = raw.pexpire(&name, 60_000).await.unwrap();
    assert!(matches!(store.load(&missing_field).await, Err(StoreError::Corrupt(_))), "missing fields");

    let wrong_type = SessionId::generate().key();
    let name = store.session_key(&wrong_type);
    let _: () = raw.set_ex(&name, "a string", 60).await.unwrap();
    assert!(matches!(store.load(&wrong_type).await, Err(StoreError::Corrupt(_))), "not a hash");

    // A corrupt record of a user is hidden from the list but still revoked.
    let user = "corrupt-owner";
    let good = record(Some(user), Duration::from_secs(3600));
    store.create(&good).await.unwrap();
    let broken = record(Some(user), Duration::from_secs(3600));
    store.create(&broken).await.unwrap();
    let _: () = raw.hset(store.session_key(&broken.key), "d", "[").await.unwrap();
    let listed = store.list_for_user(user).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].key, good.key);
    assert_eq!(store.destroy_for_user(user, None).await.unwrap(), 2);
}

#[tokio::test]
async fn awkward_user_ids_and_prefixes() {
    let Some(store) = common::standalone("awkward_user_ids_and_prefixes").await else { return };
    let store = store.with_prefix(&format!("{{odd}}{}", common::random_prefix()));
    assert!(!store.prefix().contains('{') && !store.prefix().contains('}'));
    for user in ["", "%", "a}b{c", "{", "}", "ünï code", "x:y", "%7D"] {
        let rec = record(Some(user), Duration::from_secs(3600));
        assert_eq!(store.create(&rec).await.unwrap(), WriteOutcome::Written);
        let listed = store.list_for_user(user).await.unwrap();
        assert_eq!(listed.len(), 1, "user {user:?} sees exactly its session");
        assert_eq!(listed[0].user_id.as_deref(), Some(user));
        assert_eq!(store.destroy_for_user(user, None).await.unwrap(), 1, "user {user:?}");
    }
}
