//! The command line: `tessera [serve] [FLAGS]`.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

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
}
