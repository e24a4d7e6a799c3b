//! Mail, end to end against a real SMTP server (aiosmtpd, started per
//! test on a free port by `tests/smtp`): the durable outbox across an SMTP
//! outage, on SQLite and PostgreSQL; password reset (web, API, and in real
//! Chromium) with its enumeration, expiry, replay and throttling refusals;
//! address verification by link and by code; security notices; `.eml`
//! files when no SMTP server is configured.

mod chromium;
mod harness;
mod services;
mod smtp;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use harness::mail::{drained, outbox, read_eml_dir, wait_for, Mailbox, WAIT};
use harness::{test_config, unique_name, Browser, TestServer};
use serde_json::json;
use smtp::SmtpServer;
use tessera::ManualClock;
use tessera_auth::email_address::EmailAddress;
use tessera_auth::UserDirectory;
use tessera_server::mail::{EmailPolicy, MailConfig, MailOutbox, OutboxCounts, SmtpConfig, SmtpSecurity};
use tokio::net::TcpListener;

const PASSWORD: &str = "correct horse battery";
const NEW_PASSWORD: &str = "a brand new passphrase";

/// A server whose mail goes to an SMTP server on `smtp_port` (which may be
/// down), with its users database at `database_url` (SQLite by default).
struct Env {
    server: TestServer,
    smtp_port: u16,
    mailbox: Mailbox,
    aiosmtpd: PathBuf,
    _dir: tempfile::TempDir,
}

impl Env {
    async fn start(database_url: Option<String>) -> Option<Env> {
        Env::start_with(database_url, EmailPolicy::Optional).await
    }

    async fn start_with(database_url: Option<String>, policy: EmailPolicy) -> Option<Env> {
        let aiosmtpd = smtp::aiosmtpd()?;
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new();
        let mut config = test_config(dir.path(), &clock);
        if let Some(url) = database_url {
            config.database_url = url;
        }
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
            ..MailConfig::default()
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        config.public_url = Some(format!("http://localhost:{}", listener.local_addr().unwrap().port()));
        let server = TestServer::start_on(config, clock, listener).await;
        let mailbox = Mailbox::new(dir.path().join("maildir"));
        Some(Env { server, smtp_port, mailbox, aiosmtpd, _dir: dir })
    }

    async fn smtp(&self) -> SmtpServer {
        SmtpServer::start(&self.aiosmtpd, self.smtp_port, &self.mailbox.dir).await
    }

    async fn counts(&self) -> OutboxCounts {
        outbox(&self.server).counts().await.unwrap()
    }

    /// Registers `name` in a fresh browser and gives the account the
    /// verified `address` directly (the verification flow has its own test).
    async fn user_with_address(&self, name: &str, address: &str) -> Browser {
        let mut browser = self.server.browser();
        assert_eq!(browser.register(name, PASSWORD).await.status, 303);
        let user = self.server.app_state.db.users().user_by_name(&name.to_lowercase()).await.unwrap().unwrap();
        let email = self.server.app_state.auth.email().expect("email is on");
        email.addresses.set_verified(user.id, &EmailAddress::parse(address).unwrap()).await.unwrap();
        browser
    }
}

async fn request_reset(browser: &mut Browser, address: &str) -> harness::Page {
    browser.submit("/password/forgot", "/password/forgot", &[("email", address)]).await
}

/// The outbox keeps a reset mail while the SMTP server is down, retries
/// with back-off, and sends it exactly once when the server is back; the
/// link in it then works.
async fn outage_then_delivery(database_url: Option<String>) {
    let Some(env) = Env::start(database_url).await else { return };
    let name = unique_name("outage");
    let address = format!("{name}@example.com");
    let mut signed_in = env.user_with_address(&name, &address).await;
    // The new-device notice of that sign-up's login: none (registration is no login).
    let mut anonymous = env.server.browser();
    let page = request_reset(&mut anonymous, &address).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.element_text("reset-sent").is_some());

    // Down: the attempt fails, the message stays, with the error recorded.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let errors = outbox(&env.server).errors().await.unwrap();
        if !errors.is_empty() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no failed attempt recorded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(env.counts().await, OutboxCounts { pending: 1, sent: 0, failed: 0 });

    // Back up; once the back-off has passed, it is sent, once.
    let smtp = env.smtp().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(env.mailbox.read().is_empty(), "nothing is sent before the back-off has passed");
    env.server.clock.advance(Duration::from_secs(31));
    let mail = env.mailbox.wait_for(1).await;
    assert_eq!(drained(&env.server).await, OutboxCounts { pending: 0, sent: 1, failed: 0 });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(env.mailbox.read().len(), 1, "sent exactly once");
    let reset = &mail[0];
    assert_eq!(reset.to, address);
    assert!(reset.subject.contains("Reset your Tessera Test password"), "{}", reset.subject);
    assert!(reset.html.contains("<a href=") && reset.html.contains("Tessera Test"), "{}", reset.html);

    // The link works: a new password, every session ended, log in again.
    let link = reset.link(&env.server.base).expect("a link to this server");
    let path = link.trim_start_matches(&env.server.base).to_owned();
    let form = anonymous.get(&path).await;
    assert_eq!(form.status, 200, "{}", form.body);
    let token = reset.token(&env.server.base).unwrap();
    let done = anonymous.submit(&path, "/password/reset", &[("token", &token), ("new_password", NEW_PASSWORD)]).await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert!(done.element_text("reset-done").is_some());
    assert_eq!(signed_in.get("/profile").await.status, 303, "the other session ended");
    assert_eq!(env.server.browser().login(&name, PASSWORD).await.status, 401, "the old password is gone");
    assert_eq!(env.server.browser().login(&name, NEW_PASSWORD).await.status, 303);
    // And the account is told: a password-changed notice.
    let mail = env.mailbox.wait_for(2).await;
    assert!(mail.iter().any(|m| m.subject.contains("Your password was changed")), "{mail:?}");
    smtp.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_survives_an_smtp_outage_on_sqlite() {
    outage_then_delivery(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_survives_an_smtp_outage_on_postgres() {
    if !services::reachable("PostgreSQL", "127.0.0.1:5432") {
        return;
    }
    outage_then_delivery(Some(services::postgres_url())).await;
}

/// Two workers (two instances on one database) claim each message once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_is_claimed_by_one_worker_only() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("claims.db").display());
    let db = tessera_server::database::Database::connect(&url).await.unwrap();
    let clock = ManualClock::new();
    let a = MailOutbox::new(db.pool().clone(), Arc::new(clock.clone()));
    let b = MailOutbox::new(db.pool().clone(), Arc::new(clock.clone()));
    use tessera_auth::Outbox;
    for i in 0..10 {
        a.enqueue(tessera_auth::Mail::PasswordReset { address: format!("u{i}@example.com") }).await.unwrap();
    }
    let lease = Duration::from_secs(300);
    let (first, second) = tokio::join!(a.claim(20, lease), b.claim(20, lease));
    let (first, second) = (first.unwrap(), second.unwrap());
    let mut ids: Vec<i64> = first.iter().chain(second.iter()).map(|c| c.id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(first.len() + second.len(), 10, "every message claimed once");
    assert_eq!(ids.len(), 10);
    // Leased: nobody claims them again until the lease runs out…
    assert!(b.claim(20, lease).await.unwrap().is_empty());
    // …then they are claimable (a worker died mid-send).
    clock.advance(lease + Duration::from_secs(1));
    assert_eq!(b.claim(20, lease).await.unwrap().len(), 10);
}

/// The same answer for an address no account has, the same work (one
/// outbox row each), and mail only to the real one; expired, replayed,
/// superseded and throttled links and requests are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_reset_refusals() {
    let Some(env) = Env::start(None).await else { return };
    let _smtp = env.smtp().await;
    let name = unique_name("refuse");
    let address = format!("{name}@example.com");
    env.user_with_address(&name, &address).await;
    let mut anonymous = env.server.browser();

    // Enumeration: same status and message, one queued row each.
    let unknown = request_reset(&mut anonymous, &format!("nobody-{name}@example.com")).await;
    let known = request_reset(&mut anonymous, &address.to_uppercase()).await;
    assert_eq!((unknown.status, known.status), (200, 200));
    assert_eq!(unknown.element_text("reset-sent"), known.element_text("reset-sent"));
    let counts = drained(&env.server).await;
    assert_eq!(counts.sent, 2, "both requests queued the same work: {counts:?}");
    let mail = env.mailbox.wait_for(1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(env.mailbox.read().len(), 1, "mail only for the existing address");
    assert_eq!(mail[0].to, address, "sent to the address as verified");
    let first = mail[0].token(&env.server.base).unwrap();

    // Malformed addresses: a precise 422, nothing queued.
    let bad = request_reset(&mut anonymous, "not an address").await;
    assert_eq!(bad.status, 422);

    // A newer link ends the older one.
    request_reset(&mut anonymous, &address).await;
    let mail = env.mailbox.wait_for(2).await;
    let second = mail[1].token(&env.server.base).unwrap();
    assert_ne!(first, second);
    assert_eq!(anonymous.get(&format!("/password/reset?token={first}")).await.status, 400);

    // Expiry: 15 minutes.
    env.server.clock.advance(Duration::from_secs(16 * 60));
    let expired = anonymous.get(&format!("/password/reset?token={second}")).await;
    assert_eq!(expired.status, 400);
    assert!(expired.element_text("reset-invalid").is_some());

    // A fresh one: a weak password leaves it working; then used once only.
    request_reset(&mut anonymous, &address).await;
    let mail = env.mailbox.wait_for(3).await;
    let third = mail[2].token(&env.server.base).unwrap();
    let path = format!("/password/reset?token={third}");
    let weak = anonymous.submit(&path, "/password/reset", &[("token", &third), ("new_password", "short")]).await;
    assert_eq!(weak.status, 422);
    let done = anonymous.submit(&path, "/password/reset", &[("token", &third), ("new_password", NEW_PASSWORD)]).await;
    assert_eq!(done.status, 200);
    let replay =
        anonymous.submit("/password/forgot", "/password/reset", &[("token", &third), ("new_password", PASSWORD)]).await;
    assert_eq!(replay.status, 400, "a used link does not work again");
    let garbage =
        anonymous.submit("/password/forgot", "/password/reset", &[("token", "x"), ("new_password", PASSWORD)]).await;
    assert_eq!(garbage.status, 400);

    // Throttling per address: after the free requests, 429 with Retry-After,
    // for an unknown address exactly as for a known one.
    for target in [address.clone(), format!("ghost-{name}@example.com")] {
        let mut statuses = Vec::new();
        for _ in 0..8 {
            let mut fresh = env.server.browser();
            statuses.push(request_reset(&mut fresh, &target).await);
        }
        let refused = statuses.iter().find(|p| p.status == 429).expect("throttled");
        assert!(refused.header("retry-after").is_some());
        // Nothing is counted while blocked; move past the block for the next address.
        env.server.clock.advance(Duration::from_secs(3600));
    }
}

/// A reset does not bypass a second factor: it logs nobody in, and the
/// next login still asks for the code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_leaves_the_second_factor_in_place() {
    let Some(env) = Env::start(None).await else { return };
    let _smtp = env.smtp().await;
    let name = unique_name("twofa");
    let address = format!("{name}@example.com");
    env.user_with_address(&name, &address).await;
    let user = env.server.app_state.db.users().user_by_name(&name.to_lowercase()).await.unwrap().unwrap();
    let factors = env.server.app_state.auth.second_factors();
    let secret = factors.begin_setup(user.id).await.unwrap().expect("setup starts");
    let now = tessera::Clock::now(&env.server.clock);
    let code = secret.code_at(tessera_auth::second_factor::totp::step_at(now));
    assert!(factors.confirm_setup(user.id, &code).await.unwrap().is_some());

    let mut anonymous = env.server.browser();
    request_reset(&mut anonymous, &address).await;
    let token = env.mailbox.wait_for(1).await[0].token(&env.server.base).unwrap();
    let path = format!("/password/reset?token={token}");
    let done = anonymous.submit(&path, "/password/reset", &[("token", &token), ("new_password", NEW_PASSWORD)]).await;
    assert_eq!(done.status, 200);
    assert!(anonymous.session_id().is_none() || anonymous.get("/profile").await.status == 303, "not logged in");
    let login = env.server.browser().login(&name, NEW_PASSWORD).await;
    assert_eq!(login.status, 303);
    assert_eq!(login.location(), Some("/login/second-factor"), "the code is still needed");
}

/// The API: request (the same 202 for every address), confirm, refusals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_reset_through_the_api() {
    let Some(env) = Env::start(None).await else { return };
    let _smtp = env.smtp().await;
    let name = unique_name("apireset");
    let address = format!("{name}@example.com");
    env.user_with_address(&name, &address).await;
    let http = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", env.server.base);
    // An API token that the reset must end.
    let pair: serde_json::Value = http
        .post(url("/api/signin"))
        .json(&json!({"username": name, "password": PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let refresh = pair["refresh_token"].as_str().unwrap().to_owned();

    for email in [address.clone(), format!("nobody-{name}@example.com")] {
        let response =
            http.post(url("/api/password/reset-request")).json(&json!({"email": email})).send().await.unwrap();
        assert_eq!(response.status(), 202);
        assert_eq!(response.json::<serde_json::Value>().await.unwrap(), json!({"status": "accepted"}));
    }
    let bad = http.post(url("/api/password/reset-request")).json(&json!({"email": "nope"})).send().await.unwrap();
    assert_eq!(bad.status(), 422);
    let token = env.mailbox.wait_for(1).await[0].token(&env.server.base).unwrap();

    let weak =
        http.post(url("/api/password/reset")).json(&json!({"token": token, "new_password": "x"})).send().await.unwrap();
    assert_eq!(weak.status(), 422);
    let ok = http
        .post(url("/api/password/reset"))
        .json(&json!({"token": token, "new_password": NEW_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 204);
    let again = http
        .post(url("/api/password/reset"))
        .json(&json!({"token": token, "new_password": NEW_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 400);
    assert_eq!(again.headers()["content-type"], "application/problem+json");
    let refreshed = http.post(url("/api/token/refresh")).json(&json!({"refresh_token": refresh})).send().await.unwrap();
    assert_eq!(refreshed.status(), 401, "the reset ended the API tokens");
}

/// Adding an address by its link, changing it by its code: the old address
/// is told, codes are single-use and throttled, and an address belongs to
/// one account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn addresses_are_verified_by_link_or_code() {
    let Some(env) = Env::start(None).await else { return };
    let _smtp = env.smtp().await;
    let name = unique_name("verify");
    let mut browser = env.server.browser();
    assert_eq!(browser.register(&name, PASSWORD).await.status, 303);
    assert_eq!(browser.get("/account/email").await.element_text("email-address").as_deref(), Some("none"));
    // Nobody else may change it: the page needs the account's session.
    assert_eq!(env.server.browser().get("/account/email").await.status, 303);

    let first = format!("{name}@example.com");
    let asked = browser.submit("/account/email", "/account/email", &[("email", &first)]).await;
    assert_eq!(asked.status, 200, "{}", asked.body);
    assert_eq!(asked.element_text("email-address").as_deref(), Some("none"), "not before it is confirmed");
    let mail = env.mailbox.wait_for(1).await;
    assert_eq!(mail[0].to, first);
    assert!(mail[0].code().is_some());
    let token = mail[0].token(&env.server.base).unwrap();

    // The link asks first (a GET changes nothing), then confirms, once;
    // from any browser, since the token is the proof.
    let mut elsewhere = env.server.browser();
    let shown = elsewhere.get(&format!("/email/verify?token={token}")).await;
    assert_eq!(shown.status, 200);
    assert_eq!(browser.get("/account/email").await.element_text("email-address").as_deref(), Some("none"));
    let confirmed =
        elsewhere.submit(&format!("/email/verify?token={token}"), "/email/verify", &[("token", &token)]).await;
    assert_eq!(confirmed.status, 200, "{}", confirmed.body);
    assert_eq!(confirmed.element_text("verified-address").as_deref(), Some(first.as_str()));
    let replay = elsewhere.submit("/login", "/email/verify", &[("token", &token)]).await;
    assert_eq!(replay.status, 400);
    assert_eq!(browser.get("/account/email").await.element_text("email-address").as_deref(), Some(first.as_str()));

    // Change it with the code: wrong codes are refused, then throttled.
    let second = format!("{name}-new@example.com");
    browser.submit("/account/email", "/account/email", &[("email", &second)]).await;
    let mail = env.mailbox.wait_for(2).await;
    let code = mail[1].code().unwrap();
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let refused = browser.submit("/account/email", "/account/email/code", &[("code", wrong)]).await;
    assert_eq!(refused.status, 400);
    let ok = browser.submit("/account/email", "/account/email/code", &[("code", &code)]).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.element_text("email-address").as_deref(), Some(second.as_str()));
    let again = browser.submit("/account/email", "/account/email/code", &[("code", &code)]).await;
    assert_eq!(again.status, 400, "a code works once");
    // The old address hears of it.
    let mail = env.mailbox.wait_for(3).await;
    let notice =
        mail.iter().find(|m| m.to == first && m.subject.contains("email address was changed")).expect("notice");
    assert!(notice.text.contains("/account/sessions"), "{}", notice.text);

    // Throttled like passwords: a burst of wrong codes ends in 429.
    let mut last = 0;
    for _ in 0..8 {
        last = browser.submit("/account/email", "/account/email/code", &[("code", wrong)]).await.status;
    }
    assert_eq!(last, 429);

    // Another account cannot take a verified address.
    let other = unique_name("other");
    let mut intruder = env.server.browser();
    assert_eq!(intruder.register(&other, PASSWORD).await.status, 303);
    intruder.submit("/account/email", "/account/email", &[("email", &second)]).await;
    let mail = env.mailbox.wait_for(4).await;
    let token = mail.iter().rev().find(|m| m.to == second && m.subject.contains("Confirm")).unwrap();
    let token = token.token(&env.server.base).unwrap();
    let taken = intruder.submit("/account/email", "/email/verify", &[("token", &token)]).await;
    assert_eq!(taken.status, 409);
}

/// Security notices: a password change and a sign-in from a new browser
/// each mail the verified address, with when, the device and a link to
/// the devices page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_notices_are_mailed() {
    let Some(env) = Env::start(None).await else { return };
    let _smtp = env.smtp().await;
    let name = unique_name("notice");
    let address = format!("{name}@example.com");
    let mut browser = env.user_with_address(&name, &address).await;
    let changed = browser
        .submit(
            "/account/password",
            "/account/password",
            &[("current_password", PASSWORD), ("new_password", NEW_PASSWORD)],
        )
        .await;
    assert_eq!(changed.status, 303);
    let mail = env.mailbox.wait_for(1).await;
    assert_eq!(mail[0].to, address);
    assert!(mail[0].subject.contains("Your password was changed"), "{}", mail[0].subject);
    assert!(mail[0].text.contains(&format!("{}/account/sessions", env.server.base)), "{}", mail[0].text);
    assert!(mail[0].text.contains("When: "), "{}", mail[0].text);

    let mut fresh = env.server.browser();
    fresh.extra_headers.push(("user-agent".into(), "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0".into()));
    assert_eq!(fresh.login(&name, NEW_PASSWORD).await.status, 303);
    let mail = env.mailbox.wait_for(2).await;
    assert!(mail[1].subject.contains("New sign-in"), "{}", mail[1].subject);
    assert!(mail[1].text.contains("Firefox"), "{}", mail[1].text);
}

/// Without an SMTP server, mail is written as `.eml` files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_smtp_mail_becomes_eml_files() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let mut config = test_config(dir.path(), &clock);
    let eml_dir = dir.path().join("mail");
    config.mail =
        MailConfig { eml_dir: eml_dir.clone(), poll_interval: Duration::from_millis(100), ..MailConfig::default() };
    let server = TestServer::start(config, clock).await;
    let name = unique_name("eml");
    let mut browser = server.browser();
    assert_eq!(browser.register(&name, PASSWORD).await.status, 303);
    browser.submit("/account/email", "/account/email", &[("email", &format!("{name}@example.com"))]).await;
    let files = wait_for(|| read_eml_dir(&eml_dir), 1, WAIT).await;
    assert!(files[0].subject.contains("Confirm your email address"));
    assert!(files[0].code().is_some() && !files[0].html.is_empty());
}

/// With `accounts.email = off` the pages and API answer 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_off_means_no_email_routes() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let mut config = test_config(dir.path(), &clock);
    config.mail.policy = tessera_server::mail::EmailPolicy::Off;
    let server = TestServer::start(config, clock).await;
    let mut browser = server.browser();
    assert!(browser.get("/password/forgot").await.element_text("reset-off").is_some());
    let refused = browser.submit("/login", "/password/forgot", &[("email", "a@example.com")]).await;
    assert_eq!(refused.status, 404);
    assert_eq!(browser.get("/password/reset?token=x").await.status, 404);
    let response = reqwest::Client::new()
        .post(format!("{}/api/password/reset-request", server.base))
        .json(&json!({"email": "a@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
}

/// The reset journey in real Chromium: the login page's link, the form,
/// the mail, its link, the new password, logging in with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_reset_in_chromium() {
    if !chromium::available() {
        return;
    }
    let Some(env) = Env::start(None).await else { return };
    let _smtp = env.smtp().await;
    let name = unique_name("chrome");
    let address = format!("{name}@example.com");
    env.user_with_address(&name, &address).await;
    let driver = chromium::Chromedriver::start().await;
    let browser = driver.chromium(chromium::DESKTOP).await;
    browser.open(&format!("{}/login", env.server.base)).await;
    browser.click_and_wait("#forgot-password").await;
    assert_eq!(browser.path().await, "/password/forgot");
    browser.fill("#email", &address).await;
    browser.click_and_wait("form[action='/password/forgot'] button[type=submit]").await;
    assert!(browser.has("#reset-sent").await);
    let link = env.mailbox.wait_for(1).await[0].link(&env.server.base).unwrap();
    browser.open(&link).await;
    browser.fill("#new_password", NEW_PASSWORD).await;
    browser.click_and_wait("form[action='/password/reset'] button[type=submit]").await;
    assert!(browser.has("#reset-done").await, "the password was set");
    browser.screenshot("password-reset-done").await;
    browser.open(&format!("{}/login", env.server.base)).await;
    chromium::log_in_here(&browser, &name, NEW_PASSWORD).await;
    assert_eq!(browser.path().await, "/profile");
    browser.close().await;
}

/// Sign-up asks for an address (optional by default): a valid one gets a
/// verification mail, a malformed one is refused before the account is
/// created; with `accounts.email = required` an address must be given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_up_with_an_address() {
    let Some(env) = Env::start(None).await else { return };
    let _smtp = env.smtp().await;
    let name = unique_name("signup");
    let address = format!("{name}@example.com");
    let mut browser = env.server.browser();
    let form = browser.get("/register").await;
    assert!(form.body.contains("Email address (optional)"), "{}", form.body);
    let bad = browser
        .submit("/register", "/register", &[("username", &name), ("password", PASSWORD), ("email", "nope")])
        .await;
    assert_eq!(bad.status, 422);
    assert!(bad.element_text("email-error").is_some());
    let users = env.server.app_state.db.users();
    assert!(users.user_by_name(&name.to_lowercase()).await.unwrap().is_none(), "nothing created");
    let done = browser
        .submit("/register", "/register", &[("username", &name), ("password", PASSWORD), ("email", &address)])
        .await;
    assert_eq!(done.status, 303);
    let mail = env.mailbox.wait_for(1).await;
    assert_eq!(mail[0].to, address);
    assert!(mail[0].subject.contains("Confirm your email address"));

    let Some(strict) = Env::start_with(None, EmailPolicy::Required).await else { return };
    let mut browser = strict.server.browser();
    let missing = browser.submit("/register", "/register", &[("username", &name), ("password", PASSWORD)]).await;
    assert_eq!(missing.status, 422);
    assert_eq!(missing.element_text("email-error").as_deref(), Some("An email address is required."));
}
