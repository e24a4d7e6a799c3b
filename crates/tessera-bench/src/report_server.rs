//! The server rows' part of `docs/benchmarks.md`: the table of issue #17
//! with its ratio columns and targets.

use std::fmt::Write as _;

use crate::server_rows::{ServerResults, ServerRun};

fn find<'a>(runs: &'a [ServerRun], app: &str, route: &str) -> Option<&'a ServerRun> {
    runs.iter().find(|run| run.app == app && run.route == route)
}

fn store_of(app: &str) -> &str {
    app.rsplit('-').next().unwrap_or("")
}

/// What a row is, in words.
fn describe(run: &ServerRun) -> String {
    let store = match store_of(&run.app) {
        "memory" => "`--session-store memory://` (users in SQLite)",
        "sqlite" => "SQLite, the default (sessions and users in one file)",
        "postgres" => "PostgreSQL (sessions and users)",
        "redis" => "`--session-store redis://` (users in SQLite)",
        _ => "",
    };
    let express_store = if store_of(&run.app) == "redis" { "connect-redis" } else { "memory store" };
    match (run.app.as_str(), run.route.as_str()) {
        ("bare", _) => "axum, `GET /hello` (no session)".into(),
        ("tower-sessions-memory", _) => "axum + tower-sessions, `GET /me` (memory store)".into(),
        (app, route) if app.starts_with("tessera-server-") => {
            let what = match route {
                "/healthz" => "`GET /healthz` (no session work)",
                "/api/me" => "`GET /api/me` with the session cookie",
                "/api/me-bearer" => "`GET /api/me` with a bearer token",
                "/profile" => "`GET /profile` (HTML; its visit counter writes the session)",
                "/login" => "`POST /login` (HTML form + CSRF token, argon2id m = 19 MiB, t = 2)",
                other => other,
            };
            format!("tessera server, {what}, {store}")
        }
        (_, route) => {
            let what = match route {
                "/hello" => "`GET /hello`",
                "/me" => "`GET /me`",
                "/profile" => "`GET /profile` (HTML; visit counter in the session)",
                "/login" => "`POST /login` (bcrypt, cost 10, then `session.regenerate`)",
                other => other,
            };
            format!("Express + express-session, {what} ({express_store})")
        }
    }
}

/// The axum peer whose CPU a tessera row is compared with, and the limit.
fn cpu_peer(run: &ServerRun) -> Option<(&'static str, &'static str, Option<f64>)> {
    if !run.app.starts_with("tessera-server-") {
        return None;
    }
    let memory = run.app == "tessera-server-memory";
    match run.route.as_str() {
        "/healthz" => Some(("bare", "/hello", Some(1.5))),
        "/api/me" => Some(("tower-sessions-memory", "/me", memory.then_some(2.0))),
        "/api/me-bearer" => Some(("tower-sessions-memory", "/me", None)),
        _ => None,
    }
}

/// The Express row a tessera row's req/s is compared with.
fn express_peer(run: &ServerRun) -> Option<(String, &'static str)> {
    if !run.app.starts_with("tessera-server-") {
        return None;
    }
    let app = if store_of(&run.app) == "redis" { "express-redis" } else { "express-memory" };
    let route = match run.route.as_str() {
        "/healthz" => "/hello",
        "/api/me" | "/api/me-bearer" => "/me",
        "/profile" => "/profile",
        "/login" => "/login",
        _ => return None,
    };
    Some((app.to_owned(), route))
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "**missed**"
    }
}

pub(crate) fn section(md: &mut String, server: &ServerResults) {
    let s = &server.settings;
    let _ = writeln!(md, "# The tessera server (issue #17)\n");
    if !server.note.is_empty() {
        let _ = writeln!(md, "> {}\n", server.note);
    }
    let _ = writeln!(
        md,
        "Measured on `{}` in {:.0} s (`scripts/bench.sh server` runs these rows alone). Each server runs \
         pinned to CPU 1 (`taskset -c 1`), `wrk -t1 -c{c}` on CPU 0 ({w} s warm-up, then {r} s measured; \
         `POST /login` with `-c{lc}`, the server's hashing queue being 8 per core), and the benchmark's own \
         Redis and PostgreSQL on CPU 0. **CPU µs/request** = the server's utime + stime from `/proc/PID/stat` \
         over the measured run ÷ requests. The cookie routes cycle through {k} sessions, each from a real \
         login. The tessera server is the release `tessera` binary with its default settings and only \
         `--listen`, `--database` and `--session-store` set, in a fresh temporary directory: argon2id, CSRF, \
         security headers, request IDs, the access log (to stdout, here `/dev/null`), metrics and audit all on. \
         The Express app (`crates/tessera-bench/express/app.js`, installed from the npm registry by \
         `scripts/bench.sh`) is written as the seeds' tutorials write it: express + express-session (its memory \
         store, or connect-redis), bcrypt (cost {b}) as they use, `session.regenerate` at login; like them it \
         has no CSRF token, security headers or access log, and its cookie is not `Secure` (plain HTTP here). \
         Ratios are within this run. Before and after each measured run, one request checks the route still \
         answers as it should (200, or the login's redirect), so an expired session cannot pass as a fast \
         redirect.\n",
        server.commit,
        server.elapsed_secs,
        c = s.connections,
        w = s.warmup_secs,
        r = s.run_secs,
        lc = s.login_connections,
        k = s.sessions,
        b = s.bcrypt_cost,
    );
    let runs = &server.runs;
    let _ = writeln!(
        md,
        "| app, route | CPU µs/request | req/s | p99 ms | errors | CPU ÷ axum peer | req/s ÷ Express |\n\
         |---|---:|---:|---:|---:|---|---|"
    );
    for run in runs {
        let cpu_ratio = cpu_peer(run)
            .and_then(|(app, route, limit)| {
                let peer = find(runs, app, route)?;
                let ratio = run.cpu_us_per_request / peer.cpu_us_per_request.max(f64::MIN_POSITIVE);
                let target = limit.map(|l| format!(" (≤ {l}×: {})", verdict(ratio <= l))).unwrap_or_default();
                Some(format!("{ratio:.1}× {app} `{route}`{target}"))
            })
            .unwrap_or_default();
        let rps_ratio = express_peer(run)
            .and_then(|(app, route)| {
                let peer = find(runs, &app, route)?;
                let ratio = run.rps / peer.rps.max(f64::MIN_POSITIVE);
                let target = if run.app == "tessera-server-memory" && run.route == "/api/me" {
                    format!(" (≥ 10×: {})", verdict(ratio >= 10.0))
                } else {
                    String::new()
                };
                Some(format!("{ratio:.1}× {app} `{route}`{target}"))
            })
            .unwrap_or_default();
        let _ = writeln!(
            md,
            "| {} | {:.1} | {:.0} | {:.2} | {} | {} | {} |",
            describe(run),
            run.cpu_us_per_request,
            run.rps,
            run.p99_us as f64 / 1000.0,
            run.errors,
            cpu_ratio,
            rps_ratio
        );
    }
    let _ = writeln!(md);
    if !server.skipped.is_empty() {
        let _ = writeln!(md, "Not measured:\n");
        for skipped in &server.skipped {
            let _ = writeln!(md, "- `{}`: {}", skipped.app, skipped.reason);
        }
        let _ = writeln!(md);
    }
    let _ = writeln!(
        md,
        "Where the instructions of a request go: `scripts/profile.sh server-memory /healthz` (or `/api/me`, \
         `/api/me-bearer`, `/profile`; `server-sqlite`, `server-postgres`, `server-redis`) counts callgrind \
         instructions per request of the same router built in process, and `--top` lists the 25 costliest \
         functions.\n"
    );
}
