//! Opaque refresh tokens: 256 random bits, base64url; only their SHA-256
//! digest is stored, so a leaked database yields no usable token.
//!
//! ```
//! use tessera_token::refresh::{digest, RefreshToken};
//! let token = RefreshToken::generate();
//! assert_eq!(token.as_str().len(), 43);
//! assert_eq!(digest(token.as_str()), Some(token.digest()));
//! assert_eq!(digest("not a token"), None);
//! ```

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Length of a refresh token's text: 32 bytes in unpadded base64url.
pub const TOKEN_CHARS: usize = 43;

/// A new refresh token. `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct RefreshToken(String);

impl RefreshToken {
    /// 256 bits from the OS CSPRNG.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        OsRng.fill_bytes(&mut bytes);
        RefreshToken(URL_SAFE_NO_PAD.encode(bytes))
    }

    /// The text to hand to the client.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The digest to store.
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.0.as_bytes()).into()
    }
}

impl std::fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RefreshToken(<redacted>)")
    }
}

/// The digest of a presented token, or `None` if it cannot be one of ours
/// (then there is nothing to look up).
///
/// Lookups by digest need no constant-time comparison: the digest of a guess
/// reveals nothing about the digests stored.
pub fn digest(presented: &str) -> Option<[u8; 32]> {
    let well_formed = presented.len() == TOKEN_CHARS
        && URL_SAFE_NO_PAD.decode(presented).map(|bytes| bytes.len() == 32).unwrap_or(false);
    well_formed.then(|| Sha256::digest(presented.as_bytes()).into())
}
