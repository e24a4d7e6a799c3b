//! `kill -9` in the middle of a steady stream of registrations, logins and
//! session writes, on SQLite and on PostgreSQL: after a restart every
//! acknowledged write is there and every session still loads.
//!
//! Short form by default; `TESSERA_CRASH_ROUNDS=N` repeats the kill N times.

mod binary;
mod harness;
mod services;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use binary::Server;
use harness::{unique_name, Browser};

const PASSWORD: &str = "correct horse battery";
const WORKERS: usize = 6;

/// What a worker knows was acknowledged.
#[derive(Debug, Clone, Default)]
struct Acked {
    username: Option<String>,
    /// Cookies after the last acknowledged response.
    cookies: std::collections::BTreeMap<String, String>,
    /// The visit count of the last acknowledged profile view.
    visits: Option<u64>,
    /// A request that changes the session (login, logout) was in flight
    /// when the server died: the session may or may not have changed.
    session_change_in_flight: bool,
    writes: u64,
}

/// A worker registers, then views its profile (a session write) in a loop.
/// With `relogin_offset`, it also logs out and in every seventh round,
/// starting at that round; without, it keeps one session, so that the kill
/// always finds sessions that can be checked (a login takes an argon2 hash,
/// far longer than a profile view, so cycling workers are mostly mid-login).
async fn worker(base: String, acked: Arc<Mutex<Acked>>, dead: Arc<AtomicBool>, relogin_offset: Option<u64>) {
    let mut browser = Browser::new(&base);
    let name = unique_name("crash");
    if browser.register(&name, PASSWORD).await.status != 303 {
        return;
    }
    {
        let mut a = acked.lock().unwrap();
        a.username = Some(name.clone());
        a.cookies = browser.cookies.clone();
    }
    // Workers start their log-out/log-in cycle at different steps, so that
    // the kill never finds every one of them between logout and login
    // (whose sessions cannot be checked).
    let mut round = relogin_offset.unwrap_or(0);
    while !dead.load(Ordering::Relaxed) {
        round += 1;
        if relogin_offset.is_some() && round.is_multiple_of(7) {
            // Log out and in again: the session changes key.
            acked.lock().unwrap().session_change_in_flight = true;
            let Some(out) = try_page(&mut browser, |b| Box::pin(b.logout())).await else { return };
            if out != 303 {
                return;
            }
            let again = name.clone();
            let Some(status) = try_page(&mut browser, move |b| b.login_owned(again)).await else { return };
            if status != 303 {
                return;
            }
            let mut a = acked.lock().unwrap();
            a.cookies = browser.cookies.clone();
            a.visits = None;
            a.session_change_in_flight = false;
            continue;
        }
        let Some((status, visits)) = profile(&mut browser).await else { return };
        if status != 200 {
            return;
        }
        let mut a = acked.lock().unwrap();
        a.visits = visits;
        a.cookies = browser.cookies.clone();
        a.writes += 1;
    }
}

type PageFuture<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = harness::Page> + Send + 'a>>;

/// Runs a browser step, or `None` if the server died meanwhile (the
/// harness panics on connection errors, so run it in a task).
async fn try_page(
    browser: &mut Browser,
    step: impl FnOnce(&mut Browser) -> PageFuture<'_> + Send + 'static,
) -> Option<u16> {
    let mut owned = browser.clone();
    let task = tokio::spawn(async move {
        let page = step(&mut owned).await;
        (page.status, owned)
    });
    match task.await {
        Ok((status, after)) => {
            *browser = after;
            Some(status)
        }
        Err(_) => None,
    }
}

async fn profile(browser: &mut Browser) -> Option<(u16, Option<u64>)> {
    let mut owned = browser.clone();
    let task = tokio::spawn(async move {
        let page = owned.get("/profile").await;
        (page.status, page.element_text("visits").and_then(|v| v.parse().ok()), owned)
    });
    match task.await {
        Ok((status, visits, after)) => {
            *browser = after;
            Some((status, visits))
        }
        Err(_) => None,
    }
}

trait LoginOwned {
    fn login_owned(&mut self, name: String) -> PageFuture<'_>;
}

impl LoginOwned for Browser {
    fn login_owned(&mut self, name: String) -> PageFuture<'_> {
        Box::pin(async move { self.login(&name, PASSWORD).await })
    }
}

/// The workers' requests fail by design when the server is killed; their
/// panics (and backtraces) would bury the test's own message, so only those
/// are silenced.
fn silence_expected_connection_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if !message.starts_with("request sent") {
            default(info);
        }
    }));
}

async fn crash_and_check(database: String) {
    static SILENCE: std::sync::Once = std::sync::Once::new();
    SILENCE.call_once(silence_expected_connection_panics);
    let dir = tempfile::tempdir().unwrap();
    let rounds: usize = std::env::var("TESSERA_CRASH_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(1);
    let mut total_writes = 0;
    let mut checked_sessions = 0;
    for round in 0..rounds {
        let server = Server::start(dir.path(), &database, &[], &[]);
        let dead = Arc::new(AtomicBool::new(false));
        let states: Vec<Arc<Mutex<Acked>>> = (0..WORKERS).map(|_| Arc::default()).collect();
        let tasks: Vec<_> = states
            .iter()
            .enumerate()
            .map(|(i, state)| {
                let relogin_offset = (i % 2 == 0).then_some(i as u64);
                tokio::spawn(worker(server.base.clone(), state.clone(), dead.clone(), relogin_offset))
            })
            .collect();
        // Registrations hash passwords at the lowest CPU priority: on a busy
        // machine they can take seconds, so the clock starts once all are in.
        let registered = || states.iter().all(|state| state.lock().unwrap().username.is_some());
        for _ in 0..300 {
            if registered() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Let the stream run, then kill -9 in the middle of it.
        tokio::time::sleep(Duration::from_millis(2500 + 300 * (round as u64 % 3))).await;
        server.signal("-KILL");
        dead.store(true, Ordering::Relaxed);
        for task in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
        drop(server);

        let server = Server::start(dir.path(), &database, &[], &[]);
        for state in &states {
            let acked = state.lock().unwrap().clone();
            total_writes += acked.writes;
            let Some(username) = acked.username else { continue };
            // The acknowledged registration is there: the password works.
            let mut fresh = Browser::new(&server.base);
            assert_eq!(fresh.login(&username, PASSWORD).await.status, 303, "{username} lost after kill -9");
            if acked.session_change_in_flight {
                continue;
            }
            // The acknowledged session is there, loads, and holds every
            // acknowledged write (plus perhaps the one in flight).
            let mut browser = Browser::new(&server.base);
            browser.cookies = acked.cookies.clone();
            let page = browser.get("/profile").await;
            assert_eq!(page.status, 200, "{username}: acknowledged session lost or corrupt: {:.300}", page.body);
            checked_sessions += 1;
            let visits: u64 = page.element_text("visits").unwrap().parse().unwrap();
            let Some(before) = acked.visits else { continue };
            assert!(
                visits == before + 1 || visits == before + 2,
                "{username}: acknowledged {before} visits, found {} after restart",
                visits - 1
            );
        }
        drop(server);
    }
    eprintln!(
        "crash: {rounds} kill -9, {total_writes} acknowledged session writes, {checked_sessions} sessions checked"
    );
    assert!(
        total_writes > 0 && checked_sessions >= WORKERS / 2,
        "too little was checked: {total_writes} writes, {checked_sessions} sessions"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_on_sqlite_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("crash.db").display());
    crash_and_check(database).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_on_postgres_loses_no_acknowledged_write() {
    if !services::reachable("PostgreSQL", "127.0.0.1:5432") {
        return;
    }
    crash_and_check(services::postgres_url()).await;
}
