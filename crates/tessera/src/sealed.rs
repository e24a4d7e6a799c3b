//! Sessions kept wholly in the cookie: what the engine needs from a sealer
//! (encryption lives in `tessera-store-cookie`) and from the server-side
//! revocation marks that make logout real for self-contained cookies.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::data::SessionData;
use crate::error::StoreError;

/// Encrypts and authenticates cookie payloads.
///
/// Implementations must use an AEAD and bind the cookie's name into the
/// authenticated data, so a value cannot be moved to another cookie.
pub trait CookieSealer: Send + Sync + 'static {
    /// Seals `payload` into a cookie-safe string with the newest key.
    fn seal(&self, payload: &[u8]) -> String;

    /// Opens a value sealed by [`seal`](Self::seal). `None` for anything
    /// malformed, tampered with, or sealed with a key no longer in the ring:
    /// such a cookie is simply no session.
    fn open(&self, value: &str) -> Option<Opened>;
}

/// A payload opened by a [`CookieSealer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The plaintext.
    pub payload: Vec<u8>,
    /// It was sealed with an older key of the ring: re-seal it with the newest.
    pub stale_key: bool,
}

/// Per-user "valid after" marks, kept on the server.
///
/// A sealed cookie cannot be deleted from the server, so logout, password
/// change and log-out-everywhere record a mark instead: every cookie of that
/// user issued before the mark is refused.
#[async_trait]
pub trait RevocationMarks: Send + Sync + 'static {
    /// The user's mark, if any.
    async fn valid_after(&self, user_id: &str) -> Result<Option<Timestamp>, StoreError>;

    /// Makes every cookie of the user issued at or before `at` invalid. Marks
    /// only move forward; the engine issues later cookies strictly after the mark.
    async fn revoke_before(&self, user_id: &str, at: Timestamp) -> Result<(), StoreError>;

    /// A cheap round trip, for readiness checks.
    async fn ping(&self) -> Result<(), StoreError>;
}

/// What a sealed cookie holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SealedSession {
    /// A random per-session secret: its digest is the session's key (for
    /// CSRF binding and handles), and it changes on every regeneration.
    #[serde(rename = "s")]
    pub sid: String,
    #[serde(rename = "u", default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(rename = "d", default)]
    pub data: SessionData,
    /// Start of the absolute time-out.
    #[serde(rename = "c")]
    pub created_at: Timestamp,
    /// Start of the idle time-out.
    #[serde(rename = "a")]
    pub last_active: Timestamp,
    /// When this cookie's identity was issued (creation or last
    /// regeneration): compared with the user's revocation mark.
    #[serde(rename = "i")]
    pub issued_at: Timestamp,
}
