//! Logging in through a real OpenID Connect provider (the `oidc-provider`
//! npm package, started on a loopback port): login, account creation, link,
//! unlink, key rotation, and the refusals — replayed callback, callback in
//! another browser or without the flow cookie, tampered state, wrong nonce —
//! and step-ups: `max_age` sent, the provider's `auth_time` recorded and
//! checked, single sign-on sessions older than the window refused.

mod harness;

use std::time::Duration;
use tessera_auth::UserDirectory;

use harness::external::{IdpBrowser, OidcProvider, CLIENT_ID, CLIENT_SECRET};
use harness::{test_config, unique_name, Browser, Page, TestServer};
use tessera::{Clock, ManualClock};
use tessera_server::oidc::OidcProviderConfig;
use tessera_server::registration_policy::RegistrationPolicy;
use tokio::net::TcpListener;

const PASSWORD: &str = "correct horse battery";

struct Setup {
    server: TestServer,
    provider: OidcProvider,
    _dir: tempfile::TempDir,
}

impl Setup {
    fn callback_prefix(&self) -> String {
        format!("{}/auth/oidc/test/callback", self.server.base)
    }

    /// Starts a login (or a link) from `form_path` and returns the provider's authorization URL.
    async fn start(&self, browser: &mut Browser, form_path: &str, next: Option<&str>) -> String {
        let token = browser.get(form_path).await.csrf();
        let mut fields = vec![("csrf_token", token.as_str())];
        if let Some(next) = next {
            fields.push(("next", next));
        }
        let started = browser.post_form("/auth/oidc/test/start", &fields).await;
        assert_eq!(started.status, 303, "start redirects to the provider: {}", started.body);
        assert!(
            started.set_cookies.iter().any(|c| c.starts_with("__Host-oidc-flow=") && c.contains("SameSite=Lax")),
            "flow cookie set: {:?}",
            started.set_cookies
        );
        let location = started.location().unwrap().to_owned();
        assert!(location.starts_with(&format!("{}/auth?", self.provider.issuer)), "{location}");
        for parameter in ["code_challenge_method=S256", "code_challenge=", "state=", "nonce=", "response_type=code"] {
            assert!(location.contains(parameter), "{parameter} missing in {location}");
        }
        location
    }

    /// A whole login as `hint`; returns the callback's answer.
    async fn login(&self, browser: &mut Browser, hint: &str) -> Page {
        let authorize = self.start(browser, "/login", None).await;
        let callback = self.provider.authorize(&authorize, hint, &self.callback_prefix()).await;
        browser.get(path_of(&callback)).await
    }

    /// A whole login as `hint` through `idp`, the user's browser at the
    /// provider (single sign-on when already signed in there); returns the
    /// callback's answer and whether the provider showed its login form.
    async fn login_at(&self, browser: &mut Browser, idp: &IdpBrowser, hint: &str) -> (Page, bool) {
        let authorize = self.start(browser, "/login", None).await;
        assert!(!authorize.contains("max_age="), "a plain login leaves the provider's session alone: {authorize}");
        let answer = idp.authorize(&authorize, hint, &self.callback_prefix()).await;
        (browser.get(path_of(&answer.callback)).await, answer.showed_login)
    }

    /// Presses "Confirm with Test ID" (`/auth/oidc/test/reauthenticate`);
    /// returns the provider's authorization URL, after checking that it
    /// asks for `max_age` = the window.
    async fn start_reauthentication(&self, browser: &mut Browser) -> String {
        let token = browser.get("/account").await.csrf();
        let started =
            browser.post_form("/auth/oidc/test/reauthenticate", &[("csrf_token", &token), ("next", "/account")]).await;
        assert_eq!(started.status, 303, "{}", started.body);
        let location = started.location().unwrap().to_owned();
        assert!(location.starts_with(&format!("{}/auth?", self.provider.issuer)), "{location}");
        assert!(location.contains(&format!("max_age={WINDOW_SECS}")), "max_age is the window: {location}");
        location
    }

    /// Moves tessera's clock and the provider's together.
    async fn advance(&self, by: Duration) {
        self.server.clock.advance(by);
        self.provider.advance_clock(by).await;
    }

    async fn stop(self) {
        self.server.stop().await;
        drop(self.provider);
    }
}

fn path_of(url: &str) -> &str {
    let after_scheme = url.split_once("://").map(|(_, rest)| rest).unwrap_or(url);
    &after_scheme[after_scheme.find('/').unwrap_or(after_scheme.len())..]
}

/// The recent-authentication window (the default), in seconds.
const WINDOW_SECS: u64 = 600;

/// An authorization request with `max_age` cut out, as a browser (or
/// whoever holds it) can do: the request travels through the browser.
fn without_max_age(url: &str) -> String {
    let stripped: Vec<&str> = url.split('&').filter(|part| !part.starts_with("max_age=")).collect();
    let stripped = stripped.join("&");
    assert_ne!(stripped, url, "there was a max_age to strip");
    stripped
}

async fn setup(test: &str, link_by_verified_email: bool) -> Option<Setup> {
    setup_with(test, link_by_verified_email, true).await
}

/// A server and provider; `require_auth_time` false makes the provider
/// leave `auth_time` out of ID tokens unless the request asks for it.
async fn setup_with(test: &str, link_by_verified_email: bool, require_auth_time: bool) -> Option<Setup> {
    setup_configured(test, link_by_verified_email, require_auth_time, |_| {}).await
}

/// [`setup_with`], with a last change to the configuration.
async fn setup_configured(
    test: &str,
    link_by_verified_email: bool,
    require_auth_time: bool,
    configure: impl FnOnce(&mut tessera_server::AppConfig),
) -> Option<Setup> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://localhost:{}", listener.local_addr().unwrap().port());
    let callback = format!("{base}/auth/oidc/test/callback");
    let provider = OidcProvider::start_with(&[callback], test, require_auth_time).await?;
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let mut config = test_config(dir.path(), &clock);
    config.public_url = Some(base);
    config.oidc_jwks_min_refresh = Duration::ZERO;
    config.oidc_providers = vec![OidcProviderConfig {
        id: "test".into(),
        issuer: provider.issuer.clone(),
        client_id: CLIENT_ID.into(),
        client_secret: Some(CLIENT_SECRET.into()),
        client_secret_env: None,
        scopes: vec!["openid".into(), "email".into(), "profile".into()],
        display_name: Some("Test ID".into()),
        link_by_verified_email,
        allow_signup: None,
        allowed_email_domains: vec![],
        groups_claim: None,
    }];
    assert_eq!(config.reauth_window, Duration::from_secs(WINDOW_SECS));
    configure(&mut config);
    let server = TestServer::start_on(config, clock, listener).await;
    Some(Setup { server, provider, _dir: dir })
}

#[tokio::test]
async fn login_creates_a_password_less_account_and_logs_in_like_a_password_login() {
    let Some(setup) = setup("oidc login", false).await else { return };
    let mut browser = setup.server.browser();
    let login_page = browser.get("/login").await;
    assert!(login_page.body.contains("action=\"/auth/oidc/test/start\""), "a button per provider");
    assert!(login_page.body.contains("Test ID"));

    // A planted session ID is never adopted.
    let planted = tessera::SessionId::generate().encode();
    browser.cookies.insert("__Host-id".into(), planted.clone());
    let done = setup.login(&mut browser, "alice").await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert_eq!(done.location(), Some("/profile"));
    let session = done.session_cookie().expect("a session cookie").clone();
    assert!(session.contains("HttpOnly") && session.contains("Secure") && session.contains("SameSite=Lax"));
    assert_ne!(browser.session_id().unwrap(), planted);
    assert!(done.set_cookies.iter().any(|c| c.starts_with("__Host-oidc-flow=;") && c.contains("Max-Age=0")));
    let profile = browser.get("/profile").await;
    assert_eq!(profile.element_text("username").as_deref(), Some("alice"));

    let account = browser.get("/account").await;
    assert_eq!(account.status, 200);
    assert_eq!(account.element_text("password-state").as_deref(), Some("none"));
    assert!(account.body.contains("alice@example.test"), "verified email listed");
    assert!(account.body.contains("cannot be unlinked"), "the only way to log in stays");
    let db = &setup.server.app_state.db;
    let user = db.users().user_by_name("alice").await.unwrap().unwrap();
    assert_eq!(user.password_hash, None);
    // The same events as a password login, through the same core.
    let events = db.audit_events(user.id, 100).await.unwrap();
    assert!(events.iter().any(|e| e.kind == "login_succeeded"), "audited: {events:?}");
    assert!(events.iter().any(|e| e.kind == "sign_up"), "the sign-up is audited like a registration: {events:?}");
    // Like every sign-in, a provider sign-in leaves the device cookie: this
    // browser is new to the account now, and no longer next time.
    assert!(done.set_cookies.iter().any(|c| c.starts_with("__Host-device=")), "{:?}", done.set_cookies);
    let new_devices =
        |events: &[tessera_server::audit::AuditEvent]| events.iter().filter(|e| e.kind == "new_device_sign_in").count();
    assert_eq!(new_devices(&events), 1, "{events:?}");
    setup.server.app_state.activity.flush(db).await.unwrap();
    let now_secs = setup.server.clock.now().as_millis() / 1000;
    let hours = tessera_server::activity_stats::recent(db, now_secs, 2).await.unwrap();
    assert_eq!(hours.iter().map(|h| h.counts.logins).sum::<i64>(), 1, "counted in the activity statistics");
    browser.logout().await;
    assert_eq!(setup.login(&mut browser, "alice").await.location(), Some("/profile"));
    assert_eq!(new_devices(&db.audit_events(user.id, 100).await.unwrap()), 1, "the same browser is no new device");
    let identities = db.identities_of(user.id).await.unwrap();
    assert_eq!(identities.len(), 1);
    assert_eq!(
        (identities[0].issuer.as_str(), identities[0].subject.as_str()),
        (setup.provider.issuer.as_str(), "sub-alice")
    );

    // The same identity again: the same account, and a second person whose
    // preferred_username is taken gets a suffixed name.
    browser.logout().await;
    let again = setup.login(&mut browser, "alice").await;
    assert_eq!(again.status, 303);
    assert_eq!(browser.get("/profile").await.element_text("username").as_deref(), Some("alice"));
    setup.server.browser().register("bob", PASSWORD).await;
    let mut other = setup.server.browser();
    setup.login(&mut other, "bob").await;
    assert_eq!(other.get("/profile").await.element_text("username").as_deref(), Some("bob-2"));

    // The password account "bob" cannot log in with it: no password on bob-2.
    assert_eq!(setup.server.browser().login("bob-2", PASSWORD).await.status, 401);
    setup.stop().await;
}

#[tokio::test]
async fn replayed_cross_browser_tampered_and_wrong_nonce_callbacks_are_refused() {
    let Some(setup) = setup("oidc refusals", false).await else { return };
    let prefix = setup.callback_prefix();

    // Replayed: the same callback twice in the same browser, even with the
    // flow cookie put back.
    let mut browser = setup.server.browser();
    let authorize = setup.start(&mut browser, "/login", None).await;
    let flow_cookie = browser.cookies.get("__Host-oidc-flow").cloned().unwrap();
    let callback = setup.provider.authorize(&authorize, "carol", &prefix).await;
    assert_eq!(browser.get(path_of(&callback)).await.status, 303);
    let replay = browser.get(path_of(&callback)).await;
    assert_eq!(replay.status, 400);
    assert!(replay.body.contains("This sign-in was not started here"), "{}", replay.body);
    browser.cookies.insert("__Host-oidc-flow".into(), flow_cookie);
    let replay = browser.get(path_of(&callback)).await;
    assert_eq!(replay.status, 400);
    assert!(replay.body.contains("This sign-in was already used"), "{}", replay.body);

    // Another browser (no flow cookie) with a fresh, unused callback.
    let mut starter = setup.server.browser();
    let authorize = setup.start(&mut starter, "/login", None).await;
    let callback = setup.provider.authorize(&authorize, "dave", &prefix).await;
    let mut elsewhere = setup.server.browser();
    let refused = elsewhere.get(path_of(&callback)).await;
    assert_eq!(refused.status, 400);
    assert!(refused.body.contains("started in another browser"));
    assert!(elsewhere.session_id().is_none());
    // ...and a flow cookie of another flow does not fit either.
    let mut mixed = setup.server.browser();
    setup.start(&mut mixed, "/login", None).await;
    let refused = mixed.get(path_of(&callback)).await;
    assert_eq!(refused.status, 400);
    assert!(refused.body.contains("does not belong to the sign-in this browser started"));
    // The rightful browser still finishes (nothing above consumed its flow).
    assert_eq!(starter.get(path_of(&callback)).await.status, 303);

    // Tampered state.
    let mut browser = setup.server.browser();
    let authorize = setup.start(&mut browser, "/login", None).await;
    let callback = setup.provider.authorize(&authorize, "erin", &prefix).await;
    let tampered = callback.replacen("state=", "state=x", 1);
    let refused = browser.get(path_of(&tampered)).await;
    assert_eq!(refused.status, 400);
    assert!(refused.body.contains("Sign-in refused"));
    assert!(browser.session_id().is_none());

    // Tampered flow cookie.
    let mut browser = setup.server.browser();
    let authorize = setup.start(&mut browser, "/login", None).await;
    let callback = setup.provider.authorize(&authorize, "erin", &prefix).await;
    let cookie = browser.cookies.get_mut("__Host-oidc-flow").unwrap();
    let last = cookie.pop().unwrap();
    cookie.push(if last == 'A' { 'B' } else { 'A' });
    assert_eq!(browser.get(path_of(&callback)).await.status, 400);

    // Wrong nonce: the authorization request is altered on its way to the
    // provider, so the ID token carries another nonce than the flow expects.
    let mut browser = setup.server.browser();
    let authorize = setup.start(&mut browser, "/login", None).await;
    let nonce_at = authorize.find("nonce=").unwrap() + "nonce=".len();
    let altered = format!("{}evil{}", &authorize[..nonce_at], &authorize[nonce_at..]);
    let callback = setup.provider.authorize(&altered, "frank", &prefix).await;
    let refused = browser.get(path_of(&callback)).await;
    assert_eq!(refused.status, 400);
    assert!(refused.body.contains("could not be verified"), "{}", refused.body);
    assert!(browser.session_id().is_none());
    assert!(setup.server.app_state.db.users().user_by_name("frank").await.unwrap().is_none());

    // The provider's own refusal.
    let mut browser = setup.server.browser();
    setup.start(&mut browser, "/login", None).await;
    let refused = browser.get("/auth/oidc/test/callback?error=access_denied&state=x").await;
    assert_eq!(refused.status, 400);
    assert!(refused.body.contains("access_denied"));

    // An expired flow (ten minutes).
    let mut browser = setup.server.browser();
    let authorize = setup.start(&mut browser, "/login", None).await;
    let callback = setup.provider.authorize(&authorize, "gina", &prefix).await;
    setup.server.clock.advance(Duration::from_secs(601));
    assert_eq!(browser.get(path_of(&callback)).await.status, 400);
    setup.stop().await;
}

#[tokio::test]
async fn link_to_a_password_account_then_unlink() {
    let Some(setup) = setup("oidc link/unlink", false).await else { return };
    let name = unique_name("heidi");
    let mut browser = setup.server.browser();
    browser.register(&name, PASSWORD).await;
    let before = browser.get("/account").await;
    assert!(before.body.contains("id=\"no-identities\""));
    assert!(before.body.contains("id=\"link-test\""));

    let authorize = setup.start(&mut browser, "/account", None).await;
    let callback = setup.provider.authorize(&authorize, "heidi-oidc", &setup.callback_prefix()).await;
    let linked = browser.get(path_of(&callback)).await;
    assert_eq!(linked.status, 303, "{}", linked.body);
    assert_eq!(linked.location(), Some("/account"));
    let account = browser.get("/account").await;
    assert!(account.body.contains("data-subject=\"sub-heidi-oidc\""), "listed");
    assert!(account.body.contains("Unlink"), "a password remains, so unlinking is offered");

    // The identity now logs into this account.
    let mut elsewhere = setup.server.browser();
    setup.login(&mut elsewhere, "heidi-oidc").await;
    assert_eq!(elsewhere.get("/profile").await.element_text("username").as_deref(), Some(name.as_str()));

    // Another account cannot take it.
    let mut intruder = setup.server.browser();
    intruder.register(&unique_name("ivan"), PASSWORD).await;
    let authorize = setup.start(&mut intruder, "/account", None).await;
    let callback = setup.provider.authorize(&authorize, "heidi-oidc", &setup.callback_prefix()).await;
    let refused = intruder.get(path_of(&callback)).await;
    assert_eq!(refused.status, 409);
    assert!(refused.body.contains("belongs to another account"));

    // Unlink.
    let token = account.csrf();
    let issuer = setup.provider.issuer.clone();
    let unlinked = browser
        .post_form(
            "/account/identities/unlink",
            &[("csrf_token", &token), ("issuer", &issuer), ("subject", "sub-heidi-oidc")],
        )
        .await;
    assert_eq!(unlinked.status, 303);
    assert!(browser.get("/account").await.body.contains("id=\"no-identities\""));
    // Logging in with it now creates a new account.
    let mut fresh = setup.server.browser();
    setup.login(&mut fresh, "heidi-oidc").await;
    assert_eq!(fresh.get("/profile").await.element_text("username").as_deref(), Some("heidi-oidc"));

    // An OIDC-only account cannot unlink its last identity, but can once it
    // has a second one.
    let account = fresh.get("/account").await;
    let token = account.csrf();
    let refused = fresh
        .post_form(
            "/account/identities/unlink",
            &[("csrf_token", &token), ("issuer", &issuer), ("subject", "sub-heidi-oidc")],
        )
        .await;
    assert_eq!(refused.status, 409);
    let authorize = setup.start(&mut fresh, "/account", None).await;
    let callback = setup.provider.authorize(&authorize, "heidi-second", &setup.callback_prefix()).await;
    assert_eq!(fresh.get(path_of(&callback)).await.location(), Some("/account"));
    let token = fresh.get("/account").await.csrf();
    let ok = fresh
        .post_form(
            "/account/identities/unlink",
            &[("csrf_token", &token), ("issuer", &issuer), ("subject", "sub-heidi-oidc")],
        )
        .await;
    assert_eq!(ok.status, 303);
    setup.stop().await;
}

#[tokio::test]
async fn email_linking_only_when_enabled_and_verified_and_keys_rotate() {
    let Some(setup) = setup("oidc email linking", true).await else { return };
    // "judy" gets an identity with a verified address.
    let mut first = setup.server.browser();
    setup.login(&mut first, "judy").await;
    let judy = setup.server.app_state.db.users().user_by_name("judy").await.unwrap().unwrap();
    // judy's account also has an identity elsewhere whose verified address
    // is dan@example.test (linked directly in the database); the provider's
    // "dan" asserts that same address as verified, so his first login joins
    // judy's account.
    let db = &setup.server.app_state.db;
    let twin = tessera_server::oidc::provider::VerifiedIdentity {
        issuer: "https://other-issuer.example".into(),
        subject: "someone".into(),
        verified_email: Some("dan@example.test".into()),
        preferred_username: Some("dan".into()),
        any_email: Some("dan@example.test".into()),
    };
    db.link_identity(judy.id, &twin, tessera::Timestamp(0)).await.unwrap();
    let mut dan = setup.server.browser();
    setup.login(&mut dan, "dan").await;
    assert_eq!(dan.get("/profile").await.element_text("username").as_deref(), Some("judy"), "joined by verified email");
    // An unverified address never links.
    let unverified = tessera_server::oidc::provider::VerifiedIdentity {
        issuer: "https://other-issuer.example".into(),
        subject: "someone-else".into(),
        verified_email: Some("unverified-kim@example.test".into()),
        preferred_username: None,
        any_email: None,
    };
    db.link_identity(judy.id, &unverified, tessera::Timestamp(0)).await.unwrap();
    let mut kim = setup.server.browser();
    setup.login(&mut kim, "unverified-kim").await;
    assert_eq!(kim.get("/profile").await.element_text("username").as_deref(), Some("unverified-kim"));

    // Key rotation: the provider restarts with a new signing key; the cached
    // JWKS lacks its kid, tessera fetches discovery again and accepts it.
    let Setup { server, provider, _dir } = setup;
    let provider = provider.restart_with_new_keys().await;
    let setup = Setup { server, provider, _dir };
    let mut after = setup.server.browser();
    let done = setup.login(&mut after, "judy").await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert_eq!(after.get("/profile").await.element_text("username").as_deref(), Some("judy"));
    setup.stop().await;
}

/// Issue #14 item 3: a link is bound to the session that started it. Left
/// unfinished by a user who then logged out (or who logged out and in
/// again, or after whom someone else logged in), it cannot be finished:
/// nothing is linked and nobody is logged in by it.
#[tokio::test]
async fn a_link_left_unfinished_cannot_be_finished_by_the_next_person_at_the_browser() {
    let Some(setup) = setup("oidc link bound to its session", false).await else { return };
    let db = setup.server.app_state.db.clone();
    let alice = unique_name("alice");
    let bob = unique_name("bob");
    setup.server.browser().register(&bob, PASSWORD).await;
    let mut browser = setup.server.browser();
    browser.register(&alice, PASSWORD).await;
    let alice_id = db.users().user_by_name(&alice.to_lowercase()).await.unwrap().unwrap().id;

    for (case, then) in [("logged out", None), ("logged in again", Some(&alice)), ("someone else", Some(&bob))] {
        if browser.get("/profile").await.status != 200 {
            assert_eq!(browser.login(&alice, PASSWORD).await.status, 303, "{case}");
        }
        let authorize = setup.start(&mut browser, "/account", None).await;
        assert_eq!(browser.logout().await.status, 303, "{case}");
        if let Some(name) = then {
            assert_eq!(browser.login(name, PASSWORD).await.status, 303, "{case}");
        }
        // The next person at the browser signs in at the provider.
        let hint = format!("mallory-{}", case.replace(' ', "-"));
        let callback = setup.provider.authorize(&authorize, &hint, &setup.callback_prefix()).await;
        let answer = browser.get(path_of(&callback)).await;
        assert_eq!(answer.status, 409, "{case}: {}", answer.body);
        assert!(answer.body.contains("not linked"), "{case}: {}", answer.body);
        let linked = db.identity(&setup.provider.issuer, &format!("sub-{hint}")).await.unwrap();
        assert!(linked.is_none(), "{case}: the identity was linked to {linked:?}");
        let profile = browser.get("/profile").await;
        match then {
            None => assert_eq!(profile.status, 303, "{case}: nobody is logged in"),
            Some(name) => assert_eq!(profile.element_text("username").as_deref(), Some(name.as_str()), "{case}"),
        }
        if then.is_some() {
            browser.logout().await;
        }
    }
    assert!(db.identities_of(alice_id).await.unwrap().is_empty(), "nothing was linked to alice");

    // Finished in the session that started it, the link works as before.
    assert_eq!(browser.login(&alice, PASSWORD).await.status, 303);
    let authorize = setup.start(&mut browser, "/account", None).await;
    let callback = setup.provider.authorize(&authorize, "alice-own", &setup.callback_prefix()).await;
    let linked = browser.get(path_of(&callback)).await;
    assert_eq!(linked.location(), Some("/account"), "{}", linked.body);
    assert_eq!(db.identities_of(alice_id).await.unwrap().len(), 1);
    setup.stop().await;
}

/// Posts the link button of `/account` with extra fields.
async fn start_link(browser: &mut Browser, fields: &[(&str, &str)]) -> Page {
    let token = browser.get("/account").await.csrf();
    let mut all = vec![("csrf_token", token.as_str())];
    all.extend_from_slice(fields);
    browser.post_form("/auth/oidc/test/start", &all).await
}

/// The kinds of the user's audit events, newest first.
async fn audit_kinds(setup: &Setup, user_id: i64) -> Vec<String> {
    let db = &setup.server.app_state.db;
    db.audit_events(user_id, 50).await.unwrap().into_iter().map(|event| event.kind).collect()
}

#[tokio::test]
async fn linking_and_unlinking_need_a_recent_authentication() {
    let Some(setup) = setup("oidc link needs recent auth", false).await else { return };
    let name = unique_name("judy");
    let mut browser = setup.server.browser();
    browser.register(&name, PASSWORD).await;
    let user = setup.server.app_state.db.users().user_by_name(&name).await.unwrap().unwrap();

    // Eleven minutes after the login, a session cookie alone cannot link.
    setup.advance(Duration::from_secs(11 * 60)).await;
    let account = browser.get("/account").await;
    assert!(account.body.contains("id=\"link-pw-test\""), "the link button asks for the password");
    let refused = start_link(&mut browser, &[]).await;
    assert_eq!(refused.status, 401, "{}", refused.body);
    assert!(refused.body.contains("confirm with your current password"), "{}", refused.body);
    assert!(!refused.set_cookies.iter().any(|c| c.starts_with("__Host-oidc-flow=")), "nothing started");
    let wrong = start_link(&mut browser, &[("current_password", "not my password")]).await;
    assert_eq!(wrong.status, 401);

    // With the password: a step-up (new session ID), then the link.
    let before = browser.session_id().unwrap();
    let started = start_link(&mut browser, &[("current_password", PASSWORD)]).await;
    assert_eq!(started.status, 303, "{}", started.body);
    let after = browser.session_id().unwrap();
    assert_ne!(before, after, "the step-up rotated the session ID");
    let mut stale = Browser::new(&setup.server.base);
    stale.cookies.insert("__Host-id".into(), before);
    assert_eq!(stale.get("/profile").await.status, 303, "the old ID is dead");
    let location = started.location().unwrap();
    assert!(location.contains(&format!("max_age={WINDOW_SECS}")), "a link is a step-up: {location}");
    let callback = setup.provider.authorize(location, "judy-oidc", &setup.callback_prefix()).await;
    let linked = browser.get(path_of(&callback)).await;
    assert_eq!(linked.location(), Some("/account"), "{}", linked.body);
    assert!(audit_kinds(&setup, user.id).await.contains(&"identity_linked".to_owned()));

    // Unlinking, eleven minutes later, needs the password again.
    setup.advance(Duration::from_secs(11 * 60)).await;
    let issuer = setup.provider.issuer.clone();
    let token = browser.get("/account").await.csrf();
    let fields = [("csrf_token", token.as_str()), ("issuer", issuer.as_str()), ("subject", "sub-judy-oidc")];
    let refused = browser.post_form("/account/identities/unlink", &fields).await;
    assert_eq!(refused.status, 401);
    let db = &setup.server.app_state.db;
    assert_eq!(db.identities_of(user.id).await.unwrap().len(), 1, "nothing was unlinked");
    let mut with_password = fields.to_vec();
    with_password.push(("current_password", PASSWORD));
    let unlinked = browser.post_form("/account/identities/unlink", &with_password).await;
    assert_eq!(unlinked.status, 303, "{}", unlinked.body);
    assert!(db.identities_of(user.id).await.unwrap().is_empty());
    assert_eq!(audit_kinds(&setup, user.id).await.first().map(String::as_str), Some("identity_unlinked"));
    let activity = browser.get("/account/activity").await;
    assert!(activity.body.contains("A sign-in provider was unlinked"), "shown to the user");
    setup.stop().await;
}

/// Deletes a password-less account from `/account`, confirming with its name.
async fn delete_password_less(browser: &mut Browser, username: &str) -> Page {
    let token = browser.get("/account").await.csrf();
    browser.post_form("/account/delete", &[("csrf_token", &token), ("confirm_username", username)]).await
}

/// Unlinks (issuer, subject) from `/account`.
async fn unlink(browser: &mut Browser, issuer: &str, subject: &str) -> Page {
    let token = browser.get("/account").await.csrf();
    browser
        .post_form("/account/identities/unlink", &[("csrf_token", &token), ("issuer", issuer), ("subject", subject)])
        .await
}

#[tokio::test]
async fn step_ups_send_max_age_and_record_the_providers_auth_time() {
    let Some(setup) = setup("oidc auth_time recorded", false).await else { return };
    let hint = unique_name("lena");
    let idp = setup.provider.browser();
    let mut browser = setup.server.browser();
    let (done, showed_login) = setup.login_at(&mut browser, &idp, &hint).await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert!(showed_login, "the first sign-in at the provider goes through its form");
    let db = &setup.server.app_state.db;
    let user = db.identity(&setup.provider.issuer, &format!("sub-{hint}")).await.unwrap().unwrap();
    let account = browser.get("/account").await;
    assert!(!account.body.contains("id=\"reauth-help\""), "signed in at the provider just now: recent");
    let username = account.element_text("username").unwrap();

    // Eight minutes later the user logs out of tessera and in again. The
    // provider answers from its session, so the authentication is still the
    // one of eight minutes ago: three minutes on it is stale, although the
    // tessera login is only three minutes old.
    setup.advance(Duration::from_secs(8 * 60)).await;
    browser.logout().await;
    let (again, showed_login) = setup.login_at(&mut browser, &idp, &hint).await;
    assert_eq!(again.status, 303, "{}", again.body);
    assert!(!showed_login, "single sign-on: no form");
    setup.advance(Duration::from_secs(3 * 60)).await;
    let account = browser.get("/account").await;
    assert!(account.body.contains("id=\"reauth-help\""), "stale: {}", account.body);
    assert!(account.body.contains("id=\"reauth-test\""), "Confirm with Test ID is offered: {}", account.body);
    let refused = delete_password_less(&mut browser, &username).await;
    assert_eq!(refused.status, 401, "the login counts from the provider's auth_time: {}", refused.body);
    assert!(refused.body.contains("Confirm with"), "{}", refused.body);
    assert!(db.users().user_by_id(user.user_id).await.unwrap().is_some());

    // "Confirm with Test ID" sends max_age; the provider's sign-in is eleven
    // minutes old, so it shows its form again. The step-up rotates the
    // session ID and makes the session recent.
    let before = browser.session_id().unwrap();
    let authorize = setup.start_reauthentication(&mut browser).await;
    assert!(
        browser.cookies.contains_key("__Host-oidc-flow"),
        "the flow (with the max_age it sent) is in the flow cookie"
    );
    let answer = idp.authorize(&authorize, &hint, &setup.callback_prefix()).await;
    assert!(answer.showed_login, "max_age made the provider ask again");
    let confirmed = browser.get(path_of(&answer.callback)).await;
    assert_eq!(confirmed.status, 303, "{}", confirmed.body);
    assert_eq!(confirmed.location(), Some("/account"));
    assert_ne!(browser.session_id().unwrap(), before, "the step-up rotated the session ID");
    let mut old = Browser::new(&setup.server.base);
    old.cookies.insert("__Host-id".into(), before);
    assert_eq!(old.get("/profile").await.status, 303, "the old ID is dead");
    assert!(!browser.get("/account").await.body.contains("id=\"reauth-help\""), "recent again");

    // Seven minutes on, confirming again needs no form (the provider's
    // sign-in is within max_age) and records that sign-in's time, not the
    // callback's: four more minutes and the session is stale.
    setup.advance(Duration::from_secs(7 * 60)).await;
    let authorize = setup.start_reauthentication(&mut browser).await;
    let answer = idp.authorize(&authorize, &hint, &setup.callback_prefix()).await;
    assert!(!answer.showed_login, "within max_age the provider answers from its session");
    assert_eq!(browser.get(path_of(&answer.callback)).await.location(), Some("/account"));
    setup.advance(Duration::from_secs(4 * 60)).await;
    let refused = delete_password_less(&mut browser, &username).await;
    assert_eq!(refused.status, 401, "marked with the eleven-minute-old auth_time: {}", refused.body);
    assert!(db.users().user_by_id(user.user_id).await.unwrap().is_some());
    setup.stop().await;
}

#[tokio::test]
async fn an_old_provider_session_cannot_link_unlink_or_delete_until_the_user_signs_in_there_again() {
    let Some(setup) = setup("oidc old provider session", false).await else { return };
    let prefix = setup.callback_prefix();
    let issuer = setup.provider.issuer.clone();
    let hint = unique_name("max");
    let idp = setup.provider.browser();
    let mut browser = setup.server.browser();
    assert_eq!(setup.login_at(&mut browser, &idp, &hint).await.0.status, 303);
    let db = &setup.server.app_state.db;
    let user_id = db.identity(&issuer, &format!("sub-{hint}")).await.unwrap().unwrap().user_id;
    let username = browser.get("/account").await.element_text("username").unwrap();

    // While recent, a second identity is linked (so that one can be
    // unlinked later). The link is a step-up too: it sends max_age.
    let second = format!("{hint}-second");
    let started = start_link(&mut browser, &[]).await;
    assert_eq!(started.status, 303, "{}", started.body);
    let location = started.location().unwrap();
    assert!(location.contains(&format!("max_age={WINDOW_SECS}")), "{location}");
    let callback = setup.provider.authorize(location, &second, &prefix).await;
    assert_eq!(browser.get(path_of(&callback)).await.location(), Some("/account"));
    assert_eq!(db.identities_of(user_id).await.unwrap().len(), 2);

    // Fifteen minutes on, logging out and in again is not enough: the
    // provider answers from its old session, and link, unlink and delete
    // are refused.
    setup.advance(Duration::from_secs(15 * 60)).await;
    browser.logout().await;
    let (again, showed_login) = setup.login_at(&mut browser, &idp, &hint).await;
    assert_eq!(again.status, 303, "{}", again.body);
    assert!(!showed_login, "single sign-on: no form");
    let refused = start_link(&mut browser, &[]).await;
    assert_eq!(refused.status, 401, "{}", refused.body);
    assert!(refused.body.contains("Confirm with"), "{}", refused.body);
    assert!(!refused.set_cookies.iter().any(|c| c.starts_with("__Host-oidc-flow=")), "nothing started");
    let second_subject = format!("sub-{second}");
    assert_eq!(unlink(&mut browser, &issuer, &second_subject).await.status, 401);
    assert_eq!(delete_password_less(&mut browser, &username).await.status, 401);
    assert_eq!(db.identities_of(user_id).await.unwrap().len(), 2, "nothing was unlinked");

    // Cutting max_age out of the Confirm request on its way to the provider
    // gets an answer from the old session with its old auth_time: refused,
    // and recorded in the activity log.
    let authorize = setup.start_reauthentication(&mut browser).await;
    let answer = idp.authorize(&without_max_age(&authorize), &hint, &prefix).await;
    assert!(!answer.showed_login, "without max_age the provider does not ask");
    let refused = browser.get(path_of(&answer.callback)).await;
    assert_eq!(refused.status, 401, "auth_time older than max_age: {}", refused.body);
    assert!(refused.body.contains("did not confirm it is you"), "{}", refused.body);
    assert_eq!(audit_kinds(&setup, user_id).await.first().map(String::as_str), Some("reauthentication_refused"));
    assert!(browser
        .get("/account/activity")
        .await
        .body
        .contains("A confirmation through a sign-in provider was refused"));
    assert_eq!(delete_password_less(&mut browser, &username).await.status, 401, "still not recent");

    // Someone else signed in at the provider cannot confirm for this account.
    let authorize = setup.start_reauthentication(&mut browser).await;
    let callback = setup.provider.authorize(&authorize, &unique_name("stranger"), &prefix).await;
    let refused = browser.get(path_of(&callback)).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(refused.body.contains("not one of your sign-in methods"), "{}", refused.body);
    assert_eq!(delete_password_less(&mut browser, &username).await.status, 401, "still not recent");

    // The real thing: the provider shows its login form, and then linking,
    // unlinking and deleting all work.
    let authorize = setup.start_reauthentication(&mut browser).await;
    let answer = idp.authorize(&authorize, &hint, &prefix).await;
    assert!(answer.showed_login, "max_age made the provider ask again");
    assert_eq!(browser.get(path_of(&answer.callback)).await.location(), Some("/account"));
    let started = start_link(&mut browser, &[]).await;
    assert_eq!(started.status, 303, "{}", started.body);
    let callback = setup.provider.authorize(started.location().unwrap(), &format!("{hint}-third"), &prefix).await;
    assert_eq!(browser.get(path_of(&callback)).await.location(), Some("/account"));
    assert_eq!(unlink(&mut browser, &issuer, &second_subject).await.status, 303);
    assert_eq!(db.identities_of(user_id).await.unwrap().len(), 2, "third in, second out");
    let deleted = delete_password_less(&mut browser, &username).await;
    assert_eq!(deleted.status, 303, "{}", deleted.body);
    assert_eq!(deleted.location(), Some("/"));
    assert!(db.users().user_by_id(user_id).await.unwrap().is_none(), "the account is gone");
    assert_eq!(browser.get("/profile").await.status, 303, "and the browser is logged out");
    setup.stop().await;
}

#[tokio::test]
async fn without_auth_time_a_provider_login_is_not_recent_and_step_ups_require_it() {
    let Some(setup) = setup_with("oidc without auth_time", false, false).await else { return };
    let prefix = setup.callback_prefix();
    let hint = unique_name("nora");
    let idp = setup.provider.browser();
    let mut browser = setup.server.browser();
    let (done, showed_login) = setup.login_at(&mut browser, &idp, &hint).await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert!(showed_login);
    let db = &setup.server.app_state.db;
    let user_id = db.identity(&setup.provider.issuer, &format!("sub-{hint}")).await.unwrap().unwrap().user_id;

    // The provider signed the user in just now but did not say when: it
    // could as well have been days ago, so it is not a recent authentication.
    let account = browser.get("/account").await;
    assert!(account.body.contains("id=\"reauth-help\""), "{}", account.body);
    let username = account.element_text("username").unwrap();
    assert_eq!(start_link(&mut browser, &[]).await.status, 401);
    assert_eq!(delete_password_less(&mut browser, &username).await.status, 401);

    // A step-up whose max_age was cut out gets an ID token without
    // auth_time: refused.
    let authorize = setup.start_reauthentication(&mut browser).await;
    let answer = idp.authorize(&without_max_age(&authorize), &hint, &prefix).await;
    let refused = browser.get(path_of(&answer.callback)).await;
    assert_eq!(refused.status, 401, "{}", refused.body);
    assert!(refused.body.contains("did not say when"), "{}", refused.body);
    assert_eq!(delete_password_less(&mut browser, &username).await.status, 401);

    // A link whose max_age was cut out: nothing is linked.
    let name = unique_name("olga");
    let mut other = setup.server.browser();
    other.register(&name, PASSWORD).await;
    let other_user = db.users().user_by_name(&name).await.unwrap().unwrap();
    let started = start_link(&mut other, &[]).await;
    assert_eq!(started.status, 303, "{}", started.body);
    let callback = setup.provider.authorize(&without_max_age(started.location().unwrap()), "olga-oidc", &prefix).await;
    let refused = other.get(path_of(&callback)).await;
    assert_eq!(refused.status, 401, "{}", refused.body);
    assert!(refused.body.contains("Nothing was linked"), "{}", refused.body);
    assert!(db.identities_of(other_user.id).await.unwrap().is_empty());
    assert_eq!(audit_kinds(&setup, other_user.id).await.first().map(String::as_str), Some("reauthentication_refused"));

    // With max_age the provider must send auth_time; its sign-in is recent,
    // so it answers without its form, and the step-up counts.
    let authorize = setup.start_reauthentication(&mut browser).await;
    let answer = idp.authorize(&authorize, &hint, &prefix).await;
    assert!(!answer.showed_login, "the provider's sign-in is within max_age");
    assert_eq!(browser.get(path_of(&answer.callback)).await.location(), Some("/account"));
    let deleted = delete_password_less(&mut browser, &username).await;
    assert_eq!(deleted.status, 303, "{}", deleted.body);
    assert!(db.users().user_by_id(user_id).await.unwrap().is_none());
    setup.stop().await;
}

#[tokio::test]
async fn a_provider_login_asks_for_the_second_factor_of_accounts_that_have_one() {
    use tessera::Clock;
    use tessera_auth::second_factor::totp::{step_at, TotpSecret, STEP_SECONDS};

    let Some(setup) = setup("oidc second factor", false).await else { return };
    let mut browser = setup.server.browser();
    assert_eq!(setup.login(&mut browser, "carol").await.location(), Some("/profile"));
    // Fresh from the provider (auth_time now): recent enough to set it up.
    let form = browser.submit("/account/two-factor", "/account/two-factor/setup", &[]).await;
    assert_eq!(form.status, 200, "{}", form.body);
    let secret = TotpSecret::from_base32(&form.element_text("totp-secret").unwrap().replace(' ', "")).unwrap();
    let code = secret.code_at(step_at(setup.server.clock.now()));
    let on = browser.submit("/account/two-factor", "/account/two-factor/confirm", &[("code", &code)]).await;
    assert_eq!(on.status, 200, "{}", on.body);
    browser.logout().await;

    let provider_login = setup.login(&mut browser, "carol").await;
    assert_eq!(provider_login.location(), Some("/login/second-factor"), "{}", provider_login.body);
    assert_ne!(browser.get("/profile").await.status, 200, "the provider login alone does not log in");
    setup.advance(Duration::from_secs(STEP_SECONDS)).await;
    let code = secret.code_at(step_at(setup.server.clock.now()));
    let done = browser.submit("/login/second-factor", "/login/second-factor", &[("code", &code)]).await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert_eq!(browser.get("/profile").await.element_text("username").as_deref(), Some("carol"));
    setup.stop().await;
}

#[tokio::test]
async fn first_logins_create_accounts_only_where_the_registration_policy_allows() {
    // Under `invite`, a provider without `allow_signup` creates no account:
    // an invitation cannot travel through a provider login.
    let configure = |config: &mut tessera_server::AppConfig| config.registration = RegistrationPolicy::Invite;
    let Some(setup) = setup_configured("oidc signup refused", false, true, configure).await else { return };
    let mut browser = setup.server.browser();
    let refused = setup.login(&mut browser, "alice").await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(refused.body.contains("cannot create one"), "{}", refused.body);
    assert!(setup.server.app_state.db.users().user_by_name("alice").await.unwrap().is_none());
    assert_eq!(browser.get("/profile").await.status, 303, "not logged in");
    setup.stop().await;

    // A provider allowed to, for its own email domain only.
    let configure = |config: &mut tessera_server::AppConfig| {
        config.registration = RegistrationPolicy::Invite;
        config.oidc_providers[0].allow_signup = Some(true);
        config.oidc_providers[0].allowed_email_domains = vec!["example.test".into()];
    };
    let Some(setup) = setup_configured("oidc signup by domain", false, true, configure).await else { return };
    let mut browser = setup.server.browser();
    let done = setup.login(&mut browser, "alice").await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert_eq!(browser.get("/profile").await.element_text("username").as_deref(), Some("alice"));
    setup.stop().await;

    let configure = |config: &mut tessera_server::AppConfig| {
        config.oidc_providers[0].allow_signup = Some(true);
        config.oidc_providers[0].allowed_email_domains = vec!["corp.example".into()];
    };
    let Some(setup) = setup_configured("oidc signup other domain", false, true, configure).await else { return };
    let refused = setup.login(&mut setup.server.browser(), "alice").await;
    assert_eq!(refused.status, 403, "an address outside the allowed domains: {}", refused.body);
    setup.stop().await;
}

#[tokio::test]
async fn groups_come_from_the_providers_claim_when_configured() {
    let configure = |config: &mut tessera_server::AppConfig| {
        config.oidc_providers[0].groups_claim = Some("groups".into());
        config.oidc_providers[0].scopes.push("groups".into());
    };
    let Some(setup) = setup_configured("oidc groups claim", false, true, configure).await else { return };
    let db = &setup.server.app_state.db;
    let mut browser = setup.server.browser();
    assert_eq!(setup.login(&mut browser, "staff-ann").await.status, 303);
    let user = db.users().user_by_name("staff-ann").await.unwrap().unwrap();
    assert_eq!(db.groups_of(user.id).await.unwrap(), vec!["staff"], "valid names only");
    assert_eq!(browser.get("/account").await.element_text("groups").as_deref(), Some("staff"));

    // An administrator's group stays; the provider's are replaced at each
    // login (here: taken away by hand, given back by the next login).
    let now = setup.server.clock.now();
    db.add_to_group(user.id, "ops", now).await.unwrap();
    db.set_groups_from(user.id, "oidc:test", &[], now).await.unwrap();
    assert_eq!(db.groups_of(user.id).await.unwrap(), vec!["ops"]);
    browser.logout().await;
    assert_eq!(setup.login(&mut browser, "staff-ann").await.status, 303);
    assert_eq!(db.groups_of(user.id).await.unwrap(), vec!["ops", "staff"]);
    // A group the administrator also gives is the administrator's from then on.
    db.add_to_group(user.id, "staff", now).await.unwrap();
    db.set_groups_from(user.id, "oidc:test", &[], now).await.unwrap();
    assert_eq!(db.groups_of(user.id).await.unwrap(), vec!["ops", "staff"]);

    // Someone the claim gives no groups gets none.
    let mut other = setup.server.browser();
    assert_eq!(setup.login(&mut other, "bea").await.status, 303);
    let bea = db.users().user_by_name("bea").await.unwrap().unwrap();
    assert!(db.groups_of(bea.id).await.unwrap().is_empty());
    setup.stop().await;
}
