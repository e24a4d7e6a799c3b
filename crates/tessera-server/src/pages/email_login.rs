//! Sign-in by an emailed code or link (`accounts.email_login`):
//! `/login/email` (ask), `/login/email/code` (the code),
//! `/login/email/link` (the link's page and its confirm button). The flow
//! is the core's ([`tessera_auth::email_login`]); these handlers render.
//!
//! Who may do what: anyone may ask (the same answer for every address,
//! throttled per address and per client); only the browser that asked can
//! sign in with the code or link, because the attempt ID the core returned
//! lives in that browser's session. A link opened elsewhere (another
//! browser, a mail scanner) shows a page that signs nothing in, and even
//! in the right browser a `GET` only shows a button: the sign-in is a
//! `POST` with the CSRF token.

use askama::Template;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tessera_auth::email_login::{EmailLoginMode, EmailSecret, LinkStatus};
use tessera_auth::{Authenticator, Channel, EmailError, LoginError};
use tessera_axum::{CsrfForm, LoginClient};

use super::login::continue_login;
use super::{with_retry_after, Chrome, PageContext};
use crate::error_pages::{not_found, ServerError};
use crate::forward_auth::ForwardAuthConfig;
use crate::reauthentication::readable_wait;

/// The session key of this browser's request: its attempt ID (the binding)
/// and where to go afterwards.
const REQUESTED: &str = "email_login";

/// What the session keeps between asking and signing in.
#[derive(Debug, Serialize, Deserialize)]
struct Requested {
    attempt: String,
    next: Option<String>,
}

#[derive(Template)]
#[template(path = "login_email.html")]
struct EmailLoginPage {
    page: Chrome,
    /// `ask`, `code`, `link-sent`, `confirm`, `elsewhere` or `invalid`.
    step: &'static str,
    link: bool,
    email: String,
    token: String,
    next: Option<String>,
    error: Option<String>,
}

/// `?next=` on `/login/email`.
#[derive(Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

/// The address form.
#[derive(Deserialize)]
pub struct AskForm {
    #[serde(default)]
    email: String,
    next: Option<String>,
}

/// The code form.
#[derive(Deserialize)]
pub struct CodeForm {
    #[serde(default)]
    code: String,
}

/// `?token=` of a sign-in link.
#[derive(Deserialize)]
pub struct TokenQuery {
    #[serde(default)]
    token: String,
}

/// The confirm button of a sign-in link.
#[derive(Deserialize)]
pub struct TokenForm {
    #[serde(default)]
    token: String,
}

fn view(ctx: &PageContext, mode: EmailLoginMode, step: &'static str) -> EmailLoginPage {
    EmailLoginPage {
        page: ctx.chrome("Sign in by email"),
        step,
        link: mode == EmailLoginMode::Link,
        email: String::new(),
        token: String::new(),
        next: None,
        error: None,
    }
}

fn requested(ctx: &PageContext) -> Option<Requested> {
    ctx.session.get(REQUESTED).ok().flatten()
}

fn throttled(ctx: &PageContext, mut page: EmailLoginPage, wait: std::time::Duration, what: &str) -> Response {
    page.error = Some(format!("Too many {what}. Please wait {} before trying again.", readable_wait(wait)));
    with_retry_after(ctx.render(StatusCode::TOO_MANY_REQUESTS, &page), wait)
}

/// `GET /login/email`: the address form.
pub async fn show(
    State(auth): State<Authenticator>,
    State(forward_auth): State<Arc<ForwardAuthConfig>>,
    ctx: PageContext,
    Query(query): Query<NextQuery>,
) -> Response {
    let mode = auth.email_login_mode();
    if mode == EmailLoginMode::Off {
        return not_found().await.into_response();
    }
    let next = forward_auth.checked_next(query.next);
    if ctx.user.is_some() {
        return Redirect::to(next.as_deref().unwrap_or("/profile")).into_response();
    }
    let page = EmailLoginPage { next, ..view(&ctx, mode, "ask") };
    ctx.render(StatusCode::OK, &page)
}

/// `POST /login/email`: asks for a code or link. The same page whether an
/// account has the address; this browser's session keeps the attempt ID.
pub async fn request(
    State(auth): State<Authenticator>,
    State(forward_auth): State<Arc<ForwardAuthConfig>>,
    LoginClient(client): LoginClient,
    ctx: PageContext,
    CsrfForm(form): CsrfForm<AskForm>,
) -> Response {
    let mode = auth.email_login_mode();
    if mode == EmailLoginMode::Off {
        return not_found().await.into_response();
    }
    let next = forward_auth.checked_next(form.next);
    let mut page = EmailLoginPage { next: next.clone(), email: form.email.clone(), ..view(&ctx, mode, "ask") };
    match auth.request_email_login(&client, &form.email).await {
        Ok(attempt) => {
            // Serializing strings cannot fail.
            let _ = ctx.session.insert(REQUESTED, &Requested { attempt, next });
            page.step = if mode == EmailLoginMode::Link { "link-sent" } else { "code" };
            page.email = String::new();
            ctx.render(StatusCode::OK, &page)
        }
        Err(EmailError::Malformed(error)) => {
            page.error = Some(format!("{}.", capitalised(&error.to_string())));
            ctx.render(StatusCode::UNPROCESSABLE_ENTITY, &page)
        }
        Err(EmailError::Throttled(wait)) => throttled(&ctx, page, wait, "sign-in mails"),
        Err(EmailError::Off) => not_found().await.into_response(),
        Err(other) => ServerError::unavailable(other).into_response(),
    }
}

/// `POST /login/email/code`: the code, in the browser that asked for it;
/// then the same steps as a password login.
pub async fn code(
    State(auth): State<Authenticator>,
    LoginClient(client): LoginClient,
    ctx: PageContext,
    CsrfForm(form): CsrfForm<CodeForm>,
) -> Result<Response, ServerError> {
    let mode = auth.email_login_mode();
    if mode != EmailLoginMode::Code {
        return Ok(not_found().await.into_response());
    }
    let Some(asked) = requested(&ctx) else {
        let mut page = view(&ctx, mode, "ask");
        page.error = Some("Ask for a code in this browser first.".into());
        return Ok(ctx.render(StatusCode::BAD_REQUEST, &page));
    };
    let page = EmailLoginPage { next: asked.next.clone(), ..view(&ctx, mode, "code") };
    let secret = EmailSecret::Code(&form.code);
    match auth.email_login(Channel::Web, &client, &asked.attempt, secret, asked.next.clone()).await {
        Ok(step) => {
            let _ = ctx.session.remove::<serde_json::Value>(REQUESTED);
            Ok(continue_login(&ctx, step, asked.next))
        }
        Err(LoginError::InvalidCredentials) => {
            let page = EmailLoginPage {
                error: Some(
                    "That code is not valid: it is wrong, was used, expired, or was asked for in another browser."
                        .into(),
                ),
                ..page
            };
            Ok(ctx.render(StatusCode::UNAUTHORIZED, &page))
        }
        Err(LoginError::Throttled(wait)) => Ok(throttled(&ctx, page, wait, "failed sign-in attempts")),
        Err(error) => Err(ServerError::from(error)),
    }
}

/// `GET /login/email/link?token=…`: in the browser that asked, a button
/// that signs in; elsewhere, a page that signs nothing in. Uses nothing up.
pub async fn link_form(
    State(auth): State<Authenticator>,
    ctx: PageContext,
    Query(query): Query<TokenQuery>,
) -> Response {
    let mode = auth.email_login_mode();
    if mode != EmailLoginMode::Link {
        return not_found().await.into_response();
    }
    let asked = requested(&ctx);
    let status = match auth.email_link_status(asked.as_ref().map(|a| a.attempt.as_str()), &query.token).await {
        Ok(status) => status,
        Err(EmailError::Off) => return not_found().await.into_response(),
        Err(error) => return ServerError::unavailable(error).into_response(),
    };
    match status {
        LinkStatus::ThisBrowser => {
            let page = EmailLoginPage { token: query.token, ..view(&ctx, mode, "confirm") };
            ctx.render(StatusCode::OK, &page)
        }
        LinkStatus::OtherBrowser => ctx.render(StatusCode::OK, &view(&ctx, mode, "elsewhere")),
        LinkStatus::Invalid => invalid_link(&ctx, mode),
    }
}

fn invalid_link(ctx: &PageContext, mode: EmailLoginMode) -> Response {
    let mut page = view(ctx, mode, "invalid");
    page.error = Some("That link is not valid: it was used already, expired, or a newer one was sent.".into());
    ctx.render(StatusCode::BAD_REQUEST, &page)
}

/// `POST /login/email/link`: the confirm button, in the browser that asked.
pub async fn link(
    State(auth): State<Authenticator>,
    LoginClient(client): LoginClient,
    ctx: PageContext,
    CsrfForm(form): CsrfForm<TokenForm>,
) -> Result<Response, ServerError> {
    let mode = auth.email_login_mode();
    if mode != EmailLoginMode::Link {
        return Ok(not_found().await.into_response());
    }
    let Some(asked) = requested(&ctx) else {
        return Ok(ctx.render(StatusCode::BAD_REQUEST, &view(&ctx, mode, "elsewhere")));
    };
    let secret = EmailSecret::Link(&form.token);
    match auth.email_login(Channel::Web, &client, &asked.attempt, secret, asked.next.clone()).await {
        Ok(step) => {
            let _ = ctx.session.remove::<serde_json::Value>(REQUESTED);
            Ok(continue_login(&ctx, step, asked.next))
        }
        Err(LoginError::InvalidCredentials) => Ok(invalid_link(&ctx, mode)),
        Err(LoginError::Throttled(wait)) => {
            Ok(throttled(&ctx, view(&ctx, mode, "invalid"), wait, "failed sign-in attempts"))
        }
        Err(error) => Err(ServerError::from(error)),
    }
}

/// The core's messages start in lower case (they read well in logs).
fn capitalised(message: &str) -> String {
    let mut chars = message.chars();
    match chars.next() {
        Some(first) => format!("{}{}", first.to_uppercase(), chars.as_str().trim_end_matches('.')),
        None => String::new(),
    }
}
