//! The session store's connections cut and restored under load, through a
//! TCP proxy the test controls: PostgreSQL and Redis. No request hangs past
//! the configured time-out, nothing panics (no 500), service resumes. And
//! the users database hanging (connections open, no answers) through the
//! same proxy: 503 within `database.query_timeout`, then recovery.

mod harness;
mod services;

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use harness::{test_config, unique_name, TestServer};
use tessera::ManualClock;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::AbortHandle;

const PASSWORD: &str = "correct horse battery";
const STORE_TIMEOUT: Duration = Duration::from_millis(800);

const PASS: u8 = 0;
/// New connections are closed at once; live ones were cut.
const REFUSE: u8 = 1;
/// New connections are accepted and never answered; live ones were cut.
const BLACKHOLE: u8 = 2;

/// A TCP proxy in front of a real service.
struct Proxy {
    port: u16,
    mode: Arc<AtomicU8>,
    live: Arc<Mutex<Vec<AbortHandle>>>,
    /// While true, forwarded connections stay open but carry nothing: a
    /// hung server, as opposed to a dead one.
    paused: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// Copies `from` to `to`, holding data back while `paused`.
async fn pump(mut from: impl AsyncRead + Unpin, mut to: impl AsyncWrite + Unpin, mut paused: watch::Receiver<bool>) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if paused.wait_for(|paused| !*paused).await.is_err() || to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}

impl Proxy {
    async fn start(upstream: &'static str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mode = Arc::new(AtomicU8::new(PASS));
        let live: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let (paused, _) = watch::channel(false);
        let task = {
            let (mode, live, paused) = (mode.clone(), live.clone(), paused.clone());
            tokio::spawn(async move {
                loop {
                    let Ok((mut client, _)) = listener.accept().await else { continue };
                    match mode.load(Ordering::SeqCst) {
                        REFUSE => {
                            let _ = client.shutdown().await;
                        }
                        BLACKHOLE => {
                            let held = tokio::spawn(async move {
                                let _client = client;
                                std::future::pending::<()>().await;
                            });
                            live.lock().unwrap().push(held.abort_handle());
                        }
                        _ => {
                            let (up, down) = (paused.subscribe(), paused.subscribe());
                            let forward = tokio::spawn(async move {
                                if let Ok(server) = TcpStream::connect(upstream).await {
                                    let (client_read, client_write) = client.into_split();
                                    let (server_read, server_write) = server.into_split();
                                    tokio::select! {
                                        () = pump(client_read, server_write, up) => {}
                                        () = pump(server_read, client_write, down) => {}
                                    }
                                }
                            });
                            live.lock().unwrap().push(forward.abort_handle());
                        }
                    }
                }
            })
        };
        Proxy { port, mode, live, paused, task }
    }

    /// Every connection, live or new, stops carrying data; none is closed.
    fn pause(&self) {
        self.paused.send_replace(true);
    }

    /// Data flows again, including what was held back.
    fn resume(&self) {
        self.paused.send_replace(false);
    }

    /// Drops every live connection and puts `mode` in force for new ones.
    fn cut(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
        for connection in self.live.lock().unwrap().drain(..) {
            connection.abort();
        }
    }

    fn restore(&self) {
        self.cut(PASS);
        self.resume();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut(REFUSE);
        self.task.abort();
    }
}

/// Requests from several logged-in users while the proxy misbehaves.
async fn fault_run(store_url: String, proxy: &Proxy) {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let mut config = test_config(dir.path(), &clock);
    config.session_store_url = Some(store_url);
    config.store_timeout = STORE_TIMEOUT;
    let server = TestServer::start(config, clock).await;
    let mut users = Vec::new();
    for _ in 0..4 {
        let mut browser = server.browser();
        assert_eq!(browser.register(&unique_name("fault"), PASSWORD).await.status, 303);
        users.push(browser);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let results: Arc<Mutex<Vec<(u16, Duration)>>> = Arc::default();
    let load: Vec<_> = users
        .into_iter()
        .map(|mut browser| {
            let (stop, results) = (stop.clone(), results.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let status = browser.get("/profile").await.status;
                    results.lock().unwrap().push((status, started.elapsed()));
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                browser
            })
        })
        .collect();

    let resumed = |results: &Arc<Mutex<Vec<(u16, Duration)>>>, since: usize| {
        results.lock().unwrap()[since..].iter().filter(|(s, _)| *s == 200).count() >= 8
    };
    for (phase, mode) in [("connections cut", REFUSE), ("connections hang", BLACKHOLE), ("cut again", REFUSE)] {
        tokio::time::sleep(Duration::from_millis(700)).await;
        proxy.cut(mode);
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let during = results.lock().unwrap().len();
        proxy.restore();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !resumed(&results, during) {
            assert!(Instant::now() < deadline, "service did not resume after {phase}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut browsers = Vec::new();
    for task in load {
        browsers.push(task.await.expect("no client task panicked"));
    }
    let results = results.lock().unwrap().clone();
    let unavailable = results.iter().filter(|(s, _)| *s == 503).count();
    let slowest = results.iter().map(|(_, d)| *d).max().unwrap_or_default();
    eprintln!("{} requests, {unavailable} answered 503, slowest {slowest:?}", results.len());
    assert!(unavailable > 0, "the faults were felt");
    for (status, took) in &results {
        assert!(matches!(status, 200 | 503), "only 200 or 503, never {status}");
        // A request makes at most a load and a save, each bounded.
        assert!(*took < STORE_TIMEOUT * 2 + Duration::from_millis(1500), "a request took {took:?}");
    }
    // The same sessions work again (the store kept them).
    for mut browser in browsers {
        assert_eq!(browser.get("/profile").await.status, 200);
    }
    server.stop().await;
}

/// The real PostgreSQL behind a new proxy, and a URL (fresh schema) that
/// goes through it; `None` when PostgreSQL is not running (see `services`).
async fn postgres_behind_proxy() -> Option<(Proxy, String)> {
    if !services::reachable("PostgreSQL", "127.0.0.1:5432") {
        return None;
    }
    let proxy = Proxy::start("127.0.0.1:5432").await;
    let url = services::postgres_url().replace("127.0.0.1:5432", &format!("127.0.0.1:{}", proxy.port));
    Some((proxy, url))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_connections_cut_and_restored_under_load() {
    let Some((proxy, url)) = postgres_behind_proxy().await else { return };
    fault_run(url, &proxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_connections_cut_and_restored_under_load() {
    if !services::reachable("Redis", "127.0.0.1:6379") {
        return;
    }
    let proxy = Proxy::start("127.0.0.1:6379").await;
    fault_run(format!("redis://127.0.0.1:{}", proxy.port), &proxy).await;
}

const QUERY_TIMEOUT: Duration = Duration::from_millis(800);

/// The users database hangs: every request that needs it (here: `/profile`
/// looks the user up once the copy the server keeps in memory is older than
/// `signed_in_users::MAX_AGE`) answers 503 within `database.query_timeout`;
/// once the database answers again, so does the service, with the same
/// session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_database_hangs_then_answers_again() {
    let Some((proxy, url)) = postgres_behind_proxy().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let mut config = test_config(dir.path(), &clock);
    config.database_url = url;
    // Sessions elsewhere, so that only the users database is at fault.
    config.session_store_url = Some("memory://".into());
    config.database_query_timeout = QUERY_TIMEOUT;
    let server = TestServer::start(config, clock).await;
    let mut browser = server.browser();
    assert_eq!(browser.register(&unique_name("hang"), PASSWORD).await.status, 303);
    assert_eq!(browser.get("/profile").await.status, 200);

    proxy.pause();
    // The signed-in user is kept in memory for a short while (no database
    // round trip per request); past that, the page must read the database.
    tokio::time::sleep(tessera_auth::signed_in_users::MAX_AGE).await;
    for _ in 0..3 {
        let started = Instant::now();
        let page = browser.get("/profile").await;
        let took = started.elapsed();
        assert_eq!(page.status, 503, "a hung database is unavailable, not an error: {}", page.body);
        assert!(took >= QUERY_TIMEOUT && took < QUERY_TIMEOUT + Duration::from_millis(1500), "took {took:?}");
    }
    proxy.resume();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = browser.get("/profile").await.status;
        if status == 200 {
            break;
        }
        assert_eq!(status, 503);
        assert!(Instant::now() < deadline, "service did not resume");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.stop().await;
}
