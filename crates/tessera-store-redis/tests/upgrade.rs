//! Upgrading from the hash layout: sessions that a release before the packed
//! layout wrote (one hash per session, written here with `HSET` exactly as
//! that release's `PUT` script did) keep working with every store call, and
//! are converted to the packed layout by their first write. Runs against the
//! standalone server and the cluster (where `regenerate` and the owner index
//! take the multi-step paths).

mod common;

use std::time::Duration;

use redis::aio::ConnectionLike;
use tessera::{SessionRecord, SessionStore, Timestamp, WriteOutcome};
use tessera_store_conformance::record;
use tessera_store_redis::RedisStore;

const HOUR: Duration = Duration::from_secs(3600);

/// Writes `rec` as the old release did: the session hash (`HSET` of every
/// field, `u` only when owned, `PEXPIREAT`) and its member in the owner's
/// index (`ZADD GT` + the index's expiry).
async fn write_legacy(store: &RedisStore, raw: &mut impl ConnectionLike, rec: &SessionRecord) {
    let name = store.session_key(&rec.key);
    let mut hset = redis::cmd("HSET");
    hset.arg(&name)
        .arg("v")
        .arg(rec.version.to_string())
        .arg("d")
        .arg(rec.data.to_json())
        .arg("c")
        .arg(rec.created_at.as_millis().to_string())
        .arg("a")
        .arg(rec.last_active.as_millis().to_string())
        .arg("e")
        .arg(rec.expires_at.as_millis().to_string())
        .arg("dev")
        .arg(rec.device.to_json());
    if let Some(user) = &rec.user_id {
        hset.arg("u").arg(user);
    }
    let _: i64 = hset.query_async(raw).await.unwrap();
    let _: i64 = redis::cmd("PEXPIREAT").arg(&name).arg(rec.expires_at.as_millis()).query_async(raw).await.unwrap();
    if let Some(user) = &rec.user_id {
        let index = store.user_index_key(user);
        let _: i64 = redis::cmd("ZADD")
            .arg(&index)
            .arg("GT")
            .arg(rec.expires_at.as_millis())
            .arg(rec.key.to_hex())
            .query_async(raw)
            .await
            .unwrap();
        let _: i64 =
            redis::cmd("PEXPIREAT").arg(&index).arg(rec.expires_at.as_millis()).query_async(raw).await.unwrap();
    }
    assert_eq!(kind(store, raw, rec).await, "hash", "the legacy record is a hash");
}

async fn kind(store: &RedisStore, raw: &mut impl ConnectionLike, rec: &SessionRecord) -> String {
    redis::cmd("TYPE").arg(store.session_key(&rec.key)).query_async(raw).await.unwrap()
}

async fn expire_time(store: &RedisStore, raw: &mut impl ConnectionLike, rec: &SessionRecord) -> i64 {
    redis::cmd("PEXPIRETIME").arg(store.session_key(&rec.key)).query_async(raw).await.unwrap()
}

fn user() -> String {
    format!("upgrade-user-{}", common::random_prefix().trim_end_matches(':'))
}

async fn legacy_records_keep_working(store: RedisStore, raw: &mut impl ConnectionLike) {
    let alice = user();
    let bob = user();

    // load and list_for_user read the hash (owned and anonymous).
    let owned = record(Some(&alice), HOUR);
    write_legacy(&store, raw, &owned).await;
    assert_eq!(store.load(&owned.key).await.unwrap(), Some(owned.clone()), "a legacy hash loads as it was");
    let anonymous = record(None, HOUR);
    write_legacy(&store, raw, &anonymous).await;
    assert_eq!(store.load(&anonymous.key).await.unwrap(), Some(anonymous.clone()));
    let listed = store.list_for_user(&alice).await.unwrap();
    assert_eq!(listed, vec![owned.clone()], "list_for_user finds the legacy session");

    // touch converts, keeping version, owner, data and device.
    let active = owned.last_active.plus(Duration::from_secs(5));
    let expires = owned.expires_at.plus(Duration::from_secs(60));
    assert!(store.touch(&owned.key, active, expires).await.unwrap());
    assert_eq!(kind(&store, raw, &owned).await, "string", "touch converts the hash");
    let touched = SessionRecord { last_active: active, expires_at: expires, ..owned.clone() };
    assert_eq!(store.load(&owned.key).await.unwrap(), Some(touched.clone()));
    assert_eq!(expire_time(&store, raw, &owned).await, expires.as_millis());
    assert!(store.touch(&owned.key, owned.last_active, expires).await.unwrap(), "an older touch: live, not moved");
    assert_eq!(store.load(&owned.key).await.unwrap(), Some(touched.clone()));
    assert!(store.touch(&anonymous.key, active, expires).await.unwrap());
    assert_eq!(store.load(&anonymous.key).await.unwrap().unwrap().user_id, None);

    // save: compare-and-swap on the hash's version, then converts; a change
    // of owner moves the index member.
    let saved = record(Some(&alice), HOUR);
    write_legacy(&store, raw, &saved).await;
    let mut next = SessionRecord { version: 2, user_id: Some(bob.clone()), ..saved.clone() };
    next.data.insert_value("more".into(), 7.into());
    assert_eq!(store.save(&next, 5).await.unwrap(), WriteOutcome::Conflict, "stale version");
    assert_eq!(kind(&store, raw, &saved).await, "hash", "a refused save leaves the hash alone");
    assert_eq!(store.save(&next, 1).await.unwrap(), WriteOutcome::Written);
    assert_eq!(kind(&store, raw, &saved).await, "string", "save converts the hash");
    assert_eq!(store.load(&saved.key).await.unwrap(), Some(next.clone()));
    assert_eq!(store.list_for_user(&bob).await.unwrap(), vec![next.clone()]);
    assert!(
        !store.list_for_user(&alice).await.unwrap().iter().any(|r| r.key == saved.key),
        "the previous owner's index lost the member"
    );
    let missing = record(None, HOUR);
    assert_eq!(store.save(&missing, 1).await.unwrap(), WriteOutcome::Missing);

    // regenerate: checks the hash's version, removes it, writes the new key.
    let old = record(Some(&alice), HOUR);
    write_legacy(&store, raw, &old).await;
    let fresh = SessionRecord { key: tessera::SessionId::generate().key(), version: 2, ..old.clone() };
    assert_eq!(store.regenerate(&old.key, 9, &fresh).await.unwrap(), WriteOutcome::Conflict);
    assert_eq!(store.load(&old.key).await.unwrap(), Some(old.clone()), "a refused regenerate keeps the old");
    assert_eq!(store.regenerate(&old.key, 1, &fresh).await.unwrap(), WriteOutcome::Written);
    assert_eq!(store.load(&old.key).await.unwrap(), None);
    assert_eq!(store.load(&fresh.key).await.unwrap(), Some(fresh.clone()));
    assert_eq!(kind(&store, raw, &fresh).await, "string");

    // destroy: deletes the hash and its index member.
    let doomed = record(Some(&alice), HOUR);
    write_legacy(&store, raw, &doomed).await;
    assert!(store.destroy(&doomed.key).await.unwrap());
    assert_eq!(store.load(&doomed.key).await.unwrap(), None);
    assert!(!store.destroy(&doomed.key).await.unwrap());

    // destroy_for_user: revokes legacy sessions of the user (keeping the one
    // asked for), never another user's hash whose member lags in the index.
    let a1 = record(Some(&alice), HOUR);
    let a2 = record(Some(&alice), HOUR);
    write_legacy(&store, raw, &a1).await;
    write_legacy(&store, raw, &a2).await;
    let lagging = record(Some(&bob), HOUR);
    write_legacy(&store, raw, &lagging).await;
    let _: i64 = redis::cmd("ZADD")
        .arg(store.user_index_key(&alice))
        .arg(lagging.expires_at.as_millis())
        .arg(lagging.key.to_hex())
        .query_async(raw)
        .await
        .unwrap();
    // alice now owns: a1, a2 (legacy), touched (packed, kept), fresh (packed).
    let removed = store.destroy_for_user(&alice, Some(&owned.key)).await.unwrap();
    assert_eq!(removed, 3, "a1, a2 and the regenerated session");
    assert_eq!(store.load(&a1.key).await.unwrap(), None);
    assert_eq!(store.load(&a2.key).await.unwrap(), None);
    assert_eq!(store.load(&owned.key).await.unwrap(), Some(touched), "the kept session survives");
    assert_eq!(store.load(&lagging.key).await.unwrap(), Some(lagging.clone()), "bob's session survives");
    assert_eq!(store.destroy_for_user(&bob, None).await.unwrap(), 2, "bob: the saved and the lagging");

    // An expired legacy hash Redis has not freed yet is not served.
    let mut stale = record(Some(&alice), HOUR);
    stale.expires_at = Timestamp(Timestamp::now().as_millis() - 1000);
    write_legacy(&store, raw, &SessionRecord { expires_at: Timestamp::now().plus(HOUR), ..stale.clone() }).await;
    let _: i64 = redis::cmd("HSET")
        .arg(store.session_key(&stale.key))
        .arg("e")
        .arg(stale.expires_at.as_millis().to_string())
        .query_async(raw)
        .await
        .unwrap();
    assert_eq!(store.load(&stale.key).await.unwrap(), None);
    store.destroy_for_user(&alice, None).await.unwrap();
}

#[tokio::test]
async fn legacy_hashes_standalone() {
    let Some(store) = common::standalone("legacy_hashes_standalone").await else { return };
    let mut raw =
        redis::Client::open(common::standalone_url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    legacy_records_keep_working(store, &mut raw).await;
}

#[tokio::test]
async fn legacy_hashes_cluster() {
    let Some(store) = common::cluster("legacy_hashes_cluster").await else { return };
    let url = common::cluster_url();
    let nodes: Vec<String> =
        url.trim_start_matches("redis+cluster://").split(',').map(|node| format!("redis://{node}")).collect();
    let mut raw = redis::cluster::ClusterClient::new(nodes).unwrap().get_async_connection().await.unwrap();
    legacy_records_keep_working(store, &mut raw).await;
}
