//! What the server can be told, in the form the code uses ([`AppConfig`]),
//! derived from the one settings declaration ([`Settings`]).

use std::sync::Arc;
use std::time::Duration;

use tessera::password::PasswordHasher;
use tessera::{Clock, CookieConfig, ExpiryPolicy, SameSite, SessionStore, SystemClock};
use tessera_auth::password_policy::PasswordPolicy;
use tessera_auth::throttle::ThrottleConfig;
use tessera_token::TokenSettings;

use crate::client_ip::TrustedProxies;
use crate::forward_auth::{self, ForwardAuthConfig};
use crate::mail::{MailConfig, SmtpConfig};
use crate::oidc::OidcProviderConfig;
use crate::registration_policy::RegistrationPolicy;
use crate::settings::{SameSiteSetting, Settings};

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
        // headers and request IDs all use `trusted_proxies`.
        let proxies = TrustedProxies::new(settings.trusted_proxy_networks());
        let mut forward_auth = ForwardAuthConfig::default();
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
        let mut hasher = PasswordHasher::with_params(params);
        if settings.passwords.hash_queue > 0 {
            hasher = hasher.with_queue_limit(settings.passwords.hash_queue);
        }
        // Every field is named (no `..AppConfig::default()`, which is built
        // from this function): the settings, and the few things only code sets.
        let mut config = AppConfig {
            database_url: settings.database.url.clone(),
            database_query_timeout: settings.database.query_timeout,
            session_store_url: Some(settings.sessions.store.clone()).filter(|s| !s.is_empty()),
            expiry: ExpiryPolicy::new(settings.sessions.idle_timeout, settings.sessions.absolute_timeout),
            store_timeout: settings.sessions.store_timeout,
            hasher,
            password_policy: PasswordPolicy::new(settings.passwords.min_chars),
            purge_interval: settings.sessions.purge_interval,
            max_body_bytes: settings.server.max_body_bytes,
            trusted_proxies: proxies,
            metrics_on_public_listener: settings.metrics.enabled && settings.metrics.on_public_listener,
            shutdown_timeout: settings.server.shutdown_timeout,
            stats_flush_interval: settings.stats.flush_interval,
            active_sessions_interval: settings.metrics.active_sessions_interval,
            throttle: settings.throttle,
            reauth_window: settings.sessions.reauth_window,
            require_second_factor: settings.passwords.require_second_factor,
            // With built-in TLS, HSTS is always on.
            hsts: settings.tls.hsts || !settings.tls.cert.is_empty(),
            tokens,
            refresh_token_ttl: settings.tokens.refresh_ttl,
            refresh_family_lifetime: settings.tokens.refresh_family_lifetime,
            public_url: Some(settings.server.public_url.clone()).filter(|u| !u.is_empty()),
            oidc_providers: settings.oidc.providers.clone(),
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
        login: settings.accounts.email_login,
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
