//! `GET/POST /login`: one generic error, a new session ID on success, and
//! brute-force throttling (`429` with `Retry-After`) checked before any
//! password is verified. Accounts with a second factor go on to
//! `/login/second-factor` ([`super::login_second_factor`]) instead of being
//! logged in.

use askama::Template;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use std::sync::Arc;

use http::StatusCode;
use serde::Deserialize;
use tessera_auth::Authenticator;
use tessera_auth::{Channel, LoggedIn, LoginError, LoginStep};
use tessera_axum::{remember_device, CsrfForm, LoginClient, Progress};

use super::{with_retry_after, Chrome, PageContext};
use crate::error_pages::ServerError;
use crate::flash::Flash;
use crate::forward_auth::ForwardAuthConfig;
use crate::oidc::Oidc;
use crate::oidc::ProviderButton;
use crate::reauthentication::readable_wait;

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
    /// `accounts.email_login`: "code", "link", or "" (off).
    email_login: &'static str,
}

/// What the login page offers for `accounts.email_login`.
fn email_login_offer(auth: &Authenticator) -> &'static str {
    match auth.email_login_mode() {
        tessera_auth::email_login::EmailLoginMode::Off => "",
        tessera_auth::email_login::EmailLoginMode::Code => "code",
        tessera_auth::email_login::EmailLoginMode::Link => "link",
    }
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
pub async fn show(
    State(forward_auth): State<Arc<ForwardAuthConfig>>,
    State(oidc): State<Arc<Oidc>>,
    State(auth): State<Authenticator>,
    ctx: PageContext,
    Query(query): Query<NextQuery>,
) -> Response {
    // Relative paths, or absolute URLs on a forward-auth protected host.
    let next = forward_auth.checked_next(query.next);
    if ctx.user.is_some() {
        return Redirect::to(next.as_deref().unwrap_or("/profile")).into_response();
    }
    let view = LoginPage {
        page: ctx.chrome("Log in"),
        username: String::new(),
        next,
        error: None,
        providers: oidc.buttons(),
        passkeys: auth.passkeys().is_some(),
        email_login: email_login_offer(&auth),
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
    State(auth): State<Authenticator>,
    State(forward_auth): State<Arc<ForwardAuthConfig>>,
    State(oidc): State<Arc<Oidc>>,
    LoginClient(client): LoginClient,
    ctx: PageContext,
    CsrfForm(form): CsrfForm<LoginForm>,
) -> Result<Response, ServerError> {
    let next = forward_auth.checked_next(form.next);
    let refused = |status, error| {
        let view = LoginPage {
            page: ctx.chrome("Log in"),
            username: form.username.clone(),
            next: next.clone(),
            error: Some(error),
            providers: oidc.buttons(),
            passkeys: auth.passkeys().is_some(),
            email_login: email_login_offer(&auth),
        };
        ctx.render(status, &view)
    };
    match auth.password(Channel::Web, &client, &form.username, &form.password, next.clone()).await {
        Ok(step) => Ok(continue_login(&ctx, step, next)),
        Err(LoginError::Throttled(wait)) => {
            tracing::info!(wait_secs = wait.as_secs(), "login refused: throttled");
            let message =
                format!("Too many failed login attempts. Please wait {} before trying again.", readable_wait(wait));
            Ok(with_retry_after(refused(StatusCode::TOO_MANY_REQUESTS, message), wait))
        }
        Err(LoginError::InvalidCredentials) => Ok(refused(StatusCode::UNAUTHORIZED, GENERIC_ERROR.to_owned())),
        // The password was right; the address is not verified yet
        // (`accounts.email = required`): on to sending the mail again.
        Err(LoginError::EmailUnverified(proof)) => {
            // Serializing integers cannot fail.
            let _ = ctx.session.insert(super::email::UNVERIFIED_LOGIN, &proof);
            Ok(Redirect::to("/login/verification").into_response())
        }
        Err(error) => Err(ServerError::from(error)),
    }
}

/// What follows a passed first factor (a password, a provider login, a
/// registration): the login itself (a new session ID) and a 303 to `next`
/// (already checked) or the profile; or, for an account that needs its
/// second factor, the pending login (under a new session ID) and a 303 to
/// `/login/second-factor`.
pub fn continue_login(ctx: &PageContext, step: LoginStep, next: Option<String>) -> Response {
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
        (Progress::LoggedIn(_), Some(done)) => logged_in_redirect(ctx, next.as_deref(), &done),
        _ => Redirect::to("/login/second-factor").into_response(),
    }
}

/// The answer after a login: a 303 to `next` (already checked) or
/// the profile, with the welcome flash and, for a password login, the device
/// cookie that keeps this browser out of the account's lockouts.
pub fn logged_in_redirect(ctx: &PageContext, next: Option<&str>, done: &LoggedIn) -> Response {
    let mut response = Redirect::to(next.unwrap_or("/profile")).into_response();
    Flash::LoggedIn.set(ctx.cookie(), response.headers_mut());
    remember_device(response.headers_mut(), ctx.cookie(), done);
    response
}
