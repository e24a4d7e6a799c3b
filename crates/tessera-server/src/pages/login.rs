//! `GET/POST /login`: one generic error, a new session ID on success.

use askama::Template;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use http::StatusCode;
use serde::Deserialize;
use tessera_axum::CsrfForm;

use super::{Chrome, PageContext};
use crate::accounts::LoginOutcome;
use crate::app::AppState;
use crate::audit::AuditKind;
use crate::error_pages::ServerError;
use crate::flash::Flash;
use crate::oidc::ProviderButton;
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
pub async fn submit(State(state): State<AppState>, ctx: PageContext, CsrfForm(form): CsrfForm<LoginForm>) -> Response {
    let next = state.forward_auth.checked_next(form.next);
    let now = state.clock.now();
    let database = state.accounts.database();
    match state.accounts.authenticate(&form.username, &form.password).await {
        Ok(LoginOutcome::Succeeded(user)) => {
            ctx.session.login(user.id.to_string());
            crate::metrics::login(true);
            state.activity.login(true);
            reauthentication::mark(&ctx.session, now);
            let _ = database.audit(AuditKind::LoginSucceeded, Some(user.id), &ctx.device, now).await;
            let mut response = Redirect::to(next.as_deref().unwrap_or("/profile")).into_response();
            Flash::LoggedIn.set(state.engine.cookie_config(), response.headers_mut());
            response
        }
        Ok(LoginOutcome::Failed { known_user }) => {
            crate::metrics::login(false);
            state.activity.login(false);
            let _ = database.audit(AuditKind::LoginFailed, known_user, &ctx.device, now).await;
            let view = LoginPage {
                page: ctx.chrome("Log in"),
                username: form.username,
                next,
                error: Some(GENERIC_ERROR),
                providers: state.oidc.buttons(),
            };
            ctx.render(StatusCode::UNAUTHORIZED, &view)
        }
        Err(error) => ServerError::unavailable(error).into_response(),
    }
}
