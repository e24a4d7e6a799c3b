//! Passkeys for native apps: JSON begin/finish for signing in (answered
//! with a token pair, like `/api/signin`), for creating an account with a
//! passkey and no password (also answered with a token pair), and for
//! adding a passkey to the signed-in account.
//!
//! An app has no session to keep the challenge in: begin answers a random
//! `ceremony` ID (stored hashed, used once, valid for five minutes) that
//! finish sends back. The options and credentials are WebAuthn's JSON
//! (`PublicKeyCredentialCreationOptionsJSON` and friends, with base64url
//! binary fields), which the platforms' passkey APIs take and give as is.
//!
//! Who may do this: anyone may try to sign in (throttled per address, every
//! refusal counted and audited) or sign up (under the registration policy
//! and the per-address sign-up allowance); only the signed-in user adds a
//! passkey to their own account, and an account with a password confirms
//! it first.

use std::sync::Arc;

use axum::response::Response;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use tessera_auth::passkey::{passkey_name, Assertion, CreationOptions, NewCredential, RequestOptions};
use tessera_auth::{
    Authenticator, BeginError, Channel, LoginError, PasskeyError, PasskeyRefusal, PasskeySignUpError, RegisterError,
};
use tessera_axum::LoginClient;

use super::identity::ApiUser;
use super::problem::{json_response, ApiError, ApiJson, Counted, ProblemDocument};
use super::tokens::{TokenPair, TokenService};
use crate::registration_policy::{Refusal, Registration};
use crate::services::services;

services! {
    /// What the passkey API uses: the authentication core, the tokens it
    /// issues after a sign-in, and the registration policy.
    pub struct PasskeyApi {
        auth: Authenticator,
        tokens: Arc<TokenService>,
        registration: Registration,
    }
}

impl PasskeyApi {
    fn passkeys(&self) -> Result<&tessera_auth::Passkeys, ApiError> {
        self.auth.passkeys().ok_or(ApiError::NotFound)
    }
}

fn refused(error: PasskeyError) -> ApiError {
    match error {
        PasskeyError::Refused(refusal) => ApiError::Passkey(refusal),
        PasskeyError::Unavailable(error) => ApiError::unavailable(error),
    }
}

/// The answer to a passkey ceremony that did not begin (web and API alike):
/// past the address's allowance `429` with `Retry-After`.
pub(crate) fn begin_refused(error: BeginError) -> ApiError {
    match error {
        BeginError::Throttled(wait) => ApiError::TooMany(Counted::PasskeyCeremonies, wait),
        BeginError::Passkey(error) => refused(error),
    }
}

/// The answer to a refused passkey sign-in, second factor or confirmation
/// (web and API alike).
pub(crate) fn login_refused(error: LoginError) -> ApiError {
    match error {
        LoginError::PasskeyRefused(refusal) => {
            tracing::info!(reason = refusal.kind(), "passkey refused");
            ApiError::Passkey(refusal)
        }
        LoginError::Expired => ApiError::Passkey(PasskeyRefusal::Expired),
        LoginError::Throttled(wait) => ApiError::TooMany(Counted::FailedSignIns, wait),
        LoginError::InvalidCredentials => ApiError::InvalidCredentials,
        LoginError::Busy => ApiError::Busy,
        other => ApiError::unavailable(other),
    }
}

/// The answer to a sign-up the registration policy refuses.
pub(crate) fn policy_refused(refusal: Refusal) -> ApiError {
    match refusal {
        Refusal::Unavailable(error) => ApiError::unavailable(error),
        refusal => ApiError::RegistrationRefused(refusal.kind(), refusal.message()),
    }
}

/// The answer to a refused passkey-only sign-up.
pub(crate) fn sign_up_refused(error: PasskeySignUpError) -> ApiError {
    match error {
        PasskeySignUpError::Passkey(refusal) => ApiError::Passkey(refusal),
        PasskeySignUpError::Register(RegisterError::InvalidUsername(reason)) => ApiError::Validation(reason.into()),
        PasskeySignUpError::Register(RegisterError::InvalidPassword(reason)) => ApiError::Validation(reason),
        PasskeySignUpError::Register(RegisterError::UsernameTaken) => ApiError::UsernameTaken,
        PasskeySignUpError::Register(RegisterError::Throttled(wait)) => ApiError::SignUpThrottled(wait),
        PasskeySignUpError::Register(RegisterError::Busy) => ApiError::Busy,
        PasskeySignUpError::Register(RegisterError::Unavailable(error)) => ApiError::unavailable(error),
    }
}

/// Options for `navigator.credentials.get()` (or the platform's API).
#[derive(Serialize, utoipa::ToSchema)]
pub struct SignInOptions {
    /// Send back with the assertion; valid once, for five minutes.
    pub ceremony: String,
    /// WebAuthn `PublicKeyCredentialRequestOptions` (JSON form): no allow
    /// list, so the authenticator offers its passkeys for this site.
    #[schema(value_type = Object)]
    pub options: RequestOptions,
}

/// `POST /api/passkeys/signin/begin`.
#[utoipa::path(
    post,
    path = "/api/passkeys/signin/begin",
    tag = "passkeys",
    responses(
        (status = 200, description = "A challenge for a discoverable credential", body = SignInOptions),
        (status = 404, description = "Passkeys are not available on this server", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 429, description = "Too many passkey ceremonies begun from this address lately (`throttle.passkey_ceremonies_per_address`); nothing was stored; see Retry-After", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn signin_begin(api: PasskeyApi, LoginClient(client): LoginClient) -> Result<Response, ApiError> {
    api.passkeys()?;
    let (options, ceremony) = api.auth.begin_passkey_sign_in(&client, None).await.map_err(begin_refused)?;
    Ok(json_response(StatusCode::OK, &SignInOptions { ceremony, options }))
}

/// An assertion answering a sign-in ceremony.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct SignInAssertion {
    /// The `ceremony` of the begin answer.
    pub ceremony: String,
    /// The WebAuthn `PublicKeyCredential` (JSON form, base64url fields),
    /// with the `userHandle` a discoverable credential returns.
    #[schema(value_type = Object)]
    pub credential: Assertion,
}

/// `POST /api/passkeys/signin/finish`: a token pair for a valid assertion.
#[utoipa::path(
    post,
    path = "/api/passkeys/signin/finish",
    tag = "passkeys",
    request_body = SignInAssertion,
    responses(
        (status = 200, description = "Signed in", body = TokenPair),
        (status = 400, description = "`passkey-challenge-expired`: unknown, used or expired ceremony; or malformed JSON", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 401, description = "`passkey-unknown` (not registered: tell the platform, e.g. signalUnknownCredential), `passkey-wrong-user`, `passkey-cloned` (the signature counter went backwards: refused and audited) or `passkey-invalid` (origin, relying party, challenge, user verification, signature or encoding; the detail says which)", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed sign-ins from this address; see Retry-After", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn signin_finish(
    api: PasskeyApi,
    LoginClient(client): LoginClient,
    ApiJson(body): ApiJson<SignInAssertion>,
) -> Result<Response, ApiError> {
    let passkeys = api.passkeys()?;
    let ceremony = passkeys.take_authentication(&body.ceremony, None).await.map_err(ApiError::unavailable)?;
    let outcome = match ceremony {
        Some(ceremony) => api.auth.passkey(Channel::Api, &client, ceremony, &body.credential).await,
        None => Err(api.auth.passkey_without_ceremony(Channel::Api, &client).await),
    };
    let done = outcome.map_err(login_refused)?;
    let pair = api.tokens.issue_pair(done.user.id).await?;
    tracing::info!(user_id = done.user.id, "API passkey sign-in");
    Ok(json_response(StatusCode::OK, &pair))
}

/// Confirmation before adding a passkey.
#[derive(Deserialize, utoipa::ToSchema, Default)]
pub struct RegistrationRequest {
    /// The current password; required when the account has one.
    #[serde(default)]
    pub current_password: Option<String>,
    /// For an account without a password that has passkeys: a fresh
    /// assertion of one of them, answering a ceremony of
    /// `POST /api/passkeys/signin/begin`.
    #[serde(default)]
    pub confirmation: Option<SignInAssertion>,
}

/// Options for `navigator.credentials.create()` (or the platform's API).
#[derive(Serialize, utoipa::ToSchema)]
pub struct RegistrationOptions {
    /// Send back with the new credential; valid once, for five minutes.
    pub ceremony: String,
    /// WebAuthn `PublicKeyCredentialCreationOptions` (JSON form): a
    /// discoverable credential with user verification, the account's
    /// passkeys excluded.
    #[schema(value_type = Object)]
    pub options: CreationOptions,
}

/// `POST /api/passkeys/register/begin`.
#[utoipa::path(
    post,
    path = "/api/passkeys/register/begin",
    tag = "passkeys",
    security(("bearer" = []), ("cookie" = [])),
    request_body = RegistrationRequest,
    responses(
        (status = 200, description = "A challenge to create a passkey for the signed-in account", body = RegistrationOptions),
        (status = 400, description = "`passkey-challenge-expired`: the confirmation answers no current ceremony", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated, wrong current password, or a refused confirmation (`passkey-wrong-user`, `passkey-invalid`, …)", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 403, description = "An account without a password that has passkeys sent no `confirmation`", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 429, description = "Too many wrong passwords, or too many passkey ceremonies begun from this address lately; see Retry-After", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn register_begin(
    api: PasskeyApi,
    caller: ApiUser,
    LoginClient(client): LoginClient,
    ApiJson(body): ApiJson<RegistrationRequest>,
) -> Result<Response, ApiError> {
    let passkeys = api.passkeys()?;
    if caller.user.password_hash.is_some() {
        let password = body.current_password.as_deref().unwrap_or_default();
        match api.auth.confirm_password(Channel::Api, &client, &caller.user, password).await {
            Ok(()) => {}
            Err(LoginError::InvalidCredentials) => return Err(ApiError::InvalidCredentials),
            Err(LoginError::Throttled(wait)) => return Err(ApiError::Throttled(wait)),
            Err(LoginError::Busy) => return Err(ApiError::Busy),
            Err(other) => return Err(ApiError::unavailable(other)),
        }
    } else if passkeys.count(caller.user.id).await.map_err(ApiError::unavailable)? > 0 {
        // No password to type: a fresh assertion of one of its passkeys, so
        // that an access token alone cannot add a lasting way in.
        let Some(confirmation) = body.confirmation else {
            return Err(ApiError::Forbidden(
                "Confirm with one of your passkeys: send `confirmation` (an assertion answering \
                 POST /api/passkeys/signin/begin).",
            ));
        };
        let ceremony =
            passkeys.take_authentication(&confirmation.ceremony, None).await.map_err(ApiError::unavailable)?;
        let confirmed = match ceremony {
            Some(ceremony) => {
                api.auth.confirm_passkey(Channel::Api, &client, &caller.user, ceremony, &confirmation.credential).await
            }
            None => Err(api.auth.passkey_without_ceremony(Channel::Api, &client).await),
        };
        confirmed.map_err(login_refused)?;
    }
    let begun = api.auth.begin_kept_passkey_registration(&client, &caller.user).await;
    let (options, ceremony) = begun.map_err(begin_refused)?;
    Ok(json_response(StatusCode::OK, &RegistrationOptions { ceremony, options }))
}

/// A new credential answering a registration ceremony.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct RegistrationResponse {
    /// The `ceremony` of the begin answer.
    pub ceremony: String,
    /// What to call it (1–64 characters); empty or left out: after the
    /// authenticator when its AAGUID is a known one, else "Passkey".
    #[serde(default)]
    pub name: String,
    /// The WebAuthn `RegistrationResponseJSON`.
    #[schema(value_type = Object)]
    pub credential: NewCredential,
}

/// A passkey as the API shows it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct PasskeyView {
    /// The credential ID, base64url.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Whether the authenticator says it is backed up (synced).
    pub synced: bool,
}

/// `POST /api/passkeys/register/finish`.
#[utoipa::path(
    post,
    path = "/api/passkeys/register/finish",
    tag = "passkeys",
    security(("bearer" = []), ("cookie" = [])),
    request_body = RegistrationResponse,
    responses(
        (status = 201, description = "Added", body = PasskeyView),
        (status = 400, description = "`passkey-challenge-expired` (unknown, used, expired or another user's ceremony) or `passkey-invalid-name`", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated, or `passkey-invalid` (the detail says which check failed)", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 409, description = "`passkey-registered-already`", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn register_finish(
    api: PasskeyApi,
    caller: ApiUser,
    LoginClient(client): LoginClient,
    ApiJson(body): ApiJson<RegistrationResponse>,
) -> Result<Response, ApiError> {
    let passkeys = api.passkeys()?;
    let ceremony = passkeys.take_registration(&body.ceremony, caller.user.id).await.map_err(ApiError::unavailable)?;
    let Some(ceremony) = ceremony else { return Err(ApiError::Passkey(PasskeyRefusal::Expired)) };
    let name = passkey_name(&body.name, &body.credential, None);
    let added = api
        .auth
        .add_passkey(Channel::Api, &client, &caller.user, &ceremony, &body.credential, &name)
        .await
        .map_err(refused)?;
    Ok(json_response(StatusCode::CREATED, &PasskeyView { id: added.id, name: added.name, synced: added.synced }))
}

/// A passkey-only sign-up: the user name asked for.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct SignUpRequest {
    /// 3–64 letters, digits, dots, dashes or underscores.
    pub username: String,
    /// An invitation token, when `accounts.registration = "invite"`.
    #[serde(default)]
    pub invite: Option<String>,
}

/// `POST /api/passkeys/signup/begin`: options to create the passkey of a
/// new account with no password. The registration policy and the
/// invitation are checked first, as for `POST /api/signup`; then it is
/// counted on the address's sign-up allowance (`throttle.signups_per_address`) before the name is looked
/// up, like `POST /api/signup`. Nothing is stored but the challenge; the
/// account is created by finish.
#[utoipa::path(
    post,
    path = "/api/passkeys/signup/begin",
    tag = "passkeys",
    request_body = SignUpRequest,
    responses(
        (status = 200, description = "A challenge to create the new account's passkey (a discoverable credential with user verification)", body = RegistrationOptions),
        (status = 403, description = "The registration policy refuses new accounts: `registration-closed`, `invitation-required` or `invalid-invitation` (unknown, used or expired; checked before anything is counted)", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 409, description = "User name taken", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "Invalid user name", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 429, description = "Too many sign-ups from this address lately (taken and free names alike); nothing was stored; see Retry-After", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn signup_begin(
    api: PasskeyApi,
    LoginClient(client): LoginClient,
    ApiJson(body): ApiJson<SignUpRequest>,
) -> Result<Response, ApiError> {
    api.passkeys()?;
    api.registration.check(body.invite.as_deref()).await.map_err(policy_refused)?;
    let begun = api.auth.begin_passkey_sign_up(Channel::Api, &client, &body.username, None).await;
    let (options, ceremony) = begun.map_err(sign_up_refused)?;
    Ok(json_response(StatusCode::OK, &RegistrationOptions { ceremony, options }))
}

/// The new account's credential, answering a sign-up ceremony.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct SignUpResponse {
    /// The `ceremony` of the begin answer.
    pub ceremony: String,
    /// What to call the passkey; empty or left out: after its authenticator
    /// when known, else "Passkey".
    #[serde(default)]
    pub name: String,
    /// The invitation token again, when one is needed.
    #[serde(default)]
    pub invite: Option<String>,
    /// The WebAuthn `RegistrationResponseJSON`.
    #[schema(value_type = Object)]
    pub credential: NewCredential,
}

/// `POST /api/passkeys/signup/finish`: creates the account (no password)
/// with its passkey and answers a token pair.
#[utoipa::path(
    post,
    path = "/api/passkeys/signup/finish",
    tag = "passkeys",
    request_body = SignUpResponse,
    responses(
        (status = 201, description = "Created and signed in", body = TokenPair),
        (status = 400, description = "`passkey-challenge-expired` (unknown, used or expired ceremony), `passkey-invalid-name`, or malformed JSON", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 401, description = "`passkey-invalid` (origin, relying party, challenge, user verification, encoding; the detail says which)", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 403, description = "The registration policy refuses new accounts (`registration-closed`, `invitation-required`, `invalid-invitation`)", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 409, description = "User name taken meanwhile, or `passkey-registered-already`", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn signup_finish(
    api: PasskeyApi,
    LoginClient(client): LoginClient,
    ApiJson(body): ApiJson<SignUpResponse>,
) -> Result<Response, ApiError> {
    let passkeys = api.passkeys()?;
    let ceremony = passkeys.take_sign_up(&body.ceremony, None).await.map_err(ApiError::unavailable)?;
    let Some(ceremony) = ceremony else { return Err(ApiError::Passkey(PasskeyRefusal::Expired)) };
    let name = passkey_name(&body.name, &body.credential, None);
    let user = api
        .registration
        .register_with_passkey(body.invite.as_deref(), Channel::Api, &client, &ceremony, &body.credential, &name)
        .await
        .map_err(policy_refused)?
        .map_err(sign_up_refused)?;
    let pair = api.tokens.issue_pair(user.id).await?;
    tracing::info!(user_id = user.id, "API passkey-only sign-up");
    Ok(json_response(StatusCode::CREATED, &pair))
}
