//! What the core asks its host to mail, and the host's outbox it is
//! handed to.
//!
//! A request never sends mail and never puts a secret into the outbox: it
//! enqueues a [`Mail`] — an intent such as "a reset link for this
//! address" — and the host's worker turns it into a message just before
//! sending, through [`crate::Authenticator::prepare_mail`], which issues the
//! secret then. So a request that asks for a reset does the same work
//! whether the address belongs to anyone (same answer, same timing), the
//! outbox table holds nothing a thief could use, and a message that could
//! not be sent yet loses nothing.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::database::DatabaseError;
use crate::email_address::EmailAddresses;
use crate::email_login::{EmailLoginMode, EmailLogins};
use crate::email_token::EmailTokens;

/// How long a password-reset link works.
pub const RESET_LIFETIME: Duration = Duration::from_secs(15 * 60);

/// How long a verification link and code work by default.
pub const DEFAULT_VERIFY_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// A message to send, as stored in the outbox: no secrets, only what to
/// make of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Mail {
    /// A link and code proving `address` for `user_id`.
    Verify {
        /// The account.
        user_id: i64,
        /// The address to prove (not yet the account's).
        address: String,
    },
    /// A reset link for the account whose verified address this is, if any
    /// (resolved when sending, so the request cannot tell).
    PasswordReset {
        /// The address as typed.
        address: String,
    },
    /// A sign-in code or link for the account whose verified address this
    /// is, if any (resolved when sending, so the request cannot tell),
    /// bound to the requester's attempt.
    SignIn {
        /// The address as typed.
        address: String,
        /// The SHA-256 of the requester's attempt ID (the ID itself never
        /// leaves the requester).
        attempt: String,
    },
    /// A security notice to the account's verified address (or to `to`).
    Notice {
        /// The account.
        user_id: i64,
        /// What happened.
        notice: Notice,
        /// When (milliseconds since the epoch).
        at: i64,
        /// The device it came from, as recorded with sessions.
        device: Option<String>,
        /// The client address.
        ip: Option<String>,
        /// Another recipient than the verified address: the old address,
        /// told that the account's address changed.
        to: Option<String>,
    },
}

/// What a security notice is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Notice {
    /// A sign-in from a browser that had not signed in to this account.
    NewDeviceSignIn,
    /// The password was changed or reset.
    PasswordChanged,
    /// Two-step verification was turned on.
    SecondFactorAdded,
    /// Two-step verification was turned off.
    SecondFactorRemoved,
    /// A passkey was added.
    PasskeyAdded,
    /// A passkey was removed.
    PasskeyRemoved,
    /// The account's address changed (sent to the old one).
    EmailChanged,
}

/// A message ready to be rendered and sent: the secret issued just now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prepared {
    /// A verification mail.
    Verify {
        /// Recipient.
        to: String,
        /// Link token.
        token: String,
        /// 6-digit code.
        code: String,
        /// How long both work.
        lifetime: Duration,
    },
    /// A reset mail.
    PasswordReset {
        /// Recipient.
        to: String,
        /// The account's user name (so the reader knows which account).
        username: String,
        /// Link token.
        token: String,
        /// How long it works.
        lifetime: Duration,
    },
    /// A sign-in mail: a code or a link.
    SignIn {
        /// Recipient.
        to: String,
        /// The account's user name.
        username: String,
        /// The 6-digit code (`accounts.email_login = code`).
        code: Option<String>,
        /// The link token (`accounts.email_login = link`).
        token: Option<String>,
        /// How long it works.
        lifetime: Duration,
    },
    /// A notice.
    Notice {
        /// Recipient.
        to: String,
        /// The account's user name.
        username: String,
        /// What happened.
        notice: Notice,
        /// When (milliseconds since the epoch).
        at: i64,
        /// The device.
        device: Option<String>,
        /// The client address.
        ip: Option<String>,
    },
}

/// Where the core puts mail to send: the host's durable outbox.
#[async_trait]
pub trait Outbox: Send + Sync + 'static {
    /// Stores `mail` for sending; once this returns, a crash loses nothing.
    async fn enqueue(&self, mail: Mail) -> Result<(), DatabaseError>;
}

/// Everything email the core needs: addresses, secrets, the outbox.
#[derive(Clone)]
pub struct Email {
    /// Verified addresses.
    pub addresses: EmailAddresses,
    /// Mailed secrets.
    pub tokens: EmailTokens,
    /// The host's outbox.
    pub outbox: Arc<dyn Outbox>,
    /// How long verification links and codes work.
    pub verify_lifetime: Duration,
    /// Sign-in codes and links.
    pub logins: EmailLogins,
    /// `accounts.email_login`.
    pub login: EmailLoginMode,
    /// `accounts.email = required`: a login needs a verified address.
    pub require_verified: bool,
}

/// Why an email operation did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum EmailError {
    /// The address is not plausible.
    #[error(transparent)]
    Malformed(#[from] crate::email_address::AddressError),
    /// Too many requests or wrong codes: wait this long.
    #[error("too many attempts")]
    Throttled(Duration),
    /// The link is wrong, used or expired.
    #[error("that link is not valid: it was used already, expired, or was mistyped")]
    InvalidToken,
    /// The code is wrong, used or expired.
    #[error("that code is not valid: it was used already, expired, or was mistyped")]
    InvalidCode,
    /// Another account has this address.
    #[error("that address belongs to another account")]
    Taken,
    /// The new password breaks the policy.
    #[error("{0}")]
    InvalidPassword(String),
    /// The server has email turned off.
    #[error("email is turned off on this server")]
    Off,
    /// The database or the hashing pool is down.
    #[error("email unavailable: {0}")]
    Unavailable(String),
}

impl From<DatabaseError> for EmailError {
    fn from(error: DatabaseError) -> Self {
        EmailError::Unavailable(error.to_string())
    }
}

impl From<crate::accounts::AccountsUnavailable> for EmailError {
    fn from(error: crate::accounts::AccountsUnavailable) -> Self {
        EmailError::Unavailable(error.to_string())
    }
}
