//! Assembling the server: configuration, shared state, routes, layers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{middleware, Router};
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use tessera::password::PasswordHasher;
use tessera::{Clock, CookieConfig, ExpiryPolicy, SameSite, SessionEngine, SessionStore, SystemClock};
use tessera_axum::{CsrfKey, SessionLayer};
use tessera_store_cookie::{CookieSealer, SealingKey};
use tokio::net::TcpListener;
use tower_http::limit::RequestBodyLimitLayer;

use crate::accounts::Accounts;
use crate::activity_stats::ActivityStats;
use crate::database::{Database, DatabaseError};
use crate::error_pages::{not_found, render_errors};
use crate::health;
use crate::metrics::{MeteredStore, MetricsSource};
use crate::pages::{home, login, logout, profile, register};
use crate::password_policy::PasswordPolicy;
use crate::request_id::{self, TrustedProxies};
use crate::security_headers;
use crate::session_store::{self, SessionStoreUrlError};
use crate::session_store::{ActiveCounter, Closer, OpenedStore};
use crate::settings::{IpRange, SameSiteSetting, Settings};

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
    /// Whose `x-request-id` header is believed.
    pub trusted_proxies: Vec<IpRange>,
    /// Also answer `GET /metrics` on the public listener.
    pub metrics_on_public_listener: bool,
    /// How long in-flight requests may take to finish after the shutdown
    /// signal.
    pub shutdown_timeout: Duration,
    /// How often hourly activity counters are written.
    pub stats_flush_interval: Duration,
    /// How often live sessions are counted (where cheap) for metrics.
    pub active_sessions_interval: Duration,
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
            trusted_proxies: Vec::new(),
            metrics_on_public_listener: false,
            shutdown_timeout: Duration::from_secs(30),
            stats_flush_interval: Duration::from_secs(10),
            active_sessions_interval: Duration::from_secs(30),
        }
    }
}

impl AppConfig {
    /// The server configuration described by `settings`.
    pub fn from_settings(settings: &Settings) -> Result<AppConfig, String> {
        let params = settings.argon2_params()?;
        let mut config = AppConfig {
            database_url: settings.database.url.clone(),
            session_store_url: Some(settings.sessions.store.clone()).filter(|s| !s.is_empty()),
            expiry: ExpiryPolicy::new(settings.sessions.idle_timeout, settings.sessions.absolute_timeout),
            store_timeout: settings.sessions.store_timeout,
            hasher: PasswordHasher::with_params(params),
            password_policy: PasswordPolicy { min_chars: settings.passwords.min_chars },
            purge_interval: settings.sessions.purge_interval,
            max_body_bytes: settings.server.max_body_bytes,
            trusted_proxies: settings.trusted_proxies(),
            metrics_on_public_listener: settings.metrics.enabled && settings.metrics.on_public_listener,
            shutdown_timeout: settings.server.shutdown_timeout,
            stats_flush_interval: settings.stats.flush_interval,
            ..AppConfig::default()
        };
        config.cookie.secure = settings.cookie.secure;
        config.cookie.same_site = match settings.cookie.same_site {
            SameSiteSetting::Lax => SameSite::Lax,
            SameSiteSetting::Strict => SameSite::Strict,
        };
        Ok(config)
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
    /// Hourly activity counters.
    pub activity: ActivityStats,
    /// What `/metrics` renders.
    pub metrics: MetricsSource,
}

/// A built server, ready to serve.
pub struct App {
    /// The routes and layers.
    pub router: Router,
    /// The shared state.
    pub state: AppState,
    /// The session store underneath the engine (server-side stores only).
    pub store: Option<OpenedStore>,
    background: Vec<tokio::task::JoinHandle<()>>,
    close_store: Option<Closer>,
    shutdown_timeout: Duration,
}

/// The database and the session engine, opened from a configuration: what
/// the server and the admin commands share.
#[derive(Clone)]
pub struct Backends {
    /// Users and secrets.
    pub db: Database,
    /// Sessions (through the metered store, for server-side stores).
    pub engine: SessionEngine,
    /// The store underneath, when sessions are server-side.
    pub store: Option<OpenedStore>,
}

impl Backends {
    /// Opens the database and the session store of `config`; counts created
    /// sessions into `activity`.
    pub async fn open(config: &AppConfig, activity: Option<ActivityStats>) -> Result<Backends, StartupError> {
        let database_error =
            |source| StartupError::Database { url: session_store::mask_url(&config.database_url), source };
        let db = Database::connect(&config.database_url).await.map_err(database_error)?;
        let store_url = config.session_store_url.clone().unwrap_or_else(|| config.database_url.clone());
        let (engine, store) = match &config.session_store {
            Some(store) => {
                let metered = MeteredStore::new(store.clone(), "custom", activity);
                (SessionEngine::new(Arc::new(metered)), None)
            }
            None if store_url.starts_with("cookie:") => {
                // Sessions sealed in the cookie; keys and revocation marks in the database.
                let keys = db.cookie_sealing_keys().await.map_err(database_error)?;
                let keys = keys.into_iter().map(|(id, bytes)| SealingKey::from_bytes(id, bytes)).collect();
                let sealer = CookieSealer::new(&config.cookie.cookie_name(), keys)
                    .map_err(|e| SessionStoreUrlError::Unreachable { url: store_url.clone(), reason: e.to_string() })?;
                (SessionEngine::sealed(Arc::new(sealer), Arc::new(db.clone())), None)
            }
            None => {
                let opened = session_store::open_store(&store_url).await?;
                let metered = MeteredStore::new(opened.store.clone(), opened.kind, activity);
                (SessionEngine::new(Arc::new(metered)), Some(opened))
            }
        };
        let engine = engine
            .with_expiry(config.expiry)
            .with_cookie(config.cookie.clone())
            .with_clock(config.clock.clone())
            .with_store_timeout(config.store_timeout);
        Ok(Backends { db, engine, store })
    }

    /// Closes the database and the store's pool.
    pub async fn close(&self) {
        if let Some(close) = self.store.as_ref().and_then(|s| s.close.clone()) {
            close().await;
        }
        self.db.close().await;
    }
}

impl App {
    /// Opens the database and the session store and builds the routes.
    pub async fn build(config: AppConfig) -> Result<App, StartupError> {
        let activity = ActivityStats::new(config.clock.clone());
        let backends = Backends::open(&config, Some(activity.clone())).await?;
        let db = backends.db.clone();
        let engine = backends.engine.clone();
        let csrf_secret = db
            .secret("csrf")
            .await
            .map_err(|source| StartupError::Database { url: session_store::mask_url(&config.database_url), source })?;
        let accounts = Accounts::new(db.clone(), config.hasher.clone(), config.password_policy, config.clock.clone());
        let state = AppState {
            accounts,
            engine: engine.clone(),
            password_policy: config.password_policy,
            store_timeout: config.store_timeout,
            activity: activity.clone(),
            metrics: MetricsSource::new(config.hasher.clone()),
        };
        let router =
            routes(&config, state.clone(), SessionLayer::new(engine.clone(), CsrfKey::from_bytes(csrf_secret)));
        let mut background = vec![
            tokio::spawn(purge_periodically(engine, config.purge_interval)),
            tokio::spawn(activity.clone().flush_periodically(db, config.stats_flush_interval)),
            tokio::spawn(crate::metrics::upkeep_periodically(Duration::from_secs(5))),
        ];
        if let Some(opened) = &backends.store {
            if let Some(counter) = opened.active.clone() {
                background.push(tokio::spawn(count_active_periodically(
                    counter,
                    opened.kind,
                    activity,
                    config.active_sessions_interval,
                )));
            }
        }
        let close_store = backends.store.as_ref().and_then(|s| s.close.clone());
        Ok(App {
            router,
            state,
            store: backends.store.clone(),
            background,
            close_store,
            shutdown_timeout: config.shutdown_timeout,
        })
    }

    /// Serves on `listener` until `shutdown` completes; then stops accepting,
    /// lets in-flight requests finish (their session writes included) for at
    /// most the shutdown time-out, writes pending activity counters and
    /// closes the store's and the database's pools.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let (signalled_tx, mut signalled_rx) = tokio::sync::watch::channel(false);
        let graceful = {
            let mut rx = signalled_tx.subscribe();
            async move {
                let _ = rx.wait_for(|s| *s).await;
            }
        };
        tokio::spawn(async move {
            shutdown.await;
            let _ = signalled_tx.send(true);
        });
        let service = self.router.into_make_service_with_connect_info::<SocketAddr>();
        let server = axum::serve(listener, service).with_graceful_shutdown(graceful);
        let deadline = self.shutdown_timeout;
        let overdue = async move {
            let _ = signalled_rx.wait_for(|s| *s).await;
            tracing::info!(deadline = ?deadline, "shutting down: no new connections; finishing in-flight requests");
            tokio::time::sleep(deadline).await;
        };
        let result = tokio::select! {
            result = server => result,
            _ = overdue => {
                tracing::warn!("in-flight requests did not finish within the shutdown time-out; stopping anyway");
                Ok(())
            }
        };
        for task in &self.background {
            task.abort();
        }
        let db = self.state.accounts.database().clone();
        if let Err(error) = self.state.activity.flush(&db).await {
            tracing::warn!(%error, "writing activity stats at shutdown failed");
        }
        if let Some(close) = &self.close_store {
            close().await;
        }
        db.close().await;
        result
    }
}

fn routes(config: &AppConfig, state: AppState, sessions: SessionLayer) -> Router {
    let mut pages = Router::new()
        .route("/", get(home::show))
        .route("/register", get(register::show).post(register::submit))
        .route("/login", get(login::show).post(login::submit))
        .route("/profile", get(profile::show))
        .route("/logout", post(logout::submit));
    if config.test_routes {
        pages = pages.route("/__test/panic", get(|| async { panic!("test panic") as &'static str }));
    }
    let mut router = pages
        .fallback(not_found)
        .layer(sessions)
        // Probes and static files never touch the session.
        .route("/healthz", get(health::live))
        .route("/readyz", get(health::ready))
        .route("/static/style.css", get(stylesheet));
    if config.metrics_on_public_listener {
        let source = state.metrics.clone();
        router = router.route("/metrics", get(move || async move { crate::metrics::endpoint(State(source)).await }));
    }
    let mut router = router
        .layer(middleware::from_fn_with_state(state.clone(), render_errors))
        .layer(RequestBodyLimitLayer::new(config.max_body_bytes));
    for layer in security_headers::layers() {
        router = router.layer(layer);
    }
    router
        .layer(middleware::from_fn(crate::metrics::track))
        .layer(middleware::from_fn_with_state(
            TrustedProxies(Arc::new(config.trusted_proxies.clone())),
            request_id::assign,
        ))
        .with_state(state)
}

async fn stylesheet() -> impl IntoResponse {
    (
        [(CONTENT_TYPE, "text/css; charset=utf-8"), (CACHE_CONTROL, "public, max-age=3600")],
        include_str!("../static/style.css"),
    )
}

async fn count_active_periodically(
    counter: ActiveCounter,
    kind: &'static str,
    activity: ActivityStats,
    every: Duration,
) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        match tokio::time::timeout(Duration::from_secs(10), counter()).await {
            Ok(Ok(count)) => {
                crate::metrics::set_active_sessions(kind, count);
                activity.active_sessions(count);
            }
            Ok(Err(error)) => tracing::debug!(%error, "counting active sessions failed"),
            Err(_) => tracing::debug!("counting active sessions timed out"),
        }
    }
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
