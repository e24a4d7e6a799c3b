//! The command line: `tessera [serve] [FLAGS]`, `tessera config …`,
//! `tessera sessions stats`, `tessera admin …`.
//!
//! Flags are the highest layer of the configuration (see
//! [`crate::settings`]); a flag left out leaves the file, environment or
//! default value in place.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use ipnet::IpNet;
use serde_json::Value;

use crate::client_ip::parse_trusted_proxy;
use crate::forward_auth::parse_forward_header;
use crate::oidc::OidcProviderConfig;
use crate::settings::{parse_oidc_provider, parse_oidc_provider_list, OidcProviderList};

/// tessera: a session and authentication service.
#[derive(Debug, Parser)]
#[command(name = "tessera", version, about)]
pub struct Cli {
    /// A TOML configuration file; every setting is described in
    /// docs/configuration.md (`tessera config reference`).
    #[arg(long, env = "TESSERA_CONFIG", global = true)]
    pub config: Option<PathBuf>,

    /// Log format: text (human-readable) or json.
    #[arg(long, env = "TESSERA_LOG_FORMAT", global = true, value_parser = ["text", "json"])]
    pub log_format: Option<String>,

    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Flags for `serve` when no subcommand is given.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the web server (the default).
    Serve(Box<ServeArgs>),
    /// Manage the keys that sign API access tokens.
    Keys {
        /// What to do with them.
        #[command(subcommand)]
        action: KeysCommand,
    },
    /// Check or document the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Look at sessions.
    #[command(subcommand)]
    Sessions(SessionsCommand),
    /// Administer users, sessions and keys.
    Admin(AdminArgs),
}

/// `tessera keys …`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Generate a new signing key. New access tokens carry its kid; the old
    /// public keys stay in the JWKS and keep verifying until the tokens they
    /// signed have expired. Running servers pick the new key up within 30 s.
    Rotate(DatabaseArgs),
}

/// Just the database.
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// sqlite://FILE or postgres://USER@HOST/DB, as for `serve`.
    /// [config: database.url; default: sqlite://tessera.db]
    #[arg(long, env = "TESSERA_DATABASE_URL")]
    pub database: Option<String>,
}

impl DatabaseArgs {
    /// The settings these flags override.
    pub fn overrides(&self) -> Vec<(&'static str, Value)> {
        self.database.iter().map(|url| ("database.url", Value::from(url.as_str()))).collect()
    }
}

/// `tessera config …`
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration (file, environment, flags) and print the
    /// effective one, passwords masked. Exit code 0 if valid, 2 if not.
    Check(Box<ServeArgs>),
    /// Print the reference of every setting as Markdown (docs/configuration.md).
    Reference,
}

/// `tessera sessions …`
#[derive(Debug, Subcommand)]
pub enum SessionsCommand {
    /// Sessions created, active sessions, logins and failures per hour, as a
    /// chart in the terminal (and optionally an SVG file).
    Stats(StatsArgs),
}

/// Flags of `tessera sessions stats`.
#[derive(Debug, Clone, Args)]
pub struct StatsArgs {
    /// How many hours back to show.
    #[arg(long, default_value_t = 24)]
    pub hours: u32,
    /// Also draw the chart into this SVG file.
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// Where users live (overrides the configuration).
    #[command(flatten)]
    pub stores: StoreArgs,
}

/// `tessera admin …`
#[derive(Debug, Args)]
pub struct AdminArgs {
    /// Which database and store (override the configuration).
    #[command(flatten)]
    pub stores: StoreArgs,
    /// The action.
    #[command(subcommand)]
    pub command: AdminCommand,
}

/// Administrative actions. Exit codes: 0 done, 1 failed (a store or the
/// database did not answer), 2 bad usage or configuration, 3 no such user,
/// 4 refused (e.g. the name is taken).
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// List or revoke a user's sessions, or purge expired ones.
    #[command(subcommand)]
    Sessions(AdminSessionsCommand),
    /// Rotate keys: adds a new cookie sealing key (older ones keep opening
    /// existing cookies).
    RotateKeys,
    /// The audit trail.
    #[command(subcommand)]
    Audit(AdminAuditCommand),
    /// Put users in groups (for forward-auth access rules; `admin` may
    /// change anyone's products), take them out, list groups.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Invitations to register (`accounts.registration = "invite"`).
    #[command(subcommand)]
    Invite(InviteCommand),
}

/// `tessera admin audit …`
#[derive(Debug, Subcommand)]
pub enum AdminAuditCommand {
    /// Delete audit events older than the retention (`audit.retention`,
    /// default 400 days) now; the server also does this in the background.
    Purge {
        /// Delete events older than this instead (e.g. 90d).
        #[arg(long, value_parser = parse_duration)]
        older_than: Option<Duration>,
    },
}

/// `tessera admin group …`
#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// Add a user to a group (created by its first member).
    Add {
        /// The group.
        group: String,
        /// The user name.
        username: String,
    },
    /// Remove a user from a group.
    Remove {
        /// The group.
        group: String,
        /// The user name.
        username: String,
    },
    /// List groups and their members (or one group's members).
    List {
        /// Only this group.
        group: Option<String>,
    },
}

/// `tessera admin invite …`
#[derive(Debug, Subcommand)]
pub enum InviteCommand {
    /// Create a single-use invitation and print its link (with
    /// server.public_url; else the path) once: only a hash is stored.
    Create {
        /// Put the new account in this group (repeatable).
        #[arg(long = "group")]
        groups: Vec<String>,
        /// How long the invitation works, e.g. 7d, 12h.
        #[arg(long, default_value = "7d", value_parser = parse_expiry)]
        expires: std::time::Duration,
    },
    /// List unused, unexpired invitations (expiry and groups; the links
    /// cannot be shown again).
    List,
}

fn parse_expiry(text: &str) -> Result<std::time::Duration, String> {
    let duration = humantime::parse_duration(text).map_err(|e| format!("{text:?}: {e} (expected e.g. 7d, 12h)"))?;
    if duration.is_zero() || duration > std::time::Duration::from_secs(366 * 24 * 3600) {
        return Err(format!("{text:?}: between a second and a year"));
    }
    Ok(duration)
}

/// `tessera admin user …`
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user. The password is read from standard input (first line)
    /// with --password-stdin, else a random one is generated and printed once.
    Create {
        /// The user name.
        username: String,
        /// Read the password from standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Disable a user: logging in is refused and every session ends.
    Disable {
        /// The user name.
        username: String,
    },
    /// Enable a disabled user.
    Enable {
        /// The user name.
        username: String,
    },
    /// Set a new password (from standard input with --password-stdin, else
    /// generated and printed once) and end every session of the user.
    ResetPassword {
        /// The user name.
        username: String,
        /// Read the password from standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Turn two-step verification off for a user who lost both the
    /// authenticator app and the recovery codes (verify who asks first!),
    /// and end every session of the user.
    ResetSecondFactor {
        /// The user name.
        username: String,
    },
}

/// `tessera admin sessions …`
#[derive(Debug, Subcommand)]
pub enum AdminSessionsCommand {
    /// List a user's live sessions: handle, created, last active, expires, device.
    List {
        /// The user name.
        username: String,
    },
    /// End one session of a user (--handle) or all of them (--all).
    Revoke {
        /// The user name.
        username: String,
        /// The session's handle, as `list` prints it.
        #[arg(long, conflicts_with = "all", required_unless_present = "all")]
        handle: Option<String>,
        /// Every session of the user.
        #[arg(long)]
        all: bool,
    },
    /// Remove expired sessions now (stores without native expiry).
    PurgeExpired,
}

/// Where users and sessions live; shared by `serve`, `admin` and `sessions`.
#[derive(Debug, Clone, Default, Args)]
pub struct StoreArgs {
    /// Where users and generated secrets live: sqlite://FILE (created and
    /// migrated on first start) or postgres://USER@HOST/DB.
    /// [config: database.url; default: sqlite://tessera.db]
    #[arg(long, env = "TESSERA_DATABASE_URL")]
    pub database: Option<String>,

    /// Where sessions live: memory://, sqlite://FILE, postgres://…,
    /// mysql://USER@HOST:PORT/DB, mongodb://HOST:PORT/DB, redis://HOST:PORT,
    /// redis+cluster://HOST:PORT,HOST:PORT,… or cookie://.
    /// [config: sessions.store; default: the database]
    #[arg(long, env = "TESSERA_SESSION_STORE")]
    pub session_store: Option<String>,
}

/// Flags of `tessera serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on. [config: server.listen; default: 127.0.0.1:3000]
    #[arg(long, env = "TESSERA_LISTEN")]
    pub listen: Option<String>,

    /// Database and session store.
    #[command(flatten)]
    pub stores: StoreArgs,

    /// A session unused this long ends (e.g. 30m, 2h).
    /// [config: sessions.idle_timeout; default: 30m]
    #[arg(long, env = "TESSERA_SESSION_IDLE_TIMEOUT", value_parser = parse_duration)]
    pub session_idle_timeout: Option<Duration>,

    /// A session ends this long after login, however active (e.g. 12h).
    /// [config: sessions.absolute_timeout; default: 12h]
    #[arg(long, env = "TESSERA_SESSION_ABSOLUTE_TIMEOUT", value_parser = parse_duration)]
    pub session_absolute_timeout: Option<Duration>,

    /// Longest wait for the session store before answering 503 (e.g. 3s).
    /// [config: sessions.store_timeout; default: 3s]
    #[arg(long, env = "TESSERA_STORE_TIMEOUT", value_parser = parse_duration)]
    pub store_timeout: Option<Duration>,

    /// Mark cookies Secure (HTTPS only; browsers also accept them on
    /// http://localhost). Turn off only for plain-HTTP development on
    /// another host name. [config: cookie.secure; default: true]
    #[arg(long, env = "TESSERA_COOKIE_SECURE", action = clap::ArgAction::Set)]
    pub cookie_secure: Option<bool>,

    /// SameSite policy of the session cookie: lax or strict.
    /// [config: cookie.same_site; default: lax]
    #[arg(long, env = "TESSERA_COOKIE_SAME_SITE", value_parser = ["lax", "strict"])]
    pub cookie_same_site: Option<String>,

    /// Address of the separate metrics listener (GET /metrics), e.g.
    /// 127.0.0.1:9300; "" for none. [config: metrics.listen; default: none]
    #[arg(long, env = "TESSERA_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,

    /// How long in-flight requests may take to finish after SIGTERM/SIGINT.
    /// [config: server.shutdown_timeout; default: 30s]
    #[arg(long, env = "TESSERA_SHUTDOWN_TIMEOUT", value_parser = parse_duration)]
    pub shutdown_timeout: Option<Duration>,

    /// Largest request body accepted, in bytes; larger ones get 413.
    /// [config: server.max_body_bytes; default: 65536]
    #[arg(long, env = "TESSERA_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,

    /// Serve HTTPS with this PEM certificate chain (with --tls-key).
    /// [config: tls.cert; default: none]
    #[arg(long, env = "TESSERA_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// The PEM private key for --tls-cert, mode 0600 (a key others can read
    /// is refused). [config: tls.key; default: none]
    #[arg(long, env = "TESSERA_TLS_KEY")]
    pub tls_key: Option<PathBuf>,

    /// Send Strict-Transport-Security even without --tls-cert (when a
    /// TLS-terminating proxy is in front). Always on with --tls-cert.
    /// [config: tls.hsts; default: false]
    #[arg(long, env = "TESSERA_HSTS")]
    pub hsts: bool,

    /// Lifetime of API access tokens (e.g. 15m).
    /// [config: tokens.access_ttl; default: 15m]
    #[arg(long, env = "TESSERA_ACCESS_TOKEN_TTL", value_parser = parse_duration)]
    pub access_token_ttl: Option<Duration>,

    /// An API refresh token unused this long expires (e.g. 30d).
    /// [config: tokens.refresh_ttl; default: 30days]
    #[arg(long, env = "TESSERA_REFRESH_TOKEN_TTL", value_parser = parse_duration)]
    pub refresh_token_ttl: Option<Duration>,

    /// A chain of API refresh tokens ends this long after its sign-in,
    /// however often it is used (e.g. 30d).
    /// [config: tokens.refresh_family_lifetime; default: 30days]
    #[arg(long, env = "TESSERA_REFRESH_FAMILY_LIFETIME", value_parser = parse_duration)]
    pub refresh_family_lifetime: Option<Duration>,

    /// The `iss` claim of access tokens. [config: tokens.issuer; default:
    /// the server's URL: --public-url, else http(s)://LISTEN]
    #[arg(long, env = "TESSERA_TOKEN_ISSUER")]
    pub token_issuer: Option<String>,

    /// Share the session cookie with sibling hosts (e.g. example.com for
    /// app.example.com and wiki.example.com behind forward-auth). The cookie
    /// is then named __Secure-id instead of __Host-id, which forbids a Domain.
    /// [config: cookie.domain; default: none]
    #[arg(long, env = "TESSERA_COOKIE_DOMAIN")]
    pub cookie_domain: Option<String>,

    /// The address browsers use for tessera, e.g. https://auth.example.com.
    /// Needed for OpenID Connect (callback URLs), used for forward-auth
    /// login redirects and accepted as the Origin of form posts (behind a
    /// proxy that rewrites Host). [config: server.public_url; default: none]
    #[arg(long, env = "TESSERA_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// An OpenID Connect provider as a JSON object, e.g.
    /// '{"id":"corp","issuer":"https://id.corp.example","client_id":"tessera","client_secret_env":"CORP_SECRET"}'.
    /// Repeat for several. [config: oidc.providers; default: none]
    #[arg(long = "oidc-provider", value_parser = parse_oidc_provider)]
    pub oidc_provider: Vec<OidcProviderConfig>,

    /// OpenID Connect providers as a JSON array of the same objects (added
    /// after those of --oidc-provider). [config: oidc.providers]
    #[arg(long, env = "TESSERA_OIDC_PROVIDERS", value_parser = parse_oidc_provider_list, hide_env_values = true)]
    pub oidc_providers: Option<OidcProviderList>,

    /// A reverse proxy (IP or CIDR) whose X-Forwarded-For, X-Forwarded-*,
    /// X-Original-URL and x-request-id headers are believed: client
    /// addresses (throttling, device lists), original URLs (/auth/verify)
    /// and request IDs. Repeat, or separate with commas; without it those
    /// headers are ignored. [config: server.trusted_proxies; default: none]
    #[arg(long = "trusted-proxy", env = "TESSERA_TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_trusted_proxy)]
    pub trusted_proxies: Vec<IpNet>,

    /// A host behind forward-auth that the login page may send users back to
    /// (app.example.com, app.example.com:8443, or *.example.com). Repeat, or
    /// separate with commas. [config: forward_auth.protected_hosts; default: none]
    #[arg(long = "protected-host", env = "TESSERA_PROTECTED_HOSTS", value_delimiter = ',')]
    pub protected_hosts: Vec<String>,

    /// An extra header of /auth/verify answers: NAME=FIELD with FIELD one of
    /// username, id, email (e.g. X-Remote-User=username). Repeatable.
    /// [config: forward_auth.headers; default: none]
    #[arg(long = "forward-auth-header", value_parser = checked_forward_header)]
    pub forward_auth_headers: Vec<String>,

    /// Fewest characters a new password may have (8 to 64; passwords of 64
    /// characters are always long enough).
    /// [config: passwords.min_chars; default: 12]
    #[arg(long, env = "TESSERA_MIN_PASSWORD_LENGTH",
          value_parser = clap::builder::TypedValueParser::map(clap::value_parser!(u16).range(8..=64), usize::from))]
    pub min_password_length: Option<usize>,

    /// Every login must pass two-step verification: accounts without it set
    /// up an authenticator app at their next login.
    /// [config: passwords.require_second_factor; default: false]
    #[arg(long, env = "TESSERA_REQUIRE_SECOND_FACTOR")]
    pub require_second_factor: bool,
}

/// Checks `NAME=FIELD` (`--forward-auth-header`) and keeps the text, which
/// is what the configuration holds.
fn checked_forward_header(text: &str) -> Result<String, String> {
    parse_forward_header(text).map(|_| text.trim().to_owned())
}

impl ServeArgs {
    /// Every OpenID Connect provider given by flags: `--oidc-provider`, then
    /// `TESSERA_OIDC_PROVIDERS`.
    pub fn all_oidc_providers(&self) -> Vec<OidcProviderConfig> {
        let mut all = self.oidc_provider.clone();
        if let Some(list) = &self.oidc_providers {
            all.extend(list.0.iter().cloned());
        }
        all
    }
}

/// Which flag (and the environment variable clap reads for it) sets which
/// setting, for the reference: `(setting key, flag, variable)`.
pub fn flag_settings() -> Vec<(String, String, Option<String>)> {
    use clap::CommandFactory;
    let command = Cli::command();
    let keys = [
        ("listen", "server.listen"),
        ("database", "database.url"),
        ("session_store", "sessions.store"),
        ("session_idle_timeout", "sessions.idle_timeout"),
        ("session_absolute_timeout", "sessions.absolute_timeout"),
        ("store_timeout", "sessions.store_timeout"),
        ("cookie_secure", "cookie.secure"),
        ("cookie_same_site", "cookie.same_site"),
        ("metrics_listen", "metrics.listen"),
        ("shutdown_timeout", "server.shutdown_timeout"),
        ("max_body_bytes", "server.max_body_bytes"),
        ("min_password_length", "passwords.min_chars"),
        ("require_second_factor", "passwords.require_second_factor"),
        ("log_format", "log.format"),
        ("tls_cert", "tls.cert"),
        ("tls_key", "tls.key"),
        ("hsts", "tls.hsts"),
        ("access_token_ttl", "tokens.access_ttl"),
        ("refresh_token_ttl", "tokens.refresh_ttl"),
        ("refresh_family_lifetime", "tokens.refresh_family_lifetime"),
        ("token_issuer", "tokens.issuer"),
        ("cookie_domain", "cookie.domain"),
        ("public_url", "server.public_url"),
        ("oidc_provider", "oidc.providers"),
        ("oidc_providers", "oidc.providers"),
        ("trusted_proxies", "server.trusted_proxies"),
        ("protected_hosts", "forward_auth.protected_hosts"),
        ("forward_auth_headers", "forward_auth.headers"),
    ];
    keys.iter()
        .filter_map(|(id, key)| {
            let arg = command.get_arguments().find(|a| a.get_id().as_str() == *id)?;
            let flag = format!("--{}", arg.get_long()?);
            let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
            Some((key.to_string(), flag, env))
        })
        .collect()
}

impl StoreArgs {
    /// The settings these flags override.
    pub fn overrides(&self) -> Vec<(&'static str, Value)> {
        let mut out = Vec::new();
        if let Some(database) = &self.database {
            out.push(("database.url", Value::from(database.as_str())));
        }
        if let Some(store) = &self.session_store {
            out.push(("sessions.store", Value::from(store.as_str())));
        }
        out
    }
}

impl ServeArgs {
    /// The settings these flags override.
    pub fn overrides(&self) -> Vec<(&'static str, Value)> {
        let text = |d: &Duration| Value::from(humantime::format_duration(*d).to_string());
        let mut out = self.stores.overrides();
        if let Some(listen) = &self.listen {
            out.push(("server.listen", Value::from(listen.as_str())));
        }
        if let Some(d) = &self.session_idle_timeout {
            out.push(("sessions.idle_timeout", text(d)));
        }
        if let Some(d) = &self.session_absolute_timeout {
            out.push(("sessions.absolute_timeout", text(d)));
        }
        if let Some(d) = &self.store_timeout {
            out.push(("sessions.store_timeout", text(d)));
        }
        if let Some(secure) = self.cookie_secure {
            out.push(("cookie.secure", Value::from(secure)));
        }
        if let Some(same_site) = &self.cookie_same_site {
            out.push(("cookie.same_site", Value::from(same_site.as_str())));
        }
        if let Some(listen) = &self.metrics_listen {
            out.push(("metrics.listen", Value::from(listen.as_str())));
        }
        if let Some(d) = &self.shutdown_timeout {
            out.push(("server.shutdown_timeout", text(d)));
        }
        if let Some(chars) = self.min_password_length {
            out.push(("passwords.min_chars", Value::from(chars)));
        }
        if let Some(bytes) = self.max_body_bytes {
            out.push(("server.max_body_bytes", Value::from(bytes)));
        }
        let path = |p: &PathBuf| Value::from(p.to_string_lossy().into_owned());
        if let Some(cert) = &self.tls_cert {
            out.push(("tls.cert", path(cert)));
        }
        if let Some(key) = &self.tls_key {
            out.push(("tls.key", path(key)));
        }
        // A switch: present turns HSTS on; absent leaves the setting alone.
        if self.hsts {
            out.push(("tls.hsts", Value::from(true)));
        }
        if self.require_second_factor {
            out.push(("passwords.require_second_factor", Value::from(true)));
        }
        if let Some(d) = &self.access_token_ttl {
            out.push(("tokens.access_ttl", text(d)));
        }
        if let Some(d) = &self.refresh_token_ttl {
            out.push(("tokens.refresh_ttl", text(d)));
        }
        if let Some(d) = &self.refresh_family_lifetime {
            out.push(("tokens.refresh_family_lifetime", text(d)));
        }
        if let Some(issuer) = &self.token_issuer {
            out.push(("tokens.issuer", Value::from(issuer.as_str())));
        }
        if let Some(domain) = &self.cookie_domain {
            out.push(("cookie.domain", Value::from(domain.as_str())));
        }
        if let Some(url) = &self.public_url {
            out.push(("server.public_url", Value::from(url.as_str())));
        }
        let providers = self.all_oidc_providers();
        if !providers.is_empty() {
            // Serialized with their secrets: the value only travels to the
            // settings, whose output masks them.
            let list = providers.iter().filter_map(|p| serde_json::to_value(p).ok()).collect();
            out.push(("oidc.providers", Value::Array(list)));
        }
        // Lists given by flags replace the configured list, like every other
        // flag replaces its setting.
        let strings = |items: Vec<String>| Value::Array(items.into_iter().map(Value::from).collect());
        if !self.trusted_proxies.is_empty() {
            out.push(("server.trusted_proxies", strings(self.trusted_proxies.iter().map(|n| n.to_string()).collect())));
        }
        if !self.protected_hosts.is_empty() {
            out.push(("forward_auth.protected_hosts", strings(self.protected_hosts.clone())));
        }
        if !self.forward_auth_headers.is_empty() {
            out.push(("forward_auth.headers", strings(self.forward_auth_headers.clone())));
        }
        out
    }
}

/// Parses human durations such as `2s`, `30m`, `12h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text).map_err(|e| format!("{e} (expected e.g. 2s, 30m, 12h)"))?;
    if duration.is_zero() {
        return Err("must be longer than zero".to_owned());
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed_and_parses_durations() {
        Cli::command().debug_assert();
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("12h"), Ok(Duration::from_secs(12 * 3600)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("0s").is_err());
    }

    #[test]
    fn oidc_and_forward_auth_flags() {
        let cli = Cli::try_parse_from([
            "tessera",
            "--oidc-provider",
            r#"{"id":"a","issuer":"https://a.example","client_id":"c","client_secret":"s"}"#,
            "--trusted-proxy",
            "127.0.0.1,10.0.0.0/8",
            "--protected-host",
            "app.example.com",
            "--forward-auth-header",
            "X-Remote-User=username",
            "--cookie-domain",
            "example.com",
        ])
        .unwrap();
        assert_eq!(cli.serve.all_oidc_providers().len(), 1);
        assert_eq!(cli.serve.trusted_proxies.len(), 2);
        assert_eq!(cli.serve.protected_hosts, ["app.example.com"]);
        assert_eq!(cli.serve.forward_auth_headers.len(), 1);
        assert_eq!(cli.serve.cookie_domain.as_deref(), Some("example.com"));
        assert!(Cli::try_parse_from(["tessera", "--oidc-provider", "{}"]).is_err());
    }

    #[test]
    fn every_flag_names_a_real_setting() {
        let flags = flag_settings();
        assert_eq!(flags.len(), 28, "{flags:?}");
        let keys = crate::settings::setting_keys();
        for (key, _, _) in flags {
            assert!(keys.contains(&key), "{key}");
        }
    }

    /// The audit of issue #9, kept true: a new `serve` flag must be a
    /// setting (listed in `flag_settings`) or the reference misses it.
    #[test]
    fn every_serve_flag_is_a_setting() {
        let mapped: Vec<String> = flag_settings().into_iter().map(|(_, flag, _)| flag).collect();
        let command = Cli::command();
        let serve = command.find_subcommand("serve").unwrap();
        for arg in serve.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if matches!(long, "config" | "help") {
                continue;
            }
            assert!(mapped.contains(&format!("--{long}")), "--{long} sets no setting");
        }
    }

    #[test]
    fn password_length_and_trusted_proxies() {
        let cli = Cli::try_parse_from(["tessera"]).unwrap();
        assert_eq!(cli.serve.min_password_length, None, "the default comes from the settings (12)");
        assert!(cli.serve.trusted_proxies.is_empty());
        let cli = Cli::try_parse_from([
            "tessera",
            "--min-password-length",
            "15",
            "--trusted-proxy",
            "10.0.0.0/8",
            "--trusted-proxy",
            "::1",
        ])
        .unwrap();
        assert_eq!(cli.serve.min_password_length, Some(15));
        assert_eq!(cli.serve.trusted_proxies.len(), 2);
        for bad in [["--min-password-length", "7"], ["--min-password-length", "65"], ["--trusted-proxy", "nope"]] {
            assert!(Cli::try_parse_from(["tessera", bad[0], bad[1]]).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn group_and_invite_commands_parse() {
        let cli = Cli::try_parse_from([
            "tessera",
            "admin",
            "invite",
            "create",
            "--group",
            "staff",
            "--group",
            "ops",
            "--expires",
            "12h",
        ])
        .unwrap();
        let Some(Command::Admin(args)) = cli.command else { panic!("an admin command") };
        let AdminCommand::Invite(InviteCommand::Create { groups, expires }) = args.command else { panic!("invite") };
        assert_eq!((groups, expires), (vec!["staff".to_owned(), "ops".to_owned()], Duration::from_secs(12 * 3600)));
        let cli = Cli::try_parse_from(["tessera", "admin", "invite", "create"]).unwrap();
        let Some(Command::Admin(args)) = cli.command else { panic!("an admin command") };
        let AdminCommand::Invite(InviteCommand::Create { expires, .. }) = args.command else { panic!("invite") };
        assert_eq!(expires, Duration::from_secs(7 * 24 * 3600), "a week by default");
        for bad in ["0s", "2y", "soon"] {
            assert!(Cli::try_parse_from(["tessera", "admin", "invite", "create", "--expires", bad]).is_err(), "{bad}");
        }
        let cli = Cli::try_parse_from(["tessera", "admin", "group", "add", "staff", "bob"]).unwrap();
        let Some(Command::Admin(args)) = cli.command else { panic!("an admin command") };
        assert!(matches!(args.command, AdminCommand::Group(GroupCommand::Add { .. })));
        assert!(Cli::try_parse_from(["tessera", "admin", "group", "list"]).is_ok());
        assert!(Cli::try_parse_from(["tessera", "admin", "group", "remove", "staff"]).is_err(), "needs a user");
    }
}
