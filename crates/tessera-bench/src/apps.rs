//! The apps under test: the same four routes on bare axum, axum + tessera
//! (one app per store) and axum + tower-sessions (memory and Redis).
//!
//! - `GET /hello`: no session.
//! - `POST /login`: a new session holding `{user_id: 42, name: "bench"}`, no
//!   password hashing (tessera also records the owner and issues a new ID, as
//!   its `login` always does; tower-sessions cycles the ID likewise).
//! - `GET /me`: `user_id` from the session, `401` without one.
//! - `GET /counter`: increments `counter` in the session — `session.update`
//!   in tessera (replayed on a compare-and-swap conflict), get + insert in
//!   tower-sessions.
//!
//! tessera apps also serve `POST /login-argon2` (body: the password), which
//! verifies the password with [`PasswordHasher::new`] before logging in.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use clap::Args;
use tessera::password::PasswordHasher;
use tessera::{CookieConfig, ExpiryPolicy, SessionEngine, SessionStore};
use tessera_axum::{CsrfKey, Session, SessionLayer};

use crate::Fallible;

/// The password `POST /login-argon2` accepts.
pub(crate) const BENCH_PASSWORD: &str = "correct horse battery staple";

/// Which app to serve and where its store is.
#[derive(Args, Debug)]
pub(crate) struct ServeArgs {
    /// `bare`, `tessera-<memory|sqlite|postgres|redis|cookie>` or `tower-sessions-<memory|redis>`.
    #[arg(long)]
    app: String,
    /// Port on 127.0.0.1.
    #[arg(long)]
    port: u16,
    /// Redis URL for the Redis stores.
    #[arg(long, default_value = "")]
    redis_url: String,
    /// PostgreSQL URL for the PostgreSQL store.
    #[arg(long, default_value = "")]
    postgres_url: String,
    /// SQLite file for the SQLite store.
    #[arg(long, default_value = "")]
    sqlite_path: String,
}

impl ServeArgs {
    /// The arguments of an app driven in process (no port).
    pub(crate) fn in_process(app: &str, redis_url: &str, postgres_url: &str, sqlite_path: &str) -> Self {
        ServeArgs {
            app: app.to_owned(),
            port: 0,
            redis_url: redis_url.to_owned(),
            postgres_url: postgres_url.to_owned(),
            sqlite_path: sqlite_path.to_owned(),
        }
    }
}

/// Runs the server until killed. The runtime has as many workers as the
/// process may use CPUs (one, under `taskset -c 1`), for every app alike.
pub(crate) fn serve(args: ServeArgs) -> Fallible {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let app = build(&args).await?;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port)).await?;
        axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await?;
        Ok(())
    })
}

pub(crate) async fn build(args: &ServeArgs) -> Fallible<Router> {
    let app = args.app.as_str();
    if app == "bare" {
        return Ok(Router::new().route("/hello", get(hello)));
    }
    if let Some(store) = app.strip_prefix("tessera-") {
        let engine = tessera_engine(store, args).await?;
        return tessera_app(engine).await;
    }
    if let Some(store) = app.strip_prefix("tower-sessions-") {
        return tower_sessions_app(store, args).await;
    }
    Err(format!("unknown app {app:?}").into())
}

/// The engine of a `tessera-<name>` app: the default policy (30 min idle,
/// touch at most every 3 min, 12 h absolute); ID hashing is always on
/// (stores only ever see SHA-256 keys).
async fn tessera_engine(name: &str, args: &ServeArgs) -> Fallible<SessionEngine> {
    let store: Arc<dyn SessionStore> = match name {
        "memory" => Arc::new(tessera_store_memory::MemoryStore::new()),
        "sqlite" => Arc::new(tessera_store_sqlite::SqliteStore::connect(&args.sqlite_path).await?),
        "postgres" => Arc::new(tessera_store_postgres::PostgresStore::connect(&args.postgres_url).await?),
        "redis" => Arc::new(tessera_store_redis::RedisStore::connect(&args.redis_url).await?),
        "cookie" => {
            // The whole session sealed in the cookie (XChaCha20-Poly1305),
            // revocation marks in process memory.
            use tessera_store_cookie::{CookieSealer, MemoryRevocationMarks, SealingKey};
            let sealer = CookieSealer::new(&CookieConfig::default().cookie_name(), vec![SealingKey::generate(1)])?;
            let engine = SessionEngine::sealed(Arc::new(sealer), Arc::new(MemoryRevocationMarks::default()));
            return Ok(engine.with_expiry(ExpiryPolicy::default()));
        }
        other => return Err(format!("unknown tessera store {other:?}").into()),
    };
    Ok(SessionEngine::new(store).with_expiry(ExpiryPolicy::default()))
}

struct Login {
    hasher: PasswordHasher,
    phc: String,
}

async fn tessera_app(engine: SessionEngine) -> Fallible<Router> {
    let hasher = PasswordHasher::new();
    let phc = hasher.hash(BENCH_PASSWORD.to_owned()).await?;
    let login_state = Arc::new(Login { hasher, phc });
    Ok(Router::new()
        .route("/hello", get(hello))
        .route("/login", post(tessera_login))
        .route("/me", get(tessera_me))
        .route("/counter", get(tessera_counter))
        .route("/login-argon2", post(tessera_login_argon2))
        .with_state(login_state)
        .layer(SessionLayer::new(engine, CsrfKey::generate())))
}

async fn hello() -> &'static str {
    "Hello, World!"
}

fn tessera_log_in(session: &Session) -> Response {
    if session.insert("user_id", &42u64).is_err() || session.insert("name", "bench").is_err() {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    session.login("42");
    "ok".into_response()
}

async fn tessera_login(session: Session) -> Response {
    tessera_log_in(&session)
}

async fn tessera_login_argon2(State(login): State<Arc<Login>>, session: Session, password: String) -> Response {
    match login.hasher.verify(password, Some(login.phc.clone())).await {
        Ok(verdict) if verdict.valid => tessera_log_in(&session),
        Ok(_) => StatusCode::UNAUTHORIZED.into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn tessera_me(session: Session) -> Response {
    match session.get::<u64>("user_id") {
        Ok(Some(user_id)) => user_id.to_string().into_response(),
        _ => StatusCode::UNAUTHORIZED.into_response(),
    }
}

async fn tessera_counter(session: Session) -> Response {
    match session.update("counter", |old: Option<u64>| old.unwrap_or(0) + 1) {
        Ok(value) => value.to_string().into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn tower_sessions_app(store: &str, args: &ServeArgs) -> Fallible<Router> {
    use tower_sessions::{Expiry, SessionManagerLayer};
    let routes = Router::new()
        .route("/hello", get(hello))
        .route("/login", post(ts_login))
        .route("/me", get(ts_me))
        .route("/counter", get(ts_counter));
    // Same idle time-out as tessera's default.
    let expiry = Expiry::OnInactivity(time::Duration::minutes(30));
    match store {
        "memory" => {
            let layer = SessionManagerLayer::new(tower_sessions::MemoryStore::default()).with_expiry(expiry);
            Ok(routes.layer(layer))
        }
        "redis" => {
            use tower_sessions_redis_store::fred::prelude::{ClientLike, Config, Pool};
            let pool = Pool::new(Config::from_url(&args.redis_url)?, None, None, None, 1)?;
            pool.init().await?;
            let store = tower_sessions_redis_store::RedisStore::new(pool);
            let layer = SessionManagerLayer::new(store).with_expiry(expiry);
            Ok(routes.layer(layer))
        }
        other => Err(format!("unknown tower-sessions store {other:?}").into()),
    }
}

async fn ts_login(session: tower_sessions::Session) -> Response {
    let result = async {
        session.cycle_id().await?;
        session.insert("user_id", 42u64).await?;
        session.insert("name", "bench").await
    }
    .await;
    match result {
        Ok(()) => "ok".into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn ts_me(session: tower_sessions::Session) -> Response {
    match session.get::<u64>("user_id").await {
        Ok(Some(user_id)) => user_id.to_string().into_response(),
        _ => StatusCode::UNAUTHORIZED.into_response(),
    }
}

async fn ts_counter(session: tower_sessions::Session) -> Response {
    let result = async {
        let value = session.get::<u64>("counter").await?.unwrap_or(0) + 1;
        session.insert("counter", value).await?;
        Ok::<_, tower_sessions::session::Error>(value)
    }
    .await;
    match result {
        Ok(value) => value.to_string().into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// How long the orchestrator waits for a server to answer.
pub(crate) const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
