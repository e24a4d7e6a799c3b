//! The login state machine: first factor → optional second factor → an
//! authenticated user, with the throttle reserved before every check and an
//! event for every outcome.
//!
//! ```text
//!   password ─┐                         ┌─ wrong ──────────► LoginFailed (counted)
//!   provider ─┴─► first factor passed ──┤
//!                                       ├─ no second factor ► LoggedIn
//!                                       └─ second factor ───► PendingLogin ─► code ─► LoggedIn
//! ```
//!
//! Every way in — the login form, the API, an identity provider, the code
//! prompt, a step-up — is one method of [`Authenticator`]; none of them
//! lets a handler touch the throttle, the events or the counters itself.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tessera::{Clock, SessionKey, Timestamp};

use crate::accounts::{Accounts, AccountsUnavailable, LoginOutcome, RegisterError};
use crate::database::DatabaseError;
use crate::directory::User;
use crate::events::{AuthEvent, Channel, Client, EventSink, Method};
use crate::mail::Email;
use crate::passkey::Passkeys;
use crate::password_policy::check_username;
use crate::revocation::{NothingToRevoke, Revocation, Revoked};
use crate::second_factor::{SecondFactors, TotpSecret, Verification};
use crate::throttle::{AttemptKeys, Reservation, SignUpReservation, Throttle};

/// How long a passed first factor waits for the second.
pub const PENDING_LIFETIME: Duration = Duration::from_secs(5 * 60);

/// A login whose first factor passed and which waits for the second. The
/// host keeps it with the (still anonymous) session; it carries a privilege,
/// so the host should give that session a new ID when storing it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingLogin {
    /// Who passed the first factor.
    pub user_id: i64,
    /// When (milliseconds since the epoch).
    pub since: i64,
    /// How.
    pub first_factor: FirstFactor,
    /// Where to go afterwards (already checked by the host as a safe target).
    pub next: Option<String>,
    /// The account has no second factor and the server requires one: the
    /// prompt sets up an authenticator app instead of asking for its code.
    #[serde(default)]
    pub enroll: bool,
    /// For a provider login: the provider's `auth_time` (milliseconds), which
    /// becomes the session's authentication time.
    #[serde(default)]
    pub provider_auth_time: Option<i64>,
    /// When enrolling: the authenticator secret of this pending login alone
    /// (base32), shown by the prompt and stored only once a code from the
    /// app confirms it.
    #[serde(default)]
    pub enrolment_secret: Option<String>,
    /// A fingerprint of the account's password hash when the first factor
    /// passed: a password change (or reset) in between ends the pending
    /// login, so a password that was just replaced cannot be finished with.
    #[serde(default)]
    pub password_fingerprint: String,
}

impl PendingLogin {
    /// The authenticator secret this pending login enrols, if it enrols one.
    pub fn enrolment_secret(&self) -> Option<TotpSecret> {
        self.enrolment_secret.as_deref().and_then(TotpSecret::from_base32)
    }
}

impl PendingLogin {
    /// Whether it is still within [`PENDING_LIFETIME`] at `now`.
    pub fn is_current(&self, now: Timestamp) -> bool {
        now.since(Timestamp(self.since)) <= PENDING_LIFETIME
    }
}

/// How the first factor was passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FirstFactor {
    /// The account's password.
    Password,
    /// A login at an OpenID Connect provider.
    Oidc,
    /// A passkey (with user verification: a factor on its own).
    Passkey,
    /// A code or link mailed to the account's verified address
    /// ([`crate::email_login`]).
    Email,
}

impl FirstFactor {
    fn method(self) -> Method {
        match self {
            FirstFactor::Password => Method::Password,
            FirstFactor::Oidc => Method::Provider,
            FirstFactor::Passkey => Method::Passkey,
            FirstFactor::Email => Method::Email,
        }
    }
}

/// A finished login: the host now gives the session a new ID and binds it
/// to `user` (or issues tokens).
#[derive(Debug, Clone)]
pub struct LoggedIn {
    /// Who.
    pub user: User,
    /// How the first factor was passed.
    pub first_factor: FirstFactor,
    /// When the user last proved who they are: now, or the provider's
    /// `auth_time` for a provider login (`None`: the provider did not say,
    /// so the session is not recently authenticated).
    pub authenticated_at: Option<Timestamp>,
    /// For password logins, a fresh device-cookie value that keeps this
    /// browser out of lockouts caused elsewhere (see [`crate::throttle`]).
    pub device_cookie: Option<String>,
    /// The second factor passed after the first, if one was.
    pub second_factor: Option<SecondFactorKind>,
}

/// Which second factor completed a pending login.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecondFactorKind {
    /// An authenticator-app code or a recovery code.
    Code,
    /// A passkey of the account (with user verification).
    Passkey,
}

impl LoggedIn {
    /// How the user authenticated, as OpenID Connect's `amr` values
    /// (RFC 8176): `pwd` (password), `fed` (a login at an identity
    /// provider), `hwk` (a passkey: proof of possession of a key held by an
    /// authenticator, unlocked by user verification), `otp` (an
    /// authenticator or recovery code; also an emailed sign-in code or link,
    /// for which RFC 8176 has no value of its own), and `mfa` when more than one factor
    /// was used. A passkey is multi-factor on its own: the device is
    /// something the user has, and user verification (a PIN or biometric,
    /// which tessera requires) something they know or are.
    pub fn amr(&self) -> Vec<&'static str> {
        let mut amr = vec![match self.first_factor {
            FirstFactor::Password => "pwd",
            FirstFactor::Oidc => "fed",
            FirstFactor::Passkey => "hwk",
            FirstFactor::Email => "otp",
        }];
        match self.second_factor {
            Some(SecondFactorKind::Code) if !amr.contains(&"otp") => amr.push("otp"),
            Some(SecondFactorKind::Passkey) if !amr.contains(&"hwk") => amr.push("hwk"),
            _ => {}
        }
        if self.is_multi_factor() {
            amr.push("mfa");
        }
        amr
    }

    /// Whether the login used two factors: a passkey (on its own, or after
    /// a password), or a first factor and a code.
    pub fn is_multi_factor(&self) -> bool {
        self.first_factor == FirstFactor::Passkey || self.second_factor.is_some()
    }
}

/// What follows a passed first factor.
#[derive(Debug, Clone)]
pub enum LoginStep {
    /// Logged in.
    LoggedIn(LoggedIn),
    /// The account needs its second factor (or, on a server that requires
    /// one, to set it up): keep this and ask for the code.
    SecondFactor(PendingLogin),
}

/// Why a login step did not succeed. Each carries what the answer needs
/// and nothing that would tell an attacker more than "no".
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// Wrong user name or password, or a disabled account: one answer for all.
    #[error("wrong user name or password")]
    InvalidCredentials,
    /// A wrong or already used second-factor code.
    #[error("that code is not valid, or it was used already")]
    InvalidSecondFactor,
    /// The account has a second factor and none came with the attempt (the
    /// API's one-shot sign-in).
    #[error("a second factor is required")]
    SecondFactorRequired,
    /// The server requires a second factor and the account has none yet;
    /// the one-shot API cannot set one up.
    #[error("the account must set up a second factor first")]
    EnrolmentRequired,
    /// The pending login is gone: expired, or its account was disabled.
    #[error("the login expired")]
    Expired,
    /// Too many attempts: wait this long. Nothing was checked.
    #[error("too many attempts")]
    Throttled(Duration),
    /// A passkey assertion was refused (see the reason).
    #[error(transparent)]
    PasskeyRefused(crate::passkey::PasskeyRefusal),
    /// The password hashing queue is full: nothing was checked and the
    /// attempt was given back to the throttle; try again shortly.
    #[error("password hashing is busy")]
    Busy,
    /// The first factor passed, but the server requires a verified email
    /// address (`accounts.email = required`) and the account has none yet.
    /// Carries the proof the host may keep briefly so the user can ask for
    /// the verification mail again
    /// ([`Authenticator::resend_verification`]).
    #[error("the account's email address is not verified yet")]
    EmailUnverified(crate::email_verification::UnverifiedLogin),
    /// The database or the hashing pool is down.
    #[error("authentication unavailable: {0}")]
    Unavailable(String),
}

impl From<DatabaseError> for LoginError {
    fn from(error: DatabaseError) -> Self {
        LoginError::Unavailable(error.to_string())
    }
}

impl From<AccountsUnavailable> for LoginError {
    fn from(error: AccountsUnavailable) -> Self {
        match error {
            AccountsUnavailable::Busy => LoginError::Busy,
            AccountsUnavailable::Down(why) => LoginError::Unavailable(why),
        }
    }
}

/// The authentication core's entry point.
#[derive(Clone)]
pub struct Authenticator {
    accounts: Accounts,
    throttle: Throttle,
    second_factors: SecondFactors,
    events: Arc<dyn EventSink>,
    revocation: Arc<dyn Revocation>,
    clock: Arc<dyn Clock>,
    require_second_factor: bool,
    passkeys: Option<Passkeys>,
    email: Option<Email>,
}

impl Authenticator {
    /// The core over its parts; events go to `events`.
    pub fn new(
        accounts: Accounts,
        throttle: Throttle,
        second_factors: SecondFactors,
        events: Arc<dyn EventSink>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let revocation = Arc::new(NothingToRevoke);
        Authenticator {
            accounts,
            throttle,
            second_factors,
            events,
            revocation,
            clock,
            require_second_factor: false,
            passkeys: None,
            email: None,
        }
    }

    /// Turns on email: addresses on accounts, verification, password reset
    /// and security notices, mailed through `email`'s outbox.
    pub fn with_email(mut self, email: Email) -> Self {
        self.email = Some(email);
        self
    }

    /// The email parts, if email is on.
    pub fn email(&self) -> Option<&Email> {
        self.email.as_ref()
    }

    /// How account changes end the user's sessions and tokens (by default
    /// they end nothing beyond the core's own tables).
    pub fn with_revocation(mut self, revocation: Arc<dyn Revocation>) -> Self {
        self.revocation = revocation;
        self
    }

    /// Changes `user`'s password (the policy checked) and ends every other
    /// session and API token of the user — all but `keep`, the session making
    /// the change. For an administrator's reset, `keep` is `None`.
    pub async fn change_password(
        &self,
        channel: Channel,
        client: &Client,
        user: &User,
        new_password: &str,
        keep: Option<&SessionKey>,
    ) -> Result<Revoked, RegisterError> {
        self.accounts.change_password(user, new_password).await?;
        let revoked = self.revoke_everything(user.id, keep).await.map_err(AccountsUnavailable::from)?;
        self.record(AuthEvent::PasswordChanged { user_id: user.id }, channel, client).await;
        Ok(revoked)
    }

    /// Disables (ending every session and token) or enables an account;
    /// `None` if there is no such user.
    pub async fn set_disabled(
        &self,
        channel: Channel,
        client: &Client,
        user_id: i64,
        disabled: bool,
    ) -> Result<Option<Revoked>, DatabaseError> {
        let when = disabled.then(|| self.clock.now());
        if !self.accounts.directory().set_disabled(user_id, when).await? {
            return Ok(None);
        }
        self.accounts.signed_in().forget(user_id);
        if !disabled {
            return Ok(Some(Revoked::default()));
        }
        let revoked = self.revoke_everything(user_id, None).await?;
        self.record(AuthEvent::AccountDisabled { user_id }, channel, client).await;
        Ok(Some(revoked))
    }

    /// Turns a user's second factor off (an administrator's reset for a
    /// user who lost app and codes) and ends every session and token, so
    /// whoever holds one must log in again. `None` if it was not on.
    pub async fn reset_second_factor(
        &self,
        channel: Channel,
        client: &Client,
        user_id: i64,
    ) -> Result<Option<Revoked>, DatabaseError> {
        if !self.second_factors.disable(user_id).await? {
            return Ok(None);
        }
        let revoked = self.revoke_everything(user_id, None).await?;
        self.record(AuthEvent::SecondFactorDisabled { user_id }, channel, client).await;
        Ok(Some(revoked))
    }

    /// Ends every session of `user_id` but `keep`, and every API token: the
    /// one path for "sign out everywhere" and every account change above.
    pub async fn revoke_everything(&self, user_id: i64, keep: Option<&SessionKey>) -> Result<Revoked, DatabaseError> {
        self.accounts.signed_in().forget(user_id);
        self.revocation.revoke_everything(user_id, keep).await
    }

    /// Every login must pass a second factor; accounts without one set an
    /// authenticator app up before their first login completes.
    pub fn require_second_factor(mut self, required: bool) -> Self {
        self.require_second_factor = required;
        self
    }

    /// Whether every login must pass a second factor.
    pub fn second_factor_required(&self) -> bool {
        self.require_second_factor
    }

    /// The accounts (registration, password changes).
    pub fn accounts(&self) -> &Accounts {
        &self.accounts
    }

    /// The second factors (setup and management on the account pages).
    pub fn second_factors(&self) -> &SecondFactors {
        &self.second_factors
    }

    /// Turns passkeys on, with their tables and relying party.
    pub fn with_passkeys(mut self, passkeys: Passkeys) -> Self {
        self.passkeys = Some(passkeys);
        self
    }

    /// The passkeys, when they are on.
    pub fn passkeys(&self) -> Option<&Passkeys> {
        self.passkeys.as_ref()
    }

    pub(crate) fn clock_now(&self) -> Timestamp {
        self.clock.now()
    }

    /// The throttle (for its configuration and purge).
    pub fn throttle(&self) -> &Throttle {
        &self.throttle
    }

    /// Hands `event` to the host's sink: for the account events that are no
    /// login step (sign-up, logout, revocations).
    pub async fn record(&self, event: AuthEvent, channel: Channel, client: &Client) {
        self.events.record(event, channel, client, self.clock.now()).await;
    }

    /// Creates an account with a password (the policy checked, argon2id)
    /// and records [`AuthEvent::SignedUp`]; signs nobody in.
    ///
    /// A sign-up from a client address is counted on the address's sign-up
    /// counter *before* the password is hashed (after the cheap checks of
    /// name and password, so a typo costs nothing): past the allowance it
    /// is refused with [`RegisterError::Throttled`] and
    /// [`AuthEvent::SignUpThrottled`], and nothing is hashed. A taken name
    /// stays counted (it limits probing for names too); a full hashing
    /// queue or a database failure gives the sign-up back. Administrators'
    /// commands (no client address) are not counted.
    pub async fn sign_up(
        &self,
        channel: Channel,
        client: &Client,
        username: &str,
        password: &str,
    ) -> Result<User, RegisterError> {
        self.accounts.check_new(username, password)?;
        let reservation = self.reserve_sign_up(channel, client).await?;
        let user = match self.accounts.register(username, password).await {
            Ok(user) => user,
            Err(error) => {
                if let RegisterError::Busy | RegisterError::Unavailable(_) = &error {
                    self.release_sign_up(reservation).await;
                }
                return Err(error);
            }
        };
        self.record(AuthEvent::SignedUp { user_id: user.id }, channel, client).await;
        Ok(user)
    }

    /// Counts a sign-up on the client address's allowance (none for
    /// administrators' commands or without an address); past it, records
    /// [`AuthEvent::SignUpThrottled`] and refuses with the wait.
    pub(crate) async fn reserve_sign_up(
        &self,
        channel: Channel,
        client: &Client,
    ) -> Result<Option<SignUpReservation>, RegisterError> {
        match (channel, client.ip) {
            (Channel::Admin, _) | (_, None) => Ok(None),
            (_, Some(ip)) => match self.throttle.reserve_sign_up(ip).await.map_err(AccountsUnavailable::from)? {
                Ok(reservation) => Ok(Some(reservation)),
                Err(wait) => {
                    self.record(AuthEvent::SignUpThrottled, channel, client).await;
                    Err(RegisterError::Throttled(wait))
                }
            },
        }
    }

    /// Gives a sign-up back to the allowance (it failed through no fault of
    /// the client's).
    pub(crate) async fn release_sign_up(&self, reservation: Option<SignUpReservation>) {
        let Some(reservation) = reservation else { return };
        if let Err(release) = self.throttle.release_sign_up(reservation).await {
            tracing::warn!(error = %release, "giving a sign-up back to the throttle failed");
        }
    }

    /// Registers an account with a password and signs it in: records
    /// [`AuthEvent::SignedUp`] and returns the login, or, on a server that
    /// requires a second factor, the pending login that sets one up first.
    pub async fn register(
        &self,
        channel: Channel,
        client: &Client,
        username: &str,
        password: &str,
        next: Option<String>,
    ) -> Result<LoginStep, RegisterError> {
        let user = self.sign_up(channel, client, username, password).await?;
        Ok(self.after_sign_up(user, next))
    }

    /// The login of an account just created (by [`Authenticator::sign_up`],
    /// or by a host that checked more first, such as an invitation): logged
    /// in at once, or, on a server that requires a second factor, the
    /// pending login that sets one up first.
    pub fn after_sign_up(&self, user: User, next: Option<String>) -> LoginStep {
        if self.require_second_factor {
            return LoginStep::SecondFactor(self.pending(&user, FirstFactor::Password, true, None, next));
        }
        let authenticated_at = Some(self.clock.now());
        // The browser that created the account is no new device for it.
        let device_cookie = self.device_cookie_for(&user);
        LoginStep::LoggedIn(LoggedIn {
            user,
            first_factor: FirstFactor::Password,
            authenticated_at,
            device_cookie,
            second_factor: None,
        })
    }

    /// The first factor by password. Reserves an attempt first; a blocked
    /// counter answers [`LoginError::Throttled`] without hashing anything.
    pub async fn password(
        &self,
        channel: Channel,
        client: &Client,
        username: &str,
        password: &str,
        next: Option<String>,
    ) -> Result<LoginStep, LoginError> {
        let (reservation, user) = self.check_password(channel, client, username, password).await?;
        self.after_first_factor(channel, client, reservation, user, FirstFactor::Password, next).await
    }

    /// The API's one-shot sign-in: the password and, for an account with a
    /// second factor, its code, under one reserved attempt.
    pub async fn password_and_code(
        &self,
        client: &Client,
        username: &str,
        password: &str,
        code: Option<&str>,
    ) -> Result<LoggedIn, LoginError> {
        let channel = Channel::Api;
        let (reservation, user) = self.check_password(channel, client, username, password).await?;
        if let Err(error) = self.refuse_unverified(&user, FirstFactor::Password).await {
            let _ = self.throttle.release(reservation).await;
            return Err(error);
        }
        let enrolled = match self.second_factors.is_enabled(user.id).await {
            Ok(enrolled) => enrolled,
            Err(error) => {
                let _ = self.throttle.release(reservation).await;
                return Err(error.into());
            }
        };
        if !enrolled && self.require_second_factor {
            self.throttle.release(reservation).await?;
            return Err(LoginError::EnrolmentRequired);
        }
        if enrolled {
            let Some(code) = code else {
                // The right password alone is no login; the attempt is given
                // back but earlier failures stay.
                self.throttle.release(reservation).await?;
                return Err(LoginError::SecondFactorRequired);
            };
            if let Err(error) = self.check_code(channel, client, &user, code).await {
                return Err(match error {
                    LoginError::InvalidSecondFactor => {
                        let event = AuthEvent::SecondFactorFailed { user_id: user.id };
                        self.fail(reservation, event, channel, client, error).await
                    }
                    other => {
                        let _ = self.throttle.release(reservation).await;
                        other
                    }
                });
            }
        }
        let second = enrolled.then_some(SecondFactorKind::Code);
        let now = Some(self.clock.now());
        self.succeed_with(channel, client, reservation, user, FirstFactor::Password, now, second).await
    }

    /// The first factor passed elsewhere: a login at an identity provider
    /// for `user`, who authenticated there at `auth_time`. Not throttled
    /// (nothing secret is checked here) but recorded like every login.
    pub async fn provider(
        &self,
        client: &Client,
        user: User,
        auth_time: Option<Timestamp>,
        next: Option<String>,
    ) -> Result<LoginStep, LoginError> {
        let channel = Channel::Web;
        if !user.is_enabled() {
            let event = AuthEvent::LoginFailed { user_id: Some(user.id), method: Method::Provider };
            self.record(event, channel, client).await;
            return Err(LoginError::InvalidCredentials);
        }
        let auth_time = auth_time.map(|t| Timestamp(t.as_millis().min(self.clock.now().as_millis())));
        let enrolled = self.second_factors.is_enabled(user.id).await?;
        if enrolled || self.require_second_factor {
            let enroll = self.must_enrol(user.id, enrolled).await?;
            return Ok(LoginStep::SecondFactor(self.pending(&user, FirstFactor::Oidc, enroll, auth_time, next)));
        }
        self.record(AuthEvent::LoginSucceeded { user_id: user.id, method: Method::Provider }, channel, client).await;
        self.record_if_new_device(channel, client, &user).await;
        let device_cookie = self.device_cookie_for(&user);
        Ok(LoginStep::LoggedIn(LoggedIn {
            user,
            first_factor: FirstFactor::Oidc,
            authenticated_at: auth_time,
            device_cookie,
            second_factor: None,
        }))
    }

    /// The second factor of `pending`: an authenticator code or a recovery
    /// code, behind the same throttle counters as the password.
    pub async fn second_factor(
        &self,
        channel: Channel,
        client: &Client,
        pending: &PendingLogin,
        code: &str,
    ) -> Result<LoggedIn, LoginError> {
        let user = self.pending_user(pending).await?;
        let reservation = self.reserve_for(channel, client, &user).await?;
        if let Err(error) = self.check_code(channel, client, &user, code).await {
            let event = AuthEvent::SecondFactorFailed { user_id: user.id };
            return Err(self.refuse(reservation, event, channel, client, error).await);
        }
        let authenticated_at = self.authenticated_at(pending);
        let code = Some(SecondFactorKind::Code);
        self.succeed_with(channel, client, reservation, user, pending.first_factor, authenticated_at, code).await
    }

    /// Finishes a pending enrolment: `code` confirms the authenticator app
    /// whose setup the prompt showed. Returns the login and the recovery
    /// codes to show once.
    pub async fn complete_enrolment(
        &self,
        channel: Channel,
        client: &Client,
        pending: &PendingLogin,
        code: &str,
    ) -> Result<(LoggedIn, Vec<String>), LoginError> {
        let Some(secret) = pending.enrolment_secret() else { return Err(LoginError::Expired) };
        let user = self.pending_user(pending).await?;
        let reservation = self.reserve_for(channel, client, &user).await?;
        let codes = match self.second_factors.confirm_pending_setup(user.id, &secret, code).await {
            Ok(Some(codes)) => Ok(codes),
            Ok(None) => Err(LoginError::InvalidSecondFactor),
            Err(error) => Err(error.into()),
        };
        let codes = match codes {
            Ok(codes) => codes,
            Err(error) => {
                let event = AuthEvent::SecondFactorFailed { user_id: user.id };
                return Err(self.refuse(reservation, event, channel, client, error).await);
            }
        };
        self.record(AuthEvent::SecondFactorEnabled { user_id: user.id }, channel, client).await;
        let authenticated_at = self.authenticated_at(pending);
        let code = Some(SecondFactorKind::Code);
        let logged_in =
            self.succeed_with(channel, client, reservation, user, pending.first_factor, authenticated_at, code).await?;
        Ok((logged_in, codes))
    }

    /// A password typed again by a logged-in `user` (a step-up before a
    /// sensitive action), behind the login throttle: a stolen session must
    /// not become an unthrottled password oracle.
    pub async fn confirm_password(
        &self,
        channel: Channel,
        client: &Client,
        user: &User,
        password: &str,
    ) -> Result<(), LoginError> {
        let reservation = self.reserve_for(channel, client, user).await?;
        let verdict = match self.accounts.verify_password(user, password).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(LoginError::InvalidCredentials),
            Err(error) => Err(error.into()),
        };
        self.settle(reservation, verdict, AuthEvent::ConfirmationFailed { user_id: user.id }, channel, client).await
    }

    /// A current code (authenticator or recovery) from a logged-in `user`
    /// with a second factor, before that factor is changed (turned off, new
    /// recovery codes): whoever holds only the session or the password must
    /// not remove the factor. Behind the login throttle, like a password.
    pub async fn confirm_second_factor(
        &self,
        channel: Channel,
        client: &Client,
        user: &User,
        code: &str,
    ) -> Result<(), LoginError> {
        let reservation = self.reserve_for(channel, client, user).await?;
        let verdict = self.check_code(channel, client, user, code).await;
        self.settle(reservation, verdict, AuthEvent::SecondFactorFailed { user_id: user.id }, channel, client).await
    }

    /// The user of a pending login, if it is current and the account may
    /// still log in.
    pub async fn pending_user(&self, pending: &PendingLogin) -> Result<User, LoginError> {
        if !pending.is_current(self.clock.now()) {
            return Err(LoginError::Expired);
        }
        let user = self.accounts.directory().user_by_id(pending.user_id).await?;
        let user = user.filter(User::is_enabled).ok_or(LoginError::Expired)?;
        if password_fingerprint(&user) != pending.password_fingerprint {
            return Err(LoginError::Expired);
        }
        Ok(user)
    }

    /// The password step every password login shares: an attempt reserved
    /// on the name's and the address's counters, then the password checked.
    /// A wrong one is recorded and stays counted; a dependency failure gives
    /// the attempt back (not the user's fault).
    pub(crate) async fn check_password(
        &self,
        channel: Channel,
        client: &Client,
        username: &str,
        password: &str,
    ) -> Result<(Reservation, User), LoginError> {
        let username_key = check_username(username).ok();
        let keys = self.throttle.keys(username_key.as_deref(), client.ip, client.device_cookie.as_deref());
        let reservation = self.reserve(channel, client, &keys, username_key.as_deref()).await?;
        match self.accounts.authenticate(username, password).await {
            Ok(LoginOutcome::Succeeded(user)) => Ok((reservation, user)),
            Ok(LoginOutcome::Failed { known_user }) => {
                let event = AuthEvent::LoginFailed { user_id: known_user, method: Method::Password };
                Err(self.fail(reservation, event, channel, client, LoginError::InvalidCredentials).await)
            }
            Err(error) => {
                let _ = self.throttle.release(reservation).await;
                Err(error.into())
            }
        }
    }

    pub(crate) async fn after_first_factor(
        &self,
        channel: Channel,
        client: &Client,
        reservation: Reservation,
        user: User,
        first_factor: FirstFactor,
        next: Option<String>,
    ) -> Result<LoginStep, LoginError> {
        // Before the second factor is asked for: refused either way.
        if let Err(error) = self.refuse_unverified(&user, first_factor).await {
            let _ = self.throttle.release(reservation).await;
            return Err(error);
        }
        let enrolled = match self.second_factors.is_enabled(user.id).await {
            Ok(enrolled) => enrolled,
            Err(error) => {
                let _ = self.throttle.release(reservation).await;
                return Err(error.into());
            }
        };
        if enrolled || self.require_second_factor {
            // The first factor alone is no login: the attempt is given back
            // and the counters keep their earlier failures until the code.
            self.throttle.release(reservation).await?;
            let enroll = self.must_enrol(user.id, enrolled).await?;
            return Ok(LoginStep::SecondFactor(self.pending(&user, first_factor, enroll, None, next)));
        }
        let authenticated_at = Some(self.clock.now());
        let done = self.succeed_with(channel, client, reservation, user, first_factor, authenticated_at, None).await;
        done.map(LoginStep::LoggedIn)
    }

    /// Whether a login of `user_id` (with an authenticator app or not:
    /// `enrolled`) must set one up before it completes: the server requires
    /// a second factor and the account has none, neither an app nor a
    /// passkey. A passkey is a second factor too, and a phishing-resistant
    /// one, so an account with one is asked for it instead.
    async fn must_enrol(&self, user_id: i64, enrolled: bool) -> Result<bool, DatabaseError> {
        if enrolled || !self.require_second_factor {
            return Ok(false);
        }
        match &self.passkeys {
            Some(passkeys) => Ok(passkeys.count(user_id).await? == 0),
            None => Ok(true),
        }
    }

    fn pending(
        &self,
        user: &User,
        first_factor: FirstFactor,
        enroll: bool,
        auth_time: Option<Timestamp>,
        next: Option<String>,
    ) -> PendingLogin {
        PendingLogin {
            user_id: user.id,
            since: self.clock.now().as_millis(),
            first_factor,
            next,
            enroll,
            provider_auth_time: auth_time.map(|t| t.as_millis()),
            enrolment_secret: enroll.then(|| TotpSecret::generate().to_base32()),
            password_fingerprint: password_fingerprint(user),
        }
    }

    fn authenticated_at(&self, pending: &PendingLogin) -> Option<Timestamp> {
        match pending.first_factor {
            FirstFactor::Oidc => pending.provider_auth_time.map(Timestamp),
            FirstFactor::Password | FirstFactor::Passkey | FirstFactor::Email => Some(self.clock.now()),
        }
    }

    /// Checks a code (authenticator or recovery) for `user`.
    pub(crate) async fn check_code(
        &self,
        channel: Channel,
        client: &Client,
        user: &User,
        code: &str,
    ) -> Result<(), LoginError> {
        match self.second_factors.verify(user.id, code).await? {
            Verification::Totp => Ok(()),
            Verification::RecoveryCode { left } => {
                self.record(AuthEvent::RecoveryCodeUsed { user_id: user.id, left }, channel, client).await;
                Ok(())
            }
            Verification::Wrong => Err(LoginError::InvalidSecondFactor),
        }
    }

    pub(crate) async fn reserve(
        &self,
        channel: Channel,
        client: &Client,
        keys: &AttemptKeys,
        username_key: Option<&str>,
    ) -> Result<Reservation, LoginError> {
        match self.throttle.reserve(keys).await? {
            Ok(reservation) => Ok(reservation),
            Err(wait) => {
                // One lookup for the account's trail; refused attempts are
                // cheap by design, and a flood of them is what the trail is for.
                let user_id = match username_key {
                    Some(key) => self.accounts.directory().user_by_name(key).await.ok().flatten().map(|u| u.id),
                    None => None,
                };
                self.record(AuthEvent::Throttled { user_id }, channel, client).await;
                Err(LoginError::Throttled(wait))
            }
        }
    }

    /// Records a failure; a failure that started a block answers with the
    /// wait at once rather than on the next try.
    /// Reserves an attempt on `user`'s counters (account or device, and
    /// address) before anything of theirs is checked.
    pub(crate) async fn reserve_for(
        &self,
        channel: Channel,
        client: &Client,
        user: &User,
    ) -> Result<Reservation, LoginError> {
        let username_key = check_username(&user.username).ok();
        let keys = self.throttle.keys(username_key.as_deref(), client.ip, client.device_cookie.as_deref());
        self.reserve(channel, client, &keys, username_key.as_deref()).await
    }

    /// Settles the reservation of a confirmation (a step-up, not a login):
    /// success clears the counters, a refusal goes through [`Self::refuse`].
    async fn settle(
        &self,
        reservation: Reservation,
        verdict: Result<(), LoginError>,
        failed: AuthEvent,
        channel: Channel,
        client: &Client,
    ) -> Result<(), LoginError> {
        match verdict {
            Ok(()) => Ok(self.throttle.succeeded(reservation).await?),
            Err(error) => Err(self.refuse(reservation, failed, channel, client, error).await),
        }
    }

    /// Settles the reservation of a check that did not pass: a wrong
    /// password or code counts as a failure (recorded as `failed`); any
    /// other error (a dependency down, an expired login) releases the
    /// attempt, since nothing was verified.
    async fn refuse(
        &self,
        reservation: Reservation,
        failed: AuthEvent,
        channel: Channel,
        client: &Client,
        error: LoginError,
    ) -> LoginError {
        if matches!(error, LoginError::InvalidCredentials | LoginError::InvalidSecondFactor) {
            self.fail(reservation, failed, channel, client, error).await
        } else {
            let _ = self.throttle.release(reservation).await;
            error
        }
    }

    pub(crate) async fn fail(
        &self,
        reservation: Reservation,
        event: AuthEvent,
        channel: Channel,
        client: &Client,
        error: LoginError,
    ) -> LoginError {
        self.record(event, channel, client).await;
        match self.throttle.failed(reservation).await {
            Ok(Some(wait)) => LoginError::Throttled(wait),
            Ok(None) => error,
            Err(unavailable) => unavailable.into(),
        }
    }

    /// Completes a login whose checks passed: `first_factor`, and
    /// `second_factor` when one was asked for (`None` otherwise). Every way
    /// in ends here.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn succeed_with(
        &self,
        channel: Channel,
        client: &Client,
        reservation: Reservation,
        user: User,
        first_factor: FirstFactor,
        authenticated_at: Option<Timestamp>,
        second_factor: Option<SecondFactorKind>,
    ) -> Result<LoggedIn, LoginError> {
        // Every way in ends here: an unverified account (when the server
        // requires a verified address) is refused, its attempt given back.
        if let Err(error) = self.refuse_unverified(&user, first_factor).await {
            let _ = self.throttle.release(reservation).await;
            return Err(error);
        }
        if let Err(error) = self.throttle.succeeded(reservation).await {
            tracing::warn!(%error, "clearing the login throttle failed");
        }
        // A proven browser stays out of lockouts caused elsewhere, and is
        // no new device next time, whatever the way in.
        let device_cookie = self.device_cookie_for(&user);
        self.record(AuthEvent::LoginSucceeded { user_id: user.id, method: first_factor.method() }, channel, client)
            .await;
        self.record_if_new_device(channel, client, &user).await;
        Ok(LoggedIn { user, first_factor, authenticated_at, device_cookie, second_factor })
    }
}

impl Authenticator {
    /// A fresh device-cookie value for a browser `user` just signed in
    /// with (any method): see [`crate::throttle`].
    fn device_cookie_for(&self, user: &User) -> Option<String> {
        check_username(&user.username).ok().and_then(|key| self.throttle.new_device_cookie(&key))
    }

    /// Records [`AuthEvent::NewDeviceSignIn`] for a browser sign-in whose
    /// browser has no valid device cookie *for this account*: every
    /// successful sign-in leaves one, whatever the method (password,
    /// provider, passkey, email), so its absence means this browser has not
    /// signed in to this account in the cookie's lifetime. API sign-ins
    /// have no device cookie and are not judged.
    async fn record_if_new_device(&self, channel: Channel, client: &Client, user: &User) {
        if channel != Channel::Web {
            return;
        }
        let known = match (check_username(&user.username), client.device_cookie.as_deref()) {
            (Ok(key), Some(cookie)) => self.throttle.is_device_of(cookie, &key),
            _ => false,
        };
        if !known {
            self.record(AuthEvent::NewDeviceSignIn { user_id: user.id }, channel, client).await;
        }
    }
}

/// A short digest of `user`'s password hash (or of its absence): equal
/// while the password is unchanged, and telling nothing about it.
fn password_fingerprint(user: &User) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(user.password_hash.as_deref().unwrap_or("").as_bytes());
    digest[..12].iter().map(|b| format!("{b:02x}")).collect()
}
