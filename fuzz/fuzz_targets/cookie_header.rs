//! The session layer's `Cookie` header parsing on arbitrary header bytes
//! (split into several headers at 0xff bytes): never panics, and what it
//! returns is a value sent under that name, bounded in size unless valid.
#![no_main]

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use tessera_axum::fuzzing::{pre_session_cookie, session_cookie};

fuzz_target!(|data: &[u8]| {
    let mut headers = HeaderMap::new();
    for part in data.split(|b| *b == 0xff) {
        // Bytes that HTTP could not carry in a header are refused by `http`
        // before the layer ever sees them.
        if let Ok(value) = HeaderValue::from_bytes(part) {
            headers.append(http::header::COOKIE, value);
        }
    }
    for name in ["__Host-id", "id", "__Host-csrf"] {
        if let Some(value) = session_cookie(&headers, name) {
            assert!(tessera::SessionId::parse(&value).is_some() || value.len() <= 4096);
            assert!(!value.contains(';'));
        }
        if let Some(value) = pre_session_cookie(&headers, name) {
            assert!(value.len() <= 4096);
        }
    }
});
