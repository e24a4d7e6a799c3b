//! Errors of the JSON API as RFC 9457 problem documents, and the JSON body
//! extractor whose every refusal is a 4xx problem.

use axum::extract::{FromRef, FromRequest, Request};
use axum::response::{IntoResponse, Response};
use http::header::{ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderValue, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tessera_axum::Problem;

/// The largest request body accepted (`server.max_body_bytes`).
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

/// What a `429 throttled` answer counted, so that its detail names what
/// the client should slow down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    /// Requests for a sign-in code or link (`POST /api/login/email`).
    SignInCodes,
    /// Requests that mail someone: reset links, verification mails, or
    /// checks of a mailed code.
    Mails,
    /// Failed sign-ins without a password: mailed codes or links, passkeys.
    FailedSignIns,
    /// Passkey ceremonies begun (challenges asked for).
    PasskeyCeremonies,
}

impl Counted {
    /// The detail's sentence, before "Retry after …".
    fn sentence(self) -> &'static str {
        match self {
            Counted::SignInCodes => {
                "Too many sign-in codes were asked for this email address, or from your network address."
            }
            Counted::Mails => "Too many emails were asked for this email address, or from your network address.",
            Counted::FailedSignIns => "Too many failed sign-in attempts.",
            Counted::PasskeyCeremonies => {
                "Too many passkey ceremonies were begun from your network address (or, if it signed in here \
                 before, from this browser)."
            }
        }
    }
}

/// Everything an API handler can refuse with. Each variant has a stable
/// problem `type`, `/problems/<kind>`.
#[derive(Debug)]
pub enum ApiError {
    /// 400 `malformed-json`: the body is not JSON.
    MalformedJson(String),
    /// 400 `invalid-utf8`: the body is not UTF-8.
    InvalidUtf8,
    /// 400 `invalid-query`: the query string does not parse.
    InvalidQuery(String),
    /// 415 `unsupported-media-type`: the body is not `application/json`.
    UnsupportedMediaType,
    /// 415 `unsupported-content-encoding`: the body is compressed (or
    /// otherwise encoded) in a way this server does not decode.
    UnsupportedContentEncoding,
    /// 413 `payload-too-large`.
    PayloadTooLarge,
    /// 422 `validation`: JSON of the wrong shape or with invalid values.
    Validation(String),
    /// 409 `username-taken`.
    UsernameTaken,
    /// 401 `unauthenticated`: no credentials.
    Unauthenticated,
    /// 401 `invalid-credentials`: sign-in failed, whatever the reason.
    InvalidCredentials,
    /// 401 `second-factor-required`: the password is right and the account
    /// has two-step verification on; send `second_factor` too.
    SecondFactorRequired,
    /// 401 `invalid-second-factor`: the code is wrong or was used already.
    InvalidSecondFactor,
    /// 401 `invalid-token`: the bearer token was refused, whatever the reason.
    InvalidToken,
    /// 401 `invalid-refresh-token`: unknown, expired, revoked or reused.
    InvalidRefreshToken,
    /// 404 `not-found`.
    NotFound,
    /// 400 `invalid-email-token`: a mailed link's token is unknown, used or expired.
    InvalidEmailToken,
    /// 409 `email-taken`: another account has this address.
    EmailTaken,
    /// 403 `email-unverified`: the server requires a verified address and
    /// the account's is not verified yet.
    EmailUnverified,
    /// 401 `invalid-email-code`: a sign-in code or link is wrong, used,
    /// expired, checked too often, or not of this attempt.
    InvalidEmailCode,
    /// 429 `throttled`: too many failed password attempts; retry after the
    /// duration.
    Throttled(std::time::Duration),
    /// 429 `throttled`: too many of what [`Counted`] says (not passwords);
    /// retry after the duration.
    TooMany(Counted, std::time::Duration),
    /// 403 `forbidden`: the caller may not do this (with the reason).
    Forbidden(&'static str),
    /// 403: the registration policy refuses a new account; the kind
    /// (`registration-closed`, `invitation-required`, `invalid-invitation`)
    /// and the reason.
    RegistrationRefused(&'static str, &'static str),
    /// A passkey ceremony was refused: 400 for a challenge that is gone
    /// or a name that will not do, 401 for an assertion that proves
    /// nothing, 409 for an authenticator registered already; the kind is
    /// the refusal's (`passkey-…`).
    Passkey(tessera_auth::PasskeyRefusal),
    /// 429 `throttled`: too many accounts created from this address lately.
    SignUpThrottled(std::time::Duration),
    /// 503 `busy`: the password hashing queue is full; nothing was checked
    /// or counted. `Retry-After` is short.
    Busy,
    /// 503 `service-unavailable`; the text goes to the log only.
    Unavailable(String),
}

impl ApiError {
    /// Wraps the failure of a dependency.
    pub fn unavailable(error: impl std::fmt::Display) -> Self {
        ApiError::Unavailable(error.to_string())
    }
}

impl From<tessera_auth::LoginError> for ApiError {
    /// A login step that could not be decided: busy or unavailable (the
    /// caller maps the verdicts first).
    fn from(error: tessera_auth::LoginError) -> Self {
        match error {
            tessera_auth::LoginError::Busy => ApiError::Busy,
            other => ApiError::unavailable(other),
        }
    }
}

impl ApiError {
    /// Status, kind, title and detail.
    fn parts(&self) -> (StatusCode, &'static str, &'static str, String) {
        use ApiError::*;
        match self {
            MalformedJson(detail) => (
                StatusCode::BAD_REQUEST,
                "malformed-json",
                "Malformed JSON",
                format!("The body is not valid JSON: {detail}."),
            ),
            InvalidUtf8 => {
                (StatusCode::BAD_REQUEST, "invalid-utf8", "Invalid UTF-8", "The body is not valid UTF-8.".into())
            }
            InvalidQuery(detail) => (
                StatusCode::BAD_REQUEST,
                "invalid-query",
                "Invalid query",
                format!("The query string is invalid: {detail}."),
            ),
            UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
                "Send the body as application/json.".into(),
            ),
            UnsupportedContentEncoding => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-content-encoding",
                "Unsupported content encoding",
                UNSUPPORTED_ENCODING_DETAIL.into(),
            ),
            PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "Request too large",
                "The request body is larger than this server accepts.".into(),
            ),
            Validation(detail) => (StatusCode::UNPROCESSABLE_ENTITY, "validation", "Invalid input", detail.clone()),
            UsernameTaken => {
                (StatusCode::CONFLICT, "username-taken", "User name taken", "That user name is taken.".into())
            }
            Unauthenticated => (
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "Authentication required",
                "Send a valid bearer token, or log in.".into(),
            ),
            InvalidCredentials => (
                StatusCode::UNAUTHORIZED,
                "invalid-credentials",
                "Sign-in failed",
                "Wrong user name or password.".into(),
            ),
            SecondFactorRequired => (
                StatusCode::UNAUTHORIZED,
                "second-factor-required",
                "Second factor required",
                "This account has two-step verification on: send the authenticator app's current code (or a \
                 recovery code) in second_factor."
                    .into(),
            ),
            InvalidSecondFactor => (
                StatusCode::UNAUTHORIZED,
                "invalid-second-factor",
                "Second factor refused",
                "The code is wrong, expired or was used already.".into(),
            ),
            InvalidToken => (
                StatusCode::UNAUTHORIZED,
                "invalid-token",
                "Invalid access token",
                "The access token is invalid or expired. Refresh it, or sign in again.".into(),
            ),
            InvalidRefreshToken => (
                StatusCode::UNAUTHORIZED,
                "invalid-refresh-token",
                "Invalid refresh token",
                "The refresh token is invalid, expired or revoked. Sign in again.".into(),
            ),
            Throttled(wait) => (
                StatusCode::TOO_MANY_REQUESTS,
                "throttled",
                "Too many attempts",
                format!("Too many failed password attempts. Retry after {} seconds.", retry_seconds(*wait)),
            ),
            TooMany(counted, wait) => (
                StatusCode::TOO_MANY_REQUESTS,
                "throttled",
                "Too many attempts",
                format!("{} Retry after {} seconds.", counted.sentence(), retry_seconds(*wait)),
            ),
            SignUpThrottled(wait) => (
                StatusCode::TOO_MANY_REQUESTS,
                "throttled",
                "Too many sign-ups",
                format!(
                    "Too many sign-ups were attempted from your network address. Retry after {} seconds.",
                    retry_seconds(*wait)
                ),
            ),
            Busy => (
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "Busy",
                "The server is busy checking passwords. Nothing was changed or counted against you; retry after \
                 the Retry-After seconds."
                    .into(),
            ),
            Forbidden(reason) => (StatusCode::FORBIDDEN, "forbidden", "Not allowed", (*reason).to_owned()),
            RegistrationRefused(kind, reason) => {
                (StatusCode::FORBIDDEN, kind, "Registration refused", (*reason).to_owned())
            }
            NotFound => (StatusCode::NOT_FOUND, "not-found", "Not found", "There is no such resource.".into()),
            Passkey(refusal) => {
                use tessera_auth::PasskeyRefusal as R;
                let status = match refusal {
                    R::Expired | R::InvalidName => StatusCode::BAD_REQUEST,
                    R::AlreadyRegistered => StatusCode::CONFLICT,
                    R::UnknownCredential { .. } | R::WrongUser | R::Cloned { .. } | R::Invalid(_) => {
                        StatusCode::UNAUTHORIZED
                    }
                };
                let mut detail = refusal.to_string();
                if let Some(first) = detail.get_mut(0..1) {
                    first.make_ascii_uppercase();
                }
                (status, refusal.kind(), "Passkey refused", detail + ".")
            }
            EmailUnverified => (
                StatusCode::FORBIDDEN,
                "email-unverified",
                "Email address not verified",
                "This server signs in only accounts with a verified email address. Open the link mailed to you, \
                 or ask for it again with POST /api/email/verification."
                    .into(),
            ),
            InvalidEmailCode => (
                StatusCode::UNAUTHORIZED,
                "invalid-email-code",
                "Sign-in failed",
                "The code or link is wrong, was used, expired, was tried too often, or belongs to another attempt. \
                 Ask for a new one."
                    .into(),
            ),
            InvalidEmailToken => (
                StatusCode::BAD_REQUEST,
                "invalid-email-token",
                "Invalid link",
                "The token is unknown, was used already or expired. Ask for a new mail.".into(),
            ),
            EmailTaken => {
                (StatusCode::CONFLICT, "email-taken", "Address taken", "Another account has this email address.".into())
            }
            Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "service-unavailable",
                "Temporarily unavailable",
                "A service tessera depends on is not answering. Nothing was changed; please try again in a moment."
                    .into(),
            ),
        }
    }
}

/// The detail of a 415 for a `Content-Encoding` this server does not decode.
pub const UNSUPPORTED_ENCODING_DETAIL: &str =
    "This server does not decode compressed request bodies: send the body without Content-Encoding.";

/// An RFC 9457 problem document, as the OpenAPI document describes it
/// (written by [`Problem::json_response`]).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProblemDocument {
    /// Stable per kind of error: `/problems/<kind>`.
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the kind.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What happened in this case.
    pub detail: String,
}

/// Whole seconds to wait, rounded up so that waiting exactly that long works.
fn retry_seconds(wait: std::time::Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Unavailable(error) = &self {
            tracing::warn!(%error, "dependency unavailable; answering 503");
        }
        let (status, kind, title, detail) = self.parts();
        let mut response = Problem::new(status, kind, title, &detail).json_response();
        let headers = response.headers_mut();
        match self {
            ApiError::InvalidToken => {
                headers.insert(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"tessera\", error=\"invalid_token\""),
                );
            }
            ApiError::UnsupportedContentEncoding => {
                headers.insert(ACCEPT_ENCODING, HeaderValue::from_static("identity"));
            }
            ApiError::Unavailable(_) => {
                headers.insert(RETRY_AFTER, HeaderValue::from_static("5"));
            }
            ApiError::Throttled(wait) | ApiError::TooMany(_, wait) | ApiError::SignUpThrottled(wait) => {
                headers.insert(RETRY_AFTER, HeaderValue::from(retry_seconds(wait)));
            }
            ApiError::Busy => {
                crate::metrics::hashing_busy();
                headers.insert(RETRY_AFTER, HeaderValue::from(tessera_axum::BUSY_RETRY_AFTER_SECONDS));
            }
            _ => {}
        }
        // RFC 9110 §15.5.2: every 401 names a scheme the client can use.
        if status == StatusCode::UNAUTHORIZED && !headers.contains_key(WWW_AUTHENTICATE) {
            headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static(crate::http_semantics::BEARER_CHALLENGE));
        }
        response
    }
}

/// A JSON request body. Refusals: 415 unless the content type is
/// `application/json` (or `…+json`), 413 over the body limit, 400 for
/// invalid UTF-8 or malformed JSON, 422 for JSON of the wrong shape.
#[derive(Debug, Clone)]
pub struct ApiJson<T>(pub T);

/// Whether `content_type` is JSON: `application/json`, `application/*+json`,
/// with any parameters.
fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
    BodyLimit: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let content_type = request.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        if !is_json(content_type) {
            return Err(ApiError::UnsupportedMediaType);
        }
        // Also refused server-wide (crate::http_semantics); kept here so the
        // extractor is right wherever it is mounted.
        if crate::http_semantics::unsupported_content_encoding(request.headers()) {
            return Err(ApiError::UnsupportedContentEncoding);
        }
        // The server-wide RequestBodyLimitLayer refuses bodies that announce
        // a larger Content-Length; this bounds chunked ones too.
        let bytes = axum::body::to_bytes(request.into_body(), BodyLimit::from_ref(state).0)
            .await
            .map_err(|_| ApiError::PayloadTooLarge)?;
        if std::str::from_utf8(&bytes).is_err() {
            return Err(ApiError::InvalidUtf8);
        }
        parse_json(&bytes).map(ApiJson)
    }
}

/// Parses a JSON object: syntax errors are 400, shape errors 422.
///
/// Every API body is an object. serde would also fill a struct from an
/// array of its fields in order (`["Widget","Blue","12.50"]`), which no
/// client means and which the OpenAPI document does not allow: any other
/// top-level value than an object is refused with 422 first.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let classify = |error: serde_json::Error| match error.classify() {
        serde_json::error::Category::Data => ApiError::Validation(capitalize(&error.to_string())),
        _ => ApiError::MalformedJson(error.to_string()),
    };
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(classify)?;
    if !value.is_object() {
        let found = match value {
            serde_json::Value::Array(_) => "an array",
            serde_json::Value::String(_) => "a string",
            serde_json::Value::Number(_) => "a number",
            serde_json::Value::Bool(_) => "a boolean",
            _ => "null",
        };
        return Err(ApiError::Validation(format!("The body must be a JSON object, not {found}.")));
    }
    // Parsed again from the bytes (not the value) for errors with positions.
    serde_json::from_slice(bytes).map_err(classify)
}

fn capitalize(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// A JSON answer with `Cache-Control: no-store` (API answers are personal).
pub fn json_response(status: StatusCode, value: &impl Serialize) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => {
            let mut response = (status, body).into_response();
            response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Err(error) => ApiError::Unavailable(format!("serializing a response failed: {error}")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        for ok in
            ["application/json", "application/json; charset=utf-8", "Application/JSON", "application/merge-patch+json"]
        {
            assert!(is_json(ok), "{ok}");
        }
        for bad in ["", "text/plain", "application/x-www-form-urlencoded", "text/json", "application/jsonx"] {
            assert!(!is_json(bad), "{bad}");
        }
    }
}
