//! Metrics, request IDs, JSON logs and the activity chart.

mod binary;
mod harness;

use std::time::Duration;

use harness::{test_config, unique_name, Browser, TestServer};
use tessera::ManualClock;
use tessera_server::client_ip::TrustedProxies;

const PASSWORD: &str = "correct horse battery";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_generated_unless_a_trusted_proxy_sent_one() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let server = TestServer::start(test_config(dir.path(), &clock), clock.clone()).await;
    let mut browser = server.browser();
    let page = browser.get("/login").await;
    let id = page.header("x-request-id").expect("every response has an ID").to_owned();
    assert_eq!(id.len(), 32);
    assert_ne!(browser.get("/login").await.header("x-request-id"), Some(id.as_str()));
    let page = browser.get_with("/login", &[("x-request-id", "from-the-outside")]).await;
    assert_ne!(page.header("x-request-id"), Some("from-the-outside"), "untrusted peers cannot choose the ID");
    server.stop().await;

    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path(), &clock);
    config.trusted_proxies = TrustedProxies::new(vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()]);
    let server = TestServer::start(config, clock).await;
    let mut browser = server.browser();
    let page = browser.get_with("/login", &[("x-request-id", "edge-1234")]).await;
    assert_eq!(page.header("x-request-id"), Some("edge-1234"), "a trusted proxy's ID is kept");
    let page = browser.get_with("/login", &[("x-request-id", "bad id with spaces")]).await;
    assert_ne!(page.header("x-request-id"), Some("bad id with spaces"), "malformed IDs are replaced");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_by_route_not_on_the_public_listener_unless_configured() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let server = TestServer::start(test_config(dir.path(), &clock), clock.clone()).await;
    assert_eq!(server.browser().get("/metrics").await.status, 404, "not public by default");
    server.stop().await;

    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path(), &clock);
    config.metrics_on_public_listener = true;
    let server = TestServer::start(config, clock).await;
    let mut browser = server.browser();
    let name = unique_name("metered");
    browser.register(&name, PASSWORD).await;
    browser.logout().await;
    assert_eq!(browser.login(&name, "wrong password!").await.status, 401);
    assert_eq!(browser.login(&name, PASSWORD).await.status, 303);
    assert_eq!(browser.get("/profile").await.status, 200);
    browser.get("/no/such/page/secret-token-123").await;
    let metrics = browser.get("/metrics").await;
    assert_eq!(metrics.status, 200);
    assert!(metrics.header("content-type").unwrap().starts_with("text/plain"));
    let text = metrics.body;
    for needle in [
        "tessera_http_requests_total{route=\"/login\",method=\"POST\",status=\"303\"}",
        "tessera_http_requests_total{route=\"unmatched\",method=\"GET\",status=\"404\"}",
        "tessera_http_request_duration_seconds_bucket{route=\"/profile\"",
        "tessera_logins_total{result=\"failure\"}",
        "tessera_logins_total{result=\"success\"}",
        "tessera_login_throttled_total",
        "tessera_sessions_created_total{store=\"sqlite\"}",
        "tessera_store_call_duration_seconds_bucket{store=\"sqlite\",op=\"load\"",
        "tessera_password_hasher_available_slots",
    ] {
        assert!(text.contains(needle), "metrics lack {needle}:\n{text}");
    }
    assert!(!text.contains("secret-token-123"), "raw paths never become labels");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_json_logs_carry_the_request_id_and_metrics_listen_apart() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("t.db").display());
    let server = binary::Server::start(dir.path(), &db, &["--log-format", "json"], &[]);
    let mut browser = Browser::new(&server.base);
    let page = browser.get("/login").await;
    let id = page.header("x-request-id").unwrap().to_owned();
    assert_eq!(browser.get("/metrics").await.status, 404);
    let metrics = reqwest::get(format!("http://127.0.0.1:{}/metrics", server.metrics_port)).await.unwrap();
    assert_eq!(metrics.status(), 200);
    assert!(metrics.text().await.unwrap().contains("tessera_http_requests_total{route=\"/login\""));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = server.log_text();
    let line = log.lines().find(|l| l.contains(&id) && l.contains("request finished")).expect("a log line with the ID");
    let json: serde_json::Value = serde_json::from_str(line).expect("log lines are JSON");
    assert_eq!(json["span"]["request_id"], id.as_str(), "{line}");
    assert_eq!(json["span"]["route"], "/login", "{line}");
    assert_eq!(json["fields"]["status"], 200, "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_stats_draws_hourly_activity() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("t.db").display());
    let mut server = binary::Server::start(dir.path(), &db, &[], &[]);
    let mut browser = Browser::new(&server.base);
    let name = unique_name("charted");
    assert_eq!(browser.register(&name, PASSWORD).await.status, 303);
    browser.logout().await;
    assert_eq!(browser.login(&name, "not the password").await.status, 401);
    assert_eq!(browser.login(&name, PASSWORD).await.status, 303);
    server.signal("-TERM");
    let status = server.wait(Duration::from_secs(20)).expect("stops");
    assert!(status.success());

    let svg = dir.path().join("activity.svg");
    let output = binary::run(
        binary::command(&["sessions", "stats", "--hours", "6", "--database", &db, "--svg", svg.to_str().unwrap()]),
        "",
    );
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{out} {}", String::from_utf8_lossy(&output.stderr));
    let line = |name: &str| out.lines().find(|l| l.starts_with(name)).unwrap_or_default().to_owned();
    assert!(line("logins").contains("total 1,"), "{out}");
    assert!(line("login failures").contains("total 1,"), "{out}");
    assert!(!line("sessions created").contains("total 0,"), "{out}");
    let drawing = std::fs::read_to_string(&svg).unwrap();
    assert!(drawing.starts_with("<svg") && drawing.contains("sessions created"), "{drawing:.200}");
}
