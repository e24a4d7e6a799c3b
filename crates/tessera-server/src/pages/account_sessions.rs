//! `GET /account/sessions` (the device list) and `POST /account/sessions/revoke`.

use askama::Template;
use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use http::StatusCode;
use serde::Deserialize;
use tessera::SessionRecord;
use tessera_auth::{Authenticator, Channel};
use tessera_axum::{CsrfForm, RequireUser};

use super::{display_time, with_retry_after, Chrome, PageContext};
use crate::audit::AuditKind;
use crate::auth_events::ServerEvents;
use crate::error_pages::ServerError;
use crate::flash::Flash;
use crate::reauthentication::Reauthentication;
use crate::reauthentication::{self, Confirmation};
use tessera::SessionEngine;

/// One row of the device list.
struct Device {
    handle: String,
    label: String,
    ip: String,
    created: String,
    created_iso: String,
    last_seen: String,
    last_seen_iso: String,
    current: bool,
}

#[derive(Template)]
#[template(path = "account_sessions.html")]
struct SessionsPage {
    page: Chrome,
    devices: Vec<Device>,
    others: usize,
    needs_password: bool,
    error: Option<String>,
}

/// "Chrome on Linux" from a user agent string.
pub fn readable_user_agent(user_agent: Option<&str>) -> String {
    let Some(user_agent) = user_agent else { return "Unknown device".to_owned() };
    match woothee::parser::Parser::new().parse(user_agent) {
        Some(parsed) if parsed.name != "UNKNOWN" && parsed.os != "UNKNOWN" => {
            format!("{} on {}", parsed.name, parsed.os)
        }
        Some(parsed) if parsed.name != "UNKNOWN" => parsed.name.to_owned(),
        _ => "Unknown device".to_owned(),
    }
}

fn device(record: &SessionRecord, current: Option<tessera::SessionKey>) -> Device {
    let (created, created_iso) = display_time(record.created_at);
    let (last_seen, last_seen_iso) = display_time(record.last_active);
    Device {
        handle: record.key.handle().to_string(),
        label: readable_user_agent(record.device.user_agent.as_deref()),
        ip: record.device.ip.clone().unwrap_or_else(|| "unknown".to_owned()),
        created,
        created_iso,
        last_seen,
        last_seen_iso,
        current: Some(record.key) == current,
    }
}

async fn page(
    engine: &SessionEngine,
    reauth: &Reauthentication,
    ctx: &PageContext,
    user_id: &str,
    error: Option<&'static str>,
) -> Result<Response, ServerError> {
    let status = if error.is_some() { StatusCode::UNAUTHORIZED } else { StatusCode::OK };
    page_with(engine, reauth, ctx, user_id, status, error.map(str::to_owned)).await
}

async fn page_with(
    engine: &SessionEngine,
    reauth: &Reauthentication,
    ctx: &PageContext,
    user_id: &str,
    status: StatusCode,
    error: Option<String>,
) -> Result<Response, ServerError> {
    let records = engine.sessions_of(user_id).await.map_err(ServerError::unavailable)?;
    let current = ctx.session.key();
    let devices: Vec<Device> = records.iter().map(|record| device(record, current)).collect();
    let others = devices.iter().filter(|d| !d.current).count();
    let needs_password = !reauth.is_recent_now(&ctx.session);
    Ok(ctx.render(
        status,
        &SessionsPage { page: ctx.chrome("Devices and sessions"), devices, others, needs_password, error },
    ))
}

/// The device list.
pub async fn show(
    State(engine): State<SessionEngine>,
    State(reauth): State<Reauthentication>,
    RequireUser(user_id): RequireUser,
    ctx: PageContext,
) -> Result<Response, ServerError> {
    page(&engine, &reauth, &ctx, &user_id, None).await
}

/// The revocation form: one session by its public handle, or all others.
#[derive(Deserialize)]
pub struct RevokeForm {
    session: Option<String>,
    all_others: Option<String>,
    current_password: Option<String>,
}

/// Revokes one session or every other one. Needs a recent authentication;
/// otherwise the current password must come with the form. That password is
/// checked behind the login throttle, and a correct one is a step-up: the
/// session gets a new ID along with the recent-authentication mark.
pub async fn revoke(
    State(reauth): State<Reauthentication>,
    State(events): State<ServerEvents>,
    State(engine): State<SessionEngine>,
    State(auth): State<Authenticator>,
    RequireUser(user_id): RequireUser,
    ctx: PageContext,
    CsrfForm(form): CsrfForm<RevokeForm>,
) -> Result<Response, ServerError> {
    let Some(user) = ctx.user.clone() else { return Ok(Redirect::to("/login").into_response()) };
    let now = reauth.now();
    // A step-up gives the session a new ID, but only after the revocation:
    // the revocation must know (and keep, or refuse to end) the ID this
    // request came with.
    let mut stepped_up = false;
    if !reauthentication::is_recent(&ctx.session, now, reauth.window()) {
        let password = form.current_password.unwrap_or_default();
        match reauth.confirm_password(Channel::Web, &ctx.client, &user, &password).await {
            Ok(Confirmation::Confirmed) => stepped_up = true,
            Ok(Confirmation::Wrong) => {
                return page(&engine, &reauth, &ctx, &user_id, Some("Confirm with your current password.")).await
            }
            Ok(Confirmation::Throttled(wait)) => {
                let message = format!(
                    "Too many wrong passwords. Please wait {} before trying again.",
                    reauthentication::readable_wait(wait)
                );
                let response =
                    page_with(&engine, &reauth, &ctx, &user_id, StatusCode::TOO_MANY_REQUESTS, Some(message)).await?;
                return Ok(with_retry_after(response, wait));
            }
            Err(error) => return Err(ServerError::from(error)),
        }
    }
    let device = ctx.device.clone();
    let flash = if form.all_others.as_deref() == Some("1") {
        // Every other browser and every API sign-in (refresh tokens and
        // their access tokens): "everywhere else" means it.
        auth.revoke_everything(user.id, ctx.session.key().as_ref()).await.map_err(ServerError::unavailable)?;
        if engine.is_sealed() {
            // Sealed cookies are revoked by time: re-issue this one after the mark.
            ctx.session.regenerate();
        }
        events.record(AuditKind::OtherSessionsRevoked, Some(user.id), &device, now).await;
        Flash::OthersSignedOut
    } else {
        let handle = form.session.unwrap_or_default();
        if ctx.session.handle().is_some_and(|own| own.matches(&handle)) {
            return page(&engine, &reauth, &ctx, &user_id, Some("To end this session, log out.")).await;
        }
        if !engine.revoke(&user_id, &handle).await.map_err(ServerError::unavailable)? {
            return page(&engine, &reauth, &ctx, &user_id, Some("That session no longer exists.")).await;
        }
        events.record(AuditKind::SessionRevoked, Some(user.id), &device, now).await;
        Flash::SessionSignedOut
    };
    if stepped_up {
        reauthentication::stepped_up(&ctx.session, now);
    }
    let mut response = Redirect::to("/account/sessions").into_response();
    Flash::set(flash, ctx.cookie(), response.headers_mut());
    Ok(response)
}
