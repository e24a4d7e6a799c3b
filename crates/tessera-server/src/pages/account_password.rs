//! `GET/POST /account/password`.

use askama::Template;
use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use http::StatusCode;
use serde::Deserialize;
use tessera_axum::{CsrfForm, RequireUser};

use super::{Chrome, PageContext};
use crate::accounts::RegisterError;
use crate::app::AppState;
use crate::audit::AuditKind;
use crate::error_pages::ServerError;
use crate::flash::Flash;
use crate::reauthentication;

#[derive(Template)]
#[template(path = "account_password.html")]
struct PasswordPage {
    page: Chrome,
    username: String,
    min_password: usize,
    form_error: Option<&'static str>,
    current_error: Option<&'static str>,
    new_error: Option<String>,
}

fn view(ctx: &PageContext, state: &AppState, username: String) -> PasswordPage {
    PasswordPage {
        page: ctx.chrome("Change password"),
        username,
        min_password: state.password_policy.effective_min_chars(),
        form_error: None,
        current_error: None,
        new_error: None,
    }
}

/// The form.
pub async fn show(State(state): State<AppState>, RequireUser(_): RequireUser, ctx: PageContext) -> Response {
    let Some(user) = ctx.user.clone() else { return Redirect::to("/login").into_response() };
    ctx.render(StatusCode::OK, &view(&ctx, &state, user.username))
}

/// The form's fields.
#[derive(Deserialize)]
pub struct PasswordForm {
    #[serde(default)]
    current_password: String,
    #[serde(default)]
    new_password: String,
}

/// Changes the password: checks the current one, applies the policy, stores
/// the new hash, signs out every other session and API token, and gives this
/// session a new ID.
pub async fn submit(
    State(state): State<AppState>,
    RequireUser(user_id): RequireUser,
    ctx: PageContext,
    CsrfForm(form): CsrfForm<PasswordForm>,
) -> Response {
    let Some(user) = ctx.user.clone() else { return Redirect::to("/login").into_response() };
    match state.accounts.verify_password(&user, &form.current_password).await {
        Ok(true) => {}
        Ok(false) => {
            let mut page = view(&ctx, &state, user.username);
            page.form_error = Some("Your password was not changed.");
            page.current_error = Some("That is not your current password.");
            return ctx.render(StatusCode::UNAUTHORIZED, &page);
        }
        Err(error) => return ServerError::unavailable(error).into_response(),
    }
    match state.accounts.change_password(&user, &form.new_password).await {
        Ok(()) => {}
        Err(RegisterError::Unavailable(error)) => return ServerError::unavailable(error).into_response(),
        Err(error) => {
            let mut page = view(&ctx, &state, user.username);
            page.form_error = Some("Your password was not changed.");
            page.new_error = Some(error.to_string());
            return ctx.render(StatusCode::UNPROCESSABLE_ENTITY, &page);
        }
    }
    if let Err(error) = state.engine.revoke_all(&user_id, ctx.session.key().as_ref()).await {
        return ServerError::unavailable(error).into_response();
    }
    if let Err(error) = state.revoke_api_tokens(user.id).await {
        return ServerError::unavailable(error).into_response();
    }
    let now = state.clock.now();
    ctx.session.regenerate();
    reauthentication::mark(&ctx.session, now);
    let _ = state.accounts.database().audit(AuditKind::PasswordChanged, Some(user.id), &ctx.device, now).await;
    let mut response = Redirect::to("/account").into_response();
    Flash::PasswordChanged.set(state.engine.cookie_config(), response.headers_mut());
    response
}
