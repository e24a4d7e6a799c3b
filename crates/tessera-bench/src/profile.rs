//! In-process request loop for instruction-count profiling.
//!
//! `tessera-bench profile --app tessera-memory --route /me --requests N`
//! builds the same app as `serve` and drives `N` requests through it with
//! `tower::ServiceExt::oneshot` on a current-thread runtime: no sockets, no
//! hyper, no wrk. Under `valgrind --tool=callgrind` (or `perf stat -e
//! instructions`), the difference between two runs with different `N`,
//! divided by the difference in `N`, is the instructions per request of the
//! app itself — a figure that stays the same whatever else the machine is
//! doing, unlike CPU time. `scripts/profile.sh` does that arithmetic for
//! every app and route.
//!
//! `--app server-<store>` is the real `tessera` server instead (see
//! [`crate::server`]): the router `tessera serve` builds, from the default
//! settings and the store's flags, with its logging set-up, driven the same
//! way after one sign-up and login (the session cookie from the HTML form,
//! the bearer token from `POST /api/signin`). Routes: `/healthz`, `/api/me`
//! (cookie), `/api/me-bearer` (token), `/profile`, `/login` (argon2id).

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use clap::Args;
use tower::ServiceExt;

use crate::apps::{self, ServeArgs};
use crate::Fallible;

/// What to drive.
#[derive(Args, Debug)]
pub(crate) struct ProfileArgs {
    /// `bare`, `tessera-<store>`, `tower-sessions-<store>` or
    /// `server-<memory|sqlite|postgres|redis>` (the real tessera server).
    #[arg(long)]
    app: String,
    /// `/hello`, `/login`, `/me` or `/counter`; for `server-*`: `/healthz`,
    /// `/api/me`, `/api/me-bearer`, `/profile` or `/login`.
    #[arg(long)]
    route: String,
    /// How many requests to send after the warm-up.
    #[arg(long, default_value_t = 1000)]
    requests: u32,
    /// Redis URL for the Redis stores.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// PostgreSQL URL for the PostgreSQL store.
    #[arg(long, default_value = "")]
    postgres_url: String,
    /// SQLite file for the SQLite store.
    #[arg(long, default_value = "")]
    sqlite_path: String,
}

/// How many distinct sessions the `/me` and `/counter` loops cycle through,
/// as the wrk scripts do.
const SESSIONS: usize = 256;

/// Runs the loop; prints the number of successful requests.
pub(crate) fn run(args: ProfileArgs) -> Fallible {
    if let Some(store) = args.app.strip_prefix("server-") {
        return run_server(store, &args);
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        let serve = ServeArgs::in_process(&args.app, &args.redis_url, &args.postgres_url, &args.sqlite_path);
        let app = apps::build(&serve).await?;
        let cookies = if args.route == "/me" || args.route == "/counter" { log_in(&app).await? } else { Vec::new() };
        // Warm-up: the first requests pay for lazy statics and allocator growth.
        let mut ok = 0u32;
        for i in 0..(args.requests.min(200) + args.requests) {
            let request = build_request(&args.route, cookies.get(i as usize % cookies.len().max(1)))?;
            let response = app.clone().oneshot(request).await?;
            if response.status() == StatusCode::OK {
                ok += 1;
            }
        }
        println!("{ok}");
        Ok(())
    })
}

async fn log_in(app: &Router) -> Fallible<Vec<String>> {
    let mut cookies = Vec::with_capacity(SESSIONS);
    for _ in 0..SESSIONS {
        let response = app.clone().oneshot(build_request("/login", None)?).await?;
        let cookie = response
            .headers()
            .get(header::SET_COOKIE)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(';').next())
            .ok_or("POST /login set no cookie")?;
        cookies.push(cookie.to_owned());
    }
    Ok(cookies)
}

fn build_request(route: &str, cookie: Option<&String>) -> Fallible<Request<Body>> {
    let method = if route == "/login" { Method::POST } else { Method::GET };
    let mut builder = Request::builder().method(method).uri(route).header(header::HOST, "127.0.0.1");
    if let Some(cookie) = cookie {
        builder = builder.header(header::COOKIE, cookie);
    }
    Ok(builder.body(Body::empty())?)
}

/// The real server's loop: sign up and log in once, warm up, then
/// `requests` requests, each of which must get the route's status.
fn run_server(store: &str, args: &ProfileArgs) -> Fallible {
    use crate::server::{self, InProcess, Stores};
    let dir = std::env::temp_dir().join(format!("tessera-bench-profile-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let stores = Stores::of(store, &dir, &args.redis_url, &args.postgres_url)?;
    // Only `/login` measures hashing: elsewhere the set-up's sign-up and
    // logins use cheap argon2id parameters, which no measured request sees.
    let cheap = [
        ("passwords.argon2_memory_kib", serde_json::Value::from(1024)),
        ("passwords.argon2_iterations", serde_json::Value::from(1)),
    ];
    let extra: &[(&'static str, serde_json::Value)] = if args.route == "/login" { &[] } else { &cheap };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let result = runtime.block_on(async {
        let mut app = InProcess::build(&stores, extra).await?;
        let credentials = server::log_in(&mut app).await?;
        let route = server::route_request(&args.route, &credentials)?;
        let warm_up = args.requests.min(200);
        for i in 0..(warm_up + args.requests) {
            let (status, _, body) = app.call(InProcess::request(&route)?).await?;
            if status.as_u16() != route.expect {
                return Err(format!(
                    "request {i}: {} {} answered {status}, not {}: {}",
                    route.method,
                    route.path,
                    route.expect,
                    String::from_utf8_lossy(&body)
                )
                .into());
            }
        }
        eprintln!("server-{store} {}: {} requests answered {}", args.route, args.requests, route.expect);
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    });
    drop(runtime);
    let _ = std::fs::remove_dir_all(&dir);
    result
}
