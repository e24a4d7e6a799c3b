//! The email pages: the account's address (`/account/email`), the link
//! that confirms one (`/email/verify`), and password reset
//! (`/password/forgot`, `/password/reset`). The flows themselves are the
//! core's ([`tessera_auth::email_verification`],
//! [`tessera_auth::password_reset`]); these handlers only render.
//!
//! Who may do what: changing an address needs the session of its account
//! (`RequireUser`, CSRF); confirming one needs the link's token or the
//! code mailed to it (the code only from the account's own session);
//! resetting a password needs the reset link's token. Links open a page
//! with a button rather than acting on `GET`, so mail scanners that
//! follow links change nothing.

use askama::Template;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use http::StatusCode;
use serde::Deserialize;
use tessera_auth::email_verification::UnverifiedLogin;
use tessera_auth::{Authenticator, Channel, EmailError};
use tessera_axum::{CsrfForm, LoginClient, RequireUser};

use super::{with_retry_after, Chrome, PageContext};
use crate::error_pages::{not_found, ServerError};
use crate::mail::EmailPages;
use crate::reauthentication::readable_wait;

#[derive(Template)]
#[template(path = "password_forgot.html")]
struct ForgotPage {
    page: Chrome,
    enabled: bool,
    sent: bool,
    email: String,
    error: Option<String>,
}

#[derive(Template)]
#[template(path = "password_reset.html")]
struct ResetPage {
    page: Chrome,
    valid: bool,
    done: bool,
    token: String,
    min_password: usize,
    error: Option<String>,
}

#[derive(Template)]
#[template(path = "email_verify.html")]
struct VerifyPage {
    page: Chrome,
    token: String,
    confirmed: Option<String>,
    error: Option<String>,
}

#[derive(Template)]
#[template(path = "account_email.html")]
struct AccountEmailPage {
    page: Chrome,
    address: Option<String>,
    notice: Option<String>,
    error: Option<String>,
}

/// `?token=` of a mailed link.
#[derive(Deserialize)]
pub struct TokenQuery {
    #[serde(default)]
    token: String,
}

/// The reset request form.
#[derive(Deserialize)]
pub struct ForgotForm {
    #[serde(default)]
    email: String,
}

/// The new-password form of a reset link.
#[derive(Deserialize)]
pub struct ResetForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    new_password: String,
}

/// The confirm button of a verification link.
#[derive(Deserialize)]
pub struct VerifyForm {
    #[serde(default)]
    token: String,
}

/// The address form on `/account/email`.
#[derive(Deserialize)]
pub struct AddressForm {
    #[serde(default)]
    email: String,
}

/// The code form on `/account/email`.
#[derive(Deserialize)]
pub struct CodeForm {
    #[serde(default)]
    code: String,
}

fn forgot_page(ctx: &PageContext, email: &EmailPages) -> ForgotPage {
    ForgotPage {
        page: ctx.chrome("Forgot your password?"),
        enabled: email.enabled(),
        sent: false,
        email: String::new(),
        error: None,
    }
}

/// `GET /password/forgot`.
pub async fn forgot(State(email): State<EmailPages>, ctx: PageContext) -> Response {
    ctx.render(StatusCode::OK, &forgot_page(&ctx, &email))
}

/// `POST /password/forgot`: the same page, in the same time, whether an
/// account has the address (the core only queues the request).
pub async fn request_reset(
    State(auth): State<Authenticator>,
    State(email): State<EmailPages>,
    LoginClient(client): LoginClient,
    ctx: PageContext,
    CsrfForm(form): CsrfForm<ForgotForm>,
) -> Response {
    let mut page = forgot_page(&ctx, &email);
    if !email.enabled() {
        return ctx.render(StatusCode::NOT_FOUND, &page);
    }
    match auth.request_password_reset(&client, &form.email).await {
        Ok(()) => {
            page.sent = true;
            ctx.render(StatusCode::OK, &page)
        }
        Err(EmailError::Malformed(error)) => {
            page.email = form.email;
            page.error = Some(capitalised(&error.to_string()));
            ctx.render(StatusCode::UNPROCESSABLE_ENTITY, &page)
        }
        Err(EmailError::Throttled(wait)) => {
            page.email = form.email;
            page.error =
                Some(format!("Too many reset requests. Please wait {} before asking again.", readable_wait(wait)));
            with_retry_after(ctx.render(StatusCode::TOO_MANY_REQUESTS, &page), wait)
        }
        Err(other) => ServerError::unavailable(other).into_response(),
    }
}

/// `GET /password/reset?token=…`: the new-password form, if the link works.
pub async fn reset_form(
    State(auth): State<Authenticator>,
    State(email): State<EmailPages>,
    ctx: PageContext,
    Query(query): Query<TokenQuery>,
) -> Response {
    if !email.enabled() {
        return not_found().await.into_response();
    }
    let valid = match auth.reset_token_works(&query.token).await {
        Ok(valid) => valid,
        Err(error) => return ServerError::unavailable(error).into_response(),
    };
    let page = reset_page(&ctx, &auth, valid, query.token);
    ctx.render(if valid { StatusCode::OK } else { StatusCode::BAD_REQUEST }, &page)
}

fn reset_page(ctx: &PageContext, auth: &Authenticator, valid: bool, token: String) -> ResetPage {
    ResetPage {
        page: ctx.chrome("Choose a new password"),
        valid,
        done: false,
        token: if valid { token } else { String::new() },
        min_password: auth.accounts().policy().effective_min_chars(),
        error: None,
    }
}

/// `POST /password/reset`: sets the password, ends every session and token
/// of the account (this browser's too, if it was signed in), logs nobody in.
pub async fn reset(
    State(auth): State<Authenticator>,
    State(email): State<EmailPages>,
    LoginClient(client): LoginClient,
    ctx: PageContext,
    CsrfForm(form): CsrfForm<ResetForm>,
) -> Response {
    if !email.enabled() {
        return not_found().await.into_response();
    }
    match auth.reset_password(Channel::Web, &client, &form.token, &form.new_password).await {
        Ok(_) => {
            let mut page = reset_page(&ctx, &auth, true, String::new());
            page.done = true;
            ctx.render(StatusCode::OK, &page)
        }
        Err(EmailError::InvalidToken) => {
            ctx.render(StatusCode::BAD_REQUEST, &reset_page(&ctx, &auth, false, form.token))
        }
        Err(EmailError::InvalidPassword(why)) => {
            let mut page = reset_page(&ctx, &auth, true, form.token);
            page.error = Some(format!("Your password was not changed: {why}"));
            ctx.render(StatusCode::UNPROCESSABLE_ENTITY, &page)
        }
        Err(other) => ServerError::unavailable(other).into_response(),
    }
}

/// `GET /email/verify?token=…`: asks before confirming.
pub async fn verify_form(
    State(email): State<EmailPages>,
    ctx: PageContext,
    Query(query): Query<TokenQuery>,
) -> Response {
    if !email.enabled() {
        return not_found().await.into_response();
    }
    let page =
        VerifyPage { page: ctx.chrome("Confirm your email address"), token: query.token, confirmed: None, error: None };
    ctx.render(StatusCode::OK, &page)
}

/// `POST /email/verify`: the link's address becomes its account's.
pub async fn verify(
    State(auth): State<Authenticator>,
    State(email): State<EmailPages>,
    LoginClient(client): LoginClient,
    ctx: PageContext,
    CsrfForm(form): CsrfForm<VerifyForm>,
) -> Response {
    if !email.enabled() {
        return not_found().await.into_response();
    }
    let mut page = VerifyPage {
        page: ctx.chrome("Confirm your email address"),
        token: String::new(),
        confirmed: None,
        error: None,
    };
    match auth.confirm_email_token(Channel::Web, &client, &form.token).await {
        Ok(confirmed) => {
            page.confirmed = Some(confirmed.address);
            ctx.render(StatusCode::OK, &page)
        }
        Err(error @ (EmailError::InvalidToken | EmailError::Taken | EmailError::Malformed(_))) => {
            let status =
                if matches!(error, EmailError::Taken) { StatusCode::CONFLICT } else { StatusCode::BAD_REQUEST };
            page.error = Some(capitalised(&error.to_string()));
            ctx.render(status, &page)
        }
        Err(other) => ServerError::unavailable(other).into_response(),
    }
}

async fn account_page(ctx: &PageContext, auth: &Authenticator, user_id: i64) -> Result<AccountEmailPage, Response> {
    let Some(email) = auth.email() else { return Err(not_found().await.into_response()) };
    let address = email.addresses.verified(user_id).await.map_err(|e| ServerError::unavailable(e).into_response())?;
    Ok(AccountEmailPage { page: ctx.chrome("Email address"), address, notice: None, error: None })
}

/// `GET /account/email`.
pub async fn account(State(auth): State<Authenticator>, RequireUser(_): RequireUser, ctx: PageContext) -> Response {
    let Some(user) = ctx.user.clone() else { return Redirect::to("/login").into_response() };
    match account_page(&ctx, &auth, user.id).await {
        Ok(page) => ctx.render(StatusCode::OK, &page),
        Err(response) => response,
    }
}

/// `POST /account/email`: mails a link and a code to the new address.
pub async fn request_verification(
    State(auth): State<Authenticator>,
    RequireUser(_): RequireUser,
    ctx: PageContext,
    CsrfForm(form): CsrfForm<AddressForm>,
) -> Response {
    let Some(user) = ctx.user.clone() else { return Redirect::to("/login").into_response() };
    let mut page = match account_page(&ctx, &auth, user.id).await {
        Ok(page) => page,
        Err(response) => return response,
    };
    match auth.request_email(&user, &form.email).await {
        Ok(()) => {
            page.notice = Some(format!(
                "We sent a link and a code to {}. The address counts once you confirm it.",
                form.email.trim()
            ));
            ctx.render(StatusCode::OK, &page)
        }
        Err(EmailError::Malformed(error)) => {
            page.error = Some(capitalised(&error.to_string()));
            ctx.render(StatusCode::UNPROCESSABLE_ENTITY, &page)
        }
        Err(EmailError::Throttled(wait)) => {
            page.error = Some(format!("Too many confirmation mails. Please wait {}.", readable_wait(wait)));
            with_retry_after(ctx.render(StatusCode::TOO_MANY_REQUESTS, &page), wait)
        }
        Err(other) => ServerError::unavailable(other).into_response(),
    }
}

/// `POST /account/email/code`: the code from the mail, behind the login throttle.
pub async fn confirm_code(
    State(auth): State<Authenticator>,
    RequireUser(_): RequireUser,
    LoginClient(client): LoginClient,
    ctx: PageContext,
    CsrfForm(form): CsrfForm<CodeForm>,
) -> Response {
    let Some(user) = ctx.user.clone() else { return Redirect::to("/login").into_response() };
    let result = auth.confirm_email_code(Channel::Web, &client, &user, &form.code).await;
    let mut page = match account_page(&ctx, &auth, user.id).await {
        Ok(page) => page,
        Err(response) => return response,
    };
    match result {
        Ok(confirmed) => {
            page.notice = Some(format!("{} is now your account's address.", confirmed.address));
            ctx.render(StatusCode::OK, &page)
        }
        Err(EmailError::Throttled(wait)) => {
            page.error = Some(format!("Too many wrong codes. Please wait {}.", readable_wait(wait)));
            with_retry_after(ctx.render(StatusCode::TOO_MANY_REQUESTS, &page), wait)
        }
        Err(error @ (EmailError::InvalidCode | EmailError::Taken | EmailError::Malformed(_))) => {
            let status =
                if matches!(error, EmailError::Taken) { StatusCode::CONFLICT } else { StatusCode::BAD_REQUEST };
            page.error = Some(capitalised(&error.to_string()));
            ctx.render(status, &page)
        }
        Err(other) => ServerError::unavailable(other).into_response(),
    }
}

/// The core's messages start in lower case (they read well in logs); a
/// page shows them as a sentence.
fn capitalised(message: &str) -> String {
    let mut chars = message.chars();
    match chars.next() {
        Some(first) => format!("{}{}.", first.to_uppercase(), chars.as_str().trim_end_matches('.')),
        None => String::new(),
    }
}

/// The session key of a login refused for an unverified address.
pub const UNVERIFIED_LOGIN: &str = "unverified_login";

#[derive(Template)]
#[template(path = "email_resend.html")]
struct ResendPage {
    page: Chrome,
    sent: bool,
    expired: bool,
    email: String,
    error: Option<String>,
}

fn resend_page(ctx: &PageContext) -> ResendPage {
    ResendPage {
        page: ctx.chrome("Confirm your email address"),
        sent: false,
        expired: false,
        email: String::new(),
        error: None,
    }
}

/// `GET /login/verification`: after a login refused because the address
/// is not verified (`accounts.email = required`), the way to get the mail
/// again. Only a browser whose login just passed its password gets here.
pub async fn unverified(ctx: PageContext) -> Response {
    let mut page = resend_page(&ctx);
    let refused: Option<UnverifiedLogin> = ctx.session.get(UNVERIFIED_LOGIN).ok().flatten();
    if refused.is_none() {
        page.expired = true;
        return ctx.render(StatusCode::UNAUTHORIZED, &page);
    }
    ctx.render(StatusCode::FORBIDDEN, &page)
}

/// `POST /login/verification`: mails the link and code again (to the
/// address typed, which may correct a typo), for the account whose
/// password this browser's refused login proved.
pub async fn resend(
    State(auth): State<Authenticator>,
    ctx: PageContext,
    CsrfForm(form): CsrfForm<AddressForm>,
) -> Response {
    let mut page = resend_page(&ctx);
    let Some(refused) = ctx.session.get::<UnverifiedLogin>(UNVERIFIED_LOGIN).ok().flatten() else {
        page.expired = true;
        return ctx.render(StatusCode::UNAUTHORIZED, &page);
    };
    page.email = form.email.trim().to_owned();
    match auth.resend_verification(&refused, &form.email).await {
        Ok(()) => {
            page.sent = true;
            ctx.render(StatusCode::OK, &page)
        }
        Err(EmailError::InvalidToken) => {
            let _ = ctx.session.remove::<serde_json::Value>(UNVERIFIED_LOGIN);
            page.expired = true;
            ctx.render(StatusCode::UNAUTHORIZED, &page)
        }
        Err(EmailError::Malformed(error)) => {
            page.error = Some(capitalised(&error.to_string()));
            ctx.render(StatusCode::UNPROCESSABLE_ENTITY, &page)
        }
        Err(EmailError::Throttled(wait)) => {
            page.error = Some(format!("Too many confirmation mails. Please wait {}.", readable_wait(wait)));
            with_retry_after(ctx.render(StatusCode::TOO_MANY_REQUESTS, &page), wait)
        }
        Err(EmailError::Off) => not_found().await.into_response(),
        Err(other) => ServerError::unavailable(other).into_response(),
    }
}
