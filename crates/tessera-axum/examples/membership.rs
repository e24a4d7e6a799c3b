//! The seeds' membership site on tessera's public API: register, log in, a
//! profile with a visit counter, log out, and 404 and 500 pages — with
//! argon2id, throttled logins, CSRF on every form, a new session ID at login,
//! idle and absolute time-outs and a `__Host-` cookie, all by default.
//!
//! `cargo run -p tessera-axum --example membership`, then open
//! <http://localhost:3000>. Users and sessions live in `membership.db`.
use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::{http::StatusCode, http::Uri, routing::get, routing::post, Router};
use tessera::SessionEngine;
use tessera_auth::Authenticator;
use tessera_axum::{Auth, AuthRejection, CsrfForm, CsrfKey, CsrfToken, RequireUser, SessionLayer};
use tower_http::catch_panic::CatchPanicLayer;

#[derive(serde::Deserialize)]
struct Credentials {
    username: String,
    password: String,
}

/// `html` with each `{name}` replaced; the values are ours or validated
/// user names (letters, digits, `.`, `_`, `-`), so nothing needs escaping.
fn page(status: StatusCode, html: &str, values: &[(&str, &str)]) -> Response {
    (status, Html(values.iter().fold(html.to_owned(), |html, (k, v)| html.replace(k, v)))).into_response()
}

/// The login and registration forms, and the 500 page.
const FORMS: [&str; 2] = [include_str!("membership/login.html"), include_str!("membership/register.html")];
const OOPS: &str = include_str!("membership/500.html");

async fn form(uri: Uri, csrf: CsrfToken) -> Response {
    page(StatusCode::OK, FORMS[usize::from(uri.path() == "/register")], &[("{csrf}", csrf.as_str())])
}

// Every check, throttle, event and the new session ID are the library's.
async fn register(auth: Auth, CsrfForm(form): CsrfForm<Credentials>) -> Result<Redirect, AuthRejection> {
    auth.register(&form.username, &form.password).await?;
    Ok(Redirect::to("/profile"))
}

async fn login(auth: Auth, CsrfForm(form): CsrfForm<Credentials>) -> Result<Redirect, AuthRejection> {
    auth.log_in(&form.username, &form.password).await?;
    Ok(Redirect::to("/profile"))
}

async fn profile(_: RequireUser, auth: Auth, csrf: CsrfToken) -> Result<Response, AuthRejection> {
    let visits = auth.session.update("visits", |n: Option<u64>| n.unwrap_or(0) + 1).unwrap_or(0).to_string();
    let name = auth.user().await?.map(|user| user.username).unwrap_or_default();
    let values = [("{csrf}", csrf.as_str()), ("{name}", &name), ("{visits}", &visits)];
    Ok(page(StatusCode::OK, include_str!("membership/profile.html"), &values))
}

async fn logout(auth: Auth, _: CsrfForm<serde::de::IgnoredAny>) -> Redirect {
    auth.log_out();
    Redirect::to("/login")
}

#[tokio::main]
pub async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("MEMBERSHIP_DATABASE").unwrap_or_else(|_| "sqlite://membership.db".into());
    let store = tessera_store_sqlite::SqliteStore::connect(&url).await?;
    store.spawn_purge_task(Duration::from_secs(60));
    let app = Router::new()
        .route("/", get(|| async { Redirect::to("/profile") }))
        .route("/register", get(form).post(register))
        .route("/login", get(form).post(login))
        .route("/profile", get(profile))
        .route("/logout", post(logout))
        .fallback(|| async { page(StatusCode::NOT_FOUND, include_str!("membership/404.html"), &[]) })
        .layer(SessionLayer::new(SessionEngine::new(Arc::new(store)), CsrfKey::generate()))
        .layer(CatchPanicLayer::custom(|_| page(StatusCode::INTERNAL_SERVER_ERROR, OOPS, &[])))
        .with_state(Authenticator::open(&url).await?);
    let address = std::env::var("MEMBERSHIP_LISTEN").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(address).await?;
    println!("membership example listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await?;
    Ok(())
}
