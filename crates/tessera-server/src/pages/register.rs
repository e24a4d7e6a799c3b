//! `GET/POST /register`: create an account and log in.

use askama::Template;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use http::StatusCode;
use serde::Deserialize;
use tessera_auth::{Channel, LoginStep, RegisterError};
use tessera_axum::{CsrfForm, LoginClient};

use super::login::continue_login;
use super::{Chrome, PageContext};
use crate::app::AppState;
use crate::error_pages::ServerError;
use crate::flash::Flash;
use crate::registration_policy;

#[derive(Template)]
#[template(path = "register.html")]
struct RegisterPage {
    page: Chrome,
    username: String,
    form_error: Option<String>,
    username_error: Option<String>,
    password_error: Option<String>,
    min_password: usize,
    /// The invitation token from the link (`?invite=`), carried along.
    invite: String,
}

/// The registration form's fields.
#[derive(Deserialize)]
pub struct RegisterForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    /// The invitation token, when `accounts.registration` needs one.
    #[serde(default)]
    invite: String,
}

/// `GET /register?invite=…`.
#[derive(Deserialize)]
pub struct InviteQuery {
    #[serde(default)]
    invite: String,
}

fn page(ctx: &PageContext, state: &AppState, username: String) -> RegisterPage {
    RegisterPage {
        page: ctx.chrome("Create an account"),
        username,
        form_error: None,
        username_error: None,
        password_error: None,
        min_password: state.auth.accounts().policy().effective_min_chars(),
        invite: String::new(),
    }
}

/// The registration form.
pub async fn show(
    State(state): State<AppState>,
    ctx: PageContext,
    query: Result<Query<InviteQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if ctx.user.is_some() {
        return Redirect::to("/profile").into_response();
    }
    let mut view = page(&ctx, &state, String::new());
    view.invite = query.map(|Query(q)| q.invite).unwrap_or_default();
    view.form_error = registration_policy::notice(state.registration, &view.invite).map(str::to_owned);
    ctx.render(StatusCode::OK, &view)
}

/// Registers, logs the new user in (with a new session ID) and goes to the
/// profile; on a server that requires a second factor, goes on to set one
/// up first.
pub async fn submit(
    State(state): State<AppState>,
    LoginClient(client): LoginClient,
    ctx: PageContext,
    CsrfForm(form): CsrfForm<RegisterForm>,
) -> Response {
    // The registration policy first (`accounts.registration`, invitations);
    // then the core's login of the new account.
    let registered = registration_policy::register(
        &state,
        Some(&form.invite),
        Channel::Web,
        &client,
        &form.username,
        &form.password,
    )
    .await;
    let registered = match registered {
        Ok(registered) => registered.map(|user| state.auth.after_sign_up(user, None)),
        Err(refusal) if refusal.status() == StatusCode::SERVICE_UNAVAILABLE => {
            return ServerError::unavailable(refusal).into_response()
        }
        Err(refusal) => {
            let mut view = page(&ctx, &state, form.username.clone());
            view.invite = form.invite.clone();
            view.form_error = Some(refusal.message().to_owned());
            return ctx.render(refusal.status(), &view);
        }
    };
    match registered {
        Ok(LoginStep::LoggedIn(done)) => {
            tessera_axum::log_in(&ctx.session, &done);
            let mut response = Redirect::to("/profile").into_response();
            Flash::Welcome.set(state.engine.cookie_config(), response.headers_mut());
            response
        }
        // The account exists, but is not usable before it has a second
        // factor: straight on to setting one up, as at a login.
        Ok(step) => continue_login(&state, &ctx, step, None),
        Err(error @ (RegisterError::Unavailable(_) | RegisterError::Busy)) => ServerError::from(error).into_response(),
        Err(RegisterError::Throttled(wait)) => {
            // The form again, with why and how long; nothing was created.
            let seconds = tessera_axum::retry_after_seconds(wait);
            tracing::info!(wait_secs = seconds, "sign-up refused: too many from this address");
            let mut view = page(&ctx, &state, form.username.clone());
            view.invite = form.invite.clone();
            view.form_error = Some(format!(
                "Too many accounts were created from your network lately. Please wait {} before trying again.",
                crate::reauthentication::readable_wait(wait)
            ));
            let mut response = ctx.render(StatusCode::TOO_MANY_REQUESTS, &view);
            response.headers_mut().insert(http::header::RETRY_AFTER, http::HeaderValue::from(seconds));
            response
        }
        Err(error) => {
            let mut view = page(&ctx, &state, form.username.clone());
            let mut field = "user name";
            let status = match &error {
                RegisterError::InvalidUsername(message) => {
                    view.username_error = Some((*message).to_owned());
                    StatusCode::UNPROCESSABLE_ENTITY
                }
                RegisterError::InvalidPassword(message) => {
                    view.password_error = Some(message.clone());
                    field = "password";
                    StatusCode::UNPROCESSABLE_ENTITY
                }
                RegisterError::UsernameTaken => {
                    view.username_error = Some(error.to_string());
                    StatusCode::CONFLICT
                }
                RegisterError::Unavailable(_) | RegisterError::Busy | RegisterError::Throttled(_) => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
            };
            view.form_error = Some(format!("Please correct the {field} below."));
            ctx.render(status, &view)
        }
    }
}
