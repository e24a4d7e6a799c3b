//! The tower layer: finds the session cookie, lends the session to handlers,
//! commits their changes and sets the cookie.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::extract::{ConnectInfo, Request};
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use http::header::{ACCEPT, CACHE_CONTROL, CONTENT_TYPE, USER_AGENT};
use http::{HeaderMap, HeaderValue};
use tessera::{CookieUpdate, DeviceInfo, Session, SessionEngine, StoreError};
use tokio::sync::OnceCell;
use tower_layer::Layer;
use tower_service::Service;

use crate::csrf::{CsrfKey, PRE_SESSION_COOKIE};
use crate::extract::ClientIp;
use crate::negotiation::wants_json_given;
use crate::rejection::SessionUnavailable;

/// Installs sessions on a router or service.
///
/// ```no_run
/// # fn demo(engine: tessera::SessionEngine, app: axum::Router) -> axum::Router {
/// use tessera_axum::{CsrfKey, SessionLayer};
/// app.layer(SessionLayer::new(engine, CsrfKey::generate()))
/// # }
/// ```
#[derive(Clone)]
pub struct SessionLayer {
    config: Arc<LayerConfig>,
}

pub(crate) struct LayerConfig {
    pub(crate) engine: SessionEngine,
    pub(crate) csrf_key: CsrfKey,
    pub(crate) login_path: String,
    pub(crate) pre_session_cookie: String,
    pub(crate) session_cookie: String,
    /// Normalized origins form posts may come from besides the request's own.
    pub(crate) allowed_origins: Vec<String>,
}

impl SessionLayer {
    /// Sessions from `engine`; CSRF tokens signed with `csrf_key` (share the
    /// key between instances that serve the same site).
    pub fn new(engine: SessionEngine, csrf_key: CsrfKey) -> Self {
        let pre_session_cookie = engine.cookie_config().prefixed(PRE_SESSION_COOKIE);
        let session_cookie = engine.cookie_config().cookie_name();
        SessionLayer {
            config: Arc::new(LayerConfig {
                engine,
                csrf_key,
                login_path: "/login".to_owned(),
                pre_session_cookie,
                session_cookie,
                allowed_origins: Vec::new(),
            }),
        }
    }

    /// Where [`RequireUser`](crate::RequireUser) sends browsers that are not
    /// logged in. Default `/login`.
    pub fn with_login_path(mut self, path: impl Into<String>) -> Self {
        if let Some(config) = Arc::get_mut(&mut self.config) {
            config.login_path = path.into();
        }
        self
    }

    /// Origins (`https://auth.example.com`) that form posts and
    /// cookie-authenticated requests may come from besides the request's
    /// own authority. Give the site's public URL when a reverse proxy in
    /// front does not pass the browser's `Host` on (nginx's plain
    /// `proxy_pass` sends its upstream's address instead). A path, a
    /// trailing slash and the scheme's default port are ignored; text that
    /// is no `scheme://host` origin is skipped.
    pub fn with_allowed_origins<I, T>(mut self, origins: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: AsRef<str>,
    {
        if let Some(config) = Arc::get_mut(&mut self.config) {
            config
                .allowed_origins
                .extend(origins.into_iter().filter_map(|origin| crate::csrf::normalize_origin(origin.as_ref())));
        }
        self
    }

    /// The engine behind this layer.
    pub fn engine(&self) -> &SessionEngine {
        &self.config.engine
    }
}

impl<S> Layer<S> for SessionLayer {
    type Service = SessionService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SessionService { inner, config: self.config.clone() }
    }
}

/// The service [`SessionLayer`] wraps around an inner service.
#[derive(Clone)]
pub struct SessionService<S> {
    inner: S,
    config: Arc<LayerConfig>,
}

/// Per-request session state, shared with extractors through request extensions.
pub(crate) struct SessionSlot {
    pub(crate) config: Arc<LayerConfig>,
    cookie_value: Option<String>,
    /// The client's address and user agent, turned into [`DeviceInfo`] only
    /// if the session is loaded: routes that never ask for it pay nothing.
    client_ip: Option<IpAddr>,
    user_agent: Option<HeaderValue>,
    session: OnceCell<Session>,
    /// `Accept` and `Content-Type` (reference counts), for [`Self::json`]:
    /// read only when a rejection is rendered.
    accept: Option<HeaderValue>,
    content_type: Option<HeaderValue>,
    /// The pre-session CSRF secret the browser sent, if any.
    pub(crate) pre_session_secret: Option<String>,
    /// A pre-session CSRF secret minted during this request, to be set as a cookie.
    pub(crate) minted_pre_session_secret: Mutex<Option<String>>,
}

impl SessionSlot {
    /// Whether rejections answer with problem documents (see [`crate::wants_json`]).
    pub(crate) fn json(&self) -> bool {
        wants_json_given(self.accept.as_ref(), self.content_type.as_ref())
    }

    /// The request's session, loading it from the store on first use.
    pub(crate) async fn session(&self) -> Result<&Session, SessionUnavailable> {
        self.session
            .get_or_try_init(|| async {
                let user_agent = self.user_agent.as_ref().and_then(|v| v.to_str().ok());
                let device = DeviceInfo::new(self.client_ip.map(|ip| ip.to_string()), user_agent);
                self.config.engine.load(self.cookie_value.as_deref(), device).await
            })
            .await
            .map_err(|error| {
                tracing::warn!(error = %error, "session store unavailable while loading a session");
                SessionUnavailable { json: self.json() }
            })
    }

    async fn finish(&self, response: &mut Response) {
        // A login (or logout) rotates the pre-session CSRF secret: a token
        // minted for the login form must not outlive it, neither for the
        // user who logged in nor for the next one in the same browser.
        let had_secret = self.pre_session_secret.is_some();
        if self.session.get().is_some_and(Session::owner_changed) {
            let mut minted = self.minted_pre_session_secret.lock().unwrap_or_else(|p| p.into_inner());
            if had_secret || minted.is_some() {
                *minted = Some(crate::csrf::new_secret());
            }
        }
        if let Some(secret) = self.minted_pre_session_secret.lock().ok().and_then(|mut s| s.take()) {
            let cookie =
                self.config.engine.cookie_config().cookie(self.config.pre_session_cookie.clone(), secret, None);
            crate::cookies::set(response.headers_mut(), &cookie);
        }
        let Some(session) = self.session.get() else { return };
        match self.config.engine.commit(session).await {
            Ok(CookieUpdate::Keep) => {}
            Ok(CookieUpdate::Set { value, max_age }) => {
                let cookie = self.config.engine.cookie_config().session_cookie(value, Some(max_age));
                crate::cookies::set(response.headers_mut(), &cookie);
                // A response that carries a session cookie must never be cached.
                response.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            }
            Ok(CookieUpdate::Remove) => {
                let cookie = self.config.engine.cookie_config().removal_cookie();
                crate::cookies::set(response.headers_mut(), &cookie);
            }
            Err(StoreError::TooLarge { size, limit }) => {
                // A programming error of the application, not an outage.
                tracing::error!(size, limit, "session data too large for a sealed cookie; answering 500");
                *response = crate::rejection::problem(
                    http::StatusCode::INTERNAL_SERVER_ERROR,
                    "session-too-large",
                    "Something went wrong",
                    "The session grew larger than a cookie can hold; nothing was saved.",
                    self.json(),
                );
            }
            Err(error) => {
                log_commit_failure(&error);
                *response = SessionUnavailable { json: self.json() }.into_response();
            }
        }
    }
}

fn log_commit_failure(error: &StoreError) {
    tracing::warn!(error = %error, "session store unavailable while saving a session; answering 503");
}

/// The client's device as the layer records it: the IP from [`ClientIp`]
/// (or the socket's peer address) and the `User-Agent` header.
pub fn client_device(extensions: &http::Extensions, headers: &HeaderMap) -> DeviceInfo {
    let ip = extensions
        .get::<ClientIp>()
        .map(|ip| ip.0)
        .or_else(|| extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()));
    let user_agent = headers.get(USER_AGENT).and_then(|v| v.to_str().ok());
    DeviceInfo::new(ip.map(|ip| ip.to_string()), user_agent)
}

/// The value of cookie `name` in the request. When several are sent (a
/// stale cookie for a parent domain, say), the first that `valid` accepts
/// wins, else the first of sane length; `valid` is only consulted then, so
/// the usual single cookie is not parsed twice (the engine parses it).
pub(crate) fn find_cookie(headers: &HeaderMap, name: &str, valid: impl Fn(&str) -> bool) -> Option<String> {
    let mut values = crate::cookies::values(headers, name);
    let first = values.next()?;
    let Some(second) = values.next() else {
        return (first.len() <= MAX_COOKIE_VALUE).then(|| first.to_owned());
    };
    let mut fallback = None;
    for value in [first, second].into_iter().chain(values) {
        if valid(value) {
            return Some(value.to_owned());
        }
        if fallback.is_none() && value.len() <= MAX_COOKIE_VALUE {
            fallback = Some(value);
        }
    }
    fallback.map(str::to_owned)
}

/// Longest cookie value worth reading: browsers keep at most 4096 bytes.
const MAX_COOKIE_VALUE: usize = 4096;

impl<S> Service<Request> for SessionService<S>
where
    S: Service<Request, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let headers = request.headers();
        let cookie_value =
            find_cookie(headers, &self.config.session_cookie, |v| tessera::SessionId::parse(v).is_some());
        let pre_session_secret = find_cookie(headers, &self.config.pre_session_cookie, crate::csrf::valid_secret);
        let ip = request
            .extensions()
            .get::<ClientIp>()
            .map(|ip| ip.0)
            .or_else(|| request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()));
        let slot = Arc::new(SessionSlot {
            config: self.config.clone(),
            cookie_value,
            client_ip: ip,
            user_agent: headers.get(USER_AGENT).cloned(),
            session: OnceCell::new(),
            accept: headers.get(ACCEPT).cloned(),
            content_type: headers.get(CONTENT_TYPE).cloned(),
            pre_session_secret,
            minted_pre_session_secret: Mutex::new(None),
        });
        request.extensions_mut().insert(slot.clone());
        // Called here, on the service that was driven to readiness, rather
        // than on a clone inside the future: nothing has to happen before
        // the inner service starts, and a clone per request is a deep copy
        // of the stack below when that is an axum `Route`.
        let inner = self.inner.call(request);
        Box::pin(async move {
            let mut response = inner.await?;
            slot.finish(&mut response).await;
            Ok(response)
        })
    }
}
