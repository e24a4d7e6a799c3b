//! Email through the API: ask for a reset link, set a new password with
//! it, confirm an address with a verification link's token. None needs a
//! bearer token: each is authorised by the secret mailed to the address
//! (and a reset request by nothing, which is why it answers the same for
//! every address and is throttled per address and per client).

use axum::extract::State;
use axum::response::Response;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tessera_auth::email_login::{EmailLoginMode, EmailSecret};
use tessera_auth::{Authenticator, Channel, EmailError, LoginError};
use tessera_axum::LoginClient;

use super::problem::{json_response, ApiError, ApiJson, Counted, ProblemDocument};
use crate::api::tokens::TokenService;
use crate::mail::EmailPages;

/// An address to send a reset link to.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ResetRequest {
    /// The account's verified email address.
    pub email: String,
}

/// A reset link's token and the new password.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct ResetConfirmation {
    /// The `token` parameter of the mailed link.
    pub token: String,
    /// The new password (the password rules apply).
    pub new_password: String,
}

impl std::fmt::Debug for ResetConfirmation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResetConfirmation").finish_non_exhaustive()
    }
}

/// A verification link's token.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct VerifyRequest {
    /// The `token` parameter of the mailed link.
    pub token: String,
}

/// The answer to a reset request: the same for every address.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Accepted {
    /// Always `accepted`.
    pub status: String,
}

/// A confirmed address.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VerifiedEmail {
    /// The address, now the account's.
    pub email: String,
}

fn email_error(error: EmailError) -> ApiError {
    match error {
        EmailError::Malformed(why) => ApiError::Validation(why.to_string()),
        EmailError::InvalidPassword(why) => ApiError::Validation(why),
        EmailError::Throttled(wait) => ApiError::TooMany(Counted::Mails, wait),
        EmailError::InvalidToken | EmailError::InvalidCode => ApiError::InvalidEmailToken,
        EmailError::Taken => ApiError::EmailTaken,
        EmailError::Off => ApiError::NotFound,
        EmailError::Unavailable(error) => ApiError::unavailable(error),
    }
}

/// What an email endpoint needs switched on.
#[derive(Clone, Copy)]
enum Needs {
    /// Email (`accounts.email` not `off`).
    Email,
    /// Sign-in by email (`accounts.email_login` not `off`).
    EmailLogin,
}

/// The prologue of every email endpoint: `404` when what it needs is off,
/// before anything is looked up, counted or mailed.
fn needs(auth: &Authenticator, email: &EmailPages, what: Needs) -> Result<(), ApiError> {
    let on = match what {
        Needs::Email => email.enabled() && auth.email().is_some(),
        Needs::EmailLogin => auth.email_login_mode() != EmailLoginMode::Off,
    };
    if on {
        Ok(())
    } else {
        Err(ApiError::NotFound)
    }
}

/// `POST /api/password/reset-request`: mails a reset link if an account
/// has the address.
#[utoipa::path(
    post,
    path = "/api/password/reset-request",
    tag = "auth",
    request_body = ResetRequest,
    responses(
        (status = 202, description = "Accepted: if an account has this verified address, a link valid for 15 minutes is on its way. The same answer, in the same time, for every address", body = Accepted),
        (status = 404, description = "Email is turned off on this server (`accounts.email = off`)", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "Not an email address", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 429, description = "Too many requests for this address or from this client", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn request_reset(
    State(auth): State<Authenticator>,
    State(email): State<EmailPages>,
    LoginClient(client): LoginClient,
    ApiJson(body): ApiJson<ResetRequest>,
) -> Result<Response, ApiError> {
    needs(&auth, &email, Needs::Email)?;
    auth.request_password_reset(&client, &body.email).await.map_err(email_error)?;
    Ok(json_response(StatusCode::ACCEPTED, &Accepted { status: "accepted".into() }))
}

/// `POST /api/password/reset`: a new password with a reset link's token.
#[utoipa::path(
    post,
    path = "/api/password/reset",
    tag = "auth",
    request_body = ResetConfirmation,
    responses(
        (status = 204, description = "Password changed; every session and API token of the account ended. Sign in again (with the second factor, if the account has one)"),
        (status = 400, description = "`invalid-email-token`: the token is unknown, used or expired", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 404, description = "Email is turned off on this server", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "The new password breaks the rules (the token still works)", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn reset(
    State(auth): State<Authenticator>,
    State(email): State<EmailPages>,
    LoginClient(client): LoginClient,
    ApiJson(body): ApiJson<ResetConfirmation>,
) -> Result<Response, ApiError> {
    needs(&auth, &email, Needs::Email)?;
    auth.reset_password(Channel::Api, &client, &body.token, &body.new_password).await.map_err(email_error)?;
    Ok(axum::response::IntoResponse::into_response(StatusCode::NO_CONTENT))
}

/// `POST /api/email/verify`: confirms an address with its link's token.
#[utoipa::path(
    post,
    path = "/api/email/verify",
    tag = "auth",
    request_body = VerifyRequest,
    responses(
        (status = 200, description = "The address is now its account's", body = VerifiedEmail),
        (status = 400, description = "`invalid-email-token`: the token is unknown, used or expired", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 404, description = "Email is turned off on this server", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 409, description = "`email-taken`: another account has this address", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn verify(
    State(auth): State<Authenticator>,
    State(email): State<EmailPages>,
    LoginClient(client): LoginClient,
    ApiJson(body): ApiJson<VerifyRequest>,
) -> Result<Response, ApiError> {
    needs(&auth, &email, Needs::Email)?;
    let confirmed = auth.confirm_email_token(Channel::Api, &client, &body.token).await.map_err(email_error)?;
    Ok(json_response(StatusCode::OK, &VerifiedEmail { email: confirmed.address }))
}

/// An address to mail a sign-in code (or link) to.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct EmailLoginRequest {
    /// The account's verified email address.
    pub email: String,
}

/// The answer to a sign-in request: the same for every address.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EmailLoginStarted {
    /// Always `accepted`.
    pub status: String,
    /// This request's attempt ID: keep it and send it with the code. The
    /// mailed code works only together with it, so a code (or link) that
    /// reaches someone else — a mail scanner, a forwarded mail — signs
    /// nobody in. Returned for every address (an address no account has
    /// gets one too, which no code will ever match).
    pub attempt: String,
}

/// The mailed secret, with its attempt.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct EmailLoginVerification {
    /// The `attempt` of `POST /api/login/email`.
    pub attempt: String,
    /// The 6-digit code from the mail (`accounts.email_login = code`).
    #[serde(default)]
    pub code: Option<String>,
    /// The `token` parameter of the mailed link (`accounts.email_login =
    /// link`), for an app that opens the link itself.
    #[serde(default)]
    pub token: Option<String>,
    /// A current authenticator or recovery code, for an account with
    /// two-step verification on (without it: 401 `second-factor-required`,
    /// and the mailed code stays usable until its checks run out).
    #[serde(default)]
    pub second_factor: Option<String>,
}

impl std::fmt::Debug for EmailLoginVerification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailLoginVerification").finish_non_exhaustive()
    }
}

/// `POST /api/login/email`: mails a sign-in code (or link) if an account
/// has the verified address; returns the attempt ID that binds it.
#[utoipa::path(
    post,
    path = "/api/login/email",
    tag = "auth",
    request_body = EmailLoginRequest,
    responses(
        (status = 202, description = "Accepted: if an account has this verified address, a code (or link) valid for 10 minutes is on its way. The same answer, in the same time, for every address. Keep `attempt`: the code works only with it (the API's form of binding the code to the browser that asked)", body = EmailLoginStarted),
        (status = 404, description = "Sign-in by email is off (`accounts.email_login = off`, the default, or `accounts.email = off`)", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "Not an email address", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 429, description = "Too many requests for this address or from this client; see Retry-After", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn request_login(
    State(auth): State<Authenticator>,
    State(email): State<EmailPages>,
    LoginClient(client): LoginClient,
    ApiJson(body): ApiJson<EmailLoginRequest>,
) -> Result<Response, ApiError> {
    needs(&auth, &email, Needs::EmailLogin)?;
    let attempt = auth.request_email_login(&client, &body.email).await.map_err(|error| match error {
        EmailError::Throttled(wait) => ApiError::TooMany(Counted::SignInCodes, wait),
        other => email_error(other),
    })?;
    Ok(json_response(StatusCode::ACCEPTED, &EmailLoginStarted { status: "accepted".into(), attempt }))
}

/// `POST /api/login/email/verify`: a token pair for the mailed code (or
/// link token) of an attempt.
#[utoipa::path(
    post,
    path = "/api/login/email/verify",
    tag = "auth",
    request_body = EmailLoginVerification,
    responses(
        (status = 200, description = "Signed in", body = crate::api::tokens::TokenPair),
        (status = 401, description = "`invalid-email-code`: the code or link token is wrong, used, expired, checked 5 times already, or of another attempt (counted like a wrong password); or, for an account with two-step verification, `second-factor-required` or `invalid-second-factor`", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 403, description = "The server requires two-step verification and the account has none yet: sign in once in the browser to set it up", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 404, description = "Sign-in by email is off", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "Neither `code` nor `token`, or fields of the wrong type", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed sign-ins for this account or address; see Retry-After", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn verify_login(
    State(auth): State<Authenticator>,
    State(email): State<EmailPages>,
    State(tokens): State<Arc<TokenService>>,
    LoginClient(client): LoginClient,
    ApiJson(body): ApiJson<EmailLoginVerification>,
) -> Result<Response, ApiError> {
    needs(&auth, &email, Needs::EmailLogin)?;
    let secret = match (body.code.as_deref(), body.token.as_deref()) {
        (Some(code), None) => EmailSecret::Code(code),
        (None, Some(token)) => EmailSecret::Link(token),
        _ => return Err(ApiError::Validation("send either `code` or `token`".into())),
    };
    let second_factor = body.second_factor.as_deref();
    let done =
        auth.email_login_and_code(&client, &body.attempt, secret, second_factor).await.map_err(
            |error| match error {
                LoginError::InvalidCredentials => ApiError::InvalidEmailCode,
                LoginError::InvalidSecondFactor => ApiError::InvalidSecondFactor,
                LoginError::SecondFactorRequired => ApiError::SecondFactorRequired,
                LoginError::EnrolmentRequired => ApiError::Forbidden(
                    "This server requires two-step verification. Log in once in the browser to set up an \
                 authenticator app, then sign in here with its code in second_factor.",
                ),
                LoginError::Throttled(wait) => ApiError::TooMany(Counted::FailedSignIns, wait),
                LoginError::EmailUnverified(_) => ApiError::EmailUnverified,
                other => ApiError::from(other),
            },
        )?;
    let pair = tokens.issue_pair(done.user.id).await?;
    tracing::info!(user_id = done.user.id, "API sign-in by email");
    Ok(json_response(StatusCode::OK, &pair))
}

/// The account's credentials and the address to verify.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct VerificationRequest {
    /// The account's user name.
    pub username: String,
    /// The account's password.
    pub password: String,
    /// The address to mail the link and code to (the one given at sign-up,
    /// or a corrected one): it becomes the account's once confirmed.
    pub email: String,
}

impl std::fmt::Debug for VerificationRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerificationRequest").field("username", &self.username).finish_non_exhaustive()
    }
}

/// `POST /api/email/verification`: mails a verification link and code
/// again. Authorised by the account's password (checked like a sign-in,
/// behind the same throttle, but signing nothing in), because an account
/// whose address is unverified cannot sign in where `accounts.email =
/// required`.
#[utoipa::path(
    post,
    path = "/api/email/verification",
    tag = "auth",
    request_body = VerificationRequest,
    responses(
        (status = 202, description = "A link and a code are on their way to `email`; confirm with `POST /api/email/verify` or the page the link opens", body = Accepted),
        (status = 401, description = "Wrong user name or password", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 404, description = "Email is turned off on this server", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "Not an email address", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed sign-ins, or too many verification mails for this account; see Retry-After", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn request_verification(
    State(auth): State<Authenticator>,
    State(email): State<EmailPages>,
    LoginClient(client): LoginClient,
    ApiJson(body): ApiJson<VerificationRequest>,
) -> Result<Response, ApiError> {
    needs(&auth, &email, Needs::Email)?;
    tessera_auth::email_address::EmailAddress::parse(&body.email)
        .map_err(|why| ApiError::Validation(why.to_string()))?;
    let user = auth.check_credentials(Channel::Api, &client, &body.username, &body.password).await.map_err(
        |error| match error {
            LoginError::InvalidCredentials => ApiError::InvalidCredentials,
            LoginError::Throttled(wait) => ApiError::Throttled(wait),
            other => ApiError::from(other),
        },
    )?;
    auth.request_email(&user, &body.email).await.map_err(email_error)?;
    Ok(json_response(StatusCode::ACCEPTED, &Accepted { status: "accepted".into() }))
}
