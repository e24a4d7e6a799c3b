//! The `tessera` binary.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use tessera_server::admin::{self, AdminContext};
use tessera_server::api::tokens::TokenService;
use tessera_server::cli::{Cli, Command, ConfigCommand, KeysCommand, SessionsCommand, StatsArgs};
use tessera_server::log_format;
use tessera_server::settings::Settings;
use tessera_server::Backends;
use tessera_server::{activity_stats, cli, database::Database, metrics, App, AppConfig};
use tokio::net::TcpListener;

/// The allocator of the `tessera` binary (the library crates leave the
/// choice to the application, as libraries should): mimalloc's per-thread
/// free lists serve the hundred-odd small blocks of a request for fewer
/// instructions than glibc's malloc, whose per-thread cache holds only
/// seven blocks of a size (see crates/tessera-bench/findings.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code of a configuration that cannot be used.
const EXIT_CONFIG: u8 = 2;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let overrides = match &cli.command {
        None => cli.serve.overrides(),
        Some(Command::Serve(args)) | Some(Command::Config(ConfigCommand::Check(args))) => args.overrides(),
        Some(Command::Config(ConfigCommand::Reference)) => Vec::new(),
        Some(Command::Keys { action: KeysCommand::Rotate(args) }) => args.overrides(),
        Some(Command::Sessions(SessionsCommand::Stats(args))) => args.stores.overrides(),
        Some(Command::Admin(args)) => args.stores.overrides(),
    };
    // Serve flags given before a subcommand count too.
    let mut overrides = [cli.serve.overrides(), overrides].concat();
    if let Some(format) = &cli.log_format {
        overrides.push(("log.format", serde_json::Value::from(format.as_str())));
    }
    let env: Vec<(String, String)> = std::env::vars().collect();
    let settings = match Settings::load(cli.config.as_deref(), &env, &overrides) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("tessera: configuration error:\n{error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let serving = matches!(cli.command, None | Some(Command::Serve(_)));
    // Held to the end of `main`: dropping it writes what is still queued.
    let _log_writer = log_format::init(&settings, serving);
    match cli.command {
        // The flags are in `settings` already.
        None | Some(Command::Serve(_)) => serve(settings).await,
        Some(Command::Keys { action: KeysCommand::Rotate(_) }) => match rotate_keys(&settings).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("tessera: {message}");
                ExitCode::FAILURE
            }
        },
        Some(Command::Config(ConfigCommand::Check(_))) => match settings.to_masked_toml() {
            Ok(text) => {
                println!("# configuration is valid; effective settings (secrets masked):\n");
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("tessera: {error}");
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Some(Command::Config(ConfigCommand::Reference)) => {
            print!("{}", tessera_server::settings::reference_markdown(&cli::flag_settings()));
            ExitCode::SUCCESS
        }
        Some(Command::Sessions(SessionsCommand::Stats(args))) => stats(args, settings).await,
        Some(Command::Admin(args)) => {
            let config = match AppConfig::from_settings(&settings) {
                Ok(config) => config,
                Err(error) => {
                    eprintln!("tessera: {error}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            let backends = match Backends::open(&config, None).await {
                Ok(backends) => backends,
                Err(error) => {
                    eprintln!("tessera: {error}");
                    return ExitCode::from(admin::EXIT_FAILED);
                }
            };
            let context = AdminContext { backends, config };
            let stdin = std::io::stdin();
            let mut input = stdin.lock();
            let mut out = std::io::stdout();
            let result = admin::run(&context, &args.command, &mut input, &mut out).await;
            context.backends.close().await;
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("tessera admin: {error}");
                    ExitCode::from(error.exit_code())
                }
            }
        }
    }
}

async fn serve(settings: Settings) -> ExitCode {
    match run_server(settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("tessera: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run_server(settings: Settings) -> Result<(), String> {
    let config = AppConfig::from_settings(&settings)?;
    // Checked by `Settings::validate` already; loaded again here because
    // the files may have changed since.
    let tls = settings.tls_server_config().map_err(|e| format!("tls: {e}"))?;
    let app = App::build(config).await.map_err(|e| e.to_string())?;
    let listen = &settings.server.listen;
    let listener = TcpListener::bind(listen).await.map_err(|e| format!("server.listen {listen}: {e}"))?;
    let address = listener.local_addr().map(|a| a.to_string()).unwrap_or(listen.clone());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let metrics_task = if settings.metrics.enabled && !settings.metrics.listen.is_empty() {
        let metrics_listen = &settings.metrics.listen;
        let metrics_listener =
            TcpListener::bind(metrics_listen).await.map_err(|e| format!("metrics.listen {metrics_listen}: {e}"))?;
        let metrics_address = metrics_listener.local_addr().map(|a| a.to_string()).unwrap_or(metrics_listen.clone());
        tracing::info!(address = %metrics_address, "metrics on http://{metrics_address}/metrics");
        let router = metrics::router(app.state.metrics.clone());
        let until = stopped();
        Some(tokio::spawn(async move {
            if let Err(error) = axum::serve(metrics_listener, router).with_graceful_shutdown(until).await {
                tracing::warn!(%error, "metrics listener failed");
            }
        }))
    } else {
        None
    };
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutdown signal received");
        let _ = stop_tx.send(true);
    });
    match tls {
        Some(tls) => {
            tracing::info!(%address, "tessera listening on https://{address}");
            app.serve_tls(listener, tls, stopped()).await.map_err(|e| e.to_string())?;
        }
        None => {
            tracing::info!(%address, "tessera listening on http://{address}");
            app.serve(listener, stopped()).await.map_err(|e| e.to_string())?;
        }
    }
    if let Some(task) = metrics_task {
        task.abort();
    }
    tracing::info!("tessera stopped");
    Ok(())
}

async fn rotate_keys(settings: &Settings) -> Result<(), String> {
    let url = &settings.database.url;
    let masked = tessera_server::session_store::mask_url(url);
    let db = Database::connect_with_timeout(url, settings.database.query_timeout)
        .await
        .map_err(|e| format!("database.url {masked:?}: {e}"))?;
    let kid = TokenService::rotate_keys(&db, tessera::Timestamp::now()).await.map_err(|e| e.to_string())?;
    db.close().await;
    // Only the public key ID: the private key never leaves the database.
    println!("new signing key {}", tessera_server::api::tokens::rotation_note(&kid));
    Ok(())
}

async fn stats(args: StatsArgs, settings: Settings) -> ExitCode {
    let db = match Database::connect_with_timeout(&settings.database.url, settings.database.query_timeout).await {
        Ok(db) => db,
        Err(error) => {
            eprintln!("tessera: database: {error}");
            return ExitCode::FAILURE;
        }
    };
    let now = tessera::Timestamp::now().as_millis() / 1000;
    let rows = activity_stats::recent(&db, now, args.hours).await;
    db.close().await;
    let rows = match rows {
        Ok(rows) => rows,
        Err(error) => {
            eprintln!("tessera: {error}");
            return ExitCode::FAILURE;
        }
    };
    print!("{}", activity_stats::render_text(&rows));
    if let Some(path) = &args.svg {
        if let Err(error) = activity_stats::render_svg(&rows, path) {
            eprintln!("tessera: writing {}: {error}", path.display());
            return ExitCode::FAILURE;
        }
        println!("chart written to {}", path.display());
    }
    ExitCode::SUCCESS
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
