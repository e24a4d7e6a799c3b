//! Email through the API: ask for a reset link, set a new password with
//! it, confirm an address with a verification link's token. None needs a
//! bearer token: each is authorised by the secret mailed to the address
//! (and a reset request by nothing, which is why it answers the same for
//! every address and is throttled per address and per client).

use axum::extract::State;
use axum::response::Response;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use tessera_auth::{Authenticator, Channel, EmailError};
use tessera_axum::LoginClient;

use super::problem::{json_response, ApiError, ApiJson, ProblemDocument};
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
        EmailError::Throttled(wait) => ApiError::Throttled(wait),
        EmailError::InvalidToken | EmailError::InvalidCode => ApiError::InvalidEmailToken,
        EmailError::Taken => ApiError::EmailTaken,
        EmailError::Off => ApiError::NotFound,
        EmailError::Unavailable(error) => ApiError::unavailable(error),
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
    if !email.enabled() {
        return Err(ApiError::NotFound);
    }
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
    if !email.enabled() {
        return Err(ApiError::NotFound);
    }
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
    if !email.enabled() {
        return Err(ApiError::NotFound);
    }
    let confirmed = auth.confirm_email_token(Channel::Api, &client, &body.token).await.map_err(email_error)?;
    Ok(json_response(StatusCode::OK, &VerifiedEmail { email: confirmed.address }))
}
