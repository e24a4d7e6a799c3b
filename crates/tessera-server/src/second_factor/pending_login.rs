//! A login that passed its first factor and waits for the second.
//!
//! It lives in the (still anonymous) session: the user is not logged in,
//! `RequireUser` still refuses, and only `/login/second-factor` reads it.
//! It expires after [`PENDING_LIFETIME`], so a password typed on a shared
//! computer and abandoned at the code prompt does not stay half-used.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tessera::Timestamp;
use tessera_axum::Session;

/// How long the code prompt waits after the password.
pub const PENDING_LIFETIME: Duration = Duration::from_secs(5 * 60);

const KEY: &str = "pending_second_factor";

/// How the first factor was passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FirstFactor {
    /// The account's password.
    Password,
    /// A login at an OpenID Connect provider.
    Oidc,
}

/// The half-finished login.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingLogin {
    /// Who passed the first factor.
    pub user_id: i64,
    /// When (milliseconds since the epoch).
    pub since: i64,
    /// How.
    pub first_factor: FirstFactor,
    /// Where to go afterwards (already checked as a safe target).
    pub next: Option<String>,
    /// The account has no second factor and the server requires one: the
    /// prompt sets up an authenticator app instead of asking for its code.
    #[serde(default)]
    pub enroll: bool,
    /// For a provider login: the provider's `auth_time` (milliseconds), which
    /// becomes the session's authentication time, as for any provider login.
    #[serde(default)]
    pub provider_auth_time: Option<i64>,
}

impl PendingLogin {
    /// Stores the pending login on `session`, under a new session ID: the
    /// session now carries a privilege (a passed first factor), so an ID
    /// planted before must not inherit it.
    pub fn start(session: &Session, pending: &PendingLogin) {
        session.regenerate();
        // Serializing integers and strings cannot fail.
        let _ = session.insert(KEY, pending);
    }

    /// The pending login of `session`, if any and not expired.
    pub fn current(session: &Session, now: Timestamp) -> Option<PendingLogin> {
        let pending: PendingLogin = session.get(KEY).ok().flatten()?;
        (now.since(Timestamp(pending.since)) <= PENDING_LIFETIME).then_some(pending)
    }

    /// Forgets the pending login (after success, or to start over).
    pub fn clear(session: &Session) {
        let _ = session.remove::<serde_json::Value>(KEY);
    }
}
