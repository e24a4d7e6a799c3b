//! Session identifiers: the secret in the cookie and the digest in the store.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Length of a session ID in bytes: 256 bits.
const ID_BYTES: usize = 32;
/// Length of a session ID in its base64url cookie form.
const ID_ENCODED_LEN: usize = 43;

/// The secret session identifier carried in the cookie.
///
/// 256 bits from the operating system's CSPRNG, encoded as unpadded base64url.
/// It is never given to a store: stores see only its [`SessionKey`]. Its
/// `Debug` output is redacted so that it cannot leak into logs.
#[derive(Clone)]
pub struct SessionId([u8; ID_BYTES]);

impl SessionId {
    /// A fresh random ID from the OS CSPRNG.
    pub fn generate() -> Self {
        let mut bytes = [0u8; ID_BYTES];
        OsRng.fill_bytes(&mut bytes);
        SessionId(bytes)
    }

    /// Parses the cookie form; anything that is not exactly 43 base64url
    /// characters decoding to 32 bytes is `None` (no session), never an error.
    pub fn parse(encoded: &str) -> Option<Self> {
        if encoded.len() != ID_ENCODED_LEN {
            return None;
        }
        let mut bytes = [0u8; ID_BYTES];
        match URL_SAFE_NO_PAD.decode_slice(encoded.as_bytes(), &mut bytes) {
            Ok(ID_BYTES) => Some(SessionId(bytes)),
            _ => None,
        }
    }

    /// The cookie form: unpadded base64url.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }

    /// The store key: SHA-256 of the ID's bytes.
    pub fn key(&self) -> SessionKey {
        SessionKey(Sha256::digest(self.0).into())
    }
}

impl PartialEq for SessionId {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}
impl Eq for SessionId {}

impl std::fmt::Debug for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionId(<redacted>)")
    }
}

/// The key under which a store keeps a session: the SHA-256 digest of its
/// [`SessionId`]. Knowing a key does not let anyone forge the cookie.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey([u8; 32]);

impl SessionKey {
    /// Wraps raw digest bytes, as read back from a store.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        SessionKey(bytes)
    }

    /// Parses the lowercase hex form produced by [`SessionKey::to_hex`].
    pub fn from_hex(hex: &str) -> Option<Self> {
        if hex.len() != 64 {
            return None;
        }
        let mut bytes = [0u8; 32];
        for (i, chunk) in hex.as_bytes().chunks(2).enumerate() {
            let hi = (chunk[0] as char).to_digit(16)?;
            let lo = (chunk[1] as char).to_digit(16)?;
            bytes[i] = (hi * 16 + lo) as u8;
        }
        Some(SessionKey(bytes))
    }

    /// The raw digest bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lowercase hex, for stores that key by strings.
    pub fn to_hex(&self) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = String::with_capacity(64);
        for byte in self.0 {
            out.push(HEX[(byte >> 4) as usize] as char);
            out.push(HEX[(byte & 0xf) as usize] as char);
        }
        out
    }

    /// The public handle of this session, safe to show to its user (for
    /// example in a device list) and to accept back in a revocation form.
    pub fn handle(&self) -> SessionHandle {
        let digest = Sha256::new().chain_update(b"tessera session handle v1").chain_update(self.0).finalize();
        SessionHandle(URL_SAFE_NO_PAD.encode(&digest[..16]))
    }
}

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A key is not a credential, but it is stable and unique: print a prefix only.
        write!(f, "SessionKey({}…)", &self.to_hex()[..8])
    }
}

/// A public, non-secret name for a session: derived one-way from its
/// [`SessionKey`], so it can neither be turned into a cookie nor a store key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SessionHandle(String);

impl SessionHandle {
    /// The handle's text form.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Compares with a handle received from a client, in constant time.
    pub fn matches(&self, presented: &str) -> bool {
        self.0.as_bytes().ct_eq(presented.as_bytes()).into()
    }
}

impl std::fmt::Display for SessionHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_is_random() {
        let a = SessionId::generate();
        let b = SessionId::generate();
        assert_ne!(a, b);
        let encoded = a.encode();
        assert_eq!(encoded.len(), ID_ENCODED_LEN);
        assert_eq!(SessionId::parse(&encoded), Some(a.clone()));
        assert_eq!(a.key(), SessionId::parse(&encoded).unwrap().key());
    }

    #[test]
    fn rejects_malformed_ids() {
        let good = SessionId::generate().encode();
        for bad in [
            "",
            "short",
            &good[..42],
            &format!("{good}A"),
            &format!("{}=", &good[..42]),
            &"+".repeat(43),
            &"é".repeat(22),
        ] {
            assert!(SessionId::parse(bad).is_none(), "{bad:?} parsed");
        }
    }

    #[test]
    fn key_hex_round_trips_and_debug_redacts() {
        let id = SessionId::generate();
        let key = id.key();
        assert_eq!(SessionKey::from_hex(&key.to_hex()), Some(key));
        assert!(SessionKey::from_hex("zz").is_none());
        assert!(!format!("{id:?}").contains(&id.encode()));
        assert_ne!(key.handle().as_str(), key.to_hex());
        assert!(key.handle().matches(key.handle().as_str()));
    }
}
