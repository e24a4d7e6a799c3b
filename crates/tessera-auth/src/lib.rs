//! # tessera-auth — the authentication core
//!
//! Everything between "a stranger typed a name and a password" and "this
//! session belongs to user 42", with no web framework in it:
//!
//! - [`directory`]: who the users are ([`UserDirectory`], with
//!   [`SqlDirectory`] for SQLite and PostgreSQL);
//! - [`accounts`]: registration, argon2id password checks with transparent
//!   rehash, equal timing for unknown names, password changes;
//! - [`password_policy`]: NIST SP 800-63B rules and the user-name rules;
//! - [`throttle`]: attempts reserved atomically *before* anything is
//!   verified, per account (or known device) and per address, shared by
//!   every instance on one database;
//! - [`second_factor`]: authenticator apps (TOTP) and recovery codes;
//! - [`passkey`]: WebAuthn passkeys (sign-in with no password), on
//!   `webauthn-rs`;
//! - [`login`]: the state machine every way in goes through
//!   ([`Authenticator`]);
//! - [`email_login`]: sign-in by an emailed code or link, bound to the
//!   browser that asked;
//! - [`email_address`], [`email_token`], [`email_verification`],
//!   [`password_reset`] and [`mail`]: verified addresses, single-use mailed
//!   secrets, password reset and the mail the host's outbox sends;
//! - [`signed_in_users`]: the users of signed-in requests, kept in memory
//!   between requests without letting an account change slip through;
//! - [`events`]: one stream of [`AuthEvent`]s for audit, metrics and notices;
//! - [`revocation`]: account changes that end every session and token of a
//!   user go through one function the host implements ([`Revocation`]).
//!
//! The web layer (`tessera-axum`, or any other) turns a request into a
//! [`Client`] and calls one [`Authenticator`] method; the session engine
//! (`tessera`) then logs the returned user in under a new session ID.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use tessera_auth::{Authenticator, Channel, Client, LoginStep};
//!
//! let auth = Authenticator::open("sqlite://app.db").await?;
//! let client = Client::default();
//! auth.register(Channel::Web, &client, "alice", "correct horse battery", None).await?;
//! match auth.password(Channel::Web, &client, "alice", "correct horse battery", None).await? {
//!     LoginStep::LoggedIn(done) => println!("user {} logged in", done.user.id),
//!     LoginStep::SecondFactor(pending) => println!("ask user {} for a code", pending.user_id),
//! }
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod aaguid;
pub mod accounts;
pub mod database;
pub mod directory;
pub mod email_address;
pub mod email_login;
pub mod email_token;
pub mod email_verification;
pub mod events;
pub mod login;
pub mod mail;
pub mod passkey;
pub mod password_policy;
pub mod password_reset;
pub mod revocation;
pub mod second_factor;
pub mod signed_in_users;
pub mod throttle;

pub use accounts::{Accounts, AccountsUnavailable, RegisterError};
pub use database::{DatabaseError, TimedPool};
pub use directory::{SqlDirectory, User, UserDirectory};
pub use events::{AuthEvent, Channel, Client, EventSink, Method};
pub use login::{Authenticator, FirstFactor, LoggedIn, LoginError, LoginStep, PendingLogin, SecondFactorKind};
pub use mail::{Email, EmailError, Mail, Notice, Outbox, Prepared};
pub use passkey::{
    BeginError, PasskeyError, PasskeyInfo, PasskeyRefusal, PasskeySignUpError, Passkeys, RelyingParty, Removal,
};
pub use password_policy::PasswordPolicy;
pub use revocation::{Revocation, Revoked};
pub use second_factor::SecondFactors;
pub use signed_in_users::SignedInUsers;
pub use throttle::{Throttle, ThrottleConfig};

use std::sync::Arc;

use tessera::password::PasswordHasher;
use tessera::SystemClock;

impl Authenticator {
    /// The core with every default, over the database at `url`
    /// (`sqlite://FILE` or `postgres://…`, tables created as needed):
    /// argon2id with OWASP's parameters, a 12-character minimum password,
    /// the default throttle, and events logged through `tracing`.
    pub async fn open(url: &str) -> Result<Authenticator, DatabaseError> {
        let pool = TimedPool::connect(url, database::DEFAULT_QUERY_TIMEOUT).await?;
        Authenticator::with_pool(pool, Arc::new(events::TracingEvents)).await
    }

    /// The core with every default over an opened `pool`, events to `events`.
    pub async fn with_pool(pool: TimedPool, events: Arc<dyn EventSink>) -> Result<Authenticator, DatabaseError> {
        let clock: Arc<dyn tessera::Clock> = Arc::new(SystemClock);
        let device_key = pool.secret("device-cookie").await?;
        let accounts = Accounts::new(
            Arc::new(SqlDirectory::new(pool.clone())),
            PasswordHasher::default(),
            PasswordPolicy::default(),
            clock.clone(),
        );
        let throttle = Throttle::new(pool.clone(), ThrottleConfig::default(), clock.clone(), device_key);
        let second_factors = SecondFactors::new(pool, clock.clone());
        Ok(Authenticator::new(accounts, throttle, second_factors, events, clock))
    }
}
