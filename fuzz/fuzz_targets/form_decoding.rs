//! Form decoding as `CsrfForm` does it: the `csrf_token` field first, then
//! the login and registration forms, then the `next` redirect check. Never
//! panics; `safe_next` never lets an off-site target through.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::Deserialize;

/// The server's login form (crates/tessera-server/src/pages/login.rs).
#[derive(Deserialize)]
#[allow(dead_code)]
struct LoginForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    next: Option<String>,
}

/// The server's registration form (crates/tessera-server/src/pages/register.rs).
#[derive(Deserialize)]
#[allow(dead_code)]
struct RegisterForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

fuzz_target!(|data: &[u8]| {
    let _ = tessera_axum::fuzzing::csrf_token_field(data);
    let _ = serde_urlencoded::from_bytes::<RegisterForm>(data);
    if let Ok(form) = serde_urlencoded::from_bytes::<LoginForm>(data) {
        if let Some(next) = form.next.as_deref().and_then(tessera_axum::safe_next) {
            let bytes = next.as_bytes();
            assert_eq!(bytes[0], b'/');
            assert!(!matches!(bytes.get(1), Some(b'/') | Some(b'\\')), "{next:?}");
            assert!(!next.chars().any(|c| c.is_control() || c == '\\'), "{next:?}");
        }
    }
});
