//! Every setting of the server, in one struct tree.
//!
//! Layers, each overriding the one before:
//!
//! 1. the defaults below;
//! 2. a TOML file (`--config FILE` or `TESSERA_CONFIG`);
//! 3. environment variables `TESSERA_<SECTION>__<KEY>` (e.g.
//!    `TESSERA_SESSIONS__IDLE_TIMEOUT=45m`);
//! 4. command-line flags, and the older single-underscore variables that
//!    clap reads for them (`TESSERA_LISTEN`, `TESSERA_DATABASE_URL`, …).
//!
//! Unknown keys and bad values are errors naming the key. The reference in
//! `docs/configuration.md` is generated from this file's doc comments
//! ([`reference_markdown`]); a test fails when the two differ.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use figment::providers::{Format, Serialized, Toml};
use figment::Figment;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::client_ip::parse_trusted_proxy;
use crate::oidc::OidcProviderConfig;
use tessera_auth::throttle::ThrottleConfig;

/// Prefix of every environment variable read as a setting.
pub const ENV_PREFIX: &str = "TESSERA_";

/// The whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// The public HTTP listener and the request lifecycle.
    pub server: ServerSettings,
    /// HTTPS served by tessera itself (rustls), and HSTS.
    pub tls: TlsSettings,
    /// The users database.
    pub database: DatabaseSettings,
    /// Sessions: where they live and how long they last.
    pub sessions: SessionSettings,
    /// The session cookie.
    pub cookie: CookieSettings,
    /// Password hashing and rules, and whether a second factor is required.
    pub passwords: PasswordSettings,
    /// Who may create an account.
    pub accounts: AccountSettings,
    /// Delays after failed logins, per account or device and per client
    /// address; sign-ups allowed per client address.
    pub throttle: ThrottleConfig,
    /// API access and refresh tokens.
    pub tokens: ApiTokenSettings,
    /// Logging in with OpenID Connect providers (see docs/oidc.md).
    pub oidc: OidcSettings,
    /// `/auth/verify` for reverse proxies (see docs/forward-auth.md).
    pub forward_auth: ForwardAuthSettings,
    /// Prometheus metrics.
    pub metrics: MetricsSettings,
    /// Logs.
    pub log: LogSettings,
    /// Hourly activity counters (`tessera sessions stats`).
    pub stats: StatsSettings,
    /// The audit trail (`/account/activity`, `tessera admin audit`).
    pub audit: AuditSettings,
    /// Sending mail (verification, password reset, security notices).
    pub mail: MailSettings,
}

/// `[mail]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct MailSettings {
    /// The SMTP server that sends mail. Empty (the default): messages are
    /// written as `.eml` files to `eml_dir` instead, and the start-up log
    /// says where.
    pub smtp_host: String,
    /// The SMTP port (587 for STARTTLS, 465 for TLS, 25 for a local relay).
    pub smtp_port: u16,
    /// `starttls` (required, not opportunistic), `tls` (implicit TLS) or
    /// `none` (only for a relay on the same host).
    pub smtp_security: crate::mail::SmtpSecurity,
    /// SMTP login user; empty: no login.
    pub smtp_username: String,
    /// SMTP login password; masked by `config check`.
    pub smtp_password: String,
    /// Longest wait for the SMTP server on one message.
    #[serde(with = "tessera::duration_text")]
    #[schemars(with = "String")]
    pub smtp_timeout: Duration,
    /// The `From` of every message: `Name <address>` or `address`.
    pub from: String,
    /// The name messages sign with; links point to `server.public_url`
    /// (else to the listen address).
    pub site_name: String,
    /// Where messages go as `.eml` files when `smtp_host` is empty.
    pub eml_dir: String,
    /// How often the outbox worker looks for due messages (it is also woken
    /// at once by mail queued on its own instance).
    #[serde(with = "tessera::duration_text")]
    #[schemars(with = "String")]
    pub poll_interval: Duration,
    /// Attempts (30 s apart, doubling, at most an hour) before a message
    /// is given up on and its error recorded.
    pub max_attempts: u32,
    /// How long an email verification link and code work.
    #[serde(with = "tessera::duration_text")]
    #[schemars(with = "String")]
    pub verify_lifetime: Duration,
}

impl Default for MailSettings {
    fn default() -> Self {
        let defaults = crate::mail::MailConfig::default();
        MailSettings {
            smtp_host: String::new(),
            smtp_port: 587,
            smtp_security: crate::mail::SmtpSecurity::Starttls,
            smtp_username: String::new(),
            smtp_password: String::new(),
            smtp_timeout: Duration::from_secs(30),
            from: defaults.from,
            site_name: defaults.site_name,
            eml_dir: defaults.eml_dir.display().to_string(),
            poll_interval: defaults.poll_interval,
            max_attempts: defaults.max_attempts,
            verify_lifetime: defaults.verify_lifetime,
        }
    }
}

/// `[server]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// Address of the public HTTP listener.
    pub listen: String,
    /// On SIGTERM/SIGINT, how long in-flight requests may take to finish
    /// before the server stops anyway.
    #[serde(with = "tessera::duration_text")]
    #[schemars(with = "String")]
    pub shutdown_timeout: Duration,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Reverse proxies (IP addresses or CIDR ranges, e.g. `10.0.0.0/8`)
    /// whose `X-Forwarded-For`, `X-Forwarded-*`, `X-Original-URL` and
    /// `x-request-id` headers are believed: client addresses (throttling,
    /// device lists), original URLs (`/auth/verify`), the host form posts
    /// may come from (`X-Forwarded-Host`) and request IDs. From anyone else
    /// those headers are ignored.
    pub trusted_proxies: Vec<String>,
    /// The address browsers use for tessera, e.g.
    /// `https://auth.example.com`. Needed for OpenID Connect (callback
    /// URLs), used for forward-auth login redirects, and accepted as the
    /// `Origin` of form posts (needed behind a proxy that passes neither
    /// the browser's `Host` nor `X-Forwarded-Host`). Empty: none.
    pub public_url: String,
}

/// `[tls]`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSettings {
    /// Serve HTTPS with this PEM certificate chain (with `key`). Empty:
    /// plain HTTP.
    pub cert: String,
    /// The PEM private key for `cert`; it must be readable by the server's
    /// user only (`chmod 600`): a key the group or others may read is refused.
    pub key: String,
    /// Send `Strict-Transport-Security` even without `cert` (when a
    /// TLS-terminating proxy is in front). Always on with `cert`.
    pub hsts: bool,
}

/// `[database]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// Where users and generated secrets live: `sqlite://FILE` (created and
    /// migrated on first start) or `postgres://USER:PASSWORD@HOST/DB`. A
    /// password in it is masked in every output.
    pub url: String,
    /// Longest wait for one database query (connection included) before
    /// answering 503, so that a hung database never hangs a request.
    #[serde(with = "tessera::duration_text")]
    #[schemars(with = "String")]
    pub query_timeout: Duration,
}

/// `[sessions]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct SessionSettings {
    /// Where sessions live: `memory://`, `sqlite://FILE`, `postgres://…`,
    /// `mysql://USER@HOST:PORT/DB` (MySQL or MariaDB), `mongodb://HOST:PORT/DB`
    /// (a replica set; a single node will do), `redis://HOST:PORT`,
    /// `redis+cluster://HOST:PORT,HOST:PORT,…` or `cookie://`. Empty: the
    /// database.
    pub store: String,
    /// A session unused this long ends (e.g. `30m`, `2h`).
    #[serde(with = "tessera::duration_text")]
    #[schemars(with = "String")]
    pub idle_timeout: Duration,
    /// A session ends this long after login, however active. Not shorter
    /// than `idle_timeout`.
    #[serde(with = "tessera::duration_text")]
    #[schemars(with = "String")]
    pub absolute_timeout: Duration,
    /// Longest wait for the session store before answering 503.
    #[serde(with = "tessera::duration_text")]
    #[schemars(with = "String")]
    pub store_timeout: Duration,
    /// How often expired sessions are purged from stores without native
    /// expiry (SQLite, PostgreSQL, MySQL, memory) and from MongoDB, whose
    /// TTL index frees them lazily.
    #[serde(with = "tessera::duration_text")]
    #[schemars(with = "String")]
    pub purge_interval: Duration,
    /// How long after typing a password (or signing in at an OpenID Connect
    /// provider, by its `auth_time`) sensitive actions (e.g. ending other
    /// sessions) need no re-entry. Also the `max_age` sent to providers for
    /// step-ups.
    #[serde(with = "tessera::duration_text")]
    #[schemars(with = "String")]
    pub reauth_window: Duration,
}

/// `[cookie]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct CookieSettings {
    /// Mark cookies `Secure` (HTTPS only; browsers also accept them on
    /// `http://localhost`). Turn off only for plain-HTTP development on
    /// another host name.
    pub secure: bool,
    /// SameSite policy of the session cookie.
    pub same_site: SameSiteSetting,
    /// Share the session cookie with sibling hosts (e.g. `example.com` for
    /// `app.example.com` and `wiki.example.com` behind forward-auth). The
    /// cookie is then named `__Secure-id` instead of `__Host-id`, which
    /// forbids a Domain. Empty: this host only.
    pub domain: String,
}

/// A cookie's SameSite policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SameSiteSetting {
    /// Sent on top-level navigations from other sites.
    Lax,
    /// Never sent on requests from other sites.
    Strict,
}

/// `[passwords]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct PasswordSettings {
    /// Fewest characters a new password may have (8 to 64; passwords of 64
    /// characters are always long enough).
    pub min_chars: usize,
    /// argon2id memory cost in KiB (OWASP: 19456).
    pub argon2_memory_kib: u32,
    /// argon2id iterations (OWASP: 2).
    pub argon2_iterations: u32,
    /// argon2id lanes.
    pub argon2_parallelism: u32,
    /// Password hashes that may wait for a free core when every core is
    /// hashing; more are refused at once with `503` and `Retry-After` (never
    /// counted as a wrong password), so that a flood of logins or sign-ups
    /// cannot make everyone's wait grow without bound. `0`: 8 per core.
    pub hash_queue: usize,
    /// Every login (password or OpenID Connect) must pass two-step
    /// verification: accounts without an authenticator app set one up at
    /// their next login before they are logged in, and cannot turn it off.
    pub require_second_factor: bool,
}

/// `[accounts]`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct AccountSettings {
    /// Who may create an account (web form, `POST /api/signup`, first
    /// OpenID Connect login): `open` (anyone), `invite` (only with an
    /// invitation from `tessera admin invite create`; provider logins create
    /// no accounts unless the provider says `allow_signup = true`) or
    /// `closed` (nobody; `tessera admin user create` still works).
    pub registration: crate::registration_policy::RegistrationPolicy,
    /// Email addresses on accounts: `optional` (asked at sign-up, not
    /// required), `required` (sign-up needs one) or `off` (no addresses, no
    /// password reset by mail, no notices). An address counts once a link
    /// or code mailed to it came back. With `required`, an account signs in
    /// (password, passkey, API) only once its address is verified; the
    /// refused login offers to mail the link again (`POST
    /// /api/email/verification` for API clients). Provider (OpenID Connect)
    /// sign-ins are exempt: the provider vouches for the person.
    pub email: crate::mail::EmailPolicy,
    /// Sign-in by email: `off` (the default), `code` (a 6-digit code is
    /// mailed to the account's verified address) or `link` (a link is).
    /// Either works for 10 minutes, once, and only in the browser (or API
    /// client) that asked; attempts are throttled like passwords, and an
    /// account with a second factor must still pass it. Needs
    /// `accounts.email` on. Email is no authenticator for NIST AAL2: this is
    /// a first factor only.
    pub email_login: tessera_auth::email_login::EmailLoginMode,
}

/// `[tokens]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ApiTokenSettings {
    /// The `iss` claim of access tokens and the `issuer` of
    /// `/.well-known/oauth-authorization-server`. Empty (the default): the
    /// server's URL, `server.public_url` when set, else `http://` (`https://`
    /// with `tls.cert`) and `server.listen`.
    pub issuer: String,
    /// Lifetime of API access tokens.
    #[serde(with = "tessera::duration_text")]
    #[schemars(with = "String")]
    pub access_ttl: Duration,
    /// An API refresh token unused this long expires.
    #[serde(with = "tessera::duration_text")]
    #[schemars(with = "String")]
    pub refresh_ttl: Duration,
    /// A chain of refresh tokens ends this long after its sign-in, however
    /// often it is used (ASVS 7.3.2; 30 days is NIST's re-authentication
    /// limit for single-factor sign-in).
    #[serde(with = "tessera::duration_text")]
    #[schemars(with = "String")]
    pub refresh_family_lifetime: Duration,
}

/// `[oidc]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct OidcSettings {
    /// The providers users can log in with, one `[[oidc.providers]]` table
    /// each (fields below). In an environment variable or flag: JSON.
    pub providers: Vec<OidcProviderConfig>,
    /// Shortest time between two fetches of a provider's signing keys caused
    /// by an unknown key ID (a provider rotating keys).
    #[serde(with = "tessera::duration_text")]
    #[schemars(with = "String")]
    pub jwks_min_refresh: Duration,
}

/// Parses one provider from JSON (`--oidc-provider`) and checks what can be
/// checked without the network.
pub fn parse_oidc_provider(json: &str) -> Result<OidcProviderConfig, String> {
    let provider: OidcProviderConfig = serde_json::from_str(json).map_err(|e| format!("not a provider object: {e}"))?;
    provider.validate()?;
    Ok(provider)
}

/// Parses a JSON array of providers (`TESSERA_OIDC_PROVIDERS`).
pub fn parse_oidc_provider_list(json: &str) -> Result<OidcProviderList, String> {
    let providers: Vec<OidcProviderConfig> =
        serde_json::from_str(json).map_err(|e| format!("not a JSON array of providers: {e}"))?;
    for provider in &providers {
        provider.validate()?;
    }
    Ok(OidcProviderList(providers))
}

/// Several providers given at once (a distinct type, so that clap takes the
/// whole array as one value).
#[derive(Debug, Clone, Default)]
pub struct OidcProviderList(pub Vec<OidcProviderConfig>);

/// `[forward_auth]`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ForwardAuthSettings {
    /// Hosts behind forward-auth that the login page may send users back to
    /// (`app.example.com`, `app.example.com:8443`, or `*.example.com`).
    pub protected_hosts: Vec<String>,
    /// Extra headers of `/auth/verify` answers besides `X-Auth-User` and
    /// `X-Auth-User-Id`: `NAME=FIELD` with FIELD one of `username`, `id`,
    /// `email` (e.g. `X-Remote-User=username`).
    pub headers: Vec<String>,
    /// Who may enter which address: `[[forward_auth.rules]]` tables (fields
    /// below), tried in order; the first whose hosts, paths and users /
    /// groups / email domains match decides. An address no rule matches is
    /// refused with 403, so with no rules every request is refused. In an
    /// environment variable: a JSON array of rule objects.
    pub rules: Vec<crate::access_rules::AccessRule>,
}

/// `[metrics]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSettings {
    /// Serve Prometheus metrics at all.
    pub enabled: bool,
    /// Address of the separate metrics listener (`GET /metrics`), such as
    /// `127.0.0.1:9300`. Empty (the default): no metrics listener, so that
    /// several instances on one host start alike; give each its own port.
    /// A configured address that is busy stops the server.
    pub listen: String,
    /// Also answer `GET /metrics` on the public listener. Off by default:
    /// metrics tell outsiders more than they should know.
    pub on_public_listener: bool,
    /// How often live sessions are counted for the `tessera_active_sessions`
    /// gauge (SQLite, PostgreSQL, MySQL, MongoDB and memory stores).
    #[serde(with = "tessera::duration_text")]
    #[schemars(with = "String")]
    pub active_sessions_interval: Duration,
}

/// `[log]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// `text` (human-readable) or `json` (one object per line).
    pub format: LogFormat,
    /// Which events to log, in `tracing-subscriber` `EnvFilter` syntax;
    /// `RUST_LOG`, when set, wins.
    pub filter: String,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[stats]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct StatsSettings {
    /// How often the hourly activity counters are written to the database
    /// (and once more at shutdown).
    #[serde(with = "tessera::duration_text")]
    #[schemars(with = "String")]
    pub flush_interval: Duration,
}

/// `[audit]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct AuditSettings {
    /// How long audit events (logins, failures, password changes, …) are
    /// kept; older ones are deleted in the background (every
    /// `sessions.purge_interval`) and by `tessera admin audit purge`.
    #[serde(with = "tessera::duration_text")]
    #[schemars(with = "String")]
    pub retention: Duration,
}

impl Default for AuditSettings {
    fn default() -> Self {
        AuditSettings { retention: crate::audit::DEFAULT_RETENTION }
    }
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            listen: "127.0.0.1:3000".into(),
            shutdown_timeout: Duration::from_secs(30),
            max_body_bytes: 64 * 1024,
            trusted_proxies: Vec::new(),
            public_url: String::new(),
        }
    }
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        DatabaseSettings { url: "sqlite://tessera.db".into(), query_timeout: crate::database::DEFAULT_QUERY_TIMEOUT }
    }
}

impl Default for SessionSettings {
    fn default() -> Self {
        SessionSettings {
            store: String::new(),
            idle_timeout: Duration::from_secs(30 * 60),
            absolute_timeout: Duration::from_secs(12 * 3600),
            store_timeout: Duration::from_secs(3),
            purge_interval: Duration::from_secs(60),
            reauth_window: Duration::from_secs(10 * 60),
        }
    }
}

impl Default for CookieSettings {
    fn default() -> Self {
        CookieSettings { secure: true, same_site: SameSiteSetting::Lax, domain: String::new() }
    }
}

impl Default for PasswordSettings {
    fn default() -> Self {
        PasswordSettings {
            min_chars: tessera_auth::password_policy::DEFAULT_MIN_CHARS,
            argon2_memory_kib: 19_456,
            argon2_iterations: 2,
            argon2_parallelism: 1,
            hash_queue: 0,
            require_second_factor: false,
        }
    }
}

impl Default for MetricsSettings {
    fn default() -> Self {
        MetricsSettings {
            enabled: true,
            listen: String::new(),
            on_public_listener: false,
            active_sessions_interval: Duration::from_secs(30),
        }
    }
}

impl Default for ApiTokenSettings {
    fn default() -> Self {
        ApiTokenSettings {
            issuer: String::new(),
            access_ttl: Duration::from_secs(15 * 60),
            refresh_ttl: Duration::from_secs(30 * 24 * 3600),
            refresh_family_lifetime: crate::api::tokens::DEFAULT_REFRESH_FAMILY_LIFETIME,
        }
    }
}

impl Default for OidcSettings {
    fn default() -> Self {
        OidcSettings { providers: Vec::new(), jwks_min_refresh: Duration::from_secs(30) }
    }
}

impl Default for LogSettings {
    fn default() -> Self {
        // webauthn-rs-core logs a refused attestation at ERROR with the
        // whole input as numbers (hundreds of KB for one crafted request);
        // tessera logs each refusal itself, with its reason.
        LogSettings { format: LogFormat::Text, filter: "info,sqlx=warn,webauthn_rs_core=off".into() }
    }
}

impl Default for StatsSettings {
    fn default() -> Self {
        StatsSettings { flush_interval: Duration::from_secs(10) }
    }
}

/// A configuration that cannot be used; the message names the key.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SettingsError(pub String);

impl Settings {
    /// Reads defaults, then `file` (if any), then `TESSERA_<SECTION>__<KEY>`
    /// variables from `env`, then `overrides` (from flags), and validates.
    pub fn load(
        file: Option<&Path>,
        env: &[(String, String)],
        overrides: &[(&'static str, Value)],
    ) -> Result<Settings, SettingsError> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(file) = file {
            if !file.is_file() {
                return Err(SettingsError(format!("--config {}: no such file", file.display())));
            }
            figment = figment.merge(Toml::file(file));
        }
        figment = figment.merge(env_provider(env));
        for (key, value) in overrides {
            figment = figment.merge(Named::new(format!("the flag for {key}"), key, value.clone()));
        }
        let settings: Settings = figment.extract().map_err(|error| SettingsError(describe_figment_error(error)))?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks what types alone cannot; each message names the key.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let bad = |key: &str, why: String| Err(SettingsError(format!("{key}: {why}")));
        if self.server.listen.parse::<SocketAddr>().is_err() && !self.server.listen.contains(':') {
            return bad("server.listen", format!("{:?} is not an address such as 127.0.0.1:3000", self.server.listen));
        }
        for proxy in &self.server.trusted_proxies {
            if let Err(why) = parse_trusted_proxy(proxy) {
                return bad("server.trusted_proxies", why);
            }
        }
        if self.server.max_body_bytes == 0 {
            return bad("server.max_body_bytes", "must be more than zero".into());
        }
        let db = &self.database.url;
        if !(db.starts_with("sqlite:") || db.starts_with("postgres://") || db.starts_with("postgresql://")) {
            return bad(
                "database.url",
                format!("{:?}: expected sqlite://… or postgres://…", crate::session_store::mask_url(db)),
            );
        }
        for (key, value) in [
            ("database.query_timeout", self.database.query_timeout),
            ("sessions.reauth_window", self.sessions.reauth_window),
            ("throttle.base_delay", self.throttle.base_delay),
            ("throttle.max_delay", self.throttle.max_delay),
            ("throttle.quiet_period", self.throttle.quiet_period),
            ("throttle.signup_window", self.throttle.signup_window),
            ("throttle.passkey_ceremony_window", self.throttle.passkey_ceremony_window),
            ("tokens.access_ttl", self.tokens.access_ttl),
            ("tokens.refresh_ttl", self.tokens.refresh_ttl),
            ("tokens.refresh_family_lifetime", self.tokens.refresh_family_lifetime),
            ("metrics.active_sessions_interval", self.metrics.active_sessions_interval),
            ("sessions.idle_timeout", self.sessions.idle_timeout),
            ("sessions.absolute_timeout", self.sessions.absolute_timeout),
            ("sessions.store_timeout", self.sessions.store_timeout),
            ("sessions.purge_interval", self.sessions.purge_interval),
            ("stats.flush_interval", self.stats.flush_interval),
            ("audit.retention", self.audit.retention),
        ] {
            if value.is_zero() {
                return bad(key, "must be longer than zero".into());
            }
        }
        if self.sessions.absolute_timeout < self.sessions.idle_timeout {
            return bad("sessions.absolute_timeout", "must not be shorter than sessions.idle_timeout".into());
        }
        if !(8..=64).contains(&self.passwords.min_chars) {
            return bad("passwords.min_chars", format!("{} is not between 8 and 64", self.passwords.min_chars));
        }
        if let Err(error) = self.argon2_params() {
            return bad("passwords.argon2_memory_kib", format!("invalid argon2 parameters: {error}"));
        }
        if self.metrics.enabled
            && !self.metrics.listen.is_empty()
            && self.metrics.listen.parse::<SocketAddr>().is_err()
            && !self.metrics.listen.contains(':')
        {
            return bad(
                "metrics.listen",
                format!("{:?} is not an address such as 127.0.0.1:9300", self.metrics.listen),
            );
        }
        if let Err(error) = tracing_subscriber::EnvFilter::try_new(&self.log.filter) {
            return bad("log.filter", error.to_string());
        }
        if self.throttle.signups_per_address == 0 {
            return bad(
                "throttle.signups_per_address",
                "must be at least 1 (set `accounts.registration` to close sign-ups)".into(),
            );
        }
        if self.throttle.passkey_ceremonies_per_address == 0 {
            return bad("throttle.passkey_ceremonies_per_address", "must be at least 1".into());
        }
        if self.throttle.max_delay < self.throttle.base_delay {
            return bad("throttle.max_delay", "must not be shorter than throttle.base_delay".into());
        }
        if !self.server.public_url.is_empty() {
            match url::Url::parse(&self.server.public_url) {
                Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => {}
                _ => {
                    return bad(
                        "server.public_url",
                        format!("{:?} is not an http(s) URL such as https://auth.example.com", self.server.public_url),
                    )
                }
            }
        }
        self.validate_tls()?;
        if self.mail.from.parse::<lettre::message::Mailbox>().is_err() {
            return Err(SettingsError(format!("mail.from: {:?} is not a mail address", self.mail.from)));
        }
        if self.mail.max_attempts == 0 {
            return Err(SettingsError("mail.max_attempts: at least 1".into()));
        }
        let domain = &self.cookie.domain;
        let host_name = domain.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
            && !domain.starts_with('.')
            && !domain.ends_with('.');
        if !domain.is_empty() && !host_name {
            return bad("cookie.domain", format!("{domain:?} is not a host name such as example.com"));
        }
        // Empty means "the server's URL"; blanks are a mistake.
        if !self.tokens.issuer.is_empty() && self.tokens.issuer.trim().is_empty() {
            return bad("tokens.issuer", "must not be blank (leave it out for the server's URL)".into());
        }
        let mut ids = std::collections::HashSet::new();
        for (index, provider) in self.oidc.providers.iter().enumerate() {
            let key = format!("oidc.providers[{index}]");
            if let Err(why) = provider.validate() {
                return bad(&key, why);
            }
            if !ids.insert(provider.id.as_str()) {
                return bad(&key, format!("the id {:?} is used twice", provider.id));
            }
        }
        for (index, rule) in self.forward_auth.rules.iter().enumerate() {
            if let Err(why) = rule.validate() {
                return bad(&format!("forward_auth.rules[{index}]"), why);
            }
        }
        for header in &self.forward_auth.headers {
            if let Err(why) = crate::forward_auth::parse_forward_header(header) {
                return bad("forward_auth.headers", format!("{header:?}: {why}"));
            }
        }
        Ok(())
    }

    /// Both files or neither, and they must load: `config check` then
    /// catches a bad certificate before a restart does.
    /// The `iss` of access tokens: `tokens.issuer`, else `server.public_url`
    /// (without a trailing `/`), else the URL of `server.listen`.
    pub fn token_issuer(&self) -> String {
        if !self.tokens.issuer.is_empty() {
            return self.tokens.issuer.clone();
        }
        if !self.server.public_url.is_empty() {
            return self.server.public_url.trim_end_matches('/').to_owned();
        }
        let scheme = if self.tls.cert.is_empty() { "http" } else { "https" };
        format!("{scheme}://{}", self.server.listen)
    }

    fn validate_tls(&self) -> Result<(), SettingsError> {
        let bad = |key: &str, why: String| Err(SettingsError(format!("{key}: {why}")));
        match (self.tls.cert.is_empty(), self.tls.key.is_empty()) {
            (true, true) => Ok(()),
            (false, true) => bad("tls.key", "required with tls.cert".into()),
            (true, false) => bad("tls.cert", "required with tls.key".into()),
            (false, false) => match self.tls_server_config() {
                Ok(_) => Ok(()),
                Err(error @ crate::tls::TlsError::Key { .. }) => bad("tls.key", error.to_string()),
                Err(error) => bad("tls.cert", error.to_string()),
            },
        }
    }

    /// The rustls configuration of `[tls]`, if HTTPS is configured.
    pub fn tls_server_config(&self) -> Result<Option<std::sync::Arc<rustls::ServerConfig>>, crate::tls::TlsError> {
        if self.tls.cert.is_empty() || self.tls.key.is_empty() {
            return Ok(None);
        }
        crate::tls::server_config(Path::new(&self.tls.cert), Path::new(&self.tls.key)).map(Some)
    }

    /// The argon2 parameters of `[passwords]`.
    pub fn argon2_params(&self) -> Result<argon2::Params, String> {
        argon2::Params::new(
            self.passwords.argon2_memory_kib,
            self.passwords.argon2_iterations,
            self.passwords.argon2_parallelism,
            None,
        )
        .map_err(|e| e.to_string())
    }

    /// The trusted proxies as networks (validated by [`Settings::validate`]).
    pub fn trusted_proxy_networks(&self) -> Vec<ipnet::IpNet> {
        self.server.trusted_proxies.iter().filter_map(|p| parse_trusted_proxy(p).ok()).collect()
    }

    /// The effective configuration as TOML, with passwords in URLs and
    /// client secrets masked.
    pub fn to_masked_toml(&self) -> Result<String, SettingsError> {
        let mut masked = self.clone();
        masked.database.url = crate::session_store::mask_url(&masked.database.url);
        masked.sessions.store = crate::session_store::mask_url(&masked.sessions.store);
        if !masked.mail.smtp_password.is_empty() {
            masked.mail.smtp_password = "***".into();
        }
        for provider in &mut masked.oidc.providers {
            if provider.client_secret.is_some() {
                provider.client_secret = Some("***".into());
            }
        }
        toml::to_string_pretty(&masked).map_err(|e| SettingsError(format!("cannot print the configuration: {e}")))
    }
}

/// The `TESSERA_<SECTION>__<KEY>` variables among `env` that name a setting;
/// other `TESSERA_…` variables (flags' own, `TESSERA_CONFIG`, tests') are
/// left alone.
fn env_provider(env: &[(String, String)]) -> Figment {
    let known: Vec<String> = setting_keys().into_iter().map(|key| env_name(&key)).collect();
    let mut figment = Figment::new();
    for (name, value) in env {
        if known.iter().any(|k| k == name) {
            let key = name[ENV_PREFIX.len()..].to_ascii_lowercase().replace("__", ".");
            figment = figment.merge(Named::new(format!("environment variable {name}"), &key, env_value(&key, value)));
        }
    }
    figment
}

/// One value at a key, with a name for error messages.
struct Named {
    name: String,
    data: Serialized<Value>,
}

impl Named {
    fn new(name: String, key: &str, value: Value) -> Named {
        Named { name, data: Serialized::default(key, value) }
    }
}

impl figment::Provider for Named {
    fn metadata(&self) -> figment::Metadata {
        figment::Metadata::named(self.name.clone())
    }

    fn data(&self) -> Result<figment::value::Map<figment::Profile, figment::value::Dict>, figment::Error> {
        self.data.data()
    }
}

/// An environment value as the setting's type expects it: lists are
/// comma-separated, booleans and numbers are parsed, the rest is text.
fn env_value(key: &str, raw: &str) -> Value {
    let default = lookup(&defaults_json(), key);
    match default {
        // A list of tables (OpenID Connect providers) can only be JSON; a
        // list of strings may be too.
        Some(Value::Array(_)) if raw.trim_start().starts_with('[') => {
            serde_json::from_str(raw).unwrap_or_else(|_| Value::from(raw))
        }
        Some(Value::Array(_)) => {
            Value::Array(raw.split(',').map(str::trim).filter(|s| !s.is_empty()).map(Value::from).collect())
        }
        Some(Value::Bool(_)) => match raw.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Value::Bool(true),
            "false" | "0" | "no" | "off" => Value::Bool(false),
            _ => Value::from(raw),
        },
        Some(Value::Number(_)) => raw.trim().parse::<u64>().map(Value::from).unwrap_or_else(|_| Value::from(raw)),
        _ => Value::from(raw),
    }
}

/// The environment variable of a setting: `sessions.idle_timeout` →
/// `TESSERA_SESSIONS__IDLE_TIMEOUT`.
pub fn env_name(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.replace('.', "__").to_ascii_uppercase())
}

fn defaults_json() -> Value {
    serde_json::to_value(Settings::default()).unwrap_or(Value::Null)
}

fn lookup(value: &Value, key: &str) -> Option<Value> {
    let mut at = value;
    for part in key.split('.') {
        at = at.get(part)?;
    }
    Some(at.clone())
}

/// Every leaf key, `section.key`, in declaration order (fields of tables in
/// lists, `oidc.providers[].id`, are not keys of their own).
pub fn setting_keys() -> Vec<String> {
    reference_entries().into_iter().map(|entry| entry.key).filter(|key| !key.contains("[]")).collect()
}

/// One documented setting.
#[derive(Debug, Clone)]
pub struct ReferenceEntry {
    /// `section.key`.
    pub key: String,
    /// The section's description (same for every key of a section).
    pub section_doc: String,
    /// The setting's doc comment.
    pub doc: String,
    /// The TOML type.
    pub kind: String,
    /// The default, as TOML would write it.
    pub default: String,
}

/// Every setting with its doc comment, type and default, from the settings
/// struct's JSON schema (doc comments become descriptions).
pub fn reference_entries() -> Vec<ReferenceEntry> {
    let schema = serde_json::to_value(schemars::schema_for!(Settings)).unwrap_or(Value::Null);
    let defaults = defaults_json();
    let defs = schema.get("$defs").cloned().unwrap_or(Value::Null);
    let resolve = |value: &Value| -> Value {
        match value.get("$ref").and_then(Value::as_str) {
            Some(reference) => {
                let name = reference.rsplit('/').next().unwrap_or("");
                let mut resolved = defs.get(name).cloned().unwrap_or(Value::Null);
                if let (Some(doc), Some(object)) = (value.get("description"), resolved.as_object_mut()) {
                    object.insert("field_description".into(), doc.clone());
                }
                resolved
            }
            None => value.clone(),
        }
    };
    let mut entries = Vec::new();
    let Some(sections) = schema.get("properties").and_then(Value::as_object) else { return entries };
    for (section, section_schema) in sections {
        let section_schema = resolve(section_schema);
        let section_doc = text(section_schema.get("field_description").or(section_schema.get("description")));
        let Some(fields) = section_schema.get("properties").and_then(Value::as_object) else { continue };
        for (field, field_schema) in fields {
            let key = format!("{section}.{field}");
            let resolved = resolve(field_schema);
            let doc = text(field_schema.get("description").or(resolved.get("field_description")));
            let default_value = lookup(&defaults, &key);
            let is_duration = default_value
                .as_ref()
                .and_then(Value::as_str)
                .is_some_and(|text| humantime::parse_duration(text).is_ok());
            let kind = if is_duration { "duration".to_owned() } else { kind_of(&resolved) };
            let default = default_value.map(|v| toml_literal(&v)).unwrap_or_default();
            // A list of tables: document the fields of one table too, as
            // `section.field[].name`.
            let table = resolved.get("items").filter(|items| items.get("$ref").is_some()).map(&resolve);
            let kind = if table.is_some() { format!("list of tables (`[[{key}]]`)") } else { kind };
            entries.push(ReferenceEntry { key: key.clone(), section_doc: section_doc.clone(), doc, kind, default });
            let Some(table) = table else { continue };
            let Some(table_fields) = table.get("properties").and_then(Value::as_object) else { continue };
            let mut nested: Vec<ReferenceEntry> = table_fields
                .iter()
                .map(|(name, schema)| ReferenceEntry {
                    key: format!("{key}[].{name}"),
                    section_doc: section_doc.clone(),
                    doc: text(schema.get("description")),
                    kind: kind_of(&resolve(schema)),
                    default: String::new(),
                })
                .collect();
            // Required fields first, then the rest as declared (JSON objects
            // come out sorted; the schema's `required` keeps the order).
            let required: Vec<&str> = table
                .get("required")
                .and_then(Value::as_array)
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            nested.sort_by_key(|entry| {
                let name = entry.key.rsplit('.').next().unwrap_or("");
                required.iter().position(|r| *r == name).unwrap_or(usize::MAX)
            });
            entries.extend(nested);
        }
    }
    // JSON objects come out sorted; put sections and keys back in the order
    // they are declared (the order the TOML serializer writes them).
    let order = Settings::default().to_masked_toml().unwrap_or_default();
    let position = |key: &str| -> (usize, usize) {
        let (section, field) = key.split_once('.').unwrap_or((key, ""));
        let at = order.find(&format!("[{section}]")).unwrap_or(usize::MAX);
        let within = order.get(at..).and_then(|rest| rest.find(&format!("\n{field} ="))).unwrap_or(usize::MAX);
        (at, within)
    };
    // Fields of a list's tables stay right after the list.
    entries.sort_by_key(|entry| position(entry.key.split("[]").next().unwrap_or(&entry.key)));
    entries
}

fn text(value: Option<&Value>) -> String {
    value.and_then(Value::as_str).unwrap_or("").split_whitespace().collect::<Vec<_>>().join(" ")
}

fn kind_of(schema: &Value) -> String {
    if let Some(choices) = schema.get("oneOf").and_then(Value::as_array) {
        let names: Vec<String> = choices
            .iter()
            .filter_map(|c| c.get("const").or_else(|| c.get("enum").and_then(|e| e.get(0))))
            .filter_map(Value::as_str)
            .map(|s| format!("`{s}`"))
            .collect();
        return format!("one of {}", names.join(", "));
    }
    if let Some(choices) = schema.get("enum").and_then(Value::as_array) {
        let names: Vec<String> = choices.iter().filter_map(Value::as_str).map(|s| format!("`{s}`")).collect();
        return format!("one of {}", names.join(", "));
    }
    // `Option<T>`: the type and null.
    let kind = match schema.get("type") {
        Some(Value::Array(types)) => types.iter().find(|t| t.as_str() != Some("null")).cloned(),
        other => other.cloned(),
    };
    match kind.as_ref() {
        Some(Value::String(t)) if t == "array" => "list of strings".into(),
        Some(Value::String(t)) if t == "integer" => "integer".into(),
        Some(Value::String(t)) if t == "boolean" => "boolean".into(),
        Some(Value::String(t)) => t.clone(),
        _ => "value".into(),
    }
}

fn toml_literal(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        Value::Array(items) => format!("[{}]", items.iter().map(toml_literal).collect::<Vec<_>>().join(", ")),
        other => other.to_string(),
    }
}

/// The reference of every setting, as Markdown (`tessera config reference`,
/// committed as `docs/configuration.md`). `flags` maps setting keys to the
/// command-line flag and legacy environment variable that also set them.
pub fn reference_markdown(flags: &[(String, String, Option<String>)]) -> String {
    let mut out = String::new();
    out.push_str("# Configuration reference\n\n");
    out.push_str(
        "<!-- Generated by `tessera config reference` from crates/tessera-server/src/settings.rs; \
         do not edit by hand. A test fails when this file is out of date. -->\n\n",
    );
    out.push_str(
        "Every setting can be given in a TOML file (`tessera --config FILE` or `TESSERA_CONFIG=FILE`), \
         in an environment variable, or for the most used ones as a command-line flag. Later layers win: \
         defaults, then the file, then `TESSERA_<SECTION>__<KEY>` variables, then flags (and the older \
         variables that clap reads for them, listed with each flag). Unknown keys and bad values are \
         errors that name the key; `tessera config check` prints the effective configuration with \
         passwords and client secrets masked.\n\n",
    );
    out.push_str("Durations are written like `30s`, `15m`, `12h`, `1h 30m`.\n");
    let mut section = String::new();
    for entry in reference_entries() {
        let this_section = entry.key.split('.').next().unwrap_or("").to_owned();
        if this_section != section {
            section = this_section;
            out.push_str(&format!("\n## `[{section}]`\n\n{}\n\n", entry.section_doc));
            out.push_str("| Key | Type | Default | Environment / flag | Description |\n");
            out.push_str("| --- | --- | --- | --- | --- |\n");
        }
        let field = entry.key.split_once('.').map(|(_, f)| f).unwrap_or(&entry.key);
        let mut how = if entry.key.contains("[]") { "—".to_owned() } else { format!("`{}`", env_name(&entry.key)) };
        // Some settings have two flags (`--oidc-provider`, `--oidc-providers`).
        for (_, flag, legacy) in flags.iter().filter(|(key, _, _)| *key == entry.key) {
            how.push_str(&format!("<br>`{flag}`"));
            if let Some(legacy) = legacy {
                how.push_str(&format!("<br>`{legacy}`"));
            }
        }
        let default = if entry.default.is_empty() { String::new() } else { format!("`{}`", entry.default) };
        out.push_str(&format!(
            "| `{field}` | {} | {default} | {how} | {} |\n",
            entry.kind,
            entry.doc.replace('|', "\\|")
        ));
    }
    out.push_str("\n## Example\n\n```toml\n");
    out.push_str(&Settings::default().to_masked_toml().unwrap_or_default());
    out.push_str("```\n");
    out
}

/// Turns figment's error into one line per problem, each naming the key.
fn describe_figment_error(error: figment::Error) -> String {
    let mut lines = Vec::new();
    for e in error {
        let key = e.path.join(".");
        let source = e
            .metadata
            .as_ref()
            .map(|m| match &m.source {
                Some(source) => format!("{} {source}", m.name),
                None => m.name.to_string(),
            })
            .unwrap_or_default();
        let kind = e.kind.to_string();
        let line = match (&e.kind, key.is_empty()) {
            (figment::error::Kind::UnknownField(field, _), _) => {
                let full = if key.is_empty() { field.clone() } else { format!("{key}.{field}") };
                format!("unknown key `{full}` ({source})")
            }
            (_, false) => format!("{key}: {kind} ({source})"),
            (_, true) => format!("{kind} ({source})"),
        };
        lines.push(line);
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oidc_providers_parse_and_validate() {
        let ok = parse_oidc_provider(
            r#"{"id":"corp","issuer":"https://id.corp.example","client_id":"c","client_secret":"s"}"#,
        )
        .unwrap();
        assert_eq!(ok.secret(), Ok(Some("s".to_owned())));
        assert!(!format!("{ok:?}").contains("\"s\""), "the secret never shows in Debug");
        assert!(parse_oidc_provider(r#"{"id":"Bad Id","issuer":"https://x","client_id":"c"}"#).is_err());
        assert!(parse_oidc_provider(r#"{"id":"x","issuer":"not a url","client_id":"c"}"#).is_err());
        assert!(parse_oidc_provider(r#"{"id":"x","issuer":"https://x","client_id":"c","typo":1}"#).is_err());
        let list = parse_oidc_provider_list(r#"[{"id":"a","issuer":"https://a","client_id":"c"}]"#).unwrap();
        assert_eq!(list.0.len(), 1);
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn layers_override_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.toml");
        std::fs::write(&file, "[server]\nlisten = \"127.0.0.1:4000\"\n[sessions]\nidle_timeout = \"10m\"\n").unwrap();
        let s = Settings::load(Some(&file), &[], &[]).unwrap();
        assert_eq!(s.server.listen, "127.0.0.1:4000");
        assert_eq!(s.sessions.idle_timeout, Duration::from_secs(600));
        let e = env(&[("TESSERA_SERVER__LISTEN", "127.0.0.1:5000"), ("TESSERA_CONFIG", "x"), ("TESSERA_OTHER", "y")]);
        let s = Settings::load(Some(&file), &e, &[]).unwrap();
        assert_eq!(s.server.listen, "127.0.0.1:5000");
        let s = Settings::load(Some(&file), &e, &[("server.listen", Value::from("127.0.0.1:6000"))]).unwrap();
        assert_eq!(s.server.listen, "127.0.0.1:6000");
        let e = env(&[("TESSERA_SERVER__TRUSTED_PROXIES", "10.0.0.0/8, ::1"), ("TESSERA_COOKIE__SECURE", "false")]);
        let s = Settings::load(None, &e, &[]).unwrap();
        assert_eq!(s.server.trusted_proxies, vec!["10.0.0.0/8", "::1"]);
        assert!(!s.cookie.secure);
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.toml");
        std::fs::write(&file, "[sessions]\nidle_timeot = \"10m\"\n").unwrap();
        let error = Settings::load(Some(&file), &[], &[]).unwrap_err().to_string();
        assert!(error.contains("idle_timeot"), "{error}");
        std::fs::write(&file, "[sessions]\nidle_timeout = \"soon\"\n").unwrap();
        let error = Settings::load(Some(&file), &[], &[]).unwrap_err().to_string();
        assert!(error.contains("sessions.idle_timeout"), "{error}");
        std::fs::write(&file, "[cookie]\nsame_site = \"none\"\n").unwrap();
        let error = Settings::load(Some(&file), &[], &[]).unwrap_err().to_string();
        assert!(error.contains("cookie.same_site"), "{error}");
        std::fs::write(&file, "[sessions]\nidle_timeout = \"13h\"\n").unwrap();
        let error = Settings::load(Some(&file), &[], &[]).unwrap_err().to_string();
        assert!(error.contains("sessions.absolute_timeout"), "{error}");
        std::fs::write(&file, "[server]\ntrusted_proxies = [\"10.0.0.0/99\"]\n").unwrap();
        let error = Settings::load(Some(&file), &[], &[]).unwrap_err().to_string();
        assert!(error.contains("server.trusted_proxies"), "{error}");
    }

    #[test]
    fn access_rules_and_registration_from_toml_and_env() {
        use crate::access_rules::Policy;
        use crate::registration_policy::RegistrationPolicy;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.toml");
        std::fs::write(
            &file,
            "[accounts]\nregistration = \"invite\"\n\
             [[forward_auth.rules]]\nhosts = [\"*.corp.example\"]\npaths = [\"/admin\"]\npolicy = \"deny\"\n\
             [[forward_auth.rules]]\nhosts = [\"wiki.corp.example\"]\npolicy = \"two_factor\"\ngroups = [\"staff\"]\n",
        )
        .unwrap();
        let s = Settings::load(Some(&file), &[], &[]).unwrap();
        assert_eq!(s.accounts.registration, RegistrationPolicy::Invite);
        assert_eq!(s.forward_auth.rules.len(), 2);
        assert_eq!(s.forward_auth.rules[1].policy, Policy::TwoFactor);
        assert_eq!(s.forward_auth.rules[1].groups, vec!["staff"]);
        let e = env(&[
            ("TESSERA_FORWARD_AUTH__RULES", r#"[{"hosts":["app.example.com"],"policy":"one_factor"}]"#),
            ("TESSERA_ACCOUNTS__REGISTRATION", "closed"),
        ]);
        let s = Settings::load(Some(&file), &e, &[]).unwrap();
        assert_eq!(s.forward_auth.rules.len(), 1, "the variable replaces the file's list");
        assert_eq!(s.accounts.registration, RegistrationPolicy::Closed);
        std::fs::write(&file, "[[forward_auth.rules]]\nhosts = [\"https://x\"]\npolicy = \"deny\"\n").unwrap();
        let error = Settings::load(Some(&file), &[], &[]).unwrap_err().to_string();
        assert!(error.contains("forward_auth.rules[0]"), "{error}");
        std::fs::write(&file, "[[forward_auth.rules]]\nhosts = [\"x\"]\npolicy = \"allow\"\n").unwrap();
        let error = Settings::load(Some(&file), &[], &[]).unwrap_err().to_string();
        assert!(error.contains("forward_auth.rules"), "{error}");
        std::fs::write(&file, "[accounts]\nregistration = \"maybe\"\n").unwrap();
        let error = Settings::load(Some(&file), &[], &[]).unwrap_err().to_string();
        assert!(error.contains("accounts.registration"), "{error}");
    }

    #[test]
    fn trusted_proxies_are_validated_and_parsed_by_the_one_parser() {
        let mut settings = Settings::default();
        settings.server.trusted_proxies = vec!["10.0.0.0/8".into(), " ::1 ".into()];
        assert!(settings.validate().is_ok());
        let proxies = crate::client_ip::TrustedProxies::new(settings.trusted_proxy_networks());
        assert!(proxies.contains("10.1.2.3".parse().unwrap()));
        assert!(proxies.contains("::ffff:10.0.0.1".parse().unwrap()));
        assert!(proxies.contains("::1".parse().unwrap()));
        assert!(!proxies.contains("11.1.2.3".parse().unwrap()));
        settings.server.trusted_proxies.push("nope".into());
        assert!(settings.validate().is_err());
    }

    #[test]
    fn reference_lists_every_key_with_docs_and_defaults() {
        let entries = reference_entries();
        assert!(entries.len() >= 20, "{entries:?}");
        for entry in &entries {
            assert!(!entry.doc.is_empty(), "{} has no doc comment", entry.key);
            assert!(!entry.section_doc.is_empty(), "{} section has no doc comment", entry.key);
        }
        let idle = entries.iter().find(|e| e.key == "sessions.idle_timeout").unwrap();
        assert_eq!(idle.default, "\"30m\"");
    }

    #[test]
    fn masked_toml_hides_passwords() {
        let mut s = Settings::default();
        s.database.url = "postgres://u:hunter2@h/db".into();
        let text = s.to_masked_toml().unwrap();
        assert!(!text.contains("hunter2") && text.contains("u:***@h"), "{text}");
    }
}
