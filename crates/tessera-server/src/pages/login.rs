//! `GET/POST /login`: one generic error, a new session ID on success.

use askama::Template;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use http::StatusCode;
use serde::Deserialize;
use tessera_axum::{safe_next, CsrfForm};

use super::{Chrome, PageContext};
use crate::app::AppState;
use crate::error_pages::ServerError;

/// Shown for every failed login, whatever the reason.
const GENERIC_ERROR: &str = "Wrong user name or password.";

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    page: Chrome,
    username: String,
    next: Option<String>,
    error: Option<&'static str>,
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

fn checked_next(next: Option<String>) -> Option<String> {
    next.filter(|n| safe_next(n).is_some())
}

/// The login form. A logged-in visitor goes straight on.
pub async fn show(ctx: PageContext, Query(query): Query<NextQuery>) -> Response {
    let next = checked_next(query.next);
    if ctx.user.is_some() {
        return Redirect::to(next.as_deref().unwrap_or("/profile")).into_response();
    }
    ctx.render(StatusCode::OK, &LoginPage { page: ctx.chrome("Log in"), username: String::new(), next, error: None })
}

/// Checks the credentials; on success rotates the session ID and redirects
/// (303) to a safe `next` or the profile.
pub async fn submit(State(state): State<AppState>, ctx: PageContext, CsrfForm(form): CsrfForm<LoginForm>) -> Response {
    let next = checked_next(form.next);
    match state.accounts.authenticate(&form.username, &form.password).await {
        Ok(Some(user)) => {
            ctx.session.login(user.id.to_string());
            crate::metrics::login(true);
            state.activity.login(true);
            tracing::info!(user_id = user.id, "login succeeded");
            Redirect::to(next.as_deref().unwrap_or("/profile")).into_response()
        }
        Ok(None) => {
            crate::metrics::login(false);
            state.activity.login(false);
            tracing::info!("login failed");
            let view =
                LoginPage { page: ctx.chrome("Log in"), username: form.username, next, error: Some(GENERIC_ERROR) };
            ctx.render(StatusCode::UNAUTHORIZED, &view)
        }
        Err(error) => ServerError::unavailable(error).into_response(),
    }
}
