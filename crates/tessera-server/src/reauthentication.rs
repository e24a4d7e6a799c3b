//! Recent authentication: sensitive actions (revoking sessions, changing the
//! password, deleting the account, linking or unlinking a sign-in method)
//! need a password typed, a passkey used (or a login) within a window, so a
//! session left open on a shared computer cannot be used for them.
//!
//! Every password confirmation goes through [`confirm_password`], which puts
//! it behind the same throttle as `/login` (per account or device, and per
//! client address): a stolen session cookie or access token must not become
//! an unthrottled password-guessing oracle.

use std::sync::Arc;
use std::time::Duration;

use tessera::{Clock, Timestamp};
use tessera_auth::passkey::{Assertion, AuthenticationCeremony};
use tessera_auth::{Authenticator, Channel, Client, LoginError, User};
use tessera_axum::{retry_after_seconds, Session, AUTHENTICATED_AT};

/// Recent authentication as a service handlers extract: the core that
/// confirms passwords, the clock, and the window (`sessions.reauth_window`).
#[derive(Clone)]
pub struct Reauthentication {
    auth: Authenticator,
    clock: Arc<dyn Clock>,
    window: Duration,
}

impl Reauthentication {
    /// Recent authentication within `window`, confirming passwords through `auth`.
    pub fn new(auth: Authenticator, clock: Arc<dyn Clock>, window: Duration) -> Self {
        Reauthentication { auth, clock, window }
    }

    /// The current time on the clock the window is measured with.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// The window (`sessions.reauth_window`).
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Whether `session` authenticated within the window.
    pub fn is_recent_now(&self, session: &Session) -> bool {
        is_recent(session, self.clock.now(), self.window)
    }

    /// What to tell `user` whose authentication is not recent (see [`stale_message`]).
    pub fn stale_message(&self, user: &User) -> String {
        stale_message(user, self.window)
    }

    /// Checks `password` against `user`'s current password through the
    /// authentication core, behind the login throttle: the same account (or
    /// device) and address counters as `/login`, so guesses here and there add
    /// up. A blocked counter answers [`Confirmation::Throttled`] before any
    /// hashing; a failure that starts a block answers it too.
    pub async fn confirm_password(
        &self,
        channel: Channel,
        client: &Client,
        user: &User,
        password: &str,
    ) -> Result<Confirmation, LoginError> {
        match self.auth.confirm_password(channel, client, user, password).await {
            Ok(()) => Ok(Confirmation::Confirmed),
            Err(LoginError::InvalidCredentials) => {
                tracing::info!(user_id = user.id, "password confirmation failed");
                Ok(Confirmation::Wrong)
            }
            Err(LoginError::Throttled(wait)) => {
                tracing::info!(
                    user_id = user.id,
                    wait_secs = wait.as_secs(),
                    "password confirmation refused: throttled"
                );
                Ok(Confirmation::Throttled(wait))
            }
            Err(other) => Err(other),
        }
    }

    /// Confirms it is `user` with a fresh assertion of one of their passkeys
    /// (the answer to `ceremony`) instead of the password: through the
    /// authentication core, behind the same throttle; on success the session
    /// is stepped up (a new ID, a fresh recent-authentication mark). What
    /// passkey-only accounts confirm sensitive actions with.
    pub async fn confirm_passkey(
        &self,
        session: &Session,
        client: &Client,
        user: &User,
        ceremony: AuthenticationCeremony,
        credential: &Assertion,
    ) -> Result<(), LoginError> {
        self.auth.confirm_passkey(Channel::Web, client, user, ceremony, credential).await?;
        stepped_up(session, self.clock.now());
        Ok(())
    }

    /// Requires a recent authentication, or confirms it with `password` (behind
    /// the throttle) and steps the session up.
    pub async fn ensure_recent(
        &self,
        session: &Session,
        user: &User,
        password: Option<&str>,
        client: &Client,
    ) -> Result<Recency, LoginError> {
        let now = self.clock.now();
        if is_recent(session, now, self.window) {
            return Ok(Recency::Recent);
        }
        let Some(password) = password.filter(|p| !p.is_empty()) else { return Ok(Recency::Stale) };
        Ok(match self.confirm_password(Channel::Web, client, user, password).await? {
            Confirmation::Confirmed => {
                stepped_up(session, now);
                Recency::Recent
            }
            Confirmation::Wrong => Recency::Wrong,
            Confirmation::Throttled(wait) => Recency::Throttled(wait),
        })
    }
}

/// How far an identity provider's clock may be ahead of tessera's when
/// its `auth_time` is checked against a requested `max_age`: a provider a
/// little behind must not fail every step-up, and a minute buys an
/// attacker nothing a real login would not.
pub const AUTH_TIME_SKEW: Duration = Duration::from_secs(60);

/// Records that the user proved who they are at `at` (now, for a password
/// typed here; the provider's `auth_time` for an OpenID Connect login).
pub fn mark(session: &Session, at: Timestamp) {
    // Serializing an integer cannot fail.
    let _ = session.insert(AUTHENTICATED_AT, &at.as_millis());
}

/// Records a successful step-up (a password typed again on a logged-in
/// session, or a provider login at most `max_age` old): the recent-
/// authentication mark at `at`, and a new session ID, so that an ID that
/// leaked before the step-up does not inherit its privileges (ASVS 7.2.4).
/// The old ID dies when the new one is committed.
pub fn stepped_up(session: &Session, at: Timestamp) {
    session.regenerate();
    mark(session, at);
}

/// Why a provider's answer does not prove a recent authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderAuthentication {
    /// `max_age` was sent but the ID token has no `auth_time`, which OpenID
    /// Connect Core 3.1.2.1 requires: the provider (or whoever edited the
    /// request on its way) did not honour `max_age`.
    MissingAuthTime,
    /// `auth_time` is older than `max_age` (plus [`AUTH_TIME_SKEW`]): the
    /// provider answered from an earlier sign-in.
    TooOld {
        /// How long before `now` the provider says the user authenticated.
        age: Duration,
    },
}

/// Checks that a provider which was sent `max_age` authenticated the user
/// within it: `auth_time` must be present and at most `max_age` plus
/// [`AUTH_TIME_SKEW`] before `now`. Returns the authentication time to
/// record: `auth_time`, or `now` if the provider's clock put it in the
/// future.
pub fn check_provider_auth_time(
    auth_time: Option<Timestamp>,
    max_age: Duration,
    now: Timestamp,
) -> Result<Timestamp, ProviderAuthentication> {
    let at = auth_time.ok_or(ProviderAuthentication::MissingAuthTime)?;
    let age = now.since(at);
    if age > max_age.saturating_add(AUTH_TIME_SKEW) {
        return Err(ProviderAuthentication::TooOld { age });
    }
    Ok(Timestamp(at.as_millis().min(now.as_millis())))
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

/// What to tell a user whose authentication is not recent: type the
/// password, or, without one, confirm at the provider (the "Confirm with"
/// buttons on `/account`, which ask the provider for a sign-in at most the
/// window old). Logging out and in again is not enough: the provider may
/// answer from its own older sign-in.
pub fn stale_message(user: &User, window: Duration) -> String {
    let minutes = window.as_secs().div_ceil(60);
    if user.password_hash.is_some() {
        format!("You logged in more than {minutes} minutes ago: confirm with your current password.")
    } else {
        format!(
            "You last confirmed it is you more than {minutes} minutes ago (or your provider did not say when). \
             Confirm with a passkey or with your provider (\u{201c}Confirm with\u{201d} on your account page), \
             then try again within {minutes} minutes."
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: i64 = 60_000;

    #[test]
    fn provider_auth_time_must_be_present_and_within_max_age_plus_skew() {
        let now = Timestamp(100 * MINUTE);
        let window = Duration::from_secs(600);
        assert_eq!(check_provider_auth_time(None, window, now), Err(ProviderAuthentication::MissingAuthTime));
        assert_eq!(check_provider_auth_time(Some(now), window, now), Ok(now));
        let earlier = Timestamp(now.0 - 11 * MINUTE);
        assert_eq!(check_provider_auth_time(Some(earlier), window, now), Ok(earlier), "within the skew");
        assert_eq!(
            check_provider_auth_time(Some(Timestamp(now.0 - 11 * MINUTE - 1000)), window, now),
            Err(ProviderAuthentication::TooOld { age: Duration::from_secs(661) })
        );
        let future = Timestamp(now.0 + 5 * MINUTE);
        assert_eq!(check_provider_auth_time(Some(future), window, now), Ok(now), "clamped to now");
    }
}
