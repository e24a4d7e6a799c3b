//! `GET/POST /account/password`.

use askama::Template;
use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use http::StatusCode;
use serde::Deserialize;
use tessera_auth::Channel;
use tessera_axum::{CsrfForm, RequireUser};

use super::{with_retry_after, Chrome, PageContext};
use crate::app::AppState;
use crate::error_pages::ServerError;
use crate::flash::Flash;
use crate::reauthentication::{self, Confirmation};
use tessera_auth::accounts::RegisterError;

#[derive(Template)]
#[template(path = "account_password.html")]
struct PasswordPage {
    page: Chrome,
    username: String,
    min_password: usize,
    form_error: Option<String>,
    current_error: Option<&'static str>,
    new_error: Option<String>,
}

fn view(ctx: &PageContext, state: &AppState, username: String) -> PasswordPage {
    PasswordPage {
        page: ctx.chrome("Change password"),
        username,
        min_password: state.auth.accounts().policy().effective_min_chars(),
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
/// session a new ID. The current password is checked behind the login
/// throttle (`429` with `Retry-After` once blocked).
pub async fn submit(
    State(state): State<AppState>,
    RequireUser(_): RequireUser,
    ctx: PageContext,
    CsrfForm(form): CsrfForm<PasswordForm>,
) -> Response {
    let Some(user) = ctx.user.clone() else { return Redirect::to("/login").into_response() };
    match reauthentication::confirm_password(&state, Channel::Web, &ctx.client, &user, &form.current_password).await {
        Ok(Confirmation::Confirmed) => {}
        Ok(Confirmation::Wrong) => {
            let mut page = view(&ctx, &state, user.username);
            page.form_error = Some("Your password was not changed.".to_owned());
            page.current_error = Some("That is not your current password.");
            return ctx.render(StatusCode::UNAUTHORIZED, &page);
        }
        Ok(Confirmation::Throttled(wait)) => {
            let mut page = view(&ctx, &state, user.username);
            page.form_error = Some(format!(
                "Your password was not changed: too many wrong passwords. Please wait {} before trying again.",
                reauthentication::readable_wait(wait)
            ));
            return with_retry_after(ctx.render(StatusCode::TOO_MANY_REQUESTS, &page), wait);
        }
        Err(error) => return ServerError::from(error).into_response(),
    }
    let keep = ctx.session.key();
    match state.auth.change_password(Channel::Web, &ctx.client, &user, &form.new_password, keep.as_ref()).await {
        Ok(_) => {}
        Err(error @ (RegisterError::Unavailable(_) | RegisterError::Busy)) => {
            return ServerError::from(error).into_response()
        }
        Err(error) => {
            let mut page = view(&ctx, &state, user.username);
            page.form_error = Some("Your password was not changed.".to_owned());
            page.new_error = Some(error.to_string());
            return ctx.render(StatusCode::UNPROCESSABLE_ENTITY, &page);
        }
    }
    let now = state.clock.now();
    ctx.session.regenerate();
    reauthentication::mark(&ctx.session, now);
    let mut response = Redirect::to("/account").into_response();
    Flash::PasswordChanged.set(state.engine.cookie_config(), response.headers_mut());
    response
}
