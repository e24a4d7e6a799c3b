//! # tessera-axum — sessions for axum
//!
//! Add [`SessionLayer`] once; handlers then take the extractors they need:
//!
//! - [`Session`] — the request's session (loaded from the
//!   store on first use only, so routes that never ask for it cost no I/O);
//! - [`RequireUser`] — the logged-in user's ID, or a redirect to the login page
//!   (browsers) / `401` (JSON clients);
//! - [`MaybeUser`] — the user's ID if logged in;
//! - [`CsrfToken`] — the token to embed in forms, and [`CsrfForm`] — a form
//!   body whose `csrf_token` field has been verified (`403` otherwise);
//!   [`CsrfHeader`] / [`verify_csrf_header`] — the same check on an
//!   `X-CSRF-Token` header, for JSON requests authenticated by the cookie.
//!
//! CSRF checks also refuse a form whose `Origin` is not the request's own
//! (its HTTP/2 `:authority` or HTTP/1.1 `Host`). Behind a reverse proxy
//! that rewrites `Host`, give the public origin with
//! [`SessionLayer::with_allowed_origins`], or insert a [`ForwardedHost`]
//! for requests from a proxy you trust.
//!
//! Changes to the session are committed after the handler answers, with one
//! conditional write; a store failure turns the answer into a `503`, never
//! into an anonymous request that silently lost its session.
//!
//! ```no_run
//! use std::sync::Arc;
//! use axum::{routing::{get, post}, Router, response::Redirect};
//! use tessera::{SessionEngine, SessionStore};
//! use tessera_axum::{CsrfForm, CsrfKey, RequireUser, Session, SessionLayer};
//!
//! #[derive(serde::Deserialize)]
//! struct Login { username: String }
//!
//! #[derive(serde::Deserialize)]
//! struct Logout {}
//!
//! async fn login(session: Session, CsrfForm(form): CsrfForm<Login>) -> Redirect {
//!     // Check the password first (see `tessera::password`), then:
//!     session.login(form.username); // new session ID: no fixation
//!     Redirect::to("/profile")
//! }
//!
//! async fn profile(RequireUser(user): RequireUser, session: Session) -> String {
//!     let visits = session.update("visits", |n: Option<u64>| n.unwrap_or(0) + 1).unwrap_or(0);
//!     format!("{user}: visit {visits}")
//! }
//!
//! async fn logout(session: Session, _: CsrfForm<Logout>) -> Redirect {
//!     session.logout();
//!     Redirect::to("/login")
//! }
//!
//! # async fn run(store: Arc<dyn SessionStore>) {
//! let app: Router = Router::new()
//!     .route("/login", post(login))
//!     .route("/profile", get(profile))
//!     .route("/logout", post(logout))
//!     .layer(SessionLayer::new(SessionEngine::new(store), CsrfKey::generate()));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await.unwrap();
//! axum::serve(listener, app).await.unwrap();
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

/// The README's library example, compiled and run as a doc test.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

pub mod cookies;
mod csrf;
mod extract;
mod layer;
mod login;
mod negotiation;
mod next_path;
mod rejection;

pub use csrf::{
    verify_csrf_header, BrowserBinding, CsrfForm, CsrfHeader, CsrfKey, CsrfToken, ForwardedHost, CSRF_HEADER,
};
pub use extract::{ClientDevice, ClientIp, MaybeUser, RequireUser, Session};
pub use layer::{client_device, SessionLayer, SessionService};
pub use login::{
    clear_pending_login, continue_login, log_in, pending_login, remember_device, retry_after_seconds,
    signed_in_with_two_factors, Auth, AuthRejection, LoginClient, Progress, AUTHENTICATED_AT, AUTHENTICATION_METHODS,
    BUSY_RETRY_AFTER_SECONDS,
};

/// Entry points for the fuzz targets in `fuzz/`: the parsers that read
/// untrusted request bytes. Not a stable API.
#[doc(hidden)]
pub mod fuzzing {
    use http::HeaderMap;

    /// The session cookie the layer would pick from these `Cookie` headers.
    pub fn session_cookie(headers: &HeaderMap, name: &str) -> Option<String> {
        crate::layer::find_cookie(headers, name, |value| tessera::SessionId::parse(value).is_some())
    }

    /// The pre-session CSRF cookie the layer would pick from these headers.
    pub fn pre_session_cookie(headers: &HeaderMap, name: &str) -> Option<String> {
        crate::layer::find_cookie(headers, name, crate::csrf::valid_secret)
    }

    /// The `csrf_token` field of a URL-encoded form body, as `CsrfForm` reads it.
    pub fn csrf_token_field(body: &[u8]) -> Result<Option<String>, String> {
        crate::csrf::token_field(body).map_err(|e| e.to_string())
    }
}
pub use negotiation::{wants_json, wants_json_given};
pub use next_path::safe_next;
pub use rejection::{
    escape_html, CsrfRejection, FormRejection, Problem, Rejection, SessionUnavailable, Unauthenticated,
};
