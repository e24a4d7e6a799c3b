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
    /// `bare`, `tessera-<store>` or `tower-sessions-<store>`.
    #[arg(long)]
    app: String,
    /// `/hello`, `/login`, `/me` or `/counter`.
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
