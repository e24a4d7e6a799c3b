//! `GET/POST /register`: create an account and log in.

use askama::Template;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use http::StatusCode;
use serde::Deserialize;
use tessera_auth::{Authenticator, Channel, LoginStep, RegisterError};
use tessera_axum::{CsrfForm, LoginClient};

use super::login::continue_login;
use super::{with_retry_after, Chrome, PageContext};
use crate::error_pages::ServerError;
use crate::flash::Flash;
use crate::mail::{EmailPages, EmailPolicy};
use crate::registration_policy::{self, Registration};
use tessera_auth::email_address::EmailAddress;

fn capitalise(message: &str) -> String {
    let mut chars = message.chars();
    chars.next().map(|c| c.to_uppercase().collect::<String>() + chars.as_str()).unwrap_or_default()
}

#[derive(Template)]
#[template(path = "register.html")]
struct RegisterPage {
    page: Chrome,
    username: String,
    form_error: Option<String>,
    username_error: Option<String>,
    password_error: Option<String>,
    min_password: usize,
    /// The invitation token from the link (`?invite=`), carried along.
    invite: String,
    /// `accounts.email`: whether the form asks for an address, and insists.
    email_policy: EmailPolicy,
    email: String,
    email_error: Option<String>,
    /// Passkeys are on: offer a sign-up with a passkey instead of a password.
    passkeys: bool,
}

/// The registration form's fields.
#[derive(Deserialize)]
pub struct RegisterForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    /// The invitation token, when `accounts.registration` needs one.
    #[serde(default)]
    invite: String,
    /// An address to verify (`accounts.email`: optional or required).
    #[serde(default)]
    email: String,
}

/// `GET /register?invite=…`.
#[derive(Deserialize)]
pub struct InviteQuery {
    #[serde(default)]
    invite: String,
}

/// `accounts.email` as sign-ups see it: off when email is not set up.
pub(crate) fn email_policy(auth: &Authenticator, email: EmailPages) -> EmailPolicy {
    if auth.email().is_some() {
        email.policy
    } else {
        EmailPolicy::Off
    }
}

/// What is wrong with the address a sign-up gave, if anything.
pub(crate) fn email_problem(policy: EmailPolicy, email: &str) -> Option<String> {
    let email = email.trim();
    match (policy, email.is_empty()) {
        (EmailPolicy::Off, _) | (EmailPolicy::Optional, true) => None,
        (EmailPolicy::Required, true) => Some("An email address is required.".to_owned()),
        (_, false) => EmailAddress::parse(email).err().map(|e| format!("{}.", capitalise(&e.to_string()))),
    }
}

fn page(ctx: &PageContext, auth: &Authenticator, email: EmailPages, username: String) -> RegisterPage {
    let email_policy = email_policy(auth, email);
    RegisterPage {
        page: ctx.chrome("Create an account"),
        username,
        form_error: None,
        username_error: None,
        password_error: None,
        min_password: auth.accounts().policy().effective_min_chars(),
        invite: String::new(),
        email_policy,
        email: String::new(),
        email_error: None,
        passkeys: auth.passkeys().is_some(),
    }
}

/// The registration form.
pub async fn show(
    State(auth): State<Authenticator>,
    State(registration): State<Registration>,
    State(email_pages): State<EmailPages>,
    ctx: PageContext,
    query: Result<Query<InviteQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if ctx.user.is_some() {
        return Redirect::to("/profile").into_response();
    }
    let mut view = page(&ctx, &auth, email_pages, String::new());
    view.invite = query.map(|Query(q)| q.invite).unwrap_or_default();
    view.form_error = registration_policy::notice(registration.policy(), &view.invite).map(str::to_owned);
    ctx.render(StatusCode::OK, &view)
}

/// Registers, logs the new user in (with a new session ID) and goes to the
/// profile; on a server that requires a second factor, goes on to set one
/// up first.
pub async fn submit(
    State(auth): State<Authenticator>,
    State(registration): State<Registration>,
    State(email_pages): State<EmailPages>,
    State(clock): State<std::sync::Arc<dyn tessera::Clock>>,
    LoginClient(client): LoginClient,
    ctx: PageContext,
    CsrfForm(form): CsrfForm<RegisterForm>,
) -> Result<Response, ServerError> {
    // The address first (nothing is created when it is refused), then the
    // registration policy (`accounts.registration`, invitations), then the
    // core's login of the new account.
    let email_policy = page(&ctx, &auth, email_pages, String::new()).email_policy;
    let email = form.email.trim();
    if let Some(problem) = email_problem(email_policy, email) {
        let mut view = page(&ctx, &auth, email_pages, form.username.clone());
        view.invite = form.invite.clone();
        view.email = form.email.clone();
        view.email_error = Some(problem);
        view.form_error = Some("Please correct the email address below.".to_owned());
        return Ok(ctx.render(StatusCode::UNPROCESSABLE_ENTITY, &view));
    }
    let registered =
        registration.register(Some(&form.invite), Channel::Web, &client, &form.username, &form.password).await;
    let registered = match registered {
        Ok(Ok(user)) => {
            if email_policy != EmailPolicy::Off && !email.is_empty() {
                // The account exists either way; a mail that cannot be
                // queued now can be asked for again on /account/email.
                if let Err(error) = auth.request_email(&user, email).await {
                    tracing::warn!(%error, user_id = user.id, "queueing the sign-up verification mail failed");
                }
            }
            if email_policy == EmailPolicy::Required {
                // Not signed in before the address is confirmed; the
                // proof lets this browser ask for the mail again.
                let proof = tessera_auth::email_verification::UnverifiedLogin {
                    user_id: user.id,
                    since: tessera::Clock::now(&*clock).as_millis(),
                };
                // Serializing integers cannot fail.
                let _ = ctx.session.insert(super::email::UNVERIFIED_LOGIN, &proof);
                return Ok(Redirect::to("/login/verification").into_response());
            }
            Ok(auth.after_sign_up(user, None))
        }
        Ok(Err(error)) => Err(error),
        Err(refusal) if refusal.status() == StatusCode::SERVICE_UNAVAILABLE => {
            return Err(ServerError::unavailable(refusal))
        }
        Err(refusal) => {
            let mut view = page(&ctx, &auth, email_pages, form.username.clone());
            view.invite = form.invite.clone();
            view.form_error = Some(refusal.message().to_owned());
            return Ok(ctx.render(refusal.status(), &view));
        }
    };
    match registered {
        Ok(LoginStep::LoggedIn(done)) => {
            tessera_axum::log_in(&ctx.session, &done);
            let mut response = Redirect::to("/profile").into_response();
            Flash::Welcome.set(ctx.cookie(), response.headers_mut());
            tessera_axum::remember_device(response.headers_mut(), ctx.cookie(), &done);
            Ok(response)
        }
        // The account exists, but is not usable before it has a second
        // factor: straight on to setting one up, as at a login.
        Ok(step) => Ok(continue_login(&ctx, step, None)),
        Err(error @ (RegisterError::Unavailable(_) | RegisterError::Busy)) => Err(ServerError::from(error)),
        Err(RegisterError::Throttled(wait)) => {
            // The form again, with why and how long; nothing was created.
            tracing::info!(wait_secs = wait.as_secs(), "sign-up refused: too many from this address");
            let mut view = page(&ctx, &auth, email_pages, form.username.clone());
            view.invite = form.invite.clone();
            view.form_error = Some(format!(
                "Too many accounts were created from your network lately. Please wait {} before trying again.",
                crate::reauthentication::readable_wait(wait)
            ));
            Ok(with_retry_after(ctx.render(StatusCode::TOO_MANY_REQUESTS, &view), wait))
        }
        Err(error) => {
            let mut view = page(&ctx, &auth, email_pages, form.username.clone());
            let mut field = "user name";
            let status = match &error {
                RegisterError::InvalidUsername(message) => {
                    view.username_error = Some((*message).to_owned());
                    StatusCode::UNPROCESSABLE_ENTITY
                }
                RegisterError::InvalidPassword(message) => {
                    view.password_error = Some(message.clone());
                    field = "password";
                    StatusCode::UNPROCESSABLE_ENTITY
                }
                RegisterError::UsernameTaken => {
                    view.username_error = Some(error.to_string());
                    StatusCode::CONFLICT
                }
                RegisterError::Unavailable(_) | RegisterError::Busy | RegisterError::Throttled(_) => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
            };
            view.form_error = Some(format!("Please correct the {field} below."));
            Ok(ctx.render(status, &view))
        }
    }
}
