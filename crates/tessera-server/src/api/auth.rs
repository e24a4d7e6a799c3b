//! Accounts and tokens: sign up, sign in, refresh, sign out, who am I.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::{Deserialize, Serialize};

use super::identity::ApiUser;
use super::problem::{json_response, ApiError, ApiJson, ProblemDocument};
use super::rfc3339;
use super::tokens::{RefreshError, TokenPair};
use crate::api::tokens::TokenService;
use crate::registration_policy::{Refusal, Registration};
use std::sync::Arc;
use tessera_auth::email_address::EmailAddress;
use tessera_auth::Authenticator;
use tessera_auth::{Channel, LoginError, RegisterError, User};
use tessera_axum::{ClientDevice, LoginClient};

use crate::mail::{EmailPages, EmailPolicy};

/// A user name and password.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct Credentials {
    /// 3–64 characters: letters, digits, `.`, `_`, `-`; case-insensitive.
    pub username: String,
    /// At least `passwords.min_chars` characters (12 by default; the
    /// served document states the running value), at most 1024 bytes.
    pub password: String,
    /// The invitation token (the `invite` parameter of the invitation
    /// link). Required when `accounts.registration` is `invite`.
    #[serde(default)]
    pub invite: Option<String>,
    /// An email address to verify: a link and a code are mailed to it, and
    /// it becomes the account's once one comes back. Optional by default;
    /// required when `accounts.email` is `required` (and the account then
    /// cannot sign in before the address is verified); ignored when `off`.
    #[serde(default)]
    pub email: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("username", &self.username).finish_non_exhaustive()
    }
}

/// A user name and password, and the second factor for accounts with
/// two-step verification on.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct SignInRequest {
    /// The account's user name.
    pub username: String,
    /// The account's password.
    pub password: String,
    /// A current code from the authenticator app, or an unused recovery
    /// code. Required when the account has two-step verification on (the
    /// answer without it is 401 `second-factor-required`).
    #[serde(default)]
    pub second_factor: Option<String>,
}

impl std::fmt::Debug for SignInRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignInRequest").field("username", &self.username).finish_non_exhaustive()
    }
}

/// A refresh token presented by the client.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct RefreshRequest {
    /// The refresh token from sign-in or the last refresh.
    pub refresh_token: String,
}

/// A user as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserView {
    /// Numeric ID.
    pub id: i64,
    /// The name as registered.
    pub username: String,
    /// Registration time, RFC 3339.
    pub created_at: String,
}

impl From<&User> for UserView {
    fn from(user: &User) -> Self {
        UserView { id: user.id, username: user.username.clone(), created_at: rfc3339(user.created_at) }
    }
}

/// `POST /api/signup`: creates an account.
#[utoipa::path(
    post,
    path = "/api/signup",
    tag = "auth",
    request_body = Credentials,
    responses(
        (status = 201, description = "Created", body = UserView),
        (status = 400, description = "Malformed JSON or invalid UTF-8", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 403, description = "The registration policy refuses new accounts: `registration-closed`, `invitation-required` or `invalid-invitation` (unknown, used or expired)", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 409, description = "User name taken", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 415, description = "Not application/json", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "Invalid user name, password or email address, or no `email` where `accounts.email = required`; the detail says why. Nothing was created", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 429, description = "Too many accounts created from this address lately (`throttle.signups_per_address`); nothing was created; see Retry-After", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 503, description = "`busy`: the password hashing queue is full, nothing was created or counted, retry after Retry-After; or a dependency is down", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn signup(
    State(registration): State<Registration>,
    State(auth): State<Authenticator>,
    State(email_pages): State<EmailPages>,
    LoginClient(client): LoginClient,
    ApiJson(body): ApiJson<Credentials>,
) -> Result<Response, ApiError> {
    // The address first: nothing is created when it is refused.
    let policy = if auth.email().is_some() { email_pages.policy } else { EmailPolicy::Off };
    let email = body.email.as_deref().map(str::trim).filter(|e| !e.is_empty());
    match (policy, email) {
        (EmailPolicy::Off, _) | (EmailPolicy::Optional, None) => {}
        (EmailPolicy::Required, None) => {
            return Err(ApiError::Validation("`email` is required on this server".into()));
        }
        (_, Some(email)) => {
            EmailAddress::parse(email).map_err(|why| ApiError::Validation(why.to_string()))?;
        }
    }
    let registered = registration
        .register(body.invite.as_deref(), Channel::Api, &client, &body.username, &body.password)
        .await
        .map_err(|refusal| match refusal {
            Refusal::Unavailable(error) => ApiError::unavailable(error),
            refusal => ApiError::RegistrationRefused(refusal.kind(), refusal.message()),
        })?;
    match registered {
        Ok(user) => {
            tracing::info!(user_id = user.id, "API sign-up");
            if let (false, Some(email)) = (policy == EmailPolicy::Off, email) {
                // The account exists either way; the mail can be asked
                // for again (`POST /api/email/verification`).
                if let Err(error) = auth.request_email(&user, email).await {
                    tracing::warn!(%error, user_id = user.id, "queueing the sign-up verification mail failed");
                }
            }
            Ok(json_response(StatusCode::CREATED, &UserView::from(&user)))
        }
        Err(RegisterError::InvalidUsername(reason)) => Err(ApiError::Validation(reason.into())),
        Err(RegisterError::InvalidPassword(reason)) => Err(ApiError::Validation(reason)),
        Err(RegisterError::UsernameTaken) => Err(ApiError::UsernameTaken),
        Err(RegisterError::Throttled(wait)) => Err(ApiError::SignUpThrottled(wait)),
        Err(RegisterError::Busy) => Err(ApiError::Busy),
        Err(RegisterError::Unavailable(error)) => Err(ApiError::unavailable(error)),
    }
}

/// `POST /api/signin`: a token pair for valid credentials.
#[utoipa::path(
    post,
    path = "/api/signin",
    tag = "auth",
    request_body = SignInRequest,
    responses(
        (status = 200, description = "Signed in", body = TokenPair),
        (status = 400, description = "Malformed JSON", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 401, description = "Wrong user name or password (one message for every reason); or, after a right password, `second-factor-required` or `invalid-second-factor`", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 415, description = "Not application/json", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "Fields missing or of the wrong type", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 403, description = "The server requires two-step verification and the account has none yet: log in once in the browser to set it up; or `email-unverified`: the server requires a verified address (`accounts.email = required`) and the account's is not verified yet (`POST /api/email/verification` mails the link again)", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed sign-ins for this account or address; see Retry-After", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 503, description = "`busy`: the password hashing queue is full, nothing was checked or counted, retry after Retry-After; or a dependency is down", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn signin(
    State(auth): State<Authenticator>,
    State(tokens): State<Arc<TokenService>>,
    LoginClient(client): LoginClient,
    ApiJson(body): ApiJson<SignInRequest>,
) -> Result<Response, ApiError> {
    let code = body.second_factor.as_deref();
    let done = auth.password_and_code(&client, &body.username, &body.password, code).await.map_err(|error| {
        match error {
            LoginError::InvalidCredentials => ApiError::InvalidCredentials,
            LoginError::InvalidSecondFactor => ApiError::InvalidSecondFactor,
            LoginError::SecondFactorRequired => ApiError::SecondFactorRequired,
            // Setting up an app needs a QR code and a person: the browser
            // login walks the user through it.
            LoginError::EnrolmentRequired => ApiError::Forbidden(
                "This server requires two-step verification. Log in once in the browser to set up an \
                 authenticator app, then sign in here with its code in second_factor.",
            ),
            LoginError::Throttled(wait) => ApiError::Throttled(wait),
            LoginError::EmailUnverified(_) => ApiError::EmailUnverified,
            other => ApiError::from(other),
        }
    })?;
    let pair = tokens.issue_pair(done.user.id).await?;
    tracing::info!(user_id = done.user.id, "API sign-in");
    Ok(json_response(StatusCode::OK, &pair))
}

/// `POST /api/token/refresh`: a new pair for a refresh token, which is
/// used up. Presenting a used token again revokes its whole family.
#[utoipa::path(
    post,
    path = "/api/token/refresh",
    tag = "auth",
    request_body = RefreshRequest,
    responses(
        (status = 200, description = "A new pair; the presented refresh token is now used", body = TokenPair),
        (status = 400, description = "Malformed JSON", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 401, description = "Unknown, expired, revoked or reused refresh token (a reused one also revokes its family and every access token of the user, and is audited)", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 415, description = "Not application/json", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "`refresh_token` missing", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn refresh(
    State(tokens): State<Arc<TokenService>>,
    ClientDevice(device): ClientDevice,
    ApiJson(body): ApiJson<RefreshRequest>,
) -> Result<Response, ApiError> {
    match tokens.refresh_from(&body.refresh_token, &device).await {
        Ok(pair) => Ok(json_response(StatusCode::OK, &pair)),
        Err(RefreshError::Refused) => Err(ApiError::InvalidRefreshToken),
        Err(RefreshError::Unavailable(error)) => Err(ApiError::unavailable(error)),
    }
}

/// `POST /api/signout`: revokes the refresh token's family. Answers 204
/// whether or not the token was known, so it reveals nothing.
#[utoipa::path(
    post,
    path = "/api/signout",
    tag = "auth",
    request_body = RefreshRequest,
    responses(
        (status = 204, description = "The family is revoked (or never existed)"),
        (status = 400, description = "Malformed JSON", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 415, description = "Not application/json", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "`refresh_token` missing", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn signout(
    State(tokens): State<Arc<TokenService>>,
    ApiJson(body): ApiJson<RefreshRequest>,
) -> Result<Response, ApiError> {
    tokens.sign_out(&body.refresh_token).await.map_err(ApiError::unavailable)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /api/me`: the authenticated user.
#[utoipa::path(
    get,
    path = "/api/me",
    tag = "auth",
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "The current user", body = UserView),
        (status = 401, description = "No valid token or session", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn me(caller: ApiUser) -> Response {
    json_response(StatusCode::OK, &UserView::from(&caller.user))
}
