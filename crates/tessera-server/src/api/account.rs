//! The account operations of the pages, for API clients: the device list,
//! revoking sessions, changing the password, deleting the account.
//!
//! Each needs the current password (or, for listing, just authentication),
//! so a stolen access token alone cannot lock the owner out. The password is
//! checked behind the login throttle (`429` with `Retry-After`), so neither
//! can a stolen token or cookie be used to guess it; a cookie caller who
//! confirms it steps up to a new session ID.

use axum::extract::Path;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use tessera_auth::Channel;
use tessera_axum::LoginClient;
use tessera_axum::{ClientDevice, Session};

use super::identity::{ApiUser, AuthMethod};
use super::passkeys::{login_refused, SignInAssertion};
use super::problem::{json_response, ApiError, ApiJson, ProblemDocument};
use super::rfc3339;
use crate::audit::AuditKind;
use crate::auth_events::ServerEvents;
use crate::database::Database;
use crate::reauthentication::{self, Confirmation, Reauthentication};
use crate::services::services;
use std::sync::Arc;
use tessera::SessionEngine;
use tessera::{Clock, Timestamp};
use tessera_auth::accounts::RegisterError;
use tessera_auth::Authenticator;

/// One session (device) of the user.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionView {
    /// The public handle (never the session ID).
    pub handle: String,
    /// When it began, RFC 3339.
    pub created_at: String,
    /// Last recorded activity, RFC 3339.
    pub last_seen: String,
    /// Client address when it began.
    pub ip: Option<String>,
    /// Client user agent when it began.
    pub user_agent: Option<String>,
    /// Whether this request came with this session's cookie.
    pub current: bool,
}

/// The current password, to confirm a sensitive operation — or, instead,
/// a fresh assertion of one of the user's passkeys (what accounts without
/// a password confirm with).
#[derive(Deserialize, utoipa::ToSchema)]
pub struct PasswordConfirmation {
    /// The current password.
    #[serde(default)]
    pub current_password: String,
    /// Instead of the password: an assertion of one of the user's passkeys
    /// answering `POST /api/passkeys/signin/begin`.
    #[serde(default)]
    pub confirmation: Option<SignInAssertion>,
}

/// A password change (or, for an account without one, setting it).
#[derive(Deserialize, utoipa::ToSchema)]
pub struct PasswordChange {
    /// The current password.
    #[serde(default)]
    pub current_password: String,
    /// Instead of the password: an assertion of one of the user's passkeys
    /// answering `POST /api/passkeys/signin/begin`.
    #[serde(default)]
    pub confirmation: Option<SignInAssertion>,
    /// The new password (the site's policy applies).
    pub new_password: String,
}

/// What revocation did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Revoked {
    /// How many sessions ended.
    pub revoked: u64,
    /// How many API sign-ins (refresh-token families, with their access
    /// tokens) ended: all of them, the caller's own included when it calls
    /// with a bearer token.
    pub tokens_revoked: u64,
}

services! {
    /// What the account operations use: recent authentication, the core,
    /// the server's tables, the audit trail, the sessions and the clock.
    pub struct AccountApi {
        reauth: Reauthentication,
        auth: Authenticator,
        db: Database,
        events: ServerEvents,
        engine: SessionEngine,
        clock: Arc<dyn Clock>,
    }
}

/// Checks the current password — or, when one came, a passkey assertion of
/// the caller's — through the authentication core, behind the login
/// throttle.
async fn confirm(
    api: &AccountApi,
    caller: &ApiUser,
    password: &str,
    confirmation: Option<&SignInAssertion>,
    client: &LoginClient,
) -> Result<(), ApiError> {
    let reauth = &api.reauth;
    if let Some(confirmation) = confirmation {
        let passkeys = api.auth.passkeys().ok_or(ApiError::NotFound)?;
        let ceremony =
            passkeys.take_authentication(&confirmation.ceremony, None).await.map_err(ApiError::unavailable)?;
        let confirmed = match ceremony {
            Some(ceremony) => {
                api.auth
                    .confirm_passkey(Channel::Api, &client.0, &caller.user, ceremony, &confirmation.credential)
                    .await
            }
            None => Err(api.auth.passkey_without_ceremony(Channel::Api, &client.0).await),
        };
        return confirmed.map_err(login_refused);
    }
    let verdict =
        reauth.confirm_password(Channel::Api, &client.0, &caller.user, password).await.map_err(ApiError::from)?;
    match verdict {
        Confirmation::Confirmed => Ok(()),
        Confirmation::Wrong => Err(ApiError::InvalidCredentials),
        Confirmation::Throttled(wait) => Err(ApiError::Throttled(wait)),
    }
}

/// After a confirmed password, a cookie caller's session steps up: a new ID
/// and a fresh recent-authentication mark. Called after any revocation, so
/// that the revocation still sees the ID the request came with.
fn step_up(now: Timestamp, caller: &ApiUser, session: &Session) {
    if caller.method == AuthMethod::Cookie {
        reauthentication::stepped_up(session, now);
    }
}

/// The cookie session of a cookie-authenticated caller (none for bearer callers).
fn own_session(caller: &ApiUser, session: &Session) -> Option<tessera::SessionKey> {
    match caller.method {
        AuthMethod::Cookie => session.key(),
        AuthMethod::Bearer => None,
    }
}

/// `GET /api/sessions`: the user's active sessions.
#[utoipa::path(
    get,
    path = "/api/sessions",
    tag = "account",
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "Active sessions, most recently used first", body = [SessionView]),
        (status = 401, description = "No valid token or session", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn list(api: AccountApi, caller: ApiUser, session: Session) -> Result<Response, ApiError> {
    let current = own_session(&caller, &session);
    let records = api.engine.sessions_of(&caller.user.id.to_string()).await.map_err(ApiError::unavailable)?;
    let views: Vec<SessionView> = records
        .iter()
        .map(|record| SessionView {
            handle: record.key.handle().to_string(),
            created_at: rfc3339(record.created_at),
            last_seen: rfc3339(record.last_active),
            ip: record.device.ip.clone(),
            user_agent: record.device.user_agent.clone(),
            current: Some(record.key) == current,
        })
        .collect();
    Ok(json_response(StatusCode::OK, &views))
}

/// `DELETE /api/sessions/{handle}`: ends one session (not the caller's own:
/// sign out for that). Needs the current password.
#[utoipa::path(
    delete,
    path = "/api/sessions/{handle}",
    tag = "account",
    security(("bearer" = []), ("cookie" = [])),
    params(("handle" = String, Path, description = "The session's public handle")),
    request_body = PasswordConfirmation,
    responses(
        (status = 204, description = "The session ended"),
        (status = 401, description = "Not authenticated, or wrong current password", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 429, description = "Too many wrong passwords for this account or address; see Retry-After", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 403, description = "The caller's own session", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 404, description = "No such session of this user", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn revoke(
    api: AccountApi,
    caller: ApiUser,
    session: Session,
    ClientDevice(device): ClientDevice,
    origin: LoginClient,
    Path(handle): Path<String>,
    ApiJson(body): ApiJson<PasswordConfirmation>,
) -> Result<Response, ApiError> {
    confirm(&api, &caller, &body.current_password, body.confirmation.as_ref(), &origin).await?;
    if own_session(&caller, &session).is_some_and(|key| key.handle().matches(&handle)) {
        return Err(ApiError::Forbidden("This is the session of this request; sign out instead."));
    }
    if !api.engine.revoke(&caller.user.id.to_string(), &handle).await.map_err(ApiError::unavailable)? {
        return Err(ApiError::NotFound);
    }
    api.events.record(AuditKind::SessionRevoked, Some(caller.user.id), &device, api.clock.now()).await;
    step_up(api.clock.now(), &caller, &session);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /api/sessions/revoke-others`: ends every session but the caller's
/// own (a bearer caller has none: all end), and every API sign-in of the
/// user (refresh tokens and their access tokens; a bearer caller's own too).
/// Needs the current password.
#[utoipa::path(
    post,
    path = "/api/sessions/revoke-others",
    tag = "account",
    security(("bearer" = []), ("cookie" = [])),
    request_body = PasswordConfirmation,
    responses(
        (status = 200, description = "Other sessions ended", body = Revoked),
        (status = 401, description = "Not authenticated, or wrong current password", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 429, description = "Too many wrong passwords for this account or address; see Retry-After", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn revoke_others(
    api: AccountApi,
    caller: ApiUser,
    session: Session,
    ClientDevice(device): ClientDevice,
    origin: LoginClient,
    ApiJson(body): ApiJson<PasswordConfirmation>,
) -> Result<Response, ApiError> {
    confirm(&api, &caller, &body.current_password, body.confirmation.as_ref(), &origin).await?;
    let keep = own_session(&caller, &session);
    // "Everywhere else" includes API sign-ins: a device list that ends
    // browsers but leaves a stolen refresh token working would not be.
    let ended = api.auth.revoke_everything(caller.user.id, keep.as_ref()).await.map_err(ApiError::unavailable)?;
    api.events.record(AuditKind::OtherSessionsRevoked, Some(caller.user.id), &device, api.clock.now()).await;
    // Also re-issues a sealed cookie after the revocation mark.
    step_up(api.clock.now(), &caller, &session);
    Ok(json_response(StatusCode::OK, &Revoked { revoked: ended.sessions, tokens_revoked: ended.tokens }))
}

/// `POST /api/password`: changes the password; every other session and every
/// refresh-token family of the user ends.
#[utoipa::path(
    post,
    path = "/api/password",
    tag = "account",
    security(("bearer" = []), ("cookie" = [])),
    request_body = PasswordChange,
    responses(
        (status = 204, description = "Changed; other sessions and all refresh tokens revoked"),
        (status = 401, description = "Not authenticated, or wrong current password", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 429, description = "Too many wrong passwords for this account or address; see Retry-After", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "The new password breaks the policy (the detail says why)", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn change_password(
    api: AccountApi,
    caller: ApiUser,
    session: Session,
    origin: LoginClient,
    ApiJson(body): ApiJson<PasswordChange>,
) -> Result<Response, ApiError> {
    confirm(&api, &caller, &body.current_password, body.confirmation.as_ref(), &origin).await?;
    let keep = own_session(&caller, &session);
    match api.auth.change_password(Channel::Api, &origin.0, &caller.user, &body.new_password, keep.as_ref()).await {
        Ok(_) => {}
        Err(RegisterError::Unavailable(error)) => return Err(ApiError::unavailable(error)),
        Err(RegisterError::Busy) => return Err(ApiError::Busy),
        Err(error) => return Err(ApiError::Validation(error.to_string())),
    }
    if keep.is_some() {
        step_up(api.clock.now(), &caller, &session);
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `DELETE /api/account`: deletes the account, its sessions and tokens.
#[utoipa::path(
    delete,
    path = "/api/account",
    tag = "account",
    security(("bearer" = []), ("cookie" = [])),
    request_body = PasswordConfirmation,
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Not authenticated, or wrong current password", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 429, description = "Too many wrong passwords for this account or address; see Retry-After", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn delete(
    api: AccountApi,
    caller: ApiUser,
    session: Session,
    origin: LoginClient,
    ApiJson(body): ApiJson<PasswordConfirmation>,
) -> Result<Response, ApiError> {
    confirm(&api, &caller, &body.current_password, body.confirmation.as_ref(), &origin).await?;
    api.auth.revoke_everything(caller.user.id, None).await.map_err(ApiError::unavailable)?;
    api.db.delete_user(caller.user.id).await.map_err(ApiError::unavailable)?;
    tracing::info!(target: "tessera::audit", event = AuditKind::AccountDeleted.as_str(), user_id = caller.user.id, "account deleted");
    session.logout();
    Ok(StatusCode::NO_CONTENT.into_response())
}
