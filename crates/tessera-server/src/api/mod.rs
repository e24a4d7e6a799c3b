//! The JSON API under `/api`, plus `/.well-known/jwks.json`.
//!
//! One module per concept: [`auth`] (accounts and tokens), [`products`],
//! [`tokens`] (keys and token pairs), [`identity`] (bearer-or-cookie
//! callers), [`problem`] (errors and JSON bodies), [`openapi`].

pub mod account;
pub mod auth;
pub mod email;
pub mod identity;
pub mod openapi;
pub mod passkeys;
pub mod problem;
pub mod products;
pub mod tokens;

use axum::routing::MethodRouter;
use axum::Router;
use tessera::Timestamp;

use crate::state::AppState;

/// Declares the routes once: both the router and [`ROUTES`] come from here.
macro_rules! api_routes {
    ($( $path:literal => { $( $method:ident => $handler:path ),+ $(,)? } ),+ $(,)?) => {
        /// Every `(method, path)` the API serves, for documentation checks.
        pub const ROUTES: &[(&str, &str)] = &[ $( $( (stringify!($method), $path), )+ )+ ];

        /// The API's routes. Mount inside the session layer: cookie callers
        /// need it.
        pub fn router() -> Router<AppState> {
            Router::new() $( .route($path, MethodRouter::new() $( .$method($handler) )+ ) )+
        }
    };
}

api_routes! {
    "/api/signup" => { post => auth::signup },
    "/api/signin" => { post => auth::signin },
    "/api/login/email" => { post => email::request_login },
    "/api/login/email/verify" => { post => email::verify_login },
    "/api/token/refresh" => { post => auth::refresh },
    "/api/signout" => { post => auth::signout },
    "/api/me" => { get => auth::me },
    "/api/passkeys/signin/begin" => { post => passkeys::signin_begin },
    "/api/passkeys/signin/finish" => { post => passkeys::signin_finish },
    "/api/passkeys/register/begin" => { post => passkeys::register_begin },
    "/api/passkeys/register/finish" => { post => passkeys::register_finish },
    "/api/passkeys/signup/begin" => { post => passkeys::signup_begin },
    "/api/passkeys/signup/finish" => { post => passkeys::signup_finish },
    "/api/sessions" => { get => account::list },
    "/api/sessions/revoke-others" => { post => account::revoke_others },
    "/api/sessions/{handle}" => { delete => account::revoke },
    "/api/password" => { post => account::change_password },
    "/api/password/reset-request" => { post => email::request_reset },
    "/api/password/reset" => { post => email::reset },
    "/api/email/verify" => { post => email::verify },
    "/api/email/verification" => { post => email::request_verification },
    "/api/account" => { delete => account::delete },
    "/api/products" => { get => products::list, post => products::create },
    "/api/products/{id}" => {
        get => products::show,
        put => products::replace,
        patch => products::patch,
        delete => products::delete,
    },
    "/api/openapi.json" => { get => openapi::document },
    "/.well-known/jwks.json" => { get => tokens::jwks },
    "/.well-known/oauth-authorization-server" => { get => tokens::metadata },
}

/// Whether errors on `path` must be problem documents whatever `Accept` says.
pub fn is_api_path(path: &str) -> bool {
    path == "/api" || path.starts_with("/api/") || path.starts_with("/.well-known/")
}

/// RFC 3339 in UTC, to the millisecond, e.g. `2026-05-01T12:00:00.123Z`.
pub fn rfc3339(timestamp: Timestamp) -> String {
    let nanos = i128::from(timestamp.as_millis()) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}
