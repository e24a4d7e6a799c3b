//! The membership flow through the real HTTP stack, on the embedded SQLite default.

mod harness;

use std::time::Duration;

use harness::{test_config, unique_name, Browser, TestServer};
use tessera::{ExpiryPolicy, ManualClock};

const PASSWORD: &str = "correct horse battery";

async fn server() -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let server = TestServer::start(test_config(dir.path(), &clock), clock).await;
    (server, dir)
}

#[tokio::test]
async fn register_profile_logout_and_replay_refused() {
    let (server, _dir) = server().await;
    let mut browser = server.browser();
    let name = unique_name("Alice");

    let registered = browser.register(&name, PASSWORD).await;
    assert_eq!(registered.status, 303);
    assert_eq!(registered.location(), Some("/profile"));
    let cookie = registered.session_cookie().expect("registration logs in").clone();
    for attribute in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/"] {
        assert!(cookie.contains(attribute), "{attribute} missing in {cookie}");
    }
    assert!(!cookie.contains("Domain"), "no Domain with __Host-: {cookie}");
    assert_eq!(registered.header("cache-control"), Some("no-store"));

    let profile = browser.get("/profile").await;
    assert_eq!(profile.status, 200);
    assert_eq!(profile.element_text("username").as_deref(), Some(name.as_str()));
    assert_eq!(profile.element_text("visits").as_deref(), Some("1"));
    assert!(profile.body.contains("Welcome!"), "flash shown once after registration");
    let again = browser.get("/profile").await;
    assert_eq!(again.element_text("visits").as_deref(), Some("2"));
    assert!(!again.body.contains("Welcome!"), "flash shown only once");

    let old_cookie = browser.session_id().unwrap();
    let logged_out = browser.logout().await;
    assert_eq!(logged_out.status, 303);
    assert_eq!(logged_out.location(), Some("/login"));
    assert!(
        logged_out.set_cookies.iter().any(|c| c.starts_with("__Host-id=;") && c.contains("Max-Age=0")),
        "logout clears the cookie: {:?}",
        logged_out.set_cookies
    );
    assert!(browser.session_id().is_none());
    let login_page = browser.get("/login").await;
    assert!(login_page.body.contains("You are logged out."));

    let mut replay = Browser::new(&server.base);
    replay.cookies.insert("__Host-id".into(), old_cookie);
    let refused = replay.get("/profile").await;
    assert_eq!(refused.status, 303, "a logged-out cookie is worthless");
    assert_eq!(refused.location(), Some("/login?next=%2Fprofile"));
    server.stop().await;
}

#[tokio::test]
async fn a_new_session_id_at_every_login_and_the_old_one_dies() {
    let (server, _dir) = server().await;
    let name = unique_name("bob");
    let mut browser = server.browser();
    browser.register(&name, PASSWORD).await;
    let first = browser.session_id().unwrap();

    // Logging in again while logged in rotates the ID too.
    let relogin = browser.submit("/", "/login", &[("username", &name), ("password", PASSWORD)]).await;
    assert_eq!(relogin.status, 303);
    let second = browser.session_id().unwrap();
    assert_ne!(first, second);
    let mut stale = Browser::new(&server.base);
    stale.cookies.insert("__Host-id".into(), first);
    assert_eq!(stale.get("/profile").await.status, 303, "the pre-login ID is dead");
    assert_eq!(browser.get("/profile").await.status, 200, "the new ID works");

    // Session fixation: an ID planted by an attacker is never adopted.
    let planted = tessera::SessionId::generate().encode();
    let mut victim = Browser::new(&server.base);
    victim.cookies.insert("__Host-id".into(), planted.clone());
    let login = victim.login(&name, PASSWORD).await;
    assert_eq!(login.status, 303);
    assert_ne!(victim.session_id().unwrap(), planted);
    let mut attacker = Browser::new(&server.base);
    attacker.cookies.insert("__Host-id".into(), planted);
    assert_eq!(attacker.get("/profile").await.status, 303);
    server.stop().await;
}

#[tokio::test]
async fn get_logout_is_refused_and_does_nothing() {
    let (server, _dir) = server().await;
    let mut browser = server.browser();
    browser.register(&unique_name("carol"), PASSWORD).await;
    let page = browser.get("/logout").await;
    assert_eq!(page.status, 405);
    assert!(page.set_cookies.is_empty());
    assert_eq!(browser.get("/profile").await.status, 200, "still logged in");
    server.stop().await;
}

#[tokio::test]
async fn wrong_password_and_unknown_user_look_the_same() {
    let (server, _dir) = server().await;
    let name = unique_name("dave");
    server.browser().register(&name, PASSWORD).await;

    let mut browser = server.browser();
    let wrong = browser.login(&name, "not the password").await;
    let unknown = browser.login(&unique_name("nobody"), "not the password").await;
    assert_eq!(wrong.status, 401);
    assert_eq!(unknown.status, 401);
    let error = |body: &str| body.contains("Wrong user name or password.");
    assert!(error(&wrong.body) && error(&unknown.body));
    assert!(wrong.body.contains(&format!("value=\"{name}\"")), "the user name is kept");
    assert!(browser.session_id().is_none(), "no session for a failed login");
    let ok = browser.login(&name.to_uppercase(), PASSWORD).await;
    assert_eq!(ok.status, 303, "user names compare case-insensitively");
    server.stop().await;
}

#[tokio::test]
async fn login_goes_to_a_safe_next_only() {
    let (server, _dir) = server().await;
    let name = unique_name("erin");
    server.browser().register(&name, PASSWORD).await;

    let mut browser = server.browser();
    let guarded = browser.get("/profile?tab=1").await;
    assert_eq!(guarded.status, 303);
    assert_eq!(guarded.location(), Some("/login?next=%2Fprofile%3Ftab%3D1"));
    let form = browser.get(guarded.location().unwrap()).await;
    assert!(form.body.contains("name=\"next\" value=\"/profile?tab=1\""));
    let token = form.csrf();
    let page = browser
        .post_form(
            "/login",
            &[("csrf_token", &token), ("username", &name), ("password", PASSWORD), ("next", "/profile?tab=1")],
        )
        .await;
    assert_eq!(page.location(), Some("/profile?tab=1"));

    for evil in ["//evil.example/", "/\\evil.example", "https://evil.example/", "javascript:alert(1)"] {
        let mut browser = server.browser();
        let form = browser.get("/login").await;
        let token = form.csrf();
        let page = browser
            .post_form("/login", &[("csrf_token", &token), ("username", &name), ("password", PASSWORD), ("next", evil)])
            .await;
        assert_eq!(page.status, 303);
        assert_eq!(page.location(), Some("/profile"), "{evil} must not be followed");
    }
    server.stop().await;
}

#[tokio::test]
async fn csrf_refusals() {
    let (server, _dir) = server().await;
    let name = unique_name("frank");
    let mut browser = server.browser();
    browser.register(&name, PASSWORD).await;

    let no_token = browser.post_form("/logout", &[]).await;
    assert_eq!(no_token.status, 403);
    let wrong = browser.post_form("/logout", &[("csrf_token", "AAAA")]).await;
    assert_eq!(wrong.status, 403);
    assert_eq!(browser.get("/profile").await.status, 200, "still logged in after refused logouts");

    let token = browser.get("/profile").await.csrf();
    let cross = browser.post_form_with("/logout", &[("csrf_token", &token)], &[("sec-fetch-site", "cross-site")]).await;
    assert_eq!(cross.status, 403);
    let foreign =
        browser.post_form_with("/logout", &[("csrf_token", &token)], &[("origin", "http://evil.example")]).await;
    assert_eq!(foreign.status, 403);

    // A token from another visitor's session is not valid for this one.
    let mut other = server.browser();
    other.register(&unique_name("grace"), PASSWORD).await;
    let others_token = other.get("/profile").await.csrf();
    assert_eq!(browser.post_form("/logout", &[("csrf_token", &others_token)]).await.status, 403);

    // Login CSRF: the login form itself needs a token bound to this browser.
    let mut fresh = server.browser();
    let login = fresh.post_form("/login", &[("username", &name), ("password", PASSWORD)]).await;
    assert_eq!(login.status, 403);
    let mut attacker = server.browser();
    let attackers_token = attacker.get("/login").await.csrf();
    let login = fresh
        .post_form("/login", &[("csrf_token", &attackers_token), ("username", &name), ("password", PASSWORD)])
        .await;
    assert_eq!(login.status, 403, "a token minted for another browser is refused");

    let ok = browser.post_form("/logout", &[("csrf_token", &token)]).await;
    assert_eq!(ok.status, 303);
    server.stop().await;
}

/// Issue #14 item 8: a token minted for the pre-login cookie stops working
/// at login (the pre-session secret is rotated), for the user who logged in
/// and for the next user of the same browser.
#[tokio::test]
async fn the_pre_session_csrf_secret_is_rotated_at_login() {
    let (server, _dir) = server().await;
    let alice = unique_name("alice");
    let bob = unique_name("bob");
    server.browser().register(&bob, PASSWORD).await;
    let mut browser = server.browser();
    let login_form = browser.get("/login").await;
    let pre_login_token = login_form.csrf();
    let pre_session_cookie = browser.cookies.get("__Host-csrf").cloned().expect("a pre-session cookie");

    let registered = browser
        .post_form("/register", &[("csrf_token", &pre_login_token), ("username", &alice), ("password", PASSWORD)])
        .await;
    assert_eq!(registered.status, 303);
    let rotated = browser.cookies.get("__Host-csrf").cloned().expect("the pre-session cookie is still there");
    assert_ne!(rotated, pre_session_cookie, "registering (a login) replaced the pre-session secret");
    assert!(registered.set_cookies.iter().any(|c| c.starts_with("__Host-csrf=") && c.contains("HttpOnly")));
    // The login form's token no longer works for the logged-in user...
    assert_eq!(browser.post_form("/logout", &[("csrf_token", &pre_login_token)]).await.status, 403);
    assert_eq!(browser.get("/profile").await.status, 200, "still logged in");
    // ...nor for the next user of this browser.
    assert_eq!(browser.logout().await.status, 303);
    assert_eq!(browser.login(&bob, PASSWORD).await.status, 303);
    assert_eq!(browser.post_form("/logout", &[("csrf_token", &pre_login_token)]).await.status, 403);
    server.stop().await;
}

#[tokio::test]
async fn idle_timeout_slides_with_touches_and_ends_idle_sessions() {
    let (server, _dir) = server().await;
    let mut browser = server.browser();
    browser.register(&unique_name("heidi"), PASSWORD).await;

    // Read-only requests refresh the idle deadline once a tenth of it passed.
    server.clock.advance(Duration::from_secs(20 * 60));
    assert_eq!(browser.get("/").await.status, 200);
    server.clock.advance(Duration::from_secs(20 * 60));
    assert_eq!(browser.get("/profile").await.status, 200, "40 minutes after login, 20 after the last use");

    server.clock.advance(Duration::from_secs(31 * 60));
    let expired = browser.get("/profile").await;
    assert_eq!(expired.status, 303, "idle for 31 minutes");
    assert!(expired.set_cookies.iter().any(|c| c.starts_with("__Host-id=;")), "the dead cookie is cleared");
    server.stop().await;
}

#[tokio::test]
async fn absolute_timeout_ends_even_busy_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let mut config = test_config(dir.path(), &clock);
    config.expiry = ExpiryPolicy::new(Duration::from_secs(30 * 60), Duration::from_secs(60 * 60));
    let server = TestServer::start(config, clock).await;
    let mut browser = server.browser();
    browser.register(&unique_name("ivan"), PASSWORD).await;
    for _ in 0..3 {
        server.clock.advance(Duration::from_secs(19 * 60));
        assert_eq!(browser.get("/profile").await.status, 200);
    }
    server.clock.advance(Duration::from_secs(4 * 60));
    assert_eq!(browser.get("/profile").await.status, 303, "61 minutes after login");
    server.stop().await;
}

#[tokio::test]
async fn sessions_and_users_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let server = TestServer::start(test_config(dir.path(), &clock), clock.clone()).await;
    let mut browser = server.browser();
    let name = unique_name("judy");
    browser.register(&name, PASSWORD).await;
    browser.get("/profile").await;
    server.stop().await;

    let server = TestServer::start(test_config(dir.path(), &clock), clock).await;
    browser.base = server.base.clone();
    let profile = browser.get("/profile").await;
    assert_eq!(profile.status, 200, "the session outlived the process");
    assert_eq!(profile.element_text("visits").as_deref(), Some("2"));
    assert_eq!(server.browser().login(&name, PASSWORD).await.status, 303);
    server.stop().await;
}

#[tokio::test]
async fn malformed_cookies_are_no_session_never_an_error() {
    let (server, _dir) = server().await;
    let long = "A".repeat(8000);
    let valid_but_unknown = tessera::SessionId::generate().encode();
    let values = [
        "",
        "x",
        "====",
        "%00%ff",
        "not base64 at all!!",
        long.as_str(),
        valid_but_unknown.as_str(),
        "\"quoted\"",
        "a=b=c",
    ];
    for value in values {
        let mut browser = server.browser();
        browser.cookies.insert("__Host-id".into(), value.to_owned());
        let home = browser.get("/").await;
        assert_eq!(home.status, 200, "cookie {value:.20?} on /");
        let profile = browser.get("/profile").await;
        assert_eq!(profile.status, 303, "cookie {value:.20?} on /profile");
    }
    // Raw bytes that are not UTF-8, straight over TCP.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(server.address).await.unwrap();
    stream
        .write_all(b"GET /profile HTTP/1.1\r\nHost: localhost\r\nCookie: __Host-id=\xff\xfe\x80; other=\xc3\x28\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 303"), "{answer:.200}");
    server.stop().await;
}

#[tokio::test]
async fn input_rules_and_clear_errors() {
    let (server, _dir) = server().await;
    let name = unique_name("kim");
    let mut browser = server.browser();
    assert_eq!(browser.register(&name, PASSWORD).await.status, 303);

    let mut other = server.browser();
    let taken = other.register(&name.to_uppercase(), PASSWORD).await;
    assert_eq!(taken.status, 409);
    assert!(taken.body.contains("That user name is taken."));
    assert!(taken.body.contains(&format!("value=\"{}\"", name.to_uppercase())), "the name is kept");

    let short = other.register(&unique_name("lee"), "short").await;
    assert_eq!(short.status, 422);
    assert!(short.body.contains("at least 12 characters"), "the 12-character minimum: {}", short.body);
    let long = "p".repeat(1025);
    let too_long = other.register(&unique_name("lee"), &long).await;
    assert_eq!(too_long.status, 422);
    assert!(too_long.body.contains("at most 1024 bytes"));
    let bad_name = other.register("<b>x</b>", PASSWORD).await;
    assert_eq!(bad_name.status, 422);
    assert!(bad_name.body.contains("&#60;b&#62;x&#60;/b&#62;"), "user input is escaped: {}", bad_name.body);
    assert!(!bad_name.body.contains("<b>x</b>"));
    assert!(other.session_id().is_none());
    server.stop().await;
}

#[tokio::test]
async fn error_pages_for_browsers_and_api_clients() {
    let (server, _dir) = server().await;
    let mut browser = server.browser();
    let missing = browser.get("/no/such/page").await;
    assert_eq!(missing.status, 404);
    assert!(missing.header("content-type").unwrap().starts_with("text/html"));
    assert!(missing.body.contains("Page not found") && missing.body.contains("/static/style.css"));

    let mut api = Browser::new(&server.base);
    api.extra_headers = vec![("accept".into(), "application/json".into())];
    let missing = api.get("/no/such/page").await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.header("content-type"), Some("application/problem+json"));
    let problem: serde_json::Value = serde_json::from_str(&missing.body).unwrap();
    assert_eq!(problem["type"], "/problems/not-found");
    assert_eq!(problem["status"], 404);

    let boom = browser.get("/__test/panic").await;
    assert_eq!(boom.status, 500);
    assert!(boom.body.contains("Something went wrong"));
    assert!(!boom.body.contains("test panic") && !boom.body.contains("src/"), "no panic text or trace");
    let boom = api.get("/__test/panic").await;
    assert_eq!(boom.status, 500);
    assert_eq!(boom.header("content-type"), Some("application/problem+json"));

    let unauthenticated = api.get("/profile").await;
    assert_eq!(unauthenticated.status, 401, "JSON clients get 401, not a redirect");

    for path in ["/", "/login", "/no/such/page"] {
        let page = browser.get(path).await;
        assert!(page.header("content-security-policy").unwrap().contains("default-src 'self'"), "{path}");
        assert_eq!(page.header("x-content-type-options"), Some("nosniff"), "{path}");
    }

    let huge = "x".repeat(200 * 1024);
    let token = browser.get("/login").await.csrf();
    let too_big = browser.post_form("/login", &[("csrf_token", &token), ("username", &huge)]).await;
    assert_eq!(too_big.status, 413);

    let health = reqwest::get(format!("{}/healthz", server.base)).await.unwrap();
    assert_eq!(health.status(), 200);
    assert!(health.headers().get("set-cookie").is_none());
    let ready = reqwest::get(format!("{}/readyz", server.base)).await.unwrap();
    assert_eq!(ready.status(), 200);
    server.stop().await;
}

#[tokio::test]
async fn concurrent_profile_views_count_exactly() {
    let (server, _dir) = server().await;
    let mut browser = server.browser();
    browser.register(&unique_name("mallory"), PASSWORD).await;
    let before: u64 = browser.get("/profile").await.element_text("visits").unwrap().parse().unwrap();
    let views = (0..50).map(|_| {
        let mut clone = browser.clone();
        tokio::spawn(async move { clone.get("/profile").await.status })
    });
    for status in futures::future::join_all(views).await {
        assert_eq!(status.unwrap(), 200);
    }
    let after: u64 = browser.get("/profile").await.element_text("visits").unwrap().parse().unwrap();
    assert_eq!(after, before + 51, "50 concurrent views plus this one, none lost");
    server.stop().await;
}
