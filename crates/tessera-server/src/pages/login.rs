//! `GET/POST /login`: one generic error, a new session ID on success, and
//! brute-force throttling (`429` with `Retry-After`) checked before any
//! password is verified. Accounts with a second factor go on to
//! `/login/second-factor` ([`super::login_second_factor`]) instead of being
//! logged in.

use askama::Template;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use http::header::RETRY_AFTER;
use http::{HeaderValue, StatusCode};
use serde::Deserialize;
use tessera_auth::{Channel, LoggedIn, LoginError, LoginStep};
use tessera_axum::{remember_device, CsrfForm, LoginClient, Progress};

use super::{Chrome, PageContext};
use crate::app::AppState;
use crate::error_pages::ServerError;
use crate::flash::Flash;
use crate::oidc::ProviderButton;

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
    /// Offer "Sign in with a passkey" and the autofill.
    passkeys: bool,
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
        passkeys: state.auth.passkeys().is_some(),
    };
    ctx.render(StatusCode::OK, &view)
}

/// Checks the credentials through the authentication core; on success
/// rotates the session ID and redirects (303) to a safe `next` or the
/// profile.
///
/// The core reserves an attempt before verifying anything: a blocked
/// account, device or address gets `429` with `Retry-After` and no password
/// verification at all, for known and unknown names alike, so throttling
/// tells nothing about which names exist.
pub async fn submit(
    State(state): State<AppState>,
    LoginClient(client): LoginClient,
    ctx: PageContext,
    CsrfForm(form): CsrfForm<LoginForm>,
) -> Response {
    let next = state.forward_auth.checked_next(form.next);
    match state.auth.password(Channel::Web, &client, &form.username, &form.password, next.clone()).await {
        Ok(step) => continue_login(&state, &ctx, step, next),
        Err(LoginError::Throttled(wait)) => {
            tracing::info!(wait_secs = wait.as_secs(), "login refused: throttled");
            throttled(&ctx, form.username, next, wait)
        }
        Err(LoginError::InvalidCredentials) => {
            let view = LoginPage {
                page: ctx.chrome("Log in"),
                username: form.username,
                next,
                error: Some(GENERIC_ERROR.to_owned()),
                providers: state.oidc.buttons(),
                passkeys: state.auth.passkeys().is_some(),
            };
            ctx.render(StatusCode::UNAUTHORIZED, &view)
        }
        Err(error) => ServerError::unavailable(error).into_response(),
    }
}

/// What follows a passed first factor (a password, a provider login, a
/// registration): the login itself (a new session ID) and a 303 to `next`
/// (already checked) or the profile; or, for an account that needs its
/// second factor, the pending login (under a new session ID) and a 303 to
/// `/login/second-factor`.
pub fn continue_login(state: &AppState, ctx: &PageContext, step: LoginStep, next: Option<String>) -> Response {
    let device_cookie = match &step {
        LoginStep::LoggedIn(done) => Some(done.clone()),
        LoginStep::SecondFactor(pending) => {
            tracing::info!(
                user_id = pending.user_id,
                enroll = pending.enroll,
                "first factor accepted; second factor required"
            );
            None
        }
    };
    match (tessera_axum::continue_login(&ctx.session, step), device_cookie) {
        (Progress::LoggedIn(_), Some(done)) => logged_in_redirect(state, next.as_deref(), &done),
        _ => Redirect::to("/login/second-factor").into_response(),
    }
}

/// The answer after a login: a 303 to `next` (already checked) or
/// the profile, with the welcome flash and, for a password login, the device
/// cookie that keeps this browser out of the account's lockouts.
pub fn logged_in_redirect(state: &AppState, next: Option<&str>, done: &LoggedIn) -> Response {
    let mut response = Redirect::to(next.unwrap_or("/profile")).into_response();
    Flash::LoggedIn.set(state.engine.cookie_config(), response.headers_mut());
    remember_device(response.headers_mut(), state.engine.cookie_config(), done);
    response
}

/// `429` with the login form, a message and `Retry-After` in whole seconds
/// (rounded up, so a client that waits exactly that long gets through).
fn throttled(ctx: &PageContext, username: String, next: Option<String>, wait: std::time::Duration) -> Response {
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
        passkeys: ctx.state.auth.passkeys().is_some(),
    };
    let mut response = ctx.render(StatusCode::TOO_MANY_REQUESTS, &view);
    response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(seconds));
    response
}
