//! Adding or changing an account's address: a link and a 6-digit code go
//! to the new address, and the address becomes the account's only when one
//! of them comes back. The old address (if any) is told of the change.
//!
//! Requests are counted per account through the login throttle, so a
//! signed-in user cannot mail-bomb an address; codes are checked behind the
//! same counters as passwords (a million codes are guessable otherwise).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tessera::Timestamp;

use crate::email_address::{EmailAddress, SetAddress};
use crate::email_token::Purpose;
use crate::events::{AuthEvent, Channel, Client};
use crate::login::Authenticator;
use crate::login::{FirstFactor, LoginError};
use crate::mail::{Email, EmailError, Mail, Prepared, RESET_LIFETIME};
use crate::throttle::{ip_key, AttemptKeys, ThrottleKey};
use crate::User;

/// An address just confirmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confirmed {
    /// The account.
    pub user_id: i64,
    /// Its address now.
    pub address: String,
    /// The address it replaced.
    pub previous: Option<String>,
}

/// How long a refused login of an unverified account lets its user ask for
/// the verification mail again.
pub const UNVERIFIED_LOGIN_LIFETIME: Duration = Duration::from_secs(10 * 60);

/// A login refused for an unverified address (`accounts.email = required`)
/// after its first factor passed: the proof, kept briefly by the web layer
/// in the session, that lets the user ask for the verification mail again
/// without being signed in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnverifiedLogin {
    /// The account.
    pub user_id: i64,
    /// When the first factor passed (milliseconds since the epoch).
    pub since: i64,
}

impl Authenticator {
    /// Refuses a login whose account has no verified address when the
    /// server requires one. Provider logins are exempt: the identity
    /// provider vouches for the person, and such accounts may have no
    /// address here at all.
    pub(crate) async fn refuse_unverified(&self, user: &User, first_factor: FirstFactor) -> Result<(), LoginError> {
        let Some(email) = self.email() else { return Ok(()) };
        if !email.require_verified || first_factor == FirstFactor::Oidc {
            return Ok(());
        }
        if email.addresses.verified(user.id).await?.is_some() {
            return Ok(());
        }
        Err(LoginError::EmailUnverified(UnverifiedLogin { user_id: user.id, since: self.clock_now().as_millis() }))
    }

    /// Mails a verification link and code to `input` again for the account
    /// of a login just refused as unverified (the proof is at most
    /// [`UNVERIFIED_LOGIN_LIFETIME`] old). `InvalidToken` if it is older or
    /// the account is gone.
    pub async fn resend_verification(&self, refused: &UnverifiedLogin, input: &str) -> Result<(), EmailError> {
        if self.clock_now().since(Timestamp(refused.since)) > UNVERIFIED_LOGIN_LIFETIME {
            return Err(EmailError::InvalidToken);
        }
        let user = self.accounts().directory().user_by_id(refused.user_id).await?;
        let user = user.filter(|u| u.is_enabled()).ok_or(EmailError::InvalidToken)?;
        self.request_email(&user, input).await
    }

    /// Checks a user name and password without signing in (the API's way
    /// to ask for the verification mail again): throttled and recorded like
    /// a login, but it creates no session or token.
    pub async fn check_credentials(
        &self,
        channel: Channel,
        client: &Client,
        username: &str,
        password: &str,
    ) -> Result<User, LoginError> {
        let (reservation, user) = self.check_password(channel, client, username, password).await?;
        self.throttle().succeeded(reservation).await?;
        Ok(user)
    }

    fn email_on(&self) -> Result<&Email, EmailError> {
        self.email().ok_or(EmailError::Off)
    }

    /// Asks to make `input` the address of `user`: mails a link and a code
    /// to it. Counted per account; `Throttled` once too many were asked for.
    pub async fn request_email(&self, user: &User, input: &str) -> Result<(), EmailError> {
        let email = self.email_on()?;
        let address = EmailAddress::parse(input)?;
        let config = self.throttle().config();
        let keys = AttemptKeys {
            account: Some(ThrottleKey {
                key: format!("verify-mail:{}", user.id),
                free_failures: config.account_free_failures,
            }),
            ip: None,
        };
        let reservation = match self.throttle().reserve(&keys).await? {
            Ok(reservation) => reservation,
            Err(wait) => return Err(EmailError::Throttled(wait)),
        };
        // Every request stays counted: each one mails someone.
        let _ = self.throttle().failed(reservation).await?;
        email.outbox.enqueue(Mail::Verify { user_id: user.id, address: address.as_str().to_owned() }).await?;
        Ok(())
    }

    /// Follows a verification link: the address it was mailed to becomes
    /// its account's. Works once.
    pub async fn confirm_email_token(
        &self,
        channel: Channel,
        client: &Client,
        token: &str,
    ) -> Result<Confirmed, EmailError> {
        let email = self.email_on()?;
        let redeemed = email.tokens.redeem(token, Purpose::Verify).await?.ok_or(EmailError::InvalidToken)?;
        self.store_address(channel, client, redeemed.user_id, &redeemed.address).await
    }

    /// Checks the 6-digit code `user` typed, behind the login throttle.
    pub async fn confirm_email_code(
        &self,
        channel: Channel,
        client: &Client,
        user: &User,
        code: &str,
    ) -> Result<Confirmed, EmailError> {
        let email = self.email_on()?;
        let config = self.throttle().config();
        let keys = AttemptKeys {
            account: Some(ThrottleKey {
                key: format!("email-code:{}", user.id),
                free_failures: config.account_free_failures,
            }),
            ip: client.ip.map(|ip| ThrottleKey { key: ip_key(ip), free_failures: config.ip_free_failures }),
        };
        let reservation = match self.throttle().reserve(&keys).await? {
            Ok(reservation) => reservation,
            Err(wait) => {
                self.record(AuthEvent::Throttled { user_id: Some(user.id) }, channel, client).await;
                return Err(EmailError::Throttled(wait));
            }
        };
        let address = match email.tokens.redeem_code(user.id, Purpose::Verify, code).await {
            Ok(Some(address)) => address,
            Ok(None) => {
                return Err(match self.throttle().failed(reservation).await? {
                    Some(wait) => EmailError::Throttled(wait),
                    None => EmailError::InvalidCode,
                });
            }
            Err(error) => {
                let _ = self.throttle().release(reservation).await;
                return Err(error.into());
            }
        };
        self.throttle().succeeded(reservation).await?;
        self.store_address(channel, client, user.id, &address).await
    }

    async fn store_address(
        &self,
        channel: Channel,
        client: &Client,
        user_id: i64,
        address: &str,
    ) -> Result<Confirmed, EmailError> {
        let email = self.email_on()?;
        let user = self.accounts().directory().user_by_id(user_id).await?;
        if !user.is_some_and(|u| u.is_enabled()) {
            return Err(EmailError::InvalidToken);
        }
        let parsed = EmailAddress::parse(address)?;
        let previous = email.addresses.verified(user_id).await?;
        if email.addresses.set_verified(user_id, &parsed).await? == SetAddress::TakenByAnother {
            return Err(EmailError::Taken);
        }
        let changed = previous.as_deref().is_none_or(|p| !p.eq_ignore_ascii_case(address));
        if changed {
            self.record(AuthEvent::EmailChanged { user_id, previous: previous.clone() }, channel, client).await;
        }
        Ok(Confirmed { user_id, address: address.to_owned(), previous })
    }

    /// Turns an outbox entry into a message, issuing its secret now (so no
    /// secret waits in the outbox): `None` when there is nobody to send it
    /// to (a reset for an address no account has, an account since
    /// disabled or without a verified address).
    pub async fn prepare_mail(&self, mail: &Mail) -> Result<Option<Prepared>, EmailError> {
        let email = self.email_on()?;
        let directory = self.accounts().directory();
        Ok(match mail {
            Mail::Verify { user_id, address } => {
                if !directory.user_by_id(*user_id).await?.is_some_and(|u| u.is_enabled()) {
                    return Ok(None);
                }
                let issued =
                    email.tokens.issue(*user_id, Purpose::Verify, address, email.verify_lifetime, true).await?;
                Some(Prepared::Verify {
                    to: address.clone(),
                    token: issued.token,
                    code: issued.code.unwrap_or_default(),
                    lifetime: email.verify_lifetime,
                })
            }
            Mail::PasswordReset { address } => {
                let Ok(parsed) = EmailAddress::parse(address) else { return Ok(None) };
                let Some(user_id) = email.addresses.user_with(&parsed).await? else { return Ok(None) };
                let Some(user) = directory.user_by_id(user_id).await?.filter(|u| u.is_enabled()) else {
                    return Ok(None);
                };
                // To the address as verified, not as typed this time.
                let Some(to) = email.addresses.verified(user_id).await? else { return Ok(None) };
                let issued = email.tokens.issue(user_id, Purpose::Reset, &to, RESET_LIFETIME, false).await?;
                Some(Prepared::PasswordReset {
                    to,
                    username: user.username,
                    token: issued.token,
                    lifetime: RESET_LIFETIME,
                })
            }
            Mail::SignIn { address, attempt } => return self.prepare_sign_in(address, attempt).await,
            Mail::Notice { user_id, notice, at, device, ip, to } => {
                let Some(user) = directory.user_by_id(*user_id).await? else { return Ok(None) };
                let to = match to {
                    Some(to) => Some(to.clone()),
                    None => email.addresses.verified(*user_id).await?,
                };
                to.map(|to| Prepared::Notice {
                    to,
                    username: user.username,
                    notice: *notice,
                    at: *at,
                    device: device.clone(),
                    ip: ip.clone(),
                })
            }
        })
    }
}
