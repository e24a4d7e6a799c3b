//! Assembling the server: configuration, shared state, routes, layers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, post};
use axum::{middleware, Router};
use tessera::password::PasswordHasher;
use tessera::{Clock, CookieConfig, ExpiryPolicy, SessionEngine, SessionStore, SystemClock};
use tessera_axum::{CsrfKey, SessionLayer};
use tessera_store_cookie::{CookieSealer, SealingKey};
use tessera_token::TokenSettings;
use tokio::net::TcpListener;
use tower_http::limit::RequestBodyLimitLayer;

use crate::accounts::Accounts;
use crate::api;
use crate::api::tokens::TokenService;
use crate::database::{Database, DatabaseError};
use crate::error_pages::{not_found, render_errors};
use crate::health;
use crate::pages::{
    account, account_activity, account_password, account_sessions, home, login, logout, profile, register,
};
use crate::password_policy::PasswordPolicy;
use crate::security_headers;
use crate::session_store::{self, SessionStoreUrlError};
use crate::static_files;

/// Everything the server can be told.
#[derive(Clone)]
pub struct AppConfig {
    /// Users and secrets: `sqlite://FILE` or `postgres://…`.
    pub database_url: String,
    /// Sessions; `None` means the database.
    pub session_store_url: Option<String>,
    /// An already opened store, used instead of `session_store_url` (lets
    /// several in-process instances share one memory store in tests).
    pub session_store: Option<Arc<dyn SessionStore>>,
    /// Idle and absolute time-outs.
    pub expiry: ExpiryPolicy,
    /// Cookie attributes.
    pub cookie: CookieConfig,
    /// Bound on every session store call.
    pub store_timeout: Duration,
    /// The clock (tests drive a manual one).
    pub clock: Arc<dyn Clock>,
    /// Password hashing (tests use cheap parameters).
    pub hasher: PasswordHasher,
    /// Password rules.
    pub password_policy: PasswordPolicy,
    /// How often expired sessions are purged from stores without native expiry.
    pub purge_interval: Duration,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// How long after typing a password sensitive actions need no re-entry.
    pub reauth_window: Duration,
    /// Send `Strict-Transport-Security` (on when serving TLS, or when a
    /// TLS-terminating proxy is in front).
    pub hsts: bool,
    /// Adds `/__test/panic`, for the tests of the 500 page only.
    pub test_routes: bool,
    /// Access tokens: issuer, audience, lifetime (default 15 minutes).
    pub tokens: TokenSettings,
    /// How long an unused refresh token stays valid.
    pub refresh_token_ttl: Duration,
}

impl Default for AppConfig {
    fn default() -> Self {
        AppConfig {
            database_url: "sqlite://tessera.db".to_owned(),
            session_store_url: None,
            session_store: None,
            expiry: ExpiryPolicy::default(),
            cookie: CookieConfig::default(),
            store_timeout: Duration::from_secs(3),
            clock: Arc::new(SystemClock),
            hasher: PasswordHasher::new(),
            password_policy: PasswordPolicy::default(),
            purge_interval: Duration::from_secs(60),
            max_body_bytes: 64 * 1024,
            reauth_window: Duration::from_secs(10 * 60),
            hsts: false,
            test_routes: false,
            tokens: TokenSettings::new("tessera", "tessera-api"),
            refresh_token_ttl: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The database could not be opened.
    #[error("--database {url:?}: {source}")]
    Database {
        /// The URL, password masked.
        url: String,
        /// What went wrong.
        source: DatabaseError,
    },
    /// The session store could not be opened.
    #[error(transparent)]
    SessionStore(#[from] SessionStoreUrlError),
    /// The listen address could not be bound.
    #[error("--listen {address}: {source}")]
    Listen {
        /// The address.
        address: String,
        /// What went wrong.
        source: std::io::Error,
    },
}

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    /// Users.
    pub accounts: Accounts,
    /// Sessions.
    pub engine: SessionEngine,
    /// Password rules, for forms.
    pub password_policy: PasswordPolicy,
    /// Bound on dependency calls in probes.
    pub store_timeout: Duration,
    /// Access and refresh tokens for the API.
    pub tokens: Arc<TokenService>,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// See [`AppConfig::reauth_window`].
    pub reauth_window: Duration,
}

impl AppState {
    /// Revokes every API refresh-token family of the user (password change,
    /// account deletion, log out everywhere). Access tokens already issued
    /// expire on their own within their lifetime (15 minutes by default).
    pub async fn revoke_api_tokens(&self, user_id: i64) -> Result<(), crate::database::DatabaseError> {
        self.tokens.revoke_all_refresh_families(user_id).await.map(|_| ())
    }
}

/// A built server, ready to serve.
pub struct App {
    /// The routes and layers.
    pub router: Router,
    /// The shared state.
    pub state: AppState,
    purge_task: tokio::task::JoinHandle<()>,
}

impl App {
    /// Opens the database and the session store and builds the routes.
    pub async fn build(config: AppConfig) -> Result<App, StartupError> {
        let db = Database::connect(&config.database_url)
            .await
            .map_err(|source| StartupError::Database { url: session_store::mask_url(&config.database_url), source })?;
        let database_error =
            |source| StartupError::Database { url: session_store::mask_url(&config.database_url), source };
        let store_url = config.session_store_url.clone().unwrap_or_else(|| config.database_url.clone());
        let engine = match &config.session_store {
            Some(store) => SessionEngine::new(store.clone()),
            None if store_url.starts_with("cookie:") => {
                // Sessions sealed in the cookie; keys and revocation marks in the database.
                let keys = db.cookie_sealing_keys().await.map_err(database_error)?;
                let keys = keys.into_iter().map(|(id, bytes)| SealingKey::from_bytes(id, bytes)).collect();
                let sealer = CookieSealer::new(&config.cookie.cookie_name(), keys)
                    .map_err(|e| SessionStoreUrlError::Unreachable { url: store_url.clone(), reason: e.to_string() })?;
                SessionEngine::sealed(Arc::new(sealer), Arc::new(db.clone()))
            }
            None => SessionEngine::new(session_store::open(&store_url).await?),
        };
        let csrf_secret = db.secret("csrf").await.map_err(database_error)?;
        let engine = engine
            .with_expiry(config.expiry)
            .with_cookie(config.cookie.clone())
            .with_clock(config.clock.clone())
            .with_store_timeout(config.store_timeout);
        let tokens =
            TokenService::open(db.clone(), config.clock.clone(), config.tokens.clone(), config.refresh_token_ttl)
                .await
                .map_err(|source| StartupError::Database {
                    url: session_store::mask_url(&config.database_url),
                    source,
                })?;
        let accounts = Accounts::new(db, config.hasher.clone(), config.password_policy, config.clock.clone());
        let state = AppState {
            accounts,
            engine: engine.clone(),
            password_policy: config.password_policy,
            store_timeout: config.store_timeout,
            tokens: Arc::new(tokens),
            clock: config.clock.clone(),
            max_body_bytes: config.max_body_bytes,
            reauth_window: config.reauth_window,
        };
        let router =
            routes(&config, state.clone(), SessionLayer::new(engine.clone(), CsrfKey::from_bytes(csrf_secret)));
        let purge_task = tokio::spawn(purge_periodically(engine, config.purge_interval));
        Ok(App { router, state, purge_task })
    }

    /// Serves on `listener` until `shutdown` completes, then finishes
    /// in-flight requests and closes the database.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        self.serve_on(listener, shutdown).await
    }

    /// Serves TLS on `listener` with `tls` (see [`crate::tls`]).
    pub async fn serve_tls(
        self,
        listener: TcpListener,
        tls: Arc<rustls::ServerConfig>,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        // `tap_io` gives the listener axum's `ConnectInfo<SocketAddr>` support.
        let listener = axum::serve::ListenerExt::tap_io(crate::tls::TlsListener::new(listener, tls)?, |_| {});
        self.serve_on(listener, shutdown).await
    }

    async fn serve_on<L>(
        self,
        listener: L,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()>
    where
        L: axum::serve::Listener<Addr = SocketAddr>,
        SocketAddr: for<'a> axum::extract::connect_info::Connected<axum::serve::IncomingStream<'a, L>>,
    {
        let service = self.router.into_make_service_with_connect_info::<SocketAddr>();
        let result = axum::serve(listener, service).with_graceful_shutdown(shutdown).await;
        self.purge_task.abort();
        self.state.accounts.database().close().await;
        result
    }
}

fn routes(config: &AppConfig, state: AppState, sessions: SessionLayer) -> Router {
    let mut pages = Router::new()
        .route("/", get(home::show))
        .route("/register", get(register::show).post(register::submit))
        .route("/login", get(login::show).post(login::submit))
        .route("/profile", get(profile::show))
        .route("/logout", post(logout::submit))
        .route("/account", get(account::show))
        .route("/account/delete", post(account::delete))
        .route("/account/sessions", get(account_sessions::show))
        .route("/account/sessions/revoke", post(account_sessions::revoke))
        .route("/account/password", get(account_password::show).post(account_password::submit))
        .route("/account/activity", get(account_activity::show))
        .merge(api::router());
    if config.test_routes {
        pages = pages.route("/__test/panic", get(|| async { panic!("test panic") as &'static str }));
    }
    let mut router = pages
        .fallback(not_found)
        .layer(sessions)
        // Probes and static files never touch the session.
        .route("/healthz", get(health::live))
        .route("/readyz", get(health::ready))
        .merge(static_files::routes())
        // The limit sits inside render_errors so its 413 becomes a page or
        // a problem document like every other error.
        .layer(RequestBodyLimitLayer::new(config.max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), render_errors));
    for layer in security_headers::layers() {
        router = router.layer(layer);
    }
    if config.hsts {
        router = router.layer(security_headers::hsts());
    }
    router.with_state(state)
}

async fn purge_periodically(engine: SessionEngine, every: Duration) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        match engine.purge_expired().await {
            Ok(0) => {}
            Ok(purged) => tracing::debug!(purged, "purged expired sessions"),
            Err(error) => tracing::warn!(%error, "purging expired sessions failed"),
        }
    }
}
