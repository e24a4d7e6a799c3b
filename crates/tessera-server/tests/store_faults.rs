//! The session store's connections cut and restored under load, through a
//! TCP proxy the test controls: PostgreSQL and Redis. No request hangs past
//! the configured time-out, nothing panics (no 500), service resumes.

mod harness;
mod services;

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use harness::{test_config, unique_name, TestServer};
use tessera::ManualClock;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
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
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: &'static str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mode = Arc::new(AtomicU8::new(PASS));
        let live: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let task = {
            let (mode, live) = (mode.clone(), live.clone());
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
                            let forward = tokio::spawn(async move {
                                if let Ok(mut server) = TcpStream::connect(upstream).await {
                                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                                }
                            });
                            live.lock().unwrap().push(forward.abort_handle());
                        }
                    }
                }
            })
        };
        Proxy { port, mode, live, task }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_connections_cut_and_restored_under_load() {
    if !services::reachable("PostgreSQL", "127.0.0.1:5432") {
        return;
    }
    let proxy = Proxy::start("127.0.0.1:5432").await;
    let url = services::postgres_url().replace("127.0.0.1:5432", &format!("127.0.0.1:{}", proxy.port));
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
