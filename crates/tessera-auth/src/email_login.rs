//! Sign-in by an emailed code or link (`accounts.email_login = code | link`).
//!
//! ```text
//!  browser ──address──► request_email_login ──► attempt ID (kept by the browser) + outbox intent
//!  worker  ──► prepare: the account with that *verified* address? issue code/link bound to the attempt ──► mail
//!  browser ──attempt + code (or link)──► email_login ──► throttle ─► check ─► after_first_factor (2FA, events)
//! ```
//!
//! - **Same answer**: the request reserves a throttle attempt, writes a
//!   request row and enqueues an intent (like a password reset); the worker
//!   finds the account when it sends, so the answer and its timing do not
//!   depend on whether the address belongs to anyone — nor do later wrong
//!   codes, checked against the request row that exists either way.
//! - **Bound to the requester**: the request returns a random *attempt* ID
//!   that the web layer keeps in the requesting browser's session (the API
//!   returns it to the client). The code or link works only together with
//!   it: a code typed elsewhere, or a link opened by a mail scanner or in
//!   another browser, signs nobody in.
//! - **Short-lived, single use, superseded**: 10 minutes
//!   ([`EMAIL_LOGIN_LIFETIME`]); the redeeming `UPDATE … WHERE used_at IS
//!   NULL` decides between simultaneous uses; a newer request of the same
//!   account ends the older ones.
//! - **Not brute-forceable**: every check goes through the login throttle
//!   (per requested address — one address, one account — and per client
//!   address, the counter password logins share), and each
//!   issued code dies after [`MAX_CODE_TRIES`] checks, counted atomically
//!   *before* the comparison — at most 5 guesses of a million per mail.
//! - **Hashed at rest**: the link token as SHA-256 (256 random bits), the
//!   code as an HMAC under a server secret bound to its attempt.
//! - **One login path**: a passed code is a first factor
//!   ([`FirstFactor::Email`]) and goes on through the same steps as a
//!   password: a second factor if the account has one, a new session ID,
//!   the events, the device cookie.
//!
//! NIST SP 800-63B does not accept email as an authenticator for AAL2 (nor
//! as an out-of-band channel): an emailed code proves control of a
//! mailbox, which is why it is only ever a *first* factor here.

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::rngs::OsRng;
use rand::{Rng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::Row;
use tessera::Clock;

use crate::database::{DatabaseError, TimedPool};
use crate::email_address::EmailAddress;
use crate::events::{AuthEvent, Channel, Client, Method};
use crate::login::{Authenticator, FirstFactor, LoggedIn, LoginError, LoginStep};
use crate::mail::{EmailError, Mail, Prepared};
use crate::throttle::{ip_key, AttemptKeys, Reservation, ThrottleKey};
use crate::User;

/// How long an emailed sign-in code or link works.
pub const EMAIL_LOGIN_LIFETIME: Duration = Duration::from_secs(10 * 60);

/// Checks of one issued code (right or wrong) before it dies.
pub const MAX_CODE_TRIES: i64 = 5;

/// `accounts.email_login`: whether accounts may sign in with a mailed secret.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum EmailLoginMode {
    /// No sign-in by email (the default).
    #[default]
    Off,
    /// A 6-digit code, typed in the browser (or app) that asked for it.
    Code,
    /// A link, which signs in only in the browser that asked for it.
    Link,
}

/// What the user brings back from the mail.
#[derive(Debug, Clone, Copy)]
pub enum EmailSecret<'a> {
    /// The 6-digit code.
    Code(&'a str),
    /// The link's token.
    Link(&'a str),
}

/// What opening a sign-in link found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkStatus {
    /// Unknown, used, superseded or expired.
    Invalid,
    /// A working link, opened in the browser that asked for it.
    ThisBrowser,
    /// A working link opened elsewhere (another browser, a mail scanner):
    /// it signs nothing in here.
    OtherBrowser,
}

/// A code or link just issued, for the mail.
#[derive(Debug, Clone)]
pub struct IssuedLogin {
    /// The 6-digit code (code mode).
    pub code: Option<String>,
    /// The link token (link mode).
    pub token: Option<String>,
}

/// The `email_logins` table.
#[derive(Clone)]
pub struct EmailLogins {
    db: TimedPool,
    clock: Arc<dyn Clock>,
    key: Arc<[u8; 32]>,
}

impl EmailLogins {
    /// Sign-in secrets in `db`; codes keyed with `key` (a server secret
    /// shared by every instance).
    pub fn new(db: TimedPool, clock: Arc<dyn Clock>, key: [u8; 32]) -> Self {
        EmailLogins { db, clock, key: Arc::new(key) }
    }

    /// Records a request for `address_key` under `attempt_hash`, ending
    /// the address's earlier requests. Written for every request, whether or
    /// not an account has the address: the request and every later check
    /// against it do the same work either way.
    pub async fn request(&self, attempt_hash: &str, address_key: &str) -> Result<(), DatabaseError> {
        let now = self.clock.now();
        let mut tx = self.db.begin().await?;
        sqlx::query("UPDATE email_logins SET used_at = $1 WHERE address_key = $2 AND used_at IS NULL")
            .bind(now.as_millis())
            .bind(address_key)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO email_logins (attempt_hash, address_key, tries, created_at, expires_at) \
             VALUES ($1, $2, 0, $3, $4)",
        )
        .bind(attempt_hash)
        .bind(address_key)
        .bind(now.as_millis())
        .bind(now.plus(EMAIL_LOGIN_LIFETIME).as_millis())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Issues the code (or link) of the request `attempt_hash` for
    /// `user_id`, valid for [`EMAIL_LOGIN_LIFETIME`] from now, and ends the
    /// account's other ones. A worker sending the same intent again (the
    /// first attempt failed) issues a new secret for the same request; a
    /// request used, superseded or purged meanwhile gets `None`.
    pub async fn issue(
        &self,
        attempt_hash: &str,
        user_id: i64,
        mode: EmailLoginMode,
    ) -> Result<Option<IssuedLogin>, DatabaseError> {
        let now = self.clock.now();
        let (code, token) = match mode {
            EmailLoginMode::Off => return Ok(None),
            EmailLoginMode::Code => (Some(format!("{:06}", OsRng.gen_range(0..1_000_000u32))), None),
            EmailLoginMode::Link => {
                let mut bytes = [0u8; 32];
                OsRng.fill_bytes(&mut bytes);
                (None, Some(URL_SAFE_NO_PAD.encode(bytes)))
            }
        };
        let code_hash = code.as_deref().map(|c| self.code_hash(attempt_hash, c));
        let token_hash = token.as_deref().map(sha256_hex);
        let mut tx = self.db.begin().await?;
        let stored = sqlx::query(
            "UPDATE email_logins SET user_id = $2, token_hash = $3, code_hash = $4, tries = 0, expires_at = $5 \
             WHERE attempt_hash = $1 AND used_at IS NULL AND (user_id IS NULL OR user_id = $2)",
        )
        .bind(attempt_hash)
        .bind(user_id)
        .bind(token_hash)
        .bind(code_hash)
        .bind(now.plus(EMAIL_LOGIN_LIFETIME).as_millis())
        .execute(&mut *tx)
        .await?;
        if stored.rows_affected() == 0 {
            return Ok(None);
        }
        sqlx::query(
            "UPDATE email_logins SET used_at = $1 WHERE user_id = $2 AND attempt_hash <> $3 AND used_at IS NULL",
        )
        .bind(now.as_millis())
        .bind(user_id)
        .bind(attempt_hash)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(IssuedLogin { code, token }))
    }

    /// The address key of a request still open (unused, unexpired), for
    /// its throttle counter: the same for an address no account has.
    pub async fn address_of(&self, attempt_hash: &str) -> Result<Option<String>, DatabaseError> {
        let row = sqlx::query(
            "SELECT address_key FROM email_logins WHERE attempt_hash = $1 AND used_at IS NULL AND expires_at > $2",
        )
        .bind(attempt_hash)
        .bind(self.clock.now().as_millis())
        .fetch_optional(&self.db)
        .await?;
        Ok(match row {
            Some(row) => Some(row.try_get(0)?),
            None => None,
        })
    }

    /// The account and attempt of a still working link token.
    pub async fn link(&self, token: &str) -> Result<Option<(i64, String)>, DatabaseError> {
        if !plausible_token(token) {
            return Ok(None);
        }
        let row = sqlx::query(
            "SELECT user_id, attempt_hash FROM email_logins \
             WHERE token_hash = $1 AND user_id IS NOT NULL AND used_at IS NULL AND expires_at > $2",
        )
        .bind(sha256_hex(token))
        .bind(self.clock.now().as_millis())
        .fetch_optional(&self.db)
        .await?;
        Ok(match row {
            Some(row) => Some((row.try_get(0)?, row.try_get(1)?)),
            None => None,
        })
    }

    /// Checks `secret` against the request, counting the check first (one
    /// of [`MAX_CODE_TRIES`]; a code checked that often matches nothing
    /// any more). `None` if there is no open request; else its account (if
    /// a secret was issued) and whether `secret` is right. Nothing is used
    /// up (see [`Self::consume`]).
    pub async fn check(
        &self,
        attempt_hash: &str,
        secret: EmailSecret<'_>,
    ) -> Result<Option<(Option<i64>, bool)>, DatabaseError> {
        let now = self.clock.now().as_millis();
        // Counted before the comparison, in one statement: simultaneous
        // guesses cannot share a try.
        let row = sqlx::query(
            "UPDATE email_logins SET tries = tries + 1 \
             WHERE attempt_hash = $1 AND used_at IS NULL AND expires_at > $2 AND tries < $3 \
             RETURNING user_id, code_hash, token_hash",
        )
        .bind(attempt_hash)
        .bind(now)
        .bind(MAX_CODE_TRIES)
        .fetch_optional(&self.db)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let user_id: Option<i64> = row.try_get(0)?;
        let code_hash: Option<String> = row.try_get(1)?;
        let token_hash: Option<String> = row.try_get(2)?;
        // The digest is computed whether or not a secret was issued.
        let right = match secret {
            EmailSecret::Code(code) => {
                let code = code.trim();
                let wellformed = code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit());
                let digest = self.code_hash(attempt_hash, code);
                wellformed && code_hash.is_some_and(|h| equal(&h, &digest))
            }
            EmailSecret::Link(token) => {
                let digest = sha256_hex(token);
                plausible_token(token) && token_hash.is_some_and(|h| equal(&h, &digest))
            }
        };
        Ok(Some((user_id, right && user_id.is_some())))
    }

    /// Uses the attempt up; whether this call did (of simultaneous uses,
    /// one does).
    pub async fn consume(&self, attempt_hash: &str) -> Result<bool, DatabaseError> {
        let now = self.clock.now().as_millis();
        let done = sqlx::query(
            "UPDATE email_logins SET used_at = $1 WHERE attempt_hash = $2 AND used_at IS NULL AND expires_at > $1",
        )
        .bind(now)
        .bind(attempt_hash)
        .execute(&self.db)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Deletes rows that expired before `before`; returns how many.
    pub async fn purge(&self, before: tessera::Timestamp) -> Result<u64, DatabaseError> {
        let done = sqlx::query("DELETE FROM email_logins WHERE expires_at < $1")
            .bind(before.as_millis())
            .execute(&self.db)
            .await?;
        Ok(done.rows_affected())
    }

    fn code_hash(&self, attempt_hash: &str, code: &str) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key[..]).expect("HMAC takes any key length");
        mac.update(b"tessera email login v1\0");
        mac.update(attempt_hash.as_bytes());
        mac.update(b"\0");
        mac.update(code.as_bytes());
        hex(&mac.finalize().into_bytes())
    }
}

/// A fresh attempt ID: 256 random bits, base64url.
pub fn new_attempt() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The stored form of an attempt ID (also what the outbox carries).
pub fn attempt_hash(attempt: &str) -> String {
    sha256_hex(attempt)
}

fn sha256_hex(value: &str) -> String {
    hex(&Sha256::digest(value.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares two digests without stopping at the first difference.
fn equal(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Attempt IDs and link tokens are 43 base64url characters.
fn plausible_token(token: &str) -> bool {
    token.len() == 43 && token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Authenticator {
    /// `accounts.email_login`: off unless email is on and the host turned it on.
    pub fn email_login_mode(&self) -> EmailLoginMode {
        self.email().map_or(EmailLoginMode::Off, |email| email.login)
    }

    /// Asks for a sign-in code (or link) for the account whose verified
    /// address `input` is. Returns the attempt ID the requester must keep
    /// (in the browser's session, or the API client) and bring back with
    /// the code: the same kind of answer, after the same work, whether or
    /// not an account has the address. Counted per address and per client
    /// address (each request mails someone); `Throttled` past the allowance.
    pub async fn request_email_login(&self, client: &Client, input: &str) -> Result<String, EmailError> {
        let email = self.email().ok_or(EmailError::Off)?;
        if email.login == EmailLoginMode::Off {
            return Err(EmailError::Off);
        }
        let address = EmailAddress::parse(input)?;
        let config = self.throttle().config();
        let keys = AttemptKeys {
            account: Some(ThrottleKey {
                key: format!("email-login:{}", address.key()),
                free_failures: config.account_free_failures,
            }),
            ip: client.ip.map(|ip| ThrottleKey {
                key: format!("email-login-{}", ip_key(ip)),
                free_failures: config.ip_free_failures,
            }),
        };
        let reservation = match self.throttle().reserve(&keys).await? {
            Ok(reservation) => reservation,
            Err(wait) => return Err(EmailError::Throttled(wait)),
        };
        let _ = self.throttle().failed(reservation).await?;
        let attempt = new_attempt();
        let hash = attempt_hash(&attempt);
        email.logins.request(&hash, &address.key()).await?;
        email.outbox.enqueue(Mail::SignIn { address: address.as_str().to_owned(), attempt: hash }).await?;
        Ok(attempt)
    }

    /// What a sign-in link is, opened by a browser holding `attempt` (its
    /// session's attempt ID, if any). Looks only: nothing is used up.
    pub async fn email_link_status(&self, attempt: Option<&str>, token: &str) -> Result<LinkStatus, EmailError> {
        let email = self.email().ok_or(EmailError::Off)?;
        if email.login != EmailLoginMode::Link {
            return Err(EmailError::Off);
        }
        Ok(match email.logins.link(token).await? {
            None => LinkStatus::Invalid,
            Some((_, stored)) if attempt.is_some_and(|a| equal(&attempt_hash(a), &stored)) => LinkStatus::ThisBrowser,
            Some(_) => LinkStatus::OtherBrowser,
        })
    }

    /// Signs in with the code (or link) mailed for `attempt`, in the browser
    /// (or client) that holds `attempt`: the first factor, then the same
    /// steps as a password login (a second factor if the account has one).
    /// A wrong, used, expired or foreign secret is
    /// [`LoginError::InvalidCredentials`], counted by the throttle.
    pub async fn email_login(
        &self,
        channel: Channel,
        client: &Client,
        attempt: &str,
        secret: EmailSecret<'_>,
        next: Option<String>,
    ) -> Result<LoginStep, LoginError> {
        let (reservation, user, hash) = self.check_email_secret(channel, client, attempt, secret).await?;
        match self.email_logins()?.consume(&hash).await {
            Ok(true) => {}
            Ok(false) => {
                let event = AuthEvent::LoginFailed { user_id: Some(user.id), method: Method::Email };
                return Err(self.fail(reservation, event, channel, client, LoginError::InvalidCredentials).await);
            }
            Err(error) => {
                let _ = self.throttle().release(reservation).await;
                return Err(error.into());
            }
        }
        self.after_first_factor(channel, client, reservation, user, FirstFactor::Email, next).await
    }

    /// The API's one-shot sign-in by email: the code (or link token) and,
    /// for an account with a second factor, its code, under one reserved
    /// attempt. Without the second factor the mailed code stays unused (its
    /// check counted) and the answer is [`LoginError::SecondFactorRequired`].
    pub async fn email_login_and_code(
        &self,
        client: &Client,
        attempt: &str,
        secret: EmailSecret<'_>,
        second_factor: Option<&str>,
    ) -> Result<LoggedIn, LoginError> {
        let channel = Channel::Api;
        let (reservation, user, hash) = self.check_email_secret(channel, client, attempt, secret).await?;
        let enrolled = match self.second_factors().is_enabled(user.id).await {
            Ok(enrolled) => enrolled,
            Err(error) => {
                let _ = self.throttle().release(reservation).await;
                return Err(error.into());
            }
        };
        if !enrolled && self.second_factor_required() {
            self.throttle().release(reservation).await?;
            return Err(LoginError::EnrolmentRequired);
        }
        if enrolled {
            let Some(code) = second_factor else {
                self.throttle().release(reservation).await?;
                return Err(LoginError::SecondFactorRequired);
            };
            if let Err(error) = self.check_code(channel, client, &user, code).await {
                return Err(match error {
                    LoginError::InvalidSecondFactor => {
                        let event = AuthEvent::SecondFactorFailed { user_id: user.id };
                        self.fail(reservation, event, channel, client, error).await
                    }
                    other => {
                        let _ = self.throttle().release(reservation).await;
                        other
                    }
                });
            }
        }
        match self.email_logins()?.consume(&hash).await {
            Ok(true) => {}
            Ok(false) => {
                let event = AuthEvent::LoginFailed { user_id: Some(user.id), method: Method::Email };
                return Err(self.fail(reservation, event, channel, client, LoginError::InvalidCredentials).await);
            }
            Err(error) => {
                let _ = self.throttle().release(reservation).await;
                return Err(error.into());
            }
        }
        let now = self.clock_now();
        let second = enrolled.then_some(crate::login::SecondFactorKind::Code);
        self.succeed_with(channel, client, reservation, user, FirstFactor::Email, Some(now), second).await
    }

    fn email_logins(&self) -> Result<&EmailLogins, LoginError> {
        match self.email() {
            Some(email) if email.login != EmailLoginMode::Off => Ok(&email.logins),
            _ => Err(LoginError::InvalidCredentials),
        }
    }

    /// Reserves an attempt on the request's address counter (one address,
    /// one account) and the client address's, then checks `secret`: the
    /// reservation, the user and the attempt's stored hash if right; a
    /// counted failure if not. A wrong code for an address no account has
    /// takes the same steps as one for an address that has one (the request
    /// row exists either way), so neither the answer, nor the throttle's
    /// counting, nor the work tells them apart.
    async fn check_email_secret(
        &self,
        channel: Channel,
        client: &Client,
        attempt: &str,
        secret: EmailSecret<'_>,
    ) -> Result<(Reservation, User, String), LoginError> {
        let logins = self.email_logins()?;
        let hash = attempt_hash(attempt);
        let address = if plausible_token(attempt) { logins.address_of(&hash).await? } else { None };
        let config = self.throttle().config();
        let keys = AttemptKeys {
            account: address.map(|address| ThrottleKey {
                key: format!("email-login-code:{address}"),
                free_failures: config.account_free_failures,
            }),
            ip: client.ip.map(|ip| ThrottleKey { key: ip_key(ip), free_failures: config.ip_free_failures }),
        };
        let reservation = self.reserve(channel, client, &keys, None).await?;
        let (user_id, right) = match logins.check(&hash, secret).await {
            Ok(Some(checked)) => checked,
            Ok(None) => (None, false),
            Err(error) => {
                let _ = self.throttle().release(reservation).await;
                return Err(error.into());
            }
        };
        let user = match (user_id, right) {
            (Some(id), true) => match self.accounts().directory().user_by_id(id).await {
                Ok(user) => user.filter(User::is_enabled),
                Err(error) => {
                    let _ = self.throttle().release(reservation).await;
                    return Err(error.into());
                }
            },
            _ => None,
        };
        match user {
            Some(user) => Ok((reservation, user, hash)),
            None => {
                let event = AuthEvent::LoginFailed { user_id, method: Method::Email };
                Err(self.fail(reservation, event, channel, client, LoginError::InvalidCredentials).await)
            }
        }
    }

    /// The sign-in mail of an outbox intent: `None` when no enabled account
    /// has that verified address (the requester was told the same anyway)
    /// or the attempt was used already.
    pub(crate) async fn prepare_sign_in(&self, address: &str, attempt: &str) -> Result<Option<Prepared>, EmailError> {
        let email = self.email().ok_or(EmailError::Off)?;
        let Ok(parsed) = EmailAddress::parse(address) else { return Ok(None) };
        let Some(user_id) = email.addresses.user_with(&parsed).await? else { return Ok(None) };
        let directory = self.accounts().directory();
        let Some(user) = directory.user_by_id(user_id).await?.filter(|u| u.is_enabled()) else { return Ok(None) };
        let Some(to) = email.addresses.verified(user_id).await? else { return Ok(None) };
        let Some(issued) = email.logins.issue(attempt, user_id, email.login).await? else { return Ok(None) };
        Ok(Some(Prepared::SignIn {
            to,
            username: user.username,
            code: issued.code,
            token: issued.token,
            lifetime: EMAIL_LOGIN_LIFETIME,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_compare_in_full() {
        assert!(equal("abcd", "abcd"));
        assert!(!equal("abcd", "abce"));
        assert!(!equal("abcd", "abc"));
    }

    #[test]
    fn attempts_are_random_and_plausible() {
        let (a, b) = (new_attempt(), new_attempt());
        assert_ne!(a, b);
        assert!(plausible_token(&a) && plausible_token(&b));
        assert_eq!(attempt_hash(&a).len(), 64);
        assert!(!plausible_token("short"));
    }
}
