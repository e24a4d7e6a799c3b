//! The bridge to the authentication core (`tessera-auth`): the request as
//! a [`Client`] the core can throttle and audit, and the login's result
//! written to the session and the response.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRef, FromRequestParts};
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, StatusCode};
use tessera::CookieConfig;
use tessera_auth::throttle::{DEVICE_COOKIE, DEVICE_COOKIE_LIFETIME};
use tessera_auth::{Authenticator, Channel, Client, LoggedIn, LoginError, LoginStep, PendingLogin, RegisterError};

use crate::extract::slot;
use crate::extract::ClientIp;
use crate::layer::{client_device, find_cookie};

/// Extractor: the client as the authentication core sees it — its address
/// (from [`ClientIp`], else the socket), user agent and device cookie.
///
/// ```
/// use tessera_auth::{Authenticator, Channel};
/// use tessera_axum::LoginClient;
///
/// async fn handler(LoginClient(client): LoginClient) {
///     // auth.password(Channel::Web, &client, name, password, None).await
///     let _ = client.ip;
/// }
/// ```
#[derive(Debug, Clone)]
pub struct LoginClient(pub Client);

impl<S: Send + Sync> FromRequestParts<S> for LoginClient {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let ip: Option<IpAddr> = parts
            .extensions
            .get::<ClientIp>()
            .map(|ip| ip.0)
            .or_else(|| parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()));
        let cookie_config = slot(parts).ok().map(|slot| slot.config.engine.cookie_config().clone()).unwrap_or_default();
        let name = cookie_config.prefixed(DEVICE_COOKIE);
        let device_cookie = find_cookie(&parts.headers, &name, |_| true);
        let device = client_device(&parts.extensions, &parts.headers);
        Ok(LoginClient(Client { ip, device, device_cookie }))
    }
}

/// Adds the device cookie of a password login to a response, so this
/// browser is never locked out by failures made elsewhere (see
/// `tessera_auth::throttle`). Does nothing for logins that made none.
pub fn remember_device(headers: &mut HeaderMap, cookie: &CookieConfig, logged_in: &LoggedIn) {
    let Some(value) = logged_in.device_cookie.clone() else { return };
    let cookie = cookie.cookie(cookie.prefixed(DEVICE_COOKIE), value, Some(DEVICE_COOKIE_LIFETIME));
    crate::cookies::set(headers, &cookie);
}

/// The session key holding when the user last proved who they are
/// (milliseconds since the epoch): what step-ups check for recency.
pub const AUTHENTICATED_AT: &str = "authenticated_at";

/// The session key holding how the user signed in: OpenID Connect `amr`
/// values (RFC 8176, see `LoggedIn::amr`), with `mfa` when the sign-in
/// used two factors (a passkey, or a password or provider and a code or
/// passkey). Forward-auth's `two_factor` rules read it, and an OpenID
/// Provider can emit it.
pub const AUTHENTICATION_METHODS: &str = "amr";

/// Whether `session`'s sign-in used two factors (its
/// [`AUTHENTICATION_METHODS`] include `mfa`). `false` for a session from
/// before they were recorded.
pub fn signed_in_with_two_factors(session: &tessera::Session) -> bool {
    session.get::<Vec<String>>(AUTHENTICATION_METHODS).ok().flatten().is_some_and(|amr| amr.iter().any(|m| m == "mfa"))
}

/// Logs `session` in for a finished login: a new session ID bound to the
/// user (no fixation), and the time the user proved who they are — or no
/// such time, for a provider login that did not say, so the session is not
/// recently authenticated.
pub fn log_in(session: &tessera::Session, done: &LoggedIn) {
    session.login(done.user.id.to_string());
    // Serializing a list of strings cannot fail.
    let _ = session.insert(AUTHENTICATION_METHODS, &done.amr());
    match done.authenticated_at {
        // Serializing an integer cannot fail.
        Some(at) => drop(session.insert(AUTHENTICATED_AT, &at.as_millis())),
        None => drop(session.remove::<i64>(AUTHENTICATED_AT)),
    }
}

/// Where a login stands after a step.
#[derive(Debug, Clone)]
pub enum Progress {
    /// Logged in: the session has a new ID and belongs to this user.
    LoggedIn(tessera_auth::User),
    /// The account needs its second factor: the pending login is kept in
    /// the session (under a new ID) for [`Auth::second_factor`].
    SecondFactorRequired,
}

/// The session key of a pending login (first factor passed, second awaited).
const PENDING_LOGIN: &str = "pending_second_factor";

/// Writes a login step to `session`: logs it in ([`log_in`]) or keeps the
/// pending login under a new session ID (a passed first factor is a
/// privilege an ID planted before must not inherit).
pub fn continue_login(session: &tessera::Session, step: LoginStep) -> Progress {
    match step {
        LoginStep::LoggedIn(done) => {
            let _ = session.remove::<serde_json::Value>(PENDING_LOGIN);
            log_in(session, &done);
            Progress::LoggedIn(done.user)
        }
        LoginStep::SecondFactor(pending) => {
            session.regenerate();
            // Serializing integers and strings cannot fail.
            let _ = session.insert(PENDING_LOGIN, &pending);
            Progress::SecondFactorRequired
        }
    }
}

/// The pending login kept in `session`, if any and not expired at `now`.
pub fn pending_login(session: &tessera::Session, now: tessera::Timestamp) -> Option<PendingLogin> {
    let pending: PendingLogin = session.get(PENDING_LOGIN).ok().flatten()?;
    pending.is_current(now).then_some(pending)
}

/// Forgets the pending login of `session` (after success, or to start over).
pub fn clear_pending_login(session: &tessera::Session) {
    let _ = session.remove::<serde_json::Value>(PENDING_LOGIN);
}

/// Extractor: the authentication core bound to this request — its client
/// and its session — so a handler logs in with one call. The application's
/// state must provide an [`Authenticator`] (`FromRef`).
///
/// ```no_run
/// use axum::response::Redirect;
/// use tessera_axum::{Auth, AuthRejection, CsrfForm};
///
/// #[derive(serde::Deserialize)]
/// struct Credentials { username: String, password: String }
///
/// async fn login(auth: Auth, CsrfForm(form): CsrfForm<Credentials>) -> Result<Redirect, AuthRejection> {
///     auth.log_in(&form.username, &form.password).await?;
///     Ok(Redirect::to("/profile"))
/// }
/// ```
pub struct Auth {
    /// The core.
    pub authenticator: Authenticator,
    /// Who is asking.
    pub client: Client,
    /// The request's session.
    pub session: crate::Session,
}

impl<S> FromRequestParts<S> for Auth
where
    Authenticator: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = crate::Rejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let session = crate::Session::from_request_parts(parts, state).await?;
        let Ok(LoginClient(client)) = LoginClient::from_request_parts(parts, state).await;
        Ok(Auth { authenticator: Authenticator::from_ref(state), client, session })
    }
}

impl Auth {
    /// Creates an account with a password and logs it in (or, on a server
    /// that requires a second factor, starts setting one up).
    pub async fn register(&self, username: &str, password: &str) -> Result<Progress, AuthRejection> {
        let step = self.authenticator.register(Channel::Web, &self.client, username, password, None).await?;
        Ok(continue_login(&self.session, step))
    }

    /// Logs in with a user name and password: throttled, audited, a new
    /// session ID on success.
    pub async fn log_in(&self, username: &str, password: &str) -> Result<Progress, AuthRejection> {
        let step = self.authenticator.password(Channel::Web, &self.client, username, password, None).await?;
        Ok(continue_login(&self.session, step))
    }

    /// The second factor of the pending login: an authenticator or recovery code.
    pub async fn second_factor(&self, code: &str) -> Result<tessera_auth::User, AuthRejection> {
        let now = tessera::Timestamp::now();
        let pending = pending_login(&self.session, now).ok_or(AuthRejection::Login(LoginError::Expired))?;
        let done = self.authenticator.second_factor(Channel::Web, &self.client, &pending, code).await?;
        clear_pending_login(&self.session);
        log_in(&self.session, &done);
        Ok(done.user)
    }

    /// The logged-in user, if the session has one and the account may
    /// still sign in.
    pub async fn user(&self) -> Result<Option<tessera_auth::User>, AuthRejection> {
        let Some(id) = self.session.user_id().and_then(|id| id.parse::<i64>().ok()) else { return Ok(None) };
        let user = self.authenticator.accounts().directory().user_by_id(id).await.map_err(LoginError::from)?;
        Ok(user.filter(tessera_auth::User::is_enabled))
    }

    /// Logs out: the session is destroyed in the store and its cookie cleared.
    pub fn log_out(&self) {
        self.session.logout();
    }
}

/// Why a login or registration was refused, as an answer: `401` for wrong
/// credentials or codes, `422`/`409` for a refused registration, `429` with
/// `Retry-After` when throttled, `503` when a dependency is down — as a
/// small HTML page carrying a [`crate::Problem`] extension, which an
/// application can re-render in its own look (or as problem+json).
#[derive(Debug, thiserror::Error)]
pub enum AuthRejection {
    /// A login step failed.
    #[error(transparent)]
    Login(#[from] LoginError),
    /// A registration was refused.
    #[error(transparent)]
    Register(#[from] RegisterError),
}

impl IntoResponse for AuthRejection {
    fn into_response(self) -> Response {
        let (status, kind, title, detail) = match &self {
            AuthRejection::Login(LoginError::InvalidCredentials) => {
                (StatusCode::UNAUTHORIZED, "invalid-credentials", "Login failed", "Wrong user name or password.".into())
            }
            AuthRejection::Login(LoginError::InvalidSecondFactor) => (
                StatusCode::UNAUTHORIZED,
                "invalid-second-factor",
                "Login failed",
                "That code is not valid, or it was used already.".into(),
            ),
            AuthRejection::Login(LoginError::SecondFactorRequired) => (
                StatusCode::UNAUTHORIZED,
                "second-factor-required",
                "Second factor required",
                "Enter the code from your authenticator app.".into(),
            ),
            AuthRejection::Login(LoginError::EnrolmentRequired) => (
                StatusCode::FORBIDDEN,
                "second-factor-enrolment-required",
                "Set up two-step verification",
                "This account must set up two-step verification first.".into(),
            ),
            AuthRejection::Login(LoginError::PasskeyRefused(refusal)) => {
                (StatusCode::UNAUTHORIZED, refusal.kind(), "Passkey refused", refusal.to_string())
            }
            AuthRejection::Login(LoginError::EmailUnverified(_)) => (
                StatusCode::FORBIDDEN,
                "email-unverified",
                "Email address not verified",
                "Confirm your email address with the link we mailed you, then log in again.".into(),
            ),
            AuthRejection::Login(LoginError::Expired) => {
                (StatusCode::UNAUTHORIZED, "login-expired", "Login expired", "Please log in again.".into())
            }
            AuthRejection::Login(LoginError::Throttled(wait)) => {
                let seconds = retry_after_seconds(*wait);
                let mut response = crate::rejection::problem(
                    StatusCode::TOO_MANY_REQUESTS,
                    "throttled",
                    "Too many attempts",
                    &format!("Too many failed attempts. Please wait {seconds} s before trying again."),
                    false,
                );
                response.headers_mut().insert(http::header::RETRY_AFTER, HeaderValue::from(seconds));
                return response;
            }
            AuthRejection::Register(RegisterError::Throttled(wait)) => {
                let seconds = retry_after_seconds(*wait);
                let mut response = crate::rejection::problem(
                    StatusCode::TOO_MANY_REQUESTS,
                    "throttled",
                    "Too many sign-ups",
                    &format!("Too many accounts were created from this address. Please wait {seconds} s."),
                    false,
                );
                response.headers_mut().insert(http::header::RETRY_AFTER, HeaderValue::from(seconds));
                return response;
            }
            AuthRejection::Login(LoginError::Busy) | AuthRejection::Register(RegisterError::Busy) => {
                let mut response = crate::rejection::problem(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "busy",
                    "Busy",
                    "The server is busy checking passwords. Nothing was changed; please try again in a moment.",
                    false,
                );
                response.headers_mut().insert(http::header::RETRY_AFTER, HeaderValue::from(BUSY_RETRY_AFTER_SECONDS));
                return response;
            }
            AuthRejection::Login(LoginError::Unavailable(error)) => {
                tracing::warn!(%error, "authentication unavailable");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "Temporarily unavailable",
                    "Please try again in a moment.".into(),
                )
            }
            AuthRejection::Register(RegisterError::Unavailable(error)) => {
                tracing::warn!(%error, "authentication unavailable");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "Temporarily unavailable",
                    "Please try again in a moment.".into(),
                )
            }
            AuthRejection::Register(RegisterError::UsernameTaken) => {
                (StatusCode::CONFLICT, "username-taken", "Registration refused", self.to_string())
            }
            AuthRejection::Register(why) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "invalid-registration", "Registration refused", why.to_string())
            }
        };
        crate::rejection::problem(status, kind, title, &detail, false)
    }
}

/// `Retry-After` of a `503` for a full password hashing queue: the queue
/// drains in well under a second, so a short wait is enough.
pub const BUSY_RETRY_AFTER_SECONDS: u64 = 1;

/// `Retry-After` in whole seconds, rounded up and at least 1, so a client
/// that waits exactly that long gets through.
pub fn retry_after_seconds(wait: std::time::Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}
