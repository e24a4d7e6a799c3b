//! Passkeys: WebAuthn Level 3 credentials, as a way to sign in with no
//! password and no user name typed (discoverable credentials, user
//! verification required).
//!
//! Every ceremony — parsing the authenticator's CBOR, checking the origin,
//! the relying-party ID hash, the challenge, the user-verification flag, the
//! signature and the signature counter — is `webauthn-rs`'s; this module
//! owns the tables, the ceremony state the host keeps between "begin" and
//! "finish", and the mapping of every refusal to a precise reason.
//!
//! ```text
//!   begin ──► options (challenge) ──► browser / authenticator ──► finish
//!     │                                                             │
//!     └── ceremony state, kept by the host in the session ──────────┘
//! ```
//!
//! The state is single-use: the host takes it out of the session before it
//! calls finish, so an assertion replayed on the same session finds no
//! challenge, and one replayed on another session finds another challenge.
//! The login itself is an [`Authenticator`] method
//! ([`Authenticator::passkey`]): throttled, audited and counted like every
//! other way in.

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use tessera::{Clock, Timestamp};
use webauthn_rs::prelude::{
    CreationChallengeResponse, Credential, DiscoverableAuthentication, DiscoverableKey, Passkey, PasskeyRegistration,
    PublicKeyCredential, RegisterPublicKeyCredential, RequestChallengeResponse, Url, Uuid, Webauthn, WebauthnBuilder,
    WebauthnError,
};

use crate::database::{DatabaseError, TimedPool};

use crate::accounts::{AccountsUnavailable, RegisterError};
use crate::directory::CreateUserError;
use crate::directory::User;
use crate::events::{AuthEvent, Channel, Client};
use crate::login::{Authenticator, FirstFactor, LoggedIn, LoginError, LoginStep, PendingLogin, SecondFactorKind};
use crate::password_policy::check_username;
/// The WebAuthn JSON types a host exchanges with browsers and apps (the
/// options it sends, the credentials it receives), from webauthn-rs.
pub use webauthn_rs::prelude::{
    CreationChallengeResponse as CreationOptions, PublicKeyCredential as Assertion,
    RegisterPublicKeyCredential as NewCredential, RequestChallengeResponse as RequestOptions,
};

/// How long a ceremony's challenge stays valid: WebAuthn's recommended
/// authenticator time-out, which is also what the options tell the browser.
pub const CEREMONY_LIFETIME: Duration = webauthn_rs::DEFAULT_AUTHENTICATOR_TIMEOUT;

/// The longest passkey name kept, in characters.
pub const MAX_NAME_CHARS: usize = 64;

/// Why the relying party cannot be set up from the public URL.
#[derive(Debug, thiserror::Error)]
pub enum RelyingPartyError {
    /// The URL does not parse.
    #[error("server.public_url {0:?} is not a URL")]
    InvalidUrl(String),
    /// Browsers offer WebAuthn only in secure contexts: `https://`, or
    /// `http://localhost` during development.
    #[error(
        "server.public_url {0:?}: passkeys need https:// (browsers allow WebAuthn only in secure contexts; \
         plain http works only for localhost during development)"
    )]
    NotSecure(String),
    /// A relying-party ID is a domain name, never an IP address.
    #[error(
        "server.public_url {0:?}: passkeys need a domain name (a WebAuthn relying-party ID cannot be an IP \
         address); use a name such as auth.example.com, or localhost during development"
    )]
    NotADomain(String),
    /// webauthn-rs refused the configuration.
    #[error("server.public_url {url:?}: WebAuthn cannot use it: {reason}")]
    Refused {
        /// The URL.
        url: String,
        /// What webauthn-rs said.
        reason: String,
    },
}

/// The relying party: its ID (the public URL's host) and the origins
/// assertions may come from.
#[derive(Clone)]
pub struct RelyingParty {
    webauthn: Arc<Webauthn>,
    id: String,
}

impl std::fmt::Debug for RelyingParty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelyingParty").field("id", &self.id).finish()
    }
}

impl RelyingParty {
    /// The relying party of a server reached at `public_url`. Without one
    /// (development), `localhost` on any port over plain HTTP.
    pub fn new(public_url: Option<&str>) -> Result<RelyingParty, RelyingPartyError> {
        let text = public_url.unwrap_or("http://localhost");
        let url = Url::parse(text).map_err(|_| RelyingPartyError::InvalidUrl(text.to_owned()))?;
        let host = url.host_str().unwrap_or_default().to_owned();
        let localhost = host == "localhost";
        if url.scheme() != "https" && !(url.scheme() == "http" && localhost) {
            return Err(RelyingPartyError::NotSecure(text.to_owned()));
        }
        if url.domain().is_none() {
            return Err(RelyingPartyError::NotADomain(text.to_owned()));
        }
        let origin = Url::parse(&url.origin().ascii_serialization())
            .map_err(|_| RelyingPartyError::InvalidUrl(text.to_owned()))?;
        let refused =
            |error: WebauthnError| RelyingPartyError::Refused { url: text.to_owned(), reason: error.to_string() };
        let webauthn = WebauthnBuilder::new(&host, &origin)
            .map_err(refused)?
            .rp_name("tessera")
            // A development server on localhost runs on whatever port it got.
            .allow_any_port(public_url.is_none())
            .build()
            .map_err(refused)?;
        Ok(RelyingParty { webauthn: Arc::new(webauthn), id: host })
    }

    /// The relying-party ID (a domain name).
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// A passkey as the account pages list it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasskeyInfo {
    /// The credential ID, base64url without padding.
    pub id: String,
    /// The name the user gave it.
    pub name: String,
    /// When it was added.
    pub created_at: Timestamp,
    /// When it last signed in (or confirmed an action).
    pub last_used_at: Option<Timestamp>,
    /// Whether the authenticator says it is backed up (synced to other
    /// devices, e.g. by a password manager): WebAuthn's backup state flag.
    pub synced: bool,
}

/// The state of a registration between begin and finish, kept by the host
/// (in the session) and used once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegistrationCeremony {
    user_id: i64,
    since: i64,
    state: PasskeyRegistration,
}

/// The state of a sign-in between begin and finish, kept by the host (in
/// the session) and used once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuthenticationCeremony {
    since: i64,
    state: DiscoverableAuthentication,
}

/// The state of a passkey-only sign-up between begin and finish: the
/// name asked for, the account's future user handle, and the challenge.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignUpCeremony {
    username: String,
    handle: Uuid,
    since: i64,
    state: PasskeyRegistration,
}

impl SignUpCeremony {
    /// The user name the sign-up asked for.
    pub fn username(&self) -> &str {
        &self.username
    }
}

/// What [`Passkeys::remove_unless_last`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// The passkey is gone.
    Removed,
    /// The account has no passkey with that ID (another account's is no
    /// different from none).
    NoSuchPasskey,
    /// It is the account's last way to sign in: kept.
    LastWayIn,
}

/// Why a passkey ceremony was refused: precise for the log and the
/// client, and never a server error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasskeyRefusal {
    /// No ceremony was begun on this session, it was used already, or it
    /// is older than [`CEREMONY_LIFETIME`].
    #[error("no current passkey challenge: start again")]
    Expired,
    /// The credential is not registered here (removed, or never was). The
    /// host may tell the browser (`signalUnknownCredential`).
    #[error("this passkey is not registered here")]
    UnknownCredential {
        /// The credential ID, base64url.
        credential_id: String,
    },
    /// The credential belongs to another account than the one it claims
    /// (its user handle does not match), or a registration's ceremony was
    /// begun by another user.
    #[error("this passkey does not belong to that account")]
    WrongUser,
    /// The authenticator's signature counter did not go up: a sign of a
    /// cloned authenticator. Refused, and audited.
    #[error("this passkey's signature counter went backwards; it may have been cloned")]
    Cloned {
        /// The account the credential belongs to.
        user_id: i64,
    },
    /// The ceremony failed: wrong origin or relying-party ID, another
    /// challenge, no user verification, a bad signature, malformed data.
    #[error("the passkey response was refused: {0}")]
    Invalid(String),
    /// The authenticator is registered already (to this or another account).
    #[error("this passkey is registered already")]
    AlreadyRegistered,
    /// The name is empty, too long or has control characters.
    #[error("a passkey name is 1 to 64 characters, with no control characters")]
    InvalidName,
}

impl PasskeyRefusal {
    /// A stable lower-case name, for problem types and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            PasskeyRefusal::Expired => "passkey-challenge-expired",
            PasskeyRefusal::UnknownCredential { .. } => "passkey-unknown",
            PasskeyRefusal::WrongUser => "passkey-wrong-user",
            PasskeyRefusal::Cloned { .. } => "passkey-cloned",
            PasskeyRefusal::Invalid(_) => "passkey-invalid",
            PasskeyRefusal::AlreadyRegistered => "passkey-registered-already",
            PasskeyRefusal::InvalidName => "passkey-invalid-name",
        }
    }
}

/// Why a passkey operation did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum PasskeyError {
    /// The ceremony or the input was refused.
    #[error(transparent)]
    Refused(#[from] PasskeyRefusal),
    /// The database is down.
    #[error(transparent)]
    Unavailable(#[from] DatabaseError),
}

/// Why a passkey ceremony stored in the database did not begin.
#[derive(Debug, thiserror::Error)]
pub enum BeginError {
    /// The client's address began too many ceremonies lately
    /// ([`crate::ThrottleConfig::passkey_ceremonies_per_address`]): retry
    /// after the duration. Nothing was stored.
    #[error("too many passkey ceremonies from this address")]
    Throttled(Duration),
    /// The ceremony could not begin, or the database is down.
    #[error(transparent)]
    Passkey(#[from] PasskeyError),
}

impl From<DatabaseError> for BeginError {
    fn from(error: DatabaseError) -> Self {
        BeginError::Passkey(PasskeyError::Unavailable(error))
    }
}

/// Why a passkey-only sign-up did not create an account.
#[derive(Debug, thiserror::Error)]
pub enum PasskeySignUpError {
    /// The account was refused: a bad or taken name, the sign-up
    /// allowance of the address used up, or a dependency down.
    #[error(transparent)]
    Register(#[from] RegisterError),
    /// The new credential was refused.
    #[error(transparent)]
    Passkey(#[from] PasskeyRefusal),
}

impl From<DatabaseError> for PasskeySignUpError {
    fn from(error: DatabaseError) -> Self {
        PasskeySignUpError::Register(RegisterError::Unavailable(AccountsUnavailable::from(error)))
    }
}

impl From<PasskeyError> for PasskeySignUpError {
    fn from(error: PasskeyError) -> Self {
        match error {
            PasskeyError::Refused(refusal) => refusal.into(),
            PasskeyError::Unavailable(error) => error.into(),
        }
    }
}

impl From<sqlx::Error> for PasskeyError {
    fn from(error: sqlx::Error) -> Self {
        PasskeyError::Unavailable(error.into())
    }
}

/// The passkey tables and the relying party.
#[derive(Clone)]
pub struct Passkeys {
    db: TimedPool,
    clock: Arc<dyn Clock>,
    rp: RelyingParty,
}

impl Passkeys {
    /// Passkeys in `db`, for relying party `rp`.
    pub fn new(db: TimedPool, clock: Arc<dyn Clock>, rp: RelyingParty) -> Self {
        Passkeys { db, clock, rp }
    }

    /// The relying party.
    pub fn relying_party(&self) -> &RelyingParty {
        &self.rp
    }

    /// `user_id`'s passkeys, oldest first.
    pub async fn list(&self, user_id: i64) -> Result<Vec<PasskeyInfo>, DatabaseError> {
        let rows = sqlx::query(
            "SELECT credential_id, name, created_at, last_used_at, backup_state FROM passkeys \
             WHERE user_id = $1 ORDER BY created_at, credential_id",
        )
        .bind(user_id)
        .fetch_all(&self.db)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(PasskeyInfo {
                    id: row.try_get("credential_id")?,
                    name: row.try_get("name")?,
                    created_at: Timestamp(row.try_get("created_at")?),
                    last_used_at: row.try_get::<Option<i64>, _>("last_used_at")?.map(Timestamp),
                    synced: row.try_get::<i64, _>("backup_state")? != 0,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    /// How many passkeys `user_id` has.
    pub async fn count(&self, user_id: i64) -> Result<i64, DatabaseError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM passkeys WHERE user_id = $1")
            .bind(user_id)
            .fetch_one(&self.db)
            .await?;
        Ok(row.try_get::<i64, _>("n")?)
    }

    /// Renames `user_id`'s passkey `id`; `false` if the user has no such
    /// passkey (another user's is no different from none).
    pub async fn rename(&self, user_id: i64, id: &str, name: &str) -> Result<bool, PasskeyError> {
        let name = checked_name(name)?;
        let renamed = sqlx::query("UPDATE passkeys SET name = $1 WHERE credential_id = $2 AND user_id = $3")
            .bind(name)
            .bind(id)
            .bind(user_id)
            .execute(&self.db)
            .await?
            .rows_affected();
        Ok(renamed == 1)
    }

    /// Removes `user_id`'s passkey `id`; `false` if the user has no such
    /// passkey. Callers check first that it is not the last way in.
    pub async fn remove(&self, user_id: i64, id: &str) -> Result<bool, DatabaseError> {
        let removed = sqlx::query("DELETE FROM passkeys WHERE credential_id = $1 AND user_id = $2")
            .bind(id)
            .bind(user_id)
            .execute(&self.db)
            .await?
            .rows_affected();
        Ok(removed == 1)
    }

    /// The account's WebAuthn user handle (base64url), if it has one: what
    /// the Signal API names the account by.
    pub async fn user_handle(&self, user_id: i64) -> Result<Option<String>, DatabaseError> {
        let row = sqlx::query("SELECT handle FROM passkey_user_handles WHERE user_id = $1")
            .bind(user_id)
            .fetch_optional(&self.db)
            .await?;
        let handle = row.map(|row| row.try_get::<String, _>("handle")).transpose()?;
        Ok(handle.and_then(|h| Uuid::parse_str(&h).ok()).map(|u| URL_SAFE_NO_PAD.encode(u.as_bytes())))
    }

    /// Starts adding a passkey to `user`: the options for
    /// `navigator.credentials.create()`, and the state to keep. The
    /// credential must be discoverable (so it can sign in with no user
    /// name) and verify the user; the user's passkeys are excluded, so an
    /// authenticator is not registered twice.
    pub async fn begin_registration(
        &self,
        user: &User,
    ) -> Result<(CreationChallengeResponse, RegistrationCeremony), PasskeyError> {
        let handle = self.handle_for(user.id).await?;
        let existing = self.credentials_of(user.id).await?;
        let exclude: Vec<_> = existing.iter().map(|p| p.cred_id().clone()).collect();
        let (mut options, state) = self
            .rp
            .webauthn
            .start_passkey_registration(handle, &user.username, &user.username, Some(exclude))
            .map_err(|e| PasskeyRefusal::Invalid(e.to_string()))?;
        // webauthn-rs leaves discoverability to the authenticator; a passkey
        // that signs in without a user name must be a resident credential.
        if let Some(selection) = options.public_key.authenticator_selection.as_mut() {
            selection.require_resident_key = true;
            selection.resident_key = Some(webauthn_rs_proto::ResidentKeyRequirement::Required);
        }
        let ceremony = RegistrationCeremony { user_id: user.id, since: self.clock.now().as_millis(), state };
        Ok((options, ceremony))
    }

    /// Finishes adding a passkey named `name` to `user` with the browser's
    /// answer to the options of [`Passkeys::begin_registration`].
    pub async fn finish_registration(
        &self,
        user: &User,
        ceremony: &RegistrationCeremony,
        credential: &RegisterPublicKeyCredential,
        name: &str,
    ) -> Result<PasskeyInfo, PasskeyError> {
        let name = checked_name(name)?;
        if ceremony.user_id != user.id {
            return Err(PasskeyRefusal::WrongUser.into());
        }
        let passkey = self.verify_registration(ceremony.since, &ceremony.state, credential)?;
        self.store(user.id, &passkey, name).await
    }

    /// Checks a new credential against a registration's state (its age,
    /// origin, challenge, user verification, encoding): the passkey to store.
    fn verify_registration(
        &self,
        since: i64,
        state: &PasskeyRegistration,
        credential: &RegisterPublicKeyCredential,
    ) -> Result<Passkey, PasskeyRefusal> {
        if self.clock.now().since(Timestamp(since)) > CEREMONY_LIFETIME {
            return Err(PasskeyRefusal::Expired);
        }
        self.rp
            .webauthn
            .finish_passkey_registration(credential, state)
            .map_err(|e| PasskeyRefusal::Invalid(refusal_reason(&e)))
    }

    /// Stores a verified `passkey` of `user_id` named `name`.
    async fn store(&self, user_id: i64, passkey: &Passkey, name: String) -> Result<PasskeyInfo, PasskeyError> {
        let now = self.clock.now();
        let id = URL_SAFE_NO_PAD.encode(passkey.cred_id().as_slice());
        let details: Credential = passkey.clone().into();
        let serialised = serde_json::to_string(passkey).map_err(|e| PasskeyRefusal::Invalid(e.to_string()))?;
        let inserted = sqlx::query(
            "INSERT INTO passkeys (credential_id, user_id, name, credential, counter, backup_eligible, backup_state, \
             created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (credential_id) DO NOTHING",
        )
        .bind(&id)
        .bind(user_id)
        .bind(&name)
        .bind(serialised)
        .bind(i64::from(details.counter))
        .bind(i64::from(details.backup_eligible))
        .bind(i64::from(details.backup_state))
        .bind(now.as_millis())
        .execute(&self.db)
        .await?
        .rows_affected();
        if inserted != 1 {
            // WebAuthn §7.1 step 26: a credential ID registered to anyone
            // already is refused.
            return Err(PasskeyRefusal::AlreadyRegistered.into());
        }
        Ok(PasskeyInfo { id, name, created_at: now, last_used_at: None, synced: details.backup_state })
    }

    /// Stores the first passkey of the account `user_id` just created by a
    /// passkey-only sign-up, with the user handle the sign-up gave it.
    async fn store_first(
        &self,
        user_id: i64,
        ceremony: &SignUpCeremony,
        passkey: &Passkey,
        name: String,
    ) -> Result<PasskeyInfo, PasskeyError> {
        sqlx::query("INSERT INTO passkey_user_handles (user_id, handle) VALUES ($1, $2)")
            .bind(user_id)
            .bind(ceremony.handle.to_string())
            .execute(&self.db)
            .await?;
        self.store(user_id, passkey, name).await
    }

    /// Deletes the account `user_id` a passkey-only sign-up created when
    /// its passkey could not be stored after all (registered meanwhile by a
    /// racing request): an account with no way in must not stay.
    async fn undo_sign_up(&self, user_id: i64) -> Result<(), DatabaseError> {
        sqlx::query("DELETE FROM users WHERE id = $1 AND password_hash IS NULL")
            .bind(user_id)
            .execute(&self.db)
            .await?;
        Ok(())
    }

    /// Whether a credential with this ID is registered (to anyone).
    async fn is_registered(&self, passkey: &Passkey) -> Result<bool, DatabaseError> {
        let id = URL_SAFE_NO_PAD.encode(passkey.cred_id().as_slice());
        let row = sqlx::query("SELECT COUNT(*) AS n FROM passkeys WHERE credential_id = $1")
            .bind(id)
            .fetch_one(&self.db)
            .await?;
        Ok(row.try_get::<i64, _>("n")? > 0)
    }

    /// Starts a passkey-only sign-up for a new account named `username`
    /// (checked by the caller): the options for `navigator.credentials.create()`
    /// with a fresh random user handle, and the state to keep. Nothing is
    /// stored; the account is created only by a valid credential
    /// ([`Authenticator::sign_up_with_passkey`]). Crate-private, as is
    /// keeping the state: a sign-up begins only through
    /// [`Authenticator::begin_passkey_sign_up`], which counts it on the
    /// address's sign-up allowance (finishing does not count again).
    pub(crate) fn begin_sign_up(
        &self,
        username: &str,
    ) -> Result<(CreationChallengeResponse, SignUpCeremony), PasskeyError> {
        let handle = Uuid::new_v4();
        let (mut options, state) = self
            .rp
            .webauthn
            .start_passkey_registration(handle, username, username, None)
            .map_err(|e| PasskeyRefusal::Invalid(e.to_string()))?;
        if let Some(selection) = options.public_key.authenticator_selection.as_mut() {
            selection.require_resident_key = true;
            selection.resident_key = Some(webauthn_rs_proto::ResidentKeyRequirement::Required);
        }
        let since = self.clock.now().as_millis();
        Ok((options, SignUpCeremony { username: username.to_owned(), handle, since, state }))
    }

    /// Keeps a sign-up ceremony (the visitor has no account, and the web
    /// page no session to keep it in); answers its ID. `binding` names the
    /// browser that began it (`None` for an API client): see
    /// [`Passkeys::keep_authentication`].
    pub(crate) async fn keep_sign_up(
        &self,
        ceremony: &SignUpCeremony,
        binding: Option<&str>,
    ) -> Result<String, DatabaseError> {
        self.keep("signup", None, serde_json::to_string(ceremony), binding).await
    }

    /// Takes (and so ends) the sign-up ceremony `id` begun with `binding`;
    /// `None` if there is none, it was taken already, it expired, or it
    /// was begun with another binding (then it is left for its own browser).
    pub async fn take_sign_up(&self, id: &str, binding: Option<&str>) -> Result<Option<SignUpCeremony>, DatabaseError> {
        let Some((state, _)) = self.take("signup", id, binding).await? else { return Ok(None) };
        Ok(serde_json::from_str(&state).ok())
    }

    /// Removes `user_id`'s passkey `id` unless it is the account's last way
    /// to sign in. The other ways are counted inside the transaction: a
    /// password, and `other_ways_in`, a query of the host's own tables (for
    /// instance linked identities) that takes the user ID as `$1` and answers
    /// one count. The transaction first locks the account's passkey row
    /// (`passkey_user_handles`), so concurrent removals of the last two
    /// passkeys run one after the other and one of them is refused; a host
    /// that removes its other ways in under the same lock is serialised with
    /// them too.
    pub async fn remove_unless_last(
        &self,
        user_id: i64,
        id: &str,
        other_ways_in: Option<&'static str>,
    ) -> Result<Removal, DatabaseError> {
        let mut tx = self.db.begin().await?;
        // A write that changes nothing: PostgreSQL locks the row until the
        // end of the transaction; SQLite takes the database's write lock.
        sqlx::query("UPDATE passkey_user_handles SET handle = handle WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, COALESCE(SUM(CASE WHEN credential_id = $2 THEN 1 ELSE 0 END), 0) AS mine \
             FROM passkeys WHERE user_id = $1",
        )
        .bind(user_id)
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        let count: i64 = row.try_get("n")?;
        let mine: i64 = row.try_get("mine")?;
        if mine == 0 {
            tx.rollback().await?;
            return Ok(Removal::NoSuchPasskey);
        }
        let password = sqlx::query("SELECT password_hash FROM users WHERE id = $1")
            .bind(user_id)
            .fetch_optional(&mut *tx)
            .await?
            .map(|row| row.try_get::<Option<String>, _>("password_hash"))
            .transpose()?
            .flatten()
            .is_some();
        let others = match other_ways_in {
            Some(query) => sqlx::query(query).bind(user_id).fetch_one(&mut *tx).await?.try_get::<i64, _>(0)?,
            None => 0,
        };
        if !password && others == 0 && count <= 1 {
            tx.rollback().await?;
            return Ok(Removal::LastWayIn);
        }
        sqlx::query("DELETE FROM passkeys WHERE credential_id = $1 AND user_id = $2")
            .bind(id)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Removal::Removed)
    }

    /// Starts an assertion that must come from a passkey of `user_id` (a
    /// second factor after the password, or a step-up): the options list
    /// the account's credentials, so the browser offers only those.
    pub async fn begin_authentication_for(
        &self,
        user_id: i64,
    ) -> Result<(RequestChallengeResponse, AuthenticationCeremony), PasskeyError> {
        let credentials = self.credentials_of(user_id).await?;
        let (mut options, ceremony) = self.begin_authentication()?;
        options.public_key.allow_credentials = credentials
            .iter()
            .map(|p| webauthn_rs_proto::AllowCredentials {
                type_: "public-key".into(),
                id: p.cred_id().clone().into(),
                transports: None,
            })
            .collect();
        options.mediation = None;
        Ok((options, ceremony))
    }

    /// Starts a sign-in with a discoverable credential: the options for
    /// `navigator.credentials.get()` (with an empty allow list: the
    /// authenticator offers whatever passkeys it holds for this site), and
    /// the state to keep.
    pub fn begin_authentication(&self) -> Result<(RequestChallengeResponse, AuthenticationCeremony), PasskeyError> {
        let (options, state) =
            self.rp.webauthn.start_discoverable_authentication().map_err(|e| PasskeyRefusal::Invalid(e.to_string()))?;
        Ok((options, AuthenticationCeremony { since: self.clock.now().as_millis(), state }))
    }

    /// Checks the browser's assertion against the ceremony and the stored
    /// credential, and records its use; returns the account it signs in.
    /// The counter is moved forward by one conditional update, so two
    /// requests with the same assertion cannot both pass.
    pub async fn verify_authentication(
        &self,
        ceremony: AuthenticationCeremony,
        credential: &PublicKeyCredential,
    ) -> Result<i64, PasskeyError> {
        self.verify_assertion(ceremony, credential, None).await
    }

    /// Like [`Passkeys::verify_authentication`], for an assertion that must
    /// come from a passkey of `user_id` (a second factor, a step-up): a
    /// credential of another account is refused as
    /// [`PasskeyRefusal::WrongUser`] before anything of it is checked or
    /// changed.
    pub async fn verify_authentication_of(
        &self,
        user_id: i64,
        ceremony: AuthenticationCeremony,
        credential: &PublicKeyCredential,
    ) -> Result<(), PasskeyError> {
        self.verify_assertion(ceremony, credential, Some(user_id)).await.map(|_| ())
    }

    async fn verify_assertion(
        &self,
        ceremony: AuthenticationCeremony,
        credential: &PublicKeyCredential,
        expected_user: Option<i64>,
    ) -> Result<i64, PasskeyError> {
        let now = self.clock.now();
        if now.since(Timestamp(ceremony.since)) > CEREMONY_LIFETIME {
            return Err(PasskeyRefusal::Expired.into());
        }
        let (handle, raw_id) = self
            .rp
            .webauthn
            .identify_discoverable_authentication(credential)
            .map_err(|e| PasskeyRefusal::Invalid(refusal_reason(&e)))?;
        let id = URL_SAFE_NO_PAD.encode(raw_id);
        let row = sqlx::query(
            "SELECT p.user_id, p.credential, h.handle FROM passkeys p \
             JOIN passkey_user_handles h ON h.user_id = p.user_id WHERE p.credential_id = $1",
        )
        .bind(&id)
        .fetch_optional(&self.db)
        .await?;
        let Some(row) = row else { return Err(PasskeyRefusal::UnknownCredential { credential_id: id }.into()) };
        let user_id: i64 = row.try_get("user_id")?;
        let stored_handle: String = row.try_get("handle")?;
        if Uuid::parse_str(&stored_handle).ok() != Some(handle) || expected_user.is_some_and(|u| u != user_id) {
            return Err(PasskeyRefusal::WrongUser.into());
        }
        let mut passkey: Passkey = serde_json::from_str(&row.try_get::<String, _>("credential")?)
            .map_err(|e| DatabaseError::Unavailable(format!("stored passkey unreadable: {e}")))?;
        let result = self
            .rp
            .webauthn
            .finish_discoverable_authentication(credential, ceremony.state, &[DiscoverableKey::from(&passkey)])
            .map_err(|error| match error {
                WebauthnError::CredentialPossibleCompromise => PasskeyRefusal::Cloned { user_id },
                other => PasskeyRefusal::Invalid(refusal_reason(&other)),
            })?;
        passkey.update_credential(&result);
        let counter = i64::from(result.counter());
        let serialised = serde_json::to_string(&passkey).map_err(|e| PasskeyRefusal::Invalid(e.to_string()))?;
        // A counter of 0 means the authenticator keeps none (synced passkeys
        // usually do not); otherwise it must have gone up since the last use,
        // checked again here so that a racing request cannot pass with the
        // same value.
        let accepted = sqlx::query(
            "UPDATE passkeys SET credential = $1, counter = $2, backup_eligible = $3, backup_state = $4, \
             last_used_at = $5 WHERE credential_id = $6 AND ($2 = 0 OR counter < $2)",
        )
        .bind(serialised)
        .bind(counter)
        .bind(i64::from(result.backup_eligible()))
        .bind(i64::from(result.backup_state()))
        .bind(now.as_millis())
        .bind(&id)
        .execute(&self.db)
        .await?
        .rows_affected();
        if accepted != 1 {
            return Err(PasskeyRefusal::Cloned { user_id }.into());
        }
        Ok(user_id)
    }

    /// Keeps a sign-in ceremony for a client that has no session (an API
    /// client, or a visitor of the login page): answers the ceremony ID the
    /// client sends back with its assertion. A web ceremony is kept with
    /// `binding`, a digest naming the browser that began it (the host's
    /// choice; the tessera server's is `tessera_axum::BrowserBinding`): only
    /// that binding takes it back, and it replaces the browser's pending
    /// ceremony of the same kind rather than adding a row. `None` for API
    /// clients, whose ceremonies only the API takes back.
    pub async fn keep_authentication(
        &self,
        ceremony: &AuthenticationCeremony,
        binding: Option<&str>,
    ) -> Result<String, DatabaseError> {
        self.keep("authentication", None, serde_json::to_string(ceremony), binding).await
    }

    /// Takes (and so ends) the sign-in ceremony `id` begun with `binding`;
    /// `None` if there is none, it was taken already, it expired, or it was
    /// begun with another binding (then it is left for its own browser).
    pub async fn take_authentication(
        &self,
        id: &str,
        binding: Option<&str>,
    ) -> Result<Option<AuthenticationCeremony>, DatabaseError> {
        let Some((state, _)) = self.take("authentication", id, binding).await? else { return Ok(None) };
        Ok(serde_json::from_str(&state).ok())
    }

    /// Keeps a registration ceremony for an API client; answers its ID.
    pub async fn keep_registration(&self, ceremony: &RegistrationCeremony) -> Result<String, DatabaseError> {
        self.keep("registration", Some(ceremony.user_id), serde_json::to_string(ceremony), None).await
    }

    /// Takes the registration ceremony `id` of `user_id`: another user's
    /// ceremony ID finds nothing (and is used up all the same).
    pub async fn take_registration(
        &self,
        id: &str,
        user_id: i64,
    ) -> Result<Option<RegistrationCeremony>, DatabaseError> {
        let Some((state, owner)) = self.take("registration", id, None).await? else { return Ok(None) };
        if owner != Some(user_id) {
            return Ok(None);
        }
        Ok(serde_json::from_str(&state).ok())
    }

    /// Stores a ceremony of `kind` under a fresh random ID (its hash only)
    /// and `binding` (`''` for none); a bound ceremony replaces the pending
    /// one of its kind with the same binding. The replacement is one
    /// statement, an upsert on the unique index of `(kind, binding)` for
    /// bound rows, so a browser has at most one pending ceremony of a kind
    /// however many of its begins run at once, on any number of instances.
    async fn keep(
        &self,
        kind: &str,
        user_id: Option<i64>,
        state: serde_json::Result<String>,
        binding: Option<&str>,
    ) -> Result<String, DatabaseError> {
        use rand::RngCore;
        let state = state.map_err(|e| DatabaseError::Unavailable(format!("ceremony state: {e}")))?;
        let now = self.clock.now().as_millis();
        let lifetime = i64::try_from(CEREMONY_LIFETIME.as_millis()).unwrap_or(i64::MAX);
        sqlx::query("DELETE FROM passkey_ceremonies WHERE created_at < $1")
            .bind(now.saturating_sub(lifetime))
            .execute(&self.db)
            .await?;
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let id = URL_SAFE_NO_PAD.encode(bytes);
        sqlx::query(
            "INSERT INTO passkey_ceremonies (id_hash, kind, user_id, state, created_at, binding) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (kind, binding) WHERE binding <> '' DO UPDATE SET id_hash = excluded.id_hash, \
             user_id = excluded.user_id, state = excluded.state, created_at = excluded.created_at",
        )
        .bind(ceremony_hash(&id))
        .bind(kind)
        .bind(user_id)
        .bind(state)
        .bind(now)
        .bind(binding.unwrap_or_default())
        .execute(&self.db)
        .await?;
        Ok(id)
    }

    /// Takes the ceremony `id` of `kind` if it was kept with `binding`.
    async fn take(
        &self,
        kind: &str,
        id: &str,
        binding: Option<&str>,
    ) -> Result<Option<(String, Option<i64>)>, DatabaseError> {
        let row = sqlx::query(
            "DELETE FROM passkey_ceremonies WHERE id_hash = $1 AND kind = $2 AND binding = $3 \
             RETURNING state, user_id, created_at",
        )
        .bind(ceremony_hash(id))
        .bind(kind)
        .bind(binding.unwrap_or_default())
        .fetch_optional(&self.db)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let created = Timestamp(row.try_get("created_at")?);
        if self.clock.now().since(created) > CEREMONY_LIFETIME {
            return Ok(None);
        }
        Ok(Some((row.try_get("state")?, row.try_get("user_id")?)))
    }

    /// The account's user handle, made on its first passkey.
    async fn handle_for(&self, user_id: i64) -> Result<Uuid, DatabaseError> {
        let fresh = Uuid::new_v4();
        sqlx::query(
            "INSERT INTO passkey_user_handles (user_id, handle) VALUES ($1, $2) ON CONFLICT (user_id) DO NOTHING",
        )
        .bind(user_id)
        .bind(fresh.to_string())
        .execute(&self.db)
        .await?;
        let row = sqlx::query("SELECT handle FROM passkey_user_handles WHERE user_id = $1")
            .bind(user_id)
            .fetch_one(&self.db)
            .await?;
        let handle: String = row.try_get("handle")?;
        Uuid::parse_str(&handle).map_err(|e| DatabaseError::Unavailable(format!("stored user handle unreadable: {e}")))
    }

    async fn credentials_of(&self, user_id: i64) -> Result<Vec<Passkey>, DatabaseError> {
        let rows =
            sqlx::query("SELECT credential FROM passkeys WHERE user_id = $1").bind(user_id).fetch_all(&self.db).await?;
        rows.iter()
            .map(|row| {
                let text: String = row.try_get("credential")?;
                serde_json::from_str(&text)
                    .map_err(|e| DatabaseError::Unavailable(format!("stored passkey unreadable: {e}")))
            })
            .collect()
    }
}

/// What a ceremony ID is stored as: its SHA-256, hex. The ID is a bearer
/// secret of the client's for a few minutes; the database never holds it.
fn ceremony_hash(id: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(id.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// A passkey name, trimmed; refused if empty, too long or with control
/// characters (it is shown on pages and in lists).
fn checked_name(name: &str) -> Result<String, PasskeyRefusal> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(PasskeyRefusal::InvalidName);
    }
    Ok(name.to_owned())
}

/// The name of a new passkey: what the user typed; if nothing, the name of
/// its authenticator when it is a known one ([`crate::aaguid`]); else
/// `fallback` (the page suggests the browser and system); else "Passkey".
pub fn passkey_name(typed: &str, credential: &RegisterPublicKeyCredential, fallback: Option<&str>) -> String {
    let typed = typed.trim();
    if !typed.is_empty() {
        return typed.to_owned();
    }
    if let Some(name) = crate::aaguid::authenticator_name(credential) {
        return name.to_owned();
    }
    match fallback.map(str::trim).filter(|f| !f.is_empty()) {
        Some(fallback) => fallback.chars().filter(|c| !c.is_control()).take(MAX_NAME_CHARS).collect(),
        None => "Passkey".to_owned(),
    }
}

/// Words for a webauthn-rs refusal that say which check failed.
fn refusal_reason(error: &WebauthnError) -> String {
    match error {
        WebauthnError::InvalidRPOrigin => "the response comes from another origin".into(),
        WebauthnError::InvalidRPIDHash => "the response is for another relying party".into(),
        WebauthnError::MismatchedChallenge => "the response answers another challenge".into(),
        WebauthnError::UserNotVerified => "the authenticator did not verify the user".into(),
        WebauthnError::UserNotPresent => "the authenticator did not see the user".into(),
        WebauthnError::InvalidUserUniqueId => "the response names no account".into(),
        WebauthnError::InvalidClientDataType => "the response is of the wrong kind".into(),
        WebauthnError::ParseCBORFailure(_) | WebauthnError::ParseNOMFailure | WebauthnError::ParseJSONFailure(_) => {
            "the response is malformed".into()
        }
        other => other.to_string(),
    }
}

impl Authenticator {
    /// The passkeys, or the error of a server without them.
    fn configured_passkeys(&self) -> Result<&Passkeys, DatabaseError> {
        self.passkeys().ok_or_else(|| DatabaseError::Unavailable("passkeys are not configured".into()))
    }

    /// Counts a passkey ceremony begun by `client` on its address's
    /// allowance — or, for a browser that signed in here before (a valid
    /// device cookie), on its own — before anything is stored (a client
    /// without an address, which only tests and the command line are, is
    /// not counted).
    async fn count_ceremony(&self, client: &Client) -> Result<(), BeginError> {
        let Some(ip) = client.ip else { return Ok(()) };
        let throttle = self.throttle();
        throttle.reserve_passkey_ceremony(ip, client.device_cookie.as_deref()).await?.map_err(BeginError::Throttled)
    }

    /// Begins a passkey sign-in for `client`: the options for
    /// `navigator.credentials.get()` (no allow list: discoverable
    /// credentials) and the ceremony ID finish brings back
    /// ([`Passkeys::take_authentication`]). Counted per address first
    /// ([`crate::Throttle::reserve_passkey_ceremony`]): past the allowance
    /// [`BeginError::Throttled`], and nothing is stored, so one address
    /// cannot fill the table of challenges.
    ///
    /// `binding` names the browser that begins it (`None` for an API
    /// client): only a finish with the same binding takes the ceremony
    /// back, and the browser's pending sign-in ceremony is replaced.
    pub async fn begin_passkey_sign_in(
        &self,
        client: &Client,
        binding: Option<&str>,
    ) -> Result<(RequestChallengeResponse, String), BeginError> {
        let passkeys = self.configured_passkeys()?;
        self.count_ceremony(client).await?;
        let (options, ceremony) = passkeys.begin_authentication()?;
        let id = passkeys.keep_authentication(&ceremony, binding).await?;
        Ok((options, id))
    }

    /// Begins adding a passkey to `user` for an API client, which keeps no
    /// session: the options for `navigator.credentials.create()` and the
    /// ceremony ID ([`Passkeys::take_registration`]). Counted per address
    /// like a sign-in ceremony.
    pub async fn begin_kept_passkey_registration(
        &self,
        client: &Client,
        user: &User,
    ) -> Result<(CreationChallengeResponse, String), BeginError> {
        let passkeys = self.configured_passkeys()?;
        self.count_ceremony(client).await?;
        let (options, ceremony) = passkeys.begin_registration(user).await?;
        let id = passkeys.keep_registration(&ceremony).await?;
        Ok((options, id))
    }

    /// Signs in with a passkey: the assertion answering `ceremony` (taken
    /// out of the session by the host, so it is used once). A passkey with
    /// user verification is two factors in one (the device and its PIN or
    /// biometric), so it needs no second factor after it.
    ///
    /// Throttled per address (no user name is typed) like a password; a
    /// refusal counts as a failure, is audited, and a cloned authenticator
    /// (counter gone backwards) is recorded as such.
    pub async fn passkey(
        &self,
        channel: Channel,
        client: &Client,
        ceremony: AuthenticationCeremony,
        credential: &PublicKeyCredential,
    ) -> Result<LoggedIn, LoginError> {
        let Some(passkeys) = self.passkeys() else {
            return Err(LoginError::Unavailable("passkeys are not configured".into()));
        };
        let keys = self.throttle().keys(None, client.ip, None);
        let reservation = self.reserve(channel, client, &keys, None).await?;
        let user_id = match passkeys.verify_authentication(ceremony, credential).await {
            Ok(user_id) => user_id,
            Err(PasskeyError::Refused(refusal)) => {
                let event = match &refusal {
                    PasskeyRefusal::Cloned { user_id } => AuthEvent::PasskeyCloned { user_id: *user_id },
                    _ => AuthEvent::LoginFailed { user_id: None, method: crate::events::Method::Passkey },
                };
                return Err(self.fail(reservation, event, channel, client, LoginError::PasskeyRefused(refusal)).await);
            }
            Err(PasskeyError::Unavailable(error)) => {
                let _ = self.throttle().release(reservation).await;
                return Err(error.into());
            }
        };
        let user = match self.accounts().directory().user_by_id(user_id).await {
            Ok(Some(user)) if user.is_enabled() => user,
            Ok(_) => {
                let event = AuthEvent::LoginFailed { user_id: Some(user_id), method: crate::events::Method::Passkey };
                return Err(self.fail(reservation, event, channel, client, LoginError::InvalidCredentials).await);
            }
            Err(error) => {
                let _ = self.throttle().release(reservation).await;
                return Err(error.into());
            }
        };
        self.record(AuthEvent::PasskeyUsed { user_id }, channel, client).await;
        let now = Some(self.clock_now());
        self.succeed_with(channel, client, reservation, user, FirstFactor::Passkey, now, None).await
    }

    /// An assertion that came with no current ceremony (none begun, used
    /// already, expired, or a made-up ceremony ID): refused as
    /// [`PasskeyRefusal::Expired`] and counted like any failed sign-in, so
    /// probing costs the same as guessing.
    pub async fn passkey_without_ceremony(&self, channel: Channel, client: &Client) -> LoginError {
        let keys = self.throttle().keys(None, client.ip, None);
        let reservation = match self.reserve(channel, client, &keys, None).await {
            Ok(reservation) => reservation,
            Err(error) => return error,
        };
        let event = AuthEvent::LoginFailed { user_id: None, method: crate::events::Method::Passkey };
        self.fail(reservation, event, channel, client, LoginError::PasskeyRefused(PasskeyRefusal::Expired)).await
    }

    /// The second factor of `pending` with a passkey of its account: the
    /// assertion answering `ceremony` (begun by
    /// [`Passkeys::begin_authentication_for`] the pending login's account,
    /// and taken out of the session by the host). Behind the same throttle
    /// counters as the password and a code; a credential of another account
    /// is refused ([`PasskeyRefusal::WrongUser`]), counted and audited.
    pub async fn second_factor_passkey(
        &self,
        channel: Channel,
        client: &Client,
        pending: &PendingLogin,
        ceremony: AuthenticationCeremony,
        credential: &PublicKeyCredential,
    ) -> Result<LoggedIn, LoginError> {
        let user = self.pending_user(pending).await?;
        let failed = AuthEvent::SecondFactorFailed { user_id: user.id };
        let reservation = self.own_passkey(channel, client, &user, ceremony, credential, failed).await?;
        self.record(AuthEvent::PasskeyUsed { user_id: user.id }, channel, client).await;
        let authenticated_at = Some(self.clock_now());
        let second = Some(SecondFactorKind::Passkey);
        self.succeed_with(channel, client, reservation, user, pending.first_factor, authenticated_at, second).await
    }

    /// A passkey of the logged-in `user` used again (a step-up before a
    /// sensitive action, instead of the password): behind the login
    /// throttle like a password confirmation; another account's credential
    /// is refused and counted.
    pub async fn confirm_passkey(
        &self,
        channel: Channel,
        client: &Client,
        user: &User,
        ceremony: AuthenticationCeremony,
        credential: &PublicKeyCredential,
    ) -> Result<(), LoginError> {
        let failed = AuthEvent::ConfirmationFailed { user_id: user.id };
        let reservation = self.own_passkey(channel, client, user, ceremony, credential, failed).await?;
        self.record(AuthEvent::PasskeyUsed { user_id: user.id }, channel, client).await;
        Ok(self.throttle().succeeded(reservation).await?)
    }

    /// Reserves an attempt on `user`'s counters and checks that the
    /// assertion comes from one of `user`'s passkeys; a refusal is counted
    /// and recorded as `failed` (or as a cloned authenticator).
    async fn own_passkey(
        &self,
        channel: Channel,
        client: &Client,
        user: &User,
        ceremony: AuthenticationCeremony,
        credential: &PublicKeyCredential,
        failed: AuthEvent,
    ) -> Result<crate::throttle::Reservation, LoginError> {
        let Some(passkeys) = self.passkeys() else {
            return Err(LoginError::Unavailable("passkeys are not configured".into()));
        };
        let reservation = self.reserve_for(channel, client, user).await?;
        let refusal = match passkeys.verify_authentication_of(user.id, ceremony, credential).await {
            Ok(()) => return Ok(reservation),
            Err(PasskeyError::Refused(refusal)) => refusal,
            Err(PasskeyError::Unavailable(error)) => {
                let _ = self.throttle().release(reservation).await;
                return Err(error.into());
            }
        };
        let event = match &refusal {
            PasskeyRefusal::Cloned { user_id } => AuthEvent::PasskeyCloned { user_id: *user_id },
            _ => failed,
        };
        Err(self.fail(reservation, event, channel, client, LoginError::PasskeyRefused(refusal)).await)
    }

    /// Begins a passkey-only sign-up of `username` for `client`: the
    /// options for `navigator.credentials.create()` and the ceremony ID
    /// finish brings back ([`Passkeys::take_sign_up`]). Like a sign-up with
    /// a password ([`Authenticator::sign_up`]), a malformed name is refused
    /// first, then the address's sign-up allowance is counted, and only then
    /// is the name looked up: past the allowance every name, taken or free,
    /// gets the same [`RegisterError::Throttled`], so begins can neither
    /// enumerate user names nor fill the table of challenges. The sign-up
    /// stays counted (a taken name too); finishing it counts nothing more.
    /// `binding` names the browser that begins it, as for
    /// [`Authenticator::begin_passkey_sign_in`].
    pub async fn begin_passkey_sign_up(
        &self,
        channel: Channel,
        client: &Client,
        username: &str,
        binding: Option<&str>,
    ) -> Result<(CreationChallengeResponse, String), PasskeySignUpError> {
        let passkeys = self.configured_passkeys()?;
        let key = check_username(username).map_err(RegisterError::InvalidUsername)?;
        let reservation = self.reserve_sign_up(channel, client).await?;
        let taken = match self.accounts().directory().user_by_name(&key).await {
            Ok(taken) => taken.is_some(),
            Err(error) => {
                self.release_sign_up(reservation).await;
                return Err(error.into());
            }
        };
        if taken {
            return Err(RegisterError::UsernameTaken.into());
        }
        let begun = match passkeys.begin_sign_up(username.trim()) {
            Ok((options, ceremony)) => passkeys.keep_sign_up(&ceremony, binding).await.map(|id| (options, id)),
            Err(error) => return Err(error.into()),
        };
        match begun {
            Ok(begun) => Ok(begun),
            Err(error) => {
                self.release_sign_up(reservation).await;
                Err(error.into())
            }
        }
    }

    /// Creates an account with a passkey and no password: the new
    /// credential answering `ceremony` ([`Authenticator::begin_passkey_sign_up`]),
    /// named `name` (empty: after its authenticator). The credential is
    /// checked first; then the account is created, with
    /// [`AuthEvent::SignedUp`] and [`AuthEvent::PasskeyAdded`]. The
    /// address's sign-up allowance was counted when the ceremony began (a
    /// ceremony is used once, so there are no more accounts than counted
    /// begins), and is not counted again here. Signs nobody in (see
    /// [`Authenticator::after_passkey_sign_up`]).
    pub async fn sign_up_with_passkey(
        &self,
        channel: Channel,
        client: &Client,
        ceremony: &SignUpCeremony,
        credential: &RegisterPublicKeyCredential,
        name: &str,
    ) -> Result<User, PasskeySignUpError> {
        let Some(passkeys) = self.passkeys() else {
            return Err(DatabaseError::Unavailable("passkeys are not configured".into()).into());
        };
        let username_key = check_username(&ceremony.username).map_err(RegisterError::InvalidUsername)?;
        let passkey = passkeys.verify_registration(ceremony.since, &ceremony.state, credential)?;
        let name = checked_name(name)?;
        if passkeys.is_registered(&passkey).await? {
            return Err(PasskeyRefusal::AlreadyRegistered.into());
        }
        let now = self.clock_now();
        let user = match self.accounts().directory().create_user(&ceremony.username, &username_key, None, now).await {
            Ok(user) => user,
            Err(CreateUserError::UsernameTaken) => return Err(RegisterError::UsernameTaken.into()),
            Err(CreateUserError::Unavailable(error)) => return Err(error.into()),
        };
        if let Err(error) = passkeys.store_first(user.id, ceremony, &passkey, name).await {
            if let Err(undo) = passkeys.undo_sign_up(user.id).await {
                tracing::warn!(error = %undo, user_id = user.id, "removing an account without its passkey failed");
            }
            return Err(error.into());
        }
        self.record(AuthEvent::SignedUp { user_id: user.id }, channel, client).await;
        self.record(AuthEvent::PasskeyAdded { user_id: user.id }, channel, client).await;
        Ok(user)
    }

    /// The login of an account just created by
    /// [`Authenticator::sign_up_with_passkey`]: logged in at once (the
    /// passkey is both factors, also on a server that requires a second).
    pub fn after_passkey_sign_up(&self, user: User) -> LoginStep {
        LoginStep::LoggedIn(LoggedIn {
            user,
            first_factor: FirstFactor::Passkey,
            authenticated_at: Some(self.clock_now()),
            device_cookie: None,
            second_factor: None,
        })
    }

    /// Adds a passkey to `user` (the host has checked a recent
    /// authentication) and records [`AuthEvent::PasskeyAdded`].
    pub async fn add_passkey(
        &self,
        channel: Channel,
        client: &Client,
        user: &User,
        ceremony: &RegistrationCeremony,
        credential: &RegisterPublicKeyCredential,
        name: &str,
    ) -> Result<PasskeyInfo, PasskeyError> {
        let Some(passkeys) = self.passkeys() else {
            return Err(DatabaseError::Unavailable("passkeys are not configured".into()).into());
        };
        let added = passkeys.finish_registration(user, ceremony, credential, name).await?;
        self.record(AuthEvent::PasskeyAdded { user_id: user.id }, channel, client).await;
        Ok(added)
    }

    /// Removes `user`'s passkey `id` unless it is the account's last way
    /// to sign in (a password, or what the host's `other_ways_in` query
    /// counts), in one transaction ([`Passkeys::remove_unless_last`]); the
    /// host has checked a recent authentication. Records
    /// [`AuthEvent::PasskeyRemoved`].
    pub async fn remove_passkey(
        &self,
        channel: Channel,
        client: &Client,
        user: &User,
        id: &str,
        other_ways_in: Option<&'static str>,
    ) -> Result<Removal, DatabaseError> {
        let Some(passkeys) = self.passkeys() else { return Ok(Removal::NoSuchPasskey) };
        let removal = passkeys.remove_unless_last(user.id, id, other_ways_in).await?;
        if removal == Removal::Removed {
            self.record(AuthEvent::PasskeyRemoved { user_id: user.id }, channel, client).await;
        }
        Ok(removal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_relying_party_comes_from_the_public_url() {
        assert_eq!(RelyingParty::new(None).unwrap().id(), "localhost");
        assert_eq!(RelyingParty::new(Some("https://auth.example.com")).unwrap().id(), "auth.example.com");
        assert_eq!(RelyingParty::new(Some("https://auth.example.com:8443/base/")).unwrap().id(), "auth.example.com");
        assert_eq!(RelyingParty::new(Some("http://localhost:3000")).unwrap().id(), "localhost");
        assert!(matches!(RelyingParty::new(Some("http://auth.example.com")), Err(RelyingPartyError::NotSecure(_))));
        assert!(matches!(RelyingParty::new(Some("https://192.0.2.1")), Err(RelyingPartyError::NotADomain(_))));
        assert!(matches!(RelyingParty::new(Some("https://[::1]:8443")), Err(RelyingPartyError::NotADomain(_))));
        assert!(matches!(RelyingParty::new(Some("not a url")), Err(RelyingPartyError::InvalidUrl(_))));
        let message = RelyingParty::new(Some("http://auth.example.com")).unwrap_err().to_string();
        assert!(message.contains("https://"), "{message}");
    }

    #[test]
    fn names_are_checked() {
        assert_eq!(checked_name("  Phone  ").unwrap(), "Phone");
        assert_eq!(checked_name(""), Err(PasskeyRefusal::InvalidName));
        assert_eq!(checked_name("   "), Err(PasskeyRefusal::InvalidName));
        assert_eq!(checked_name("a\u{7}b"), Err(PasskeyRefusal::InvalidName));
        assert_eq!(checked_name(&"x".repeat(65)), Err(PasskeyRefusal::InvalidName));
        assert!(checked_name(&"é".repeat(64)).is_ok());
    }
}
