//! Checks through the [`SessionEngine`], which every backend must pass —
//! server-side stores and sessions sealed in cookies alike.
//!
//! Where sealed cookies differ by nature, the check says so:
//! - after a regeneration the *previous* cookie of a sealed session still
//!   opens until it expires (nothing on the server remembers it); session
//!   fixation is still impossible because the new cookie is never known to
//!   whoever planted the old one;
//! - a read-only request that is due for a touch re-seals the cookie
//!   (`Set`) instead of writing to a store (`Keep`);
//! - destroying a logged-in sealed session revokes every earlier cookie of
//!   that user (a per-user "valid after" mark), not just this one;
//! - compare-and-swap and listing by user do not exist for sealed cookies, so
//!   the store-level checks in [`run`](crate::run) do not apply to them.

use std::time::Duration;

use serde_json::json;
use tessera::{CookieUpdate, DeviceInfo, ManualClock, SessionEngine};

async fn open(engine: &SessionEngine, cookie: Option<&str>) -> tessera::Session {
    engine.load(cookie, DeviceInfo::default()).await.expect("engine load")
}

fn value_of(update: CookieUpdate, what: &str) -> String {
    match update {
        CookieUpdate::Set { value, .. } => value,
        other => panic!("{what}: expected a cookie to be set, got {other:?}"),
    }
}

/// Runs every engine-level check. `engine` must use `clock`, and the default
/// expiry policy (30 minutes idle, 12 hours absolute).
pub async fn run_engine(engine: SessionEngine, clock: ManualClock) {
    let sealed = engine.is_sealed();

    // An empty new session is not stored and sets no cookie.
    let empty = open(&engine, None).await;
    assert_eq!(engine.commit(&empty).await.unwrap(), CookieUpdate::Keep, "engine: empty sessions are not stored");

    // Create with data, load it back, awkward values included.
    let session = open(&engine, None).await;
    session.insert("n", &1).unwrap();
    session.insert("ünï 🦀", &json!({"nested": [1, null, "<\"x\">"], "big": u64::MAX})).unwrap();
    let cookie = value_of(engine.commit(&session).await.unwrap(), "engine: new session with data");
    let loaded = open(&engine, Some(&cookie)).await;
    assert_eq!(loaded.get::<i64>("n").unwrap(), Some(1), "engine: data round-trips");
    assert_eq!(
        loaded.get::<serde_json::Value>("ünï 🦀").unwrap(),
        Some(json!({"nested": [1, null, "<\"x\">"], "big": u64::MAX})),
        "engine: awkward data round-trips"
    );
    assert_eq!(
        engine.commit(&loaded).await.unwrap(),
        CookieUpdate::Keep,
        "engine: an unchanged session is not written"
    );

    // Changes persist.
    let changing = open(&engine, Some(&cookie)).await;
    changing.update("n", |n: Option<i64>| n.unwrap_or(0) + 1).unwrap();
    let cookie = match engine.commit(&changing).await.unwrap() {
        CookieUpdate::Keep => cookie,
        CookieUpdate::Set { value, .. } => {
            assert!(sealed, "engine: a server-side session keeps its cookie when data changes");
            value
        }
        CookieUpdate::Remove => panic!("engine: a changed session must not be removed"),
    };
    assert_eq!(open(&engine, Some(&cookie)).await.get::<i64>("n").unwrap(), Some(2), "engine: change persisted");

    // Login regenerates: a new cookie that carries the data and the user.
    let login = open(&engine, Some(&cookie)).await;
    let user = format!("engine-user-{:x}", rand::random::<u64>());
    login.login(user.clone());
    let logged_in = value_of(engine.commit(&login).await.unwrap(), "engine: login regenerates");
    assert_ne!(logged_in, cookie, "engine: a new cookie at login");
    let after = open(&engine, Some(&logged_in)).await;
    assert_eq!(after.user_id().as_deref(), Some(user.as_str()), "engine: the user is recorded");
    assert_eq!(after.get::<i64>("n").unwrap(), Some(2), "engine: data survives regeneration");
    let before = open(&engine, Some(&cookie)).await;
    if sealed {
        assert_eq!(before.user_id(), None, "engine (sealed): the old cookie never gains the user");
    } else {
        assert!(!before.is_stored(), "engine: the pre-login ID is dead");
    }

    // Garbage and tampered cookies are no session, and get cleared.
    let mut tampered = logged_in.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    for bad in ["", "garbage", &"A".repeat(43), &tampered, &"x".repeat(10_000)] {
        let session = open(&engine, Some(bad)).await;
        assert!(!session.is_stored(), "engine: {bad:.20?} must be no session");
        assert_eq!(engine.commit(&session).await.unwrap(), CookieUpdate::Remove, "engine: a bad cookie is cleared");
    }

    // Touch: a read-only request after a tenth of the idle time-out keeps the
    // session alive past its original idle deadline.
    clock.advance(Duration::from_secs(20 * 60));
    let reading = open(&engine, Some(&logged_in)).await;
    assert!(reading.is_stored(), "engine: alive after 20 idle minutes");
    let logged_in = match engine.commit(&reading).await.unwrap() {
        CookieUpdate::Keep => {
            assert!(!sealed, "engine (sealed): a due touch re-seals the cookie");
            logged_in
        }
        CookieUpdate::Set { value, .. } => {
            assert!(sealed, "engine: a touch does not change a server-side session's cookie");
            value
        }
        CookieUpdate::Remove => panic!("engine: a live session must not be removed by a touch"),
    };
    clock.advance(Duration::from_secs(20 * 60));
    assert!(open(&engine, Some(&logged_in)).await.is_stored(), "engine: the touch moved the idle deadline");

    // Idle expiry.
    clock.advance(Duration::from_secs(31 * 60));
    let idle = open(&engine, Some(&logged_in)).await;
    assert!(!idle.is_stored(), "engine: idle for 31 minutes is dead");
    assert_eq!(engine.commit(&idle).await.unwrap(), CookieUpdate::Remove, "engine: the expired cookie is cleared");

    // Absolute expiry, however busy.
    let busy = open(&engine, None).await;
    busy.login(user.clone());
    let mut busy_cookie = value_of(engine.commit(&busy).await.unwrap(), "engine: busy session");
    for _ in 0..((12 * 60) / 25) {
        clock.advance(Duration::from_secs(25 * 60));
        let session = open(&engine, Some(&busy_cookie)).await;
        assert!(session.is_stored(), "engine: busy sessions live until the absolute deadline");
        session.update("beat", |n: Option<u64>| n.unwrap_or(0) + 1).unwrap();
        if let CookieUpdate::Set { value, .. } = engine.commit(&session).await.unwrap() {
            busy_cookie = value;
        }
    }
    clock.advance(Duration::from_secs(25 * 60));
    assert!(!open(&engine, Some(&busy_cookie)).await.is_stored(), "engine: dead after 12 hours");

    // Logout: the cookie is cleared and replaying it finds nothing.
    let session = open(&engine, None).await;
    session.login(user.clone());
    let cookie = value_of(engine.commit(&session).await.unwrap(), "engine: login");
    let leaving = open(&engine, Some(&cookie)).await;
    leaving.logout();
    assert_eq!(engine.commit(&leaving).await.unwrap(), CookieUpdate::Remove, "engine: logout clears the cookie");
    assert!(!open(&engine, Some(&cookie)).await.is_stored(), "engine: a logged-out cookie is dead");

    // Log out everywhere.
    clock.advance(Duration::from_millis(5));
    let device_a = open(&engine, None).await;
    device_a.login(user.clone());
    let a = value_of(engine.commit(&device_a).await.unwrap(), "engine: device a");
    let device_b = open(&engine, None).await;
    device_b.login(user.clone());
    let b = value_of(engine.commit(&device_b).await.unwrap(), "engine: device b");
    clock.advance(Duration::from_millis(5));
    engine.revoke_all(&user, None).await.unwrap();
    assert!(!open(&engine, Some(&a)).await.is_stored(), "engine: revoke_all ends device a");
    assert!(!open(&engine, Some(&b)).await.is_stored(), "engine: revoke_all ends device b");
    clock.advance(Duration::from_millis(5));
    let again = open(&engine, None).await;
    again.login(user.clone());
    let fresh = value_of(engine.commit(&again).await.unwrap(), "engine: login after revocation");
    assert!(open(&engine, Some(&fresh)).await.is_stored(), "engine: logging in again after revocation works");
}
