//! `POST /auth/oidc/{provider}/start` and `GET /auth/oidc/{provider}/callback`.

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use tessera::Timestamp;
use tessera_axum::{CsrfForm, Problem};

use super::flow_cookie::{random_id, Flow, FLOW_LIFETIME};
use super::identities::{resolve, Outcome, ResolveError};
use crate::app::AppState;
use crate::audit::AuditKind;
use crate::client_ip::ClientAddress;
use crate::error_pages::ServerError;
use crate::pages::PageContext;
use crate::reauthentication::{self, Recency};

/// The start form: its CSRF token, where to go after login, and (when a
/// logged-in user links with a stale authentication) the current password.
#[derive(Deserialize)]
pub struct StartForm {
    next: Option<String>,
    current_password: Option<String>,
}

/// What the provider sends back.
#[derive(Debug, Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    iss: Option<String>,
    error: Option<String>,
}

/// A refused login: a page in the site's look (or a problem document).
fn refused(status: StatusCode, kind: &str, title: &str, detail: &str) -> Response {
    let mut response = status.into_response();
    response.extensions_mut().insert(Problem {
        status,
        kind: kind.to_owned(),
        title: title.to_owned(),
        detail: detail.to_owned(),
    });
    response
}

const START_AGAIN: &str = "Nothing was changed. Please start again from the login page.";

/// Starts a login (or, for a logged-in user, linking an identity): sets the
/// sealed flow cookie and redirects to the provider.
///
/// Linking adds a lasting way into the account, which a password change
/// does not remove, so it needs a recent authentication (ASVS 7.5.1): within
/// the window, or the current password with the form (throttled like
/// `/login`; a correct one steps the session up to a new ID). Otherwise
/// `401` and nothing starts.
pub async fn start(
    State(state): State<AppState>,
    Path(provider_id): Path<String>,
    ClientAddress(ip): ClientAddress,
    headers: HeaderMap,
    ctx: PageContext,
    CsrfForm(form): CsrfForm<StartForm>,
) -> Response {
    let Some(provider) = state.oidc.provider(&provider_id) else { return ServerError::NotFound.into_response() };
    if let Some(user) = &ctx.user {
        let password = form.current_password.as_deref();
        match reauthentication::ensure_recent(&state, &ctx.session, user, password, ip, &headers).await {
            Ok(Recency::Recent) => {}
            Ok(Recency::Stale) => {
                return refused(
                    StatusCode::UNAUTHORIZED,
                    "reauthentication-required",
                    "Confirm it is you",
                    &format!("{} Nothing was linked.", reauthentication::stale_message(user, state.reauth_window)),
                );
            }
            Ok(Recency::Wrong) => {
                return refused(
                    StatusCode::UNAUTHORIZED,
                    "invalid-credentials",
                    "Wrong password",
                    "That is not your current password. Nothing was linked.",
                );
            }
            Ok(Recency::Throttled(wait)) => {
                let mut response = refused(
                    StatusCode::TOO_MANY_REQUESTS,
                    "throttled",
                    "Too many attempts",
                    &format!(
                        "Too many wrong passwords. Please wait {} before trying again. Nothing was linked.",
                        reauthentication::readable_wait(wait)
                    ),
                );
                let seconds = reauthentication::retry_after_seconds(wait);
                response.headers_mut().insert(http::header::RETRY_AFTER, http::HeaderValue::from(seconds));
                return response;
            }
            Err(error) => return ServerError::unavailable(error).into_response(),
        }
    }
    let authorization = match provider.authorize().await {
        Ok(authorization) => authorization,
        Err(error) => {
            tracing::warn!(provider = %provider_id, %error, "OIDC login could not start");
            return refused(
                StatusCode::BAD_GATEWAY,
                "oidc-provider-unavailable",
                "The provider is not answering",
                "tessera could not reach the sign-in provider. Please try again in a moment, or log in another way.",
            );
        }
    };
    let flow = Flow {
        id: random_id(),
        provider: provider_id.clone(),
        state: authorization.state,
        nonce: authorization.nonce,
        pkce_verifier: authorization.pkce_verifier,
        next: state.forward_auth.checked_next(form.next),
        link_user: ctx.user.as_ref().map(|u| u.id),
        expires_at: state.oidc.now_millis() + FLOW_LIFETIME.as_millis() as i64,
    };
    let mut response = Redirect::to(&authorization.url).into_response();
    if let Err(error) = state.oidc.sealer().set(&flow, response.headers_mut()) {
        return ServerError::unavailable(error).into_response();
    }
    tracing::info!(provider = %provider_id, linking = flow.link_user.is_some(), "OIDC login started");
    response
}

/// Finishes a login: checks the flow cookie, `state`, single use, then the
/// code exchange and the ID token, and logs in, links or creates the account.
pub async fn callback(
    State(state): State<AppState>,
    Path(provider_id): Path<String>,
    ctx: PageContext,
    Query(query): Query<CallbackQuery>,
    headers: HeaderMap,
) -> Response {
    let mut response = finish(&state, &provider_id, &ctx, query, &headers).await;
    // The flow cookie is single-use whatever happened.
    state.oidc.sealer().clear(response.headers_mut());
    response
}

async fn finish(
    state: &AppState,
    provider_id: &str,
    ctx: &PageContext,
    query: CallbackQuery,
    headers: &HeaderMap,
) -> Response {
    let Some(provider) = state.oidc.provider(provider_id) else { return ServerError::NotFound.into_response() };
    let now = state.oidc.now_millis();
    let Some(flow) = state.oidc.sealer().read(headers, now).filter(|f| f.provider == provider_id) else {
        tracing::info!(provider = %provider_id, "OIDC callback refused: no valid flow cookie");
        return refused(
            StatusCode::BAD_REQUEST,
            "oidc-no-flow",
            "This sign-in was not started here",
            &format!(
                "This sign-in was started in another browser, took longer than ten minutes, or was already finished. {START_AGAIN}"
            ),
        );
    };
    if let Some(error) = &query.error {
        let code: String = error.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').take(64).collect();
        tracing::info!(provider = %provider_id, error = %code, "OIDC provider refused the login");
        return refused(
            StatusCode::BAD_REQUEST,
            "oidc-provider-refused",
            "The provider did not sign you in",
            &format!("The provider answered \u{201c}{code}\u{201d}. {START_AGAIN}"),
        );
    }
    let state_ok = query.state.as_deref().is_some_and(|s| constant_time_eq(s.as_bytes(), flow.state.as_bytes()));
    let issuer_ok = query.iss.as_deref().is_none_or(|iss| iss == provider.issuer());
    let Some(code) = query.code.filter(|_| state_ok && issuer_ok) else {
        tracing::info!(provider = %provider_id, state_ok, issuer_ok, "OIDC callback refused: state or issuer mismatch");
        return refused(
            StatusCode::BAD_REQUEST,
            "oidc-state-mismatch",
            "Sign-in refused",
            &format!("The answer from the provider does not belong to the sign-in this browser started. {START_AGAIN}"),
        );
    };
    match state.accounts.database().consume_flow(&flow.id, flow.expires_at, now).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::info!(provider = %provider_id, "OIDC callback refused: replayed");
            return refused(
                StatusCode::BAD_REQUEST,
                "oidc-replayed",
                "This sign-in was already used",
                &format!("Each sign-in answer from the provider works once. {START_AGAIN}"),
            );
        }
        Err(error) => return ServerError::unavailable(error).into_response(),
    }
    let identity = match provider.finish(code, flow.pkce_verifier.clone(), &flow.nonce).await {
        Ok(identity) => identity,
        Err(error) => {
            tracing::info!(provider = %provider_id, %error, "OIDC callback refused: provider answer not verified");
            return refused(
                StatusCode::BAD_REQUEST,
                "oidc-unverified",
                "The provider's answer could not be verified",
                &format!("tessera could not confirm this sign-in with the provider. {START_AGAIN}"),
            );
        }
    };

    // Linking: the session must still belong to the user who asked.
    let current = ctx.user.as_ref().map(|u| u.id);
    if let (Some(asked), Some(current)) = (flow.link_user, current) {
        if asked != current {
            return refused(
                StatusCode::CONFLICT,
                "oidc-session-changed",
                "You logged in as someone else meanwhile",
                &format!("The identity was not linked. {START_AGAIN}"),
            );
        }
    }
    let link_by_email = provider.config.link_by_verified_email;
    let outcome = resolve(state.accounts.database(), &identity, flow.link_user, link_by_email, Timestamp(now)).await;
    let user = match outcome {
        Ok(Outcome::Existing(user)) => user,
        Ok(Outcome::Linked(user)) => {
            let database = state.accounts.database();
            database.record(AuditKind::IdentityLinked, Some(user.id), &ctx.device, Timestamp(now)).await;
            user
        }
        Ok(Outcome::Created(user)) => {
            tracing::info!(user_id = user.id, provider = %provider_id, "account created by OIDC login");
            user
        }
        Err(ResolveError::LinkedElsewhere) => {
            return refused(
                StatusCode::CONFLICT,
                "oidc-linked-elsewhere",
                "That identity belongs to another account",
                "It was not linked to yours. Log in with it to use that account, or unlink it there first.",
            );
        }
        Err(ResolveError::Disabled) => {
            return refused(
                StatusCode::FORBIDDEN,
                "account-disabled",
                "Sign-in refused",
                "This account cannot log in. Contact the administrator.",
            );
        }
        Err(ResolveError::Database(error)) => return ServerError::unavailable(error).into_response(),
    };
    let now = Timestamp(now);
    if flow.link_user.is_some() {
        if current != Some(user.id) {
            log_in(state, ctx, &user, now).await;
        }
        tracing::info!(user_id = user.id, provider = %provider_id, "OIDC identity linked");
        return Redirect::to("/account").into_response();
    }
    log_in(state, ctx, &user, now).await;
    tracing::info!(user_id = user.id, provider = %provider_id, "login succeeded (OIDC)");
    let next = state.forward_auth.checked_next(flow.next);
    Redirect::to(next.as_deref().unwrap_or("/profile")).into_response()
}

/// Exactly what a password login does: a new session ID for the user, a
/// fresh authentication mark, an audit entry.
async fn log_in(state: &AppState, ctx: &PageContext, user: &crate::database::User, now: Timestamp) {
    ctx.session.login(user.id.to_string());
    reauthentication::mark(&ctx.session, now);
    state.accounts.database().record(AuditKind::LoginSucceeded, Some(user.id), &ctx.device, now).await;
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
