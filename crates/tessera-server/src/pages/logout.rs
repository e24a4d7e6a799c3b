//! `POST /logout`: destroy the session. `GET /logout` is refused (405): a
//! link or an image must not be able to log anyone out.

use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use tessera_axum::{CsrfForm, Session};

use crate::app::AppState;
use crate::flash::Flash;

/// The logout form carries only its CSRF token.
#[derive(Deserialize)]
pub struct LogoutForm {}

/// Destroys the session, clears the cookie and goes to the login page.
pub async fn submit(State(state): State<AppState>, session: Session, _: CsrfForm<LogoutForm>) -> Response {
    if let Some(user_id) = session.user_id() {
        tracing::info!(user_id = %user_id, "logout");
    }
    session.logout();
    let mut response = Redirect::to("/login").into_response();
    Flash::LoggedOut.set(state.engine.cookie_config(), response.headers_mut());
    response
}
