//! `GET/POST /login`: one generic error, a new session ID on success.

use askama::Template;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use http::StatusCode;
use serde::Deserialize;
use tessera_axum::{safe_next, CsrfForm};

use super::{Chrome, PageContext};
use crate::accounts::LoginOutcome;
use crate::app::AppState;
use crate::audit::AuditKind;
use crate::error_pages::ServerError;
use crate::flash::Flash;
use crate::reauthentication;

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
    let now = state.clock.now();
    let database = state.accounts.database();
    match state.accounts.authenticate(&form.username, &form.password).await {
        Ok(LoginOutcome::Succeeded(user)) => {
            ctx.session.login(user.id.to_string());
            reauthentication::mark(&ctx.session, now);
            let _ = database.audit(AuditKind::LoginSucceeded, Some(user.id), &ctx.device, now).await;
            let mut response = Redirect::to(next.as_deref().unwrap_or("/profile")).into_response();
            Flash::LoggedIn.set(state.engine.cookie_config(), response.headers_mut());
            response
        }
        Ok(LoginOutcome::Failed { known_user }) => {
            let _ = database.audit(AuditKind::LoginFailed, known_user, &ctx.device, now).await;
            let view =
                LoginPage { page: ctx.chrome("Log in"), username: form.username, next, error: Some(GENERIC_ERROR) };
            ctx.render(StatusCode::UNAUTHORIZED, &view)
        }
        Err(error) => ServerError::unavailable(error).into_response(),
    }
}
