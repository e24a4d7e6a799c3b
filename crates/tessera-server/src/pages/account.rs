//! `GET /account`, `POST /account/delete`, and the sign-in methods on the
//! account page: the password and the identities linked at OpenID Connect
//! providers, with unlink (`POST /account/identities/unlink`, only while
//! another way to log in remains) and link buttons.

use askama::Template;
use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use http::StatusCode;
use serde::Deserialize;
use tessera_axum::{CsrfForm, RequireUser};

use super::{Chrome, PageContext};
use crate::app::AppState;
use crate::audit::AuditKind;
use crate::database::User;
use crate::error_pages::ServerError;
use crate::flash::Flash;
use crate::oidc::ProviderButton;

#[derive(Template)]
#[template(path = "account.html")]
struct AccountPage {
    page: Chrome,
    username: String,
    delete_error: Option<&'static str>,
    methods: SignInMethods,
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
    error: Option<&'static str>,
}

async fn sign_in_methods(state: &AppState, user: &User) -> Result<SignInMethods, ServerError> {
    let identities = state.accounts.database().identities_of(user.id).await.map_err(ServerError::unavailable)?;
    let has_password = user.password_hash.is_some();
    let can_unlink = has_password || identities.len() > 1;
    let identities = identities
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
    Ok(SignInMethods { has_password, identities, can_unlink, providers: state.oidc.buttons(), error: None })
}

/// The account overview.
pub async fn show(State(state): State<AppState>, RequireUser(_): RequireUser, ctx: PageContext) -> Response {
    let Some(user) = ctx.user.clone() else { return Redirect::to("/login").into_response() };
    let methods = match sign_in_methods(&state, &user).await {
        Ok(methods) => methods,
        Err(error) => return error.into_response(),
    };
    ctx.render(
        StatusCode::OK,
        &AccountPage { page: ctx.chrome("Your account"), username: user.username, delete_error: None, methods },
    )
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
    let Some(user) = ctx.user.clone() else { return Redirect::to("/login").into_response() };
    match state.accounts.database().unlink_identity(user.id, &form.issuer, &form.subject).await {
        Ok(true) => {
            tracing::info!(user_id = user.id, "OIDC identity unlinked");
            Redirect::to("/account").into_response()
        }
        Ok(false) => {
            let mut methods = match sign_in_methods(&state, &user).await {
                Ok(methods) => methods,
                Err(error) => return error.into_response(),
            };
            methods.error = Some(
                "That identity cannot be unlinked: it is not linked to this account, or it is your only way to log in.",
            );
            let view =
                AccountPage { page: ctx.chrome("Your account"), username: user.username, delete_error: None, methods };
            ctx.render(StatusCode::CONFLICT, &view)
        }
        Err(error) => ServerError::unavailable(error).into_response(),
    }
}

/// The deletion form.
#[derive(Deserialize)]
pub struct DeleteForm {
    #[serde(default)]
    current_password: String,
}

/// Deletes the account after checking the password: every session and token
/// ends, the user's data is removed, and the browser is logged out.
pub async fn delete(
    State(state): State<AppState>,
    RequireUser(_): RequireUser,
    ctx: PageContext,
    CsrfForm(form): CsrfForm<DeleteForm>,
) -> Response {
    let Some(user) = ctx.user.clone() else { return Redirect::to("/login").into_response() };
    match state.accounts.verify_password(&user, &form.current_password).await {
        Ok(true) => {}
        Ok(false) => {
            let methods = match sign_in_methods(&state, &user).await {
                Ok(methods) => methods,
                Err(error) => return error.into_response(),
            };
            let view = AccountPage {
                page: ctx.chrome("Your account"),
                username: user.username,
                delete_error: Some("That is not your current password. Nothing was deleted."),
                methods,
            };
            return ctx.render(StatusCode::UNAUTHORIZED, &view);
        }
        Err(error) => return ServerError::unavailable(error).into_response(),
    }
    let user_id = user.id.to_string();
    if let Err(error) = state.engine.revoke_all(&user_id, None).await {
        return ServerError::unavailable(error).into_response();
    }
    if let Err(error) = state.revoke_api_tokens(user.id).await {
        return ServerError::unavailable(error).into_response();
    }
    if let Err(error) = state.accounts.database().delete_user(user.id).await {
        return ServerError::unavailable(error).into_response();
    }
    tracing::info!(target: "tessera::audit", event = AuditKind::AccountDeleted.as_str(), user_id = user.id, "account deleted");
    ctx.session.logout();
    let mut response = Redirect::to("/").into_response();
    Flash::AccountDeleted.set(state.engine.cookie_config(), response.headers_mut());
    response
}
