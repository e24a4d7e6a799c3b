//! Sealed cookies: `CookieSealer::open` on arbitrary strings, and the
//! engine loading a cookie whose sealed payload is arbitrary bytes (what a
//! holder of a leaked key, or a bug in an older version, could produce).
//! Never panics; garbage is no session.
#![no_main]

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use libfuzzer_sys::fuzz_target;
use tessera::{CookieSealer as _, DeviceInfo, RevocationMarks, SessionEngine, StoreError, Timestamp};
use tessera_store_cookie::{CookieSealer, SealingKey};

struct NoMarks;

#[async_trait]
impl RevocationMarks for NoMarks {
    async fn valid_after(&self, _user_id: &str) -> Result<Option<Timestamp>, StoreError> {
        Ok(None)
    }
    async fn revoke_before(&self, _user_id: &str, _at: Timestamp) -> Result<(), StoreError> {
        Ok(())
    }
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

fn sealer() -> &'static CookieSealer {
    static SEALER: OnceLock<CookieSealer> = OnceLock::new();
    SEALER.get_or_init(|| {
        let keys = vec![SealingKey::from_bytes(2, [7; 32]), SealingKey::from_bytes(1, [9; 32])];
        CookieSealer::new("__Host-id", keys).expect("a valid key ring")
    })
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| tokio::runtime::Builder::new_current_thread().build().expect("a runtime"))
}

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else { return };
    if mode % 2 == 0 {
        // An attacker's cookie value: must not open (no key), must not panic.
        if let Ok(text) = std::str::from_utf8(rest) {
            assert!(sealer().open(text).is_none(), "forged cookie opened");
        }
    } else {
        // A correctly sealed cookie around arbitrary bytes: the engine must
        // treat an undecodable payload as no session.
        let sealed = sealer().seal(rest);
        let opened = sealer().open(&sealed).expect("own seal opens");
        assert_eq!(opened.payload, rest);
        assert!(!opened.stale_key);
        let engine = SessionEngine::sealed(Arc::new(sealer().clone()), Arc::new(NoMarks));
        let loaded = runtime().block_on(engine.load(Some(&sealed), DeviceInfo::default()));
        if let Ok(session) = loaded {
            let _ = session.user_id();
        }
    }
});
