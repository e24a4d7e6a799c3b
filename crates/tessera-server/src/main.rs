//! The `tessera` binary.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use tessera::{ExpiryPolicy, SameSite};
use tessera_server::api::tokens::TokenService;
use tessera_server::cli::{Cli, Command, DatabaseArgs, KeysCommand, ServeArgs};
use tessera_server::database::Database;
use tessera_server::{tls, App, AppConfig};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn")),
        )
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Serve(args)) => serve(*args).await,
        Some(Command::Keys { action: KeysCommand::Rotate(args) }) => rotate_keys(args).await,
        None => serve(cli.serve).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("tessera: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> Result<(), String> {
    if args.session_absolute_timeout < args.session_idle_timeout {
        return Err("--session-absolute-timeout must not be shorter than --session-idle-timeout".into());
    }
    let mut config = AppConfig {
        database_url: args.database.clone(),
        session_store_url: args.session_store.clone(),
        expiry: ExpiryPolicy::new(args.session_idle_timeout, args.session_absolute_timeout),
        store_timeout: args.store_timeout,
        max_body_bytes: args.max_body_bytes,
        refresh_token_ttl: args.refresh_token_ttl,
        ..AppConfig::default()
    };
    config.tokens.access_ttl = args.access_token_ttl;
    config.tokens.issuer = args.token_issuer.clone();
    config.cookie.secure = args.cookie_secure;
    config.cookie.same_site = if args.cookie_same_site == "strict" { SameSite::Strict } else { SameSite::Lax };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(tls::server_config(cert, key).map_err(|e| e.to_string())?),
        _ => None,
    };
    config.hsts = args.hsts || tls.is_some();
    let app = App::build(config).await.map_err(|e| e.to_string())?;
    let listener = TcpListener::bind(&args.listen).await.map_err(|e| format!("--listen {}: {e}", args.listen))?;
    let address = listener.local_addr().map(|a| a.to_string()).unwrap_or(args.listen.clone());
    match tls {
        Some(tls) => {
            tracing::info!(%address, "tessera listening on https://{address}");
            app.serve_tls(listener, tls, shutdown_signal()).await.map_err(|e| e.to_string())?;
        }
        None => {
            tracing::info!(%address, "tessera listening on http://{address}");
            app.serve(listener, shutdown_signal()).await.map_err(|e| e.to_string())?;
        }
    }
    tracing::info!("tessera stopped");
    Ok(())
}

async fn rotate_keys(args: DatabaseArgs) -> Result<(), String> {
    let masked = tessera_server::session_store::mask_url(&args.database);
    let db = Database::connect(&args.database).await.map_err(|e| format!("--database {masked:?}: {e}"))?;
    let kid = TokenService::rotate_keys(&db, tessera::Timestamp::now()).await.map_err(|e| e.to_string())?;
    db.close().await;
    // Only the public key ID: the private key never leaves the database.
    println!("new signing key {kid}; running servers switch to it within 30 seconds");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
