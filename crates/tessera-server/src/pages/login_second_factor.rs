//! `GET/POST /login/second-factor`: the code prompt after the password (or
//! an OpenID Connect login) of an account with an authenticator app.
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

use super::{with_retry_after, Chrome, PageContext};
use crate::app::AppState;
use crate::audit::AuditKind;
use crate::client_ip::ClientAddress;
use crate::error_pages::ServerError;
use crate::password_policy::check_username;
use crate::reauthentication;
use crate::second_factor::pending_login::PendingLogin;
use crate::second_factor::Verification;

#[derive(Template)]
#[template(path = "login_second_factor.html")]
struct SecondFactorPage {
    page: Chrome,
    error: Option<String>,
    expired: bool,
}

fn view(ctx: &PageContext, error: Option<String>, expired: bool) -> SecondFactorPage {
    SecondFactorPage { page: ctx.chrome("Two-step verification"), error, expired }
}

/// The code prompt; without a pending login, back to `/login`.
pub async fn show(State(state): State<AppState>, ctx: PageContext) -> Response {
    if ctx.user.is_some() {
        return Redirect::to("/profile").into_response();
    }
    if PendingLogin::current(&ctx.session, state.clock.now()).is_none() {
        return Redirect::to("/login").into_response();
    }
    ctx.render(StatusCode::OK, &view(&ctx, None, false))
}

/// The form's field: an authenticator code or a recovery code.
#[derive(Deserialize)]
pub struct CodeForm {
    #[serde(default)]
    code: String,
}

/// Checks the code and, if right, finishes the login the first factor
/// started (see [`super::login::complete`]).
pub async fn submit(
    State(state): State<AppState>,
    ClientAddress(ip): ClientAddress,
    headers: HeaderMap,
    ctx: PageContext,
    CsrfForm(form): CsrfForm<CodeForm>,
) -> Response {
    let now = state.clock.now();
    let Some(pending) = PendingLogin::current(&ctx.session, now) else {
        PendingLogin::clear(&ctx.session);
        return ctx.render(StatusCode::UNAUTHORIZED, &view(&ctx, None, true));
    };
    let user = match state.accounts.database().user_by_id(pending.user_id).await {
        Ok(Some(user)) if user.disabled_at.is_none() => user,
        Ok(_) => {
            PendingLogin::clear(&ctx.session);
            return ctx.render(StatusCode::UNAUTHORIZED, &view(&ctx, None, true));
        }
        Err(error) => return ServerError::unavailable(error).into_response(),
    };
    let username_key = check_username(&user.username).ok();
    let keys = state.throttle.keys(username_key.as_deref(), ip, &headers, state.engine.cookie_config());
    match state.throttle.retry_after(&keys).await {
        Ok(Some(wait)) => return throttled(&ctx, wait),
        Ok(None) => {}
        Err(error) => return ServerError::unavailable(error).into_response(),
    }
    let database = state.accounts.database();
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
                    &view(&ctx, Some("That code is not valid, or it was used already.".to_owned()), false),
                ),
                Err(error) => ServerError::unavailable(error).into_response(),
            };
        }
        Err(error) => return ServerError::unavailable(error).into_response(),
    }
    PendingLogin::clear(&ctx.session);
    super::login::complete(&state, &ctx, &user, &keys, username_key.as_deref(), pending.next.as_deref()).await
}

fn throttled(ctx: &PageContext, wait: std::time::Duration) -> Response {
    crate::metrics::login_throttled();
    let message =
        format!("Too many wrong codes. Please wait {} before trying again.", reauthentication::readable_wait(wait));
    with_retry_after(ctx.render(StatusCode::TOO_MANY_REQUESTS, &view(ctx, Some(message), false)), wait)
}
