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
mod services;

use chromium::{Chromedriver, Chromium, DESKTOP};
use harness::burst::forms_at_once;
use harness::{test_config, unique_name, Browser, Page, TestServer};
use serde_json::{json, Value};
use tessera::ManualClock;

const PASSWORD: &str = "correct horse battery";

async fn server() -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let server = TestServer::start(test_config(dir.path(), &clock), clock).await;
    (server, dir)
}

/// Registers `name` with [`PASSWORD`]: signed in, on the profile.
async fn register(browser: &Chromium, base: &str, name: &str) {
    chromium::register(browser, base, name, PASSWORD).await;
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

/// Every field labelled, every `aria-describedby` pointing at something,
/// and nothing in the console blocked by the CSP or failing.
async fn assert_accessible_and_clean(browser: &Chromium, page: &str) {
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
    let unnamed = browser
        .eval("return [...document.querySelectorAll('button')].filter(b => !(b.getAttribute('aria-label') || b.textContent.trim())).length;")
        .await;
    assert_eq!(unnamed, json!(0), "{page}: buttons without a name");
    for entry in browser.console().await {
        assert!(!entry.message.contains("Content Security Policy"), "{page}: blocked by the CSP: {entry:?}");
        let own_status = entry.message.contains("the server responded with a status of");
        assert!(entry.level != "SEVERE" || own_status, "{page}: console error: {entry:?}");
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
    assert_accessible_and_clean(&browser, "/account/passkeys").await;
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
    assert_accessible_and_clean(&browser, "/login with passkeys").await;
    // Keyboard: the button is reachable and works with Enter.
    browser.eval("document.getElementById('passkey-button').focus(); return null;").await;
    let focused = browser.eval("return document.activeElement.id;").await;
    assert_eq!(focused, json!("passkey-button"));
    let marker = browser.mark_document().await;
    browser.press(&fantoccini::key::Key::Enter.to_string()).await;
    browser.wait_for_new_document(marker).await;
    wait_for_path(&browser, "/profile").await;
    assert_eq!(browser.text("#username").await, name);
    assert_eq!(browser.text("#flash").await, "Welcome back! You are logged in.");
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
    browser
        .click_and_wait("#passkey-list li:first-child form[action='/account/passkeys/remove'] button[type=submit]")
        .await;
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

/// A software authenticator (webauthn-rs's soft passkey, which signs real
/// assertions with a P-256 key it made). It keeps no resident credentials,
/// so the test plays that part: it remembers the user handle the options
/// carried and the credential ID, and fills them in at sign-in as a
/// platform authenticator with a discoverable credential would.
struct SoftAuthenticator {
    inner: webauthn_authenticator_rs::WebauthnAuthenticator<webauthn_authenticator_rs::softpasskey::SoftPasskey>,
    user_handle: Vec<u8>,
    credential_id: Vec<u8>,
}

impl SoftAuthenticator {
    fn new() -> Self {
        // `true`: it sets the user-verified flag (a PIN or biometric).
        let inner = webauthn_authenticator_rs::WebauthnAuthenticator::new(
            webauthn_authenticator_rs::softpasskey::SoftPasskey::new(true),
        );
        SoftAuthenticator { inner, user_handle: vec![], credential_id: vec![] }
    }

    /// The JSON of a new credential for the server's creation `options`.
    fn register(&mut self, origin: &str, options: &Value) -> Value {
        let mut options: webauthn_rs_proto::CreationChallengeResponse =
            serde_json::from_value(options.clone()).expect("creation options parse");
        let selection = options.public_key.authenticator_selection.as_mut().expect("selection criteria");
        assert!(selection.require_resident_key, "the server asks for a discoverable credential");
        assert_eq!(selection.user_verification, webauthn_rs_proto::UserVerificationPolicy::Required);
        selection.require_resident_key = false;
        selection.resident_key = None;
        self.user_handle = options.public_key.user.id.to_vec();
        let credential =
            self.inner.do_registration(url::Url::parse(origin).unwrap(), options).expect("the soft passkey registers");
        self.credential_id = credential.raw_id.to_vec();
        serde_json::to_value(credential).unwrap()
    }

    /// The JSON of an assertion for the server's request `options`, as if
    /// made on `origin`.
    fn sign(&mut self, origin: &str, options: &Value) -> Value {
        let mut options: webauthn_rs_proto::RequestChallengeResponse =
            serde_json::from_value(options.clone()).expect("request options parse");
        options.public_key.allow_credentials = vec![webauthn_rs_proto::AllowCredentials {
            type_: "public-key".into(),
            id: self.credential_id.clone().into(),
            transports: None,
        }];
        options.mediation = None;
        let mut credential =
            self.inner.do_authentication(url::Url::parse(origin).unwrap(), options).expect("the soft passkey signs");
        credential.response.user_handle = Some(self.user_handle.clone().into());
        serde_json::to_value(credential).unwrap()
    }
}

/// A JSON API caller.
struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    fn new(base: &str) -> Self {
        Api { base: base.to_owned(), http: reqwest::Client::new() }
    }

    async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        let mut request = self.http.post(format!("{}{path}", self.base)).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// Signs up `name` and answers an access token.
    async fn sign_up(&self, name: &str) -> String {
        let (status, body) = self.post("/api/signup", None, json!({"username": name, "password": PASSWORD})).await;
        assert_eq!(status, 201, "{body}");
        let (status, body) = self.post("/api/signin", None, json!({"username": name, "password": PASSWORD})).await;
        assert_eq!(status, 200, "{body}");
        body["access_token"].as_str().unwrap().to_owned()
    }

    /// Begins a registration on the account of `token` with `begin` (the
    /// password, or a passkey confirmation) and has `soft` make the
    /// credential: the body for `/api/passkeys/register/finish`.
    async fn registration(&self, token: &str, begin: Value, soft: &mut SoftAuthenticator, name: &str) -> Value {
        let (status, begun) = self.post("/api/passkeys/register/begin", Some(token), begin).await;
        assert_eq!(status, 200, "{begun}");
        let credential = soft.register(&self.base, &begun["options"]);
        json!({"ceremony": begun["ceremony"], "name": name, "credential": credential})
    }

    /// Adds a passkey made by `soft` to the account of `token`.
    async fn add_passkey(&self, token: &str, soft: &mut SoftAuthenticator, name: &str) -> Value {
        let body = self.registration(token, json!({"current_password": PASSWORD}), soft, name).await;
        let (status, added) = self.post("/api/passkeys/register/finish", Some(token), body).await;
        assert_eq!(status, 201, "{added}");
        added
    }

    /// Begins a sign-in: (ceremony, options).
    async fn begin(&self) -> (Value, Value) {
        let (status, begun) = self.post("/api/passkeys/signin/begin", None, json!({})).await;
        assert_eq!(status, 200, "{begun}");
        (begun["ceremony"].clone(), begun["options"].clone())
    }

    /// Begins a sign-in and has `soft` sign it as if made on `origin`:
    /// (ceremony, assertion).
    async fn signed_on(&self, soft: &mut SoftAuthenticator, origin: &str) -> (Value, Value) {
        let (ceremony, options) = self.begin().await;
        (ceremony, soft.sign(origin, &options))
    }

    /// Begins a sign-in and has `soft` sign it on this server.
    async fn signed(&self, soft: &mut SoftAuthenticator) -> (Value, Value) {
        self.signed_on(soft, &self.base).await
    }

    /// A fresh passkey confirmation by `soft`, as sensitive calls take it.
    async fn confirmation(&self, soft: &mut SoftAuthenticator) -> Value {
        let (ceremony, credential) = self.signed(soft).await;
        json!({"ceremony": ceremony, "credential": credential})
    }

    async fn finish(&self, ceremony: &Value, credential: &Value) -> (u16, Value) {
        self.post("/api/passkeys/signin/finish", None, json!({"ceremony": ceremony, "credential": credential})).await
    }
}

async fn api_server(ip_free_failures: u32, database_url: Option<String>) -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let mut config = test_config(dir.path(), &clock);
    config.throttle.ip_free_failures = ip_free_failures;
    if let Some(url) = database_url {
        config.database_url = url;
    }
    let server = TestServer::start(config, clock).await;
    (server, dir)
}

fn kind(problem: &Value) -> &str {
    problem["type"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn api_passkey_registration_and_sign_in_with_a_software_authenticator_and_every_refusal() {
    let (server, _dir) = api_server(1000, None).await;
    every_refusal(&server).await;
    server.stop().await;
}

/// The same on PostgreSQL: the conditional counter update and the
/// ceremonies' `DELETE … RETURNING` in its dialect.
#[tokio::test]
async fn api_passkeys_with_users_in_postgres() {
    if !services::reachable("PostgreSQL", "127.0.0.1:5432") {
        return;
    }
    let (server, _dir) = api_server(1000, Some(services::postgres_url())).await;
    every_refusal(&server).await;
    server.stop().await;
}

async fn every_refusal(server: &TestServer) {
    let api = Api::new(&server.base);
    let name = unique_name("app");
    let token = api.sign_up(&name).await;

    // Adding one needs the password of an account that has one.
    let (status, problem) = api.post("/api/passkeys/register/begin", Some(&token), json!({})).await;
    assert_eq!((status, kind(&problem)), (401, "/problems/invalid-credentials"), "{problem}");
    let (status, _) = api.post("/api/passkeys/register/begin", None, json!({})).await;
    assert_eq!(status, 401, "no token, no registration");
    let mut soft = SoftAuthenticator::new();
    let added = api.add_passkey(&token, &mut soft, "Soft key").await;
    assert_eq!(added["name"], json!("Soft key"));

    // A registration ceremony is used once.
    let mut second = SoftAuthenticator::new();
    let body = api.registration(&token, json!({"current_password": PASSWORD}), &mut second, "Second").await;
    assert_eq!(api.post("/api/passkeys/register/finish", Some(&token), body.clone()).await.0, 201);
    let (status, problem) = api.post("/api/passkeys/register/finish", Some(&token), body).await;
    assert_eq!((status, kind(&problem)), (400, "/problems/passkey-challenge-expired"), "{problem}");

    // Sign in: a token pair for the account.
    let (ceremony, assertion) = api.signed(&mut soft).await;
    let (status, pair) = api.finish(&ceremony, &assertion).await;
    assert_eq!(status, 200, "{pair}");
    let me: Value = api
        .http
        .get(format!("{}/api/me", server.base))
        .bearer_auth(pair["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["username"], json!(name));

    // Replayed: with the same ceremony (gone), and with a new one (another challenge).
    let (status, problem) = api.finish(&ceremony, &assertion).await;
    assert_eq!((status, kind(&problem)), (400, "/problems/passkey-challenge-expired"), "{problem}");
    let (fresh, _) = api.begin().await;
    let (status, problem) = api.finish(&fresh, &assertion).await;
    assert_eq!((status, kind(&problem)), (401, "/problems/passkey-invalid"), "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("another challenge"), "{problem}");

    // A challenge of another ceremony.
    let (first, signed) = api.signed(&mut soft).await;
    let (other, _) = api.begin().await;
    let (status, problem) = api.finish(&other, &signed).await;
    assert_eq!((status, kind(&problem)), (401, "/problems/passkey-invalid"), "{problem}");
    let _ = first;

    // Made on another origin (a phishing site).
    let (ceremony, phished) = api.signed_on(&mut soft, "https://tessera.localhost").await;
    let (status, problem) = api.finish(&ceremony, &phished).await;
    assert_eq!((status, kind(&problem)), (401, "/problems/passkey-invalid"), "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("another origin"), "{problem}");

    // Expired: six minutes later.
    let (ceremony, late) = api.signed(&mut soft).await;
    server.clock.advance(std::time::Duration::from_secs(6 * 60));
    let (status, problem) = api.finish(&ceremony, &late).await;
    assert_eq!((status, kind(&problem)), (400, "/problems/passkey-challenge-expired"), "{problem}");

    // Another user's credential, claimed for this account's user handle.
    let other_name = unique_name("other");
    let other_token = api.sign_up(&other_name).await;
    let mut others = SoftAuthenticator::new();
    api.add_passkey(&other_token, &mut others, "Theirs").await;
    others.user_handle = soft.user_handle.clone();
    let (ceremony, borrowed) = api.signed(&mut others).await;
    let (status, problem) = api.finish(&ceremony, &borrowed).await;
    assert_eq!((status, kind(&problem)), (401, "/problems/passkey-wrong-user"), "{problem}");

    // A signature counter that goes backwards: a cloned authenticator.
    let (early, older) = api.signed(&mut soft).await;
    let (later, newer) = api.signed(&mut soft).await;
    assert_eq!(api.finish(&later, &newer).await.0, 200);
    let (status, problem) = api.finish(&early, &older).await;
    assert_eq!((status, kind(&problem)), (401, "/problems/passkey-cloned"), "{problem}");
    assert!(trail(server, &name).await.contains(&"passkey_cloned".to_owned()));

    // Not registered (any more).
    let passkeys = server.app_state.auth.passkeys().unwrap();
    use tessera_auth::UserDirectory;
    let other_user = server.app_state.db.users().user_by_name(&other_name).await.unwrap().unwrap();
    let theirs = passkeys.list(other_user.id).await.unwrap();
    assert!(passkeys.remove(other_user.id, &theirs[0].id).await.unwrap());
    others.user_handle = passkeys
        .user_handle(other_user.id)
        .await
        .unwrap()
        .map(|h| {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(h).unwrap()
        })
        .unwrap();
    let (ceremony, gone) = api.signed(&mut others).await;
    let (status, problem) = api.finish(&ceremony, &gone).await;
    assert_eq!((status, kind(&problem)), (401, "/problems/passkey-unknown"), "{problem}");

    // Malformed: base64 that is not, CBOR that is not, JSON that is not.
    let (ceremony, options) = api.begin().await;
    let mut broken = soft.sign(&server.base, &options);
    broken["response"]["signature"] = json!("!!not base64!!");
    let (status, problem) = api.finish(&ceremony, &broken).await;
    assert_eq!((status, kind(&problem)), (422, "/problems/validation"), "{problem}");
    let mut garbage = soft.sign(&server.base, &options);
    garbage["response"]["authenticatorData"] = json!("AAECAwQF");
    let (status, problem) = api.finish(&ceremony, &garbage).await;
    assert_eq!((status, kind(&problem)), (401, "/problems/passkey-invalid"), "{problem}");
    let response = api
        .http
        .post(format!("{}/api/passkeys/signin/finish", server.base))
        .header("content-type", "application/json")
        .body("{\"ceremony\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);

    // No user verification: refused at registration.
    let (status, begun) =
        api.post("/api/passkeys/register/begin", Some(&token), json!({"current_password": PASSWORD})).await;
    assert_eq!(status, 200);
    let mut no_pin = SoftAuthenticator {
        inner: webauthn_authenticator_rs::WebauthnAuthenticator::new(
            webauthn_authenticator_rs::softpasskey::SoftPasskey::new(false),
        ),
        user_handle: vec![],
        credential_id: vec![],
    };
    let mut options = begun["options"].clone();
    options["publicKey"]["authenticatorSelection"]["userVerification"] = json!("discouraged");
    let mut relaxed: webauthn_rs_proto::CreationChallengeResponse = serde_json::from_value(options).unwrap();
    relaxed.public_key.authenticator_selection.as_mut().unwrap().require_resident_key = false;
    relaxed.public_key.authenticator_selection.as_mut().unwrap().resident_key = None;
    let credential = no_pin.inner.do_registration(url::Url::parse(&server.base).unwrap(), relaxed).unwrap();
    let body = json!({"ceremony": begun["ceremony"], "name": "No PIN", "credential": credential});
    let (status, problem) = api.post("/api/passkeys/register/finish", Some(&token), body).await;
    assert_eq!((status, kind(&problem)), (401, "/problems/passkey-invalid"), "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("verify the user"), "{problem}");

    // Every refusal above was audited, none was a server error.
    let kinds = trail(server, &name).await;
    assert_eq!(kinds.iter().filter(|k| *k == "passkey_added").count(), 2, "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| *k == "passkey_used").count(), 2, "{kinds:?}");
}

#[tokio::test]
async fn failed_passkey_sign_ins_count_on_the_address_throttle() {
    let (server, _dir) = api_server(3, None).await;
    let api = Api::new(&server.base);
    let token = api.sign_up(&unique_name("slow")).await;
    let mut soft = SoftAuthenticator::new();
    api.add_passkey(&token, &mut soft, "Key").await;
    let (ceremony, assertion) = api.signed(&mut soft).await;
    assert_eq!(api.finish(&ceremony, &assertion).await.0, 200);
    // Replays (no ceremony any more) and a made-up ceremony count too.
    let mut statuses = vec![];
    for attempt in 0..5 {
        let ceremony = if attempt == 0 { json!("made-up") } else { ceremony.clone() };
        statuses.push(api.finish(&ceremony, &assertion).await.0);
    }
    // Three free failures per address here; the third starts the block and
    // says so at once.
    assert_eq!(statuses, [400, 400, 429, 429, 429], "{statuses:?}");
    // Blocked: even a good assertion waits.
    let (ceremony, good) = api.signed(&mut soft).await;
    let (status, problem) = api.finish(&ceremony, &good).await;
    assert_eq!((status, kind(&problem)), (429, "/problems/throttled"), "{problem}");
    server.stop().await;
}

// ---- Passkey-only accounts, second factor, step-up, removal race -------

/// The `data-csrf` of the page's passkey panel (pages without a form).
fn data_csrf(page: &Page) -> String {
    let marker = "data-csrf=\"";
    let start = page.body.find(marker).expect("a passkey panel") + marker.len();
    let end = page.body[start..].find('"').unwrap() + start;
    page.body[start..end].to_owned()
}

/// A JSON POST of the passkey pages' script: `x-csrf-token` and JSON.
async fn web_post(browser: &mut Browser, path: &str, csrf: &str, body: Value) -> (u16, Value) {
    let pages = std::mem::replace(&mut browser.extra_headers, vec![("accept".into(), "application/json".into())]);
    let page = browser.post_json_with(path, &body, &[("x-csrf-token", csrf)]).await;
    browser.extra_headers = pages;
    (page.status, serde_json::from_str(&page.body).unwrap_or(Value::String(page.body.clone())))
}

/// Adds a passkey made by a new soft authenticator to `name`'s account
/// through the core (as `/account/passkeys` would): for accounts that
/// cannot reach that page yet (a server requiring a second factor).
async fn soft_passkey_for(server: &TestServer, name: &str) -> SoftAuthenticator {
    use tessera_auth::UserDirectory;
    let user = server.app_state.db.users().user_by_name(&name.to_lowercase()).await.unwrap().unwrap();
    let passkeys = server.app_state.auth.passkeys().unwrap();
    let (options, ceremony) = passkeys.begin_registration(&user).await.unwrap();
    let mut soft = SoftAuthenticator::new();
    let credential = soft.register(&server.base, &serde_json::to_value(options).unwrap());
    let credential = serde_json::from_value(credential).unwrap();
    passkeys.finish_registration(&user, &ceremony, &credential, "Soft").await.unwrap();
    soft
}

fn allowed_ids(options: &Value) -> Vec<String> {
    options["publicKey"]["allowCredentials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect()
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

async fn forward_auth_server(require_second_factor: bool) -> (TestServer, tempfile::TempDir) {
    use tessera_server::access_rules::{AccessRule, Policy};
    use tessera_server::client_ip::{parse_trusted_proxy, TrustedProxies};
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let mut config = test_config(dir.path(), &clock);
    config.require_second_factor = require_second_factor;
    config.throttle.ip_free_failures = 1000;
    config.trusted_proxies = TrustedProxies::new(vec![parse_trusted_proxy("127.0.0.1").unwrap()]);
    config.forward_auth.protected_hosts = vec!["mfa.test".into()];
    config.forward_auth.rules = vec![AccessRule {
        hosts: vec!["mfa.test".into()],
        paths: vec![],
        policy: Policy::TwoFactor,
        users: vec![],
        groups: vec![],
        email_domains: vec![],
    }];
    (TestServer::start(config, clock).await, dir)
}

/// What forward-auth answers this browser's session for a `two_factor` host.
async fn two_factor_rule(browser: &mut Browser) -> u16 {
    browser
        .get_with("/auth/verify", &[("x-original-url", "https://mfa.test/"), ("accept", "application/json")])
        .await
        .status
}

#[tokio::test]
async fn a_passkey_is_the_second_factor_of_a_password_account_and_another_users_is_refused() {
    // The server requires a second factor: accounts with a passkey are asked
    // for it instead of setting up an authenticator app.
    let (server, _dir) = forward_auth_server(true).await;
    let (alice, bob) = (unique_name("alice"), unique_name("bob"));
    for name in [&alice, &bob] {
        let status =
            Api::new(&server.base).post("/api/signup", None, json!({"username": name, "password": PASSWORD})).await.0;
        assert_eq!(status, 201);
    }
    let mut alices = soft_passkey_for(&server, &alice).await;
    let mut bobs = soft_passkey_for(&server, &bob).await;

    let mut browser = server.browser();
    let step = browser.login(&alice, PASSWORD).await;
    assert_eq!(step.location(), Some("/login/second-factor"), "the password alone is no login");
    let prompt = browser.get("/login/second-factor").await;
    assert!(prompt.body.contains("id=\"passkey-second-factor-button\""), "{}", prompt.body);
    assert!(!prompt.body.contains("id=\"totp-secret\""), "no app to set up: the passkey is the second factor");
    assert!(!prompt.body.contains("name=\"code\""), "no app: no code field");
    let csrf = data_csrf(&prompt);

    // The options list Alice's passkey only.
    let (status, options) = web_post(&mut browser, "/login/second-factor/passkey/begin", &csrf, json!({})).await;
    assert_eq!(status, 200, "{options}");
    assert_eq!(allowed_ids(&options), vec![b64(&alices.credential_id)]);
    // Bob's passkey for Alice's login: refused, counted, audited; nothing of Bob's changes.
    let borrowed = bobs.sign(&server.base, &options);
    let (status, problem) =
        web_post(&mut browser, "/login/second-factor/passkey/finish", &csrf, json!({"credential": borrowed})).await;
    assert_eq!((status, kind(&problem)), (401, "/problems/passkey-wrong-user"), "{problem}");
    assert!(trail(&server, &alice).await.contains(&"second_factor_failed".to_owned()));
    assert!(!trail(&server, &bob).await.contains(&"passkey_used".to_owned()));
    assert_eq!(browser.get("/profile").await.status, 303, "still not logged in");
    // The ceremony was used up by the refusal.
    let assertion = alices.sign(&server.base, &options);
    let (status, problem) =
        web_post(&mut browser, "/login/second-factor/passkey/finish", &csrf, json!({"credential": assertion})).await;
    assert_eq!((status, kind(&problem)), (400, "/problems/passkey-challenge-expired"), "{problem}");

    // Alice's own passkey completes the login.
    let (_, options) = web_post(&mut browser, "/login/second-factor/passkey/begin", &csrf, json!({})).await;
    let assertion = alices.sign(&server.base, &options);
    let (status, answer) =
        web_post(&mut browser, "/login/second-factor/passkey/finish", &csrf, json!({"credential": assertion})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["redirect"], json!("/profile"));
    let profile = browser.get("/profile").await;
    assert_eq!(profile.status, 200);
    assert!(profile.body.contains(&alice), "{}", profile.body);
    let kinds = trail(&server, &alice).await;
    assert!(kinds.contains(&"passkey_used".to_owned()) && kinds.contains(&"login_succeeded".to_owned()), "{kinds:?}");
    // Password and passkey: two factors, so a two_factor rule lets her in.
    assert_eq!(two_factor_rule(&mut browser).await, 200);

    // A passkey sign-in on its own is two factors: Bob, who has no app on
    // this server that requires a second factor, is logged in at once.
    let mut bobs_browser = web_passkey_sign_in(&server, &mut bobs).await;
    assert_eq!(bobs_browser.get("/profile").await.status, 200);
    assert_eq!(two_factor_rule(&mut bobs_browser).await, 200);

    // Without a pending login there is nothing to finish.
    let mut stranger = server.browser();
    let login = stranger.get("/login").await;
    let (status, _) = web_post(&mut stranger, "/login/second-factor/passkey/begin", &login.csrf(), json!({})).await;
    assert_eq!(status, 400);
    server.stop().await;
}

#[tokio::test]
async fn forward_auth_two_factor_rules_accept_a_passkey_sign_in_and_refuse_a_password_alone() {
    let (server, _dir) = forward_auth_server(false).await;
    let api = Api::new(&server.base);
    let name = unique_name("pia");
    let token = api.sign_up(&name).await;
    let mut soft = SoftAuthenticator::new();
    api.add_passkey(&token, &mut soft, "Key").await;

    // The password alone: one factor.
    let mut password = server.browser();
    assert_eq!(password.login(&name, PASSWORD).await.location(), Some("/profile"));
    assert_eq!(two_factor_rule(&mut password).await, 403);

    // A passkey sign-in on the login page: two factors in one.
    let mut browser = web_passkey_sign_in(&server, &mut soft).await;
    assert_eq!(two_factor_rule(&mut browser).await, 200);
    server.stop().await;
}

/// Begins a passkey sign-up of `name` through the API and has `soft` make
/// the credential as if on `origin`: the body for `/api/passkeys/signup/finish`.
async fn sign_up_ceremony(api: &Api, name: &str, soft: &mut SoftAuthenticator, origin: &str) -> Value {
    let (status, begun) = api.post("/api/passkeys/signup/begin", None, json!({"username": name})).await;
    assert_eq!(status, 200, "{begun}");
    let credential = soft.register(origin, &begun["options"]);
    json!({"ceremony": begun["ceremony"], "credential": credential})
}

/// A passkey-only account made through the API: (token, soft authenticator).
async fn passkey_only_account(api: &Api, base: &str, name: &str) -> (String, SoftAuthenticator) {
    let mut soft = SoftAuthenticator::new();
    let body = sign_up_ceremony(api, name, &mut soft, base).await;
    let (status, pair) = api.post("/api/passkeys/signup/finish", None, body).await;
    assert_eq!(status, 201, "{pair}");
    (pair["access_token"].as_str().unwrap().to_owned(), soft)
}

#[tokio::test]
async fn api_passkey_only_sign_up_with_a_software_authenticator() {
    let (server, _dir) = api_server(1000, None).await;
    let api = Api::new(&server.base);
    let name = unique_name("solo");
    let (token, mut soft) = passkey_only_account(&api, &server.base, &name).await;
    let me: Value =
        api.http.get(format!("{}/api/me", server.base)).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
    assert_eq!(me["username"], json!(name));
    use tessera_auth::UserDirectory;
    let user = server.app_state.db.users().user_by_name(&name.to_lowercase()).await.unwrap().unwrap();
    assert!(user.password_hash.is_none(), "no password");
    let listed = server.app_state.auth.passkeys().unwrap().list(user.id).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, "Passkey", "unnamed, and the soft authenticator's AAGUID is all zeros");
    let kinds = trail(&server, &name).await;
    assert!(kinds == ["sign_up", "passkey_added"], "{kinds:?}");

    // It signs in with its passkey.
    let (ceremony, assertion) = api.signed(&mut soft).await;
    assert_eq!(api.finish(&ceremony, &assertion).await.0, 200);

    // A password sign-in of the password-less account: the answer of a wrong password.
    let (status, refused) =
        api.post("/api/signin", None, json!({"username": name, "password": "no password at all"})).await;
    let other = unique_name("pw");
    api.sign_up(&other).await;
    let (wrong_status, wrong) =
        api.post("/api/signin", None, json!({"username": other, "password": "no password at all"})).await;
    assert_eq!((status, kind(&refused)), (wrong_status, kind(&wrong)), "{refused} vs {wrong}");
    assert_eq!(refused["detail"], wrong["detail"]);

    // Sensitive API calls take a passkey assertion instead of the password:
    // setting a password, then deleting the account.
    let (status, _) = api.post("/api/password", Some(&token), json!({"new_password": "a brand new passphrase"})).await;
    assert_eq!(status, 401, "no password to confirm with, and no passkey");
    let confirmation = api.confirmation(&mut soft).await;
    let body = json!({"new_password": "a brand new passphrase", "confirmation": confirmation});
    let (status, problem) = api.post("/api/password", Some(&token), body).await;
    assert_eq!(status, 204, "{problem}");
    let (status, pair) =
        api.post("/api/signin", None, json!({"username": name, "password": "a brand new passphrase"})).await;
    assert_eq!(status, 200, "{pair}");
    let token = pair["access_token"].as_str().unwrap().to_owned();
    let confirmation = api.confirmation(&mut soft).await;
    let deleted = api
        .http
        .delete(format!("{}/api/account", server.base))
        .bearer_auth(&token)
        .json(&json!({"confirmation": confirmation}))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status().as_u16(), 204);
    assert!(server.app_state.db.users().user_by_name(&name.to_lowercase()).await.unwrap().is_none());
    let (status, _) = api.post("/api/signup", None, json!({"username": name, "password": PASSWORD})).await;
    assert_eq!(status, 201, "the name is free again");

    // The name is taken now; a bad name is refused before any ceremony.
    let (status, problem) = api.post("/api/passkeys/signup/begin", None, json!({"username": name})).await;
    assert_eq!((status, kind(&problem)), (409, "/problems/username-taken"), "{problem}");
    let (status, _) = api.post("/api/passkeys/signup/begin", None, json!({"username": "a b"})).await;
    assert_eq!(status, 422);

    // A sign-up ceremony is used once; a credential for another origin is refused.
    let fresh = unique_name("solo");
    let mut phished = SoftAuthenticator::new();
    let body = sign_up_ceremony(&api, &fresh, &mut phished, "https://tessera.localhost").await;
    let (status, problem) = api.post("/api/passkeys/signup/finish", None, body.clone()).await;
    assert_eq!((status, kind(&problem)), (401, "/problems/passkey-invalid"), "{problem}");
    let (status, problem) = api.post("/api/passkeys/signup/finish", None, body).await;
    assert_eq!((status, kind(&problem)), (400, "/problems/passkey-challenge-expired"), "{problem}");
    assert!(server.app_state.db.users().user_by_name(&fresh.to_lowercase()).await.unwrap().is_none(), "no account");
    server.stop().await;
}

#[tokio::test]
async fn sixty_concurrent_removals_of_the_last_two_passkeys_leave_one() {
    let (server, _dir) = api_server(1000, None).await;
    removal_race(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn sixty_concurrent_removals_of_the_last_two_passkeys_leave_one_on_postgres() {
    if !services::reachable("PostgreSQL", "127.0.0.1:5432") {
        return;
    }
    let (server, _dir) = api_server(1000, Some(services::postgres_url())).await;
    removal_race(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn removing_the_last_passkey_and_unlinking_the_last_identity_at_once_leave_a_way_in() {
    let (server, _dir) = api_server(1000, None).await;
    last_two_ways_race(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn removing_the_last_passkey_and_unlinking_the_last_identity_at_once_on_postgres() {
    if !services::reachable("PostgreSQL", "127.0.0.1:5432") {
        return;
    }
    let (server, _dir) = api_server(1000, Some(services::postgres_url())).await;
    last_two_ways_race(&server).await;
    server.stop().await;
}

/// A passkey-only account with one identity linked too: 30 removals of the
/// passkey and 30 unlinks of the identity at once leave exactly one.
async fn last_two_ways_race(server: &TestServer) {
    use tessera_auth::UserDirectory;
    let api = Api::new(&server.base);
    let name = unique_name("twoways");
    let (_, mut soft) = passkey_only_account(&api, &server.base, &name).await;
    let user = server.app_state.db.users().user_by_name(&name.to_lowercase()).await.unwrap().unwrap();
    let identity = tessera_server::oidc::provider::VerifiedIdentity {
        issuer: "https://id.example.test".into(),
        subject: name.clone(),
        verified_email: None,
        preferred_username: None,
        any_email: None,
    };
    assert!(server.app_state.db.link_identity(user.id, &identity, tessera::Timestamp(0)).await.unwrap());
    let passkeys = server.app_state.auth.passkeys().unwrap();
    let id = passkeys.list(user.id).await.unwrap()[0].id.clone();

    let mut browser = web_passkey_sign_in(server, &mut soft).await;
    let csrf = browser.get("/account/passkeys").await.csrf();
    let forms = (0..60)
        .map(|i| -> (&str, Vec<(&str, String)>) {
            let csrf = csrf.clone();
            if i % 2 == 0 {
                ("/account/passkeys/remove", vec![("csrf_token", csrf), ("id", id.clone())])
            } else {
                (
                    "/account/identities/unlink",
                    vec![
                        ("csrf_token", csrf),
                        ("issuer", identity.issuer.clone()),
                        ("subject", identity.subject.clone()),
                    ],
                )
            }
        })
        .collect();
    let mut outcomes = std::collections::BTreeMap::<(&str, u16), usize>::new();
    for outcome in forms_at_once(&server.base, &browser, forms).await {
        *outcomes.entry(outcome).or_default() += 1;
    }
    let passkeys_left = passkeys.count(user.id).await.unwrap();
    let identities_left = server.app_state.db.identities_of(user.id).await.unwrap().len();
    assert_eq!(passkeys_left + identities_left as i64, 1, "exactly one way in is left: {outcomes:?}");
    assert!(outcomes.keys().all(|(_, status)| [303, 404, 409].contains(status)), "{outcomes:?}");
}

async fn removal_race(server: &TestServer) {
    use tessera_auth::UserDirectory;
    let api = Api::new(&server.base);
    let name = unique_name("race");
    let (token, mut soft) = passkey_only_account(&api, &server.base, &name).await;
    // Without a password, adding a passkey needs a fresh assertion of one:
    // the access token alone is not enough.
    let (status, problem) = api.post("/api/passkeys/register/begin", Some(&token), json!({})).await;
    assert_eq!(status, 403, "{problem}");
    let confirmation = api.confirmation(&mut soft).await;
    let mut second = SoftAuthenticator::new();
    let body = api.registration(&token, json!({"confirmation": confirmation}), &mut second, "Second").await;
    assert_eq!(api.post("/api/passkeys/register/finish", Some(&token), body).await.0, 201);
    let user = server.app_state.db.users().user_by_name(&name.to_lowercase()).await.unwrap().unwrap();
    let passkeys = server.app_state.auth.passkeys().unwrap();
    let ids: Vec<String> = passkeys.list(user.id).await.unwrap().into_iter().map(|p| p.id).collect();
    assert_eq!(ids.len(), 2);

    // A web session signed in with the first passkey just now (recent).
    let mut browser = web_passkey_sign_in(server, &mut soft).await;
    let page = browser.get("/account/passkeys").await;
    assert_eq!(page.status, 200);
    let csrf = page.csrf();

    let forms = (0..60)
        .map(|i| ("/account/passkeys/remove", vec![("csrf_token", csrf.clone()), ("id", ids[i % 2].clone())]))
        .collect();
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for (_, status) in forms_at_once(&server.base, &browser, forms).await {
        *statuses.entry(status).or_default() += 1;
    }
    assert_eq!(statuses.get(&303), Some(&1), "exactly one removal: {statuses:?}");
    assert!(statuses.keys().all(|s| [303, 404, 409].contains(s)), "only removed, gone or last: {statuses:?}");
    assert_eq!(passkeys.count(user.id).await.unwrap(), 1, "the last way in survives: {statuses:?}");
}

/// Replaces the Signal API with recorders before every page's scripts run
/// (a browser without it would skip the calls: progressive enhancement),
/// so a test can read what the page told the password manager.
async fn record_signals(browser: &Chromium) -> Value {
    let script = "window.__tesseraSignals = [];\
        if (window.PublicKeyCredential) {\
          PublicKeyCredential.signalAllAcceptedCredentials = function (o) {\
            window.__tesseraSignals.push({kind: 'all', rpId: o.rpId, userId: o.userId, ids: o.allAcceptedCredentialIds});\
            return Promise.resolve(); };\
          PublicKeyCredential.signalUnknownCredential = function (o) {\
            window.__tesseraSignals.push({kind: 'unknown', rpId: o.rpId, id: o.credentialId});\
            return Promise.resolve(); };\
        }";
    let added = browser.devtools("Page.addScriptToEvaluateOnNewDocument", json!({ "source": script })).await;
    added["identifier"].clone()
}

async fn signals(browser: &Chromium) -> Value {
    browser.eval("return window.__tesseraSignals || null;").await
}

/// Clicks a passkey button whose script reloads or navigates, and waits.
async fn click_and_wait_for_script(browser: &Chromium, button: &str, error_box: &str) {
    let marker = browser.mark_document().await;
    browser.find(button).await.click().await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let script = format!(
            "return [window.__tesseraMarker || '', document.readyState, \
             (document.querySelector('{error_box}') || {{}}).textContent || ''];"
        );
        let state = browser.eval(&script).await;
        if state[0] != json!(marker) && state[1] == json!("complete") {
            return;
        }
        assert_eq!(state[2], json!(""), "{button} failed");
        assert!(std::time::Instant::now() < deadline, "{button}: no answer");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn passkey_only_sign_up_sign_in_step_up_signals_and_deletion_in_chromium() {
    if !chromium::available() {
        return;
    }
    let (server, _dir) = server().await;
    let driver = Chromedriver::start().await;
    let browser = driver.chromium(DESKTOP).await;
    let laptop = browser.add_virtual_authenticator().await;
    let name = unique_name("solo");

    // Sign up with a user name and a passkey: no password typed.
    browser.open(&format!("{}/register", server.base)).await;
    assert_accessible_and_clean(&browser, "/register with passkeys").await;
    let button = browser.find("#passkey-sign-up-button").await;
    assert_eq!(button.text().await.unwrap(), "Create account with a passkey");
    browser.fill("#username", &name).await;
    click_and_wait_for_script(&browser, "#passkey-sign-up-button", "#passkey-sign-up-error").await;
    wait_for_path(&browser, "/profile").await;
    assert_eq!(browser.text("#username").await, name);
    use tessera_auth::UserDirectory;
    let user = server.app_state.db.users().user_by_name(&name.to_lowercase()).await.unwrap().unwrap();
    assert!(user.password_hash.is_none(), "a passkey-only account");
    assert_eq!(
        trail(&server, &name).await,
        ["sign_up", "passkey_added"],
        "signed in as it signed up, like a password sign-up"
    );
    let credentials = browser.virtual_credentials(&laptop).await;
    assert_eq!(credentials.len(), 1);
    assert_eq!(credentials[0]["isResidentCredential"], json!(true));
    // Unnamed: the virtual authenticator's AAGUID is no known provider, so
    // the page's suggestion (browser and system) names it.
    let named = server.app_state.auth.passkeys().unwrap().list(user.id).await.unwrap();
    assert_eq!(named[0].name, "Chrome on Linux");

    // Log out, and in again with the passkey (the button).
    let script = without_autofill(&browser).await;
    log_out(&browser).await;
    browser.click_and_wait("#passkey-button").await;
    wait_for_path(&browser, "/profile").await;
    with_autofill(&browser, script).await;

    // Eleven minutes later, changing passkeys needs a confirmation: with a
    // passkey, as there is no password.
    server.clock.advance(std::time::Duration::from_secs(11 * 60));
    browser.open(&format!("{}/account/passkeys", server.base)).await;
    assert!(!browser.has("input[name=current_password]").await, "no password to ask for");
    assert_eq!(browser.find("#passkey-confirm-button").await.text().await.unwrap(), "Confirm with a passkey");
    assert_accessible_and_clean(&browser, "/account/passkeys, not recent").await;
    let session_before = browser.cookie("__Host-id").await.unwrap().value().to_owned();
    click_and_wait_for_script(&browser, "#passkey-confirm-button", "#passkey-confirm-error").await;
    assert!(!browser.has("#passkey-confirm").await, "recently confirmed now");
    let session_after = browser.cookie("__Host-id").await.unwrap().value().to_owned();
    assert_ne!(session_before, session_after, "a step-up gives the session a new ID");
    assert!(trail(&server, &name).await.iter().filter(|k| *k == "passkey_used").count() >= 2);

    // A second passkey on another authenticator; then the first one goes,
    // and the page tells the password manager which passkeys remain.
    browser.webdriver(reqwest::Method::DELETE, &format!("webauthn/authenticator/{laptop}"), None).await;
    let phone = browser.add_virtual_authenticator().await;
    add_passkey(&browser, "Phone").await;
    let listed_now = listed(&browser).await;
    assert_eq!(listed_now.as_array().unwrap().len(), 2, "{listed_now}");
    let recorder = record_signals(&browser).await;
    browser
        .click_and_wait("#passkey-list li:first-child form[action='/account/passkeys/remove'] button[type=submit]")
        .await;
    assert_eq!(browser.text("#flash").await, "Passkey removed.");
    assert_eq!(listed(&browser).await, json!(["Phone"]));
    let remaining = server.app_state.auth.passkeys().unwrap().list(user.id).await.unwrap();
    let handle = server.app_state.auth.passkeys().unwrap().user_handle(user.id).await.unwrap().unwrap();
    let recorded = signals(&browser).await;
    assert_eq!(
        recorded,
        json!([{"kind": "all", "rpId": "localhost", "userId": handle, "ids": [remaining[0].id]}]),
        "signalAllAcceptedCredentials after the removal"
    );
    // The last one cannot be removed.
    assert!(browser.has("#remove-help").await);

    // Delete the account, confirmed with the passkey.
    server.clock.advance(std::time::Duration::from_secs(11 * 60));
    browser.open(&format!("{}/account", server.base)).await;
    click_and_wait_for_script(&browser, "#passkey-confirm-button", "#passkey-confirm-error").await;
    browser.fill("#delete-username", &name).await;
    browser.click_and_wait("form[action='/account/delete'] button[type=submit]").await;
    assert_eq!(browser.path().await, "/");
    assert!(server.app_state.db.users().user_by_name(&name.to_lowercase()).await.unwrap().is_none());

    // The phone still holds the passkey of the deleted account: a sign-in
    // with it is refused as unknown, and the page tells the browser.
    let script = without_autofill(&browser).await;
    browser.open(&format!("{}/login", server.base)).await;
    browser.find("#passkey-button").await.click().await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while signals(&browser).await.as_array().is_none_or(|s| s.is_empty()) {
        assert!(std::time::Instant::now() < deadline, "no signal after an unknown passkey");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let phone_credential = browser.virtual_credentials(&phone).await;
    let recorded = signals(&browser).await;
    assert_eq!(recorded[0]["kind"], json!("unknown"), "{recorded}");
    assert_eq!(recorded[0]["rpId"], json!("localhost"));
    // WebDriver gives credential IDs in base64url too.
    let expected_id = phone_credential[0]["credentialId"].as_str().unwrap().trim_end_matches('=').to_owned();
    assert_eq!(recorded[0]["id"], json!(expected_id));
    assert_eq!(browser.text("#passkey-error").await, "This passkey is not registered here.");
    with_autofill(&browser, script).await;
    browser.devtools("Page.removeScriptToEvaluateOnNewDocument", json!({ "identifier": recorder })).await;

    browser.close().await;
    server.stop().await;
}

#[tokio::test]
async fn a_passkey_as_the_second_factor_after_the_password_in_chromium() {
    if !chromium::available() {
        return;
    }
    let (server, _dir) = server().await;
    let driver = Chromedriver::start().await;
    let browser = driver.chromium(DESKTOP).await;
    browser.add_virtual_authenticator().await;
    let name = unique_name("duo");
    register(&browser, &server.base, &name).await;
    browser.open(&format!("{}/account/passkeys", server.base)).await;
    add_passkey(&browser, "Laptop").await;

    // Two-step verification with an app, then a password login offers the
    // passkey beside the code.
    use tessera_auth::UserDirectory;
    let user = server.app_state.db.users().user_by_name(&name.to_lowercase()).await.unwrap().unwrap();
    let factors = server.app_state.auth.second_factors();
    let secret = factors.begin_setup(user.id).await.unwrap().expect("no app yet");
    let code = secret.code_at(tessera_auth::second_factor::totp::step_at(tessera::Clock::now(&server.clock)));
    assert!(factors.confirm_setup(user.id, &code).await.unwrap().is_some());

    let script = without_autofill(&browser).await;
    log_out(&browser).await;
    chromium::log_in_here(&browser, &name, PASSWORD).await;
    assert_eq!(browser.path().await, "/login/second-factor");
    assert!(browser.has("#code").await, "the code beside the passkey");
    assert_eq!(browser.find("#passkey-second-factor-button").await.text().await.unwrap(), "Use a passkey");
    assert_accessible_and_clean(&browser, "/login/second-factor with a passkey").await;
    click_and_wait_for_script(&browser, "#passkey-second-factor-button", "#passkey-second-factor-error").await;
    wait_for_path(&browser, "/profile").await;
    assert_eq!(browser.text("#username").await, name);
    let kinds = trail(&server, &name).await;
    assert!(kinds.ends_with(&["passkey_used".to_owned(), "login_succeeded".to_owned()]), "{kinds:?}");
    with_autofill(&browser, script).await;
    browser.close().await;
    server.stop().await;
}

/// A browser session signed in on the login page with `soft`'s passkey.
async fn web_passkey_sign_in(server: &TestServer, soft: &mut SoftAuthenticator) -> Browser {
    let mut browser = server.browser();
    let csrf = browser.get("/login").await.csrf();
    let (status, options) = web_post(&mut browser, "/login/passkey/begin", &csrf, json!({})).await;
    assert_eq!(status, 200, "{options}");
    let assertion = soft.sign(&server.base, &options);
    let body = json!({"ceremony": options["ceremony"], "credential": assertion});
    let (status, answer) = web_post(&mut browser, "/login/passkey/finish", &csrf, body).await;
    assert_eq!(status, 200, "{answer}");
    browser
}

#[tokio::test]
async fn a_passkey_only_account_sets_a_password_after_a_recent_confirmation() {
    let (server, _dir) = api_server(1000, None).await;
    let api = Api::new(&server.base);
    let name = unique_name("setpw");
    let (_, mut soft) = passkey_only_account(&api, &server.base, &name).await;
    let mut browser = web_passkey_sign_in(&server, &mut soft).await;
    let account = browser.get("/account").await;
    assert!(account.body.contains(">Set a password</a>"), "{}", account.body);

    // Eleven minutes later: not without a fresh confirmation.
    server.clock.advance(std::time::Duration::from_secs(11 * 60));
    let page = browser.get("/account/password").await;
    assert!(page.body.contains("id=\"set-password-notice\""), "{}", page.body);
    assert!(!page.body.contains("name=\"current_password\""), "nothing to type");
    let refused = browser
        .post_form("/account/password", &[("csrf_token", &page.csrf()), ("new_password", "a brand new passphrase")])
        .await;
    assert_eq!(refused.status, 401, "{}", refused.body);

    // Confirmed with the passkey, the password is set and signs in.
    let account = browser.get("/account").await;
    let csrf = data_csrf(&account);
    let (status, options) = web_post(&mut browser, "/account/confirm/passkey/begin", &csrf, json!({})).await;
    assert_eq!(status, 200, "{options}");
    assert_eq!(allowed_ids(&options), vec![b64(&soft.credential_id)]);
    let assertion = soft.sign(&server.base, &options);
    let (status, answer) =
        web_post(&mut browser, "/account/confirm/passkey/finish", &csrf, json!({"credential": assertion})).await;
    assert_eq!((status, &answer), (200, &json!({"confirmed": true})));
    let page = browser.get("/account/password").await;
    let set = browser
        .post_form("/account/password", &[("csrf_token", &page.csrf()), ("new_password", "a brand new passphrase")])
        .await;
    assert_eq!(set.location(), Some("/account"), "{}", set.body);
    let mut other = server.browser();
    assert_eq!(other.login(&name, "a brand new passphrase").await.location(), Some("/profile"));
    server.stop().await;
}

// ---- Floods of passkey begins (F2, F3) --------------------------------

/// A server with the default passkey-ceremony allowance, on SQLite or at
/// `database_url`.
async fn flood_server(database_url: Option<String>) -> (TestServer, tempfile::TempDir, u32) {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let mut config = test_config(dir.path(), &clock);
    let allowance = tessera_auth::ThrottleConfig::default().passkey_ceremonies_per_address;
    assert!(allowance < 60, "the burst must go past the default allowance");
    config.throttle.passkey_ceremonies_per_address = allowance;
    if let Some(url) = database_url {
        config.database_url = url;
    }
    (TestServer::start(config, clock).await, dir, allowance)
}

/// The stored passkey ceremonies.
async fn ceremonies(server: &TestServer) -> i64 {
    let row: (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM passkey_ceremonies").fetch_one(server.app_state.db.pool()).await.unwrap();
    row.0
}

/// (status, has Retry-After, problem type) of each answer, 200s first.
fn tally(mut answers: Vec<(u16, bool, String)>) -> (usize, usize) {
    answers.sort();
    let ok = answers.iter().filter(|(status, _, _)| *status == 200).count();
    let throttled: Vec<_> = answers.iter().filter(|(status, _, _)| *status == 429).collect();
    assert_eq!(ok + throttled.len(), answers.len(), "only 200 and 429: {answers:?}");
    for (_, retry_after, kind) in &throttled {
        assert!(*retry_after, "429 without Retry-After");
        assert_eq!(kind, "/problems/throttled");
    }
    (ok, throttled.len())
}

/// Sixty simultaneous sign-in begins from one address, through the API,
/// then (the window over) through the login page's endpoint from sixty
/// cookie jars: each burst gets exactly the allowance and `429` with
/// `Retry-After` for the rest, and the table of challenges never holds
/// more than the allowance.
async fn begin_flood(server: &TestServer, allowance: u32) {
    let url = format!("{}/api/passkeys/signin/begin", server.base);
    let http = reqwest::Client::new();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..60 {
        let (http, url) = (http.clone(), url.clone());
        tasks.spawn(async move {
            let response = http.post(url).json(&json!({})).send().await.unwrap();
            let status = response.status().as_u16();
            let retry_after = response.headers().get("retry-after").is_some();
            let body: Value = response.json().await.unwrap();
            (status, retry_after, kind(&body).to_owned())
        });
    }
    let answers = tasks.join_all().await;
    assert_eq!(tally(answers), (allowance as usize, 60 - allowance as usize));
    assert_eq!(ceremonies(server).await, i64::from(allowance), "no row for a refused begin");

    // The window (and the challenges' lifetime) over: the web endpoint,
    // sixty browsers at once.
    server.clock.advance(std::time::Duration::from_secs(5 * 60 + 1));
    let mut browsers = Vec::new();
    for _ in 0..60 {
        let mut browser = server.browser();
        let csrf = browser.get("/login").await.csrf();
        browsers.push((browser, csrf));
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (mut browser, csrf) in browsers {
        tasks.spawn(async move {
            browser.extra_headers = vec![("accept".into(), "application/json".into())];
            let page = browser.post_json_with("/login/passkey/begin", &json!({}), &[("x-csrf-token", &csrf)]).await;
            let body: Value = serde_json::from_str(&page.body).unwrap_or_default();
            (page.status, page.header("retry-after").is_some(), kind(&body).to_owned())
        });
    }
    let answers = tasks.join_all().await;
    assert_eq!(tally(answers), (allowance as usize, 60 - allowance as usize));
    assert!(ceremonies(server).await <= i64::from(allowance), "the expired challenges went, no refused one came");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_sixty_passkey_begins_from_one_address_gets_the_allowance_then_429() {
    let (server, _dir, allowance) = flood_server(None).await;
    begin_flood(&server, allowance).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_sixty_passkey_begins_on_postgres_gets_the_allowance_then_429() {
    if !services::reachable("PostgreSQL", "127.0.0.1:5432") {
        return;
    }
    let (server, _dir, allowance) = flood_server(Some(services::postgres_url())).await;
    begin_flood(&server, allowance).await;
    server.stop().await;
}

/// A passkey sign-up's begin is a sign-up: counted on the address's
/// allowance (`throttle.signups_per_address`) before the name is looked
/// up, with the password sign-ups. Past it, a taken name and a free one get
/// the same `429`, on the API and on the web page's endpoint, so begins
/// cannot enumerate user names; and a begin within the allowance, finished,
/// is not counted a second time.
#[tokio::test]
async fn passkey_sign_up_begins_count_as_sign_ups_and_cannot_enumerate_names_past_the_allowance() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let mut config = test_config(dir.path(), &clock);
    config.throttle.signups_per_address = 4;
    let server = TestServer::start(config, clock).await;
    let api = Api::new(&server.base);
    let taken = unique_name("taken");
    api.sign_up(&taken).await; // 1 of 4
    let (status, problem) = api.post("/api/passkeys/signup/begin", None, json!({"username": taken})).await;
    assert_eq!((status, kind(&problem)), (409, "/problems/username-taken"), "2 of 4: {problem}");
    let (status, _) = api.post("/api/passkeys/signup/begin", None, json!({"username": "a b"})).await;
    assert_eq!(status, 422, "a malformed name is refused before it is counted");
    // 3 of 4: a passkey-only account, counted once (at begin).
    passkey_only_account(&api, &server.base, &unique_name("solo")).await;
    let (status, problem) = api.post("/api/passkeys/signup/begin", None, json!({"username": taken})).await;
    assert_eq!((status, kind(&problem)), (409, "/problems/username-taken"), "4 of 4: {problem}");

    // The allowance is used up: the same answer for a taken and a free name.
    let free = unique_name("free");
    let (taken_status, taken_problem) = api.post("/api/passkeys/signup/begin", None, json!({"username": taken})).await;
    let (free_status, free_problem) = api.post("/api/passkeys/signup/begin", None, json!({"username": free})).await;
    assert_eq!((taken_status, kind(&taken_problem)), (429, "/problems/throttled"), "{taken_problem}");
    assert_eq!((free_status, &free_problem["detail"]), (taken_status, &taken_problem["detail"]), "{free_problem}");
    let detail = taken_problem["detail"].as_str().unwrap_or_default();
    assert!(detail.starts_with("Too many sign-ups were attempted from your network address"), "{detail}");
    let response = reqwest::Client::new()
        .post(format!("{}/api/passkeys/signup/begin", server.base))
        .json(&json!({"username": free}))
        .send()
        .await
        .unwrap();
    assert!(response.headers().get("retry-after").is_some());
    // The web page's endpoint: the same allowance, the same answer.
    let mut browser = server.browser();
    let csrf = browser.get("/register").await.csrf();
    let (status, web_taken) =
        web_post(&mut browser, "/register/passkey/begin", &csrf, json!({"username": taken})).await;
    let (free_status, web_free) =
        web_post(&mut browser, "/register/passkey/begin", &csrf, json!({"username": free})).await;
    assert_eq!((status, kind(&web_taken)), (429, "/problems/throttled"), "{web_taken}");
    assert_eq!((free_status, &web_free["detail"]), (status, &web_taken["detail"]), "{web_free}");
    // And the password sign-up shares it.
    let (status, _) = api.post("/api/signup", None, json!({"username": free, "password": PASSWORD})).await;
    assert_eq!(status, 429);
    server.stop().await;
}

// ---- Web ceremonies are bound to the browser that began them (F5) ------

/// A web passkey sign-in or sign-up ceremony is bound to the browser
/// (cookie jar) that began it: the same ceremony ID and a valid answer sent
/// from another jar, or through the API, get the answer of an unknown
/// ceremony and do not spend it; the jar that began it finishes. A second
/// begin in one jar replaces its pending ceremony instead of adding a row.
#[tokio::test]
async fn web_passkey_ceremonies_finish_only_in_the_browser_that_began_them() {
    let (server, _dir) = api_server(1000, None).await;
    let api = Api::new(&server.base);
    let name = unique_name("bound");
    let (_, mut soft) = passkey_only_account(&api, &server.base, &name).await;

    // Sign-in: begun in jar A (twice: the second replaces the first).
    let mut a = server.browser();
    let csrf_a = a.get("/login").await.csrf();
    let (status, first) = web_post(&mut a, "/login/passkey/begin", &csrf_a, json!({})).await;
    assert_eq!(status, 200, "{first}");
    let stored = ceremonies(&server).await;
    let (status, options) = web_post(&mut a, "/login/passkey/begin", &csrf_a, json!({})).await;
    assert_eq!(status, 200, "{options}");
    assert_eq!(ceremonies(&server).await, stored, "the browser's pending ceremony was replaced, not added to");
    let assertion = soft.sign(&server.base, &options);
    let body = json!({"ceremony": options["ceremony"], "credential": assertion});
    let replaced = json!({"ceremony": first["ceremony"], "credential": assertion});

    // Jar B, with its own CSRF token: refused like a made-up ceremony.
    let mut b = server.browser();
    let csrf_b = b.get("/login").await.csrf();
    let made_up = json!({"ceremony": "made-up", "credential": assertion});
    let (unknown_status, unknown) = web_post(&mut b, "/login/passkey/finish", &csrf_b, made_up).await;
    let (status, stolen) = web_post(&mut b, "/login/passkey/finish", &csrf_b, body.clone()).await;
    assert_eq!((status, kind(&stolen)), (400, "/problems/passkey-challenge-expired"), "{stolen}");
    assert_eq!((status, &stolen["detail"]), (unknown_status, &unknown["detail"]));
    assert!(b.get("/profile").await.status != 200, "jar B is not signed in");
    // The API: the same.
    let (status, problem) = api.finish(&options["ceremony"], &assertion).await;
    assert_eq!((status, kind(&problem)), (400, "/problems/passkey-challenge-expired"), "{problem}");
    // The replaced ceremony is gone for A too.
    let (status, problem) = web_post(&mut a, "/login/passkey/finish", &csrf_a, replaced).await;
    assert_eq!((status, kind(&problem)), (400, "/problems/passkey-challenge-expired"), "{problem}");
    // Jar A finishes: the others did not spend its ceremony.
    let (status, done) = web_post(&mut a, "/login/passkey/finish", &csrf_a, body).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(a.get("/profile").await.status, 200, "jar A is signed in");

    // Sign-up: begun in jar C.
    let fresh = unique_name("boundup");
    let mut c = server.browser();
    let csrf_c = c.get("/register").await.csrf();
    let (status, begun) = web_post(&mut c, "/register/passkey/begin", &csrf_c, json!({"username": fresh})).await;
    assert_eq!(status, 200, "{begun}");
    let mut key = SoftAuthenticator::new();
    let credential = key.register(&server.base, &begun);
    let body = json!({"ceremony": begun["ceremony"], "credential": credential});
    let mut d = server.browser();
    let csrf_d = d.get("/register").await.csrf();
    let (status, stolen) = web_post(&mut d, "/register/passkey/finish", &csrf_d, body.clone()).await;
    assert_eq!((status, kind(&stolen)), (400, "/problems/passkey-challenge-expired"), "{stolen}");
    let (status, problem) = api.post("/api/passkeys/signup/finish", None, body.clone()).await;
    assert_eq!((status, kind(&problem)), (400, "/problems/passkey-challenge-expired"), "{problem}");
    use tessera_auth::UserDirectory;
    assert!(server.app_state.db.users().user_by_name(&fresh.to_lowercase()).await.unwrap().is_none());
    let (status, created) = web_post(&mut c, "/register/passkey/finish", &csrf_c, body).await;
    assert_eq!(status, 201, "{created}");
    assert!(server.app_state.db.users().user_by_name(&fresh.to_lowercase()).await.unwrap().is_some());
    server.stop().await;
}

// ---- A passkey sign-up's begin checks the invitation first ------------

/// Under `accounts.registration = "invite"`, a passkey sign-up's begin with
/// a made-up invitation is refused like `POST /api/signup` with one — `403
/// invalid-invitation` — before the name is looked up (a taken name and a
/// free one get the same answer) and before anything is counted: after
/// twenty such begins on the API and twenty on the web page's endpoint
/// (twice the address's sign-up allowance), an invited user at that
/// address still signs up.
#[tokio::test]
async fn a_passkey_sign_up_begin_with_a_made_up_invitation_is_refused_before_anything_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let mut config = test_config(dir.path(), &clock);
    config.registration = tessera_server::registration_policy::RegistrationPolicy::Invite;
    config.throttle.signups_per_address = 10;
    let server = TestServer::start(config, clock).await;
    let api = Api::new(&server.base);
    let taken = unique_name("taken");
    use tessera::Clock as _;
    use tessera_auth::UserDirectory;
    let users = server.app_state.db.users();
    users.create_user(&taken, &taken.to_lowercase(), None, server.clock.now()).await.unwrap();
    let mut browser = server.browser();
    let csrf = browser.get("/register").await.csrf();
    for i in 0..20 {
        let name = if i % 2 == 0 { taken.clone() } else { unique_name("free") };
        let body = json!({"username": name, "invite": "bogus"});
        let (status, problem) = api.post("/api/passkeys/signup/begin", None, body.clone()).await;
        assert_eq!((status, kind(&problem)), (403, "/problems/invalid-invitation"), "API {i}: {problem}");
        let (status, problem) = web_post(&mut browser, "/register/passkey/begin", &csrf, body).await;
        assert_eq!((status, kind(&problem)), (403, "/problems/invalid-invitation"), "web {i}: {problem}");
    }
    assert_eq!(ceremonies(&server).await, 0, "no ceremony was stored");
    let counted: Option<(i64,)> = sqlx::query_as("SELECT failures FROM throttle WHERE key LIKE 'signup:%'")
        .fetch_optional(server.app_state.db.pool())
        .await
        .unwrap();
    assert_eq!(counted, None, "no sign-up was counted");

    // An invited user at the same address signs up with a password.
    let now = server.clock.now();
    let expires = now.plus(std::time::Duration::from_secs(3600));
    let token = server.app_state.db.create_invitation(&[], now, expires).await.unwrap();
    let body = json!({"username": unique_name("invited"), "password": PASSWORD, "invite": token.token});
    let (status, created) = api.post("/api/signup", None, body).await;
    assert_eq!(status, 201, "{created}");
    server.stop().await;
}

// ---- Ceremony counters are purged by their own window ------------------

/// The throttle's purge drops a passkey-ceremony counter only when its own
/// window (`throttle.passkey_ceremony_window`) is over, not after the
/// login counters' quiet period: with a one-hour window and a twenty-second
/// quiet period, the counter of an address that used two of its three
/// begins survives a purge ninety seconds in (its third begin is its last),
/// and goes once the hour is over.
#[tokio::test]
async fn ceremony_counters_are_purged_when_their_window_is_over_not_after_the_quiet_period() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let mut config = test_config(dir.path(), &clock);
    config.throttle.passkey_ceremonies_per_address = 3;
    config.throttle.passkey_ceremony_window = std::time::Duration::from_secs(3600);
    config.throttle.quiet_period = std::time::Duration::from_secs(20);
    let server = TestServer::start(config, clock).await;
    let api = Api::new(&server.base);
    let begin = || async { api.post("/api/passkeys/signin/begin", None, json!({})).await };
    for _ in 0..2 {
        let (status, options) = begin().await;
        assert_eq!(status, 200, "{options}");
    }
    let counter = || async {
        let row: Option<(i64,)> = sqlx::query_as("SELECT failures FROM throttle WHERE key LIKE 'ceremony:%'")
            .fetch_optional(server.app_state.db.pool())
            .await
            .unwrap();
        row.map(|r| r.0)
    };
    assert_eq!(counter().await, Some(2));
    let throttle = server.app_state.auth.throttle();

    // 90 s in: past the quiet period, inside the window.
    server.clock.advance(std::time::Duration::from_secs(90));
    throttle.purge().await.unwrap();
    assert_eq!(counter().await, Some(2), "purged in the middle of its window");
    let (status, options) = begin().await;
    assert_eq!(status, 200, "the third of three: {options}");
    let (status, problem) = begin().await;
    assert_eq!((status, kind(&problem)), (429, "/problems/throttled"), "the allowance did not start over: {problem}");

    // The window over: purged, and the allowance is back.
    server.clock.advance(std::time::Duration::from_secs(3600));
    throttle.purge().await.unwrap();
    assert_eq!(counter().await, None, "purged once its window was over");
    let (status, options) = begin().await;
    assert_eq!(status, 200, "{options}");
    server.stop().await;
}

// ---- One pending web ceremony per browser, however many begins race ----

/// Thirty simultaneous sign-in begins from one browser (one cookie jar,
/// so one binding), then thirty sign-up begins: every one is answered, and
/// the browser is left with one pending ceremony of each kind — the new
/// ceremony replaces the pending one in one statement, not a DELETE and an
/// INSERT that racing begins interleave.
async fn one_browser_burst(server: &TestServer) {
    let mut browser = server.browser();
    let csrf = browser.get("/login").await.csrf();
    for (path, kind_name) in [("/login/passkey/begin", "authentication"), ("/register/passkey/begin", "signup")] {
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..30 {
            let (mut browser, csrf) = (browser.clone(), csrf.clone());
            let body =
                if kind_name == "signup" { json!({"username": unique_name(&format!("burst{i}"))}) } else { json!({}) };
            tasks.spawn(async move { web_post(&mut browser, path, &csrf, body).await });
        }
        for (status, answer) in tasks.join_all().await {
            assert_eq!(status, 200, "{answer}");
        }
        let row: (i64,) = sqlx::query_as("SELECT COUNT(*) FROM passkey_ceremonies WHERE kind = $1 AND binding <> ''")
            .bind(kind_name)
            .fetch_one(server.app_state.db.pool())
            .await
            .unwrap();
        assert_eq!(row.0, 1, "{path}: one pending {kind_name} ceremony for the browser");
    }
}

async fn burst_server(database_url: Option<String>) -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let mut config = test_config(dir.path(), &clock);
    config.throttle.passkey_ceremonies_per_address = 1000;
    config.throttle.signups_per_address = 1000;
    if let Some(url) = database_url {
        config.database_url = url;
    }
    (TestServer::start(config, clock).await, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_begins_from_one_browser_leaves_one_pending_ceremony() {
    let (server, _dir) = burst_server(None).await;
    one_browser_burst(&server).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_begins_from_one_browser_leaves_one_pending_ceremony_on_postgres() {
    if !services::reachable("PostgreSQL", "127.0.0.1:5432") {
        return;
    }
    let (server, _dir) = burst_server(Some(services::postgres_url())).await;
    one_browser_burst(&server).await;
    server.stop().await;
}

// ---- A browser that signed in before is not locked out of passkeys -----

/// The address's passkey-ceremony allowance used up by anonymous begins
/// (the API, and login pages without a device cookie): a browser that
/// signed in here before — a valid device cookie, of any account, as a
/// sign-in begin names none — still begins ceremonies, counted under its
/// own key; a browser without one, or with a forged one, is refused.
#[tokio::test]
async fn a_browser_with_a_device_cookie_begins_passkey_ceremonies_when_its_address_is_used_up() {
    let (server, _dir, allowance) = flood_server(None).await;
    let api = Api::new(&server.base);
    let name = unique_name("known");
    api.sign_up(&name).await;
    let mut known = server.browser();
    assert_eq!(known.login(&name, PASSWORD).await.location(), Some("/profile"));
    known.logout().await;
    let device = known.cookies.keys().find(|k| k.ends_with("device")).expect("a device cookie").clone();

    for _ in 0..allowance {
        let (status, options) = api.post("/api/passkeys/signin/begin", None, json!({})).await;
        assert_eq!(status, 200, "{options}");
    }
    let mut stranger = server.browser();
    let csrf = stranger.get("/login").await.csrf();
    let (status, problem) = web_post(&mut stranger, "/login/passkey/begin", &csrf, json!({})).await;
    assert_eq!((status, kind(&problem)), (429, "/problems/throttled"), "{problem}");
    let detail = problem["detail"].as_str().unwrap_or_default();
    assert!(detail.starts_with("Too many passkey ceremonies were begun from"), "{detail}");

    // The browser that signed in before: its login page still begins one.
    let csrf = known.get("/login").await.csrf();
    let (status, options) = web_post(&mut known, "/login/passkey/begin", &csrf, json!({})).await;
    assert_eq!(status, 200, "{options}");
    // A forged device cookie is no exemption.
    let mut forger = server.browser();
    let csrf = forger.get("/login").await.csrf();
    let forged = format!("{}x", known.cookies[&device]);
    forger.cookies.insert(device.clone(), forged);
    let (status, problem) = web_post(&mut forger, "/login/passkey/begin", &csrf, json!({})).await;
    assert_eq!((status, kind(&problem)), (429, "/problems/throttled"), "{problem}");
    // Nor was the known browser's begin taken from the address.
    let keys: Vec<(String, i64)> = sqlx::query_as("SELECT key, failures FROM throttle WHERE key LIKE 'ceremony:%'")
        .fetch_all(server.app_state.db.pool())
        .await
        .unwrap();
    assert!(keys.iter().any(|(k, n)| k.starts_with("ceremony:device:") && *n == 1), "{keys:?}");
    server.stop().await;
}
