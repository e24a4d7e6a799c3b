//! `GET /account` and `POST /account/delete`.

use askama::Template;
use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use http::StatusCode;
use serde::Deserialize;
use tessera_axum::{CsrfForm, RequireUser};

use super::{Chrome, PageContext};
use crate::app::AppState;
use crate::audit::AuditKind;
use crate::error_pages::ServerError;
use crate::flash::Flash;

#[derive(Template)]
#[template(path = "account.html")]
struct AccountPage {
    page: Chrome,
    username: String,
    delete_error: Option<&'static str>,
}

/// The account overview.
pub async fn show(RequireUser(_): RequireUser, ctx: PageContext) -> Response {
    let Some(user) = ctx.user.clone() else { return Redirect::to("/login").into_response() };
    ctx.render(
        StatusCode::OK,
        &AccountPage { page: ctx.chrome("Your account"), username: user.username, delete_error: None },
    )
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
            let view = AccountPage {
                page: ctx.chrome("Your account"),
                username: user.username,
                delete_error: Some("That is not your current password. Nothing was deleted."),
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
