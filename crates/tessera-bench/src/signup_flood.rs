//! `tessera-bench signup-flood`: does a sign-up flood from one address slow
//! down another address's login? (issue #14 item 4)
//!
//! Starts the real `tessera` server (release build, default settings: real
//! argon2id, a fresh SQLite database) trusting 127.0.0.1 as a proxy, so
//! that each request names its client address in `X-Forwarded-For`. Then:
//!
//! 1. quiet: `POST /api/signin` from 203.0.113.9, one after another;
//! 2. flood: 150 clients loop on `POST /api/signup` (fresh names each time)
//!    from 198.51.100.7, and meanwhile the same logins as in 1 run again.
//!
//! It prints the median and p95 login latency of both phases, their ratio
//! (the goal is at most 3×), how the flood was answered and the load
//! average, as Markdown for `docs/reliability.md`. `--server` picks the
//! binary, so the same measurement runs against an older build.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::Fallible;

/// Arguments of `signup-flood`.
#[derive(clap::Args, Debug)]
pub(crate) struct FloodArgs {
    /// The tessera server binary [default: $CARGO_TARGET_DIR/release/tessera].
    #[arg(long)]
    server: Option<PathBuf>,
    /// Concurrent sign-up clients of the flooding address.
    #[arg(long, default_value_t = 150)]
    clients: usize,
    /// Logins measured in each phase (the flood phase stops early after
    /// `--max-seconds`).
    #[arg(long, default_value_t = 40)]
    logins: usize,
    /// Longest the flood phase measures.
    #[arg(long, default_value_t = 30)]
    max_seconds: u64,
}

const LOGIN_ADDRESS: &str = "203.0.113.9";
const FLOOD_ADDRESS: &str = "198.51.100.7";
const PASSWORD: &str = "correct horse battery staple";

/// The server under test, killed when dropped.
struct Server {
    child: Child,
    port: u16,
    _dir: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self._dir);
    }
}

fn start(binary: &PathBuf) -> Fallible<Server> {
    let port = crate::services::free_port()?;
    let dir = std::env::temp_dir().join(format!("tessera-signup-flood-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut command = Command::new(binary);
    command
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--trusted-proxy", "127.0.0.1"])
        .arg("--database")
        .arg(format!("sqlite://{}", dir.join("users.db").display()))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (name, _) in std::env::vars() {
        if name.starts_with("TESSERA_") {
            command.env_remove(name);
        }
    }
    let child = command.spawn().map_err(|e| format!("{}: {e}", binary.display()))?;
    Ok(Server { child, port, _dir: dir })
}

/// One request on its own connection: the status and the time it took.
async fn post(port: u16, path: &str, client: &str, body: &str) -> Fallible<(u16, Duration)> {
    let started = Instant::now();
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
    stream.set_nodelay(true)?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nhost: localhost:{port}\r\nconnection: close\r\ncontent-type: application/json\r\n\
         x-forwarded-for: {client}\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    let text = String::from_utf8_lossy(&answer);
    let status = text.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
    Ok((status, started.elapsed()))
}

async fn wait_until_up(port: u16) -> Fallible {
    for _ in 0..200 {
        if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err("the server did not start within 10 s".into())
}

/// Logins from the login address until `count` or `deadline`; latencies.
async fn logins(port: u16, count: usize, deadline: Instant) -> Fallible<Vec<Duration>> {
    let body = serde_json::json!({"username": "measured", "password": PASSWORD}).to_string();
    let mut took = Vec::new();
    while took.len() < count && Instant::now() < deadline {
        let (status, elapsed) = post(port, "/api/signin", LOGIN_ADDRESS, &body).await?;
        if status != 200 {
            return Err(format!("a measured login answered {status}").into());
        }
        took.push(elapsed);
    }
    Ok(took)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// Runs the measurement and prints the result.
pub(crate) fn run(args: FloodArgs) -> Fallible {
    let binary = args.server.clone().unwrap_or_else(|| {
        PathBuf::from(std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into())).join("release/tessera")
    });
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(measure(binary, args))
}

async fn measure(binary: PathBuf, args: FloodArgs) -> Fallible {
    let load_before = load_average();
    let server = start(&binary)?;
    let port = server.port;
    wait_until_up(port).await?;
    let signup = serde_json::json!({"username": "measured", "password": PASSWORD}).to_string();
    let (status, _) = post(port, "/api/signup", LOGIN_ADDRESS, &signup).await?;
    if status != 201 {
        return Err(format!("signing the measured user up answered {status}").into());
    }
    // Warm up (first connections, caches), then the quiet phase.
    logins(port, 3, Instant::now() + Duration::from_secs(30)).await?;
    let mut quiet = logins(port, args.logins, Instant::now() + Duration::from_secs(60)).await?;

    // The flood: each client loops on sign-ups with fresh names.
    let stop = Arc::new(AtomicBool::new(false));
    let counts: Arc<[AtomicU64; 5]> = Arc::new(Default::default());
    let flood: Vec<_> = (0..args.clients)
        .map(|client| {
            let stop = stop.clone();
            let counts = counts.clone();
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let body = serde_json::json!({"username": format!("flood-{client}-{n}"), "password": PASSWORD})
                        .to_string();
                    let slot = match post(port, "/api/signup", FLOOD_ADDRESS, &body).await {
                        Ok((201, _)) => 0,
                        Ok((429, _)) => 1,
                        Ok((503, _)) => 2,
                        Ok(_) => 3,
                        Err(_) => 4,
                    };
                    counts[slot].fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    // Let the flood fill the server before measuring.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let flood_started = Instant::now();
    let mut flooded = logins(port, args.logins, Instant::now() + Duration::from_secs(args.max_seconds)).await?;
    let flood_seconds = flood_started.elapsed().as_secs_f64() + 1.0;
    let load_during = load_average();
    stop.store(true, Ordering::Relaxed);
    for task in flood {
        let _ = task.await;
    }
    drop(server);

    quiet.sort();
    flooded.sort();
    let (q50, q95) = (percentile(&quiet, 50.0), percentile(&quiet, 95.0));
    let (f50, f95) = (percentile(&flooded, 50.0), percentile(&flooded, 95.0));
    let ratio = millis(f50) / millis(q50).max(0.001);
    let ratio95 = millis(f95) / millis(q95).max(0.001);
    let [created, throttled, busy, other, failed] = counts.each_ref().map(|c| c.load(Ordering::Relaxed));
    println!("server: {}", binary.display());
    println!("| phase | logins | median | p95 |");
    println!("| --- | --- | --- | --- |");
    println!("| quiet | {} | {:.1} ms | {:.1} ms |", quiet.len(), millis(q50), millis(q95));
    println!(
        "| {} clients flooding `/api/signup` from another address | {} | {:.1} ms | {:.1} ms |",
        args.clients,
        flooded.len(),
        millis(f50),
        millis(f95)
    );
    println!();
    println!(
        "ratio flood/quiet: median {ratio:.2}×, p95 {ratio95:.2}× (goal ≤ 3×: {})",
        if ratio <= 3.0 { "met" } else { "NOT met" }
    );
    println!(
        "flood answers in {flood_seconds:.1} s: {created} × 201 (created), {throttled} × 429, {busy} × 503, \
         {other} × other, {failed} × connection errors"
    );
    println!("load average (1/5/15 min) before: {load_before}; at the end of the flood: {load_during}");
    Ok(())
}
