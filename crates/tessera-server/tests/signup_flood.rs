//! Unauthenticated floods cannot take the password-hashing CPU (issue #14
//! item 4):
//!
//! - sign-ups are counted per client address *before* the password is
//!   hashed: 60 simultaneous sign-ups from one address (half on the form,
//!   half on `POST /api/signup`) create at most the default allowance, the
//!   rest are `429` with `Retry-After` (a page on the form, problem+json on
//!   the API); another address is not affected; the window ends. Once on
//!   SQLite and once on two instances sharing PostgreSQL;
//! - the hashing queue is bounded: with a tiny queue, a burst of logins and
//!   sign-ups gets `503` with `Retry-After` (never `500`), and a refused
//!   attempt is not counted against the account, the address or the
//!   sign-up allowance.
//!
//! Bursts are truly simultaneous: each request is written but for its last
//! byte on its own connection, and the last bytes go out together (as in
//! `login_races.rs`).

mod harness;
mod services;

use std::net::SocketAddr;
use std::time::Duration;

use harness::burst::{burst, form, request, Answer};
use harness::{test_config, unique_name, TestServer};
use tessera::password::PasswordHasher;
use tessera::ManualClock;
use tessera_auth::throttle::ThrottleConfig;
use tessera_server::client_ip::TrustedProxies;
use tessera_server::settings::Settings;
use tessera_server::AppConfig;

const PASSWORD: &str = "correct horse battery";
const BURST: usize = 60;
/// The flooding client's address (sent through the trusted local proxy).
const FLOODER: &str = "198.51.100.7";
/// Someone else.
const NEIGHBOUR: &str = "203.0.113.9";

/// One or two instances over one users database, trusting 127.0.0.1 as a
/// proxy so that each request can name its client address.
struct Cluster {
    servers: Vec<TestServer>,
    _dir: tempfile::TempDir,
}

fn config(dir: &std::path::Path, clock: &ManualClock) -> AppConfig {
    let mut config = test_config(dir, clock);
    // The default allowance: this file is where it is shown to work.
    config.throttle.signups_per_address = ThrottleConfig::default().signups_per_address;
    let mut settings = Settings::default();
    settings.server.trusted_proxies = vec!["127.0.0.1".into()];
    config.trusted_proxies = TrustedProxies::new(settings.trusted_proxy_networks());
    config
}

impl Cluster {
    async fn sqlite(adjust: impl FnOnce(&mut AppConfig)) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new();
        let mut config = config(dir.path(), &clock);
        adjust(&mut config);
        Cluster { servers: vec![TestServer::start(config, clock).await], _dir: dir }
    }

    async fn postgres_pair() -> Option<Cluster> {
        if !services::reachable("PostgreSQL", "127.0.0.1:5432") {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new();
        let mut config = config(dir.path(), &clock);
        config.database_url = services::postgres_url();
        let first = TestServer::start(config.clone(), clock.clone()).await;
        let second = TestServer::start(config, clock).await;
        Some(Cluster { servers: vec![first, second], _dir: dir })
    }

    fn first(&self) -> &TestServer {
        &self.servers[0]
    }

    fn addresses(&self) -> Vec<SocketAddr> {
        self.servers.iter().map(|s| s.address).collect()
    }

    async fn scalar(&self, sql: &str, bind: &str) -> i64 {
        let pool = self.first().app_state.db.pool();
        let row: (i64,) = sqlx::query_as(sql).bind(bind).fetch_one(pool).await.unwrap();
        row.0
    }

    /// Accounts whose name starts with `prefix`.
    async fn accounts(&self, prefix: &str) -> i64 {
        self.scalar("SELECT COUNT(*) FROM users WHERE username LIKE $1", &format!("{prefix}%")).await
    }

    async fn audited(&self, kind: &str) -> i64 {
        self.scalar("SELECT COUNT(*) FROM audit_events WHERE kind = $1", kind).await
    }

    /// The throttle counter `key` (0 when there is none).
    async fn counter(&self, key: &str) -> i64 {
        self.scalar("SELECT COALESCE(MAX(failures), 0) FROM throttle WHERE key = $1", key).await
    }

    async fn stop(self) {
        for server in self.servers {
            server.stop().await;
        }
    }
}

/// A browser's CSRF token and cookies for the registration form.
async fn register_form(server: &TestServer) -> (String, String) {
    let mut browser = server.browser();
    let token = browser.get("/register").await.csrf();
    let cookies = browser.cookie_header();
    (token, cookies)
}

/// `count` sign-ups from `client`, alternating between the form and the
/// API and between the instances; user names start with `prefix`.
async fn sign_up_burst(cluster: &Cluster, client: &str, prefix: &str, count: usize) -> Vec<(bool, Answer)> {
    let (token, cookies) = register_form(cluster.first()).await;
    let addresses = cluster.addresses();
    let targets = (0..count)
        .map(|i| {
            let address = addresses[i % addresses.len()];
            let name = format!("{prefix}{i:03}");
            let on_form = i % 2 == 0;
            let bytes = if on_form {
                let body = form(&[("csrf_token", &token), ("username", &name), ("password", PASSWORD)]);
                let headers = [
                    ("cookie", cookies.clone()),
                    ("content-type", "application/x-www-form-urlencoded".to_owned()),
                    ("accept", "text/html".to_owned()),
                    ("x-forwarded-for", client.to_owned()),
                ];
                request(address, "POST", "/register", &headers, &body)
            } else {
                let body = serde_json::json!({"username": name, "password": PASSWORD}).to_string();
                let headers = [
                    ("content-type", "application/json".to_owned()),
                    ("accept", "application/json".to_owned()),
                    ("x-forwarded-for", client.to_owned()),
                ];
                request(address, "POST", "/api/signup", &headers, &body)
            };
            (address, bytes)
        })
        .collect();
    let answers = burst(targets).await;
    (0..count).map(|i| i % 2 == 0).zip(answers).collect()
}

/// The signature of a created account: 303 on the form, 201 on the API.
fn created(on_form: bool, answer: &Answer) -> bool {
    answer.status == if on_form { 303 } else { 201 }
}

/// 60 sign-ups at once from one address: at most the allowance is created.
async fn a_burst_of_sign_ups_creates_at_most_the_allowance(cluster: &Cluster) {
    let allowance = i64::from(ThrottleConfig::default().signups_per_address);
    let prefix = format!("{}-", unique_name("flood"));
    let answers = sign_up_burst(cluster, FLOODER, &prefix, BURST).await;
    let statuses: Vec<u16> = answers.iter().map(|(_, a)| a.status).collect();
    let made = cluster.accounts(&prefix).await;
    eprintln!("{made} of {BURST} sign-ups created; statuses {statuses:?}");
    assert_eq!(made, allowance, "exactly the allowance is created (every sign-up was valid)");
    let accepted = answers.iter().filter(|(on_form, a)| created(*on_form, a)).count() as i64;
    assert_eq!(accepted, made, "{statuses:?}");
    let refused: Vec<&Answer> = answers.iter().map(|(_, a)| a).filter(|a| a.status == 429).collect();
    assert_eq!(refused.len() as i64, BURST as i64 - made, "the rest are 429: {statuses:?}");
    for answer in &refused {
        let wait: u64 = answer.header("retry-after").expect("429 has Retry-After").parse().unwrap();
        assert!((1..=3600).contains(&wait), "{wait}");
    }
    // Form refusals are the page, API refusals problem+json.
    for (on_form, answer) in answers.iter().filter(|(_, a)| a.status == 429) {
        let content_type = answer.header("content-type").unwrap_or("");
        let expected = if *on_form { "text/html" } else { "application/problem+json" };
        assert!(content_type.starts_with(expected), "{content_type} for on_form={on_form}");
    }
    // Refusals reach the trail (once a minute per instance and address)
    // and the counter holds exactly the created accounts.
    let audited = cluster.audited("sign_up_throttled").await;
    assert!((1..=cluster.servers.len() as i64).contains(&audited), "{audited} sign_up_throttled rows");
    assert_eq!(cluster.counter(&format!("signup:{FLOODER}")).await, allowance);

    // Another address signs up as usual, through the same proxy.
    let other = sign_up_burst(cluster, NEIGHBOUR, &format!("{prefix}n"), 2).await;
    assert!(other.iter().all(|(on_form, a)| created(*on_form, a)), "{other:?}");

    // The answers a person and a program see, one at a time.
    let mut browser = cluster.first().browser();
    browser.extra_headers.push(("x-forwarded-for".into(), FLOODER.into()));
    let page = browser.register(&format!("{prefix}late"), PASSWORD).await;
    assert_eq!(page.status, 429);
    assert!(page.body.contains("Too many accounts were created from your network"), "{}", page.body);
    assert!(page.header("retry-after").is_some());
    let api = reqwest::Client::new()
        .post(format!("{}/api/signup", cluster.first().base))
        .header("x-forwarded-for", FLOODER)
        .json(&serde_json::json!({"username": format!("{prefix}late2"), "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 429);
    assert!(api.headers().contains_key("retry-after"));
    let problem: serde_json::Value = api.json().await.unwrap();
    assert_eq!(problem["type"], "/problems/throttled");

    // A success is not given back: the counter did not move, and the
    // window's end opens the address again.
    assert_eq!(cluster.counter(&format!("signup:{FLOODER}")).await, allowance);
    cluster.first().clock.advance(ThrottleConfig::default().signup_window + Duration::from_secs(1));
    let again = sign_up_burst(cluster, FLOODER, &format!("{prefix}w"), 1).await;
    assert!(created(again[0].0, &again[0].1), "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sign_up_bursts_on_sqlite() {
    let cluster = Cluster::sqlite(|_| {}).await;
    a_burst_of_sign_ups_creates_at_most_the_allowance(&cluster).await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sign_up_bursts_on_two_instances_over_postgres() {
    let Some(cluster) = Cluster::postgres_pair().await else { return };
    a_burst_of_sign_ups_creates_at_most_the_allowance(&cluster).await;
    cluster.stop().await;
}

/// With OWASP parameters and no queue at all, a burst finds every core
/// busy: the surplus is `503` with `Retry-After` at once, never `500`, and
/// nothing refused is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_hashing_queue_answers_503_and_counts_nothing() {
    let cluster = Cluster::sqlite(|config| {
        config.hasher = PasswordHasher::new().with_queue_limit(0);
        config.throttle.signups_per_address = 1_000;
    })
    .await;
    let server = cluster.first();
    let name = unique_name("busy");
    let mut owner = server.browser();
    owner.extra_headers.push(("x-forwarded-for".into(), NEIGHBOUR.into()));
    assert_eq!(owner.register(&name, PASSWORD).await.status, 303);

    // Logins with the right password, half on the form, half on the API.
    let mut browser = server.browser();
    let token = browser.get("/login").await.csrf();
    let cookies = browser.cookie_header();
    let targets = (0..BURST)
        .map(|i| {
            let bytes = if i % 2 == 0 {
                let body = form(&[("csrf_token", &token), ("username", &name), ("password", PASSWORD)]);
                let headers = [
                    ("cookie", cookies.clone()),
                    ("content-type", "application/x-www-form-urlencoded".to_owned()),
                    ("accept", "text/html".to_owned()),
                    ("x-forwarded-for", FLOODER.to_owned()),
                ];
                request(server.address, "POST", "/login", &headers, &body)
            } else {
                let body = serde_json::json!({"username": name, "password": PASSWORD}).to_string();
                let headers =
                    [("content-type", "application/json".to_owned()), ("x-forwarded-for", FLOODER.to_owned())];
                request(server.address, "POST", "/api/signin", &headers, &body)
            };
            (server.address, bytes)
        })
        .collect();
    let answers = burst(targets).await;
    let statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
    eprintln!("logins against a full queue: {statuses:?}");
    // 429: the throttle reserves attempts before verifying, so the fifth
    // one outstanding holds the rest back (login_races.rs); never a 500.
    assert!(statuses.iter().all(|s| [303, 200, 429, 503].contains(s)), "logins, 429 or 503: {statuses:?}");
    let busy: Vec<&Answer> = answers.iter().filter(|a| a.status == 503).collect();
    assert!(
        !busy.is_empty(),
        "a burst of {BURST} on {} cores with no queue",
        server.app_state.auth.accounts().hasher().cores()
    );
    assert!(statuses.contains(&303) || statuses.contains(&200), "some logins get through: {statuses:?}");
    for answer in &busy {
        assert_eq!(answer.header("retry-after"), Some("1"), "{answer:?}");
    }
    // Neither the account nor the address was charged for the refusals.
    let account_key = format!("account:{name}");
    assert_eq!(cluster.counter(&account_key).await, 0, "refused logins are no failures");
    assert_eq!(cluster.counter(&format!("ip:{FLOODER}")).await, 0);
    assert_eq!(cluster.audited("login_failed").await, 0);

    // Sign-ups: refused ones are given back to the allowance.
    let prefix = format!("{}-", unique_name("busysign"));
    let answers = sign_up_burst(&cluster, FLOODER, &prefix, BURST).await;
    let statuses: Vec<u16> = answers.iter().map(|(_, a)| a.status).collect();
    eprintln!("sign-ups against a full queue: {statuses:?}");
    assert!(statuses.iter().all(|s| [303, 201, 503].contains(s)), "only sign-ups or 503: {statuses:?}");
    assert!(statuses.contains(&503), "{statuses:?}");
    let made = cluster.accounts(&prefix).await;
    assert_eq!(cluster.counter(&format!("signup:{FLOODER}")).await, made, "only created accounts are counted");
    for (on_form, answer) in answers.iter().filter(|(_, a)| a.status == 503) {
        assert_eq!(answer.header("retry-after"), Some("1"));
        let content_type = answer.header("content-type").unwrap_or("");
        let expected = if *on_form { "text/html" } else { "application/problem+json" };
        assert!(content_type.starts_with(expected), "{content_type}");
    }
    cluster.stop().await;
}
