//! Sign-in by an emailed code or link (`accounts.email_login`), end to end
//! against a real SMTP server (aiosmtpd, `tests/smtp`): the mail arrives,
//! is parsed, and its code or link is used. Also the refusals (another
//! browser, replay, expiry, wrong codes until the code dies, unknown
//! addresses answered the same), the second factor that still applies,
//! `accounts.email = required`, the background purge of mailed secrets and
//! old outbox rows, and the new-device rule.

mod chromium;
mod harness;
mod services;
mod smtp;

use std::time::Duration;

use harness::mail::{drained, Mailbox, Received, WAIT};
use harness::{test_config, unique_name, Browser, TestServer};
use serde_json::{json, Value};
use smtp::SmtpServer;
use sqlx::Row;
use tessera::ManualClock;
use tessera_auth::email_address::EmailAddress;
use tessera_auth::email_login::EmailLoginMode;
use tessera_auth::UserDirectory;
use tessera_server::mail::{EmailPolicy, MailConfig, SmtpConfig, SmtpSecurity};
use tokio::net::TcpListener;

const PASSWORD: &str = "correct horse battery";

struct Env {
    server: TestServer,
    mailbox: Mailbox,
    _smtp: SmtpServer,
    _dir: tempfile::TempDir,
}

impl Env {
    async fn start(login: EmailLoginMode, policy: EmailPolicy) -> Option<Env> {
        Env::start_with(login, policy, |_| {}).await
    }

    async fn start_with(
        login: EmailLoginMode,
        policy: EmailPolicy,
        adjust: impl FnOnce(&mut tessera_server::config::AppConfig),
    ) -> Option<Env> {
        let aiosmtpd = smtp::aiosmtpd()?;
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new();
        let mut config = test_config(dir.path(), &clock);
        let smtp_port = smtp::free_port();
        config.mail = MailConfig {
            smtp: Some(SmtpConfig {
                host: "127.0.0.1".into(),
                port: smtp_port,
                security: SmtpSecurity::None,
                credentials: None,
                timeout: Duration::from_secs(5),
            }),
            site_name: "Tessera Test".into(),
            poll_interval: Duration::from_millis(100),
            policy,
            login,
            ..MailConfig::default()
        };
        adjust(&mut config);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        config.public_url = Some(format!("http://localhost:{}", listener.local_addr().unwrap().port()));
        let mailbox = Mailbox::new(dir.path().join("maildir"));
        let smtp = SmtpServer::start(&aiosmtpd, smtp_port, &mailbox.dir).await;
        let server = TestServer::start_on(config, clock, listener).await;
        Some(Env { server, mailbox, _smtp: smtp, _dir: dir })
    }

    /// An account `name` with the verified `address` (set directly: the
    /// verification flow has its own tests). Returns its user ID.
    async fn user_with_address(&self, name: &str, address: &str) -> i64 {
        let mut browser = self.server.browser();
        assert_eq!(browser.register(name, PASSWORD).await.status, 303);
        let user = self.server.app_state.db.users().user_by_name(&name.to_lowercase()).await.unwrap().unwrap();
        let email = self.server.app_state.auth.email().expect("email is on");
        email.addresses.set_verified(user.id, &EmailAddress::parse(address).unwrap()).await.unwrap();
        user.id
    }

    /// Sign-in mails to `address`, oldest first.
    fn sign_in_mails(&self, address: &str) -> Vec<Received> {
        self.mailbox.read().into_iter().filter(|m| m.to == address && m.subject.starts_with("Sign in to")).collect()
    }

    async fn wait_for_sign_in_mails(&self, address: &str, count: usize) -> Vec<Received> {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let mails = self.sign_in_mails(address);
            if mails.len() >= count {
                return mails;
            }
            assert!(std::time::Instant::now() < deadline, "no sign-in mail for {address}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The code in the `nth` sign-in mail to `address` (1: the first),
    /// once it has arrived.
    async fn sign_in_code(&self, address: &str, nth: usize) -> String {
        self.wait_for_sign_in_mails(address, nth).await[nth - 1].code().unwrap()
    }

    async fn audit_kinds(&self, user_id: i64) -> Vec<String> {
        self.server.app_state.db.audit_events(user_id, 200).await.unwrap().into_iter().map(|e| e.kind).collect()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.base)
    }
}

async fn ask(browser: &mut Browser, address: &str) -> harness::Page {
    browser.submit("/login/email", "/login/email", &[("email", address)]).await
}

async fn enter_code(browser: &mut Browser, code: &str) -> harness::Page {
    browser.submit("/login", "/login/email/code", &[("code", code)]).await
}

/// Asks for a sign-in code for `address` in `browser`, then reads it from
/// the `nth` sign-in mail to `address`.
async fn ask_for_code(env: &Env, browser: &mut Browser, address: &str, nth: usize) -> String {
    ask(browser, address).await;
    env.sign_in_code(address, nth).await
}

fn other_code(code: &str) -> String {
    let n: u32 = code.parse().unwrap();
    format!("{:06}", (n + 1) % 1_000_000)
}

/// The code flow: the login page offers it; an unknown address gets the
/// same page; the mail arrives, only for the real address; the code signs
/// in only in the browser that asked, with a new session ID, an audit
/// event and a new-device notice; a wrong code is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mailed_code_signs_in_the_browser_that_asked() {
    let Some(env) = Env::start(EmailLoginMode::Code, EmailPolicy::Optional).await else { return };
    let name = unique_name("code");
    let address = format!("{name}@example.com");
    let user_id = env.user_with_address(&name, &address).await;

    let mut browser = env.server.browser();
    let login = browser.get("/login").await;
    assert_eq!(login.element_text("email-login").as_deref(), Some("Email me a sign-in code"));

    // Enumeration: the same page for an address nobody has; one mail only.
    let mut stranger = env.server.browser();
    let unknown = ask(&mut stranger, &format!("nobody-{name}@example.com")).await;
    let known = ask(&mut browser, &address.to_uppercase()).await;
    assert_eq!((unknown.status, known.status), (200, 200));
    assert_eq!(unknown.element_text("email-login-sent"), known.element_text("email-login-sent"));
    assert!(known.body.contains("action=\"/login/email/code\""));
    assert_eq!(drained(&env.server).await.sent, 2, "both requests did the same work");
    let mail = env.wait_for_sign_in_mails(&address, 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(env.mailbox.read().len(), 1, "mail only for the existing address");
    assert!(mail[0].subject.contains("Sign in to Tessera Test"), "{}", mail[0].subject);
    assert!(!mail[0].html.is_empty());
    let code = mail[0].code().expect("a 6-digit code");

    // Malformed: a precise 422.
    assert_eq!(ask(&mut env.server.browser(), "not an address").await.status, 422);

    // Another browser cannot use the code: it asked for nothing, or for
    // its own attempt (which no code of this mail matches).
    let mut elsewhere = env.server.browser();
    let refused = enter_code(&mut elsewhere, &code).await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert_eq!(stranger.get("/profile").await.status, 303);
    let refused = enter_code(&mut stranger, &code).await;
    assert_eq!(refused.status, 401, "the stranger's own attempt does not take this code");
    assert_eq!(stranger.get("/profile").await.status, 303, "not signed in");

    // A wrong code in the right browser: refused and counted.
    let wrong = enter_code(&mut browser, &other_code(&code)).await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.element_text("email-login-error").is_some());
    assert!(env.audit_kinds(user_id).await.contains(&"login_failed".to_owned()));

    // The right one: signed in, under a new session ID.
    let before = browser.session_id();
    let done = enter_code(&mut browser, &code).await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert_eq!(done.location(), Some("/profile"));
    assert_ne!(browser.session_id(), before, "a new session ID");
    assert_eq!(browser.get("/profile").await.status, 200);
    let kinds = env.audit_kinds(user_id).await;
    assert!(kinds.contains(&"login_succeeded".to_owned()), "{kinds:?}");
    assert!(kinds.contains(&"new_device_sign_in".to_owned()), "{kinds:?}");
    // The session is in the device list.
    let sessions = browser.get("/account/sessions").await;
    assert!(sessions.body.contains("This device"), "{}", sessions.body);
    // And the account hears of a sign-in from a new browser.
    let deadline = std::time::Instant::now() + WAIT;
    while !env.mailbox.read().iter().any(|m| m.subject.contains("New sign-in")) {
        assert!(std::time::Instant::now() < deadline, "no new-device notice");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The same code again, even in the same browser, does nothing.
    browser.logout().await;
    assert_eq!(enter_code(&mut browser, &code).await.status, 400, "the attempt is gone from the session");
}

/// Wrong codes: each is a counted failure, and the code dies after five
/// checks, so the right one no longer works; a newer code ends an older
/// one; a code expires after 10 minutes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codes_die_after_five_checks_are_superseded_and_expire() {
    // More free failures than a code has checks, so that only the code's
    // own limit speaks (the throttle's refusals have their own tests).
    let Some(env) = Env::start_with(EmailLoginMode::Code, EmailPolicy::Optional, |config| {
        config.throttle.account_free_failures = 10;
    })
    .await
    else {
        return;
    };
    let name = unique_name("tries");
    let address = format!("{name}@example.com");
    let user_id = env.user_with_address(&name, &address).await;

    let mut browser = env.server.browser();
    let code = ask_for_code(&env, &mut browser, &address, 1).await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(enter_code(&mut browser, &other_code(&code)).await.status);
    }
    assert_eq!(statuses, [401; 5]);
    let failures = env.audit_kinds(user_id).await.iter().filter(|k| *k == "login_failed").count();
    assert_eq!(failures, 5, "wrong codes are counted against the account");
    let dead = enter_code(&mut browser, &code).await;
    assert_eq!(dead.status, 401, "the code died: {}", dead.body);
    assert_eq!(browser.get("/profile").await.status, 303);
    env.server.clock.advance(Duration::from_secs(3600));

    // Within its five checks, a fresh code works; but a newer request ends it.
    let mut first = env.server.browser();
    let older = ask_for_code(&env, &mut first, &address, 2).await;
    let mut second = env.server.browser();
    let newer = ask_for_code(&env, &mut second, &address, 3).await;
    assert_eq!(enter_code(&mut first, &older).await.status, 401, "superseded by the newer request");
    // Expiry: the newer one, 11 minutes later.
    env.server.clock.advance(Duration::from_secs(11 * 60));
    assert_eq!(enter_code(&mut second, &newer).await.status, 401, "expired");

    // Throttled per address: a burst of requests for one address ends in 429.
    let mut last = 0;
    for _ in 0..10 {
        last = ask(&mut env.server.browser(), &address).await.status;
    }
    assert_eq!(last, 429);
}

/// Only a verified address signs in: an address given at sign-up but not
/// confirmed yet gets no sign-in mail (the same answer, though).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_verified_addresses_get_a_code() {
    let Some(env) = Env::start(EmailLoginMode::Code, EmailPolicy::Optional).await else { return };
    let name = unique_name("pending");
    let address = format!("{name}@example.com");
    let mut browser = env.server.browser();
    let registered = browser
        .submit("/register", "/register", &[("username", &name), ("password", PASSWORD), ("email", &address)])
        .await;
    assert_eq!(registered.status, 303);
    env.mailbox.wait_for(1).await;
    let mut other = env.server.browser();
    let page = ask(&mut other, &address).await;
    assert_eq!(page.status, 200);
    assert!(page.element_text("email-login-sent").is_some());
    drained(&env.server).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(env.sign_in_mails(&address).is_empty(), "no code for an unverified address");
    assert_eq!(env.mailbox.read().len(), 1, "only the verification mail");
}

/// Wrong codes count like wrong passwords, on the address's counter (one
/// address, one account) and the client's: a fresh code per request does
/// not reset it, so guessing ends in 429 with Retry-After long before a
/// million tries. An address nobody has is counted exactly the same, so
/// the refusals tell nothing about which addresses exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_codes_are_throttled_like_passwords() {
    let Some(env) = Env::start(EmailLoginMode::Code, EmailPolicy::Optional).await else { return };
    let name = unique_name("guess");
    let address = format!("{name}@example.com");
    env.user_with_address(&name, &address).await;
    // (guesses answered 401 before the first 429, that 429's page)
    async fn guess(env: &Env, address: &str, real: bool) -> (usize, harness::Page) {
        let mut wrong = 0;
        for round in 1..=3 {
            let mut browser = env.server.browser();
            assert_eq!(ask(&mut browser, address).await.status, 200);
            let code = if real { env.sign_in_code(address, round).await } else { "123456".to_owned() };
            for _ in 0..5 {
                let page = enter_code(&mut browser, &other_code(&code)).await;
                if page.status == 429 {
                    return (wrong, page);
                }
                assert_eq!(page.status, 401);
                wrong += 1;
            }
        }
        panic!("never throttled");
    }
    let (known, refused) = guess(&env, &address, true).await;
    assert!(refused.header("retry-after").is_some());
    assert!(refused.element_text("email-login-error").unwrap().contains("Too many"));
    let (unknown, refused) = guess(&env, &format!("nobody-{name}@example.com"), false).await;
    assert!(refused.header("retry-after").is_some());
    assert_eq!(known, unknown, "an address nobody has is throttled exactly like a real one");
    assert!(known <= 6, "{known} wrong codes before the throttle");
}

/// The link flow: a link opened in another browser (or by a mail scanner)
/// asks to confirm in the browser that asked and signs nothing in; a GET
/// never signs in; the POST from the right browser does, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mailed_link_signs_in_only_where_it_was_asked_for() {
    let Some(env) = Env::start(EmailLoginMode::Link, EmailPolicy::Optional).await else { return };
    let name = unique_name("link");
    let address = format!("{name}@example.com");
    env.user_with_address(&name, &address).await;

    let mut browser = env.server.browser();
    assert_eq!(browser.get("/login").await.element_text("email-login").as_deref(), Some("Email me a sign-in link"));
    let sent = ask(&mut browser, &address).await;
    assert_eq!(sent.status, 200);
    assert!(sent.element_text("email-login-sent").is_some());
    let mail = env.wait_for_sign_in_mails(&address, 1).await;
    assert!(mail[0].code().is_none(), "link mode mails no code");
    let link = mail[0].link(&env.server.base).expect("a link to this server");
    assert!(link.contains("/login/email/link?token="), "{link}");
    let path = link.trim_start_matches(&env.server.base).to_owned();
    let token = mail[0].token(&env.server.base).unwrap();

    // A scanner or another browser: a page, no button, no sign-in.
    let mut scanner = env.server.browser();
    let page = scanner.get(&path).await;
    assert_eq!(page.status, 200);
    assert!(page.element_text("email-login-elsewhere").is_some(), "{}", page.body);
    assert!(!page.body.contains("email-login-confirm"));
    let forced = scanner.submit("/login", "/login/email/link", &[("token", &token)]).await;
    assert_eq!(forced.status, 400, "a POST from another browser signs nothing in");
    assert_eq!(scanner.get("/profile").await.status, 303);

    // The right browser: a GET shows the button and signs nothing in…
    let page = browser.get(&path).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("id=\"email-login-confirm\""), "{}", page.body);
    assert_eq!(browser.get("/profile").await.status, 303, "a GET signs nobody in");
    // …a POST without the CSRF token is refused…
    let no_csrf = browser.post_form("/login/email/link", &[("token", &token)]).await;
    assert_eq!(no_csrf.status, 403);
    // …and with it, signs in.
    let done = browser.submit(&path, "/login/email/link", &[("token", &token)]).await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert_eq!(browser.get("/profile").await.status, 200);

    // Used: the link is dead everywhere.
    let again = env.server.browser().get(&path).await;
    assert_eq!(again.status, 400);
    assert!(again.element_text("email-login-error").is_some());

    // An app takes the link's token with its attempt: signed in, once.
    let http = reqwest::Client::new();
    let started = http.post(env.url("/api/login/email")).json(&json!({"email": address})).send().await.unwrap();
    let attempt = started.json::<Value>().await.unwrap()["attempt"].as_str().unwrap().to_owned();
    let token = env.wait_for_sign_in_mails(&address, 2).await[1].token(&env.server.base).unwrap();
    let url = env.url("/api/login/email/verify");
    let code_instead = http.post(&url).json(&json!({"attempt": attempt, "code": "123456"})).send().await.unwrap();
    assert_eq!(code_instead.status(), 401, "link mode mails no code");
    let done = http.post(&url).json(&json!({"attempt": attempt, "token": token})).send().await.unwrap();
    assert_eq!(done.status(), 200);
    let replay = http.post(&url).json(&json!({"attempt": attempt, "token": token})).send().await.unwrap();
    assert_eq!(replay.status(), 401);
}

/// The API: the request returns an attempt ID for every address (the
/// binding); the code works only with it, once; replay, another attempt,
/// neither code nor token, and email login off are refused precisely.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_sign_in_through_the_api() {
    let Some(env) = Env::start(EmailLoginMode::Code, EmailPolicy::Optional).await else { return };
    let name = unique_name("api");
    let address = format!("{name}@example.com");
    env.user_with_address(&name, &address).await;
    let http = reqwest::Client::new();

    let mut attempts = Vec::new();
    for email in [format!("nobody-{name}@example.com"), address.clone()] {
        let response = http.post(env.url("/api/login/email")).json(&json!({"email": email})).send().await.unwrap();
        assert_eq!(response.status(), 202);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["status"], "accepted");
        let attempt = body["attempt"].as_str().unwrap().to_owned();
        assert_eq!(attempt.len(), 43, "the same shape for every address");
        attempts.push(attempt);
    }
    let (stranger_attempt, attempt) = (attempts[0].clone(), attempts[1].clone());
    let code = env.sign_in_code(&address, 1).await;
    let verify = |body: Value| {
        let http = http.clone();
        let url = env.url("/api/login/email/verify");
        async move { http.post(url).json(&body).send().await.unwrap() }
    };

    let foreign = verify(json!({"attempt": stranger_attempt, "code": code})).await;
    assert_eq!(foreign.status(), 401, "another attempt does not take this code");
    assert_eq!(foreign.headers()["content-type"], "application/problem+json");
    let problem: Value = foreign.json().await.unwrap();
    assert!(problem["type"].as_str().unwrap().ends_with("invalid-email-code"), "{problem}");
    assert_eq!(verify(json!({"attempt": attempt})).await.status(), 422, "neither code nor token");
    assert_eq!(verify(json!({"attempt": attempt, "code": code, "token": "x"})).await.status(), 422);

    let done = verify(json!({"attempt": attempt, "code": code})).await;
    assert_eq!(done.status(), 200);
    let pair: Value = done.json().await.unwrap();
    let access = pair["access_token"].as_str().unwrap();
    let me: Value = http.get(env.url("/api/me")).bearer_auth(access).send().await.unwrap().json().await.unwrap();
    assert_eq!(me["username"], name);
    let replay = verify(json!({"attempt": attempt, "code": code})).await;
    assert_eq!(replay.status(), 401, "a code works once");

    let bad = http.post(env.url("/api/login/email")).json(&json!({"email": "nope"})).send().await.unwrap();
    assert_eq!(bad.status(), 422);

    // Documented in the OpenAPI document.
    let doc: Value = http.get(env.url("/api/openapi.json")).send().await.unwrap().json().await.unwrap();
    assert!(doc["paths"]["/api/login/email"]["post"].is_object());
    assert!(doc["paths"]["/api/login/email/verify"]["post"].is_object());

    // Off (the default): 404 on the pages and the API.
    let Some(off) = Env::start(EmailLoginMode::Off, EmailPolicy::Optional).await else { return };
    assert_eq!(off.server.browser().get("/login/email").await.status, 404);
    assert!(off.server.browser().get("/login").await.element_text("email-login").is_none());
    let response = http.post(off.url("/api/login/email")).json(&json!({"email": address})).send().await.unwrap();
    assert_eq!(response.status(), 404);
    let response =
        http.post(off.url("/api/login/email/verify")).json(&json!({"attempt": attempt, "code": code})).send().await;
    assert_eq!(response.unwrap().status(), 404);
}

/// A throttled `POST /api/login/email` says what was throttled — sign-in
/// codes asked for — in its problem document, not "failed password
/// attempts" (nobody typed a password), with `Retry-After`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_api_email_sign_in_request_says_codes_were_throttled() {
    let Some(env) = Env::start(EmailLoginMode::Code, EmailPolicy::Optional).await else { return };
    let address = format!("{}@example.com", unique_name("many"));
    let http = reqwest::Client::new();
    let mut refused = None;
    for _ in 0..30 {
        let response = http.post(env.url("/api/login/email")).json(&json!({"email": address})).send().await.unwrap();
        if response.status() == 429 {
            refused = Some(response);
            break;
        }
        assert_eq!(response.status(), 202);
    }
    let refused = refused.expect("repeated requests for one address are throttled");
    assert!(refused.headers().get("retry-after").is_some());
    assert_eq!(refused.headers()["content-type"], "application/problem+json");
    let problem: Value = refused.json().await.unwrap();
    assert!(problem["type"].as_str().unwrap().ends_with("/throttled"), "{problem}");
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.starts_with("Too many sign-in codes were asked for this email address"), "{detail}");
    assert!(detail.contains("from your network address"), "{detail}");
    assert!(!detail.contains("password"), "{detail}");
}

/// On PostgreSQL (two instances' worth of SQL: the upsert that issues, the
/// counted check, the single use): code, replay, dead after five checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_sign_in_on_postgres() {
    if !services::reachable("PostgreSQL", "127.0.0.1:5432") {
        return;
    }
    let Some(env) = Env::start_with(EmailLoginMode::Code, EmailPolicy::Optional, |config| {
        config.database_url = services::postgres_url();
        config.throttle.account_free_failures = 10;
    })
    .await
    else {
        return;
    };
    let name = unique_name("pg");
    let address = format!("{name}@example.com");
    env.user_with_address(&name, &address).await;
    let http = reqwest::Client::new();
    let start = || async {
        let response = http.post(env.url("/api/login/email")).json(&json!({"email": address})).send().await.unwrap();
        let body: Value = response.json().await.unwrap();
        body["attempt"].as_str().unwrap().to_owned()
    };
    let verify = |attempt: String, code: String| {
        let request = http.post(env.url("/api/login/email/verify")).json(&json!({"attempt": attempt, "code": code}));
        async move { request.send().await.unwrap().status().as_u16() }
    };
    let attempt = start().await;
    let code = env.sign_in_code(&address, 1).await;
    assert_eq!(verify(attempt.clone(), code.clone()).await, 200);
    assert_eq!(verify(attempt, code).await, 401, "used once");
    let attempt = start().await;
    let code = env.sign_in_code(&address, 2).await;
    for _ in 0..5 {
        assert_eq!(verify(attempt.clone(), other_code(&code)).await, 401);
    }
    assert_eq!(verify(attempt, code).await, 401, "dead after five checks");
}

/// An account with a second factor must still pass it: the web flow goes
/// on to the code prompt, the API asks for `second_factor`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_second_factor_is_still_required() {
    let Some(env) = Env::start(EmailLoginMode::Code, EmailPolicy::Optional).await else { return };
    let name = unique_name("twofa");
    let address = format!("{name}@example.com");
    let user_id = env.user_with_address(&name, &address).await;
    let factors = env.server.app_state.auth.second_factors();
    let secret = factors.begin_setup(user_id).await.unwrap().expect("setup starts");
    let totp = |clock: &ManualClock| {
        let now = tessera::Clock::now(clock);
        secret.code_at(tessera_auth::second_factor::totp::step_at(now))
    };
    assert!(factors.confirm_setup(user_id, &totp(&env.server.clock)).await.unwrap().is_some());

    let mut browser = env.server.browser();
    let code = ask_for_code(&env, &mut browser, &address, 1).await;
    let step = enter_code(&mut browser, &code).await;
    assert_eq!(step.status, 303);
    assert_eq!(step.location(), Some("/login/second-factor"));
    assert_eq!(browser.get("/profile").await.status, 303, "not signed in yet");

    let http = reqwest::Client::new();
    let started: Value = http
        .post(env.url("/api/login/email"))
        .json(&json!({"email": address}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let attempt = started["attempt"].as_str().unwrap();
    let code = env.sign_in_code(&address, 2).await;
    let url = env.url("/api/login/email/verify");
    let missing = http.post(&url).json(&json!({"attempt": attempt, "code": code})).send().await.unwrap();
    assert_eq!(missing.status(), 401);
    let problem: Value = missing.json().await.unwrap();
    assert!(problem["type"].as_str().unwrap().ends_with("second-factor-required"), "{problem}");
    env.server.clock.advance(Duration::from_secs(31));
    let body = json!({"attempt": attempt, "code": code, "second_factor": totp(&env.server.clock)});
    let done = http.post(&url).json(&body).send().await.unwrap();
    assert_eq!(done.status(), 200, "{:?}", done.text().await);
}

/// `accounts.email = required`: an account whose address is not verified
/// cannot sign in (a clear page, and the mail again); `POST /api/signup`
/// needs `email`; `POST /api/email/verification` sends the mail again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_required_address_must_be_verified_before_signing_in() {
    let Some(env) = Env::start(EmailLoginMode::Off, EmailPolicy::Required).await else { return };
    let name = unique_name("strict");
    let address = format!("{name}@example.com");
    let mut browser = env.server.browser();
    let registered = browser
        .submit("/register", "/register", &[("username", &name), ("password", PASSWORD), ("email", &address)])
        .await;
    assert_eq!(registered.status, 303);
    assert_eq!(registered.location(), Some("/login/verification"), "not signed in before the address is confirmed");
    assert_eq!(browser.get("/profile").await.status, 303);
    env.mailbox.wait_for(1).await;

    // Signing in with the right password: refused, with the way to resend.
    let mut other = env.server.browser();
    let refused = other.login(&name, PASSWORD).await;
    assert_eq!(refused.status, 303);
    assert_eq!(refused.location(), Some("/login/verification"));
    let page = other.get("/login/verification").await;
    assert_eq!(page.status, 403);
    assert!(page.element_text("unverified-notice").is_some());
    assert_eq!(other.get("/profile").await.status, 303, "not signed in");
    let resent = other.submit("/login/verification", "/login/verification", &[("email", &address)]).await;
    assert_eq!(resent.status, 200, "{}", resent.body);
    assert!(resent.element_text("resend-sent").is_some());
    let mail = env.mailbox.wait_for(2).await;
    // A browser without a refused login cannot ask.
    let mut nobody = env.server.browser();
    assert_eq!(nobody.get("/login/verification").await.status, 401);
    // A wrong password is the usual refusal, not this page.
    assert_eq!(env.server.browser().login(&name, "wrong password!!").await.status, 401);

    // The API refuses too, and sends the mail again with the password.
    let http = reqwest::Client::new();
    let signin = http.post(env.url("/api/signin")).json(&json!({"username": name, "password": PASSWORD})).send();
    let signin = signin.await.unwrap();
    assert_eq!(signin.status(), 403);
    let problem: Value = signin.json().await.unwrap();
    assert!(problem["type"].as_str().unwrap().ends_with("email-unverified"), "{problem}");
    let again = http
        .post(env.url("/api/email/verification"))
        .json(&json!({"username": name, "password": PASSWORD, "email": address}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 202);
    let wrong = http
        .post(env.url("/api/email/verification"))
        .json(&json!({"username": name, "password": "not the password", "email": address}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let mail = {
        let _ = mail;
        env.mailbox.wait_for(3).await
    };

    // Confirmed by the link: now the password signs in.
    let token = mail.last().unwrap().token(&env.server.base).unwrap();
    let confirmed = nobody.submit("/login", "/email/verify", &[("token", &token)]).await;
    assert_eq!(confirmed.status, 200, "{}", confirmed.body);
    assert_eq!(env.server.browser().login(&name, PASSWORD).await.location(), Some("/profile"));
    let signin = http.post(env.url("/api/signin")).json(&json!({"username": name, "password": PASSWORD})).send();
    assert_eq!(signin.await.unwrap().status(), 200);

    // API sign-up: `email` required, checked before anything is created.
    let other_name = unique_name("apistrict");
    let missing = http
        .post(env.url("/api/signup"))
        .json(&json!({"username": other_name, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 422);
    let malformed = http
        .post(env.url("/api/signup"))
        .json(&json!({"username": other_name, "password": PASSWORD, "email": "nope"}))
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 422);
    let users = env.server.app_state.db.users();
    assert!(users.user_by_name(&other_name.to_lowercase()).await.unwrap().is_none(), "nothing created");
    let created = http
        .post(env.url("/api/signup"))
        .json(&json!({"username": other_name, "password": PASSWORD, "email": format!("{other_name}@example.com")}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let deadline = std::time::Instant::now() + WAIT;
    while !env
        .mailbox
        .read()
        .iter()
        .any(|m| m.to == format!("{other_name}@example.com") && m.subject.contains("Confirm"))
    {
        assert!(std::time::Instant::now() < deadline, "no verification mail after the API sign-up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The background purge deletes expired mailed secrets and old outbox rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_purge_removes_expired_secrets_and_old_outbox_rows() {
    let Some(env) = Env::start_with(EmailLoginMode::Code, EmailPolicy::Optional, |config| {
        config.purge_interval = Duration::from_millis(200);
    })
    .await
    else {
        return;
    };
    let name = unique_name("purge");
    let address = format!("{name}@example.com");
    env.user_with_address(&name, &address).await;
    let mut browser = env.server.browser();
    browser.submit("/password/forgot", "/password/forgot", &[("email", &address)]).await;
    ask(&mut browser, &address).await;
    env.mailbox.wait_for(2).await;
    drained(&env.server).await;
    let pool = env.server.app_state.db.pool().clone();
    let count = |table: &'static str| {
        let pool = pool.clone();
        async move {
            let row = sqlx::query(&format!("SELECT COUNT(*) FROM {table}")).fetch_one(&pool).await.unwrap();
            row.try_get::<i64, _>(0).unwrap()
        }
    };
    assert_eq!(count("email_tokens").await, 1);
    assert_eq!(count("email_logins").await, 1);
    assert_eq!(count("mail_outbox").await, 2);
    // Still valid: nothing goes.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(count("email_tokens").await + count("email_logins").await + count("mail_outbox").await, 4);

    // Past their expiry and the outbox's retention: gone.
    env.server.clock.advance(Duration::from_secs(8 * 24 * 3600));
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let left = count("email_tokens").await + count("email_logins").await + count("mail_outbox").await;
        if left == 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{left} rows left after the purge");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The new-device rule: a browser that signed in to the account before
/// (whatever the method: it holds the device cookie every sign-in leaves)
/// is no new device; another browser, or the same one for another
/// account, is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_device_notices_follow_the_device_cookie_of_the_account() {
    let Some(env) = Env::start(EmailLoginMode::Code, EmailPolicy::Optional).await else { return };
    let name = unique_name("device");
    let address = format!("{name}@example.com");
    let user_id = env.user_with_address(&name, &address).await;
    let notices = |env: &Env| env.mailbox.read().iter().filter(|m| m.subject.contains("New sign-in")).count();
    let new_devices = |kinds: Vec<String>| kinds.iter().filter(|k| *k == "new_device_sign_in").count();

    // First sign-in in this browser, by email code: new.
    let mut browser = env.server.browser();
    let code = ask_for_code(&env, &mut browser, &address, 1).await;
    assert_eq!(enter_code(&mut browser, &code).await.status, 303);
    assert!(browser.cookies.keys().any(|k| k.contains("device")), "a device cookie: {:?}", browser.cookies);
    assert_eq!(new_devices(env.audit_kinds(user_id).await), 1);
    // Again in the same browser, by password this time: known.
    browser.logout().await;
    assert_eq!(browser.login(&name, PASSWORD).await.status, 303);
    assert_eq!(new_devices(env.audit_kinds(user_id).await), 1, "the same browser is no new device");
    // Another account's device cookie is not this account's.
    let mut shared = env.server.browser();
    let other = unique_name("other");
    assert_eq!(shared.register(&other, PASSWORD).await.status, 303);
    shared.logout().await;
    assert_eq!(shared.login(&other, PASSWORD).await.status, 303);
    shared.logout().await;
    assert_eq!(shared.login(&name, PASSWORD).await.status, 303);
    assert_eq!(new_devices(env.audit_kinds(user_id).await), 2, "new to this account");
    let deadline = std::time::Instant::now() + WAIT;
    while notices(&env) < 2 {
        assert!(std::time::Instant::now() < deadline, "two new-device notices expected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(notices(&env), 2);
}

/// The code flow in real Chromium: the login page's link, the address,
/// the mail, the code, the profile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_code_sign_in_in_chromium() {
    if !chromium::available() {
        return;
    }
    let Some(env) = Env::start(EmailLoginMode::Code, EmailPolicy::Optional).await else { return };
    let name = unique_name("chrome");
    let address = format!("{name}@example.com");
    env.user_with_address(&name, &address).await;
    let driver = chromium::Chromedriver::start().await;
    let browser = driver.chromium(chromium::DESKTOP).await;
    browser.open(&env.url("/login")).await;
    browser.click_and_wait("#email-login").await;
    assert_eq!(browser.path().await, "/login/email");
    browser.fill("#email", &address).await;
    browser.click_and_wait("#email-login-send").await;
    assert!(browser.has("#email-login-sent").await);
    let code = env.sign_in_code(&address, 1).await;
    browser.fill("#code", &code).await;
    browser.click_and_wait("#email-login-verify").await;
    assert_eq!(browser.path().await, "/profile");
    browser.screenshot("email-code-signed-in").await;
    browser.close().await;
}
