//! Recent authentication: sensitive actions (revoking sessions, changing the
//! password, deleting the account, linking or unlinking a sign-in method)
//! need a password typed (or a login) within a window, so a session left
//! open on a shared computer cannot be used for them.
//!
//! Every password confirmation goes through [`confirm_password`], which puts
//! it behind the same throttle as `/login` (per account or device, and per
//! client address): a stolen session cookie or access token must not become
//! an unthrottled password-guessing oracle.

use std::net::IpAddr;
use std::time::Duration;

use http::HeaderMap;
use tessera::Timestamp;
use tessera_axum::Session;

use crate::accounts::AccountsUnavailable;
use crate::app::AppState;
use crate::database::User;
use crate::password_policy::check_username;

/// The session key holding when the user last typed their password.
const AUTHENTICATED_AT: &str = "authenticated_at";

/// Records that the user just proved who they are.
pub fn mark(session: &Session, now: Timestamp) {
    // Serializing an integer cannot fail.
    let _ = session.insert(AUTHENTICATED_AT, &now.as_millis());
}

/// Records a successful step-up (a password typed again on a logged-in
/// session): the recent-authentication mark, and a new session ID, so that
/// an ID that leaked before the step-up does not inherit its privileges
/// (ASVS 7.2.4). The old ID dies when the new one is committed.
pub fn stepped_up(session: &Session, now: Timestamp) {
    session.regenerate();
    mark(session, now);
}

/// Whether the user typed their password within `window` before `now`.
pub fn is_recent(session: &Session, now: Timestamp, window: Duration) -> bool {
    match session.get::<i64>(AUTHENTICATED_AT) {
        Ok(Some(at)) => now.since(Timestamp(at)) <= window,
        _ => false,
    }
}

/// The verdict on a password typed to confirm an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirmation {
    /// It is the user's current password.
    Confirmed,
    /// It is not (or the account has no password).
    Wrong,
    /// Too many recent failures: try again after this long. The password
    /// was not verified.
    Throttled(Duration),
}

/// Checks `password` against `user`'s current password behind the login
/// throttle: the same account (or device) and address keys as `/login`, so
/// guesses here and there add up. A blocked key answers
/// [`Confirmation::Throttled`] before any hashing; a failure that starts a
/// block answers it too, so the caller can say so at once.
pub async fn confirm_password(
    state: &AppState,
    user: &User,
    password: &str,
    ip: Option<IpAddr>,
    headers: &HeaderMap,
) -> Result<Confirmation, AccountsUnavailable> {
    let username_key = check_username(&user.username).ok();
    let keys = state.throttle.keys(username_key.as_deref(), ip, headers, state.engine.cookie_config());
    if let Some(wait) = state.throttle.retry_after(&keys).await? {
        crate::metrics::login_throttled();
        tracing::info!(user_id = user.id, wait_secs = wait.as_secs(), "password confirmation refused: throttled");
        return Ok(Confirmation::Throttled(wait));
    }
    if state.accounts.verify_password(user, password).await? {
        if let Err(error) = state.throttle.record_success(&keys).await {
            tracing::warn!(%error, "clearing the throttle after a password confirmation failed");
        }
        return Ok(Confirmation::Confirmed);
    }
    tracing::info!(user_id = user.id, "password confirmation failed");
    match state.throttle.record_failure(&keys).await? {
        Some(wait) => {
            crate::metrics::login_throttled();
            Ok(Confirmation::Throttled(wait))
        }
        None => Ok(Confirmation::Wrong),
    }
}

/// `Retry-After` in whole seconds, rounded up and at least 1, so a client
/// that waits exactly that long gets through.
pub fn retry_after_seconds(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

/// A person-readable wait ("2m 8s") for throttling messages.
pub fn readable_wait(wait: Duration) -> String {
    humantime::format_duration(Duration::from_secs(retry_after_seconds(wait))).to_string()
}

/// Whether a sensitive action may go ahead on this session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recency {
    /// Authenticated within the window, or just confirmed with the password
    /// (then the session was stepped up: new ID, fresh mark).
    Recent,
    /// Not recent, and no password came with the request.
    Stale,
    /// Not recent, and the password that came with it is wrong.
    Wrong,
    /// Not recent, and password confirmations are throttled for this long.
    Throttled(Duration),
}

/// Requires a recent authentication, or confirms it with `password` (behind
/// the throttle) and steps the session up.
pub async fn ensure_recent(
    state: &AppState,
    session: &Session,
    user: &User,
    password: Option<&str>,
    ip: Option<IpAddr>,
    headers: &HeaderMap,
) -> Result<Recency, AccountsUnavailable> {
    let now = state.clock.now();
    if is_recent(session, now, state.reauth_window) {
        return Ok(Recency::Recent);
    }
    let Some(password) = password.filter(|p| !p.is_empty()) else { return Ok(Recency::Stale) };
    Ok(match confirm_password(state, user, password, ip, headers).await? {
        Confirmation::Confirmed => {
            stepped_up(session, now);
            Recency::Recent
        }
        Confirmation::Wrong => Recency::Wrong,
        Confirmation::Throttled(wait) => Recency::Throttled(wait),
    })
}

/// What to tell a user whose authentication is not recent: type the
/// password, or, without one, log in again (a fresh OIDC login counts).
pub fn stale_message(user: &User, window: Duration) -> String {
    let minutes = window.as_secs().div_ceil(60);
    if user.password_hash.is_some() {
        format!("You logged in more than {minutes} minutes ago: confirm with your current password.")
    } else {
        format!(
            "You logged in more than {minutes} minutes ago. Log out and log in again with your provider, \
             then try again within {minutes} minutes."
        )
    }
}
