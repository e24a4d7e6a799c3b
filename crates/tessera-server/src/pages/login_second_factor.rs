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
use http::StatusCode;
use serde::Deserialize;
use tessera_auth::{Channel, LoginError, PendingLogin, User};
use tessera_axum::{clear_pending_login, log_in, pending_login, remember_device, CsrfForm, LoginClient};

use super::account_two_factor::SetupView;
use super::login::logged_in_redirect;
use super::{with_retry_after, Chrome, PageContext};
use crate::error_pages::ServerError;
use crate::reauthentication;
use std::sync::Arc;
use tessera::Clock;
use tessera_auth::Authenticator;

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
    /// The account has passkeys: offer "Use a passkey".
    passkey: bool,
    /// The account has an authenticator app (or sets one up): ask for a code.
    code: bool,
}

fn view(ctx: &PageContext, error: Option<String>) -> SecondFactorPage {
    SecondFactorPage {
        page: ctx.chrome("Two-step verification"),
        error,
        expired: false,
        setup: None,
        new_codes: None,
        passkey: false,
        code: true,
    }
}

/// Which second factors the pending login's account can use: a passkey,
/// a code (an authenticator app, or the one being set up).
async fn factors(auth: &Authenticator, pending: &PendingLogin) -> Result<(bool, bool), LoginError> {
    let passkey = match auth.passkeys() {
        Some(passkeys) => passkeys.count(pending.user_id).await? > 0,
        None => false,
    };
    let code = pending.enroll || !passkey || auth.second_factors().is_enabled(pending.user_id).await?;
    Ok((passkey, code))
}

fn expired(ctx: &PageContext) -> Response {
    clear_pending_login(&ctx.session);
    let page = SecondFactorPage { expired: true, ..view(ctx, None) };
    ctx.render(StatusCode::UNAUTHORIZED, &page)
}

/// The setup of a pending enrolment: the secret of this pending login
/// alone (shown again on reload: the user may have scanned it already).
fn enrolment_setup(pending: &PendingLogin, user: &User) -> Option<SetupView> {
    pending.enrolment_secret().map(|secret| SetupView::new(&secret, &user.username))
}

/// The code prompt, or the setup of an app; without a pending login, back
/// to `/login`.
pub async fn show(
    State(auth): State<Authenticator>,
    State(clock): State<Arc<dyn Clock>>,
    ctx: PageContext,
) -> Response {
    if ctx.user.is_some() {
        return Redirect::to("/profile").into_response();
    }
    let Some(pending) = pending_login(&ctx.session, clock.now()) else {
        return Redirect::to("/login").into_response();
    };
    let mut page = view(&ctx, None);
    match factors(&auth, &pending).await {
        Ok((passkey, code)) => (page.passkey, page.code) = (passkey, code),
        Err(error) => return ServerError::unavailable(error).into_response(),
    }
    if pending.enroll {
        let user = match auth.pending_user(&pending).await {
            Ok(user) => user,
            Err(LoginError::Expired) => return expired(&ctx),
            Err(error) => return ServerError::unavailable(error).into_response(),
        };
        // Shown again on reload rather than replaced: the user may have
        // scanned it already.
        page.setup = enrolment_setup(&pending, &user);
    }
    ctx.render(StatusCode::OK, &page)
}

/// The form's field: an authenticator code or a recovery code.
#[derive(Deserialize)]
pub struct CodeForm {
    #[serde(default)]
    code: String,
}

/// Checks the code (or, when enrolling, confirms the new app with it)
/// through the authentication core and, if right, finishes the login the
/// first factor started.
pub async fn submit(
    State(auth): State<Authenticator>,
    State(clock): State<Arc<dyn Clock>>,
    LoginClient(client): LoginClient,
    ctx: PageContext,
    CsrfForm(form): CsrfForm<CodeForm>,
) -> Response {
    let now = clock.now();
    let Some(pending) = pending_login(&ctx.session, now) else { return expired(&ctx) };
    if pending.enroll {
        return match auth.complete_enrolment(Channel::Web, &client, &pending, &form.code).await {
            Ok((done, codes)) => {
                tracing::info!(user_id = done.user.id, "two-step verification turned on at login");
                clear_pending_login(&ctx.session);
                log_in(&ctx.session, &done);
                let next = pending.next.unwrap_or_else(|| "/profile".to_owned());
                let page = SecondFactorPage { new_codes: Some((codes, next)), ..view(&ctx, None) };
                let mut response = ctx.render(StatusCode::OK, &page);
                remember_device(response.headers_mut(), ctx.cookie(), &done);
                response
            }
            Err(LoginError::InvalidSecondFactor) => {
                let user = match auth.pending_user(&pending).await {
                    Ok(user) => user,
                    Err(LoginError::Expired) => return expired(&ctx),
                    Err(error) => return ServerError::unavailable(error).into_response(),
                };
                let setup = enrolment_setup(&pending, &user);
                let message = "That code does not match. Check the app's clock and enter the code it shows now.";
                let page = SecondFactorPage { setup, ..view(&ctx, Some(message.to_owned())) };
                ctx.render(StatusCode::UNPROCESSABLE_ENTITY, &page)
            }
            Err(error) => refused(&ctx, error),
        };
    }
    match auth.second_factor(Channel::Web, &client, &pending, &form.code).await {
        Ok(done) => {
            clear_pending_login(&ctx.session);
            log_in(&ctx.session, &done);
            logged_in_redirect(&ctx, pending.next.as_deref(), &done)
        }
        Err(error) => refused(&ctx, error),
    }
}

/// The answer to a refused code.
fn refused(ctx: &PageContext, error: LoginError) -> Response {
    match error {
        LoginError::Expired => expired(ctx),
        LoginError::InvalidSecondFactor => ctx.render(
            StatusCode::UNAUTHORIZED,
            &view(ctx, Some("That code is not valid, or it was used already.".to_owned())),
        ),
        LoginError::Throttled(wait) => {
            let message = format!(
                "Too many wrong codes. Please wait {} before trying again.",
                reauthentication::readable_wait(wait)
            );
            with_retry_after(ctx.render(StatusCode::TOO_MANY_REQUESTS, &view(ctx, Some(message))), wait)
        }
        other => ServerError::unavailable(other).into_response(),
    }
}
