//! Two-step verification against the real server: setup, the code prompt
//! at login, single use of codes, recovery codes, throttling, the API, and
//! turning it off.

mod harness;
mod services;

use std::time::Duration;
use tessera_auth::UserDirectory;

use harness::{test_config, unique_name, Browser, Page, TestServer};
use tessera::{Clock, ManualClock};
use tessera_auth::second_factor::totp::{step_at, TotpSecret, STEP_SECONDS};

const PASSWORD: &str = "correct horse battery";

async fn server() -> (TestServer, tempfile::TempDir) {
    server_on(None).await
}

/// A server whose users (and second factors) live in `database_url`, or
/// in a fresh SQLite file.
async fn server_on(database_url: Option<String>) -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let mut config = test_config(dir.path(), &clock);
    if let Some(url) = database_url {
        config.database_url = url;
    }
    let server = TestServer::start(config, clock).await;
    (server, dir)
}

/// The `<code>` texts of the recovery-code list.
fn recovery_codes(page: &Page) -> Vec<String> {
    page.body
        .split("<code class=\"recovery-code\">")
        .skip(1)
        .map(|rest| rest[..rest.find('<').unwrap()].to_owned())
        .collect()
}

/// Registers `name` and turns two-step verification on; returns the secret
/// the page showed and the recovery codes.
async fn enrolled(server: &TestServer, browser: &mut Browser, name: &str) -> (TotpSecret, Vec<String>) {
    assert_eq!(browser.register(name, PASSWORD).await.status, 303);
    let setup = browser.submit("/account/two-factor", "/account/two-factor/setup", &[]).await;
    assert_eq!(setup.status, 200, "{}", setup.body);
    assert!(setup.body.contains("<svg"), "the page shows a QR code");
    let typed = setup.element_text("totp-secret").expect("the secret is shown for typing");
    let secret = TotpSecret::from_base32(&typed.replace(' ', "")).expect("a base32 secret");

    // A wrong code does not turn it on.
    let wrong = browser.submit("/account/two-factor", "/account/two-factor/confirm", &[("code", "000000")]).await;
    assert_eq!(wrong.status, 422);
    assert!(wrong.body.contains("<svg"), "the setup stays open after a wrong code");

    let code = secret.code_at(step_at(server.clock.now()));
    let id_before = browser.session_id();
    let done = browser.submit("/account/two-factor", "/account/two-factor/confirm", &[("code", &code)]).await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert_ne!(browser.session_id(), id_before, "turning it on gives the session a new ID");
    let codes = recovery_codes(&done);
    assert_eq!(codes.len(), 10, "{}", done.body);
    let status = browser.get("/account/two-factor").await;
    assert!(status.body.contains("data-enabled=\"true\""));
    assert_eq!(status.element_text("recovery-codes-left").as_deref(), Some("10"));
    assert!(!status.body.contains(&codes[0]), "recovery codes are shown once");
    (secret, codes)
}

/// Logs in with the password: must stop at the code prompt.
async fn password_step(browser: &mut Browser, name: &str) {
    let before = browser.session_id();
    let page = browser.login(name, PASSWORD).await;
    assert_eq!(page.status, 303);
    assert_eq!(page.location(), Some("/login/second-factor"));
    assert_ne!(browser.session_id(), before, "the half-done login gets its own session ID");
    let profile = browser.get("/profile").await;
    assert_ne!(profile.status, 200, "a password alone does not log in");
}

async fn send_code(browser: &mut Browser, code: &str) -> Page {
    browser.submit("/login/second-factor", "/login/second-factor", &[("code", code)]).await
}

fn next_step(server: &TestServer) {
    server.clock.advance(Duration::from_secs(STEP_SECONDS));
}

#[tokio::test]
async fn login_needs_a_code_once_two_step_verification_is_on() {
    let (server, _dir) = server().await;
    login_needs_a_code(&server).await;
}

#[tokio::test]
async fn two_step_verification_with_users_in_postgres() {
    if !services::reachable("PostgreSQL", "127.0.0.1:5432") {
        return;
    }
    let (server, _dir) = server_on(Some(services::postgres_url())).await;
    login_needs_a_code(&server).await;
    recovery_codes_flow(&server).await;
    server.stop().await;
}

async fn login_needs_a_code(server: &TestServer) {
    let name = unique_name("totp");
    let mut setup_browser = server.browser();
    let (secret, _codes) = enrolled(server, &mut setup_browser, &name).await;
    let activity = setup_browser.get("/account/activity").await;
    assert!(activity.body.contains("Two-step verification turned on"));

    let mut browser = server.browser();
    password_step(&mut browser, &name).await;
    let wrong = send_code(&mut browser, "123456").await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.element_text("second-factor-error").is_some());

    // The setup used this step's code: the next step's code logs in.
    next_step(server);
    let pending_id = browser.session_id();
    let code = secret.code_at(step_at(server.clock.now()));
    let done = send_code(&mut browser, &code).await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert_eq!(done.location(), Some("/profile"));
    assert_ne!(browser.session_id(), pending_id, "a new session ID when the login completes");
    assert_eq!(browser.get("/profile").await.status, 200);

    // The same code again, in another browser: refused (used once).
    let mut other = server.browser();
    password_step(&mut other, &name).await;
    assert_eq!(send_code(&mut other, &code).await.status, 401, "a code works once");
    // So is the previous step's code, once a newer one was used.
    let older = secret.code_at(step_at(server.clock.now()) - 1);
    assert_eq!(send_code(&mut other, &older).await.status, 401, "no going back to an older code");
    let failures = setup_browser.get("/account/activity").await;
    assert!(failures.body.contains("Wrong two-step verification code"));
}

#[tokio::test]
async fn codes_from_the_previous_step_pass_and_older_or_future_ones_do_not() {
    let (server, _dir) = server().await;
    let name = unique_name("skew");
    let (secret, _) = enrolled(&server, &mut server.browser(), &name).await;
    let mut browser = server.browser();
    for _ in 0..3 {
        next_step(&server);
    }
    let now = step_at(server.clock.now());
    password_step(&mut browser, &name).await;
    assert_eq!(send_code(&mut browser, &secret.code_at(now + 1)).await.status, 401, "future code");
    assert_eq!(send_code(&mut browser, &secret.code_at(now - 2)).await.status, 401, "two steps old");
    assert_eq!(send_code(&mut browser, &secret.code_at(now - 1)).await.status, 303, "one step old");
}

#[tokio::test]
async fn recovery_codes_work_once_each_and_can_be_replaced() {
    let (server, _dir) = server().await;
    recovery_codes_flow(&server).await;
}

async fn recovery_codes_flow(server: &TestServer) {
    let name = unique_name("recovery");
    let mut owner = server.browser();
    let (_secret, codes) = enrolled(server, &mut owner, &name).await;

    let mut browser = server.browser();
    password_step(&mut browser, &name).await;
    // Typed in capitals with spaces instead of dashes: still the code.
    let typed = codes[3].to_uppercase().replace('-', " ");
    assert_eq!(send_code(&mut browser, &typed).await.status, 303);
    assert_eq!(browser.get("/profile").await.status, 200);

    let mut again = server.browser();
    password_step(&mut again, &name).await;
    assert_eq!(send_code(&mut again, &codes[3]).await.status, 401, "a recovery code works once");
    let status = owner.get("/account/two-factor").await;
    assert_eq!(status.element_text("recovery-codes-left").as_deref(), Some("9"));
    assert!(owner.get("/account/activity").await.body.contains("A recovery code was used"));

    // New codes need a current code (issue #14 item 6): the session alone
    // cannot change the factor. Then the old unused ones stop working.
    let refused = owner.submit("/account/two-factor", "/account/two-factor/recovery-codes", &[]).await;
    assert_eq!(refused.status, 422, "no code, no new codes");
    let refused =
        owner.submit("/account/two-factor", "/account/two-factor/recovery-codes", &[("code", "not-a-code")]).await;
    assert_eq!(refused.status, 401, "a wrong code changes nothing");
    let renewed =
        owner.submit("/account/two-factor", "/account/two-factor/recovery-codes", &[("code", &codes[5])]).await;
    assert_eq!(renewed.status, 200);
    let fresh = recovery_codes(&renewed);
    assert_eq!(fresh.len(), 10);
    assert_eq!(send_code(&mut again, &codes[4]).await.status, 401, "old set revoked");
    assert_eq!(send_code(&mut again, &fresh[0]).await.status, 303);
}

#[tokio::test]
async fn wrong_codes_are_throttled_and_the_password_does_not_reset_the_count() {
    let (server, _dir) = server().await;
    let name = unique_name("guess");
    let (secret, _) = enrolled(&server, &mut server.browser(), &name).await;
    // A step whose code is still unused, so the right code is at hand.
    next_step(&server);
    let right = secret.code_at(step_at(server.clock.now()));
    let mut attacker = server.browser();
    password_step(&mut attacker, &name).await;
    let mut throttled = None;
    for attempt in 0..20 {
        // Re-entering the (known) password between guesses must not help.
        if attempt % 3 == 2 {
            let page = attacker.login(&name, PASSWORD).await;
            if page.status == 429 {
                throttled = Some(page);
                break;
            }
            assert_eq!(page.location(), Some("/login/second-factor"));
        }
        let guess = format!("{:06}", 100_000 + attempt);
        assert_ne!(guess, right);
        let page = send_code(&mut attacker, &guess).await;
        if page.status == 429 {
            throttled = Some(page);
            break;
        }
        assert_eq!(page.status, 401);
    }
    let page = throttled.expect("wrong codes end up throttled");
    let wait: u64 = page.header("retry-after").expect("Retry-After").parse().unwrap();
    assert!(wait >= 1);
    // Blocked means blocked: even the right code waits.
    let blocked = send_code(&mut attacker, &right).await;
    assert_eq!(blocked.status, 429, "{}", blocked.body);
    // And the block ends: no lever to lock the owner out for good.
    server.clock.advance(Duration::from_secs(wait));
    let mut owner = server.browser();
    password_step(&mut owner, &name).await;
    let code = secret.code_at(step_at(server.clock.now()));
    assert_eq!(send_code(&mut owner, &code).await.status, 303);
}

#[tokio::test]
async fn a_pending_login_expires() {
    let (server, _dir) = server().await;
    let name = unique_name("expire");
    let (secret, _) = enrolled(&server, &mut server.browser(), &name).await;
    let mut browser = server.browser();
    password_step(&mut browser, &name).await;
    server.clock.advance(Duration::from_secs(6 * 60));
    // The prompt itself sends an expired login back to /login.
    assert_eq!(browser.get("/login/second-factor").await.location(), Some("/login"));
    let code = secret.code_at(step_at(server.clock.now()));
    let token = browser.get("/login").await.csrf();
    let page = browser.post_form("/login/second-factor", &[("csrf_token", &token), ("code", &code)]).await;
    assert_eq!(page.status, 401);
    assert!(page.element_text("second-factor-expired").is_some(), "{}", page.body);
    assert_ne!(browser.get("/profile").await.status, 200);
}

#[tokio::test]
async fn turning_it_off_needs_a_recent_authentication_and_restores_password_logins() {
    let (server, _dir) = server().await;
    let name = unique_name("off");
    let mut owner = server.browser();
    let (_secret, codes) = enrolled(&server, &mut owner, &name).await;
    // Past the re-authentication window: the password must come along.
    server.clock.advance(Duration::from_secs(11 * 60));
    let stale = owner.submit("/account/two-factor", "/account/two-factor/disable", &[]).await;
    assert_eq!(stale.status, 401);
    let wrong = owner
        .submit("/account/two-factor", "/account/two-factor/disable", &[("current_password", "not it at all")])
        .await;
    assert_eq!(wrong.status, 401);
    // The password alone does not turn it off (issue #14 item 6): a code
    // from the app, or a recovery code, must come along.
    let password_only =
        owner.submit("/account/two-factor", "/account/two-factor/disable", &[("current_password", PASSWORD)]).await;
    assert_eq!(password_only.status, 422);
    assert!(owner.get("/account/two-factor").await.body.contains("data-enabled=\"true\""), "still on");
    let off = owner
        .submit(
            "/account/two-factor",
            "/account/two-factor/disable",
            &[("current_password", PASSWORD), ("code", &codes[0])],
        )
        .await;
    assert_eq!(off.status, 303, "{}", off.body);
    assert!(owner.get("/account/two-factor").await.body.contains("data-enabled=\"false\""));
    assert!(owner.get("/account/activity").await.body.contains("Two-step verification turned off"));

    let mut browser = server.browser();
    let login = browser.login(&name, PASSWORD).await;
    assert_eq!(login.location(), Some("/profile"), "back to password-only logins");
    assert_eq!(browser.get("/profile").await.status, 200);
    // The recovery codes died with it: turned on again, the old ones fail.
    assert!(!codes.is_empty());
    let user = server.app_state.db.users().user_by_name(&name.to_lowercase()).await.unwrap().unwrap();
    assert_eq!(server.app_state.auth.second_factors().status(user.id).await.unwrap().recovery_codes_left, 0);
}

#[tokio::test]
async fn setup_needs_a_recent_authentication() {
    let (server, _dir) = server().await;
    let name = unique_name("stale");
    let mut browser = server.browser();
    browser.register(&name, PASSWORD).await;
    server.clock.advance(Duration::from_secs(11 * 60));
    let stale = browser.submit("/account/two-factor", "/account/two-factor/setup", &[]).await;
    assert_eq!(stale.status, 401);
    assert!(!stale.body.contains("totp-secret"));
    let ok =
        browser.submit("/account/two-factor", "/account/two-factor/setup", &[("current_password", PASSWORD)]).await;
    assert_eq!(ok.status, 200);
    assert!(ok.element_text("totp-secret").is_some());
}

#[tokio::test]
async fn api_sign_in_asks_for_the_second_factor() {
    let (server, _dir) = server().await;
    let name = unique_name("apitotp");
    let (secret, codes) = enrolled(&server, &mut server.browser(), &name).await;
    let client = reqwest::Client::new();
    let signin = |body: serde_json::Value| {
        let client = client.clone();
        let url = format!("{}/api/signin", server.base);
        async move {
            let response = client.post(url).json(&body).send().await.unwrap();
            let status = response.status().as_u16();
            let json: serde_json::Value = response.json().await.unwrap();
            (status, json)
        }
    };
    let (status, body) = signin(serde_json::json!({"username": name, "password": PASSWORD})).await;
    assert_eq!(status, 401);
    assert_eq!(body["type"], "/problems/second-factor-required");
    assert!(body.get("access_token").is_none());

    let (status, body) =
        signin(serde_json::json!({"username": name, "password": PASSWORD, "second_factor": "000000"})).await;
    assert_eq!(status, 401);
    assert_eq!(body["type"], "/problems/invalid-second-factor");

    next_step(&server);
    let code = secret.code_at(step_at(server.clock.now()));
    let (status, body) =
        signin(serde_json::json!({"username": name, "password": PASSWORD, "second_factor": code})).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["access_token"].is_string());
    let (status, _) = signin(serde_json::json!({"username": name, "password": PASSWORD, "second_factor": code})).await;
    assert_eq!(status, 401, "the code was used");
    let (status, _) =
        signin(serde_json::json!({"username": name, "password": PASSWORD, "second_factor": codes[0]})).await;
    assert_eq!(status, 200, "a recovery code works in the API too");
    // A wrong password with a right code is still just a wrong password.
    next_step(&server);
    let code = secret.code_at(step_at(server.clock.now()));
    let (status, body) =
        signin(serde_json::json!({"username": name, "password": "wrong password!", "second_factor": code})).await;
    assert_eq!(status, 401);
    assert_eq!(body["type"], "/problems/invalid-credentials");
}

#[tokio::test]
async fn deleting_the_account_removes_its_second_factor() {
    let (server, _dir) = server().await;
    let name = unique_name("gone");
    let mut owner = server.browser();
    enrolled(&server, &mut owner, &name).await;
    let db = server.app_state.db.clone();
    let user = db.users().user_by_name(&name.to_lowercase()).await.unwrap().expect("registered");
    let factors = &server.app_state.auth.second_factors();
    assert!(factors.status(user.id).await.unwrap().enabled);
    let deleted = owner.submit("/account", "/account/delete", &[("current_password", PASSWORD)]).await;
    assert_eq!(deleted.status, 303);
    let status = factors.status(user.id).await.unwrap();
    assert!(!status.enabled, "the secret went with the account");
    assert_eq!(status.recovery_codes_left, 0, "and so did the recovery codes");
}

#[tokio::test]
async fn a_server_that_requires_it_enrols_users_at_login() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let mut config = test_config(dir.path(), &clock);
    config.require_second_factor = true;
    let server = TestServer::start(config, clock).await;
    let name = unique_name("required");
    // Registration goes straight on to the setup, without logging in.
    let mut first = server.browser();
    let registered = first.register(&name, PASSWORD).await;
    assert_eq!(registered.location(), Some("/login/second-factor"));
    assert_ne!(first.get("/profile").await.status, 200, "no account is usable without a second factor");
    assert!(first.get("/login/second-factor").await.element_text("totp-secret").is_some());

    // The API cannot enrol anyone: 403 until the browser did.
    let client = reqwest::Client::new();
    let api = client
        .post(format!("{}/api/signin", server.base))
        .json(&serde_json::json!({"username": name, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 403);

    let mut browser = server.browser();
    let login = browser.login(&name, PASSWORD).await;
    assert_eq!(login.location(), Some("/login/second-factor"));
    assert_ne!(browser.get("/profile").await.status, 200, "not logged in before enrolling");
    assert_ne!(browser.get("/account/two-factor").await.status, 200);
    let prompt = browser.get("/login/second-factor").await;
    assert!(prompt.body.contains("requires two-step verification"), "{}", prompt.body);
    let typed = prompt.element_text("totp-secret").expect("the setup is shown");
    let again = browser.get("/login/second-factor").await;
    assert_eq!(again.element_text("totp-secret"), Some(typed.clone()), "a reload shows the same secret");
    let secret = TotpSecret::from_base32(&typed.replace(' ', "")).unwrap();

    let token = again.csrf();
    let wrong = browser.post_form("/login/second-factor", &[("csrf_token", &token), ("code", "000000")]).await;
    assert_eq!(wrong.status, 422);
    let code = secret.code_at(step_at(server.clock.now()));
    let done = browser.submit("/login/second-factor", "/login/second-factor", &[("code", &code)]).await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert_eq!(recovery_codes(&done).len(), 10);
    assert_eq!(browser.get("/profile").await.status, 200, "logged in once enrolled");

    // Now it cannot be turned off, and the next login asks for a code.
    let off =
        browser.submit("/account/two-factor", "/account/two-factor/disable", &[("current_password", PASSWORD)]).await;
    assert_eq!(off.status, 409);
    let mut later = server.browser();
    password_step(&mut later, &name).await;
    next_step(&server);
    let code = secret.code_at(step_at(server.clock.now()));
    assert_eq!(send_code(&mut later, &code).await.status, 303);
    server.stop().await;
}

/// Issue #14 item 5: on a server that requires a second factor, the
/// authenticator secret shown at login belongs to that one pending login.
/// Someone who holds only the password sees a secret of their own, which
/// the owner never confirms, so it never opens the account.
#[tokio::test]
async fn the_enrolment_secret_belongs_to_one_pending_login() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let mut config = test_config(dir.path(), &clock);
    config.require_second_factor = true;
    let server = TestServer::start(config, clock).await;
    let name = unique_name("enrol");
    let mut owner = server.browser();
    assert_eq!(owner.register(&name, PASSWORD).await.location(), Some("/login/second-factor"));
    let owners = owner.get("/login/second-factor").await.element_text("totp-secret").unwrap();

    // The password thief's pending login shows another secret.
    let mut thief = server.browser();
    assert_eq!(thief.login(&name, PASSWORD).await.location(), Some("/login/second-factor"));
    let thiefs = thief.get("/login/second-factor").await.element_text("totp-secret").unwrap();
    assert_ne!(owners, thiefs, "each pending login enrols its own secret");

    // The owner confirms theirs.
    let owners = TotpSecret::from_base32(&owners.replace(' ', "")).unwrap();
    let code = owners.code_at(step_at(server.clock.now()));
    assert_eq!(send_code(&mut owner, &code).await.status, 200);
    assert_eq!(owner.get("/profile").await.status, 200);

    // The thief's secret opens nothing: not at the pending prompt (an app is
    // active now), nor at a later login.
    next_step(&server);
    let thiefs = TotpSecret::from_base32(&thiefs.replace(' ', "")).unwrap();
    let code = thiefs.code_at(step_at(server.clock.now()));
    assert_ne!(send_code(&mut thief, &code).await.status, 200, "the thief cannot enrol a second app");
    assert_ne!(thief.get("/profile").await.status, 200);
    let mut later = server.browser();
    password_step(&mut later, &name).await;
    let code = thiefs.code_at(step_at(server.clock.now()));
    assert_eq!(send_code(&mut later, &code).await.status, 401, "the thief's secret is no second factor");
    server.stop().await;
}

/// Issue #14 item 6: a pending second-factor login ends when the password
/// changes: whoever typed the old password cannot finish with a code.
#[tokio::test]
async fn a_password_change_ends_pending_logins() {
    let (server, _dir) = server().await;
    let name = unique_name("changed");
    let mut owner = server.browser();
    let (secret, _) = enrolled(&server, &mut owner, &name).await;
    let mut thief = server.browser();
    password_step(&mut thief, &name).await;
    let changed = owner
        .submit(
            "/account/password",
            "/account/password",
            &[("current_password", PASSWORD), ("new_password", "a brand new passphrase")],
        )
        .await;
    assert_eq!(changed.status, 303, "{}", changed.body);
    next_step(&server);
    let code = secret.code_at(step_at(server.clock.now()));
    let page = send_code(&mut thief, &code).await;
    assert_eq!(page.status, 401, "{}", page.body);
    assert!(page.element_text("second-factor-expired").is_some(), "{}", page.body);
    assert_ne!(thief.get("/profile").await.status, 200);
}

/// Issue #14 item 6: turning two-step verification on offers to sign out
/// the other sessions, checked by default, and does so when asked.
#[tokio::test]
async fn turning_it_on_signs_out_the_other_sessions_when_asked() {
    let (server, _dir) = server().await;
    let name = unique_name("others");
    let mut owner = server.browser();
    assert_eq!(owner.register(&name, PASSWORD).await.status, 303);
    let mut elsewhere = server.browser();
    assert_eq!(elsewhere.login(&name, PASSWORD).await.status, 303);
    assert_eq!(elsewhere.get("/profile").await.status, 200);

    let setup = owner.submit("/account/two-factor", "/account/two-factor/setup", &[]).await;
    assert!(setup.body.contains(r#"name="sign_out_others" value="1" id="sign-out-others" checked"#), "{}", setup.body);
    let typed = setup.element_text("totp-secret").unwrap();
    let secret = TotpSecret::from_base32(&typed.replace(' ', "")).unwrap();
    let code = secret.code_at(step_at(server.clock.now()));
    let done = owner
        .submit("/account/two-factor", "/account/two-factor/confirm", &[("code", &code), ("sign_out_others", "1")])
        .await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert_eq!(owner.get("/profile").await.status, 200, "this session stays");
    assert_eq!(elsewhere.get("/profile").await.status, 303, "the other session ended");
}
