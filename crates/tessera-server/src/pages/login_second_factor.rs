//! `GET/POST /login/second-factor`: the step after the password (or an
//! OpenID Connect login) of an account with two-step verification: the
//! code prompt; or, on a server that requires a second factor, setting up
//! an authenticator app for an account that has none, before it is logged
//! in at all.
//!
//! Wrong codes count in the login throttle under the same keys as wrong
//! passwords, so six digits cannot be guessed faster than a password; the
//! count is cleared only when the whole login succeeds.

use askama::Template;
use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use tessera_axum::CsrfForm;

use super::account_two_factor::SetupView;
use super::login::{log_in, logged_in_redirect};
use super::{with_retry_after, Chrome, PageContext};
use crate::app::AppState;
use crate::audit::AuditKind;
use crate::client_ip::ClientAddress;
use crate::database::User;
use crate::error_pages::ServerError;
use crate::password_policy::check_username;
use crate::reauthentication;
use crate::second_factor::pending_login::{FirstFactor, PendingLogin};
use crate::second_factor::Verification;
use crate::throttle::AttemptKeys;
use tessera::Timestamp;

#[derive(Template)]
#[template(path = "login_second_factor.html")]
struct SecondFactorPage {
    page: Chrome,
    error: Option<String>,
    expired: bool,
    /// Setting up an app at login (the server requires a second factor).
    setup: Option<SetupView>,
    /// The recovery codes of a setup just finished, and where to go next.
    new_codes: Option<(Vec<String>, String)>,
}

fn view(ctx: &PageContext, error: Option<String>) -> SecondFactorPage {
    SecondFactorPage { page: ctx.chrome("Two-step verification"), error, expired: false, setup: None, new_codes: None }
}

fn expired(ctx: &PageContext) -> Response {
    PendingLogin::clear(&ctx.session);
    let page = SecondFactorPage { expired: true, ..view(ctx, None) };
    ctx.render(StatusCode::UNAUTHORIZED, &page)
}

/// The user of a pending login, if it still may log in.
async fn pending_user(state: &AppState, pending: &PendingLogin) -> Result<Option<User>, Response> {
    match state.accounts.database().user_by_id(pending.user_id).await {
        Ok(user) => Ok(user.filter(|u| u.disabled_at.is_none())),
        Err(error) => Err(ServerError::unavailable(error).into_response()),
    }
}

/// The setup of a pending enrolment: the secret already shown, or a new one.
async fn enrolment_setup(state: &AppState, user: &User) -> Result<Option<SetupView>, Response> {
    let unavailable = |error| ServerError::unavailable(error).into_response();
    let secret = match state.second_factors.setup_in_progress(user.id).await.map_err(unavailable)? {
        Some(secret) => Some(secret),
        None => state.second_factors.begin_setup(user.id).await.map_err(unavailable)?,
    };
    Ok(secret.map(|secret| SetupView::new(&secret, &user.username)))
}

/// The code prompt, or the setup of an app; without a pending login, back
/// to `/login`.
pub async fn show(State(state): State<AppState>, ctx: PageContext) -> Response {
    if ctx.user.is_some() {
        return Redirect::to("/profile").into_response();
    }
    let Some(pending) = PendingLogin::current(&ctx.session, state.clock.now()) else {
        return Redirect::to("/login").into_response();
    };
    let mut page = view(&ctx, None);
    if pending.enroll {
        let Some(user) = (match pending_user(&state, &pending).await {
            Ok(user) => user,
            Err(response) => return response,
        }) else {
            return expired(&ctx);
        };
        // Shown again on reload rather than replaced: the user may have
        // scanned it already.
        page.setup = match enrolment_setup(&state, &user).await {
            Ok(setup) => setup,
            Err(response) => return response,
        };
    }
    ctx.render(StatusCode::OK, &page)
}

/// The form's field: an authenticator code or a recovery code.
#[derive(Deserialize)]
pub struct CodeForm {
    #[serde(default)]
    code: String,
}

/// Checks the code (or, when enrolling, confirms the new app with it) and,
/// if right, finishes the login the first factor started.
pub async fn submit(
    State(state): State<AppState>,
    ClientAddress(ip): ClientAddress,
    headers: HeaderMap,
    ctx: PageContext,
    CsrfForm(form): CsrfForm<CodeForm>,
) -> Response {
    let now = state.clock.now();
    let Some(pending) = PendingLogin::current(&ctx.session, now) else { return expired(&ctx) };
    let user = match pending_user(&state, &pending).await {
        Ok(Some(user)) => user,
        Ok(None) => return expired(&ctx),
        Err(response) => return response,
    };
    let username_key = check_username(&user.username).ok();
    let keys = state.throttle.keys(username_key.as_deref(), ip, &headers, state.engine.cookie_config());
    match state.throttle.retry_after(&keys).await {
        Ok(Some(wait)) => return throttled(&ctx, wait),
        Ok(None) => {}
        Err(error) => return ServerError::unavailable(error).into_response(),
    }
    let database = state.accounts.database();
    if pending.enroll {
        return match state.second_factors.confirm_setup(user.id, &form.code).await {
            Ok(Some(codes)) => {
                tracing::info!(user_id = user.id, "two-step verification turned on at login");
                database.record(AuditKind::SecondFactorEnabled, Some(user.id), &ctx.device, now).await;
                PendingLogin::clear(&ctx.session);
                finish(&state, &ctx, &user, &keys, &pending).await;
                let next = pending.next.unwrap_or_else(|| "/profile".to_owned());
                let page = SecondFactorPage { new_codes: Some((codes, next)), ..view(&ctx, None) };
                let mut response = ctx.render(StatusCode::OK, &page);
                if let Some(key) = &username_key {
                    state.throttle.set_device_cookie(response.headers_mut(), state.engine.cookie_config(), key);
                }
                response
            }
            Ok(None) => {
                let setup = match enrolment_setup(&state, &user).await {
                    Ok(setup) => setup,
                    Err(response) => return response,
                };
                let message = "That code does not match. Check the app's clock and enter the code it shows now.";
                let page = SecondFactorPage { setup, ..view(&ctx, Some(message.to_owned())) };
                ctx.render(StatusCode::UNPROCESSABLE_ENTITY, &page)
            }
            Err(error) => ServerError::unavailable(error).into_response(),
        };
    }
    match state.second_factors.verify(user.id, &form.code).await {
        Ok(Verification::Totp) => {}
        Ok(Verification::RecoveryCode { left }) => {
            tracing::info!(user_id = user.id, left, "recovery code used");
            database.record(AuditKind::RecoveryCodeUsed, Some(user.id), &ctx.device, now).await;
        }
        Ok(Verification::Wrong) => {
            tracing::info!(user_id = user.id, "second factor refused");
            crate::metrics::login(false);
            state.activity.login(false);
            database.record(AuditKind::SecondFactorFailed, Some(user.id), &ctx.device, now).await;
            return match state.throttle.record_failure(&keys).await {
                Ok(Some(wait)) => throttled(&ctx, wait),
                Ok(None) => ctx.render(
                    StatusCode::UNAUTHORIZED,
                    &view(&ctx, Some("That code is not valid, or it was used already.".to_owned())),
                ),
                Err(error) => ServerError::unavailable(error).into_response(),
            };
        }
        Err(error) => return ServerError::unavailable(error).into_response(),
    }
    PendingLogin::clear(&ctx.session);
    finish(&state, &ctx, &user, &keys, &pending).await;
    // The device cookie is for password logins: an OIDC login has no
    // password to protect from lockout.
    let device_key = (pending.first_factor == FirstFactor::Password).then_some(username_key).flatten();
    logged_in_redirect(&state, pending.next.as_deref(), device_key.as_deref())
}

/// Logs the user in; after a provider login the session's authentication
/// time is the provider's `auth_time`, as for any provider login.
async fn finish(state: &AppState, ctx: &PageContext, user: &User, keys: &AttemptKeys, pending: &PendingLogin) {
    log_in(state, ctx, user, Some(keys)).await;
    if pending.first_factor == FirstFactor::Oidc {
        let now = state.clock.now();
        reauthentication::mark_provider_login(&ctx.session, pending.provider_auth_time.map(Timestamp), now);
    }
}

fn throttled(ctx: &PageContext, wait: std::time::Duration) -> Response {
    crate::metrics::login_throttled();
    let message =
        format!("Too many wrong codes. Please wait {} before trying again.", reauthentication::readable_wait(wait));
    with_retry_after(ctx.render(StatusCode::TOO_MANY_REQUESTS, &view(ctx, Some(message))), wait)
}
