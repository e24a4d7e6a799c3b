//! `GET/POST /login`: one generic error, a new session ID on success, and
//! brute-force throttling (`429` with `Retry-After`) checked before any
//! password is verified. Accounts with a second factor go on to
//! `/login/second-factor` ([`super::login_second_factor`]) instead of being
//! logged in.

use askama::Template;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use http::header::RETRY_AFTER;
use http::{HeaderMap, HeaderValue, StatusCode};
use serde::Deserialize;
use tessera_axum::CsrfForm;

use super::{Chrome, PageContext};
use crate::accounts::LoginOutcome;
use crate::app::AppState;
use crate::audit::AuditKind;
use crate::client_ip::ClientAddress;
use crate::database::User;
use crate::error_pages::ServerError;
use crate::flash::Flash;
use crate::oidc::ProviderButton;
use crate::password_policy::check_username;
use crate::reauthentication;
use crate::second_factor::pending_login::{FirstFactor, PendingLogin};
use crate::throttle::AttemptKeys;

/// Shown for every failed login, whatever the reason.
const GENERIC_ERROR: &str = "Wrong user name or password.";

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    page: Chrome,
    username: String,
    next: Option<String>,
    error: Option<String>,
    providers: Vec<ProviderButton>,
}

/// `?next=` on the login page.
#[derive(Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

/// The login form's fields.
#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    next: Option<String>,
}

/// The login form. A logged-in visitor goes straight on.
pub async fn show(State(state): State<AppState>, ctx: PageContext, Query(query): Query<NextQuery>) -> Response {
    // Relative paths, or absolute URLs on a forward-auth protected host.
    let next = state.forward_auth.checked_next(query.next);
    if ctx.user.is_some() {
        return Redirect::to(next.as_deref().unwrap_or("/profile")).into_response();
    }
    let view = LoginPage {
        page: ctx.chrome("Log in"),
        username: String::new(),
        next,
        error: None,
        providers: state.oidc.buttons(),
    };
    ctx.render(StatusCode::OK, &view)
}

/// Checks the credentials; on success rotates the session ID and redirects
/// (303) to a safe `next` or the profile.
///
/// The throttle is consulted first: a blocked account, device or address
/// gets `429` with `Retry-After` and no password verification at all. The
/// same happens for known and unknown user names, so throttling tells
/// nothing about which names exist.
pub async fn submit(
    State(state): State<AppState>,
    ClientAddress(ip): ClientAddress,
    headers: HeaderMap,
    ctx: PageContext,
    CsrfForm(form): CsrfForm<LoginForm>,
) -> Response {
    let next = state.forward_auth.checked_next(form.next);
    let now = state.clock.now();
    let database = state.accounts.database();
    let cookie_config = state.engine.cookie_config();
    let username_key = check_username(&form.username).ok();
    let keys = state.throttle.keys(username_key.as_deref(), ip, &headers, cookie_config);
    match state.throttle.retry_after(&keys).await {
        Ok(Some(wait)) => {
            tracing::info!(wait_secs = wait.as_secs(), "login refused: throttled");
            return throttled(&ctx, form.username, next, wait);
        }
        Ok(None) => {}
        Err(error) => return ServerError::unavailable(error).into_response(),
    }
    match state.accounts.authenticate(&form.username, &form.password).await {
        Ok(LoginOutcome::Succeeded(user)) => {
            let first = FirstFactor::Password;
            after_first_factor(&state, &ctx, &user, first, Some(&keys), username_key.as_deref(), next).await
        }
        Ok(LoginOutcome::Failed { known_user }) => {
            crate::metrics::login(false);
            state.activity.login(false);
            database.record(AuditKind::LoginFailed, known_user, &ctx.device, now).await;
            match state.throttle.record_failure(&keys).await {
                // This failure started a block: say so now rather than on the next try.
                Ok(Some(wait)) => throttled(&ctx, form.username, next, wait),
                Ok(None) => {
                    let view = LoginPage {
                        page: ctx.chrome("Log in"),
                        username: form.username,
                        next,
                        error: Some(GENERIC_ERROR.to_owned()),
                        providers: state.oidc.buttons(),
                    };
                    ctx.render(StatusCode::UNAUTHORIZED, &view)
                }
                Err(error) => ServerError::unavailable(error).into_response(),
            }
        }
        Err(error) => ServerError::unavailable(error).into_response(),
    }
}

/// What follows a passed first factor (a password, or an OpenID Connect
/// login): the login itself, or, for an account with two-step verification
/// (or on a server that requires it), the pending login and a 303 to
/// `/login/second-factor`.
///
/// While a login is pending the throttle keeps its count: the first factor
/// alone is not a login, and re-entering the password must not reset the
/// back-off on code guesses.
pub async fn after_first_factor(
    state: &AppState,
    ctx: &PageContext,
    user: &User,
    first_factor: FirstFactor,
    keys: Option<&AttemptKeys>,
    username_key: Option<&str>,
    next: Option<String>,
) -> Response {
    let enrolled = match state.second_factors.is_enabled(user.id).await {
        Ok(enrolled) => enrolled,
        Err(error) => return ServerError::unavailable(error).into_response(),
    };
    if !enrolled && !state.require_second_factor {
        log_in(state, ctx, user, keys).await;
        return logged_in_redirect(state, next.as_deref(), username_key);
    }
    let now = state.clock.now();
    let pending = PendingLogin {
        user_id: user.id,
        since: now.as_millis(),
        first_factor,
        next,
        enroll: !enrolled,
        provider_auth_time: None,
    };
    PendingLogin::start(&ctx.session, &pending);
    tracing::info!(user_id = user.id, enroll = !enrolled, "first factor accepted; second factor required");
    Redirect::to("/login/second-factor").into_response()
}

/// Logs `user` in on this request's session: a new session ID, the
/// recent-authentication mark, a cleared throttle, the audit entry and
/// metrics. Called once every factor the account needs has passed.
pub async fn log_in(state: &AppState, ctx: &PageContext, user: &User, keys: Option<&AttemptKeys>) {
    let now = state.clock.now();
    if let Some(keys) = keys {
        if let Err(error) = state.throttle.record_success(keys).await {
            tracing::warn!(%error, "clearing the login throttle failed");
        }
    }
    ctx.session.login(user.id.to_string());
    crate::metrics::login(true);
    state.activity.login(true);
    reauthentication::mark(&ctx.session, now);
    state.accounts.database().record(AuditKind::LoginSucceeded, Some(user.id), &ctx.device, now).await;
}

/// The answer after [`log_in`]: a 303 to `next` (already checked) or the
/// profile, with the welcome flash and, for a password login, the device
/// cookie that keeps this browser out of the account's lockouts.
pub fn logged_in_redirect(state: &AppState, next: Option<&str>, username_key: Option<&str>) -> Response {
    let mut response = Redirect::to(next.unwrap_or("/profile")).into_response();
    Flash::LoggedIn.set(state.engine.cookie_config(), response.headers_mut());
    if let Some(key) = username_key {
        state.throttle.set_device_cookie(response.headers_mut(), state.engine.cookie_config(), key);
    }
    response
}

/// `429` with the login form, a message and `Retry-After` in whole seconds
/// (rounded up, so a client that waits exactly that long gets through).
fn throttled(ctx: &PageContext, username: String, next: Option<String>, wait: std::time::Duration) -> Response {
    crate::metrics::login_throttled();
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let seconds = seconds.max(1);
    let message = format!(
        "Too many failed login attempts. Please wait {} before trying again.",
        humantime::format_duration(std::time::Duration::from_secs(seconds))
    );
    let view = LoginPage {
        page: ctx.chrome("Log in"),
        username,
        next,
        error: Some(message),
        providers: ctx.state.oidc.buttons(),
    };
    let mut response = ctx.render(StatusCode::TOO_MANY_REQUESTS, &view);
    response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(seconds));
    response
}
