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
        assert!(options.public_key.allow_credentials.is_empty(), "discoverable: no allow list");
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

    /// Adds a passkey made by `soft` to the account of `token`.
    async fn add_passkey(&self, token: &str, soft: &mut SoftAuthenticator, name: &str) -> Value {
        let (status, begun) =
            self.post("/api/passkeys/register/begin", Some(token), json!({"current_password": PASSWORD})).await;
        assert_eq!(status, 200, "{begun}");
        let credential = soft.register(&self.base, &begun["options"]);
        let body = json!({"ceremony": begun["ceremony"], "name": name, "credential": credential});
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
    let (status, begun) =
        api.post("/api/passkeys/register/begin", Some(&token), json!({"current_password": PASSWORD})).await;
    assert_eq!(status, 200);
    let mut second = SoftAuthenticator::new();
    let credential = second.register(&server.base, &begun["options"]);
    let body = json!({"ceremony": begun["ceremony"], "name": "Second", "credential": credential});
    assert_eq!(api.post("/api/passkeys/register/finish", Some(&token), body.clone()).await.0, 201);
    let (status, problem) = api.post("/api/passkeys/register/finish", Some(&token), body).await;
    assert_eq!((status, kind(&problem)), (400, "/problems/passkey-challenge-expired"), "{problem}");

    // Sign in: a token pair for the account.
    let (ceremony, options) = api.begin().await;
    let assertion = soft.sign(&server.base, &options);
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
    let (first, first_options) = api.begin().await;
    let (other, _) = api.begin().await;
    let signed = soft.sign(&server.base, &first_options);
    let (status, problem) = api.finish(&other, &signed).await;
    assert_eq!((status, kind(&problem)), (401, "/problems/passkey-invalid"), "{problem}");
    let _ = first;

    // Made on another origin (a phishing site).
    let (ceremony, options) = api.begin().await;
    let phished = soft.sign("https://tessera.localhost", &options);
    let (status, problem) = api.finish(&ceremony, &phished).await;
    assert_eq!((status, kind(&problem)), (401, "/problems/passkey-invalid"), "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("another origin"), "{problem}");

    // Expired: six minutes later.
    let (ceremony, options) = api.begin().await;
    let late = soft.sign(&server.base, &options);
    server.clock.advance(std::time::Duration::from_secs(6 * 60));
    let (status, problem) = api.finish(&ceremony, &late).await;
    assert_eq!((status, kind(&problem)), (400, "/problems/passkey-challenge-expired"), "{problem}");

    // Another user's credential, claimed for this account's user handle.
    let other_name = unique_name("other");
    let other_token = api.sign_up(&other_name).await;
    let mut others = SoftAuthenticator::new();
    api.add_passkey(&other_token, &mut others, "Theirs").await;
    let (ceremony, options) = api.begin().await;
    others.user_handle = soft.user_handle.clone();
    let borrowed = others.sign(&server.base, &options);
    let (status, problem) = api.finish(&ceremony, &borrowed).await;
    assert_eq!((status, kind(&problem)), (401, "/problems/passkey-wrong-user"), "{problem}");

    // A signature counter that goes backwards: a cloned authenticator.
    let (early, early_options) = api.begin().await;
    let (later, later_options) = api.begin().await;
    let older = soft.sign(&server.base, &early_options);
    let newer = soft.sign(&server.base, &later_options);
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
    let (ceremony, options) = api.begin().await;
    others.user_handle = passkeys
        .user_handle(other_user.id)
        .await
        .unwrap()
        .map(|h| {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(h).unwrap()
        })
        .unwrap();
    let gone = others.sign(&server.base, &options);
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
    let (ceremony, options) = api.begin().await;
    let assertion = soft.sign(&server.base, &options);
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
    let (ceremony, options) = api.begin().await;
    let good = soft.sign(&server.base, &options);
    let (status, problem) = api.finish(&ceremony, &good).await;
    assert_eq!((status, kind(&problem)), (429, "/problems/throttled"), "{problem}");
    server.stop().await;
}
