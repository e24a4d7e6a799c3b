//! One-shot messages shown on the next page ("You are logged out").
//!
//! A flash is a short code in its own small cookie rather than session data,
//! so that logging out can destroy the session completely and still say so.
//! Only known codes are shown: a forged cookie cannot inject text.

use http::HeaderMap;
use std::time::Duration;
use tessera::CookieConfig;
use tessera_axum::cookies;

const COOKIE: &str = "flash";

/// The messages a flash can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flash {
    /// After logout.
    LoggedOut,
    /// After registration.
    Welcome,
    /// After logging in.
    LoggedIn,
    /// After a password change.
    PasswordChanged,
    /// After revoking one other session.
    SessionSignedOut,
    /// After revoking every other session.
    OthersSignedOut,
    /// After deleting the account.
    AccountDeleted,
    /// After turning two-step verification off.
    SecondFactorDisabled,
}

impl Flash {
    fn code(self) -> &'static str {
        match self {
            Flash::LoggedOut => "logged-out",
            Flash::Welcome => "welcome",
            Flash::LoggedIn => "logged-in",
            Flash::PasswordChanged => "password-changed",
            Flash::SessionSignedOut => "session-signed-out",
            Flash::OthersSignedOut => "others-signed-out",
            Flash::AccountDeleted => "account-deleted",
            Flash::SecondFactorDisabled => "second-factor-disabled",
        }
    }

    fn from_code(code: &str) -> Option<Self> {
        match code {
            "logged-out" => Some(Flash::LoggedOut),
            "welcome" => Some(Flash::Welcome),
            "logged-in" => Some(Flash::LoggedIn),
            "password-changed" => Some(Flash::PasswordChanged),
            "session-signed-out" => Some(Flash::SessionSignedOut),
            "others-signed-out" => Some(Flash::OthersSignedOut),
            "account-deleted" => Some(Flash::AccountDeleted),
            "second-factor-disabled" => Some(Flash::SecondFactorDisabled),
            _ => None,
        }
    }

    /// The text shown to the user.
    pub fn message(self) -> &'static str {
        match self {
            Flash::LoggedOut => "You are logged out.",
            Flash::Welcome => "Welcome! Your account is ready and you are logged in.",
            Flash::LoggedIn => "Welcome back! You are logged in.",
            Flash::PasswordChanged => "Password changed; other devices were signed out.",
            Flash::SessionSignedOut => "That session was signed out.",
            Flash::OthersSignedOut => "All other devices were signed out.",
            Flash::AccountDeleted => "Your account was deleted. Goodbye.",
            Flash::SecondFactorDisabled => "Two-step verification is off.",
        }
    }

    /// Adds the cookie that shows this flash on the next page.
    pub fn set(self, config: &CookieConfig, headers: &mut HeaderMap) {
        let cookie = config.cookie(config.prefixed(COOKIE), self.code().to_owned(), Some(Duration::from_secs(60)));
        cookies::set(headers, &cookie);
    }

    /// The flash the request carries, if any.
    pub fn read(config: &CookieConfig, headers: &HeaderMap) -> Option<Self> {
        cookies::value(headers, &config.prefixed(COOKIE)).and_then(Flash::from_code)
    }

    /// Adds the cookie that removes a shown flash.
    pub fn clear(config: &CookieConfig, headers: &mut HeaderMap) {
        let cookie = config.cookie(config.prefixed(COOKIE), String::new(), Some(Duration::ZERO));
        cookies::set(headers, &cookie);
    }
}
