//! `GET /account`: the account's ways to log in — its password and the
//! identities linked at OpenID Connect providers — with unlink and link
//! buttons. `POST /account/identities/unlink` removes an identity while
//! another way to log in remains.

use askama::Template;
use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use http::StatusCode;
use serde::Deserialize;
use tessera_axum::{CsrfForm, RequireUser};

use super::{Chrome, PageContext};
use crate::app::AppState;
use crate::database::User;
use crate::error_pages::ServerError;
use crate::oidc::ProviderButton;

/// An identity as listed.
struct IdentityRow {
    provider: String,
    issuer: String,
    subject: String,
    email: Option<String>,
    linked_at: String,
}

#[derive(Template)]
#[template(path = "account.html")]
struct AccountPage {
    page: Chrome,
    username: String,
    has_password: bool,
    identities: Vec<IdentityRow>,
    can_unlink: bool,
    providers: Vec<ProviderButton>,
    error: Option<&'static str>,
}

async fn render_account(state: &AppState, ctx: &PageContext, user: User, error: Option<&'static str>) -> Response {
    let identities = match state.accounts.database().identities_of(user.id).await {
        Ok(identities) => identities,
        Err(error) => return ServerError::unavailable(error).into_response(),
    };
    let has_password = user.password_hash.is_some();
    let can_unlink = has_password || identities.len() > 1;
    let rows = identities
        .into_iter()
        .map(|identity| IdentityRow {
            provider: state.oidc.label_for_issuer(&identity.issuer).unwrap_or_else(|| identity.issuer.clone()),
            linked_at: time::OffsetDateTime::from_unix_timestamp(identity.linked_at.as_millis() / 1000)
                .ok()
                .and_then(|t| t.format(time::macros::format_description!("[day] [month repr:short] [year]")).ok())
                .unwrap_or_default(),
            issuer: identity.issuer,
            subject: identity.subject,
            email: identity.email,
        })
        .collect();
    let view = AccountPage {
        page: ctx.chrome("Sign-in methods"),
        username: user.username,
        has_password,
        identities: rows,
        can_unlink,
        providers: state.oidc.buttons(),
        error,
    };
    ctx.render(if error.is_some() { StatusCode::CONFLICT } else { StatusCode::OK }, &view)
}

/// The account page.
pub async fn show(State(state): State<AppState>, RequireUser(_): RequireUser, ctx: PageContext) -> Response {
    let Some(user) = ctx.user.clone() else {
        ctx.session.logout();
        return Redirect::to("/login").into_response();
    };
    render_account(&state, &ctx, user, None).await
}

/// The unlink form.
#[derive(Deserialize)]
pub struct UnlinkForm {
    #[serde(default)]
    issuer: String,
    #[serde(default)]
    subject: String,
}

/// Unlinks an identity unless it is the account's last way to log in.
pub async fn unlink(
    State(state): State<AppState>,
    RequireUser(_): RequireUser,
    ctx: PageContext,
    CsrfForm(form): CsrfForm<UnlinkForm>,
) -> Response {
    let Some(user) = ctx.user.clone() else {
        ctx.session.logout();
        return Redirect::to("/login").into_response();
    };
    match state.accounts.database().unlink_identity(user.id, &form.issuer, &form.subject).await {
        Ok(true) => {
            tracing::info!(user_id = user.id, "OIDC identity unlinked");
            Redirect::to("/account").into_response()
        }
        Ok(false) => {
            let message =
                "That identity cannot be unlinked: it is not linked to this account, or it is your only way to log in.";
            render_account(&state, &ctx, user, Some(message)).await
        }
        Err(error) => ServerError::unavailable(error).into_response(),
    }
}
