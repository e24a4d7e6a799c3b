//! Who is calling: a bearer access token, or the browser's session cookie.
//!
//! One identity model for pages and API: the same user may call the API
//! from a script with a token or from the site's own JavaScript with the
//! cookie. Cookie-authenticated unsafe methods must carry `X-CSRF-Token`
//! (browsers attach cookies to cross-site requests; they never attach a
//! bearer token on their own, so token requests need no CSRF check).

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::response::{IntoResponse, Response};
use http::header::AUTHORIZATION;
use http::request::Parts;
use http::Method;
use tessera_axum::{verify_csrf_header, Session};

use super::problem::ApiError;
use super::tokens::TokenService;
use tessera_auth::{SignedInUsers, User};

/// How the caller proved who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// `Authorization: Bearer <access token>`.
    Bearer,
    /// The session cookie (CSRF-checked for unsafe methods).
    Cookie,
}

/// The authenticated, enabled user. Rejections: 401 (problem+json) without
/// valid credentials, 403 for a cookie request without a valid CSRF header,
/// 503 if a dependency is down.
#[derive(Debug, Clone)]
pub struct ApiUser {
    /// The user.
    pub user: User,
    /// How they authenticated.
    pub method: AuthMethod,
}

fn bearer_token(parts: &Parts) -> Option<Result<&str, ApiError>> {
    let value = parts.headers.get(AUTHORIZATION)?;
    let Ok(text) = value.to_str() else { return Some(Err(ApiError::InvalidToken)) };
    let Some((scheme, token)) = text.split_once(' ') else { return Some(Err(ApiError::InvalidToken)) };
    // RFC 9110: the scheme is case-insensitive.
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Some(Err(ApiError::InvalidToken));
    }
    Some(Ok(token.trim()))
}

/// The enabled user behind a session or token already found valid (see
/// `tessera_auth::signed_in_users` for why it may come from memory).
async fn enabled_user(signed_in: &SignedInUsers, id: i64) -> Result<Option<User>, Response> {
    signed_in.enabled(id).await.map_err(|error| ApiError::unavailable(error).into_response())
}

/// The user of an access token (see [`ApiUser`]).
async fn bearer_user(signed_in: &SignedInUsers, tokens: &TokenService, token: &str) -> Result<ApiUser, Response> {
    let user_id = tokens.verify_access(token).await.map_err(IntoResponse::into_response)?;
    // The token passed its user's revocation mark (exact to the millisecond,
    // see `tokens::issued_before`), so the user may come from memory as for
    // a session.
    match enabled_user(signed_in, user_id).await? {
        Some(user) => Ok(ApiUser { user, method: AuthMethod::Bearer }),
        None => Err(ApiError::InvalidToken.into_response()),
    }
}

impl<S> FromRequestParts<S> for ApiUser
where
    S: Send + Sync,
    SignedInUsers: FromRef<S>,
    Arc<TokenService>: FromRef<S>,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        // A request that sends a token is judged by the token alone: a bad
        // token never falls back to the cookie.
        if let Some(token) = bearer_token(parts) {
            let token = token.map_err(IntoResponse::into_response)?;
            // Boxed so that the cookie path's future (every browser request)
            // does not carry the room of the token's checks.
            let (signed_in, tokens) = (SignedInUsers::from_ref(state), Arc::<TokenService>::from_ref(state));
            return Box::pin(bearer_user(&signed_in, &tokens, token)).await;
        }
        let session = Session::from_request_parts(parts, state).await?;
        let Some(user_id) = session.user_id().and_then(|id| id.parse::<i64>().ok()) else {
            return Err(ApiError::Unauthenticated.into_response());
        };
        if !matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS) {
            verify_csrf_header(parts).await?;
        }
        // Only the cache of signed-in users, not the whole `Authenticator`:
        // cloning that (and keeping it in the future) cost every request.
        match enabled_user(&SignedInUsers::from_ref(state), user_id).await? {
            Some(user) => Ok(ApiUser { user, method: AuthMethod::Cookie }),
            None => Err(ApiError::Unauthenticated.into_response()),
        }
    }
}
