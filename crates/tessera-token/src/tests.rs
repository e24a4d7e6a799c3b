//! Refusals, crafted by hand.

use super::*;
use hmac::{Hmac, Mac};
use serde_json::json;

const NOW: i64 = 1_700_000_000;

fn b64(value: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

fn setup() -> (TokenSettings, KeyRing, KeyPair) {
    let pair = KeyPair::generate();
    (TokenSettings::new("tessera", "tessera-api"), KeyRing::new().with_signing_key(pair.clone()), pair)
}

fn good_claims() -> serde_json::Value {
    json!({
        "iss": "tessera", "aud": "tessera-api", "sub": "1", "iat": NOW, "nbf": NOW, "exp": NOW + 900, "jti": "x",
        "client_id": "tessera-api", "scope": "api"
    })
}

/// Signs `header` and `claims` with `pair`, whatever they say.
fn sign(pair: &KeyPair, header: &serde_json::Value, claims: &serde_json::Value) -> String {
    use ed25519_dalek::Signer as _;
    let message = format!("{}.{}", b64(header), b64(claims));
    let signature = SigningKey::from_bytes(&pair.private_key_bytes()).sign(message.as_bytes());
    format!("{message}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
}

fn header(pair: &KeyPair) -> serde_json::Value {
    json!({"alg": "EdDSA", "typ": "at+jwt", "kid": pair.kid()})
}

#[test]
fn issued_tokens_verify_and_carry_every_claim() {
    let (settings, ring, pair) = setup();
    let issued = ring.issue(&settings, "7", NOW).unwrap();
    let header_json: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(issued.token.split('.').next().unwrap()).unwrap()).unwrap();
    assert_eq!(header_json, json!({"alg": "EdDSA", "typ": "at+jwt", "kid": pair.kid()}));
    let claims = ring.verify(&settings, &issued.token, NOW).unwrap();
    assert_eq!((claims.sub.as_str(), claims.exp - claims.iat, claims.nbf), ("7", 900, NOW));
    assert_eq!(claims.jti.len(), 22);
    // RFC 9068 §2.2: client_id and scope are there.
    assert_eq!((claims.client_id.as_str(), claims.scope.as_str()), ("tessera-api", DEFAULT_SCOPE));
    // A hand-signed token with the same header is accepted: the forging
    // helper is faithful, so the refusals below are about what they change.
    assert!(ring.verify(&settings, &sign(&pair, &header(&pair), &good_claims()), NOW).is_ok());
    assert!(format!("{issued:?}").contains("<redacted>"));
    assert!(!format!("{pair:?}").contains(&URL_SAFE_NO_PAD.encode(pair.private_key_bytes())));
}

#[test]
fn alg_none_in_any_casing_is_refused() {
    let (settings, ring, pair) = setup();
    for alg in ["none", "None", "NONE", "nOnE"] {
        let token =
            format!("{}.{}.", b64(&json!({"alg": alg, "typ": "at+jwt", "kid": pair.kid()})), b64(&good_claims()));
        assert_eq!(
            ring.verify(&settings, &token, NOW),
            Err(TokenError::UnacceptableHeader("algorithm not allowed")),
            "{alg}"
        );
    }
}

#[test]
fn hmac_signed_with_the_public_key_is_refused() {
    let (settings, ring, pair) = setup();
    for (alg, as_text) in [("HS256", false), ("HS256", true), ("HS384", false), ("eddsa", false)] {
        let head = json!({"alg": alg, "typ": "at+jwt", "kid": pair.kid()});
        let message = format!("{}.{}", b64(&head), b64(&good_claims()));
        let key = if as_text {
            URL_SAFE_NO_PAD.encode(pair.public_key_bytes()).into_bytes()
        } else {
            pair.public_key_bytes().to_vec()
        };
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&key).unwrap();
        mac.update(message.as_bytes());
        let token = format!("{message}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()));
        assert!(ring.verify(&settings, &token, NOW).is_err(), "{alg}");
    }
}

#[test]
fn embedded_and_remote_keys_are_refused() {
    let (settings, ring, pair) = setup();
    let attacker = KeyPair::generate();
    let jwk = serde_json::to_value(&KeyRing::new().with_signing_key(attacker.clone()).jwks().keys[0]).unwrap();
    for (name, value) in [
        ("jwk", jwk),
        ("jku", json!("https://evil.example/jwks.json")),
        ("x5u", json!("https://evil.example/cert.pem")),
        ("x5c", json!(["MIIB"])),
    ] {
        let mut head = header(&attacker);
        head[name] = value;
        let token = sign(&attacker, &head, &good_claims());
        assert_eq!(
            ring.verify(&settings, &token, NOW),
            Err(TokenError::UnacceptableHeader("embedded or remote key reference")),
            "{name}"
        );
        // Even with our own kid and our own signature.
        let mut head = header(&pair);
        head[name] = json!("x");
        assert!(ring.verify(&settings, &sign(&pair, &head, &good_claims()), NOW).is_err());
    }
    // A key we never loaded.
    assert_eq!(
        ring.verify(&settings, &sign(&attacker, &header(&attacker), &good_claims()), NOW),
        Err(TokenError::UnknownKey)
    );
    // Our kid, someone else's signature.
    let mut head = header(&attacker);
    head["kid"] = json!(pair.kid());
    assert_eq!(ring.verify(&settings, &sign(&attacker, &head, &good_claims()), NOW), Err(TokenError::BadSignature));
}

#[test]
fn tampered_payload_is_refused() {
    let (settings, ring, _) = setup();
    let issued = ring.issue(&settings, "7", NOW).unwrap();
    let parts: Vec<&str> = issued.token.split('.').collect();
    let mut claims = issued.claims.clone();
    claims.sub = "1".into();
    let tampered =
        format!("{}.{}.{}", parts[0], URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap()), parts[2]);
    assert_eq!(ring.verify(&settings, &tampered, NOW), Err(TokenError::BadSignature));
    for garbage in ["", "a.b", "a.b.c.d", "!!!.b.c", &"a".repeat(5000)] {
        assert!(ring.verify(&settings, garbage, NOW).is_err());
    }
}

#[test]
fn time_claims_are_checked_against_the_callers_clock() {
    let (settings, ring, pair) = setup();
    let check = |claims: serde_json::Value| ring.verify(&settings, &sign(&pair, &header(&pair), &claims), NOW);
    let mut claims = good_claims();
    claims.as_object_mut().unwrap().remove("exp");
    assert!(matches!(check(claims), Err(TokenError::InvalidClaims(_))), "missing exp");
    let mut claims = good_claims();
    claims["exp"] = json!(NOW - 1);
    assert_eq!(check(claims), Err(TokenError::Expired), "past exp");
    let mut claims = good_claims();
    claims["exp"] = json!(NOW);
    assert_eq!(check(claims), Err(TokenError::Expired), "exp is exclusive");
    let mut claims = good_claims();
    claims["nbf"] = json!(NOW + 10);
    assert_eq!(check(claims), Err(TokenError::NotYetValid), "future nbf");
    // Type confusion (CVE-2026-25537): a string where a number belongs.
    for field in ["exp", "nbf", "iat"] {
        let mut claims = good_claims();
        claims[field] = json!("never");
        assert!(matches!(check(claims), Err(TokenError::InvalidClaims(_))), "string {field}");
    }
    let mut claims = good_claims();
    claims.as_object_mut().unwrap().remove("nbf");
    assert!(check(claims).is_err(), "missing nbf");

    let issued = ring.issue(&settings, "7", NOW).unwrap();
    assert!(ring.verify(&settings, &issued.token, NOW + 899).is_ok());
    assert_eq!(ring.verify(&settings, &issued.token, NOW + 900), Err(TokenError::Expired));
}

#[test]
fn wrong_issuer_audience_or_type_is_refused() {
    let (settings, ring, pair) = setup();
    let check =
        |head: serde_json::Value, claims: serde_json::Value| ring.verify(&settings, &sign(&pair, &head, &claims), NOW);
    for (field, value) in
        [("iss", json!("evil")), ("aud", json!("other")), ("aud", json!(["tessera-api", "x"])), ("sub", json!(7))]
    {
        let mut claims = good_claims();
        claims[field] = value;
        assert!(matches!(check(header(&pair), claims), Err(TokenError::InvalidClaims(_))), "{field}");
    }
    for typ in [json!("JWT"), json!("refresh"), serde_json::Value::Null] {
        let mut head = header(&pair);
        head["typ"] = typ;
        assert!(matches!(check(head, good_claims()), Err(TokenError::UnacceptableHeader(_))));
    }
    let mut head = header(&pair);
    head.as_object_mut().unwrap().remove("typ");
    assert!(check(head, good_claims()).is_err());
    let mut head = header(&pair);
    head.as_object_mut().unwrap().remove("kid");
    assert_eq!(check(head, good_claims()), Err(TokenError::UnacceptableHeader("no kid")));
}

#[test]
fn rotation_keeps_old_public_keys() {
    let (settings, old_ring, old) = setup();
    let old_token = old_ring.issue(&settings, "7", NOW).unwrap().token;
    let new = KeyPair::generate();
    let ring = KeyRing::new().with_verification_key(&old.public_key_bytes()).unwrap().with_signing_key(new.clone());
    assert_eq!(ring.signing_kid(), Some(new.kid()));
    assert!(ring.verify(&settings, &old_token, NOW).is_ok());
    let kids: Vec<String> = ring.jwks().keys.into_iter().map(|k| k.kid).collect();
    assert_eq!(kids.len(), 2);
    assert!(kids.contains(&old.kid().to_owned()) && kids.contains(&new.kid().to_owned()));
    assert_eq!(KeyRing::new().with_verification_key(&[1, 2, 3]).err(), Some(KeyError::WrongLength(3)));
    assert!(KeyPair::from_private_key_bytes(&[0; 31]).is_err());
    assert_eq!(KeyRing::new().issue(&settings, "1", NOW), Err(TokenError::NoSigningKey));
}

#[test]
fn rfc_9068_claims_are_required() {
    let (settings, ring, pair) = setup();
    let check = |claims: serde_json::Value| ring.verify(&settings, &sign(&pair, &header(&pair), &claims), NOW);
    for field in ["client_id", "scope"] {
        let mut claims = good_claims();
        claims.as_object_mut().unwrap().remove(field);
        assert!(matches!(check(claims), Err(TokenError::InvalidClaims(_))), "missing {field}");
    }
    let mut claims = good_claims();
    claims["client_id"] = json!("someone-else");
    assert_eq!(check(claims), Err(TokenError::InvalidClaims("wrong client_id")));
    let mut custom = settings.clone();
    custom.client_id = "mobile".into();
    custom.scope = "api products:read".into();
    let issued = ring.issue(&custom, "7", NOW).unwrap();
    assert_eq!(issued.claims.scope, "api products:read");
    assert!(ring.verify(&custom, &issued.token, NOW).is_ok());
    assert!(ring.verify(&settings, &issued.token, NOW).is_err(), "another client's token");
}

#[test]
fn a_remembered_token_skips_only_the_signature() {
    let (settings, ring, _) = setup();
    let issued = ring.issue(&settings, "7", NOW).unwrap();
    assert_eq!(ring.verified.len(), 0);
    let first = ring.verify(&settings, &issued.token, NOW).unwrap();
    assert_eq!(ring.verified.len(), 1, "a verified token is remembered");
    assert_eq!(ring.verify(&settings, &issued.token, NOW + 1).unwrap(), first, "same claims the second time");
    assert_eq!(ring.verified.len(), 1);

    // The claims and the clock are checked on every call, remembered or not.
    let other = TokenSettings::new("someone-else", "tessera-api");
    assert_eq!(ring.verify(&other, &issued.token, NOW), Err(TokenError::InvalidClaims("wrong issuer")));
    assert_eq!(ring.verify(&settings, &issued.token, NOW + 900), Err(TokenError::Expired));

    // One byte changed anywhere is another token: the full check refuses it.
    let mut forged = issued.token.clone().into_bytes();
    let last = forged.len() - 2;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    assert_eq!(ring.verify(&settings, &forged, NOW), Err(TokenError::BadSignature));
    assert_eq!(ring.verified.len(), 1, "refused tokens are never remembered");

    // Another ring (a key rotated) has remembered nothing.
    let (_, fresh, _) = setup();
    assert_eq!(fresh.verify(&settings, &issued.token, NOW), Err(TokenError::UnknownKey));
}

#[test]
fn tokens_issued_on_a_millisecond_clock_carry_iat_ms_consistent_with_iat() {
    let (settings, ring, pair) = setup();
    let issued = ring.issue_at_millis(&settings, "7", NOW * 1000 + 999).unwrap();
    assert_eq!((issued.claims.iat, issued.claims.issued_at_ms), (NOW, Some(NOW * 1000 + 999)));
    let claims = ring.verify(&settings, &issued.token, NOW).unwrap();
    assert_eq!(claims.issued_at_ms, Some(NOW * 1000 + 999));
    assert_eq!(ring.issue(&settings, "7", NOW).unwrap().claims.issued_at_ms, None, "seconds clock: no iat_ms");
    // A signed token whose iat_ms names another second than iat is refused.
    let mut claims = good_claims();
    claims["iat_ms"] = json!((NOW - 5) * 1000);
    let forged = sign(&pair, &header(&pair), &claims);
    assert!(matches!(ring.verify(&settings, &forged, NOW), Err(TokenError::InvalidClaims(_))));
    claims["iat_ms"] = json!(NOW * 1000 + 5);
    assert!(ring.verify(&settings, &sign(&pair, &header(&pair), &claims), NOW).is_ok());
}
