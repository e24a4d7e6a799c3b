//! Server-rendered pages: the membership flow in the browser.

pub mod account;
pub mod account_activity;
pub mod account_password;
pub mod account_sessions;
pub mod account_two_factor;
pub mod email;
pub mod email_login;
pub mod home;
pub mod login;
pub mod login_second_factor;
pub mod logout;
pub mod passkeys;
pub mod profile;
pub mod register;

use askama::Template;
use axum::extract::{FromRef, FromRequestParts};
use axum::response::{Html, IntoResponse, Response};
use http::header::CACHE_CONTROL;
use http::request::Parts;
use http::HeaderValue;
use http::StatusCode;
use tessera::{CookieConfig, SessionEngine};
use tessera_auth::Authenticator;
use tessera_axum::{CsrfToken, Session};

use crate::error_pages::ServerError;
use crate::flash::Flash;
use tessera_auth::User;

/// What every page's layout needs: title, login state, CSRF token, flash.
#[derive(Debug, Clone)]
pub struct Chrome {
    /// The page title.
    pub title: &'static str,
    /// Whether a user is logged in (navigation differs).
    pub logged_in: bool,
    /// The CSRF token for the page's forms.
    pub csrf: String,
    /// A one-shot message.
    pub flash: Option<&'static str>,
}

/// The request's view of the visitor, for rendering pages.
pub struct PageContext {
    /// The logged-in user, if any.
    pub user: Option<User>,
    /// The session.
    pub session: Session,
    /// The client, for audit events.
    pub device: tessera::DeviceInfo,
    /// The client as the authentication core sees it (address, device
    /// cookie), for password confirmations.
    pub client: tessera_auth::Client,
    csrf: String,
    flash: Option<Flash>,
    cookie: CookieConfig,
}

impl PageContext {
    /// The layout data for a page titled `title`.
    pub fn chrome(&self, title: &'static str) -> Chrome {
        Chrome { title, logged_in: self.user.is_some(), csrf: self.csrf.clone(), flash: self.flash.map(Flash::message) }
    }

    /// The session cookie's attributes, which the site's other cookies
    /// (flash, device) share.
    pub fn cookie(&self) -> &CookieConfig {
        &self.cookie
    }

    /// Renders `template` with `status`, clearing a flash that was shown.
    ///
    /// Pages are never stored by the browser (`no-store`): they carry a CSRF
    /// token and, once logged in, the user's data, which the back button
    /// must not show again after logout.
    pub fn render(&self, status: StatusCode, template: &impl Template) -> Response {
        let mut response = render(status, template);
        response.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if self.flash.is_some() {
            Flash::clear(&self.cookie, response.headers_mut());
        }
        response
    }
}

/// Adds `Retry-After` (whole seconds, rounded up) to a throttled page.
pub fn with_retry_after(mut response: Response, wait: std::time::Duration) -> Response {
    let seconds = tessera_axum::retry_after_seconds(wait);
    response.headers_mut().insert(http::header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

/// A time for people ("21 November 2026, 22:05 UTC") and for machines (RFC 3339).
pub fn display_time(at: tessera::Timestamp) -> (String, String) {
    let time = time::OffsetDateTime::from_unix_timestamp(at.as_millis().div_euclid(1000))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let human = time
        .format(time::macros::format_description!("[day padding:none] [month repr:long] [year], [hour]:[minute] UTC"))
        .unwrap_or_default();
    let iso = time.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
    (human, iso)
}

/// Renders a template, or a plain 500 if rendering itself fails.
pub fn render(status: StatusCode, template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(error) => {
            tracing::error!(%error, "template rendering failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "Internal error").into_response()
        }
    }
}

impl<S> FromRequestParts<S> for PageContext
where
    S: Send + Sync,
    Authenticator: FromRef<S>,
    SessionEngine: FromRef<S>,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let session = Session::from_request_parts(parts, state).await?;
        let csrf = CsrfToken::from_request_parts(parts, state).await?;
        let user = match session.user_id().and_then(|id| id.parse::<i64>().ok()) {
            // The session was just found valid in the shared store; see
            // tessera_auth::signed_in_users for why its user may come from memory.
            Some(id) => Authenticator::from_ref(state)
                .accounts()
                .signed_in()
                .enabled(id)
                .await
                .map_err(|e| ServerError::unavailable(e).into_response())?,
            None => None,
        };
        let cookie = SessionEngine::from_ref(state).cookie_config().clone();
        let flash = Flash::read(&cookie, &parts.headers);
        let device = tessera_axum::client_device(&parts.extensions, &parts.headers);
        let Ok(tessera_axum::LoginClient(client)) = tessera_axum::LoginClient::from_request_parts(parts, state).await;
        Ok(PageContext { user, session, device, client, csrf: csrf.as_str().to_owned(), flash, cookie })
    }
}
