//! The database and the session engine opened from a configuration, and
//! the authentication core over them: what the server and the admin
//! commands share.

use std::sync::Arc;

use tessera::SessionEngine;
use tessera_auth::throttle::Throttle;
use tessera_auth::{Accounts, Authenticator, SecondFactors};
use tessera_store_cookie::{CookieSealer, SealingKey};

use crate::activity_stats::ActivityStats;
use crate::auth_events::{EndEverything, ServerEvents};
use crate::config::AppConfig;
use crate::database::{Database, DatabaseError};
use crate::metrics::MeteredStore;
use crate::session_store::{self, OpenedStore, SessionStoreUrlError};

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
    /// Passkeys cannot work with the public URL (not https, or an IP
    /// address): WebAuthn's relying-party ID is its host.
    #[error("passkeys: {0}")]
    Passkeys(#[from] tessera_auth::passkey::RelyingPartyError),
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

/// The database and the session engine, opened from a configuration.
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
        let mut auth = Authenticator::new(accounts, throttle, second_factors, Arc::new(events), config.clock.clone())
            .require_second_factor(config.require_second_factor)
            .with_revocation(Arc::new(revocation));
        // The server refuses to start with a public URL passkeys cannot use
        // (App::build); the admin commands need no passkeys and still run.
        if let Ok(rp) = tessera_auth::RelyingParty::new(config.public_url.as_deref()) {
            auth = auth.with_passkeys(tessera_auth::Passkeys::new(self.db.pool.clone(), config.clock.clone(), rp));
        }
        Ok(auth)
    }

    /// Closes the database and the store's pool.
    pub async fn close(&self) {
        if let Some(close) = self.store.as_ref().and_then(|s| s.close.clone()) {
            close().await;
        }
        self.db.close().await;
    }
}
