//! Runs the plan: starts services and servers, drives `wrk`, samples `/proc`,
//! and writes the report.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::idle::IdleResult;
use crate::load::{self, Request, WrkResult};
use crate::plan::{AppPlan, Route, Settings};
use crate::procstat;
use crate::server_rows::{self, Programs, ServerResults, ServerSettings};
use crate::services::{self, Postgres, Redis};
use crate::Fallible;

/// One measured run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Run {
    pub(crate) app: String,
    pub(crate) route: Route,
    pub(crate) rep: u32,
    pub(crate) rps: f64,
    pub(crate) p50_us: u64,
    pub(crate) p99_us: u64,
    pub(crate) requests: u64,
    pub(crate) errors: u64,
    /// Server CPU (user + system) during the measured run.
    pub(crate) cpu_us: u64,
    pub(crate) cpu_us_per_request: f64,
    /// The server's VmHWM right after this run.
    pub(crate) peak_rss: u64,
}

/// An app that was not measured, and why.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Skipped {
    pub(crate) app: String,
    pub(crate) reason: String,
}

/// The argon2id login measurements.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct LoginFlood {
    pub(crate) cores: usize,
    pub(crate) hash_seconds: f64,
    /// cores ÷ hash time.
    pub(crate) ideal_logins_per_sec: f64,
    /// Logins alone (warm-up, then a measured run).
    pub(crate) logins_per_sec: f64,
    pub(crate) login_errors: u64,
    /// Logins while `GET /me` is probed.
    pub(crate) logins_during_flood_per_sec: f64,
    pub(crate) me_alone: WrkResult,
    pub(crate) me_during_flood: WrkResult,
}

/// Everything one benchmark run produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Results {
    pub(crate) settings: Settings,
    pub(crate) machine: String,
    pub(crate) started_unix: u64,
    pub(crate) elapsed_secs: f64,
    pub(crate) estimated_secs: u64,
    /// The release build before the run, when `scripts/bench.sh` timed it.
    #[serde(default)]
    pub(crate) build_secs: Option<u64>,
    pub(crate) runs: Vec<Run>,
    pub(crate) skipped: Vec<Skipped>,
    pub(crate) idle: Option<IdleResult>,
    pub(crate) idle_error: Option<String>,
    pub(crate) login: Option<LoginFlood>,
    pub(crate) login_error: Option<String>,
    /// The rows of the real `tessera` server (issue #17).
    #[serde(default)]
    pub(crate) server: Option<ServerResults>,
}

/// Arguments of `tessera-bench server`.
#[derive(clap::Args, Debug)]
pub(crate) struct ServerArgs {
    /// Short runs, to check that everything works.
    #[arg(long)]
    quick: bool,
    /// Where benchmarks.json is read and benchmarks.md, .json, .svg written.
    #[arg(long, default_value = "docs")]
    out: std::path::PathBuf,
    /// A line shown under the server table, e.g. which change was measured.
    #[arg(long, default_value = "")]
    note: String,
}

/// `tessera-bench server`: the server rows alone, merged into the report
/// of the last full run.
pub(crate) fn run_server_rows(args: ServerArgs) -> Fallible {
    check_tools()?;
    let scratch = std::env::temp_dir().join(format!("tessera-bench-server-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let redis = Redis::start().map_err(|e| eprintln!("tessera-bench: no Redis: {e}")).ok();
    let postgres = Postgres::start(&scratch).map_err(|e| eprintln!("tessera-bench: no PostgreSQL: {e}")).ok();
    let settings = ServerSettings::new(args.quick);
    let mut server = server_rows::run(&settings, &Programs::from_env(), redis.as_ref(), postgres.as_ref(), &scratch);
    server.note = args.note;
    drop(redis);
    drop(postgres);
    let _ = std::fs::remove_dir_all(&scratch);
    let json = args.out.join("benchmarks.json");
    let mut results: Results = match std::fs::read(&json) {
        Ok(bytes) => serde_json::from_slice(&bytes)?,
        Err(_) => Results {
            settings: Settings::new(args.quick),
            machine: machine(),
            started_unix: server.started_unix,
            elapsed_secs: 0.0,
            estimated_secs: 0,
            build_secs: None,
            runs: Vec::new(),
            skipped: Vec::new(),
            idle: None,
            idle_error: None,
            login: None,
            login_error: None,
            server: None,
        },
    };
    eprintln!("tessera-bench: server rows done in {:.0} s", server.elapsed_secs);
    results.server = Some(server);
    crate::report::write(&results, &args.out)?;
    eprintln!("tessera-bench: wrote {}", args.out.join("benchmarks.md").display());
    Ok(())
}

fn check_tools() -> Fallible {
    for tool in ["wrk", "taskset"] {
        if Command::new("which").arg(tool).stdout(Stdio::null()).status().map(|s| !s.success()).unwrap_or(true) {
            return Err(format!("{tool} is missing: run scripts/bench.sh, which installs it").into());
        }
    }
    Ok(())
}

/// The external things the servers need.
struct Backends {
    redis: Option<Redis>,
    postgres: Option<Postgres>,
    scratch: std::path::PathBuf,
}

pub(crate) fn run(quick: bool, build_secs: Option<u64>, out: &Path) -> Fallible {
    let started = Instant::now();
    let settings = Settings::new(quick);
    check_tools()?;
    let scratch = std::env::temp_dir().join(format!("tessera-bench-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let mut skipped = Vec::new();
    let redis = Redis::start()
        .map_err(|error| note(&mut skipped, &["tessera-redis", "tower-sessions-redis"], &format!("Redis: {error}")))
        .ok();
    let postgres = Postgres::start(&scratch)
        .map_err(|error| note(&mut skipped, &["tessera-postgres"], &format!("PostgreSQL: {error}")))
        .ok();
    let backends = Backends { redis, postgres, scratch: scratch.clone() };
    let skipped_apps: Vec<&str> = skipped.iter().map(|s: &Skipped| s.app.as_str()).collect();
    let server_settings = ServerSettings::new(quick);
    let estimated_secs = settings.estimate_secs(&skipped_apps) + server_rows::estimate_secs(&server_settings);
    eprintln!("tessera-bench: measurements should take about {} min {} s", estimated_secs / 60, estimated_secs % 60);

    let apps: Vec<AppPlan> = settings.apps().into_iter().filter(|plan| !skipped_apps.contains(&plan.app)).collect();
    let mut runs = Vec::new();
    for rep in 0..settings.repetitions {
        for plan in &apps {
            if Route::ALL.iter().all(|&route| plan.reps(route) <= rep) {
                continue;
            }
            match measure_app(&settings, &backends, plan, rep) {
                Ok(mut app_runs) => runs.append(&mut app_runs),
                Err(error) => {
                    eprintln!("tessera-bench: {} failed: {error}", plan.app);
                    skipped.push(Skipped { app: plan.app.to_owned(), reason: format!("failed: {error}") });
                }
            }
        }
    }

    let (login, login_error) = match login_flood(&settings, &backends) {
        Ok(flood) => (Some(flood), None),
        Err(error) => (None, Some(error.to_string())),
    };
    let (idle, idle_error) = match idle_sessions(&settings) {
        Ok(idle) => (Some(idle), None),
        Err(error) => (None, Some(error.to_string())),
    };
    let server = server_rows::run(
        &server_settings,
        &Programs::from_env(),
        backends.redis.as_ref(),
        backends.postgres.as_ref(),
        &backends.scratch,
    );
    drop(backends);
    let _ = std::fs::remove_dir_all(&scratch);

    let results = Results {
        settings,
        machine: machine(),
        started_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
            .saturating_sub(started.elapsed().as_secs()),
        elapsed_secs: started.elapsed().as_secs_f64(),
        estimated_secs,
        build_secs,
        runs,
        skipped,
        idle,
        idle_error,
        login,
        login_error,
        server: Some(server),
    };
    crate::report::write(&results, out)?;
    eprintln!("tessera-bench: done in {:.0} s; wrote {}", results.elapsed_secs, out.join("benchmarks.md").display());
    Ok(())
}

fn note(skipped: &mut Vec<Skipped>, apps: &[&str], reason: &str) {
    eprintln!("tessera-bench: skipping {}: {reason}", apps.join(", "));
    skipped.extend(apps.iter().map(|app| Skipped { app: (*app).to_owned(), reason: reason.to_owned() }));
}

pub(crate) fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let kernel = Command::new("uname")
        .arg("-r")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    format!("{cores} × {cpu}, Linux {kernel}")
}

/// A server under test, pinned to CPU 1; killed when dropped.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(app: &str, backends: &Backends) -> Fallible<Self> {
        let port = services::free_port()?;
        let sqlite = backends.scratch.join(format!("{app}-{port}.sqlite"));
        let child = Command::new("taskset")
            .args(["-c", "1"])
            .arg(std::env::current_exe()?)
            .args(["serve", "--app", app, "--port", &port.to_string()])
            .arg("--redis-url")
            .arg(backends.redis.as_ref().map(|r| r.url.as_str()).unwrap_or(""))
            .arg("--postgres-url")
            .arg(backends.postgres.as_ref().map(|p| p.url.as_str()).unwrap_or(""))
            .arg("--sqlite-path")
            .arg(&sqlite)
            .stdout(Stdio::null())
            .spawn()?;
        let server = Server { child, port };
        load::wait_until_up(port, crate::apps::STARTUP_TIMEOUT)?;
        Ok(server)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `plan.app` once and measures its routes due in repetition `rep`.
fn measure_app(settings: &Settings, backends: &Backends, plan: &AppPlan, rep: u32) -> Fallible<Vec<Run>> {
    if let Some(redis) = &backends.redis {
        redis.flush()?;
    }
    if let Some(postgres) = &backends.postgres {
        postgres.flush();
    }
    let server = Server::start(plan.app, backends)?;
    let mut cookies = Vec::new();
    let mut runs = Vec::new();
    for route in Route::ALL {
        if plan.reps(route) <= rep {
            continue;
        }
        if matches!(route, Route::Me | Route::Counter) && cookies.is_empty() {
            cookies = load::session_cookies(server.port, settings.cookies)?;
        }
        let (method, path) = route.method_path();
        let request = Request {
            method,
            path,
            body: None,
            cookies: if matches!(route, Route::Me | Route::Counter) { cookies.clone() } else { Vec::new() },
            headers: Vec::new(),
            bodies: Vec::new(),
        };
        eprintln!("tessera-bench: rep {} {} {}", rep + 1, plan.app, route.label());
        let run = measure(settings, backends, &server, &request)?;
        let (peak_rss, _) = procstat::memory(server.pid())?;
        runs.push(Run {
            app: plan.app.to_owned(),
            route,
            rep,
            rps: run.0.rps(),
            p50_us: run.0.p50_us,
            p99_us: run.0.p99_us,
            requests: run.0.requests,
            errors: run.0.errors,
            cpu_us: run.1,
            cpu_us_per_request: run.1 as f64 / run.0.requests.max(1) as f64,
            peak_rss,
        });
    }
    Ok(runs)
}

/// Warm-up, then the measured run with the server's CPU time around it.
fn measure(settings: &Settings, backends: &Backends, server: &Server, request: &Request) -> Fallible<(WrkResult, u64)> {
    let dir = &backends.scratch;
    load::run_wrk(dir, server.port, request, settings.connections, settings.warmup_secs, "warmup")?;
    let cpu_before = procstat::cpu_micros(server.pid())?;
    let result = load::run_wrk(dir, server.port, request, settings.connections, settings.run_secs, "run")?;
    let cpu_after = procstat::cpu_micros(server.pid())?;
    Ok((result, cpu_after.saturating_sub(cpu_before)))
}

/// Login throughput with argon2id, and `GET /me` p99 with and without a
/// login flood, on `tessera-memory`.
fn login_flood(settings: &Settings, backends: &Backends) -> Fallible<LoginFlood> {
    let hash_seconds: f64 = {
        let output = Command::new("taskset")
            .args(["-c", "1"])
            .arg(std::env::current_exe()?)
            .args(["hash-time", "--iterations", "10"])
            .output()?;
        String::from_utf8_lossy(&output.stdout).trim().parse()?
    };
    // The server may use one core (CPU 1); so may the hashing pool.
    let cores = 1;
    let server = Server::start("tessera-memory", backends)?;
    let cookies = load::session_cookies(server.port, settings.cookies)?;
    let me = Request::get("/me", cookies);
    let flood = Request {
        method: "POST",
        path: "/login-argon2",
        body: Some(crate::apps::BENCH_PASSWORD.to_owned()),
        cookies: Vec::new(),
        headers: Vec::new(),
        bodies: Vec::new(),
    };
    eprintln!("tessera-bench: POST /login-argon2 alone");
    let dir = &backends.scratch;
    load::run_wrk(dir, server.port, &flood, settings.flood_connections, settings.warmup_secs, "warmup")?;
    // The warm-up's last logins are still admitted (queued or hashing) when
    // its wrk exits: until they drain, the measured run's connections would
    // find the queue full and be refused in a fast loop, lowering the
    // logins counted. Wait out one full queue.
    std::thread::sleep(
        Duration::from_secs_f64(hash_seconds * f64::from(settings.flood_connections)) + Duration::from_millis(200),
    );
    let logins = load::run_wrk(dir, server.port, &flood, settings.flood_connections, settings.run_secs, "logins")?;
    eprintln!("tessera-bench: GET /me alone");
    let (me_alone, _) = measure(settings, backends, &server, &me)?;
    eprintln!("tessera-bench: GET /me during an argon2id login flood");
    // The flood starts first and outlasts the probe's warm-up and run.
    let flood_secs = settings.warmup_secs + settings.run_secs + 2;
    let flood_child = load::spawn_wrk(dir, server.port, &flood, settings.flood_connections, flood_secs, "flood")?;
    std::thread::sleep(Duration::from_millis(500));
    let probe = measure(settings, backends, &server, &me);
    let flood_result = load::finish_wrk(flood_child)?;
    let (me_during_flood, _) = probe?;
    if flood_result.requests == 0 {
        return Err("the login flood made no request".into());
    }
    Ok(LoginFlood {
        cores,
        hash_seconds,
        ideal_logins_per_sec: cores as f64 / hash_seconds,
        // Successful logins only: past the hashing queue's bound (1 + 8 per
        // core at once) the flood's extra connections get `503 busy` at once.
        logins_per_sec: logins.ok_rps(),
        login_errors: logins.errors,
        logins_during_flood_per_sec: flood_result.ok_rps(),
        me_alone,
        me_during_flood,
    })
}

/// The idle-session probe, in its own process on CPU 1.
fn idle_sessions(settings: &Settings) -> Fallible<IdleResult> {
    eprintln!("tessera-bench: {} idle sessions in the memory store", settings.idle_sessions);
    let output = Command::new("taskset")
        .args(["-c", "1"])
        .arg(std::env::current_exe()?)
        .args(["idle-sessions", "--count", &settings.idle_sessions.to_string()])
        .args(["--idle-secs", &settings.idle_timeout_secs.to_string()])
        .output()?;
    if !output.status.success() {
        return Err(format!("idle-sessions failed: {}", String::from_utf8_lossy(&output.stderr)).into());
    }
    Ok(serde_json::from_slice(&output.stdout)?)
}
