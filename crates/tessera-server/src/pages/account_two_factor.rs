//! `/account/two-factor`: setting up, renewing and turning off two-step
//! verification (an authenticator app plus recovery codes).
//!
//! Every change needs a recent authentication, like the other sensitive
//! account actions: within the window, or with the current password sent
//! along (checked behind the login throttle; a right one steps the session
//! up). Confirming a setup needs a code from the new app, so a mistyped
//! secret cannot lock the user out, and the recovery codes are shown once,
//! right then.

use askama::Template;
use axum::response::{IntoResponse, Redirect, Response};
use http::StatusCode;
use serde::Deserialize;
use tessera_axum::{CsrfForm, RequireUser};

use super::{with_retry_after, Chrome, PageContext};
use crate::audit::AuditKind;
use crate::auth_events::ServerEvents;
use crate::error_pages::ServerError;
use crate::flash::Flash;
use crate::reauthentication::Reauthentication;
use crate::reauthentication::{self, Recency};
use crate::services::services;
use std::sync::Arc;
use tessera::Clock;
use tessera::SessionEngine;
use tessera_auth::second_factor::{Status, TotpSecret};
use tessera_auth::Authenticator;
use tessera_auth::{Channel, LoginError, User};

#[derive(Template)]
#[template(path = "account_two_factor.html")]
struct TwoFactorPage {
    page: Chrome,
    status: Status,
    needs_password: bool,
    has_password: bool,
    error: Option<String>,
    setup: Option<SetupView>,
    new_codes: Option<Vec<String>>,
}

/// What the setup step shows: the QR code, and the secret for typing.
pub(crate) struct SetupView {
    pub(crate) qr_svg: String,
    pub(crate) secret_groups: String,
}

impl SetupView {
    pub(crate) fn new(secret: &TotpSecret, username: &str) -> Self {
        let base32 = secret.to_base32();
        let groups: Vec<String> =
            base32.as_bytes().chunks(4).map(|chunk| String::from_utf8_lossy(chunk).into_owned()).collect();
        SetupView { qr_svg: secret.qr_svg(username).unwrap_or_default(), secret_groups: groups.join(" ") }
    }
}

services! {
    /// What the two-step verification pages are made of: the authentication
    /// core, recent authentication, the audit trail, the sessions and the clock.
    pub struct TwoFactorPages {
        auth: Authenticator,
        reauth: Reauthentication,
        events: ServerEvents,
        engine: SessionEngine,
        clock: Arc<dyn Clock>,
    }
}

async fn page(
    pages: &TwoFactorPages,
    ctx: &PageContext,
    user: &User,
    status_code: StatusCode,
    error: Option<String>,
    setup: Option<SetupView>,
    new_codes: Option<Vec<String>>,
) -> Response {
    let status = match pages.auth.second_factors().status(user.id).await {
        Ok(status) => status,
        Err(error) => return ServerError::unavailable(error).into_response(),
    };
    let needs_password = !pages.reauth.is_recent_now(&ctx.session);
    let view = TwoFactorPage {
        page: ctx.chrome("Two-step verification"),
        status,
        needs_password,
        has_password: user.password_hash.is_some(),
        error,
        setup,
        new_codes,
    };
    ctx.render(status_code, &view)
}

/// The current state, with the forms that change it.
pub async fn show(pages: TwoFactorPages, RequireUser(_): RequireUser, ctx: PageContext) -> Response {
    let Some(user) = ctx.user.clone() else { return Redirect::to("/login").into_response() };
    page(&pages, &ctx, &user, StatusCode::OK, None, None, None).await
}

/// A form that needs a recent authentication.
#[derive(Deserialize)]
pub struct ConfirmedForm {
    current_password: Option<String>,
    /// A current code from the app, or a recovery code: changing an active
    /// second factor needs it (issue #14 item 6).
    code: Option<String>,
}

/// Requires a current code of the active second factor; `Err` is the page
/// to answer instead.
async fn require_code(
    pages: &TwoFactorPages,
    ctx: &PageContext,
    user: &User,
    code: Option<&str>,
) -> Result<(), Response> {
    let Some(code) = code.map(str::trim).filter(|c| !c.is_empty()) else {
        let message =
            "Enter a current code from your authenticator app (or a recovery code) to change two-step verification.";
        return Err(
            page(pages, ctx, user, StatusCode::UNPROCESSABLE_ENTITY, Some(message.to_owned()), None, None).await
        );
    };
    match pages.auth.confirm_second_factor(Channel::Web, &ctx.client, user, code).await {
        Ok(()) => Ok(()),
        Err(LoginError::InvalidSecondFactor) => {
            let message = "That code is not valid, or it was used already. Nothing was changed.";
            Err(page(pages, ctx, user, StatusCode::UNAUTHORIZED, Some(message.to_owned()), None, None).await)
        }
        Err(LoginError::Throttled(wait)) => {
            let message = format!(
                "Too many wrong codes. Please wait {} before trying again.",
                reauthentication::readable_wait(wait)
            );
            let response = page(pages, ctx, user, StatusCode::TOO_MANY_REQUESTS, Some(message), None, None).await;
            Err(with_retry_after(response, wait))
        }
        Err(error) => Err(ServerError::from(error).into_response()),
    }
}

/// The logged-in user, once the authentication is recent (or confirmed
/// with `password`); `Err` is the page to answer instead.
async fn recent_user(pages: &TwoFactorPages, ctx: &PageContext, password: Option<&str>) -> Result<User, Response> {
    let Some(user) = ctx.user.clone() else { return Err(Redirect::to("/login").into_response()) };
    require_recent(pages, ctx, &user, password).await?;
    Ok(user)
}

/// Checks recency; `Err` is the page to answer instead.
async fn require_recent(
    pages: &TwoFactorPages,
    ctx: &PageContext,
    user: &User,
    password: Option<&str>,
) -> Result<(), Response> {
    let recency = pages
        .reauth
        .ensure_recent(&ctx.session, user, password, &ctx.client)
        .await
        .map_err(|error| ServerError::from(error).into_response())?;
    let (status, message) = match recency {
        Recency::Recent => return Ok(()),
        Recency::Stale => (StatusCode::UNAUTHORIZED, pages.reauth.stale_message(user)),
        Recency::Wrong => (StatusCode::UNAUTHORIZED, "That is not your current password.".to_owned()),
        Recency::Throttled(wait) => {
            let message = format!(
                "Too many wrong passwords. Please wait {} before trying again.",
                reauthentication::readable_wait(wait)
            );
            let response = page(pages, ctx, user, StatusCode::TOO_MANY_REQUESTS, Some(message), None, None).await;
            return Err(with_retry_after(response, wait));
        }
    };
    Err(page(pages, ctx, user, status, Some(message), None, None).await)
}

/// Starts a setup: a new secret, shown as a QR code and as text, and the
/// form for the first code.
pub async fn setup(
    pages: TwoFactorPages,
    RequireUser(_): RequireUser,
    ctx: PageContext,
    CsrfForm(form): CsrfForm<ConfirmedForm>,
) -> Response {
    let user = match recent_user(&pages, &ctx, form.current_password.as_deref()).await {
        Ok(user) => user,
        Err(response) => return response,
    };
    match pages.auth.second_factors().begin_setup(user.id).await {
        Ok(Some(secret)) => {
            let setup = SetupView::new(&secret, &user.username);
            page(&pages, &ctx, &user, StatusCode::OK, None, Some(setup), None).await
        }
        Ok(None) => {
            let message = "Two-step verification is already on. Turn it off first to use another app.";
            page(&pages, &ctx, &user, StatusCode::CONFLICT, Some(message.to_owned()), None, None).await
        }
        Err(error) => ServerError::unavailable(error).into_response(),
    }
}

/// The first code from the new app.
#[derive(Deserialize)]
pub struct CodeForm {
    #[serde(default)]
    code: String,
    /// "Sign out my other sessions" (checked by default on the form): a
    /// session opened by someone else before the factor existed should not
    /// outlive it.
    #[serde(default)]
    sign_out_others: Option<String>,
}

/// Confirms the setup with a code from the app, turns two-step
/// verification on, and shows the recovery codes once.
pub async fn confirm(
    pages: TwoFactorPages,
    RequireUser(_): RequireUser,
    ctx: PageContext,
    CsrfForm(form): CsrfForm<CodeForm>,
) -> Response {
    let Some(user) = ctx.user.clone() else { return Redirect::to("/login").into_response() };
    let now = pages.clock.now();
    // Setup was started behind a recent authentication; confirming within
    // the same window keeps a stolen stale session from finishing one.
    if !pages.reauth.is_recent_now(&ctx.session) {
        let message = pages.reauth.stale_message(&user);
        return page(&pages, &ctx, &user, StatusCode::UNAUTHORIZED, Some(message), None, None).await;
    }
    match pages.auth.second_factors().confirm_setup(user.id, &form.code).await {
        Ok(Some(codes)) => {
            tracing::info!(user_id = user.id, "two-step verification turned on");
            pages.events.record(AuditKind::SecondFactorEnabled, Some(user.id), &ctx.device, now).await;
            let keep = ctx.session.key();
            if form.sign_out_others.is_some() {
                match pages.engine.revoke_all(&user.id.to_string(), keep.as_ref()).await {
                    Ok(ended) => {
                        tracing::info!(
                            user_id = user.id,
                            ended,
                            "other sessions signed out with two-step verification on"
                        );
                        pages.events.record(AuditKind::OtherSessionsRevoked, Some(user.id), &ctx.device, now).await;
                    }
                    Err(error) => return ServerError::unavailable(error).into_response(),
                }
            }
            // A new privilege level for this session: a new ID.
            reauthentication::stepped_up(&ctx.session, now);
            page(&pages, &ctx, &user, StatusCode::OK, None, None, Some(codes)).await
        }
        Ok(None) => {
            let setup = match pages.auth.second_factors().setup_in_progress(user.id).await {
                Ok(secret) => secret.map(|secret| SetupView::new(&secret, &user.username)),
                Err(error) => return ServerError::unavailable(error).into_response(),
            };
            let message = if setup.is_some() {
                "That code does not match. Check the app's clock and enter the code it shows now."
            } else {
                "No setup is in progress. Start again."
            };
            page(&pages, &ctx, &user, StatusCode::UNPROCESSABLE_ENTITY, Some(message.to_owned()), setup, None).await
        }
        Err(error) => ServerError::unavailable(error).into_response(),
    }
}

/// Replaces the recovery codes (every old one stops working) and shows the
/// new ones once.
pub async fn recovery_codes(
    pages: TwoFactorPages,
    RequireUser(_): RequireUser,
    ctx: PageContext,
    CsrfForm(form): CsrfForm<ConfirmedForm>,
) -> Response {
    let user = match recent_user(&pages, &ctx, form.current_password.as_deref()).await {
        Ok(user) => user,
        Err(response) => return response,
    };
    if let Err(response) = require_code(&pages, &ctx, &user, form.code.as_deref()).await {
        return response;
    }
    match pages.auth.second_factors().new_recovery_codes(user.id).await {
        Ok(Some(codes)) => {
            let now = pages.clock.now();
            pages.events.record(AuditKind::RecoveryCodesReplaced, Some(user.id), &ctx.device, now).await;
            page(&pages, &ctx, &user, StatusCode::OK, None, None, Some(codes)).await
        }
        Ok(None) => {
            let message = "Two-step verification is off: there are no recovery codes to replace.";
            page(&pages, &ctx, &user, StatusCode::CONFLICT, Some(message.to_owned()), None, None).await
        }
        Err(error) => ServerError::unavailable(error).into_response(),
    }
}

/// Turns two-step verification off: removes the app's secret and every
/// recovery code.
pub async fn disable(
    pages: TwoFactorPages,
    RequireUser(_): RequireUser,
    ctx: PageContext,
    CsrfForm(form): CsrfForm<ConfirmedForm>,
) -> Response {
    if pages.auth.second_factor_required() {
        let Some(user) = ctx.user.clone() else { return Redirect::to("/login").into_response() };
        let message = "This site requires two-step verification: it cannot be turned off.";
        return page(&pages, &ctx, &user, StatusCode::CONFLICT, Some(message.to_owned()), None, None).await;
    }
    let user = match recent_user(&pages, &ctx, form.current_password.as_deref()).await {
        Ok(user) => user,
        Err(response) => return response,
    };
    if let Err(response) = require_code(&pages, &ctx, &user, form.code.as_deref()).await {
        return response;
    }
    match pages.auth.second_factors().disable(user.id).await {
        Ok(removed) => {
            if removed {
                let now = pages.clock.now();
                tracing::info!(user_id = user.id, "two-step verification turned off");
                pages.events.record(AuditKind::SecondFactorDisabled, Some(user.id), &ctx.device, now).await;
            }
            let mut response = Redirect::to("/account/two-factor").into_response();
            Flash::SecondFactorDisabled.set(ctx.cookie(), response.headers_mut());
            response
        }
        Err(error) => ServerError::unavailable(error).into_response(),
    }
}
