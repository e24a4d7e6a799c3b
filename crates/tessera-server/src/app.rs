//! Assembling the server: configuration, shared state, routes, layers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{middleware, Router};
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use tessera::password::PasswordHasher;
use tessera::{Clock, CookieConfig, ExpiryPolicy, SessionEngine, SessionStore, SystemClock};
use tessera_axum::{CsrfKey, SessionLayer};
use tessera_token::TokenSettings;
use tokio::net::TcpListener;
use tower_http::limit::RequestBodyLimitLayer;

use crate::accounts::Accounts;
use crate::api;
use crate::api::tokens::TokenService;
use crate::database::{Database, DatabaseError};
use crate::error_pages::{not_found, render_errors};
use crate::health;
use crate::pages::{home, login, logout, profile, register};
use crate::password_policy::PasswordPolicy;
use crate::security_headers;
use crate::session_store::{self, SessionStoreUrlError};

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
    /// The clock (expiry, timestamps).
    pub clock: Arc<dyn Clock>,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
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
        let store = match &config.session_store {
            Some(store) => store.clone(),
            None => {
                let url = config.session_store_url.clone().unwrap_or_else(|| config.database_url.clone());
                session_store::open(&url).await?
            }
        };
        let csrf_secret = db
            .secret("csrf")
            .await
            .map_err(|source| StartupError::Database { url: session_store::mask_url(&config.database_url), source })?;
        let engine = SessionEngine::new(store)
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
        .route("/static/style.css", get(stylesheet))
        // The limit sits inside render_errors so its 413 becomes a page or
        // a problem document like every other error.
        .layer(RequestBodyLimitLayer::new(config.max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), render_errors));
    for layer in security_headers::layers() {
        router = router.layer(layer);
    }
    router.with_state(state)
}

async fn stylesheet() -> impl IntoResponse {
    (
        [(CONTENT_TYPE, "text/css; charset=utf-8"), (CACHE_CONTROL, "public, max-age=3600")],
        include_str!("../static/style.css"),
    )
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
