//! A session store that stops answering: 503 quickly, never a hang, never an
//! anonymous request; `/readyz` says so; service resumes by itself.

mod harness;
mod services;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use harness::{test_config, unique_name, Browser, TestServer};
use tessera::ManualClock;

const PASSWORD: &str = "correct horse battery";

/// A redis-server of this test's own, on its own port.
struct OwnRedis {
    port: u16,
    child: Child,
}

impl OwnRedis {
    fn start_on(port: u16) -> OwnRedis {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs (apt-get install redis-server)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "own redis-server did not start on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        OwnRedis { port, child }
    }

    fn start() -> OwnRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        Self::start_on(port)
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill").args([signal, &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
    }

    fn kill(mut self) -> u16 {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.port
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-CONT", &self.child.id().to_string()]).stderr(Stdio::null()).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn timed_get(browser: &mut Browser, path: &str) -> (u16, Duration, String) {
    let started = Instant::now();
    let page = browser.get(path).await;
    (page.status, started.elapsed(), page.body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_gives_503_then_recovers_without_restart() {
    if !services::reachable("redis-server binary", "127.0.0.1:6379") {
        return;
    }
    let redis = OwnRedis::start();
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let mut config = test_config(dir.path(), &clock);
    config.session_store_url = Some(format!("redis://127.0.0.1:{}", redis.port));
    config.store_timeout = Duration::from_millis(1500);
    let server = TestServer::start(config, clock).await;

    let mut browser = server.browser();
    assert_eq!(browser.register(&unique_name("outage"), PASSWORD).await.status, 303);
    assert_eq!(browser.get("/profile").await.element_text("visits").as_deref(), Some("1"));

    // A store that hangs (process stopped): bounded by the time-out.
    redis.signal("-STOP");
    let (status, took, body) = timed_get(&mut browser, "/profile").await;
    assert_eq!(status, 503, "a hung store is a 503, not a logout: {body:.300}");
    assert!(took < Duration::from_secs(5), "answered in {took:?}");
    assert!(body.contains("temporarily unavailable") || body.contains("Temporarily unavailable"), "{body:.300}");
    let mut api = Browser::new(&server.base);
    api.cookies = browser.cookies.clone();
    api.extra_headers = vec![("accept".into(), "application/json".into())];
    let json = api.get("/profile").await;
    assert_eq!(json.status, 503);
    assert_eq!(json.header("content-type"), Some("application/problem+json"));
    assert!(json.header("retry-after").is_some());
    let ready = reqwest::get(format!("{}/readyz", server.base)).await.unwrap();
    assert_eq!(ready.status(), 503);
    assert_eq!(ready.json::<serde_json::Value>().await.unwrap()["session_store"], "unavailable");
    let live = reqwest::get(format!("{}/healthz", server.base)).await.unwrap();
    assert_eq!(live.status(), 200, "liveness does not depend on the store");
    assert!(browser.session_id().is_some(), "the cookie was not cleared during the outage");

    // Back: the very same session works again, no restart.
    redis.signal("-CONT");
    let mut recovered = false;
    for _ in 0..50 {
        if browser.get("/profile").await.status == 200 {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "the session works again once the store answers");

    // A store that is gone (process killed, connection refused), then a new
    // one on the same port: 503 meanwhile, then service resumes.
    let port = redis.kill();
    let (status, took, _) = timed_get(&mut browser, "/profile").await;
    assert_eq!(status, 503);
    assert!(took < Duration::from_secs(5), "answered in {took:?}");
    let reborn = OwnRedis::start_on(port);
    let mut resumed = false;
    for _ in 0..100 {
        let ready = reqwest::get(format!("{}/readyz", server.base)).await.unwrap().status();
        if ready == 200 {
            resumed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(resumed, "readiness returns once the store is back");
    // The new Redis kept nothing, so the old session is simply gone; a new login works.
    let after = browser.get("/profile").await;
    assert_eq!(after.status, 303);
    let mut fresh = server.browser();
    assert_eq!(fresh.register(&unique_name("after"), PASSWORD).await.status, 303);
    assert_eq!(fresh.get("/profile").await.status, 200);
    drop(reborn);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_session_store_urls_name_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    for url in [
        "ftp://localhost/x",
        "nonsense",
        "redis://127.0.0.1:1",
        "mysql://root@127.0.0.1:1/x",
        "mongodb://127.0.0.1:1/x",
    ] {
        let mut config = test_config(dir.path(), &clock);
        config.session_store_url = Some(url.into());
        let error = match tessera_server::App::build(config).await {
            Ok(_) => panic!("{url} accepted"),
            Err(error) => error.to_string(),
        };
        assert!(error.starts_with("--session-store"), "{url}: {error}");
    }
}
