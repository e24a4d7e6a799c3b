//! `GET/POST /account/password`: change the password, or, for an account
//! without one (a passkey-only or provider account), set one after a recent
//! confirmation (a passkey or the provider, on `/account`).

use askama::Template;
use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use http::StatusCode;
use serde::Deserialize;
use std::sync::Arc;

use tessera::Clock;
use tessera_auth::{Authenticator, Channel};
use tessera_axum::{CsrfForm, RequireUser};

use super::{with_retry_after, Chrome, PageContext};
use crate::error_pages::ServerError;
use crate::flash::Flash;
use crate::reauthentication::{self, Confirmation, Reauthentication};
use tessera_auth::accounts::RegisterError;
use tessera_auth::User;

#[derive(Template)]
#[template(path = "account_password.html")]
struct PasswordPage {
    page: Chrome,
    username: String,
    min_password: usize,
    form_error: Option<String>,
    current_error: Option<&'static str>,
    new_error: Option<String>,
    /// The account has a password to change (else: set one).
    has_password: bool,
    /// No password, and no recent confirmation: setting one is refused.
    needs_confirmation: bool,
}

fn view(ctx: &PageContext, auth: &Authenticator, user: &User, reauth: &Reauthentication) -> PasswordPage {
    let has_password = user.password_hash.is_some();
    PasswordPage {
        page: ctx.chrome(if has_password { "Change password" } else { "Set a password" }),
        username: user.username.clone(),
        has_password,
        needs_confirmation: !has_password && !reauth.is_recent_now(&ctx.session),
        min_password: auth.accounts().policy().effective_min_chars(),
        form_error: None,
        current_error: None,
        new_error: None,
    }
}

/// The form.
pub async fn show(
    State(auth): State<Authenticator>,
    State(reauth): State<Reauthentication>,
    RequireUser(_): RequireUser,
    ctx: PageContext,
) -> Response {
    let Some(user) = ctx.user.clone() else { return Redirect::to("/login").into_response() };
    ctx.render(StatusCode::OK, &view(&ctx, &auth, &user, &reauth))
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
    State(auth): State<Authenticator>,
    State(reauth): State<Reauthentication>,
    State(clock): State<Arc<dyn Clock>>,
    RequireUser(_): RequireUser,
    ctx: PageContext,
    CsrfForm(form): CsrfForm<PasswordForm>,
) -> Result<Response, ServerError> {
    let Some(user) = ctx.user.clone() else { return Ok(Redirect::to("/login").into_response()) };
    let verdict = if user.password_hash.is_none() {
        // Nothing to type: a recent confirmation (passkey, provider) instead.
        if !reauth.is_recent_now(&ctx.session) {
            let mut page = view(&ctx, &auth, &user, &reauth);
            page.form_error = Some(reauth.stale_message(&user) + " No password was set.");
            return Ok(ctx.render(StatusCode::UNAUTHORIZED, &page));
        }
        Ok(Confirmation::Confirmed)
    } else {
        reauth.confirm_password(Channel::Web, &ctx.client, &user, &form.current_password).await
    };
    match verdict {
        Ok(Confirmation::Confirmed) => {}
        Ok(Confirmation::Wrong) => {
            let mut page = view(&ctx, &auth, &user, &reauth);
            page.form_error = Some("Your password was not changed.".to_owned());
            page.current_error = Some("That is not your current password.");
            return Ok(ctx.render(StatusCode::UNAUTHORIZED, &page));
        }
        Ok(Confirmation::Throttled(wait)) => {
            let mut page = view(&ctx, &auth, &user, &reauth);
            page.form_error = Some(format!(
                "Your password was not changed: too many wrong passwords. Please wait {} before trying again.",
                reauthentication::readable_wait(wait)
            ));
            return Ok(with_retry_after(ctx.render(StatusCode::TOO_MANY_REQUESTS, &page), wait));
        }
        Err(error) => return Err(ServerError::from(error)),
    }
    let keep = ctx.session.key();
    match auth.change_password(Channel::Web, &ctx.client, &user, &form.new_password, keep.as_ref()).await {
        Ok(_) => {}
        Err(error @ (RegisterError::Unavailable(_) | RegisterError::Busy)) => return Err(ServerError::from(error)),
        Err(error) => {
            let mut page = view(&ctx, &auth, &user, &reauth);
            page.form_error = Some("Your password was not changed.".to_owned());
            page.new_error = Some(error.to_string());
            return Ok(ctx.render(StatusCode::UNPROCESSABLE_ENTITY, &page));
        }
    }
    // The password just typed is a fresh authentication, under a new ID.
    reauthentication::stepped_up(&ctx.session, clock.now());
    let mut response = Redirect::to("/account").into_response();
    Flash::PasswordChanged.set(ctx.cookie(), response.headers_mut());
    Ok(response)
}
