//! "Forgot your password?": a link mailed to the account's verified
//! address lets its holder choose a new password.
//!
//! - The request answers the same, in the same time, whether the address
//!   belongs to an account: it only enqueues an intent
//!   ([`crate::mail::Mail::PasswordReset`]); the outbox worker finds the
//!   account and issues the link when it sends.
//! - Requests are counted per address (and so per account: an address
//!   belongs to one) and per client address, through the login throttle.
//! - The link carries 256 random bits, is stored as its SHA-256, works for
//!   15 minutes and once; a newer link ends the older ones.
//! - A reset ends every session and API token of the user and tells them
//!   (the `PasswordChanged` event becomes a notice). It logs nobody in, so
//!   an account with a second factor still needs it at the next login.

use crate::accounts::RegisterError;
use crate::email_address::EmailAddress;
use crate::email_token::Purpose;
use crate::events::{AuthEvent, Channel, Client};
use crate::login::Authenticator;
use crate::mail::{EmailError, Mail};
use crate::revocation::Revoked;
use crate::throttle::{ip_key, AttemptKeys, ThrottleKey};

impl Authenticator {
    /// Asks for a reset link for `input`. `Ok` whether or not an account
    /// has that address; `Throttled` after too many requests for it or
    /// from this client.
    pub async fn request_password_reset(&self, client: &Client, input: &str) -> Result<(), EmailError> {
        let email = self.email().ok_or(EmailError::Off)?;
        let address = EmailAddress::parse(input)?;
        let config = self.throttle().config();
        let keys = AttemptKeys {
            account: Some(ThrottleKey {
                key: format!("reset:{}", address.key()),
                free_failures: config.account_free_failures,
            }),
            ip: client
                .ip
                .map(|ip| ThrottleKey { key: format!("reset-{}", ip_key(ip)), free_failures: config.ip_free_failures }),
        };
        let reservation = match self.throttle().reserve(&keys).await? {
            Ok(reservation) => reservation,
            Err(wait) => return Err(EmailError::Throttled(wait)),
        };
        // Every request stays counted, existing address or not.
        let _ = self.throttle().failed(reservation).await?;
        email.outbox.enqueue(Mail::PasswordReset { address: address.as_str().to_owned() }).await?;
        Ok(())
    }

    /// Whether `token` is a reset link that still works (to show its form).
    pub async fn reset_token_works(&self, token: &str) -> Result<bool, EmailError> {
        let email = self.email().ok_or(EmailError::Off)?;
        Ok(email.tokens.peek(token, Purpose::Reset).await?.is_some())
    }

    /// Sets a new password with a reset link: the policy checked before the
    /// link is used up (a refused password leaves it working), then every
    /// session and token of the user ends.
    pub async fn reset_password(
        &self,
        channel: Channel,
        client: &Client,
        token: &str,
        new_password: &str,
    ) -> Result<Revoked, EmailError> {
        let email = self.email().ok_or(EmailError::Off)?;
        let redeemable = email.tokens.peek(token, Purpose::Reset).await?.ok_or(EmailError::InvalidToken)?;
        let user = self.accounts().directory().user_by_id(redeemable.user_id).await?;
        let user = user.filter(|u| u.is_enabled()).ok_or(EmailError::InvalidToken)?;
        self.accounts()
            .policy()
            .check(new_password, &user.username)
            .map_err(|why| EmailError::InvalidPassword(why.to_string()))?;
        // The redeeming UPDATE decides between simultaneous uses.
        email.tokens.redeem(token, Purpose::Reset).await?.ok_or(EmailError::InvalidToken)?;
        match self.accounts().change_password(&user, new_password).await {
            Ok(()) => {}
            Err(RegisterError::InvalidPassword(why)) => return Err(EmailError::InvalidPassword(why)),
            Err(RegisterError::Unavailable(error)) => return Err(error.into()),
            Err(other) => return Err(EmailError::Unavailable(other.to_string())),
        }
        email.tokens.revoke_all(user.id, Purpose::Reset).await?;
        let revoked = self.revoke_everything(user.id, None).await?;
        self.record(AuthEvent::PasswordChanged { user_id: user.id }, channel, client).await;
        Ok(revoked)
    }
}
