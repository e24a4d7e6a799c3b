//! Who may create an account: `accounts.registration` is `open` (anyone),
//! `invite` (only with an invitation from `tessera admin invite create`) or
//! `closed` (nobody; administrators create accounts with
//! `tessera admin user create`).
//!
//! The check holds on every way an account is created: the web form
//! (`POST /register`), the API (`POST /api/signup`), a passkey-only
//! sign-up (web and API, [`Registration::register_with_passkey`]) and a
//! first OpenID Connect login ([`oidc_signup`]). Handlers call [`Registration::register`] instead of
//! `Authenticator::sign_up` / `register`.
//!
//! Invitations are 256-bit random tokens; only their SHA-256 is stored. One
//! conditional `UPDATE` claims an invitation before the account is created,
//! so however many requests present the same invitation at once, at most one
//! account is created; if creating the account then fails (name taken, weak
//! password), the claim is released and the invitation can be used again.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::StatusCode;
use rand::rngs::OsRng;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::Row;
use std::sync::Arc;

use tessera::{Clock, Timestamp};

use crate::database::{Database, DatabaseError};
use crate::oidc::OidcProviderConfig;
use tessera_auth::passkey::{NewCredential, SignUpCeremony};
use tessera_auth::{Authenticator, Channel, Client, PasskeySignUpError, RegisterError, User};

/// `accounts.registration`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RegistrationPolicy {
    /// Anyone may create an account.
    #[default]
    Open,
    /// Only with an unused, unexpired invitation.
    Invite,
    /// Nobody; only administrators create accounts.
    Closed,
}

/// Why an account may not be created.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// `accounts.registration = "closed"`.
    #[error("registration is closed")]
    Closed,
    /// `invite`, and no invitation came with the request.
    #[error("an invitation is required")]
    InvitationRequired,
    /// The invitation is unknown, used or expired (one answer for all).
    #[error("the invitation is not valid")]
    InvalidInvitation,
    /// The OpenID Connect provider may not create accounts, or not for this
    /// address.
    #[error("this provider cannot create accounts")]
    ProviderSignupRefused,
    /// The database failed.
    #[error(transparent)]
    Unavailable(#[from] DatabaseError),
}

impl Refusal {
    /// The HTTP status: 403, or 503 when the database failed.
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::FORBIDDEN,
        }
    }

    /// The stable problem kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::Closed => "registration-closed",
            Refusal::InvitationRequired => "invitation-required",
            Refusal::InvalidInvitation => "invalid-invitation",
            Refusal::ProviderSignupRefused => "signup-not-allowed",
            Refusal::Unavailable(_) => "service-unavailable",
        }
    }

    /// A sentence for the user.
    pub fn message(&self) -> &'static str {
        match self {
            Refusal::Closed => "This site does not accept new accounts. Ask an administrator for one.",
            Refusal::InvitationRequired => {
                "New accounts need an invitation. Open the invitation link you were given, or ask an administrator for one."
            }
            Refusal::InvalidInvitation => {
                "This invitation link is not valid: it was already used, has expired, or was mistyped. Ask for a new one."
            }
            Refusal::ProviderSignupRefused => {
                "There is no account for this sign-in, and this provider cannot create one. Ask an administrator."
            }
            Refusal::Unavailable(_) => "A service tessera depends on is not answering. Please try again in a moment.",
        }
    }
}

/// The condition of an invitation that can still create an account: the
/// token's hash (`$2`), unused, unexpired at `$1`. One condition for the
/// check before a sign-up begins and for the claim that creates it.
const USABLE_INVITATION: &str = "token_hash = $2 AND used_at IS NULL AND expires_at > $1";

/// The stored form of an invitation token: SHA-256, hex.
fn token_hash(token: &str) -> String {
    Sha256::digest(token.trim().as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// A new invitation, as `tessera admin invite create` reports it.
#[derive(Debug, Clone)]
pub struct NewInvitation {
    /// The secret token (shown once; only its hash is stored).
    pub token: String,
    /// When it stops working.
    pub expires_at: Timestamp,
}

impl Database {
    /// Creates an invitation valid until `expires_at`, giving `groups`
    /// (canonical names) to the account it creates.
    pub async fn create_invitation(
        &self,
        groups: &[String],
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<NewInvitation, DatabaseError> {
        let mut bytes = [0u8; 32];
        OsRng.fill_bytes(&mut bytes);
        let token = URL_SAFE_NO_PAD.encode(bytes);
        sqlx::query(
            "INSERT INTO invitations (token_hash, group_names, created_at, expires_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(token_hash(&token))
        .bind(groups.join(","))
        .bind(now.as_millis())
        .bind(expires_at.as_millis())
        .execute(&self.pool)
        .await?;
        Ok(NewInvitation { token, expires_at })
    }

    /// Whether the invitation is unused and unexpired now: what
    /// [`Database::claim_invitation`] would claim ([`USABLE_INVITATION`]),
    /// read without claiming it.
    async fn invitation_usable(&self, hash: &str, now: Timestamp) -> Result<bool, DatabaseError> {
        let sql = format!("SELECT 1 FROM invitations WHERE {USABLE_INVITATION}");
        let row = sqlx::query(&sql).bind(now.as_millis()).bind(hash).fetch_optional(&self.pool).await?;
        Ok(row.is_some())
    }

    /// Marks the invitation used, if it is unused and unexpired: one
    /// conditional `UPDATE`, so exactly one of many concurrent claims wins.
    /// Its groups, or `None`.
    async fn claim_invitation(&self, hash: &str, now: Timestamp) -> Result<Option<Vec<String>>, DatabaseError> {
        let sql = format!("UPDATE invitations SET used_at = $1 WHERE {USABLE_INVITATION} RETURNING group_names");
        let row = sqlx::query(&sql).bind(now.as_millis()).bind(hash).fetch_optional(&self.pool).await?;
        let Some(row) = row else { return Ok(None) };
        let groups: String = row.try_get(0)?;
        Ok(Some(groups.split(',').filter(|g| !g.is_empty()).map(str::to_owned).collect()))
    }

    /// Undoes a claim whose account could not be created.
    async fn release_invitation(&self, hash: &str) -> Result<(), DatabaseError> {
        sqlx::query("UPDATE invitations SET used_at = NULL WHERE token_hash = $1 AND used_by IS NULL")
            .bind(hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records which account a claimed invitation created.
    async fn complete_invitation(&self, hash: &str, user_id: i64) -> Result<(), DatabaseError> {
        sqlx::query("UPDATE invitations SET used_by = $1 WHERE token_hash = $2")
            .bind(user_id)
            .bind(hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Unused, unexpired invitations: `(expires_at, groups)`, soonest first.
    pub async fn open_invitations(&self, now: Timestamp) -> Result<Vec<(Timestamp, String)>, DatabaseError> {
        let rows = sqlx::query(
            "SELECT expires_at, group_names FROM invitations WHERE used_at IS NULL AND expires_at > $1 \
             ORDER BY expires_at",
        )
        .bind(now.as_millis())
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(|row| Ok((Timestamp(row.try_get(0)?), row.try_get(1)?))).collect()
    }
}

/// What the registration form says before anything is typed: why it will
/// be refused, if it will be without an invitation.
pub fn notice(policy: RegistrationPolicy, invite: &str) -> Option<&'static str> {
    match policy {
        RegistrationPolicy::Closed => Some(Refusal::Closed.message()),
        RegistrationPolicy::Invite if invite.trim().is_empty() => Some(Refusal::InvitationRequired.message()),
        _ => None,
    }
}

/// How long a sign-up refused by the per-address allowance waits before
/// its `429`. A refusal is cheap, so a client that sends the next sign-up
/// as soon as it has the answer (what a flooding script does) would
/// otherwise keep the CPU busy with refusals, and logins — whose hashes run
/// at the lowest priority — would get what is left (measured: 11× their
/// quiet latency, `docs/reliability.md`). Waiting costs the server a timer
/// and an idle connection, and bounds such a client to one refusal per
/// connection per delay.
pub const REFUSED_SIGN_UP_DELAY: std::time::Duration = std::time::Duration::from_secs(1);

/// Creating accounts under the registration policy: the policy, the core
/// that creates them, and the invitations in the database.
#[derive(Clone)]
pub struct Registration {
    policy: RegistrationPolicy,
    auth: Authenticator,
    db: Database,
    clock: Arc<dyn Clock>,
}

impl Registration {
    /// Registration under `policy`, creating accounts through `auth`.
    pub fn new(policy: RegistrationPolicy, auth: Authenticator, db: Database, clock: Arc<dyn Clock>) -> Self {
        Registration { policy, auth, db, clock }
    }

    /// The policy (`accounts.registration`).
    pub fn policy(&self) -> RegistrationPolicy {
        self.policy
    }

    /// Creates an account with `username` and `password` if the registration
    /// policy allows it: the outer `Err` is the policy's refusal, the inner
    /// result is the core's `Authenticator::sign_up` (which records the
    /// sign-up); the caller logs the account in (`Authenticator::after_sign_up`).
    ///
    /// `invite` is the token from the invitation link (empty counts as none).
    /// Under `open` an invitation is optional, but one that is given must be
    /// valid (its groups are then given to the account).
    ///
    /// A sign-up refused because its address used up its allowance is
    /// answered only after [`REFUSED_SIGN_UP_DELAY`].
    pub async fn register(
        &self,
        invite: Option<&str>,
        channel: Channel,
        client: &Client,
        username: &str,
        password: &str,
    ) -> Result<Result<User, RegisterError>, Refusal> {
        let result = self.register_now(invite, channel, client, username, password).await;
        if let Ok(Err(RegisterError::Throttled(wait))) = &result {
            tokio::time::sleep(REFUSED_SIGN_UP_DELAY.min(*wait)).await;
        }
        result
    }

    /// Creates an account with a passkey and no password
    /// (`Authenticator::sign_up_with_passkey`) under the same policy,
    /// invitations and sign-up allowance as [`Registration::register`].
    #[allow(clippy::too_many_arguments)]
    pub async fn register_with_passkey(
        &self,
        invite: Option<&str>,
        channel: Channel,
        client: &Client,
        ceremony: &SignUpCeremony,
        credential: &NewCredential,
        name: &str,
    ) -> Result<Result<User, PasskeySignUpError>, Refusal> {
        let create = || self.auth.sign_up_with_passkey(channel, client, ceremony, credential, name);
        let result = self.create(invite, create).await;
        if let Ok(Err(PasskeySignUpError::Register(RegisterError::Throttled(wait)))) = &result {
            tokio::time::sleep(REFUSED_SIGN_UP_DELAY.min(*wait)).await;
        }
        result
    }

    /// Whether the policy lets a sign-up with `invite` go ahead, checked
    /// before anything of it is counted or looked up: refused when
    /// registration is closed, when it needs an invitation and none came,
    /// and when an invitation came that is unknown, used or expired
    /// ([`Refusal::InvalidInvitation`], under `open` too). Every sign-up
    /// with a password or a passkey, on the forms and the API, starts here
    /// ([`Registration::register`], [`Registration::register_with_passkey`],
    /// and a passkey sign-up's begin), so a begin with a made-up invitation
    /// is refused like `POST /api/signup` with one, before the address's
    /// sign-up allowance is counted or the name looked up. The invitation is
    /// only read here; it is claimed when the account is created.
    pub async fn check(&self, invite: Option<&str>) -> Result<(), Refusal> {
        let invite = invite.map(str::trim).filter(|token| !token.is_empty());
        let invite = match (self.policy, invite) {
            (RegistrationPolicy::Closed, _) => return Err(Refusal::Closed),
            (RegistrationPolicy::Invite, None) => return Err(Refusal::InvitationRequired),
            (_, None) => return Ok(()),
            (_, Some(invite)) => invite,
        };
        if !self.db.invitation_usable(&token_hash(invite), self.clock.now()).await? {
            tracing::info!("registration refused: invalid, used or expired invitation");
            return Err(Refusal::InvalidInvitation);
        }
        Ok(())
    }

    async fn register_now(
        &self,
        invite: Option<&str>,
        channel: Channel,
        client: &Client,
        username: &str,
        password: &str,
    ) -> Result<Result<User, RegisterError>, Refusal> {
        self.create(invite, || self.auth.sign_up(channel, client, username, password)).await
    }

    /// Runs `create` if the policy allows it, claiming the invitation
    /// first (and releasing it if `create` fails).
    async fn create<E, F, Fut>(&self, invite: Option<&str>, create: F) -> Result<Result<User, E>, Refusal>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<User, E>>,
    {
        self.check(invite).await?;
        let Some(invite) = invite.map(str::trim).filter(|token| !token.is_empty()) else {
            return Ok(create().await);
        };
        let db = &self.db;
        let hash = token_hash(invite);
        let Some(groups) = db.claim_invitation(&hash, self.clock.now()).await? else {
            tracing::info!("registration refused: invalid, used or expired invitation");
            return Err(Refusal::InvalidInvitation);
        };
        match create().await {
            Ok(user) => {
                // The account exists now: a failure below is logged, not undone.
                if let Err(error) = db.complete_invitation(&hash, user.id).await {
                    tracing::warn!(%error, user_id = user.id, "recording the invitation's account failed");
                }
                for group in &groups {
                    if let Err(error) = db.add_to_group(user.id, group, self.clock.now()).await {
                        tracing::warn!(%error, user_id = user.id, group, "adding an invited user to a group failed");
                    }
                }
                tracing::info!(user_id = user.id, groups = groups.join(","), "account created with an invitation");
                Ok(Ok(user))
            }
            Err(error) => {
                if let Err(release) = db.release_invitation(&hash).await {
                    tracing::warn!(error = %release, "releasing an invitation after a failed registration failed");
                }
                Ok(Err(error))
            }
        }
    }
}

/// Whether a first login at `provider` may create an account for an
/// identity whose verified email address (if any) is `verified_email`.
///
/// Never under `closed`. Under `open`, unless the provider says
/// `allow_signup = false`; under `invite`, only if it says
/// `allow_signup = true` (an invitation cannot travel through a provider
/// login). When the provider lists `allowed_email_domains`, the identity
/// needs a verified address in one of them.
pub fn oidc_signup(
    policy: RegistrationPolicy,
    provider: &OidcProviderConfig,
    verified_email: Option<&str>,
) -> Result<(), Refusal> {
    let allowed = match policy {
        RegistrationPolicy::Closed => return Err(Refusal::Closed),
        RegistrationPolicy::Open => provider.allow_signup.unwrap_or(true),
        RegistrationPolicy::Invite => provider.allow_signup.unwrap_or(false),
    };
    if !allowed {
        return Err(Refusal::ProviderSignupRefused);
    }
    if provider.allowed_email_domains.is_empty() {
        return Ok(());
    }
    let domain = verified_email.and_then(|email| email.rsplit_once('@')).map(|(_, domain)| domain);
    match domain {
        Some(domain) if provider.allowed_email_domains.iter().any(|d| d.eq_ignore_ascii_case(domain)) => Ok(()),
        _ => Err(Refusal::ProviderSignupRefused),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(allow_signup: Option<bool>, domains: &[&str]) -> OidcProviderConfig {
        let mut config: OidcProviderConfig =
            serde_json::from_str(r#"{"id":"corp","issuer":"https://id.corp.example","client_id":"c"}"#).unwrap();
        config.allow_signup = allow_signup;
        config.allowed_email_domains = domains.iter().map(|d| d.to_string()).collect();
        config
    }

    #[test]
    fn oidc_signups_follow_the_policy_and_the_provider() {
        use RegistrationPolicy::*;
        let default = provider(None, &[]);
        assert!(oidc_signup(Open, &default, None).is_ok(), "today's behaviour");
        assert!(oidc_signup(Invite, &default, None).is_err(), "secure default under invite");
        assert!(oidc_signup(Closed, &provider(Some(true), &[]), None).is_err(), "closed is closed");
        assert!(oidc_signup(Open, &provider(Some(false), &[]), None).is_err());
        assert!(oidc_signup(Invite, &provider(Some(true), &[]), None).is_ok());
        let corp = provider(Some(true), &["corp.example"]);
        assert!(oidc_signup(Invite, &corp, Some("a@CORP.example")).is_ok());
        assert!(oidc_signup(Invite, &corp, Some("a@evil.example")).is_err());
        assert!(oidc_signup(Invite, &corp, Some("a@sub.corp.example")).is_err(), "exact domains, like hd");
        assert!(oidc_signup(Invite, &corp, None).is_err(), "no verified address, no account");
    }

    #[test]
    fn tokens_are_hashed() {
        let hash = token_hash("abc");
        assert_eq!(hash.len(), 64);
        assert_eq!(hash, token_hash(" abc\n"));
        assert_ne!(hash, token_hash("abd"));
    }
}
