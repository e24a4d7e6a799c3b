//! Tokens whose signature a [`crate::KeyRing`] already checked.
//!
//! An API client sends the same access token with every request until it
//! expires, and checking an Ed25519 signature costs about 450,000
//! instructions (four fifths of a whole `GET /api/me`). A ring remembers
//! the claims of each token it verified, by the SHA-256 of the whole token,
//! so the next request with the same bytes skips the signature and the
//! JSON parsing. Nothing else is skipped: issuer, audience, client and the
//! time checks run on every call, and the caller's revocation check too.
//!
//! Only tokens that passed verification are kept, so a forged or altered
//! token always takes the full path (its hash differs). The memory lives in
//! the ring: a ring built anew (a key rotated in or out) starts empty, so a
//! retired key's tokens cannot outlive it here.

use std::collections::HashMap;
use std::sync::RwLock;

use sha2::{Digest, Sha256};

use crate::AccessClaims;

/// At most this many tokens are remembered; when full, expired ones go, and
/// if none had, all of them (the next requests verify again).
pub const CAPACITY: usize = 16_384;

/// The claims of verified tokens by the SHA-256 of the token.
#[derive(Default)]
pub(crate) struct VerifiedTokens {
    claims: RwLock<HashMap<[u8; 32], AccessClaims>>,
}

/// The key of `token`.
pub(crate) fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl VerifiedTokens {
    /// The claims of the token with `digest`, if it was verified before.
    pub(crate) fn get(&self, digest: &[u8; 32]) -> Option<AccessClaims> {
        self.claims.read().unwrap_or_else(|poisoned| poisoned.into_inner()).get(digest).cloned()
    }

    /// Remembers a verified token's claims; `now` decides which are expired.
    pub(crate) fn insert(&self, digest: [u8; 32], claims: &AccessClaims, now: i64) {
        let mut map = self.claims.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        if map.len() >= CAPACITY {
            map.retain(|_, kept| kept.exp > now);
            if map.len() >= CAPACITY {
                map.clear();
            }
        }
        map.insert(digest, claims.clone());
    }

    /// How many tokens are remembered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.claims.read().unwrap_or_else(|poisoned| poisoned.into_inner()).len()
    }
}
