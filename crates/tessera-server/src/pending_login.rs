//! Where a login that passed its first factor waits for the second: in
//! the (still anonymous) session. The user is not logged in, `RequireUser`
//! still refuses, and only `/login/second-factor` reads it. The core's
//! [`PendingLogin`] expires after `tessera_auth::login::PENDING_LIFETIME`,
//! so a password typed on a shared computer and abandoned at the code
//! prompt does not stay half-used.

use tessera::Timestamp;
use tessera_auth::PendingLogin;
use tessera_axum::Session;

const KEY: &str = "pending_second_factor";

/// Stores `pending` on `session`, under a new session ID: the session now
/// carries a privilege (a passed first factor), so an ID planted before
/// must not inherit it.
pub fn start(session: &Session, pending: &PendingLogin) {
    session.regenerate();
    // Serializing integers and strings cannot fail.
    let _ = session.insert(KEY, pending);
}

/// The pending login of `session`, if any and not expired.
pub fn current(session: &Session, now: Timestamp) -> Option<PendingLogin> {
    let pending: PendingLogin = session.get(KEY).ok().flatten()?;
    pending.is_current(now).then_some(pending)
}

/// Forgets the pending login (after success, or to start over).
pub fn clear(session: &Session) {
    let _ = session.remove::<serde_json::Value>(KEY);
}
