//! Building the server: opening what it needs, the shared state, the
//! routes ([`crate::routes`]) and the background tasks
//! ([`crate::background`]); serving is [`crate::serve`].

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tessera_auth::email_address::EmailAddresses;
use tessera_auth::email_login::EmailLogins;
use tessera_auth::email_token::EmailTokens;
use tessera_auth::{Authenticator, Email};
use tessera_axum::{CsrfKey, SessionLayer};

use crate::activity_stats::ActivityStats;
use crate::api::problem::BodyLimit;
use crate::api::tokens::TokenService;
use crate::auth_events::ServerEvents;
use crate::backends::{Backends, StartupError};
use crate::background::{count_active_periodically, purge_periodically, AuditPurge, MailPurge};
use crate::config::AppConfig;
use crate::health::ProbeTimeout;
use crate::mail::messages::Site;
use crate::mail::worker::Worker;
use crate::mail::{EmailPages, EmailPolicy, MailOutbox, Transport};
use crate::metrics::MetricsSource;
use crate::oidc::Oidc;
use crate::public_url::PublicUrl;
use crate::reauthentication::Reauthentication;
use crate::registration_policy::Registration;
use crate::routes::routes;
use crate::session_store::{self, Closer, OpenedStore};
use crate::state::{AppState, Services};

/// A built server, ready to serve.
pub struct App {
    /// The routes and layers.
    pub router: Router,
    /// The shared state.
    pub state: AppState,
    /// The session store underneath the engine (server-side stores only).
    pub store: Option<OpenedStore>,
    pub(crate) background: Vec<tokio::task::JoinHandle<()>>,
    pub(crate) close_store: Option<Closer>,
    pub(crate) shutdown_timeout: Duration,
}

impl App {
    /// Opens the database and the session store and builds the routes.
    pub async fn build(config: AppConfig) -> Result<App, StartupError> {
        // Before anything is opened: a public URL passkeys cannot work with
        // is a configuration error to fix, not a feature silently missing.
        tessera_auth::RelyingParty::new(config.public_url.as_deref())?;
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
            let login_key = db.secret("email-login").await.map_err(database_error)?;
            auth = auth.with_email(Email {
                addresses: EmailAddresses::new(db.pool.clone(), config.clock.clone()),
                tokens: EmailTokens::new(db.pool.clone(), config.clock.clone(), code_key),
                outbox: Arc::new(outbox.clone()),
                verify_lifetime: config.mail.verify_lifetime,
                logins: EmailLogins::new(db.pool.clone(), config.clock.clone(), login_key),
                login: config.mail.login,
                require_verified: config.mail.policy == EmailPolicy::Required,
            });
        }
        let auth_throttle = auth.throttle().clone();
        let state = AppState::new(Services {
            db: db.clone(),
            events,
            engine: engine.clone(),
            probe_timeout: ProbeTimeout(config.store_timeout),
            activity: activity.clone(),
            metrics: MetricsSource::new(config.hasher.clone()),
            tokens: Arc::new(tokens),
            oidc: Arc::new(oidc),
            forward_auth: Arc::new(config.forward_auth.clone()),
            trusted_proxies: config.trusted_proxies.clone(),
            public_url: PublicUrl(config.public_url.clone()),
            clock: config.clock.clone(),
            body_limit: BodyLimit(config.max_body_bytes),
            reauth: Reauthentication::new(auth.clone(), config.clock.clone(), config.reauth_window),
            registration: Registration::new(config.registration, auth.clone(), db.clone(), config.clock.clone()),
            email: EmailPages { policy: config.mail.policy },
            auth,
        });
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
                MailPurge { email: state.auth.email().cloned(), outbox: outbox.clone(), clock: config.clock.clone() },
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
