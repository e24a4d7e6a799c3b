//! `GET /account`, `POST /account/delete`, and the sign-in methods on the
//! account page: the password and the identities linked at OpenID Connect
//! providers, with unlink (`POST /account/identities/unlink`, only while
//! another way to log in remains) and link buttons.
//!
//! Linking, unlinking and deleting need a recent authentication (ASVS
//! 7.5.1): a password typed within the window (and then the session steps
//! up to a new ID), or a sign-in at a linked provider within the window —
//! the provider's `auth_time`, which "Confirm with …"
//! (`POST /auth/oidc/{id}/reauthenticate`) forces with `max_age`.

use askama::Template;
use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use http::StatusCode;
use serde::Deserialize;
use tessera_auth::Channel;
use tessera_axum::{CsrfForm, RequireUser};

use super::{with_retry_after, Chrome, PageContext};
use crate::audit::AuditKind;
use crate::auth_events::ServerEvents;
use crate::database::Database;
use crate::error_pages::ServerError;
use crate::flash::Flash;
use crate::oidc::{Oidc, ProviderButton};
use crate::reauthentication::Reauthentication;
use crate::reauthentication::{self, Confirmation, Recency};
use crate::services::services;
use std::sync::Arc;
use tessera::Clock;
use tessera_auth::Authenticator;
use tessera_auth::User;

#[derive(Template)]
#[template(path = "account.html")]
struct AccountPage {
    page: Chrome,
    username: String,
    delete_error: Option<String>,
    methods: SignInMethods,
    /// The authentication is older than the window: forms ask for the
    /// password (or, without one, offer "Confirm with …" at a provider).
    needs_reauth: bool,
    /// The window in minutes, for the help text.
    reauth_minutes: u64,
}

/// An identity as listed.
struct IdentityRow {
    provider: String,
    issuer: String,
    subject: String,
    email: Option<String>,
    linked_at: String,
}

/// The account's ways to log in.
struct SignInMethods {
    has_password: bool,
    identities: Vec<IdentityRow>,
    can_unlink: bool,
    providers: Vec<ProviderButton>,
    /// The configured providers with an identity linked to this account:
    /// "Confirm with …" re-authenticates there.
    reauth_providers: Vec<ProviderButton>,
    error: Option<String>,
    /// The account's groups (`tessera admin group add`), shown beside them.
    groups: Vec<String>,
    /// The account has passkeys: "Confirm with a passkey" re-authenticates.
    has_passkeys: bool,
}

services! {
    /// What the account page is made of: the server's tables (identities,
    /// groups), the configured providers, and recent authentication.
    pub struct AccountPages {
        db: Database,
        oidc: Arc<Oidc>,
        reauth: Reauthentication,
        auth: Authenticator,
    }
}

async fn sign_in_methods(pages: &AccountPages, user: &User) -> Result<SignInMethods, ServerError> {
    let identities = pages.db.identities_of(user.id).await.map_err(ServerError::unavailable)?;
    let groups = pages.db.groups_of(user.id).await.map_err(ServerError::unavailable)?;
    let has_password = user.password_hash.is_some();
    let passkeys = match pages.auth.passkeys() {
        Some(passkeys) => passkeys.count(user.id).await.map_err(ServerError::unavailable)?,
        None => 0,
    };
    let can_unlink = has_password || identities.len() > 1 || passkeys > 0;
    let providers = pages.oidc.buttons();
    let reauth_providers =
        providers.iter().filter(|p| identities.iter().any(|i| i.issuer == p.issuer)).cloned().collect();
    let identities = identities
        .into_iter()
        .map(|identity| IdentityRow {
            provider: pages.oidc.label_for_issuer(&identity.issuer).unwrap_or_else(|| identity.issuer.clone()),
            linked_at: time::OffsetDateTime::from_unix_timestamp(identity.linked_at.as_millis() / 1000)
                .ok()
                .and_then(|t| t.format(time::macros::format_description!("[day] [month repr:short] [year]")).ok())
                .unwrap_or_default(),
            issuer: identity.issuer,
            subject: identity.subject,
            email: identity.email,
        })
        .collect();
    let has_passkeys = passkeys > 0;
    Ok(SignInMethods {
        has_password,
        identities,
        can_unlink,
        providers,
        reauth_providers,
        error: None,
        groups,
        has_passkeys,
    })
}

/// The account overview.
pub async fn show(pages: AccountPages, RequireUser(_): RequireUser, ctx: PageContext) -> Response {
    let Some(user) = ctx.user.clone() else { return Redirect::to("/login").into_response() };
    let methods = match sign_in_methods(&pages, &user).await {
        Ok(methods) => methods,
        Err(error) => return error.into_response(),
    };
    ctx.render(StatusCode::OK, &account_page(&pages, &ctx, user.username, None, methods))
}

fn account_page(
    pages: &AccountPages,
    ctx: &PageContext,
    username: String,
    delete_error: Option<String>,
    methods: SignInMethods,
) -> AccountPage {
    AccountPage {
        page: ctx.chrome("Your account"),
        username,
        delete_error,
        methods,
        needs_reauth: !pages.reauth.is_recent_now(&ctx.session),
        reauth_minutes: pages.reauth.window().as_secs().div_ceil(60),
    }
}

/// The account page with an error about sign-in methods.
async fn methods_error(
    pages: &AccountPages,
    ctx: &PageContext,
    user: &User,
    status: StatusCode,
    error: String,
) -> Response {
    let mut methods = match sign_in_methods(pages, user).await {
        Ok(methods) => methods,
        Err(error) => return error.into_response(),
    };
    methods.error = Some(error);
    ctx.render(status, &account_page(pages, ctx, user.username.clone(), None, methods))
}

/// The account page with an error about deletion.
async fn delete_refused(
    pages: &AccountPages,
    ctx: &PageContext,
    user: &User,
    status: StatusCode,
    error: String,
) -> Response {
    let methods = match sign_in_methods(pages, user).await {
        Ok(methods) => methods,
        Err(error) => return error.into_response(),
    };
    ctx.render(status, &account_page(pages, ctx, user.username.clone(), Some(error), methods))
}

/// "Please wait" for throttled password confirmations.
fn wait_message(wait: std::time::Duration) -> String {
    format!("Too many wrong passwords. Please wait {} before trying again.", reauthentication::readable_wait(wait))
}

/// The unlink form.
#[derive(Deserialize)]
pub struct UnlinkForm {
    #[serde(default)]
    issuer: String,
    #[serde(default)]
    subject: String,
    /// Needed when the last authentication is older than the window.
    current_password: Option<String>,
}

/// Unlinks an identity unless it is the account's last way to log in.
/// Needs a recent authentication (or the password, which steps the session
/// up); the change is audited.
pub async fn unlink(
    pages: AccountPages,
    State(events): State<ServerEvents>,
    State(clock): State<Arc<dyn Clock>>,
    RequireUser(_): RequireUser,
    ctx: PageContext,
    CsrfForm(form): CsrfForm<UnlinkForm>,
) -> Response {
    let Some(user) = ctx.user.clone() else { return Redirect::to("/login").into_response() };
    let password = form.current_password.as_deref();
    match pages.reauth.ensure_recent(&ctx.session, &user, password, &ctx.client).await {
        Ok(Recency::Recent) => {}
        Ok(Recency::Stale) => {
            let message = pages.reauth.stale_message(&user);
            return methods_error(&pages, &ctx, &user, StatusCode::UNAUTHORIZED, message).await;
        }
        Ok(Recency::Wrong) => {
            let message = "That is not your current password. Nothing was unlinked.".to_owned();
            return methods_error(&pages, &ctx, &user, StatusCode::UNAUTHORIZED, message).await;
        }
        Ok(Recency::Throttled(wait)) => {
            let response = methods_error(&pages, &ctx, &user, StatusCode::TOO_MANY_REQUESTS, wait_message(wait)).await;
            return with_retry_after(response, wait);
        }
        Err(error) => return ServerError::from(error).into_response(),
    }
    match pages.db.unlink_identity(user.id, &form.issuer, &form.subject).await {
        Ok(true) => {
            events.record(AuditKind::IdentityUnlinked, Some(user.id), &ctx.device, clock.now()).await;
            Redirect::to("/account").into_response()
        }
        Ok(false) => {
            let message =
                "That identity cannot be unlinked: it is not linked to this account, or it is your only way to log in.";
            methods_error(&pages, &ctx, &user, StatusCode::CONFLICT, message.to_owned()).await
        }
        Err(error) => ServerError::unavailable(error).into_response(),
    }
}

/// The deletion form.
#[derive(Deserialize)]
pub struct DeleteForm {
    /// Accounts with a password confirm with it.
    #[serde(default)]
    current_password: String,
    /// Accounts without a password (created by an OIDC login) type their
    /// user name instead, after a recent login.
    #[serde(default)]
    confirm_username: String,
}

/// Deletes the account after checking the password (behind the login
/// throttle): every session and token ends, the user's data is removed, and
/// the browser is logged out.
///
/// An account without a password cannot type one. It may delete itself
/// when its last authentication at a provider (the ID token's `auth_time`,
/// e.g. after "Confirm with …") is within the recent-authentication window
/// and the user types the user name, which guards against a stray click.
pub async fn delete(
    State(auth): State<Authenticator>,
    pages: AccountPages,
    RequireUser(_): RequireUser,
    ctx: PageContext,
    CsrfForm(form): CsrfForm<DeleteForm>,
) -> Response {
    let Some(user) = ctx.user.clone() else { return Redirect::to("/login").into_response() };
    if user.password_hash.is_none() {
        if !pages.reauth.is_recent_now(&ctx.session) {
            let message = pages.reauth.stale_message(&user) + " Nothing was deleted.";
            return delete_refused(&pages, &ctx, &user, StatusCode::UNAUTHORIZED, message).await;
        }
        // User names are ASCII and case-insensitive.
        if !form.confirm_username.trim().eq_ignore_ascii_case(&user.username) {
            let message = "Type your user name exactly as shown to confirm. Nothing was deleted.".to_owned();
            return delete_refused(&pages, &ctx, &user, StatusCode::UNPROCESSABLE_ENTITY, message).await;
        }
    } else {
        match pages.reauth.confirm_password(Channel::Web, &ctx.client, &user, &form.current_password).await {
            Ok(Confirmation::Confirmed) => {}
            Ok(Confirmation::Wrong) => {
                let message = "That is not your current password. Nothing was deleted.".to_owned();
                return delete_refused(&pages, &ctx, &user, StatusCode::UNAUTHORIZED, message).await;
            }
            Ok(Confirmation::Throttled(wait)) => {
                let message = wait_message(wait) + " Nothing was deleted.";
                let response = delete_refused(&pages, &ctx, &user, StatusCode::TOO_MANY_REQUESTS, message).await;
                return with_retry_after(response, wait);
            }
            Err(error) => return ServerError::from(error).into_response(),
        }
    }
    if let Err(error) = auth.revoke_everything(user.id, None).await {
        return ServerError::unavailable(error).into_response();
    }
    if let Err(error) = pages.db.delete_user(user.id).await {
        return ServerError::unavailable(error).into_response();
    }
    tracing::info!(target: "tessera::audit", event = AuditKind::AccountDeleted.as_str(), user_id = user.id, "account deleted");
    ctx.session.logout();
    let mut response = Redirect::to("/").into_response();
    Flash::AccountDeleted.set(ctx.cookie(), response.headers_mut());
    response
}
