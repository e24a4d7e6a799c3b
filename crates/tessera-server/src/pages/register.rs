//! `GET/POST /register`: create an account and log in.

use askama::Template;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use http::StatusCode;
use serde::Deserialize;
use tessera_auth::{Authenticator, Channel, LoginStep, RegisterError};
use tessera_axum::{CsrfForm, LoginClient};

use super::login::continue_login;
use super::{Chrome, PageContext};
use crate::error_pages::ServerError;
use crate::flash::Flash;
use crate::registration_policy::{self, Registration};

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

fn page(ctx: &PageContext, auth: &Authenticator, username: String) -> RegisterPage {
    RegisterPage {
        page: ctx.chrome("Create an account"),
        username,
        form_error: None,
        username_error: None,
        password_error: None,
        min_password: auth.accounts().policy().effective_min_chars(),
        invite: String::new(),
    }
}

/// The registration form.
pub async fn show(
    State(auth): State<Authenticator>,
    State(registration): State<Registration>,
    ctx: PageContext,
    query: Result<Query<InviteQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if ctx.user.is_some() {
        return Redirect::to("/profile").into_response();
    }
    let mut view = page(&ctx, &auth, String::new());
    view.invite = query.map(|Query(q)| q.invite).unwrap_or_default();
    view.form_error = registration_policy::notice(registration.policy(), &view.invite).map(str::to_owned);
    ctx.render(StatusCode::OK, &view)
}

/// Registers, logs the new user in (with a new session ID) and goes to the
/// profile; on a server that requires a second factor, goes on to set one
/// up first.
pub async fn submit(
    State(auth): State<Authenticator>,
    State(registration): State<Registration>,
    LoginClient(client): LoginClient,
    ctx: PageContext,
    CsrfForm(form): CsrfForm<RegisterForm>,
) -> Result<Response, ServerError> {
    // The registration policy first (`accounts.registration`, invitations);
    // then the core's login of the new account.
    let registered =
        registration.register(Some(&form.invite), Channel::Web, &client, &form.username, &form.password).await;
    let registered = match registered {
        Ok(registered) => registered.map(|user| auth.after_sign_up(user, None)),
        Err(refusal) if refusal.status() == StatusCode::SERVICE_UNAVAILABLE => {
            return Err(ServerError::unavailable(refusal))
        }
        Err(refusal) => {
            let mut view = page(&ctx, &auth, form.username.clone());
            view.invite = form.invite.clone();
            view.form_error = Some(refusal.message().to_owned());
            return Ok(ctx.render(refusal.status(), &view));
        }
    };
    match registered {
        Ok(LoginStep::LoggedIn(done)) => {
            tessera_axum::log_in(&ctx.session, &done);
            let mut response = Redirect::to("/profile").into_response();
            Flash::Welcome.set(ctx.cookie(), response.headers_mut());
            Ok(response)
        }
        // The account exists, but is not usable before it has a second
        // factor: straight on to setting one up, as at a login.
        Ok(step) => Ok(continue_login(&ctx, step, None)),
        Err(RegisterError::Unavailable(error)) => Err(ServerError::unavailable(error)),
        Err(error) => {
            let mut view = page(&ctx, &auth, form.username.clone());
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
                RegisterError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            };
            view.form_error = Some(format!("Please correct the {field} below."));
            Ok(ctx.render(status, &view))
        }
    }
}
