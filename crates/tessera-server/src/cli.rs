//! The command line: `tessera [serve] [FLAGS]`.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use ipnet::IpNet;

use crate::forward_auth::{parse_forward_header, parse_trusted_proxy, ForwardHeader};
use crate::oidc::{parse_provider, parse_provider_list, OidcProviderConfig, OidcProviderList};

/// tessera: a session and authentication service.
#[derive(Debug, Parser)]
#[command(name = "tessera", version, about, args_conflicts_with_subcommands = true)]
pub struct Cli {
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
    #[arg(long, env = "TESSERA_DATABASE_URL", default_value = "sqlite://tessera.db")]
    pub database: String,
}

/// Flags of `tessera serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "TESSERA_LISTEN", default_value = "127.0.0.1:3000")]
    pub listen: String,

    /// Where users and generated secrets live: sqlite://FILE (created and
    /// migrated on first start) or postgres://USER@HOST/DB.
    #[arg(long, env = "TESSERA_DATABASE_URL", default_value = "sqlite://tessera.db")]
    pub database: String,

    /// Where sessions live: memory://, sqlite://FILE, postgres://…,
    /// redis://HOST:PORT or redis+cluster://HOST:PORT,HOST:PORT,… Default: the database.
    #[arg(long, env = "TESSERA_SESSION_STORE")]
    pub session_store: Option<String>,

    /// A session unused this long ends (e.g. 30m, 2h).
    #[arg(long, env = "TESSERA_SESSION_IDLE_TIMEOUT", default_value = "30m", value_parser = parse_duration)]
    pub session_idle_timeout: Duration,

    /// A session ends this long after login, however active (e.g. 12h).
    #[arg(long, env = "TESSERA_SESSION_ABSOLUTE_TIMEOUT", default_value = "12h", value_parser = parse_duration)]
    pub session_absolute_timeout: Duration,

    /// Longest wait for the session store before answering 503 (e.g. 3s).
    #[arg(long, env = "TESSERA_STORE_TIMEOUT", default_value = "3s", value_parser = parse_duration)]
    pub store_timeout: Duration,

    /// Mark cookies Secure (HTTPS only; browsers also accept them on
    /// http://localhost). Turn off only for plain-HTTP development on
    /// another host name.
    #[arg(long, env = "TESSERA_COOKIE_SECURE", default_value_t = true, action = clap::ArgAction::Set)]
    pub cookie_secure: bool,

    /// Serve HTTPS with this PEM certificate chain (with --tls-key).
    #[arg(long, env = "TESSERA_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,

    /// The PEM private key for --tls-cert.
    #[arg(long, env = "TESSERA_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,

    /// Send Strict-Transport-Security even without --tls-cert (when a
    /// TLS-terminating proxy is in front). Always on with --tls-cert.
    #[arg(long, env = "TESSERA_HSTS", default_value_t = false)]
    pub hsts: bool,

    /// SameSite policy of the session cookie: lax or strict.
    #[arg(long, env = "TESSERA_COOKIE_SAME_SITE", default_value = "lax", value_parser = ["lax", "strict"])]
    pub cookie_same_site: String,

    /// Largest request body accepted, in bytes; larger ones get 413.
    #[arg(long, env = "TESSERA_MAX_BODY_BYTES", default_value_t = 64 * 1024)]
    pub max_body_bytes: usize,

    /// Lifetime of API access tokens (e.g. 15m).
    #[arg(long, env = "TESSERA_ACCESS_TOKEN_TTL", default_value = "15m", value_parser = parse_duration)]
    pub access_token_ttl: Duration,

    /// An API refresh token unused this long expires (e.g. 30d).
    #[arg(long, env = "TESSERA_REFRESH_TOKEN_TTL", default_value = "30days", value_parser = parse_duration)]
    pub refresh_token_ttl: Duration,

    /// The `iss` claim of access tokens, usually the server's public URL.
    #[arg(long, env = "TESSERA_TOKEN_ISSUER", default_value = "tessera")]
    pub token_issuer: String,

    /// Share the session cookie with sibling hosts (e.g. example.com for
    /// app.example.com and wiki.example.com behind forward-auth). The cookie
    /// is then named __Secure-id instead of __Host-id, which forbids a Domain.
    #[arg(long, env = "TESSERA_COOKIE_DOMAIN")]
    pub cookie_domain: Option<String>,

    /// The address browsers use for tessera, e.g. https://auth.example.com.
    /// Needed for OpenID Connect (callback URLs) and used for forward-auth
    /// login redirects.
    #[arg(long, env = "TESSERA_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// An OpenID Connect provider as a JSON object, e.g.
    /// '{"id":"corp","issuer":"https://id.corp.example","client_id":"tessera","client_secret_env":"CORP_SECRET"}'.
    /// Repeat for several.
    #[arg(long = "oidc-provider", value_parser = parse_provider)]
    pub oidc_provider: Vec<OidcProviderConfig>,

    /// OpenID Connect providers as a JSON array of the same objects.
    #[arg(long, env = "TESSERA_OIDC_PROVIDERS", value_parser = parse_provider_list, hide_env_values = true)]
    pub oidc_providers: Option<OidcProviderList>,

    /// A reverse proxy (IP or CIDR) whose X-Forwarded-For, X-Forwarded-* and
    /// X-Original-URL headers are believed: client addresses (throttling,
    /// device lists) and original URLs (/auth/verify). Repeat, or separate
    /// with commas; without it those headers are ignored.
    #[arg(long = "trusted-proxy", env = "TESSERA_TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_trusted_proxy)]
    pub trusted_proxies: Vec<IpNet>,

    /// A host behind forward-auth that the login page may send users back to
    /// (app.example.com, app.example.com:8443, or *.example.com). Repeat, or
    /// separate with commas.
    #[arg(long = "protected-host", env = "TESSERA_PROTECTED_HOSTS", value_delimiter = ',')]
    pub protected_hosts: Vec<String>,

    /// An extra header of /auth/verify answers: NAME=FIELD with FIELD one of
    /// username, id, email (e.g. X-Remote-User=username). Repeatable.
    #[arg(long = "forward-auth-header", value_parser = parse_forward_header)]
    pub forward_auth_headers: Vec<ForwardHeader>,

    /// Fewest characters a new password may have (8 to 64; passwords of 64
    /// characters are always long enough).
    #[arg(long, env = "TESSERA_MIN_PASSWORD_LENGTH", default_value_t = crate::password_policy::DEFAULT_MIN_CHARS,
          value_parser = clap::builder::TypedValueParser::map(clap::value_parser!(u16).range(8..=64), usize::from))]
    pub min_password_length: usize,
}

impl ServeArgs {
    /// Every configured OpenID Connect provider: the flags, then the variable.
    pub fn all_oidc_providers(&self) -> Vec<OidcProviderConfig> {
        let mut all = self.oidc_provider.clone();
        if let Some(list) = &self.oidc_providers {
            all.extend(list.0.iter().cloned());
        }
        all
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
    fn password_length_and_trusted_proxies() {
        let cli = Cli::try_parse_from(["tessera"]).unwrap();
        assert_eq!(cli.serve.min_password_length, 12);
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
        assert_eq!(cli.serve.min_password_length, 15);
        assert_eq!(cli.serve.trusted_proxies.len(), 2);
        for bad in [["--min-password-length", "7"], ["--min-password-length", "65"], ["--trusted-proxy", "nope"]] {
            assert!(Cli::try_parse_from(["tessera", bad[0], bad[1]]).is_err(), "{bad:?}");
        }
    }
}
