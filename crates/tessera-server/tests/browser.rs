//! The membership pages in a real headless Chromium, driven through
//! WebDriver: journeys a person takes, what the browser stored, what its
//! console said, and screenshots in `target/screenshots/` to look at.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`scripts/browser-deps.sh`);
//! without them the tests print `SKIPPED:`, or fail under
//! `TESSERA_REQUIRE_SERVICES` (CI).

mod chromium;
mod harness;

use chromium::{log_in_here, register, Chromedriver, Chromium, DESKTOP, PHONE};
use fantoccini::key::Key;
use harness::{test_config, unique_name, TestServer};
use serde_json::json;
use tessera::ManualClock;

const PASSWORD: &str = "correct horse battery";

async fn server() -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let server = TestServer::start(test_config(dir.path(), &clock), clock).await;
    (server, dir)
}

/// A chromedriver that cannot start (here: its port is taken) is reported
/// with its own output, not a bare time-out, and the next start succeeds:
/// what `Chromedriver::start` retries on.
#[tokio::test]
async fn a_failed_chromedriver_start_is_reported_and_a_retry_works() {
    if !chromium::available() {
        return;
    }
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let started = std::time::Instant::now();
    let failure = match chromium::start_on(port, std::time::Duration::from_secs(20)).await {
        Ok((mut child, _)) => {
            let _ = child.kill();
            panic!("chromedriver started on a taken port");
        }
        Err(failure) => failure,
    };
    assert!(failure.contains(&format!("port {port}")), "{failure}");
    assert!(started.elapsed() < std::time::Duration::from_secs(20), "an exit is noticed at once: {failure}");
    drop(taken);
    let driver = Chromedriver::start().await;
    drop(driver);
}

/// What must hold on every page: the stylesheet and script loaded, nothing
/// blocked by the page's own CSP, no console errors (an error status of the
/// page itself is expected on error pages and failed forms), every field
/// labelled and every `aria-describedby` pointing at something.
async fn assert_page_is_clean(browser: &Chromium, page: &str) {
    let console = browser.console().await;
    for entry in &console {
        let own_status = entry.source == "network"
            && entry.message.contains("the server responded with a status of")
            && !entry.message.contains("/static/")
            && !entry.message.contains("favicon");
        assert!(
            !entry.message.contains("Content Security Policy") && !entry.message.contains("Content-Security-Policy"),
            "{page}: blocked by the CSP: {entry:?}"
        );
        assert!(entry.level != "SEVERE" || own_status, "{page}: console error: {entry:?}");
    }
    let loaded = browser
        .eval(
            "return performance.getEntriesByType('resource')
                .filter(e => e.name.includes('/static/'))
                .map(e => [new URL(e.name).pathname, e.responseStatus]);",
        )
        .await;
    let loaded = loaded.as_array().unwrap();
    for wanted in ["/static/style.css", "/static/forms.js"] {
        assert!(loaded.iter().any(|e| e[0] == wanted), "{page}: {wanted} not loaded: {loaded:?}");
    }
    assert!(loaded.iter().all(|e| e[1] == 200), "{page}: a static file failed: {loaded:?}");
    let styled = browser.eval("return getComputedStyle(document.body).display;").await;
    assert_eq!(styled, "flex", "{page}: the stylesheet applies");
    let unlabelled = browser
        .eval(
            "return [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
                .filter(i => i.labels.length === 0).map(i => i.name);",
        )
        .await;
    assert_eq!(unlabelled, json!([]), "{page}: fields without a label");
    let dangling = browser
        .eval(
            "return [...document.querySelectorAll('[aria-describedby]')]
                .flatMap(e => e.getAttribute('aria-describedby').split(/\\s+/))
                .filter(id => !document.getElementById(id));",
        )
        .await;
    assert_eq!(dangling, json!([]), "{page}: aria-describedby points at nothing");
    let overflow = browser.eval("return document.documentElement.scrollWidth > window.innerWidth;").await;
    assert_eq!(overflow, json!(false), "{page}: the page scrolls sideways");
}

#[tokio::test]
async fn register_profile_reload_logout_back_button_refused() {
    if !chromium::available() {
        return;
    }
    let (server, _dir) = server().await;
    let driver = Chromedriver::start().await;
    let browser = driver.chromium(DESKTOP).await;
    let name = unique_name("alice");

    register(&browser, &server.base, &name, PASSWORD).await;
    assert_eq!(browser.path().await, "/profile");
    assert_eq!(browser.text("#username").await, name);
    assert_eq!(browser.text("#visits").await, "1");
    assert!(browser.text("#flash").await.contains("Welcome!"));
    assert_page_is_clean(&browser, "profile").await;

    // The session cookie, as the browser stored it.
    let cookie = browser.cookie("__Host-id").await.expect("the browser kept the session cookie");
    assert_eq!(cookie.http_only(), Some(true), "HttpOnly");
    assert_eq!(cookie.secure(), Some(true), "Secure (kept on http://localhost)");
    assert_eq!(format!("{:?}", cookie.same_site()), "Some(Lax)", "SameSite=Lax");
    assert_eq!(cookie.path(), Some("/"));
    assert!(cookie.domain().is_none_or(|d| d == "localhost"), "host-only: {:?}", cookie.domain());
    let script_view = browser.eval("return document.cookie;").await;
    assert!(!script_view.as_str().unwrap().contains("__Host-id"), "scripts cannot read it: {script_view}");

    browser.client.refresh().await.unwrap();
    assert_eq!(browser.text("#visits").await, "2", "a reload counts");
    assert!(!browser.has("#flash").await, "the welcome is shown once");
    browser.client.refresh().await.unwrap();
    assert_eq!(browser.text("#visits").await, "3");

    browser.click_and_wait("header nav button[type=submit]").await;
    assert_eq!(browser.path().await, "/login");
    assert_eq!(browser.text("#flash").await, "You are logged out.");
    assert!(browser.cookie("__Host-id").await.is_none(), "the cookie is gone");
    assert_page_is_clean(&browser, "login after logout").await;

    // Back to the profile: the browser must ask again, and is refused.
    let marker = browser.mark_document().await;
    browser.client.back().await.unwrap();
    browser.wait_for_new_document(marker).await;
    assert_eq!(browser.path().await, "/login?next=%2Fprofile", "the back button shows no profile");
    assert!(!browser.has("#visits").await);
    assert!(!browser.client.source().await.unwrap().contains(&name), "nothing of the user is shown");
    assert_page_is_clean(&browser, "back after logout").await;

    browser.close().await;
    server.stop().await;
}

#[tokio::test]
async fn wrong_password_shows_the_error_and_keeps_the_user_name() {
    if !chromium::available() {
        return;
    }
    let (server, _dir) = server().await;
    server.browser().register(&unique_name("bob"), PASSWORD).await;
    let name = unique_name("bob");
    server.browser().register(&name, PASSWORD).await;
    let driver = Chromedriver::start().await;
    let browser = driver.chromium(DESKTOP).await;

    browser.open(&format!("{}/login", server.base)).await;
    log_in_here(&browser, &name, "not the password").await;
    assert_eq!(browser.path().await, "/login");
    assert_eq!(browser.text("#login-error").await, "Wrong user name or password.");
    assert_eq!(browser.find("#login-error").await.attr("role").await.unwrap().as_deref(), Some("alert"));
    assert_eq!(browser.find("#username").await.prop("value").await.unwrap().as_deref(), Some(name.as_str()));
    assert_eq!(browser.find("#password").await.prop("value").await.unwrap().as_deref(), Some(""));
    for field in ["#username", "#password"] {
        let described = browser.find(field).await.attr("aria-describedby").await.unwrap();
        assert_eq!(described.as_deref(), Some("login-error"), "{field} points at the error");
    }
    let focused = browser.eval("return document.activeElement.id;").await;
    assert_eq!(focused, "password", "the password field has the focus, ready to type again");
    assert_page_is_clean(&browser, "login error").await;
    browser.screenshot("login-error").await;

    // The right password then works, with the field as it was kept.
    browser.fill("#password", PASSWORD).await;
    browser.click_and_wait("form[action='/login'] button[type=submit]").await;
    assert_eq!(browser.path().await, "/profile");
    assert_eq!(browser.text("#flash").await, "Welcome back! You are logged in.");

    browser.close().await;
    server.stop().await;
}

#[tokio::test]
async fn login_with_next_goes_back_where_the_user_was() {
    if !chromium::available() {
        return;
    }
    let (server, _dir) = server().await;
    let name = unique_name("carol");
    server.browser().register(&name, PASSWORD).await;
    let driver = Chromedriver::start().await;
    let browser = driver.chromium(DESKTOP).await;

    browser.open(&format!("{}/profile", server.base)).await;
    assert_eq!(browser.path().await, "/login?next=%2Fprofile");
    assert_eq!(browser.text("#login-notice").await, "Please log in to see that page.");
    assert_page_is_clean(&browser, "login with next").await;
    log_in_here(&browser, &name, PASSWORD).await;
    assert_eq!(browser.path().await, "/profile");
    assert_eq!(browser.text("#username").await, name);

    // A `next` that leaves the site is dropped.
    browser.click_and_wait("header nav button[type=submit]").await;
    browser.open(&format!("{}/login?next=//example.invalid/", server.base)).await;
    assert!(!browser.has("input[name=next]").await);
    log_in_here(&browser, &name, PASSWORD).await;
    assert_eq!(browser.path().await, "/profile");

    browser.close().await;
    server.stop().await;
}

#[tokio::test]
async fn keyboard_only_registration_and_login_with_visible_focus() {
    if !chromium::available() {
        return;
    }
    let (server, _dir) = server().await;
    let driver = Chromedriver::start().await;
    let browser = driver.chromium(DESKTOP).await;
    let name = unique_name("dana");

    browser.open(&format!("{}/register", server.base)).await;
    // From the top of the page: the skip link comes first.
    browser.eval("document.activeElement.blur(); return null;").await;
    browser.client.active_element().await.unwrap().send_keys(&Key::Tab.to_string()).await.unwrap();
    assert_eq!(browser.eval("return document.activeElement.className;").await, "skip");
    assert_focus_is_visible(&browser, "skip link").await;
    browser.press(&Key::Enter.to_string()).await;
    assert_eq!(browser.eval("return location.hash;").await, "#main");

    // The user name field, then the password, its toggle, the optional
    // email address, then the button.
    browser.eval("document.getElementById('username').focus(); return null;").await;
    assert_focus_is_visible(&browser, "user name field").await;
    browser.press(&name).await;
    browser.press(&Key::Tab.to_string()).await;
    assert_eq!(browser.eval("return document.activeElement.id;").await, "password");
    browser.press(PASSWORD).await;
    browser.press(&Key::Tab.to_string()).await;
    assert_eq!(browser.eval("return document.activeElement.className;").await, "reveal");
    assert_focus_is_visible(&browser, "show-password button").await;
    browser.press(" ").await;
    assert_eq!(browser.find("#password").await.attr("type").await.unwrap().as_deref(), Some("text"));
    browser.press(&Key::Tab.to_string()).await;
    assert_eq!(browser.eval("return document.activeElement.id;").await, "email");
    assert_focus_is_visible(&browser, "email field").await;
    browser.press(&Key::Tab.to_string()).await;
    assert_eq!(browser.eval("return document.activeElement.type;").await, "submit");
    assert_focus_is_visible(&browser, "submit button").await;
    browser.screenshot("register-keyboard-focus").await;
    let marker = browser.mark_document().await;
    browser.press(&Key::Enter.to_string()).await;
    browser.wait_for_new_document(marker).await;
    assert_eq!(browser.path().await, "/profile");
    assert_eq!(browser.text("#username").await, name);
    assert_page_is_clean(&browser, "profile after keyboard registration").await;

    browser.close().await;
    server.stop().await;
}

/// The focused element shows an outline or a ring.
async fn assert_focus_is_visible(browser: &Chromium, what: &str) {
    let style = browser
        .eval(
            "const s = getComputedStyle(document.activeElement);
             return [s.outlineStyle, s.outlineWidth, s.boxShadow];",
        )
        .await;
    let visible = (style[0] != "none" && style[1] != "0px") || style[2] != "none";
    assert!(visible, "{what}: no visible focus: {style}");
}

#[tokio::test]
async fn show_password_toggle_and_forms_without_javascript() {
    if !chromium::available() {
        return;
    }
    let (server, _dir) = server().await;
    let driver = Chromedriver::start().await;

    let browser = driver.chromium(DESKTOP).await;
    browser.open(&format!("{}/login", server.base)).await;
    let toggle = browser.find("button.reveal").await;
    assert_eq!(toggle.attr("aria-controls").await.unwrap().as_deref(), Some("password"));
    assert_eq!(toggle.attr("aria-pressed").await.unwrap().as_deref(), Some("false"));
    browser.fill("#password", "secret words").await;
    toggle.click().await.unwrap();
    assert_eq!(browser.find("#password").await.attr("type").await.unwrap().as_deref(), Some("text"));
    assert_eq!(toggle.attr("aria-pressed").await.unwrap().as_deref(), Some("true"));
    assert_eq!(toggle.text().await.unwrap(), "Hide");
    browser.screenshot("login-password-shown").await;
    toggle.click().await.unwrap();
    assert_eq!(browser.find("#password").await.attr("type").await.unwrap().as_deref(), Some("password"));
    // `webauthn`: the browser also offers passkeys in the name's autofill.
    for (field, autocomplete) in [("#username", "username webauthn"), ("#password", "current-password")] {
        let value = browser.find(field).await.attr("autocomplete").await.unwrap();
        assert_eq!(value.as_deref(), Some(autocomplete), "login {field}");
    }
    browser.open(&format!("{}/register", server.base)).await;
    for (field, autocomplete) in [("#username", "username"), ("#password", "new-password")] {
        let value = browser.find(field).await.attr("autocomplete").await.unwrap();
        assert_eq!(value.as_deref(), Some(autocomplete), "register {field}");
    }
    // Shown as text, the password still goes out as a password field.
    browser.fill("#username", &unique_name("erin")).await;
    browser.fill("#password", PASSWORD).await;
    browser.find("button.reveal").await.click().await.unwrap();
    browser.click_and_wait("form[action='/register'] button[type=submit]").await;
    assert_eq!(browser.path().await, "/profile");
    assert_page_is_clean(&browser, "profile after toggled registration").await;
    browser.close().await;

    // Without JavaScript there is no toggle, and everything still works.
    let plain = driver.chromium_without_javascript(DESKTOP).await;
    let name = unique_name("frank");
    register(&plain, &server.base, &name, PASSWORD).await;
    assert_eq!(plain.path().await, "/profile");
    assert_eq!(plain.text("#username").await, name);
    plain.click_and_wait("header nav button[type=submit]").await;
    assert_eq!(plain.text("#flash").await, "You are logged out.");
    assert!(!plain.has("button.reveal").await, "no toggle without JavaScript");
    plain.screenshot("login-without-javascript").await;
    log_in_here(&plain, &name, PASSWORD).await;
    assert_eq!(plain.path().await, "/profile");
    plain.close().await;

    server.stop().await;
}

#[tokio::test]
async fn registration_errors_are_announced_next_to_their_fields() {
    if !chromium::available() {
        return;
    }
    let (server, _dir) = server().await;
    let taken = unique_name("gina");
    server.browser().register(&taken, PASSWORD).await;
    let driver = Chromedriver::start().await;
    let browser = driver.chromium(DESKTOP).await;

    register(&browser, &server.base, &unique_name("hank"), "short").await;
    assert_eq!(browser.path().await, "/register");
    assert!(browser.has("#form-error[role=alert]").await, "the form says something is wrong");
    let password = browser.find("#password").await;
    assert_eq!(password.attr("aria-invalid").await.unwrap().as_deref(), Some("true"));
    let described = password.attr("aria-describedby").await.unwrap().unwrap();
    assert!(described.split(' ').any(|id| id == "password-error"), "{described}");
    assert!(!browser.text("#password-error").await.is_empty());
    assert_eq!(browser.eval("return document.activeElement.id;").await, "password", "focus on the field to fix");
    assert_page_is_clean(&browser, "register password error").await;
    browser.screenshot("register-error").await;

    register(&browser, &server.base, &taken, PASSWORD).await;
    let username = browser.find("#username").await;
    assert_eq!(username.attr("aria-invalid").await.unwrap().as_deref(), Some("true"));
    let described = username.attr("aria-describedby").await.unwrap().unwrap();
    assert!(described.split(' ').any(|id| id == "username-error"), "{described}");
    assert_eq!(username.prop("value").await.unwrap().as_deref(), Some(taken.as_str()), "the name is kept");
    assert_page_is_clean(&browser, "register name taken").await;

    browser.close().await;
    server.stop().await;
}

#[tokio::test]
async fn every_page_is_clean_and_screenshotted_on_desktop_phone_and_dark() {
    if !chromium::available() {
        return;
    }
    let (server, _dir) = server().await;
    let name = unique_name("ivy");
    server.browser().register(&name, PASSWORD).await;
    let driver = Chromedriver::start().await;
    let base = &server.base;

    for (scheme, size, suffix) in [("light", DESKTOP, "desktop"), ("light", PHONE, "phone"), ("dark", DESKTOP, "dark")]
    {
        let browser = driver.chromium(size).await;
        browser.prefer_color_scheme(scheme).await;
        let dark = browser.eval("return matchMedia('(prefers-color-scheme: dark)').matches;").await;
        assert_eq!(dark, json!(scheme == "dark"));

        for (page, path) in [("home", "/"), ("register", "/register"), ("login", "/login")] {
            browser.open(&format!("{base}{path}")).await;
            assert_page_is_clean(&browser, page).await;
            browser.screenshot(&format!("{page}-{suffix}")).await;
        }
        browser.open(&format!("{base}/nowhere")).await;
        assert_eq!(browser.text("h1").await, "Page not found");
        assert!(browser.has("a.button[href='/']").await, "the 404 page helps on");
        assert_page_is_clean(&browser, "404").await;
        browser.screenshot(&format!("404-{suffix}")).await;
        browser.open(&format!("{base}/__test/panic")).await;
        assert_eq!(browser.text("h1").await, "Something went wrong");
        assert_eq!(browser.find("#retry").await.attr("href").await.unwrap().as_deref(), Some("/__test/panic"));
        assert_page_is_clean(&browser, "500").await;
        browser.screenshot(&format!("500-{suffix}")).await;

        browser.open(&format!("{base}/login")).await;
        log_in_here(&browser, &name, PASSWORD).await;
        assert_eq!(browser.path().await, "/profile");
        assert_page_is_clean(&browser, "profile").await;
        browser.screenshot(&format!("profile-{suffix}")).await;
        browser.open(&format!("{base}/")).await;
        assert_page_is_clean(&browser, "home logged in").await;
        browser.screenshot(&format!("home-logged-in-{suffix}")).await;
        browser.close().await;
    }
    server.stop().await;
}

#[tokio::test]
async fn device_list_and_revoking_another_browser() {
    if !chromium::available() {
        return;
    }
    let (server, _dir) = server().await;
    let driver = Chromedriver::start().await;
    let laptop = driver.chromium(DESKTOP).await;
    let phone = driver.chromium(PHONE).await;
    let name = unique_name("devices");

    register(&laptop, &server.base, &name, PASSWORD).await;
    phone.open(&format!("{}/login", server.base)).await;
    log_in_here(&phone, &name, PASSWORD).await;
    assert_eq!(phone.path().await, "/profile");

    laptop.open(&format!("{}/account/sessions", server.base)).await;
    let handles =
        laptop.eval("return [...document.querySelectorAll('[data-session-id]')].map(e => e.dataset.sessionId);").await;
    let handles = handles.as_array().unwrap().clone();
    assert_eq!(handles.len(), 2, "two devices: {handles:?}");
    let own_cookie = laptop.cookie("__Host-id").await.unwrap().value().to_owned();
    assert!(handles.iter().all(|h| h.as_str() != Some(own_cookie.as_str())), "handles are not session IDs");
    assert!(laptop.text(".session.current").await.contains("This device"));
    assert_page_is_clean(&laptop, "device list").await;
    laptop.screenshot("account-sessions-desktop").await;

    // Sign the phone out from the laptop.
    laptop.click_and_wait(".session:not(.current) form button[type=submit]").await;
    assert_eq!(laptop.path().await, "/account/sessions");
    assert!(laptop.text("#flash").await.contains("signed out"));
    assert_eq!(
        laptop.eval("return document.querySelectorAll('[data-session-id]').length;").await,
        json!(1),
        "one device left"
    );
    phone.open(&format!("{}/profile", server.base)).await;
    assert_eq!(phone.path().await, "/login?next=%2Fprofile", "the phone was signed out");
    laptop.open(&format!("{}/profile", server.base)).await;
    assert_eq!(laptop.path().await, "/profile", "the laptop was not");

    laptop.close().await;
    phone.close().await;
    server.stop().await;
}

/// The protocol the current page was fetched with (`h2`, `http/1.1`).
async fn page_protocol(browser: &Chromium) -> String {
    let protocol = browser.eval("return performance.getEntriesByType('navigation')[0].nextHopProtocol;").await;
    protocol.as_str().unwrap_or_default().to_owned()
}

/// Registers, logs out and logs in again through the forms at `base`,
/// checking that every form post is accepted (no 403 from the Origin check).
async fn register_logout_login(browser: &Chromium, base: &str, name: &str) {
    register(browser, base, name, PASSWORD).await;
    let body = browser.client.source().await.unwrap();
    assert_eq!(browser.path().await, "/profile", "registration went through: {body:.600}");
    assert_eq!(browser.text("#username").await, name);
    browser.click_and_wait("header nav button[type=submit]").await;
    assert_eq!(browser.path().await, "/login", "logout went through");
    log_in_here(browser, name, PASSWORD).await;
    assert_eq!(browser.path().await, "/profile", "login went through");
    assert_eq!(browser.text("#username").await, name);
}

/// Issue #14 item 9: with `--tls-cert`, Chromium speaks HTTP/2, whose
/// requests carry `:authority` and no `Host`; registering, logging out and
/// logging in must all pass the Origin check.
#[tokio::test]
async fn login_over_builtin_tls_with_http2() {
    use std::os::unix::fs::PermissionsExt;
    if !chromium::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let tls = tessera_server::tls::server_config(&cert, &key).unwrap();
    let clock = ManualClock::new();
    let mut config = test_config(dir.path(), &clock);
    config.hsts = true;
    let app = tessera_server::App::build(config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("https://localhost:{}", listener.local_addr().unwrap().port());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.serve_tls(listener, tls, async {
        let _ = stopped.await;
    }));

    let driver = Chromedriver::start().await;
    let browser = driver.chromium_with_flags(DESKTOP, &["--ignore-certificate-errors"]).await;
    browser.open(&format!("{base}/login")).await;
    assert_eq!(page_protocol(&browser).await, "h2", "Chromium negotiated HTTP/2");
    register_logout_login(&browser, &base, &unique_name("h2")).await;
    assert_eq!(page_protocol(&browser).await, "h2");
    browser.close().await;
    let _ = stop.send(());
    let _ = server.await;
}

/// Issue #14 item 9: behind nginx with nothing but `proxy_pass` (so tessera
/// sees `Host: 127.0.0.1:<its port>` and no `X-Forwarded-*`), forms work
/// when `server.public_url` names the address browsers use.
#[tokio::test]
async fn login_behind_nginx_with_its_default_proxy_headers() {
    if !chromium::available() {
        return;
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tessera_port = listener.local_addr().unwrap().port();
    // Only `proxy_pass`: nginx then sends `Host: 127.0.0.1:<port>` and no
    // X-Forwarded-* headers. (`/` answers itself: the harness polls it
    // before tessera, which needs nginx's port for its public URL, runs.)
    let site = format!(
        "  server {{\n    listen 127.0.0.1:{{PORT}};\n    location = / {{ return 204; }}\n    \
         location / {{ proxy_pass http://127.0.0.1:{tessera_port}; }}\n  }}\n"
    );
    let Some(proxy) = harness::external::Proxy::nginx(&site, "browser login behind nginx").await else { return };
    let base = format!("http://localhost:{}", proxy.port);
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let mut config = test_config(dir.path(), &clock);
    config.public_url = Some(base.clone());
    let server = TestServer::start_on(config, clock, listener).await;

    let driver = Chromedriver::start().await;
    let browser = driver.chromium(DESKTOP).await;
    register_logout_login(&browser, &base, &unique_name("nginx")).await;
    let log = std::fs::read_to_string(proxy.dir.path().join("access.log")).unwrap();
    assert!(log.contains("POST /login"), "the requests went through nginx: {log}");
    browser.close().await;
    proxy.stop();
    server.stop().await;
}
