//! Recent authentication: sensitive actions (revoking sessions, changing the
//! password, deleting the account) need a password typed within a window,
//! so a session left open on a shared computer cannot be used for them.

use std::time::Duration;

use tessera::Timestamp;
use tessera_axum::Session;

/// The session key holding when the user last typed their password.
const AUTHENTICATED_AT: &str = "authenticated_at";

/// Records that the user just proved who they are.
pub fn mark(session: &Session, now: Timestamp) {
    // Serializing an integer cannot fail.
    let _ = session.insert(AUTHENTICATED_AT, &now.as_millis());
}

/// Whether the user typed their password within `window` before `now`.
pub fn is_recent(session: &Session, now: Timestamp, window: Duration) -> bool {
    match session.get::<i64>(AUTHENTICATED_AT) {
        Ok(Some(at)) => now.since(Timestamp(at)) <= window,
        _ => false,
    }
}
