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
    let stored: Vec<u8> = raw.get(&name).await.unwrap();
    let (data, device) = (rec.data.to_json(), rec.device.to_json());
    let mut expected = format!(
        "t1:{}:{}:{}:{}:{}:{}:{}:layout-user",
        rec.version,
        rec.created_at.as_millis(),
        rec.last_active.as_millis(),
        rec.expires_at.as_millis(),
        "layout-user".len(),
        data.len(),
        device.len()
    )
    .into_bytes();
    expected.extend_from_slice(&data);
    expected.extend_from_slice(&device);
    assert_eq!(stored, expected, "one packed string: header, user, SessionData::to_json, DeviceInfo::to_json");
    let expire_at: i64 = redis::cmd("PEXPIRETIME").arg(&name).query_async(&mut raw).await.unwrap();
    assert_eq!(expire_at, rec.expires_at.as_millis(), "native expiry at expires_at");

    let index = store.user_index_key("layout-user");
    let score: f64 = raw.zscore(&index, rec.key.to_hex()).await.unwrap();
    assert_eq!(score as i64, rec.expires_at.as_millis());
    let index_expire: i64 = redis::cmd("PEXPIRETIME").arg(&index).query_async(&mut raw).await.unwrap();
    assert_eq!(index_expire, rec.expires_at.as_millis(), "index expires with its longest-lived member");

    // touch moves both the record's expiry and the index score, and
    // rewrites only the header.
    let later = rec.expires_at.plus(Duration::from_secs(60));
    let active = rec.last_active.plus(Duration::from_secs(1));
    assert!(store.touch(&rec.key, active, later).await.unwrap());
    let stored: Vec<u8> = raw.get(&name).await.unwrap();
    let header_end = expected.len() - "layout-user".len() - data.len() - device.len();
    let header = format!(
        "t1:{}:{}:{}:{}:{}:{}:{}:",
        rec.version,
        rec.created_at.as_millis(),
        active.as_millis(),
        later.as_millis(),
        "layout-user".len(),
        data.len(),
        device.len()
    );
    assert_eq!(&stored[..header.len()], header.as_bytes());
    assert_eq!(&stored[header.len()..], &expected[header_end..], "payload kept byte for byte");
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

    // Hashes (the layout of the releases before the packed one) with bad
    // fields.
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

    // Packed strings that do not parse. Where the header is readable the
    // scripts can still compare versions (a save replaces the record, as a
    // save over a hash with bad data always did); where it is not, they
    // refuse with a corruption error. Either way destroy removes it.
    for (what, value, header_readable) in [
        ("not a packed record", "a string".to_owned(), false),
        ("bad packed version", format!("t1:one:{now}:{now}:{later}:-:2:0:{{}}"), false),
        ("bad packed data", format!("t1:1:{now}:{now}:{later}:-:9:0:{{not json"), true),
        ("packed payload too short", format!("t1:1:{now}:{now}:{later}:-:9:0:{{}}"), false),
        ("unknown packed format", format!("t9:1:{now}:{now}:{later}:-:2:0:{{}}"), false),
    ] {
        let key = SessionId::generate().key();
        let _: () = raw.set_ex(store.session_key(&key), value, 60).await.unwrap();
        assert!(matches!(store.load(&key).await, Err(StoreError::Corrupt(_))), "{what}");
        let mut rec = record(None, Duration::from_secs(3600));
        rec.key = key;
        let saved = store.save(&rec, 1).await;
        if header_readable {
            assert_eq!(saved.unwrap(), WriteOutcome::Written, "save over {what}");
        } else {
            assert!(matches!(saved, Err(StoreError::Corrupt(_))), "save over {what}: {saved:?}");
        }
        assert!(store.destroy(&key).await.unwrap(), "destroy {what}");
    }

    let wrong_type = SessionId::generate().key();
    let name = store.session_key(&wrong_type);
    let _: () = raw.rpush(&name, "a list").await.unwrap();
    let _: () = raw.pexpire(&name, 60_000).await.unwrap();
    assert!(matches!(store.load(&wrong_type).await, Err(StoreError::Corrupt(_))), "neither string nor hash");
    assert!(store.destroy(&wrong_type).await.unwrap(), "destroy removes whatever sits under the key");

    // A corrupt record of a user is hidden from the list but still revoked.
    let user = "corrupt-owner";
    let good = record(Some(user), Duration::from_secs(3600));
    store.create(&good).await.unwrap();
    let broken = record(Some(user), Duration::from_secs(3600));
    store.create(&broken).await.unwrap();
    let damaged = format!("t1:1:{now}:{now}:{later}:{}:1:0:{user}[", user.len());
    let _: () = raw.set(store.session_key(&broken.key), damaged).await.unwrap();
    let _: () = raw.pexpire(store.session_key(&broken.key), 60_000).await.unwrap();
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
