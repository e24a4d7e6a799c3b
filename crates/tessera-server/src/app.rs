//! Assembling the server: configuration, shared state, routes, layers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::routing::{get, post};
use axum::{middleware, Router};
use tessera::password::PasswordHasher;
use tessera::{Clock, CookieConfig, ExpiryPolicy, SameSite, SessionEngine, SessionStore, SystemClock};
use tessera_axum::{CsrfKey, SessionLayer};
use tessera_store_cookie::{CookieSealer, SealingKey};
use tessera_token::TokenSettings;
use tokio::net::TcpListener;
use tower_http::limit::RequestBodyLimitLayer;

use crate::activity_stats::ActivityStats;
use crate::api;
use crate::api::tokens::TokenService;
use crate::auth_events::{EndEverything, ServerEvents};
use crate::client_ip::{set_client_ip, TrustedProxies};
use crate::database::{Database, DatabaseError};
use crate::error_pages::{not_found, render_errors};
use crate::forward_auth::{self, ForwardAuthConfig};
use crate::health;
use crate::mail::messages::Site;
use crate::mail::worker::Worker;
use crate::mail::{EmailPages, EmailPolicy, MailConfig, MailOutbox, SmtpConfig, Transport};
use crate::metrics::{MeteredStore, MetricsSource};
use crate::oidc::{self, Oidc, OidcProviderConfig};
use crate::pages::{
    account, account_activity, account_password, account_sessions, account_two_factor, email, home, login,
    login_second_factor, logout, profile, register,
};
use crate::registration_policy::RegistrationPolicy;
use crate::request_id;
use crate::security_headers;
use crate::session_store::{self, SessionStoreUrlError};
use crate::session_store::{ActiveCounter, Closer, OpenedStore};
use crate::settings::{SameSiteSetting, Settings};
use crate::static_files;
use tessera_auth::email_address::EmailAddresses;
use tessera_auth::email_token::EmailTokens;
use tessera_auth::password_policy::PasswordPolicy;
use tessera_auth::throttle::{Throttle, ThrottleConfig};
use tessera_auth::{Accounts, Authenticator, Email, SecondFactors};

/// Everything the server can be told, in the form the code uses. The
/// binary derives it solely from [`Settings`] ([`AppConfig::from_settings`]);
/// tests build it directly, and only tests set the fields that are no
/// setting (`session_store`, `clock`, `test_routes`).
#[derive(Clone)]
pub struct AppConfig {
    /// Users and secrets: `sqlite://FILE` or `postgres://…`.
    pub database_url: String,
    /// Bound on every query to the users database.
    pub database_query_timeout: Duration,
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
    /// Password rules (`--min-password-length` sets `min_chars`).
    pub password_policy: PasswordPolicy,
    /// Failed-login throttling.
    pub throttle: ThrottleConfig,
    /// Proxies whose `X-Forwarded-For` is believed (`--trusted-proxy`).
    pub trusted_proxies: TrustedProxies,
    /// How often expired sessions are purged from stores without native expiry.
    pub purge_interval: Duration,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// How long after typing a password sensitive actions need no re-entry.
    pub reauth_window: Duration,
    /// Every login must pass two-step verification (`passwords.require_second_factor`).
    pub require_second_factor: bool,
    /// Send `Strict-Transport-Security` (on when serving TLS, or when a
    /// TLS-terminating proxy is in front).
    pub hsts: bool,
    /// Adds `/__test/panic`, for the tests of the 500 page only.
    pub test_routes: bool,
    /// Also answer `GET /metrics` on the public listener.
    pub metrics_on_public_listener: bool,
    /// How long in-flight requests may take to finish after the shutdown
    /// signal.
    pub shutdown_timeout: Duration,
    /// How often hourly activity counters are written.
    pub stats_flush_interval: Duration,
    /// How often live sessions are counted (where cheap) for metrics.
    pub active_sessions_interval: Duration,
    /// Access tokens: issuer, audience, lifetime (default 15 minutes).
    pub tokens: TokenSettings,
    /// How long an unused refresh token stays valid.
    pub refresh_token_ttl: Duration,
    /// Longest a refresh family (one sign-in) lives, however often it is
    /// refreshed; 30 days by default (ASVS 7.3.2).
    pub refresh_family_lifetime: Duration,
    /// The address browsers use for tessera (`https://auth.example.com`):
    /// OpenID Connect callbacks and forward-auth login redirects.
    pub public_url: Option<String>,
    /// OpenID Connect providers users can log in with.
    pub oidc_providers: Vec<OidcProviderConfig>,
    /// Shortest time between two JWKS fetches caused by an unknown signing key.
    pub oidc_jwks_min_refresh: Duration,
    /// `/auth/verify` for reverse proxies.
    pub forward_auth: ForwardAuthConfig,
    /// How long audit events are kept (`audit.retention`); older ones are
    /// purged every `purge_interval`.
    pub audit_retention: Duration,
    /// Who may create an account (`accounts.registration`).
    pub registration: RegistrationPolicy,
    /// Mail and `accounts.email`.
    pub mail: MailConfig,
}

impl Default for AppConfig {
    /// The configuration of [`Settings::default`]: one set of defaults,
    /// the one documented in `docs/configuration.md`.
    fn default() -> Self {
        // Proven by `default_settings_make_the_default_config`: the default
        // settings hold valid argon2 parameters and no forward-auth headers.
        AppConfig::from_settings(&Settings::default()).expect("the default settings are valid")
    }
}

impl AppConfig {
    /// The server configuration described by `settings`.
    pub fn from_settings(settings: &Settings) -> Result<AppConfig, String> {
        let params = settings.argon2_params()?;
        // One list of trusted proxies: client addresses, forward-auth
        // headers and request IDs.
        let proxies = settings.trusted_proxy_networks();
        let mut forward_auth = ForwardAuthConfig { trusted_proxies: proxies.clone(), ..ForwardAuthConfig::default() };
        forward_auth.protected_hosts = settings.forward_auth.protected_hosts.clone();
        forward_auth.rules = settings.forward_auth.rules.clone();
        for header in &settings.forward_auth.headers {
            let header =
                forward_auth::parse_forward_header(header).map_err(|e| format!("forward_auth.headers: {e}"))?;
            forward_auth.headers.push(header);
        }
        // RFC 9068: `iss` is the server's URL, `client_id` the API's own
        // first-party client, `scope` the whole API (there are no others).
        let mut tokens = TokenSettings::new(settings.token_issuer(), crate::api::tokens::AUDIENCE);
        tokens.client_id = crate::api::tokens::CLIENT_ID.into();
        tokens.access_ttl = settings.tokens.access_ttl;
        let throttle = ThrottleConfig {
            account_free_failures: settings.throttle.account_free_failures,
            ip_free_failures: settings.throttle.ip_free_failures,
            base_delay: settings.throttle.base_delay,
            max_delay: settings.throttle.max_delay,
            quiet_period: settings.throttle.quiet_period,
        };
        // Every field is named (no `..AppConfig::default()`, which is built
        // from this function): the settings, and the few things only code sets.
        let mut config = AppConfig {
            database_url: settings.database.url.clone(),
            database_query_timeout: settings.database.query_timeout,
            session_store_url: Some(settings.sessions.store.clone()).filter(|s| !s.is_empty()),
            expiry: ExpiryPolicy::new(settings.sessions.idle_timeout, settings.sessions.absolute_timeout),
            store_timeout: settings.sessions.store_timeout,
            hasher: PasswordHasher::with_params(params),
            password_policy: PasswordPolicy::new(settings.passwords.min_chars),
            purge_interval: settings.sessions.purge_interval,
            max_body_bytes: settings.server.max_body_bytes,
            trusted_proxies: TrustedProxies::new(proxies),
            metrics_on_public_listener: settings.metrics.enabled && settings.metrics.on_public_listener,
            shutdown_timeout: settings.server.shutdown_timeout,
            stats_flush_interval: settings.stats.flush_interval,
            active_sessions_interval: settings.metrics.active_sessions_interval,
            throttle,
            reauth_window: settings.sessions.reauth_window,
            require_second_factor: settings.passwords.require_second_factor,
            // With built-in TLS, HSTS is always on.
            hsts: settings.tls.hsts || !settings.tls.cert.is_empty(),
            tokens,
            refresh_token_ttl: settings.tokens.refresh_ttl,
            refresh_family_lifetime: settings.tokens.refresh_family_lifetime,
            public_url: Some(settings.server.public_url.clone()).filter(|u| !u.is_empty()),
            oidc_providers: settings.oidc.providers.iter().map(|p| p.to_config()).collect(),
            oidc_jwks_min_refresh: settings.oidc.jwks_min_refresh,
            forward_auth,
            audit_retention: settings.audit.retention,
            registration: settings.accounts.registration,
            mail: mail_config(settings),
            session_store: None,
            cookie: CookieConfig::default(),
            clock: Arc::new(SystemClock),
            test_routes: false,
        };
        config.cookie.domain = Some(settings.cookie.domain.clone()).filter(|d| !d.is_empty());
        config.cookie.secure = settings.cookie.secure;
        config.cookie.same_site = match settings.cookie.same_site {
            SameSiteSetting::Lax => SameSite::Lax,
            SameSiteSetting::Strict => SameSite::Strict,
        };
        Ok(config)
    }
}

/// The mail configuration of `settings`.
fn mail_config(settings: &Settings) -> MailConfig {
    let mail = &settings.mail;
    let smtp = (!mail.smtp_host.is_empty()).then(|| SmtpConfig {
        host: mail.smtp_host.clone(),
        port: mail.smtp_port,
        security: mail.smtp_security,
        credentials: (!mail.smtp_username.is_empty()).then(|| (mail.smtp_username.clone(), mail.smtp_password.clone())),
        timeout: mail.smtp_timeout,
    });
    MailConfig {
        smtp,
        eml_dir: mail.eml_dir.clone().into(),
        from: mail.from.clone(),
        site_name: mail.site_name.clone(),
        poll_interval: mail.poll_interval,
        max_attempts: mail.max_attempts,
        verify_lifetime: mail.verify_lifetime,
        policy: settings.accounts.email,
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
    /// The OpenID Connect configuration is unusable.
    #[error("OpenID Connect: {0}")]
    Oidc(String),
    /// The mail configuration is unusable.
    #[error("mail: {0}")]
    Mail(String),
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
    /// The authentication core: every way in, accounts, second factors.
    pub auth: Authenticator,
    /// The server's tables (tokens, audit, identities, products).
    pub db: Database,
    /// The audit trail for account events that are no login step.
    pub events: ServerEvents,
    /// Sessions.
    pub engine: SessionEngine,
    /// Bound on dependency calls in probes.
    pub store_timeout: Duration,
    /// Hourly activity counters.
    pub activity: ActivityStats,
    /// What `/metrics` renders.
    pub metrics: MetricsSource,
    /// Access and refresh tokens for the API.
    pub tokens: Arc<TokenService>,
    /// OpenID Connect providers.
    pub oidc: Arc<Oidc>,
    /// Forward-auth settings (also used for the login page's `next`).
    pub forward_auth: Arc<ForwardAuthConfig>,
    /// The public base URL, if configured.
    pub public_url: Option<String>,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// See [`AppConfig::reauth_window`].
    pub reauth_window: Duration,
    /// See [`AppConfig::registration`].
    pub registration: RegistrationPolicy,
    /// Whether accounts have email addresses.
    pub email: EmailPages,
}

// Handlers extract only what they use (see the server code shape in the
// working rules); the lead's `state.rs` derives these for every field.
impl axum::extract::FromRef<AppState> for Authenticator {
    fn from_ref(state: &AppState) -> Self {
        state.auth.clone()
    }
}

impl axum::extract::FromRef<AppState> for EmailPages {
    fn from_ref(state: &AppState) -> Self {
        state.email
    }
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
        let db = Database::connect_with_timeout(&config.database_url, config.database_query_timeout)
            .await
            .map_err(database_error)?;
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
                let sealer = CookieSealer::new(&config.cookie.cookie_name(), keys).map_err(|e| {
                    SessionStoreUrlError::Unreachable {
                        url: session_store::mask_url(&store_url),
                        reason: e.to_string(),
                    }
                })?;
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

    /// The authentication core over these backends, as configured; its
    /// events go to `events`, and account changes end sessions in this
    /// engine and tokens in this database.
    pub async fn authenticator(
        &self,
        config: &AppConfig,
        events: ServerEvents,
    ) -> Result<Authenticator, DatabaseError> {
        let device_secret = self.db.secret("device-cookie").await?;
        let throttle = Throttle::new(self.db.pool.clone(), config.throttle, config.clock.clone(), device_secret);
        let accounts = Accounts::new(
            Arc::new(self.db.users()),
            config.hasher.clone(),
            config.password_policy,
            config.clock.clone(),
        );
        let second_factors = SecondFactors::new(self.db.pool.clone(), config.clock.clone());
        let revocation = EndEverything::new(self.engine.clone(), self.db.clone(), config.clock.clone());
        Ok(Authenticator::new(accounts, throttle, second_factors, Arc::new(events), config.clock.clone())
            .require_second_factor(config.require_second_factor)
            .with_revocation(Arc::new(revocation)))
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
        let database_error =
            |source| StartupError::Database { url: session_store::mask_url(&config.database_url), source };
        let csrf_secret = db.secret("csrf").await.map_err(database_error)?;
        let tokens =
            TokenService::open(db.clone(), config.clock.clone(), config.tokens.clone(), config.refresh_token_ttl)
                .await
                .map_err(|source| StartupError::Database {
                    url: session_store::mask_url(&config.database_url),
                    source,
                })?
                .with_family_lifetime(config.refresh_family_lifetime);
        let flow_secret = db.secret("oidc-flow").await.map_err(database_error)?;
        let oidc = Oidc::new(
            &config.oidc_providers,
            config.public_url.as_deref(),
            flow_secret,
            &config.cookie,
            config.clock.clone(),
            config.oidc_jwks_min_refresh,
        )
        .map_err(StartupError::Oidc)?;
        oidc.warm_up();
        let outbox = MailOutbox::new(db.pool.clone(), config.clock.clone());
        let email_on = config.mail.policy != EmailPolicy::Off;
        let mut events = ServerEvents::new(db.clone(), activity.clone());
        if email_on {
            events = events.with_mail(outbox.clone());
        }
        let mut auth = backends.authenticator(&config, events.clone()).await.map_err(database_error)?;
        if email_on {
            let code_key = db.secret("email-code").await.map_err(database_error)?;
            auth = auth.with_email(Email {
                addresses: EmailAddresses::new(db.pool.clone(), config.clock.clone()),
                tokens: EmailTokens::new(db.pool.clone(), config.clock.clone(), code_key),
                outbox: Arc::new(outbox.clone()),
                verify_lifetime: config.mail.verify_lifetime,
            });
        }
        let auth_throttle = auth.throttle().clone();
        let state = AppState {
            auth,
            db: db.clone(),
            events,
            engine: engine.clone(),
            store_timeout: config.store_timeout,
            activity: activity.clone(),
            metrics: MetricsSource::new(config.hasher.clone()),
            tokens: Arc::new(tokens),
            oidc: Arc::new(oidc),
            forward_auth: Arc::new(config.forward_auth.clone()),
            public_url: config.public_url.clone(),
            clock: config.clock.clone(),
            max_body_bytes: config.max_body_bytes,
            reauth_window: config.reauth_window,
            registration: config.registration,
            email: EmailPages { policy: config.mail.policy },
        };
        if config.forward_auth.rules.is_empty() {
            tracing::info!("forward_auth.rules is empty: /auth/verify refuses every request (default deny)");
        }
        // Behind a proxy that does not pass the browser's Host on, forms
        // come from the public URL's origin.
        let sessions = SessionLayer::new(engine.clone(), CsrfKey::from_bytes(csrf_secret))
            .with_allowed_origins(config.public_url.iter());
        let router = routes(&config, state.clone(), sessions);
        let mut background = vec![
            tokio::spawn(purge_periodically(
                engine,
                auth_throttle,
                AuditPurge { db: db.clone(), retention: config.audit_retention, clock: config.clock.clone() },
                config.purge_interval,
            )),
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
        if email_on {
            background.push(tokio::spawn(mail_worker(&config, outbox, state.auth.clone())?.run()));
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
        let db = self.state.db.clone();
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
        .route("/login/second-factor", get(login_second_factor::show).post(login_second_factor::submit))
        .route("/profile", get(profile::show))
        .route("/logout", post(logout::submit))
        .route("/account", get(account::show))
        .route("/account/delete", post(account::delete))
        .route("/account/sessions", get(account_sessions::show))
        .route("/account/sessions/revoke", post(account_sessions::revoke))
        .route("/account/password", get(account_password::show).post(account_password::submit))
        .route("/account/activity", get(account_activity::show))
        .route("/account/two-factor", get(account_two_factor::show))
        .route("/account/two-factor/setup", post(account_two_factor::setup))
        .route("/account/two-factor/confirm", post(account_two_factor::confirm))
        .route("/account/two-factor/recovery-codes", post(account_two_factor::recovery_codes))
        .route("/account/two-factor/disable", post(account_two_factor::disable))
        .route("/account/identities/unlink", post(account::unlink))
        .route("/account/email", get(email::account).post(email::request_verification))
        .route("/account/email/code", post(email::confirm_code))
        .route("/email/verify", get(email::verify_form).post(email::verify))
        .route("/password/forgot", get(email::forgot).post(email::request_reset))
        .route("/password/reset", get(email::reset_form).post(email::reset))
        .route("/auth/oidc/{provider}/start", post(oidc::handlers::start))
        .route("/auth/oidc/{provider}/reauthenticate", post(oidc::handlers::reauthenticate))
        .route("/auth/oidc/{provider}/callback", get(oidc::handlers::callback))
        .route("/auth/verify", get(forward_auth::verify))
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
        // W3C "A Well-Known URL for Changing Passwords": password managers
        // send users here.
        .route("/.well-known/change-password", get(|| async { axum::response::Redirect::to("/account/password") }))
        .merge(static_files::routes());
    if config.metrics_on_public_listener {
        let source = state.metrics.clone();
        router = router.route("/metrics", get(move || async move { crate::metrics::endpoint(State(source)).await }));
    }
    let mut router = router
        // The limit sits inside render_errors so its 413 becomes a page or
        // a problem document like every other error.
        .layer(RequestBodyLimitLayer::new(config.max_body_bytes))
        // Host, Content-Encoding and 401 challenges (RFC 9110/9112); inside
        // render_errors so its refusals are pages or problem documents.
        .layer(middleware::from_fn(crate::http_semantics::check))
        .layer(middleware::from_fn_with_state(state.clone(), render_errors))
        // Outside the session layer, which records the address with the session.
        .layer(middleware::from_fn_with_state(config.trusted_proxies.clone(), set_client_ip));
    for layer in security_headers::layers() {
        router = router.layer(layer);
    }
    if config.hsts {
        router = router.layer(security_headers::hsts());
    }
    router
        // gzip or br when the client accepts it; see crate::compression.
        .layer(crate::compression::layer())
        .layer(middleware::from_fn(crate::metrics::track))
        .layer(middleware::from_fn_with_state(config.trusted_proxies.clone(), request_id::assign))
        .with_state(state)
}

/// The outbox worker of `config`; says where mail goes.
fn mail_worker(config: &AppConfig, outbox: MailOutbox, auth: Authenticator) -> Result<Worker, StartupError> {
    let mail = &config.mail;
    let transport = Transport::new(mail.smtp.as_ref(), &mail.eml_dir).map_err(StartupError::Mail)?;
    match &transport {
        Transport::Files(..) => tracing::info!(
            "no SMTP server configured (mail.smtp_host): mail is written as .eml files to {}",
            mail.eml_dir.display()
        ),
        Transport::Smtp(_) => tracing::info!(smtp = ?mail.smtp, "mail goes through SMTP"),
    }
    let from = mail.from.parse().map_err(|e| StartupError::Mail(format!("mail.from {:?}: {e}", mail.from)))?;
    let base_url = config.public_url.clone().unwrap_or_else(|| config.tokens.issuer.clone());
    let site = Site { name: mail.site_name.clone(), base_url: base_url.trim_end_matches('/').to_owned(), from };
    Ok(Worker {
        outbox,
        auth,
        transport: Arc::new(transport),
        site,
        poll_interval: mail.poll_interval,
        max_attempts: mail.max_attempts,
    })
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

/// What the background purge needs to forget old audit events.
struct AuditPurge {
    db: Database,
    retention: Duration,
    clock: Arc<dyn Clock>,
}

impl AuditPurge {
    async fn run(&self) {
        let cutoff =
            self.clock.now().as_millis().saturating_sub(i64::try_from(self.retention.as_millis()).unwrap_or(i64::MAX));
        match self.db.purge_audit_events(tessera::Timestamp(cutoff)).await {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, retention = ?self.retention, "purged old audit events"),
            Err(error) => tracing::warn!(%error, "purging old audit events failed"),
        }
    }
}

async fn purge_periodically(engine: SessionEngine, throttle: Throttle, audit: AuditPurge, every: Duration) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        match engine.purge_expired().await {
            Ok(0) => {}
            Ok(purged) => tracing::debug!(purged, "purged expired sessions"),
            Err(error) => tracing::warn!(%error, "purging expired sessions failed"),
        }
        if let Err(error) = throttle.purge().await {
            tracing::warn!(%error, "purging old login throttle counters failed");
        }
        audit.run().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_settings_make_the_default_config() {
        let settings = Settings::default();
        let config = AppConfig::from_settings(&settings).expect("the default settings are valid");
        assert_eq!(config.database_url, "sqlite://tessera.db");
        assert_eq!(config.database_query_timeout, crate::database::DEFAULT_QUERY_TIMEOUT);
        assert_eq!(config.session_store_url, None);
        assert_eq!(config.store_timeout, Duration::from_secs(3));
        assert_eq!(config.purge_interval, Duration::from_secs(60));
        assert_eq!(config.max_body_bytes, 64 * 1024);
        assert_eq!(config.reauth_window, Duration::from_secs(10 * 60));
        assert!(!config.require_second_factor && !config.hsts && !config.test_routes);
        assert!(!config.metrics_on_public_listener);
        assert_eq!(config.shutdown_timeout, Duration::from_secs(30));
        assert_eq!(config.stats_flush_interval, Duration::from_secs(10));
        assert_eq!(config.active_sessions_interval, Duration::from_secs(30));
        assert_eq!(config.refresh_token_ttl, Duration::from_secs(30 * 24 * 3600));
        assert_eq!(config.refresh_family_lifetime, crate::api::tokens::DEFAULT_REFRESH_FAMILY_LIFETIME);
        assert_eq!(config.oidc_jwks_min_refresh, Duration::from_secs(30));
        assert_eq!(config.audit_retention, Duration::from_secs(400 * 24 * 3600));
        assert!(config.oidc_providers.is_empty() && config.public_url.is_none());
        assert!(config.cookie.secure && config.cookie.domain.is_none());
        assert_eq!(config.cookie.same_site, SameSite::Lax);
        assert_eq!(config.expiry, ExpiryPolicy::default());
    }
}
