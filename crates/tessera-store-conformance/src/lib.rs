//! The store conformance suite.
//!
//! Every [`SessionStore`] runs it with one call from its own tests:
//!
//! ```no_run
//! # async fn demo(store: std::sync::Arc<dyn tessera::SessionStore>) {
//! tessera_store_conformance::run(store).await;
//! # }
//! ```
//!
//! It checks the contract written on [`SessionStore`]: create, load, save
//! (compare-and-swap), touch, expiry, regenerate, destroy, listing and
//! revoking by user, purging expired records, data round trips (including
//! awkward values), and no lost updates under concurrency through the
//! [`SessionEngine`]. Each check uses fresh random keys and user IDs, so the
//! suite can run against a shared, non-empty store. Failures panic with the
//! name of the check.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod engine_checks;

pub use engine_checks::run_engine;

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use serde_json::json;
use tessera::{
    DeviceInfo, SessionData, SessionEngine, SessionId, SessionKey, SessionRecord, SessionStore, Timestamp, WriteOutcome,
};

/// Options for stores whose semantics differ in documented ways.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Skip the sleep-based expiry checks' wait (never used in CI; for local
    /// quick runs only).
    pub quick: bool,
}

/// Runs every check against `store`. Panics on the first failure.
pub async fn run(store: Arc<dyn SessionStore>) {
    run_with(store, Options::default()).await
}

/// Runs every check with `options`.
pub async fn run_with(store: Arc<dyn SessionStore>, options: Options) {
    let s = &*store;
    ping(s).await;
    create_and_load(s).await;
    create_conflicts_on_taken_key(s).await;
    load_missing_is_none(s).await;
    save_is_compare_and_swap(s).await;
    touch_extends_without_bumping(s).await;
    regenerate_is_atomic(s).await;
    destroy_stays_dead(s).await;
    list_and_revoke_by_user(s).await;
    data_round_trips(s).await;
    concurrent_writers_one_winner(s).await;
    engine_counter_loses_nothing(store.clone()).await;
    let clock = tessera::ManualClock::new();
    run_engine(SessionEngine::new(store.clone()).with_clock(Arc::new(clock.clone())), clock).await;
    expiry(s, &options).await;
}

/// A fresh record for `user`, expiring in `ttl`.
pub fn record(user: Option<&str>, ttl: Duration) -> SessionRecord {
    let now = Timestamp::now();
    let mut data = SessionData::new();
    data.insert_value("greeting".into(), json!("hello"));
    SessionRecord {
        key: SessionId::generate().key(),
        version: 1,
        user_id: user.map(str::to_owned),
        data,
        created_at: now,
        last_active: now,
        expires_at: now.plus(ttl),
        device: DeviceInfo::new(Some("127.0.0.1".into()), Some("conformance/1.0")),
    }
}

fn user() -> String {
    format!("conformance-user-{:016x}", rand::thread_rng().gen::<u64>())
}

const HOUR: Duration = Duration::from_secs(3600);

async fn ping(s: &dyn SessionStore) {
    s.ping().await.expect("ping: the store must answer");
}

async fn create_and_load(s: &dyn SessionStore) {
    let user = user();
    let rec = record(Some(&user), HOUR);
    assert_eq!(s.create(&rec).await.unwrap(), WriteOutcome::Written, "create: new key");
    let loaded = s.load(&rec.key).await.unwrap().expect("create_and_load: record must load");
    assert_eq!(loaded, rec, "create_and_load: every field must round-trip");
    let anonymous = record(None, HOUR);
    s.create(&anonymous).await.unwrap();
    assert_eq!(s.load(&anonymous.key).await.unwrap().unwrap().user_id, None, "create_and_load: anonymous");
}

async fn create_conflicts_on_taken_key(s: &dyn SessionStore) {
    let rec = record(None, HOUR);
    s.create(&rec).await.unwrap();
    let mut other = rec.clone();
    other.data.insert_value("intruder".into(), json!(true));
    assert_eq!(s.create(&other).await.unwrap(), WriteOutcome::Conflict, "create: taken key must conflict");
    assert_eq!(s.load(&rec.key).await.unwrap().unwrap(), rec, "create: a conflicting create must change nothing");
}

async fn load_missing_is_none(s: &dyn SessionStore) {
    let key = SessionId::generate().key();
    assert!(s.load(&key).await.unwrap().is_none(), "load: unknown key must be None");
}

async fn save_is_compare_and_swap(s: &dyn SessionStore) {
    let user = user();
    let rec = record(Some(&user), HOUR);
    s.create(&rec).await.unwrap();

    let mut v2 = rec.clone();
    v2.version = 2;
    v2.data.insert_value("n".into(), json!(2));
    v2.last_active = rec.last_active.plus(Duration::from_secs(1));
    v2.expires_at = rec.expires_at.plus(Duration::from_secs(1));
    assert_eq!(s.save(&v2, 1).await.unwrap(), WriteOutcome::Written, "save: expected version matches");
    assert_eq!(s.load(&rec.key).await.unwrap().unwrap(), v2, "save: stored record is the saved one");

    let mut stale = rec.clone();
    stale.version = 2;
    stale.data.insert_value("n".into(), json!("stale"));
    assert_eq!(s.save(&stale, 1).await.unwrap(), WriteOutcome::Conflict, "save: stale version must conflict");
    assert_eq!(s.load(&rec.key).await.unwrap().unwrap(), v2, "save: a conflicting save must change nothing");

    let mut v3 = v2.clone();
    v3.version = 3;
    v3.user_id = Some(format!("{user}-other"));
    assert_eq!(s.save(&v3, 2).await.unwrap(), WriteOutcome::Written, "save: changing owner");
    let listed_old = s.list_for_user(&user).await.unwrap();
    assert!(listed_old.iter().all(|r| r.key != rec.key), "save: record must leave its old owner's list");
    let listed_new = s.list_for_user(&format!("{user}-other")).await.unwrap();
    assert!(listed_new.iter().any(|r| r.key == rec.key), "save: record must join its new owner's list");

    let ghost = record(None, HOUR);
    let mut ghost_v2 = ghost.clone();
    ghost_v2.version = 2;
    assert_eq!(s.save(&ghost_v2, 1).await.unwrap(), WriteOutcome::Missing, "save: unknown key is Missing");
    assert!(s.load(&ghost.key).await.unwrap().is_none(), "save: must never create a record");
}

async fn touch_extends_without_bumping(s: &dyn SessionStore) {
    let user = user();
    let rec = record(Some(&user), HOUR);
    s.create(&rec).await.unwrap();
    let later = rec.last_active.plus(Duration::from_secs(60));
    let new_expiry = rec.expires_at.plus(Duration::from_secs(60));
    assert!(s.touch(&rec.key, later, new_expiry).await.unwrap(), "touch: live record");
    let loaded = s.load(&rec.key).await.unwrap().unwrap();
    assert_eq!(loaded.last_active, later, "touch: last_active moves");
    assert_eq!(loaded.expires_at, new_expiry, "touch: expires_at moves");
    assert_eq!(loaded.version, rec.version, "touch: version unchanged");
    assert_eq!(loaded.data, rec.data, "touch: data unchanged");

    assert!(s.touch(&rec.key, rec.last_active, rec.expires_at).await.unwrap(), "touch: still live");
    let loaded = s.load(&rec.key).await.unwrap().unwrap();
    assert_eq!(loaded.last_active, later, "touch: never moves backwards");

    let ghost = SessionId::generate().key();
    assert!(!s.touch(&ghost, later, new_expiry).await.unwrap(), "touch: unknown key is false");
    assert!(s.load(&ghost).await.unwrap().is_none(), "touch: must never create a record");
}

async fn regenerate_is_atomic(s: &dyn SessionStore) {
    let user = user();
    let old = record(Some(&user), HOUR);
    s.create(&old).await.unwrap();
    let mut new = old.clone();
    new.key = SessionId::generate().key();
    new.version = 2;
    new.data.insert_value("after".into(), json!("login"));

    let mut wrong = new.clone();
    wrong.key = SessionId::generate().key();
    assert_eq!(s.regenerate(&old.key, 7, &wrong).await.unwrap(), WriteOutcome::Conflict, "regenerate: stale version");
    assert!(s.load(&wrong.key).await.unwrap().is_none(), "regenerate: a conflict must not create the new key");
    assert!(s.load(&old.key).await.unwrap().is_some(), "regenerate: a conflict must keep the old key");

    assert_eq!(s.regenerate(&old.key, 1, &new).await.unwrap(), WriteOutcome::Written, "regenerate");
    assert!(s.load(&old.key).await.unwrap().is_none(), "regenerate: old key must be dead");
    assert_eq!(s.load(&new.key).await.unwrap().unwrap(), new, "regenerate: new key holds the record");
    let listed: Vec<SessionKey> = s.list_for_user(&user).await.unwrap().into_iter().map(|r| r.key).collect();
    assert_eq!(listed, vec![new.key], "regenerate: the user's list holds only the new key");

    let mut again = new.clone();
    again.key = SessionId::generate().key();
    assert_eq!(s.regenerate(&old.key, 1, &again).await.unwrap(), WriteOutcome::Missing, "regenerate: from a dead key");
    assert!(s.load(&again.key).await.unwrap().is_none(), "regenerate: a dead key must not give birth");
}

async fn destroy_stays_dead(s: &dyn SessionStore) {
    let user = user();
    let rec = record(Some(&user), HOUR);
    s.create(&rec).await.unwrap();
    assert!(s.destroy(&rec.key).await.unwrap(), "destroy: live record");
    assert!(s.load(&rec.key).await.unwrap().is_none(), "destroy: record gone");
    assert!(!s.destroy(&rec.key).await.unwrap(), "destroy: twice is false");
    let mut late = rec.clone();
    late.version = 2;
    assert_eq!(s.save(&late, 1).await.unwrap(), WriteOutcome::Missing, "destroy: a late save is Missing");
    assert!(!s.touch(&rec.key, Timestamp::now(), Timestamp::now().plus(HOUR)).await.unwrap(), "destroy: late touch");
    assert!(s.load(&rec.key).await.unwrap().is_none(), "destroy: nothing resurrects it");
    assert!(s.list_for_user(&user).await.unwrap().is_empty(), "destroy: gone from the user's list");
}

async fn list_and_revoke_by_user(s: &dyn SessionStore) {
    let (alice, bob) = (user(), user());
    let mut alice_keys = Vec::new();
    for _ in 0..3 {
        let rec = record(Some(&alice), HOUR);
        s.create(&rec).await.unwrap();
        alice_keys.push(rec.key);
    }
    let bobs = record(Some(&bob), HOUR);
    s.create(&bobs).await.unwrap();
    s.create(&record(None, HOUR)).await.unwrap();

    let mut listed: Vec<SessionKey> = s.list_for_user(&alice).await.unwrap().into_iter().map(|r| r.key).collect();
    listed.sort();
    let mut expected = alice_keys.clone();
    expected.sort();
    assert_eq!(listed, expected, "list_for_user: exactly the user's sessions");

    s.destroy(&alice_keys[0]).await.unwrap();
    assert_eq!(s.list_for_user(&alice).await.unwrap().len(), 2, "list_for_user: destroyed one leaves");

    let removed = s.destroy_for_user(&alice, Some(&alice_keys[1])).await.unwrap();
    assert_eq!(removed, 1, "destroy_for_user: count excludes the kept one");
    let left: Vec<SessionKey> = s.list_for_user(&alice).await.unwrap().into_iter().map(|r| r.key).collect();
    assert_eq!(left, vec![alice_keys[1]], "destroy_for_user: keeps `keep`");
    assert!(s.load(&alice_keys[2]).await.unwrap().is_none(), "destroy_for_user: others dead");
    assert!(s.load(&bobs.key).await.unwrap().is_some(), "destroy_for_user: other users untouched");

    assert_eq!(s.destroy_for_user(&alice, None).await.unwrap(), 1, "destroy_for_user: all");
    assert!(s.list_for_user(&alice).await.unwrap().is_empty(), "destroy_for_user: none left");
    assert!(s.list_for_user(&user()).await.unwrap().is_empty(), "list_for_user: unknown user");
}

async fn data_round_trips(s: &dyn SessionStore) {
    let mut rec = record(Some(&user()), HOUR);
    let awkward = [
        ("", json!("empty key")),
        ("ünïcødé ✓ 🦀", json!("värdé \u{0} nul and \"quotes\" and \\ backslash")),
        ("numbers", json!([u64::MAX, i64::MIN, 0.1, -0.0, 1e300])),
        ("nested", json!({"a": {"b": [1, {"c": null}]}, "t": true})),
        ("null", json!(null)),
        ("big", json!("x".repeat(64 * 1024))),
        ("html", json!("<script>alert(1)</script>'; DROP TABLE sessions; --")),
    ];
    for (key, value) in awkward.iter().cloned() {
        rec.data.insert_value(key.to_owned(), value);
    }
    rec.device = DeviceInfo::new(Some("::1".into()), Some(&"Mozilla/5.0 ✓ ".repeat(40)));
    s.create(&rec).await.unwrap();
    let loaded = s.load(&rec.key).await.unwrap().expect("data_round_trips: record must load");
    assert_eq!(loaded.data, rec.data, "data_round_trips: data must round-trip exactly");
    assert_eq!(loaded.device, rec.device, "data_round_trips: device info must round-trip exactly");

    let empty = SessionRecord { data: SessionData::new(), ..record(None, HOUR) };
    s.create(&empty).await.unwrap();
    assert!(s.load(&empty.key).await.unwrap().unwrap().data.is_empty(), "data_round_trips: empty data");
}

async fn concurrent_writers_one_winner(s: &dyn SessionStore) {
    let rec = record(Some(&user()), HOUR);
    s.create(&rec).await.unwrap();
    let attempts = (0..20).map(|i| {
        let mut next = rec.clone();
        next.version = 2;
        next.data.insert_value("writer".into(), json!(i));
        async move { s.save(&next, 1).await.unwrap() }
    });
    let outcomes = futures::future::join_all(attempts).await;
    let winners = outcomes.iter().filter(|o| **o == WriteOutcome::Written).count();
    assert_eq!(winners, 1, "concurrent saves with one expected version: exactly one wins ({outcomes:?})");
    assert!(outcomes.iter().all(|o| *o != WriteOutcome::Missing), "concurrent saves: losers see Conflict");
}

/// 50 concurrent read-modify-write increments through the engine, each in its
/// own "request", must raise the counter by exactly 50.
async fn engine_counter_loses_nothing(store: Arc<dyn SessionStore>) {
    let engine = SessionEngine::new(store);
    let seed = engine.load(None, DeviceInfo::default()).await.unwrap();
    seed.insert("counter", &0i64).unwrap();
    let cookie = match engine.commit(&seed).await.unwrap() {
        tessera::CookieUpdate::Set { value, .. } => value,
        other => panic!("engine counter: a new session with data must set a cookie, got {other:?}"),
    };
    let tasks = (0..50).map(|_| {
        let engine = engine.clone();
        let cookie = cookie.clone();
        tokio::spawn(async move {
            let session = engine.load(Some(&cookie), DeviceInfo::default()).await.unwrap();
            session.update("counter", |n: Option<i64>| n.unwrap_or(0) + 1).unwrap();
            session.insert(&format!("k{}", rand::thread_rng().gen::<u32>()), &1).unwrap();
            engine.commit(&session).await.unwrap()
        })
    });
    for result in futures::future::join_all(tasks).await {
        assert_eq!(result.unwrap(), tessera::CookieUpdate::Keep, "engine counter: cookie unchanged");
    }
    let session = engine.load(Some(&cookie), DeviceInfo::default()).await.unwrap();
    assert_eq!(session.get::<i64>("counter").unwrap(), Some(50), "engine counter: no increment lost");
    assert_eq!(session.len(), 51, "engine counter: concurrent inserts of different keys are all kept");
}

async fn expiry(s: &dyn SessionStore, options: &Options) {
    let user = user();
    let mut past = record(Some(&user), HOUR);
    past.expires_at = Timestamp(Timestamp::now().as_millis() - 1000);
    let _ = s.create(&past).await.unwrap();
    assert!(s.load(&past.key).await.unwrap().is_none(), "expiry: a record past expires_at must not load");

    let short = record(Some(&user), Duration::from_millis(1500));
    let long = record(Some(&user), HOUR);
    s.create(&short).await.unwrap();
    s.create(&long).await.unwrap();
    assert!(s.load(&short.key).await.unwrap().is_some(), "expiry: live before its deadline");
    if options.quick {
        return;
    }
    tokio::time::sleep(Duration::from_millis(1700)).await;
    assert!(s.load(&short.key).await.unwrap().is_none(), "expiry: dead after its deadline");
    let listed: Vec<SessionKey> = s.list_for_user(&user).await.unwrap().into_iter().map(|r| r.key).collect();
    assert_eq!(listed, vec![long.key], "expiry: expired records are not listed");
    assert!(
        !s.touch(&short.key, Timestamp::now(), Timestamp::now().plus(HOUR)).await.unwrap(),
        "expiry: touch cannot revive"
    );
    s.purge_expired().await.expect("purge_expired must succeed");
    assert!(s.load(&short.key).await.unwrap().is_none(), "purge: expired stays gone");
    assert!(s.load(&long.key).await.unwrap().is_some(), "purge: live records stay");
    let mut after = long.clone();
    after.version = 2;
    assert_eq!(s.save(&after, 1).await.unwrap(), WriteOutcome::Written, "purge: live record still writable");
}
