//! The server rows (issue #17): the release `tessera` binary on each
//! session store, against a bare axum hello, tower-sessions' `/me` and the
//! Express membership app of the seeds' tutorials (express-session on its
//! memory store and on connect-redis), all over sockets with `wrk`.
//!
//! Every server runs pinned to CPU 1 (`taskset -c 1`), `wrk -t1` on CPU 0,
//! as the library rows; CPU µs per request come from `/proc/PID/stat`.
//! `tessera-bench server` runs these rows alone (about 2 minutes) and keeps
//! the library figures of `docs/benchmarks.json`; the full run runs both.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::load::{self, Request, WrkResult};
use crate::orchestrate::Skipped;
use crate::procstat;
use crate::server::{self, Answer, Client, Credentials, RouteRequest, Stores};
use crate::services::{self, Postgres, Redis};
use crate::Fallible;

/// Durations and sizes of the server rows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ServerSettings {
    pub(crate) warmup_secs: u64,
    pub(crate) run_secs: u64,
    /// `wrk -c` of every route but the logins.
    pub(crate) connections: u32,
    /// `wrk -c` of `POST /login`: the logins hash one at a time on the one
    /// core; a few in flight keep it busy (each as another account).
    pub(crate) login_connections: u32,
    /// Sessions the cookie routes cycle through (one login each).
    pub(crate) sessions: usize,
    /// bcrypt cost of the Express app (the tutorials' `saltRounds`).
    pub(crate) bcrypt_cost: u32,
}

impl ServerSettings {
    pub(crate) fn new(quick: bool) -> Self {
        ServerSettings {
            warmup_secs: 1,
            run_secs: if quick { 2 } else { 3 },
            connections: load::CONNECTIONS,
            login_connections: 4,
            sessions: if quick { 16 } else { 64 },
            bcrypt_cost: 10,
        }
    }
}

/// One measured server row.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ServerRun {
    /// `bare`, `tower-sessions-memory`, `tessera-server-<store>` or `express-<store>`.
    pub(crate) app: String,
    /// `/hello`, `/healthz`, `/me`, `/api/me`, `/api/me-bearer`, `/profile` or `/login`.
    pub(crate) route: String,
    pub(crate) rps: f64,
    pub(crate) p50_us: u64,
    pub(crate) p99_us: u64,
    pub(crate) requests: u64,
    pub(crate) errors: u64,
    pub(crate) cpu_us_per_request: f64,
    pub(crate) peak_rss: u64,
}

/// Everything the server rows produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ServerResults {
    pub(crate) settings: ServerSettings,
    /// `git describe` of the measured tree.
    pub(crate) commit: String,
    pub(crate) machine: String,
    pub(crate) started_unix: u64,
    pub(crate) elapsed_secs: f64,
    pub(crate) runs: Vec<ServerRun>,
    pub(crate) skipped: Vec<Skipped>,
    /// A line under the table (e.g. "before the #17 optimisations").
    #[serde(default)]
    pub(crate) note: String,
}

/// Where the programs under test are.
#[derive(Debug, Clone)]
pub(crate) struct Programs {
    /// The release `tessera` binary.
    pub(crate) tessera: PathBuf,
    /// The Express app's directory (`app.js` and `node_modules`).
    pub(crate) express: PathBuf,
}

impl Programs {
    pub(crate) fn from_env() -> Programs {
        // Absolute: the servers run in temporary directories, and a relative
        // program path would be looked up from there.
        let here = std::env::current_dir().unwrap_or_default();
        let target = here.join(std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into()));
        Programs { tessera: target.join("release/tessera"), express: here.join("target/express-bench") }
    }
}

/// One app of the server rows and the routes measured on it.
struct Target {
    app: String,
    kind: Kind,
    routes: &'static [&'static str],
}

enum Kind {
    /// `tessera-bench serve --app <name>`.
    Library(&'static str),
    Tessera(&'static str),
    Express(&'static str),
}

fn plan() -> Vec<Target> {
    let target = |app: &str, kind, routes| Target { app: app.to_owned(), kind, routes };
    vec![
        target("bare", Kind::Library("bare"), &["/hello"]),
        target("tower-sessions-memory", Kind::Library("tower-sessions-memory"), &["/me"]),
        target(
            "tessera-server-memory",
            Kind::Tessera("memory"),
            &["/healthz", "/api/me", "/api/me-bearer", "/profile", "/login"],
        ),
        target("tessera-server-sqlite", Kind::Tessera("sqlite"), &["/api/me", "/api/me-bearer", "/profile"]),
        target("tessera-server-postgres", Kind::Tessera("postgres"), &["/api/me", "/api/me-bearer", "/profile"]),
        target("tessera-server-redis", Kind::Tessera("redis"), &["/api/me", "/profile"]),
        target("express-memory", Kind::Express("memory"), &["/hello", "/me", "/profile", "/login"]),
        target("express-redis", Kind::Express("redis"), &["/me", "/profile"]),
    ]
}

/// Seconds the rows should take (for the progress message).
pub(crate) fn estimate_secs(settings: &ServerSettings) -> u64 {
    let runs: u64 = plan().iter().map(|t| t.routes.len() as u64).sum();
    let servers = plan().len() as u64;
    runs * (settings.warmup_secs + settings.run_secs + 1) + servers * 5
}

/// A server process pinned to CPU 1, killed when dropped.
struct Process {
    child: Child,
    port: u16,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs every server row. `redis` and `postgres` are the benchmark's own
/// (the rows that need one are skipped without it); `scratch` holds the
/// SQLite files and wrk scripts.
pub(crate) fn run(
    settings: &ServerSettings,
    programs: &Programs,
    redis: Option<&Redis>,
    postgres: Option<&Postgres>,
    scratch: &Path,
) -> ServerResults {
    let started = Instant::now();
    let started_unix =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    eprintln!("tessera-bench: server rows should take about {} s", estimate_secs(settings));
    let mut runs = Vec::new();
    let mut skipped = Vec::new();
    for (n, target) in plan().into_iter().enumerate() {
        match measure_target(settings, programs, redis, postgres, scratch, &target, n) {
            Ok(mut rows) => runs.append(&mut rows),
            Err(error) => {
                eprintln!("tessera-bench: {} failed: {error}", target.app);
                skipped.push(Skipped { app: target.app.clone(), reason: error.to_string() });
            }
        }
    }
    ServerResults {
        settings: settings.clone(),
        commit: commit(),
        machine: crate::orchestrate::machine(),
        started_unix,
        elapsed_secs: started.elapsed().as_secs_f64(),
        runs,
        skipped,
        note: String::new(),
    }
}

fn commit() -> String {
    Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn measure_target(
    settings: &ServerSettings,
    programs: &Programs,
    redis: Option<&Redis>,
    postgres: Option<&Postgres>,
    scratch: &Path,
    target: &Target,
    n: usize,
) -> Fallible<Vec<ServerRun>> {
    if let Some(redis) = redis {
        redis.flush()?;
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (process, routes) = match &target.kind {
        Kind::Library(app) => {
            let port = services::free_port()?;
            let child = Command::new("taskset")
                .args(["-c", "1"])
                .arg(std::env::current_exe()?)
                .args(["serve", "--app", app, "--port", &port.to_string()])
                .stdout(Stdio::null())
                .spawn()?;
            let process = Process { child, port };
            wait_until_up(&process, "/hello")?;
            let mut routes = Vec::new();
            for &route in target.routes {
                let request = match route {
                    "/hello" => Request::get("/hello", Vec::new()),
                    "/me" => Request::get("/me", load::session_cookies(port, settings.sessions)?),
                    other => return Err(format!("no library route {other}").into()),
                };
                routes.push((route, request, 200));
            }
            (process, routes)
        }
        Kind::Tessera(store) => {
            let dir = scratch.join(format!("tessera-server-{n}"));
            std::fs::create_dir_all(&dir)?;
            let postgres_url = match (*store, postgres) {
                ("postgres", Some(postgres)) => postgres.fresh_database(&format!("tessera_server_{n}"))?,
                ("postgres", None) => return Err("no PostgreSQL".into()),
                _ => String::new(),
            };
            let redis_url = redis.map(|r| r.url.clone()).unwrap_or_default();
            let stores = Stores::of(store, &dir, &redis_url, &postgres_url)?;
            let port = services::free_port()?;
            let mut command = Command::new("taskset");
            command
                .args(["-c", "1"])
                .arg(&programs.tessera)
                .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
                .args(stores.flags())
                .current_dir(&dir)
                // The access log stays on (default filter `info,sqlx=warn`);
                // it goes where a service's stdout goes, here /dev/null.
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            for (name, _) in std::env::vars() {
                if name.starts_with("TESSERA_") || name == "RUST_LOG" {
                    command.env_remove(name);
                }
            }
            // The login accounts are signed up from one address.
            command.env("TESSERA_THROTTLE__SIGNUPS_PER_ADDRESS", "1000");
            let child = command.spawn().map_err(|e| format!("{}: {e}", programs.tessera.display()))?;
            let process = Process { child, port };
            wait_until_up(&process, "/healthz")?;
            let mut client = Socket { port };
            let credentials = runtime.block_on(server::log_in(&mut client))?;
            if target.routes.contains(&"/login") {
                runtime.block_on(server::sign_up_login_users(&mut client))?;
            }
            let cookies = runtime.block_on(session_cookies(&mut client, &credentials, settings.sessions))?;
            let mut routes = Vec::new();
            for &route in target.routes {
                let spec = server::route_request(route, &credentials)?;
                let mut request = to_wrk(&spec);
                if spec.headers.iter().any(|(name, _)| *name == "Cookie") && route != "/login" {
                    request.headers.retain(|(name, _)| name != "Cookie");
                    request.cookies = cookies.clone();
                }
                if route == "/login" {
                    request.bodies =
                        (0..server::LOGIN_USERS).map(|i| credentials.login_body_for(&server::login_user(i))).collect();
                }
                routes.push((route, request, spec.expect));
            }
            (process, routes)
        }
        Kind::Express(store) => {
            let app = programs.express.join("app.js");
            if !programs.express.join("node_modules/express-session").is_dir() {
                return Err(format!(
                    "{} is not installed (scripts/bench.sh installs it with npm)",
                    programs.express.display()
                )
                .into());
            }
            let port = services::free_port()?;
            let mut command = Command::new("taskset");
            command
                .args(["-c", "1", "node"])
                .arg(&app)
                .env("PORT", port.to_string())
                .env("STORE", store)
                .env("NODE_ENV", "production")
                .env("BENCH_USER", server::USERNAME)
                .env("BENCH_PASSWORD", server::PASSWORD)
                .env("BENCH_USERS", server::LOGIN_USERS.to_string())
                .stdout(Stdio::null());
            if *store == "redis" {
                command.env("REDIS_URL", &redis.ok_or("no Redis")?.url);
            }
            let process = Process { child: command.spawn()?, port };
            wait_until_up(&process, "/hello")?;
            let form = format!("username={}&password={}", server::USERNAME, server::urlencode(server::PASSWORD));
            let mut client = Socket { port };
            let cookies = runtime.block_on(express_cookies(&mut client, &form, settings.sessions))?;
            let mut routes = Vec::new();
            for &route in target.routes {
                let (request, expect) = match route {
                    "/hello" => (Request::get("/hello", Vec::new()), 200),
                    "/me" => (Request::get("/me", cookies.clone()), 200),
                    "/profile" => (Request::get("/profile", cookies.clone()), 200),
                    "/login" => {
                        let mut request = Request::get("/login", Vec::new());
                        request.method = "POST";
                        request.body = Some(form.clone());
                        request.bodies = (0..server::LOGIN_USERS)
                            .map(|i| {
                                format!(
                                    "username={}&password={}",
                                    server::login_user(i),
                                    server::urlencode(server::PASSWORD)
                                )
                            })
                            .collect();
                        request.headers.push(("Content-Type".into(), "application/x-www-form-urlencoded".into()));
                        (request, 302)
                    }
                    other => return Err(format!("no Express route {other}").into()),
                };
                routes.push((route, request, expect));
            }
            (process, routes)
        }
    };
    let mut rows = Vec::new();
    for (route, request, expect) in routes {
        eprintln!("tessera-bench: {} {route}", target.app);
        runtime.block_on(check(process.port, &request, expect))?;
        let connections = if route == "/login" { settings.login_connections } else { settings.connections };
        load::run_wrk(scratch, process.port, &request, connections, settings.warmup_secs, "server-warmup")?;
        let before = procstat::cpu_micros(process.child.id())?;
        let result = load::run_wrk(scratch, process.port, &request, connections, settings.run_secs, "server-run")?;
        let after = procstat::cpu_micros(process.child.id())?;
        // The session must still be good after the run (a redirect to the
        // login page would count as a success in wrk).
        runtime.block_on(check(process.port, &request, expect))?;
        let (peak_rss, _) = procstat::memory(process.child.id())?;
        rows.push(row(&target.app, route, &result, after.saturating_sub(before), peak_rss));
    }
    Ok(rows)
}

fn row(app: &str, route: &str, result: &WrkResult, cpu_us: u64, peak_rss: u64) -> ServerRun {
    ServerRun {
        app: app.to_owned(),
        route: route.to_owned(),
        rps: result.rps(),
        p50_us: result.p50_us,
        p99_us: result.p99_us,
        requests: result.requests,
        errors: result.errors,
        cpu_us_per_request: cpu_us as f64 / result.requests.max(1) as f64,
        peak_rss,
    }
}

/// The wrk request of a route of the tessera server.
fn to_wrk(spec: &RouteRequest) -> Request {
    Request {
        method: spec.method,
        path: spec.path,
        body: spec.body.clone(),
        bodies: Vec::new(),
        cookies: Vec::new(),
        headers: spec.headers.iter().map(|(name, value)| ((*name).to_owned(), value.clone())).collect(),
    }
}

/// More session cookies: the login form posted again (the pre-session
/// cookie and its token stay valid).
async fn session_cookies(client: &mut Socket, credentials: &Credentials, count: usize) -> Fallible<Vec<String>> {
    let mut cookies = vec![credentials.session_cookie.clone()];
    let form = credentials.login_body();
    while cookies.len() < count {
        let answer = client
            .send(
                "POST",
                "/login",
                &[
                    ("content-type", "application/x-www-form-urlencoded"),
                    ("cookie", &credentials.login_cookie),
                    ("accept", "text/html"),
                ],
                &form,
            )
            .await?;
        let cookie = answer.cookies.into_iter().find(|c| c.starts_with("__Host-id=") || c.starts_with("id="));
        match (answer.status, cookie) {
            (303, Some(cookie)) => cookies.push(cookie),
            (status, _) => return Err(format!("POST /login answered {status}: {}", answer.body).into()),
        }
    }
    Ok(cookies)
}

/// Session cookies of the Express app: one `POST /login` each.
async fn express_cookies(client: &mut Socket, form: &str, count: usize) -> Fallible<Vec<String>> {
    let mut cookies = Vec::with_capacity(count);
    while cookies.len() < count {
        let answer =
            client.send("POST", "/login", &[("content-type", "application/x-www-form-urlencoded")], form).await?;
        let cookie = answer.cookies.into_iter().find(|c| c.starts_with("sessionId="));
        match (answer.status, cookie) {
            (302, Some(cookie)) => cookies.push(cookie),
            (status, _) => return Err(format!("Express POST /login answered {status}: {}", answer.body).into()),
        }
    }
    Ok(cookies)
}

/// One request as wrk sends it (the first cookie); its status must be `expect`.
async fn check(port: u16, request: &Request, expect: u16) -> Fallible {
    let mut headers: Vec<(&str, &str)> = request.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    if let Some(cookie) = request.cookies.first() {
        headers.push(("Cookie", cookie));
    }
    let answer =
        Socket { port }.send(request.method, request.path, &headers, request.body.as_deref().unwrap_or("")).await?;
    if answer.status != expect {
        return Err(format!(
            "{} {} answered {}, not {expect}: {}",
            request.method,
            request.path,
            answer.status,
            answer.body.chars().take(300).collect::<String>()
        )
        .into());
    }
    Ok(())
}

fn wait_until_up(process: &Process, path: &str) -> Fallible {
    let deadline = Instant::now() + crate::apps::STARTUP_TIMEOUT;
    loop {
        if let Ok((200, _)) = load::exchange(process.port, "GET", path, "") {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("the server on port {} did not answer GET {path}", process.port).into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// HTTP/1.1 over a fresh loopback connection per request.
pub(crate) struct Socket {
    pub(crate) port: u16,
}

impl Client for Socket {
    async fn send(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Fallible<Answer> {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await?;
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.port,
            body.len()
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        request.push_str(body);
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut raw)).await??;
        parse_answer(&raw)
    }
}

fn parse_answer(raw: &[u8]) -> Fallible<Answer> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or("no end of headers in the answer")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|s| s.parse().ok()).unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    if headers.iter().any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked")) {
        body = dechunk(&body);
    }
    let cookies = server::set_cookies(headers.iter().filter(|(n, _)| n == "set-cookie").map(|(_, v)| v.as_str()));
    Ok(Answer { status, cookies, body: String::from_utf8_lossy(&body).into_owned() })
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = data.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&data[..end])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok())
            .unwrap_or(0);
        data = &data[end + 2..];
        if size == 0 || data.len() < size {
            break;
        }
        out.extend_from_slice(&data[..size]);
        data = data.get(size + 2..).unwrap_or_default();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_parsed_with_their_cookies_and_chunked_bodies() {
        let raw = b"HTTP/1.1 303 See Other\r\nSet-Cookie: __Host-id=abc; Path=/; Secure\r\n\
            set-cookie: __Host-csrf=; Max-Age=0\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let answer = parse_answer(raw).unwrap();
        assert_eq!(answer.status, 303);
        assert_eq!(answer.cookies, vec!["__Host-id=abc".to_owned()], "deletions are not cookies");
        assert_eq!(answer.body, "abcde");
        assert!(parse_answer(b"HTTP/1.1 200 OK\r\n").is_err(), "no end of headers");
    }

    #[test]
    fn every_tessera_row_has_its_peers_in_the_plan() {
        let plan = plan();
        let has = |app: &str, route: &str| plan.iter().any(|t| t.app == app && t.routes.contains(&route));
        assert!(has("bare", "/hello") && has("tower-sessions-memory", "/me"));
        for route in ["/hello", "/me", "/profile", "/login"] {
            assert!(has("express-memory", route), "{route}");
        }
        for target in plan.iter().filter(|t| matches!(t.kind, Kind::Tessera(_))) {
            for route in target.routes {
                assert!(server::ROUTES.contains(route), "{} {route}", target.app);
            }
        }
    }
}
