//! Passkeys in the browser: "Sign in with a passkey" (and the login form's
//! autofill, conditional UI) through `POST /login/passkey/{begin,finish}`;
//! a passkey as the second factor after the password
//! (`POST /login/second-factor/passkey/{begin,finish}`); "Confirm with a
//! passkey" before a sensitive action (`POST /account/confirm/passkey/…`);
//! a passkey-only sign-up (`POST /register/passkey/{begin,finish}`); and
//! `/account/passkeys` to add, list, rename and remove them.
//!
//! The ceremonies are JSON exchanges made by `static/passkeys.js` (no
//! inline script), authenticated by the session cookie and protected by
//! the `X-CSRF-Token` header; every refusal is a problem document. A
//! registration's state lives in the (logged-in) session; a sign-in's (and
//! a sign-up's) in the database under a random ceremony ID the page sends
//! back, so that the login page, which begins one as it loads, gives an
//! anonymous visitor no session — bound to the browser that began it
//! ([`BrowserBinding`]), so that no other browser, and not the API, can
//! finish it. Either is taken out before finish checks anything, so it is
//! used once. All the checking is the authentication core's
//! ([`tessera_auth::passkey`]).
//!
//! Who may do what: anyone may try to sign in (throttled per address) or
//! sign up (under the registration policy and the sign-up allowance); only
//! the session whose password step passed may finish its second factor,
//! with a passkey of that account; only the logged-in owner may confirm
//! with, add, rename or remove a passkey of the account; adding and
//! removing need a recent authentication (or the password sent along), and
//! the last way to sign in cannot be removed.

use std::sync::Arc;
use std::time::Duration;

use askama::Template;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use tessera::{Clock, SessionEngine};
use tessera_auth::passkey::{passkey_name, Assertion, AuthenticationCeremony, NewCredential, RegistrationCeremony};
use tessera_auth::{
    Authenticator, Channel, LoginError, LoginStep, PasskeyError, PasskeyRefusal, Removal, User, UserDirectory,
};
use tessera_axum::{
    clear_pending_login, pending_login, remember_device, BrowserBinding, CsrfForm, CsrfHeader, LoginClient,
    RequireUser, Session,
};

use super::{display_time, with_retry_after, Chrome, PageContext};
use crate::api::passkeys::{begin_refused, login_refused, policy_refused, sign_up_refused};
use crate::api::problem::{ApiError, ApiJson};
use crate::database::Database;
use crate::error_pages::ServerError;
use crate::flash::Flash;
use crate::forward_auth::ForwardAuthConfig;
use crate::mail::EmailPages;
use crate::reauthentication::{self, Reauthentication};
use crate::registration_policy::Registration;
use crate::services::services;

/// The session key of a registration ceremony in progress.
const REGISTRATION: &str = "passkey_registration";
/// The session key of a second-factor ceremony in progress.
const SECOND_FACTOR: &str = "passkey_second_factor";
/// The session key of a confirmation (step-up) ceremony in progress.
const CONFIRMATION: &str = "passkey_confirmation";

services! {
    /// What the passkey pages use: the authentication core (ceremonies,
    /// sign-in, adding and removing), the server's tables (the account's
    /// other ways in), the session engine's cookie settings (flash, device
    /// cookie), recent authentication, the clock, and where a login may go.
    pub struct PasskeyPages {
        auth: Authenticator,
        db: Database,
        engine: SessionEngine,
        reauth: Reauthentication,
        clock: Arc<dyn Clock>,
        forward_auth: Arc<ForwardAuthConfig>,
        registration: Registration,
        email_pages: EmailPages,
    }
}

impl PasskeyPages {
    fn passkeys(&self) -> Result<&tessera_auth::Passkeys, ApiError> {
        self.auth.passkeys().ok_or(ApiError::NotFound)
    }

    /// The logged-in user behind `RequireUser`.
    async fn user(&self, id: &str) -> Result<User, ApiError> {
        let id: i64 = id.parse().map_err(|_| ApiError::Unauthenticated)?;
        let user = self.db.users().user_by_id(id).await.map_err(ApiError::unavailable)?;
        user.filter(User::is_enabled).ok_or(ApiError::Unauthenticated)
    }

    /// Whether the session authenticated recently, or `password` (sent
    /// along) confirms it now, behind the login throttle. With `step_up`, a
    /// confirmation steps the session up (a new ID); the JSON ceremony does
    /// not, as the page's CSRF token must still work for its finish, and the
    /// ceremony state in the session is what finish relies on.
    async fn ensure_recent(
        &self,
        session: &Session,
        client: &tessera_auth::Client,
        user: &User,
        password: Option<&str>,
        step_up: bool,
    ) -> Result<(), Refused> {
        let now = self.clock.now();
        if self.reauth.is_recent_now(session) {
            return Ok(());
        }
        let Some(password) = password.filter(|p| !p.is_empty()) else {
            return Err(Refused::Stale(self.reauth.stale_message(user)));
        };
        match self.auth.confirm_password(Channel::Web, client, user, password).await {
            Ok(()) => {
                if step_up {
                    reauthentication::stepped_up(session, now);
                }
                Ok(())
            }
            Err(LoginError::InvalidCredentials) => Err(Refused::WrongPassword),
            Err(LoginError::Throttled(wait)) => Err(Refused::Throttled(wait)),
            Err(other) => Err(Refused::Unavailable(other.to_string())),
        }
    }
}

/// Why a sensitive passkey change did not go ahead.
enum Refused {
    Stale(String),
    WrongPassword,
    Throttled(Duration),
    Unavailable(String),
}

impl Refused {
    fn problem(self) -> ApiError {
        match self {
            Refused::Stale(_) => ApiError::Forbidden(
                "Your sign-in is not recent: confirm with your current password (or sign in again) first.",
            ),
            Refused::WrongPassword => ApiError::Forbidden("That is not your current password."),
            Refused::Throttled(wait) => ApiError::Throttled(wait),
            Refused::Unavailable(error) => ApiError::Unavailable(error),
        }
    }

    fn message(&self) -> String {
        match self {
            Refused::Stale(message) => message.clone(),
            Refused::WrongPassword => "That is not your current password. Nothing was changed.".into(),
            Refused::Throttled(wait) => format!(
                "Too many wrong passwords. Please wait {} before trying again.",
                reauthentication::readable_wait(*wait)
            ),
            Refused::Unavailable(_) => String::new(),
        }
    }
}

/// Where an assertion's ceremony was kept.
enum Kept<'a> {
    /// In the database, under the ID the page sent back, bound to the browser.
    Database(&'a str, &'a BrowserBinding),
    /// In the session, under this key.
    Session(&'a Session, &'static str),
}

/// The steps every assertion's finish shares: takes the ceremony out first
/// (whatever happens next, the challenge is spent), checks the assertion
/// with `verify`, and maps a refusal to its problem. No ceremony (none
/// begun, used, expired, or another browser's) is counted like any failed
/// sign-in: probing without a challenge is no free try.
async fn checked<T, F, Fut>(
    pages: &PasskeyPages,
    client: &tessera_auth::Client,
    kept: Kept<'_>,
    verify: F,
) -> Result<T, ApiError>
where
    F: FnOnce(AuthenticationCeremony) -> Fut,
    Fut: std::future::Future<Output = Result<T, LoginError>>,
{
    let ceremony = match kept {
        Kept::Database(id, browser) => {
            let taken = pages.passkeys()?.take_authentication(id, Some(browser.as_str())).await;
            taken.map_err(ApiError::unavailable)?
        }
        Kept::Session(session, key) => session.remove(key).ok().flatten(),
    };
    let outcome = match ceremony {
        Some(ceremony) => verify(ceremony).await,
        None => Err(pages.auth.passkey_without_ceremony(Channel::Web, client).await),
    };
    outcome.map_err(login_refused)
}

fn refused(error: PasskeyError) -> ApiError {
    match error {
        PasskeyError::Refused(refusal) => ApiError::Passkey(refusal),
        PasskeyError::Unavailable(error) => ApiError::unavailable(error),
    }
}

/// `POST /login/passkey/begin`: the options for `navigator.credentials.get()`
/// (no allow list: discoverable credentials) and a `ceremony` ID for
/// finish. The challenge is kept in the database, not in a session: the
/// login page begins one as it loads (for the autofill), and an anonymous
/// visitor must not get a server-side session for looking at it. Counted
/// per client address: past `throttle.passkey_ceremonies_per_address`,
/// `429` and nothing stored. The ceremony is bound to this browser
/// ([`BrowserBinding`]): it replaces the browser's pending one, and only
/// this browser can finish it.
pub async fn begin_sign_in(
    pages: PasskeyPages,
    LoginClient(client): LoginClient,
    browser: BrowserBinding,
    _csrf: CsrfHeader,
) -> Result<Response, ApiError> {
    pages.passkeys()?;
    let begun = pages.auth.begin_passkey_sign_in(&client, Some(browser.as_str())).await;
    let (options, ceremony) = begun.map_err(begin_refused)?;
    let mut body = serde_json::to_value(options).map_err(ApiError::unavailable)?;
    body["ceremony"] = serde_json::Value::String(ceremony);
    Ok(no_store(Json(body).into_response()))
}

/// The body of `POST /login/passkey/finish`.
#[derive(Deserialize)]
pub struct SignInFinish {
    /// The `ceremony` of the begin answer.
    ceremony: String,
    /// The browser's assertion.
    credential: Assertion,
    /// Where to go afterwards (checked like the login form's).
    next: Option<String>,
}

/// Where the browser goes after a passkey sign-in.
#[derive(Serialize)]
struct Signed {
    redirect: String,
}

/// `POST /login/passkey/finish`: checks the assertion through the core
/// (throttled, audited); on success the session is logged in under a new
/// ID and the answer says where to go.
pub async fn finish_sign_in(
    pages: PasskeyPages,
    session: Session,
    LoginClient(client): LoginClient,
    browser: BrowserBinding,
    _csrf: CsrfHeader,
    ApiJson(body): ApiJson<SignInFinish>,
) -> Result<Response, ApiError> {
    // A ceremony of another browser (or of the API) is not found, and is
    // answered like an unknown one.
    let kept = Kept::Database(&body.ceremony, &browser);
    let verify = |ceremony| pages.auth.passkey(Channel::Web, &client, ceremony, &body.credential);
    let done = checked(&pages, &client, kept, verify).await?;
    let next = pages.forward_auth.checked_next(body.next);
    let _ = tessera_axum::continue_login(&session, LoginStep::LoggedIn(done.clone()));
    let mut response = Json(Signed { redirect: next.unwrap_or_else(|| "/profile".into()) }).into_response();
    Flash::LoggedIn.set(pages.engine.cookie_config(), response.headers_mut());
    remember_device(response.headers_mut(), pages.engine.cookie_config(), &done);
    Ok(no_store(response))
}

/// The body of `POST /account/passkeys/begin`.
#[derive(Deserialize, Default)]
pub struct RegistrationBegin {
    /// Needed when the last authentication is older than the window.
    #[serde(default)]
    current_password: Option<String>,
}

/// `POST /account/passkeys/begin`: the options for
/// `navigator.credentials.create()` for the logged-in user, after a recent
/// authentication (adding a way in is as sensitive as changing the password).
pub async fn begin_registration(
    pages: PasskeyPages,
    RequireUser(id): RequireUser,
    session: Session,
    LoginClient(client): LoginClient,
    _csrf: CsrfHeader,
    ApiJson(body): ApiJson<RegistrationBegin>,
) -> Result<Response, ApiError> {
    let passkeys = pages.passkeys()?;
    let user = pages.user(&id).await?;
    pages
        .ensure_recent(&session, &client, &user, body.current_password.as_deref(), false)
        .await
        .map_err(Refused::problem)?;
    let (options, ceremony) = passkeys.begin_registration(&user).await.map_err(refused)?;
    session.insert(REGISTRATION, &ceremony).map_err(ApiError::unavailable)?;
    Ok(no_store(Json(options).into_response()))
}

/// The body of `POST /account/passkeys/finish`.
#[derive(Deserialize)]
pub struct RegistrationFinish {
    /// What to call it; empty: after its authenticator when it is a known
    /// one, else `default_name`.
    #[serde(default)]
    name: String,
    /// The page's suggestion (the browser and system).
    #[serde(default)]
    default_name: Option<String>,
    /// The browser's new credential.
    credential: NewCredential,
}

/// A passkey as the JSON answers show it.
#[derive(Serialize)]
struct PasskeyJson {
    id: String,
    name: String,
    synced: bool,
}

/// `POST /account/passkeys/finish`: stores the new passkey (audited).
pub async fn finish_registration(
    pages: PasskeyPages,
    RequireUser(id): RequireUser,
    session: Session,
    LoginClient(client): LoginClient,
    _csrf: CsrfHeader,
    ApiJson(body): ApiJson<RegistrationFinish>,
) -> Result<Response, ApiError> {
    pages.passkeys()?;
    let user = pages.user(&id).await?;
    let ceremony: Option<RegistrationCeremony> = session.remove(REGISTRATION).ok().flatten();
    let Some(ceremony) = ceremony else { return Err(ApiError::Passkey(tessera_auth::PasskeyRefusal::Expired)) };
    let name = passkey_name(&body.name, &body.credential, body.default_name.as_deref());
    let added = pages
        .auth
        .add_passkey(Channel::Web, &client, &user, &ceremony, &body.credential, &name)
        .await
        .map_err(refused)?;
    let json = PasskeyJson { id: added.id, name: added.name, synced: added.synced };
    let mut response = (StatusCode::CREATED, Json(json)).into_response();
    Flash::PasskeyAdded.set(pages.engine.cookie_config(), response.headers_mut());
    Ok(no_store(response))
}

fn no_store(mut response: Response) -> Response {
    response.headers_mut().insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
    response
}

#[derive(Template)]
#[template(path = "account_passkeys.html")]
struct PasskeysPage {
    page: Chrome,
    rows: Vec<PasskeyRow>,
    can_remove: bool,
    needs_password: bool,
    has_password: bool,
    error: Option<String>,
    /// For the Signal API: the relying party, the account's user handle and
    /// its credential IDs, so the browser's password manager drops passkeys
    /// that are gone.
    rp_id: String,
    user_handle: String,
    accepted_ids: String,
}

/// A passkey as listed.
struct PasskeyRow {
    id: String,
    name: String,
    created: (String, String),
    last_used: Option<(String, String)>,
    synced: bool,
}

/// How many ways the account has to sign in besides its passkeys.
async fn other_ways_in(pages: &PasskeyPages, user: &User) -> Result<usize, ServerError> {
    let identities = pages.db.identities_of(user.id).await.map_err(ServerError::unavailable)?;
    Ok(identities.len() + usize::from(user.password_hash.is_some()))
}

async fn render_page(
    pages: &PasskeyPages,
    ctx: &PageContext,
    user: &User,
    status: StatusCode,
    error: Option<String>,
) -> Response {
    let Some(passkeys) = pages.auth.passkeys() else { return ServerError::NotFound.into_response() };
    let list = match passkeys.list(user.id).await {
        Ok(list) => list,
        Err(error) => return ServerError::unavailable(error).into_response(),
    };
    let others = match other_ways_in(pages, user).await {
        Ok(others) => others,
        Err(error) => return error.into_response(),
    };
    let user_handle = match passkeys.user_handle(user.id).await {
        Ok(handle) => handle.unwrap_or_default(),
        Err(error) => return ServerError::unavailable(error).into_response(),
    };
    let accepted_ids = list.iter().map(|p| p.id.as_str()).collect::<Vec<_>>().join(" ");
    let can_remove = others > 0 || list.len() > 1;
    let rows = list
        .into_iter()
        .map(|p| PasskeyRow {
            id: p.id,
            name: p.name,
            created: display_time(p.created_at),
            last_used: p.last_used_at.map(display_time),
            synced: p.synced,
        })
        .collect();
    let view = PasskeysPage {
        page: ctx.chrome("Passkeys"),
        rows,
        can_remove,
        needs_password: !pages.reauth.is_recent_now(&ctx.session),
        has_password: user.password_hash.is_some(),
        error,
        rp_id: passkeys.relying_party().id().to_owned(),
        user_handle,
        accepted_ids,
    };
    ctx.render(status, &view)
}

/// `GET /account/passkeys`: the list, with the forms that change it.
pub async fn show(pages: PasskeyPages, RequireUser(_): RequireUser, ctx: PageContext) -> Response {
    let Some(user) = ctx.user.clone() else { return Redirect::to("/login").into_response() };
    render_page(&pages, &ctx, &user, StatusCode::OK, None).await
}

/// The rename form.
#[derive(Deserialize)]
pub struct RenameForm {
    #[serde(default)]
    id: String,
    #[serde(default)]
    name: String,
}

/// `POST /account/passkeys/rename`: only the owner's passkeys; a name is
/// not sensitive, so no re-authentication.
pub async fn rename(
    pages: PasskeyPages,
    RequireUser(_): RequireUser,
    ctx: PageContext,
    CsrfForm(form): CsrfForm<RenameForm>,
) -> Response {
    let Some(user) = ctx.user.clone() else { return Redirect::to("/login").into_response() };
    let Some(passkeys) = pages.auth.passkeys() else { return ServerError::NotFound.into_response() };
    match passkeys.rename(user.id, &form.id, &form.name).await {
        Ok(true) => done(&pages, Flash::PasskeyRenamed),
        Ok(false) => {
            let message = "You have no such passkey. Nothing was changed.".to_owned();
            render_page(&pages, &ctx, &user, StatusCode::NOT_FOUND, Some(message)).await
        }
        Err(PasskeyError::Refused(refusal)) => {
            let message = format!("{refusal}. Nothing was changed.");
            render_page(&pages, &ctx, &user, StatusCode::UNPROCESSABLE_ENTITY, Some(capitalized(&message))).await
        }
        Err(PasskeyError::Unavailable(error)) => ServerError::unavailable(error).into_response(),
    }
}

/// The remove form.
#[derive(Deserialize)]
pub struct RemoveForm {
    #[serde(default)]
    id: String,
    /// Needed when the last authentication is older than the window.
    current_password: Option<String>,
}

/// `POST /account/passkeys/remove`: after a recent authentication, and
/// never the account's last way to sign in (audited).
pub async fn remove(
    pages: PasskeyPages,
    RequireUser(_): RequireUser,
    ctx: PageContext,
    CsrfForm(form): CsrfForm<RemoveForm>,
) -> Response {
    let Some(user) = ctx.user.clone() else { return Redirect::to("/login").into_response() };
    if pages.auth.passkeys().is_none() {
        return ServerError::NotFound.into_response();
    }
    if let Err(refusal) =
        pages.ensure_recent(&ctx.session, &ctx.client, &user, form.current_password.as_deref(), true).await
    {
        let status = match &refusal {
            Refused::Unavailable(error) => return ServerError::unavailable(error).into_response(),
            Refused::Throttled(_) => StatusCode::TOO_MANY_REQUESTS,
            Refused::Stale(_) | Refused::WrongPassword => StatusCode::UNAUTHORIZED,
        };
        let response = render_page(&pages, &ctx, &user, status, Some(refusal.message())).await;
        return match refusal {
            Refused::Throttled(wait) => with_retry_after(response, wait),
            _ => response,
        };
    }
    // The identities are counted inside the removal's transaction.
    let identities = Some(crate::oidc::identities::COUNT_IDENTITIES);
    match pages.auth.remove_passkey(Channel::Web, &ctx.client, &user, &form.id, identities).await {
        Ok(Removal::Removed) => done(&pages, Flash::PasskeyRemoved),
        Ok(Removal::LastWayIn) => {
            let message = "This passkey is your only way to sign in, so it cannot be removed. Add another passkey \
                           (or a password) first."
                .to_owned();
            render_page(&pages, &ctx, &user, StatusCode::CONFLICT, Some(message)).await
        }
        Ok(Removal::NoSuchPasskey) => {
            let message = "You have no such passkey. Nothing was removed.".to_owned();
            render_page(&pages, &ctx, &user, StatusCode::NOT_FOUND, Some(message)).await
        }
        Err(error) => ServerError::unavailable(error).into_response(),
    }
}

/// A 303 back to the list with `flash` (a fresh page, with a CSRF token
/// for the session as it is now: a password confirmation gave it a new ID).
fn done(pages: &PasskeyPages, flash: Flash) -> Response {
    let mut response = Redirect::to("/account/passkeys").into_response();
    flash.set(pages.engine.cookie_config(), response.headers_mut());
    response
}

fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// An assertion sent to a finish endpoint that keeps its ceremony in the
/// session (second factor, confirmation).
#[derive(Deserialize)]
pub struct AssertionBody {
    /// The browser's assertion.
    credential: Assertion,
}

/// Begins an assertion by a passkey of `user_id`, kept in the session
/// under `key`: the options for `navigator.credentials.get()`.
async fn begin_own(pages: &PasskeyPages, session: &Session, key: &str, user_id: i64) -> Result<Response, ApiError> {
    let passkeys = pages.passkeys()?;
    let (options, ceremony) = passkeys.begin_authentication_for(user_id).await.map_err(refused)?;
    session.insert(key, &ceremony).map_err(ApiError::unavailable)?;
    Ok(no_store(Json(options).into_response()))
}

/// `POST /login/second-factor/passkey/begin`: for the session whose
/// password (or provider) step passed, a challenge for a passkey of that
/// account only.
pub async fn begin_second_factor(
    pages: PasskeyPages,
    session: Session,
    _csrf: CsrfHeader,
) -> Result<Response, ApiError> {
    let Some(pending) = pending_login(&session, pages.clock.now()) else {
        return Err(ApiError::Passkey(PasskeyRefusal::Expired));
    };
    begin_own(&pages, &session, SECOND_FACTOR, pending.user_id).await
}

/// `POST /login/second-factor/passkey/finish`: the passkey completes the
/// pending login (throttled and audited like a code; another account's
/// passkey is refused and counted); the session is logged in under a new
/// ID and the answer says where to go.
pub async fn finish_second_factor(
    pages: PasskeyPages,
    session: Session,
    LoginClient(client): LoginClient,
    _csrf: CsrfHeader,
    ApiJson(body): ApiJson<AssertionBody>,
) -> Result<Response, ApiError> {
    pages.passkeys()?;
    let Some(pending) = pending_login(&session, pages.clock.now()) else {
        return Err(ApiError::Passkey(PasskeyRefusal::Expired));
    };
    let verify =
        |ceremony| pages.auth.second_factor_passkey(Channel::Web, &client, &pending, ceremony, &body.credential);
    let done = checked(&pages, &client, Kept::Session(&session, SECOND_FACTOR), verify).await?;
    clear_pending_login(&session);
    tessera_axum::log_in(&session, &done);
    let redirect = pending.next.unwrap_or_else(|| "/profile".into());
    let mut response = Json(Signed { redirect }).into_response();
    Flash::LoggedIn.set(pages.engine.cookie_config(), response.headers_mut());
    remember_device(response.headers_mut(), pages.engine.cookie_config(), &done);
    Ok(no_store(response))
}

/// `POST /account/confirm/passkey/begin`: a challenge for a passkey of the
/// logged-in user, to confirm it is them before a sensitive action.
pub async fn begin_confirmation(
    pages: PasskeyPages,
    RequireUser(id): RequireUser,
    session: Session,
    _csrf: CsrfHeader,
) -> Result<Response, ApiError> {
    let user = pages.user(&id).await?;
    begin_own(&pages, &session, CONFIRMATION, user.id).await
}

/// What a confirmation answers.
#[derive(Serialize)]
struct Confirmed {
    confirmed: bool,
}

/// `POST /account/confirm/passkey/finish`: a fresh assertion by one of the
/// user's passkeys counts as a recent authentication (the session is
/// stepped up: a new ID), like the password typed again. Behind the login
/// throttle; another account's passkey is refused and counted.
pub async fn finish_confirmation(
    pages: PasskeyPages,
    RequireUser(id): RequireUser,
    session: Session,
    LoginClient(client): LoginClient,
    _csrf: CsrfHeader,
    ApiJson(body): ApiJson<AssertionBody>,
) -> Result<Response, ApiError> {
    pages.passkeys()?;
    let user = pages.user(&id).await?;
    let verify = |ceremony| pages.reauth.confirm_passkey(&session, &client, &user, ceremony, &body.credential);
    checked(&pages, &client, Kept::Session(&session, CONFIRMATION), verify).await?;
    Ok(no_store(Json(Confirmed { confirmed: true }).into_response()))
}

/// The body of `POST /register/passkey/begin`.
#[derive(Deserialize)]
pub struct SignUpBegin {
    /// The user name asked for.
    #[serde(default)]
    username: String,
    /// The invitation token, when `accounts.registration` needs one.
    #[serde(default)]
    invite: String,
    /// An address to verify (`accounts.email`).
    #[serde(default)]
    email: String,
}

/// The checks a sign-up passes before its ceremony begins, before anything
/// is counted (and again before the account is created): the registration
/// policy and the invitation ([`Registration::check`]), the address.
async fn sign_up_prechecks(pages: &PasskeyPages, invite: &str, email: &str) -> Result<(), ApiError> {
    pages.registration.check(Some(invite)).await.map_err(policy_refused)?;
    let policy = super::register::email_policy(&pages.auth, pages.email_pages);
    match super::register::email_problem(policy, email) {
        Some(problem) => Err(ApiError::Validation(problem)),
        None => Ok(()),
    }
}

/// `POST /register/passkey/begin`: a sign-up with a passkey and no
/// password. Checks the policy, the address and the name first (counted on
/// the address's sign-up allowance before the name is looked up, like the
/// password form), then answers the options for
/// `navigator.credentials.create()` and a `ceremony` ID (kept in the
/// database, bound to this browser: the visitor has no session).
pub async fn begin_sign_up(
    pages: PasskeyPages,
    LoginClient(client): LoginClient,
    browser: BrowserBinding,
    _csrf: CsrfHeader,
    ApiJson(body): ApiJson<SignUpBegin>,
) -> Result<Response, ApiError> {
    pages.passkeys()?;
    sign_up_prechecks(&pages, &body.invite, &body.email).await?;
    let binding = Some(browser.as_str());
    let begun = pages.auth.begin_passkey_sign_up(Channel::Web, &client, &body.username, binding).await;
    let (options, ceremony) = begun.map_err(sign_up_refused)?;
    let mut json = serde_json::to_value(options).map_err(ApiError::unavailable)?;
    json["ceremony"] = serde_json::Value::String(ceremony);
    Ok(no_store(Json(json).into_response()))
}

/// The body of `POST /register/passkey/finish`.
#[derive(Deserialize)]
pub struct SignUpFinish {
    /// The `ceremony` of the begin answer.
    ceremony: String,
    /// The browser's new credential.
    credential: NewCredential,
    #[serde(default)]
    invite: String,
    #[serde(default)]
    email: String,
    /// The passkey's name; empty: after its authenticator, else `default_name`.
    #[serde(default)]
    name: String,
    #[serde(default)]
    default_name: Option<String>,
}

/// `POST /register/passkey/finish`: creates the account (no password) with
/// its passkey under the registration policy, and logs it in.
pub async fn finish_sign_up(
    pages: PasskeyPages,
    session: Session,
    LoginClient(client): LoginClient,
    browser: BrowserBinding,
    _csrf: CsrfHeader,
    ApiJson(body): ApiJson<SignUpFinish>,
) -> Result<Response, ApiError> {
    let passkeys = pages.passkeys()?;
    // Only the browser that began it finds it (else: an unknown ceremony).
    let ceremony = passkeys.take_sign_up(&body.ceremony, Some(browser.as_str())).await;
    let ceremony = ceremony.map_err(ApiError::unavailable)?;
    let Some(ceremony) = ceremony else { return Err(ApiError::Passkey(PasskeyRefusal::Expired)) };
    sign_up_prechecks(&pages, &body.invite, &body.email).await?;
    let name = passkey_name(&body.name, &body.credential, body.default_name.as_deref());
    let user = pages
        .registration
        .register_with_passkey(Some(&body.invite), Channel::Web, &client, &ceremony, &body.credential, &name)
        .await
        .map_err(policy_refused)?
        .map_err(sign_up_refused)?;
    let email = body.email.trim();
    let policy = super::register::email_policy(&pages.auth, pages.email_pages);
    if policy != crate::mail::EmailPolicy::Off && !email.is_empty() {
        // The account exists either way; see the password sign-up.
        if let Err(error) = pages.auth.request_email(&user, email).await {
            tracing::warn!(%error, user_id = user.id, "queueing the sign-up verification mail failed");
        }
    }
    tracing::info!(user_id = user.id, "passkey-only sign-up");
    let _ = tessera_axum::continue_login(&session, pages.auth.after_passkey_sign_up(user));
    let mut response = (StatusCode::CREATED, Json(Signed { redirect: "/profile".into() })).into_response();
    Flash::Welcome.set(pages.engine.cookie_config(), response.headers_mut());
    Ok(no_store(response))
}
