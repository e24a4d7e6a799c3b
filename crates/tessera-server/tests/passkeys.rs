//! Passkeys in a real headless Chromium with the WebDriver WebAuthn
//! virtual authenticator (a CTAP2 platform authenticator with resident
//! keys and user verification): add one on `/account/passkeys`, sign in
//! with it through the button and through the login form's autofill
//! (conditional UI), add a second, remove one; and the refusals.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`scripts/browser-deps.sh`);
//! without them the browser tests print `SKIPPED:`, or fail under
//! `TESSERA_REQUIRE_SERVICES` (CI).

mod chromium;
mod harness;

use chromium::{Chromedriver, Chromium, DESKTOP};
use harness::{test_config, unique_name, TestServer};
use serde_json::{json, Value};
use tessera::ManualClock;

const PASSWORD: &str = "correct horse battery";

async fn server() -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let server = TestServer::start(test_config(dir.path(), &clock), clock).await;
    (server, dir)
}

async fn register(browser: &Chromium, base: &str, name: &str) {
    browser.open(&format!("{base}/register")).await;
    browser.fill("#username", name).await;
    browser.fill("#password", PASSWORD).await;
    browser.click_and_wait("form[action='/register'] button[type=submit]").await;
    assert_eq!(browser.path().await, "/profile");
}

/// Adds a passkey named `name` on `/account/passkeys` (already shown).
async fn add_passkey(browser: &Chromium, name: &str) {
    browser.fill("#passkey-name", name).await;
    let marker = browser.mark_document().await;
    browser.find("#passkey-add-button").await.click().await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let state = browser
            .eval(
                "return [window.__tesseraMarker || '', document.readyState,                  (document.getElementById('passkey-add-error') || {}).textContent || ''];",
            )
            .await;
        if state[0] != json!(marker) && state[1] == json!("complete") {
            break;
        }
        assert_eq!(state[2], json!(""), "adding {name} failed");
        assert!(std::time::Instant::now() < deadline, "adding {name}: no answer");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(browser.path().await, "/account/passkeys");
}

async fn log_out(browser: &Chromium) {
    browser.click_and_wait("header nav button[type=submit]").await;
    assert_eq!(browser.path().await, "/login");
}

/// The names listed on `/account/passkeys`.
async fn listed(browser: &Chromium) -> Value {
    browser.eval("return [...document.querySelectorAll('#passkey-list .passkey-name')].map(e => e.textContent);").await
}

/// Waits until the page's path is `path` (a script navigates on its own).
async fn wait_for_path(browser: &Chromium, path: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        if browser.path().await == path {
            let state = browser.eval("return document.readyState;").await;
            if state == json!("complete") {
                return;
            }
        }
        assert!(std::time::Instant::now() < deadline, "never reached {path}; at {}", browser.path().await);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Makes this browser one without conditional UI (autofill), as older
/// ones are: the virtual authenticator answers a conditional request at
/// once, so a test of the button must switch it off. Returns the script's
/// ID for [`with_autofill`].
async fn without_autofill(browser: &Chromium) -> Value {
    let script = "if (window.PublicKeyCredential) \
                  PublicKeyCredential.isConditionalMediationAvailable = () => Promise.resolve(false);";
    let added = browser.devtools("Page.addScriptToEvaluateOnNewDocument", json!({ "source": script })).await;
    added["identifier"].clone()
}

async fn with_autofill(browser: &Chromium, script: Value) {
    browser.devtools("Page.removeScriptToEvaluateOnNewDocument", json!({ "identifier": script })).await;
}

/// The audit kinds of `user`'s trail, oldest first.
async fn trail(server: &TestServer, name: &str) -> Vec<String> {
    use tessera_auth::UserDirectory;
    let user = server.app_state.db.users().user_by_name(name).await.unwrap().expect("the user exists");
    let mut events = server.app_state.db.audit_events(user.id, 100).await.unwrap();
    events.reverse();
    events.into_iter().map(|e| e.kind).collect()
}

#[tokio::test]
async fn add_a_passkey_then_sign_in_with_the_button_and_with_autofill_add_another_remove_one() {
    if !chromium::available() {
        return;
    }
    let (server, _dir) = server().await;
    let driver = Chromedriver::start().await;
    let browser = driver.chromium(DESKTOP).await;
    let laptop = browser.add_virtual_authenticator().await;
    let name = unique_name("pat");

    register(&browser, &server.base, &name).await;
    browser.open(&format!("{}/account", server.base)).await;
    browser.click_and_wait("a[href='/account/passkeys']").await;
    assert!(browser.has("#no-passkeys").await);
    assert!(!browser.has("#passkey-password").await, "just signed in: no password asked");
    add_passkey(&browser, "Laptop").await;
    assert_eq!(listed(&browser).await, json!(["Laptop"]));
    let credentials = browser.virtual_credentials(&laptop).await;
    assert_eq!(credentials.len(), 1, "{credentials:?}");
    assert_eq!(credentials[0]["isResidentCredential"], json!(true), "a discoverable credential");
    assert_eq!(credentials[0]["rpId"], json!("localhost"));
    let row = browser.text("#passkey-list li").await;
    assert!(row.contains("never used"), "{row}");
    assert!(trail(&server, &name).await.contains(&"passkey_added".to_owned()));

    // The button, no user name typed, in a browser without autofill.
    let script = without_autofill(&browser).await;
    log_out(&browser).await;
    let autocomplete = browser.find("#username").await.attr("autocomplete").await.unwrap();
    assert_eq!(autocomplete.as_deref(), Some("username webauthn"));
    assert_eq!(browser.find("#passkey-button").await.text().await.unwrap(), "Sign in with a passkey");
    browser.click_and_wait("#passkey-button").await;
    wait_for_path(&browser, "/profile").await;
    assert_eq!(browser.text("#username").await, name);
    assert!(browser.text("#flash").await.contains("logged in") || browser.has("#flash").await);
    let sessions = browser.cookie("__Host-id").await.expect("a session cookie");
    assert_eq!(sessions.http_only(), Some(true));

    // The login form's autofill (conditional UI): the browser offers the
    // passkey as soon as the form shows; the virtual authenticator takes it.
    with_autofill(&browser, script).await;
    browser.click_and_wait("header nav button[type=submit]").await;
    wait_for_path(&browser, "/profile").await;
    assert_eq!(browser.text("#username").await, name);
    let kinds = trail(&server, &name).await;
    assert_eq!(kinds.iter().filter(|k| *k == "passkey_used").count(), 2, "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| *k == "login_succeeded").count(), 2, "{kinds:?}");

    // A second passkey, on another authenticator (the first one holds a
    // credential for this account already, and the browser would refuse).
    browser.webdriver(reqwest::Method::DELETE, &format!("webauthn/authenticator/{laptop}"), None).await;
    let phone = browser.add_virtual_authenticator().await;
    browser.open(&format!("{}/account/passkeys", server.base)).await;
    let used = browser.text("#passkey-list li").await;
    assert!(used.contains("last used"), "{used}");
    server.clock.advance(std::time::Duration::from_secs(60));
    add_passkey(&browser, "Phone").await;
    assert_eq!(listed(&browser).await, json!(["Laptop", "Phone"]));
    assert_eq!(browser.virtual_credentials(&phone).await.len(), 1);

    // Removing needs a recent sign-in: ten minutes later, the password.
    server.clock.advance(std::time::Duration::from_secs(11 * 60));
    browser.open(&format!("{}/account/passkeys", server.base)).await;
    let field = browser.find("#passkey-list li:first-child input[name=current_password]").await;
    assert_eq!(field.attr("autocomplete").await.unwrap().as_deref(), Some("current-password"));
    browser.fill("#passkey-list li:first-child input[name=current_password]", PASSWORD).await;
    browser.click_and_wait("#passkey-list li:first-child form[action='/account/passkeys/remove'] button[type=submit]").await;
    assert_eq!(browser.text("#flash").await, "Passkey removed.");
    assert_eq!(listed(&browser).await, json!(["Phone"]));
    assert!(trail(&server, &name).await.contains(&"passkey_removed".to_owned()));

    // Renamed, and still signs in.
    browser.fill("#passkey-list li input[name=name]", "My phone").await;
    browser.click_and_wait("#passkey-list li form[action='/account/passkeys/rename'] button[type=submit]").await;
    assert_eq!(listed(&browser).await, json!(["My phone"]));
    let script = without_autofill(&browser).await;
    log_out(&browser).await;
    browser.click_and_wait("#passkey-button").await;
    wait_for_path(&browser, "/profile").await;
    with_autofill(&browser, script).await;

    browser.close().await;
    server.stop().await;
}
