//! `POST /logout`: destroy the session. `GET /logout` is refused (405): a
//! link or an image must not be able to log anyone out.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use tessera::{Clock, SessionEngine};
use tessera_axum::{ClientDevice, CsrfForm, Session};

use crate::audit::AuditKind;
use crate::auth_events::ServerEvents;
use crate::flash::Flash;
use http::HeaderValue;

/// The logout form carries only its CSRF token.
#[derive(Deserialize)]
pub struct LogoutForm {}

/// Destroys the session, clears the cookie and goes to the login page.
pub async fn submit(
    State(events): State<ServerEvents>,
    State(session_cookie): State<SessionEngine>,
    State(clock): State<Arc<dyn Clock>>,
    session: Session,
    ClientDevice(device): ClientDevice,
    _: CsrfForm<LogoutForm>,
) -> Response {
    if let Some(user_id) = session.user_id().and_then(|id| id.parse::<i64>().ok()) {
        events.record(AuditKind::Logout, Some(user_id), &device, clock.now()).await;
    }
    session.logout();
    let mut response = Redirect::to("/login").into_response();
    // Whatever the browser cached or stored for this site goes with the session.
    response.headers_mut().insert("clear-site-data", HeaderValue::from_static("\"cache\", \"storage\""));
    Flash::LoggedOut.set(session_cookie.cookie_config(), response.headers_mut());
    response
}
