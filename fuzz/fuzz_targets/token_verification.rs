//! Access-token verification: `KeyRing::verify` on arbitrary strings, and on
//! a genuine token with arbitrary byte edits. Never panics, and never
//! accepts a token that the ring's key did not sign: every accepted token is
//! re-checked with `ed25519-dalek`'s strict verification, independently of
//! `jsonwebtoken`, and a ring holding only another key accepts nothing.
#![no_main]

use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::{Signature, SigningKey};
use libfuzzer_sys::fuzz_target;
use tessera_token::{KeyPair, KeyRing, TokenSettings};

/// When the seed token was issued; verification happens a minute later.
const ISSUED_AT: i64 = 1_700_000_000;
const NOW: i64 = ISSUED_AT + 60;
/// The fixed private key (a real Ed25519 key; fixed so the committed seed
/// token verifies).
const SEED: [u8; 32] = [7; 32];

struct Fixture {
    settings: TokenSettings,
    ring: KeyRing,
    /// Knows only an unrelated key: must refuse everything.
    stranger: KeyRing,
    public: ed25519_dalek::VerifyingKey,
    genuine: String,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let settings = TokenSettings::new("https://auth.example", "tessera-api");
        let pair = KeyPair::from_private_key_bytes(&SEED).expect("32 bytes are a key");
        let ring = KeyRing::new().with_signing_key(pair);
        let other = KeyPair::from_private_key_bytes(&[9; 32]).expect("32 bytes are a key");
        let stranger = KeyRing::new().with_signing_key(other);
        let genuine = ring.issue(&settings, "42", ISSUED_AT).expect("the ring signs").token;
        let public = SigningKey::from_bytes(&SEED).verifying_key();
        Fixture { settings, ring, stranger, public, genuine }
    })
}

/// Whether `token` carries a valid Ed25519 signature of the fixed key over
/// its first two parts.
fn signed_by_the_key(fixture: &Fixture, token: &str) -> bool {
    let Some((input, signature)) = token.rsplit_once('.') else { return false };
    let Ok(bytes) = URL_SAFE_NO_PAD.decode(signature) else { return false };
    let Ok(signature) = Signature::from_slice(&bytes) else { return false };
    fixture.public.verify_strict(input.as_bytes(), &signature).is_ok()
}

fn check(fixture: &Fixture, token: &str) {
    assert!(fixture.stranger.verify(&fixture.settings, token, NOW).is_err(), "accepted without its key");
    if let Ok(claims) = fixture.ring.verify(&fixture.settings, token, NOW) {
        assert!(signed_by_the_key(fixture, token), "accepted a token the key did not sign");
        assert_eq!(claims.iss, fixture.settings.issuer);
        assert_eq!(claims.aud, fixture.settings.audience);
        assert!(claims.nbf <= NOW && claims.iat <= NOW && NOW < claims.exp, "accepted outside its validity");
    }
}

fuzz_target!(|data: &[u8]| {
    let fixture = fixture();
    let Some((mode, rest)) = data.split_first() else { return };
    if mode % 2 == 0 {
        // Any text an attacker can put after "Bearer ".
        if let Ok(text) = std::str::from_utf8(rest) {
            check(fixture, text);
        }
    } else {
        // The genuine token, edited: (position, byte) pairs overwrite bytes;
        // a trailing odd byte truncates it to that length.
        let mut token = fixture.genuine.clone().into_bytes();
        let mut pairs = rest.chunks_exact(2);
        for pair in &mut pairs {
            let at = usize::from(pair[0]) * token.len() / 256;
            token[at] = pair[1];
        }
        if let [cut] = pairs.remainder() {
            token.truncate(usize::from(*cut) * token.len() / 255);
        }
        if let Ok(text) = std::str::from_utf8(&token) {
            check(fixture, text);
        }
    }
});
