//! `SessionId::parse` on any string: never panics, accepts only the exact
//! 43-character base64url form, and what it accepts encodes back unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera::SessionId;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Some(id) = SessionId::parse(text) {
        assert_eq!(text.len(), 43);
        assert_eq!(id.encode(), text, "parse and encode are inverse");
        let _ = id.key().handle();
    }
});
