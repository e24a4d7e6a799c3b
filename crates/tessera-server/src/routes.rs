//! The routes and the layers around them: the one module that sees the
//! whole [`AppState`]; every handler takes only the parts it uses.

use axum::extract::State;
use axum::routing::{get, post};
use axum::Router;
use tessera_axum::SessionLayer;
use tower::ServiceBuilder;
use tower_http::limit::RequestBodyLimitLayer;

use crate::api;
use crate::config::AppConfig;
use crate::edge::EdgeLayer;
use crate::error_pages::not_found;
use crate::forward_auth;
use crate::health;
use crate::oidc;
use crate::pages::{
    account, account_activity, account_password, account_sessions, account_two_factor, email, email_login, home, login,
    login_second_factor, logout, passkeys, profile, register,
};
use crate::state::AppState;
use crate::static_files;

/// Every route of the public listener, with its layers, over `state`.
pub(crate) fn routes(config: &AppConfig, state: AppState, sessions: SessionLayer) -> Router {
    let mut pages = Router::new()
        .route("/", get(home::show))
        .route("/register", get(register::show).post(register::submit))
        .route("/login", get(login::show).post(login::submit))
        .route("/login/second-factor", get(login_second_factor::show).post(login_second_factor::submit))
        .route("/profile", get(profile::show))
        .route("/logout", post(logout::submit))
        .route("/account", get(account::show))
        .route("/account/delete", post(account::delete))
        .route("/account/sessions", get(account_sessions::show))
        .route("/account/sessions/revoke", post(account_sessions::revoke))
        .route("/account/password", get(account_password::show).post(account_password::submit))
        .route("/account/activity", get(account_activity::show))
        .route("/account/two-factor", get(account_two_factor::show))
        .route("/account/two-factor/setup", post(account_two_factor::setup))
        .route("/account/two-factor/confirm", post(account_two_factor::confirm))
        .route("/account/two-factor/recovery-codes", post(account_two_factor::recovery_codes))
        .route("/account/two-factor/disable", post(account_two_factor::disable))
        .route("/account/identities/unlink", post(account::unlink))
        .route("/login/passkey/begin", post(passkeys::begin_sign_in))
        .route("/login/passkey/finish", post(passkeys::finish_sign_in))
        .route("/account/passkeys", get(passkeys::show))
        .route("/account/passkeys/begin", post(passkeys::begin_registration))
        .route("/account/passkeys/finish", post(passkeys::finish_registration))
        .route("/account/passkeys/rename", post(passkeys::rename))
        .route("/account/passkeys/remove", post(passkeys::remove))
        .route("/login/second-factor/passkey/begin", post(passkeys::begin_second_factor))
        .route("/login/second-factor/passkey/finish", post(passkeys::finish_second_factor))
        .route("/account/confirm/passkey/begin", post(passkeys::begin_confirmation))
        .route("/account/confirm/passkey/finish", post(passkeys::finish_confirmation))
        .route("/register/passkey/begin", post(passkeys::begin_sign_up))
        .route("/register/passkey/finish", post(passkeys::finish_sign_up))
        .route("/account/email", get(email::account).post(email::request_verification))
        .route("/account/email/code", post(email::confirm_code))
        .route("/email/verify", get(email::verify_form).post(email::verify))
        .route("/login/verification", get(email::unverified).post(email::resend))
        .route("/login/email", get(email_login::show).post(email_login::request))
        .route("/login/email/code", post(email_login::code))
        .route("/login/email/link", get(email_login::link_form).post(email_login::link))
        .route("/password/forgot", get(email::forgot).post(email::request_reset))
        .route("/password/reset", get(email::reset_form).post(email::reset))
        .route("/auth/oidc/{provider}/start", post(oidc::handlers::start))
        .route("/auth/oidc/{provider}/reauthenticate", post(oidc::handlers::reauthenticate))
        .route("/auth/oidc/{provider}/callback", get(oidc::handlers::callback))
        .merge(api::router());
    if config.test_routes {
        pages = pages.route("/__test/panic", get(|| async { panic!("test panic") as &'static str }));
    }
    // Forward-auth answers with headers and no body worth compressing, on
    // every request the proxy in front sees: it gets the session layer but
    // not the compression layer (whose response wrapper costs every answer
    // it passes, compressed or not).
    let forward_auth = Router::new().route("/auth/verify", get(forward_auth::verify)).layer(sessions.clone());
    let mut router = pages
        .fallback(not_found)
        .layer(sessions)
        // Static files never touch the session.
        .merge(static_files::routes())
        // W3C "A Well-Known URL for Changing Passwords": password managers
        // send users here.
        .route("/.well-known/change-password", get(|| async { axum::response::Redirect::to("/account/password") }));
    if config.metrics_on_public_listener {
        let source = state.metrics.clone();
        router = router.route("/metrics", get(move || async move { crate::metrics::endpoint(State(source)).await }));
    }
    router
        // gzip or br when the client accepts it (see crate::compression),
        // around the body limit. One `layer` call for both: every
        // `Router::layer` wraps each route in another `Route`, which axum
        // clones, with all below it, on every request.
        .layer(
            ServiceBuilder::new()
                .layer(crate::compression::layer())
                // The body limit's own response type, boxed as a `Route`
                // around it would have boxed it.
                .map_response(axum::response::IntoResponse::into_response)
                .layer(RequestBodyLimitLayer::new(config.max_body_bytes)),
        )
        .merge(forward_auth)
        // Probes answer a few bytes, read no body and never touch the
        // session: only the edge wraps them.
        .route("/healthz", get(health::live))
        .route("/readyz", get(health::ready))
        // Request ID, client address, HTTP checks, error pages (the body
        // limit's 413 included), access log, metrics, security headers.
        .layer(EdgeLayer::new(config.trusted_proxies.clone(), config.hsts))
        .with_state(state)
}
