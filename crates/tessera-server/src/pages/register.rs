//! `GET/POST /register`: create an account and log in.

use askama::Template;
use axum::extract::State;
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

#[derive(Template)]
#[template(path = "register.html")]
struct RegisterPage {
    page: Chrome,
    username: String,
    form_error: Option<String>,
    username_error: Option<String>,
    password_error: Option<String>,
    min_password: usize,
}

/// The registration form's fields.
#[derive(Deserialize)]
pub struct RegisterForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

fn page(ctx: &PageContext, state: &AppState, username: String) -> RegisterPage {
    RegisterPage {
        page: ctx.chrome("Create an account"),
        username,
        form_error: None,
        username_error: None,
        password_error: None,
        min_password: state.auth.accounts().policy().effective_min_chars(),
    }
}

/// The registration form.
pub async fn show(State(state): State<AppState>, ctx: PageContext) -> Response {
    if ctx.user.is_some() {
        return Redirect::to("/profile").into_response();
    }
    ctx.render(StatusCode::OK, &page(&ctx, &state, String::new()))
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
    match state.auth.register(Channel::Web, &client, &form.username, &form.password, None).await {
        Ok(LoginStep::LoggedIn(done)) => {
            tessera_axum::log_in(&ctx.session, &done);
            let mut response = Redirect::to("/profile").into_response();
            Flash::Welcome.set(state.engine.cookie_config(), response.headers_mut());
            response
        }
        // The account exists, but is not usable before it has a second
        // factor: straight on to setting one up, as at a login.
        Ok(step) => continue_login(&state, &ctx, step, None),
        Err(RegisterError::Unavailable(error)) => ServerError::unavailable(error).into_response(),
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
                RegisterError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            };
            view.form_error = Some(format!("Please correct the {field} below."));
            ctx.render(status, &view)
        }
    }
}
