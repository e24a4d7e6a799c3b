//! Soak: many sessions created and left to expire in each server-side store
//! while logged-in requests keep flowing. Memory stays flat once expiry
//! catches up, purge work is proportional to what expired, and the p99 of
//! the live requests does not drift.
//!
//! Short form (CI): 20 000 sessions per store. Long form:
//! `TESSERA_SOAK_SESSIONS=1000000 scripts/soak.sh` (see docs/reliability.md).
//! `TESSERA_SOAK_STORES=memory,sqlite` picks stores; `TESSERA_SOAK_REPORT=FILE`
//! appends the Markdown result rows to FILE.

mod harness;
mod services;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::Params;
use harness::{unique_name, Browser};
use tessera::password::PasswordHasher;
use tessera::{DeviceInfo, ExpiryPolicy};
use tessera_server::{App, AppConfig};
use tokio::net::TcpListener;

const PASSWORD: &str = "correct horse battery";
/// Created sessions are never touched again: they expire after this.
const IDLE: Duration = Duration::from_secs(3);
const PURGE_EVERY: Duration = Duration::from_secs(1);
const CREATORS: usize = 4;

fn sessions_per_store() -> u64 {
    std::env::var("TESSERA_SOAK_SESSIONS").ok().and_then(|n| n.parse().ok()).unwrap_or(20_000)
}

fn rss_mib() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0.0);
    pages * 4096.0 / 1048576.0
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[derive(Debug)]
struct Report {
    store: &'static str,
    sessions: u64,
    seconds: f64,
    requests: usize,
    request_errors: usize,
    p99_ms: Vec<f64>,
    rss_mib: Vec<f64>,
    purges: usize,
    purged: u64,
    purge_ms_total: f64,
    empty_purge_ms_max: f64,
    left_over: Option<u64>,
}

impl Report {
    fn row(&self) -> String {
        let per = if self.purged > 0 { self.purge_ms_total * 1000.0 / self.purged as f64 } else { 0.0 };
        format!(
            "| {} | {} | {:.0} s ({:.0}/s) | {} ({} errors) | {} | {} | {} purges, {} purged, {:.1} µs/session, empty purge ≤ {:.1} ms | {} |",
            self.store,
            self.sessions,
            self.seconds,
            self.sessions as f64 / self.seconds,
            self.requests,
            self.request_errors,
            self.p99_ms.iter().map(|p| format!("{p:.1}")).collect::<Vec<_>>().join(" → "),
            self.rss_mib.iter().map(|m| format!("{m:.0}")).collect::<Vec<_>>().join(" → "),
            self.purges,
            self.purged,
            per,
            self.empty_purge_ms_max,
            self.left_over.map(|n| n.to_string()).unwrap_or_else(|| "n/a".into()),
        )
    }
}

async fn soak(store: &'static str, url: String) -> Report {
    let total = sessions_per_store();
    let dir = tempfile::tempdir().unwrap();
    let config = AppConfig {
        database_url: format!("sqlite://{}", dir.path().join("users.db").display()),
        session_store_url: Some(url),
        expiry: ExpiryPolicy::new(IDLE, Duration::from_secs(3600)),
        hasher: PasswordHasher::with_params(Params::new(1024, 1, 1, None).unwrap()),
        purge_interval: Duration::from_secs(24 * 3600),
        active_sessions_interval: Duration::from_secs(3600),
        ..AppConfig::default()
    };
    let app = App::build(config).await.expect("server builds");
    let engine = app.state.engine.clone();
    let counter = app.store.as_ref().and_then(|s| s.active.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://localhost:{}", listener.local_addr().unwrap().port());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.serve(listener, async {
        let _ = stop_rx.await;
    }));

    let started = Instant::now();
    let done = Arc::new(AtomicBool::new(false));

    // Live traffic: one logged-in user viewing the profile (a session read
    // and write per request), latency recorded with its time.
    let mut browser = Browser::new(&base);
    assert_eq!(browser.register(&unique_name("soak"), PASSWORD).await.status, 303);
    let samples: Arc<Mutex<Vec<(f64, f64, u16)>>> = Arc::default();
    let load = {
        let (done, samples) = (done.clone(), samples.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                let t = Instant::now();
                let status = browser.get("/profile").await.status;
                let at = started.elapsed().as_secs_f64();
                samples.lock().unwrap().push((at, t.elapsed().as_secs_f64() * 1000.0, status));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };

    // Purging, as the server's own task would, but measured.
    let purges: Arc<Mutex<Vec<(u64, f64)>>> = Arc::default();
    let purger = {
        let (done, purges, engine) = (done.clone(), purges.clone(), engine.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                tokio::time::sleep(PURGE_EVERY).await;
                let t = Instant::now();
                if let Ok(n) = engine.purge_expired().await {
                    purges.lock().unwrap().push((n, t.elapsed().as_secs_f64() * 1000.0));
                }
            }
        })
    };

    // Memory, sampled at each quarter of the creation.
    let rss: Arc<Mutex<Vec<f64>>> = Arc::new(Mutex::new(vec![rss_mib()]));
    let created = Arc::new(AtomicU64::new(0));
    let creators: Vec<_> = (0..CREATORS)
        .map(|_| {
            let (engine, created, rss) = (engine.clone(), created.clone(), rss.clone());
            tokio::spawn(async move {
                loop {
                    let n = created.fetch_add(1, Ordering::Relaxed);
                    if n >= total {
                        break;
                    }
                    let session = engine.load(None, DeviceInfo::new(None, Some("soak/1.0"))).await.expect("load");
                    session.insert("n", &n).unwrap();
                    session.insert("cart", &[1u32, 2, 3, 4, 5, 6, 7, 8]).unwrap();
                    engine.commit(&session).await.expect("commit");
                    // The memory store never waits: let the live requests in.
                    tokio::task::yield_now().await;
                    if n > 0 && n.is_multiple_of((total / 4).max(1)) {
                        rss.lock().unwrap().push(rss_mib());
                    }
                }
            })
        })
        .collect();
    for creator in creators {
        creator.await.unwrap();
    }
    let creation_seconds = started.elapsed().as_secs_f64();
    // Let expiry catch up: every created session's idle time-out passes and
    // the purger runs at least twice more.
    tokio::time::sleep(IDLE + PURGE_EVERY * 3).await;
    rss.lock().unwrap().push(rss_mib());
    done.store(true, Ordering::Relaxed);
    let _ = load.await;
    let _ = purger.await;
    let left_over = match &counter {
        Some(count) => Some(count().await.unwrap_or(u64::MAX)),
        None => None,
    };
    let _ = stop_tx.send(());
    let _ = server.await;

    let samples = samples.lock().unwrap().clone();
    let request_errors = samples.iter().filter(|(_, _, s)| *s != 200).count();
    // p99 over five equal windows of the creation phase.
    let windows = 5;
    let p99_ms = (0..windows)
        .map(|w| {
            let (from, to) =
                (creation_seconds * w as f64 / windows as f64, creation_seconds * (w + 1) as f64 / windows as f64);
            let mut window: Vec<f64> =
                samples.iter().filter(|(at, _, _)| *at >= from && *at < to).map(|s| s.1).collect();
            window.sort_by(|a, b| a.total_cmp(b));
            percentile(&window, 0.99)
        })
        .collect();
    let purges = purges.lock().unwrap().clone();
    let report = Report {
        store,
        sessions: total,
        seconds: creation_seconds,
        requests: samples.len(),
        request_errors,
        p99_ms,
        rss_mib: rss.lock().unwrap().clone(),
        purges: purges.len(),
        purged: purges.iter().map(|p| p.0).sum(),
        purge_ms_total: purges.iter().map(|p| p.1).sum(),
        empty_purge_ms_max: purges.iter().filter(|p| p.0 == 0).map(|p| p.1).fold(0.0, f64::max),
        left_over,
    };
    eprintln!("{}", report.row());
    if let Ok(path) = std::env::var("TESSERA_SOAK_REPORT") {
        use std::io::Write;
        if let Ok(mut file) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
            let _ = writeln!(file, "{}", report.row());
        }
    }
    report
}

/// `purged_by_purge`: the store relies on `purge_expired` (SQLite,
/// PostgreSQL); the memory store and Redis expire records themselves.
fn check(report: &Report, purged_by_purge: bool) {
    assert_eq!(report.request_errors, 0, "live requests failed during the soak: {report:?}");
    assert!(report.requests > 20, "{report:?}");
    // Only the live user's session (and perhaps a straggler) remains.
    let left = report.left_over.unwrap_or(0);
    assert!(left <= 5, "expired sessions left behind: {report:?}");
    if purged_by_purge {
        assert!(report.purged + 5 >= report.sessions, "purge removed what expired: {report:?}");
    }
    // No drift: the last window's p99 stays near the first's (generous, for
    // a loaded two-core CI machine).
    let first = report.p99_ms.first().copied().unwrap_or(0.0);
    let last = report.p99_ms.last().copied().unwrap_or(0.0);
    assert!(last <= first * 4.0 + 100.0, "p99 drifted from {first:.1} ms to {last:.1} ms: {report:?}");
    // Memory flat once expiry catches up: the end is not far above the middle.
    let mid = report.rss_mib[report.rss_mib.len() / 2];
    let end = *report.rss_mib.last().unwrap();
    assert!(end <= mid + 128.0, "memory kept growing: {report:?}");
}

fn wanted(store: &str) -> bool {
    std::env::var("TESSERA_SOAK_STORES").map(|list| list.split(',').any(|s| s.trim() == store)).unwrap_or(true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_memory() {
    if !wanted("memory") {
        return;
    }
    let report = soak("memory", "memory://".into()).await;
    check(&report, false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_sqlite() {
    if !wanted("sqlite") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let report = soak("sqlite", format!("sqlite://{}", dir.path().join("sessions.db").display())).await;
    check(&report, true);
}

/// A database of the soak's own, so other tests' sessions do not count.
async fn own_postgres_database() -> String {
    use sqlx::Connection;
    let admin_url = services::postgres_url();
    let mut conn = sqlx::PgConnection::connect(&admin_url).await.expect("postgres");
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = 'tessera_soak'")
        .fetch_optional(&mut conn)
        .await
        .unwrap();
    if exists.is_none() {
        let _ = sqlx::query("CREATE DATABASE tessera_soak").execute(&mut conn).await;
    }
    let base = admin_url.rsplit_once('/').map(|(b, _)| b.to_owned()).unwrap_or(admin_url.clone());
    let url = format!("{base}/tessera_soak");
    let mut soak = sqlx::PgConnection::connect(&url).await.expect("soak database");
    let _ = sqlx::query("DELETE FROM tessera_sessions").execute(&mut soak).await;
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_postgres() {
    if !wanted("postgres") || !services::reachable("PostgreSQL", "127.0.0.1:5432") {
        return;
    }
    let url = own_postgres_database().await;
    let report = soak("postgres", url).await;
    check(&report, true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_redis() {
    if !wanted("redis") || !services::reachable("Redis", "127.0.0.1:6379") {
        return;
    }
    // Redis expires records itself (purge finds nothing to do); its own
    // memory is reported by `redis-cli info memory` in the long form.
    let report = soak("redis", "redis://127.0.0.1:6379/13".into()).await;
    check(&report, false);
}
