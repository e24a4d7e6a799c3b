//! XChaCha20-Poly1305 sealing with a key ring.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::rngs::OsRng;
use rand::RngCore;

/// Bytes of the key identifier that prefixes every sealed value.
const KEY_ID_BYTES: usize = 4;
/// XChaCha20's nonce length.
const NONCE_BYTES: usize = 24;
/// Poly1305's tag length.
const TAG_BYTES: usize = 16;
/// Longest cookie value even considered (browsers keep 4096 bytes per cookie).
const MAX_VALUE_BYTES: usize = 4096;

/// One key of the ring.
#[derive(Clone)]
pub struct SealingKey {
    id: u32,
    cipher: XChaCha20Poly1305,
}

impl SealingKey {
    /// A key from 32 stored bytes, known by `id` (ids must be unique in a ring).
    pub fn from_bytes(id: u32, bytes: [u8; 32]) -> Self {
        SealingKey { id, cipher: XChaCha20Poly1305::new(&bytes.into()) }
    }

    /// A fresh random key (for tests and single-process apps; persist keys
    /// for cookies to survive restarts).
    pub fn generate(id: u32) -> Self {
        let mut bytes = [0u8; 32];
        OsRng.fill_bytes(&mut bytes);
        Self::from_bytes(id, bytes)
    }

    /// The key's identifier.
    pub fn id(&self) -> u32 {
        self.id
    }
}

impl std::fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SealingKey({}, <redacted>)", self.id)
    }
}

/// Why a sealer could not be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealerError {
    /// The ring holds no key.
    #[error("the key ring is empty")]
    NoKeys,
    /// Two keys share an id.
    #[error("two keys share the id {0}")]
    DuplicateKeyId(u32),
}

/// Seals and opens session cookies. The first key of the ring seals; all open.
#[derive(Clone, Debug)]
pub struct CookieSealer {
    keys: Vec<SealingKey>,
    associated_data: Vec<u8>,
}

impl CookieSealer {
    /// A sealer for the cookie called `cookie_name`, newest key first.
    pub fn new(cookie_name: &str, keys: Vec<SealingKey>) -> Result<Self, SealerError> {
        if keys.is_empty() {
            return Err(SealerError::NoKeys);
        }
        for (i, key) in keys.iter().enumerate() {
            if keys[..i].iter().any(|other| other.id == key.id) {
                return Err(SealerError::DuplicateKeyId(key.id));
            }
        }
        let mut associated_data = b"tessera sealed session v1\0".to_vec();
        associated_data.extend_from_slice(cookie_name.as_bytes());
        Ok(CookieSealer { keys, associated_data })
    }

    fn newest(&self) -> &SealingKey {
        // `new` refuses an empty ring.
        &self.keys[0]
    }
}

impl tessera::CookieSealer for CookieSealer {
    fn seal(&self, payload: &[u8]) -> String {
        let key = self.newest();
        let mut nonce = [0u8; NONCE_BYTES];
        OsRng.fill_bytes(&mut nonce);
        // Encryption with a valid key and nonce only fails for payloads
        // beyond 256 GiB, which a session cannot reach.
        let ciphertext = key
            .cipher
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: payload, aad: &self.associated_data })
            .unwrap_or_default();
        let mut sealed = Vec::with_capacity(KEY_ID_BYTES + NONCE_BYTES + ciphertext.len());
        sealed.extend_from_slice(&key.id.to_be_bytes());
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        URL_SAFE_NO_PAD.encode(sealed)
    }

    fn open(&self, value: &str) -> Option<tessera::Opened> {
        if value.len() > MAX_VALUE_BYTES {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(value).ok()?;
        if bytes.len() < KEY_ID_BYTES + NONCE_BYTES + TAG_BYTES {
            return None;
        }
        let (id, rest) = bytes.split_at(KEY_ID_BYTES);
        let (nonce, ciphertext) = rest.split_at(NONCE_BYTES);
        let id = u32::from_be_bytes(id.try_into().ok()?);
        let position = self.keys.iter().position(|key| key.id == id)?;
        let payload = self.keys[position]
            .cipher
            .decrypt(XNonce::from_slice(nonce), Payload { msg: ciphertext, aad: &self.associated_data })
            .ok()?;
        Some(tessera::Opened { payload, stale_key: position != 0 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera::CookieSealer as _;

    #[test]
    fn round_trips_and_refuses_tampering() {
        let sealer = CookieSealer::new("__Host-id", vec![SealingKey::generate(1)]).unwrap();
        let sealed = sealer.seal(b"hello");
        let opened = sealer.open(&sealed).unwrap();
        assert_eq!(opened.payload, b"hello");
        assert!(!opened.stale_key);
        assert_ne!(sealer.seal(b"hello"), sealed, "a fresh nonce every time");

        let mut bytes = URL_SAFE_NO_PAD.decode(&sealed).unwrap();
        for i in 0..bytes.len() {
            bytes[i] ^= 0x01;
            assert!(sealer.open(&URL_SAFE_NO_PAD.encode(&bytes)).is_none(), "bit flip at {i} accepted");
            bytes[i] ^= 0x01;
        }
        for garbage in ["", "x", "!!!", &"A".repeat(5000), &sealed[..sealed.len() - 1]] {
            assert!(sealer.open(garbage).is_none(), "{garbage:.20}");
        }
    }

    #[test]
    fn the_cookie_name_is_bound() {
        let key = SealingKey::generate(7);
        let a = CookieSealer::new("__Host-id", vec![key.clone()]).unwrap();
        let b = CookieSealer::new("__Host-other", vec![key]).unwrap();
        assert!(b.open(&a.seal(b"x")).is_none());
    }

    #[test]
    fn rotation_opens_old_cookies_and_flags_them() {
        let old = SealingKey::generate(1);
        let before = CookieSealer::new("id", vec![old.clone()]).unwrap();
        let cookie = before.seal(b"payload");
        let after = CookieSealer::new("id", vec![SealingKey::generate(2), old]).unwrap();
        let opened = after.open(&cookie).unwrap();
        assert!(opened.stale_key);
        assert!(!after.open(&after.seal(b"payload")).unwrap().stale_key);
        let retired = CookieSealer::new("id", vec![SealingKey::generate(2)]).unwrap();
        assert!(retired.open(&cookie).is_none(), "a retired key opens nothing");
    }

    #[test]
    fn ring_rules() {
        assert_eq!(CookieSealer::new("id", vec![]).unwrap_err(), SealerError::NoKeys);
        let dup = CookieSealer::new("id", vec![SealingKey::generate(3), SealingKey::generate(3)]);
        assert_eq!(dup.unwrap_err(), SealerError::DuplicateKeyId(3));
    }
}
