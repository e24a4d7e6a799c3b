//! Sealed-cookie sessions under the engine-level conformance checks (the
//! store-level checks — compare-and-swap, listing by user — do not apply to
//! state that lives in the browser; see `tessera_store_conformance::run_engine`).

use std::sync::Arc;

use tessera::{CookieSealer as _, CookieUpdate, DeviceInfo, ManualClock, SessionEngine, StoreError};
use tessera_store_cookie::{CookieSealer, MemoryRevocationMarks, SealingKey};

fn engine(clock: &ManualClock, keys: Vec<SealingKey>) -> SessionEngine {
    SessionEngine::sealed(
        Arc::new(CookieSealer::new("__Host-id", keys).unwrap()),
        Arc::new(MemoryRevocationMarks::default()),
    )
    .with_clock(Arc::new(clock.clone()))
}

#[tokio::test]
async fn sealed_sessions_pass_the_engine_checks() {
    let clock = ManualClock::new();
    tessera_store_conformance::run_engine(engine(&clock, vec![SealingKey::generate(1)]), clock).await;
}

#[tokio::test]
async fn too_much_data_is_a_clear_error() {
    let clock = ManualClock::new();
    let engine = engine(&clock, vec![SealingKey::generate(1)]);
    let session = engine.load(None, DeviceInfo::default()).await.unwrap();
    session.insert("blob", &"x".repeat(5000)).unwrap();
    match engine.commit(&session).await {
        Err(StoreError::TooLarge { size, limit }) => assert!(size > limit && limit == 4096),
        other => panic!("expected TooLarge, got {other:?}"),
    }
}

#[tokio::test]
async fn rotation_reseals_with_the_newest_key() {
    let clock = ManualClock::new();
    let old = SealingKey::generate(1);
    let marks = Arc::new(MemoryRevocationMarks::default());
    let before =
        SessionEngine::sealed(Arc::new(CookieSealer::new("__Host-id", vec![old.clone()]).unwrap()), marks.clone())
            .with_clock(Arc::new(clock.clone()));
    let session = before.load(None, DeviceInfo::default()).await.unwrap();
    session.insert("k", &"v").unwrap();
    let CookieUpdate::Set { value: cookie, .. } = before.commit(&session).await.unwrap() else { panic!() };

    let newest = SealingKey::generate(2);
    let ring = CookieSealer::new("__Host-id", vec![newest.clone(), old]).unwrap();
    let after = SessionEngine::sealed(Arc::new(ring), marks).with_clock(Arc::new(clock.clone()));
    let session = after.load(Some(&cookie), DeviceInfo::default()).await.unwrap();
    assert_eq!(session.get::<String>("k").unwrap().as_deref(), Some("v"), "old keys still open");
    let CookieUpdate::Set { value: resealed, .. } = after.commit(&session).await.unwrap() else {
        panic!("a cookie sealed with an older key is re-sealed")
    };
    let only_newest = CookieSealer::new("__Host-id", vec![newest]).unwrap();
    assert!(only_newest.open(&resealed).is_some_and(|o| !o.stale_key), "re-sealed with the newest key");
}
