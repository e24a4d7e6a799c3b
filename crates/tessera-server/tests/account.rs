//! The account pages: devices and revocation, password change, deletion,
//! activity, recent-authentication rules.

mod harness;
mod services;

use std::time::Duration;
use tessera_auth::UserDirectory;

use harness::{test_config, unique_name, Browser, TestServer};
use tessera::ManualClock;

const PASSWORD: &str = "correct horse battery";
const NEW_PASSWORD: &str = "a brand new passphrase";
const CHROME_UA: &str =
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36";

async fn server_with(store: Option<&str>) -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let mut config = test_config(dir.path(), &clock);
    config.session_store_url = store.map(str::to_owned);
    let server = TestServer::start(config, clock).await;
    (server, dir)
}

fn with_agent(mut browser: Browser, agent: &str) -> Browser {
    browser.extra_headers.push(("user-agent".into(), agent.into()));
    browser
}

/// The `data-session-id` handles on the device list, in order.
fn handles(body: &str) -> Vec<String> {
    body.split("data-session-id=\"").skip(1).map(|rest| rest[..rest.find('"').unwrap()].to_owned()).collect()
}

#[tokio::test]
async fn device_list_and_revoking_one_session() {
    let (server, _dir) = server_with(None).await;
    let name = unique_name("devices");
    let mut laptop = with_agent(server.browser(), CHROME_UA);
    laptop.register(&name, PASSWORD).await;
    let mut phone = with_agent(server.browser(), "curl/8.0 <script>alert(1)</script>");
    assert_eq!(phone.login(&name, PASSWORD).await.status, 303);

    let list = laptop.get("/account/sessions").await;
    assert_eq!(list.status, 200);
    let found = handles(&list.body);
    assert_eq!(found.len(), 2, "{}", list.body);
    for handle in &found {
        assert_ne!(Some(handle), laptop.session_id().as_ref(), "a handle is never the session ID");
        assert_ne!(Some(handle), phone.session_id().as_ref());
        assert!(!list.body.contains(&laptop.session_id().unwrap()), "the page never shows the session ID");
    }
    assert!(list.body.contains("Chrome on Linux"), "a readable user agent");
    assert!(list.body.contains("This device"));
    assert!(list.body.contains("127.0.0.1"));
    assert!(!list.body.contains("<script>alert(1)"), "user agents are escaped");

    // The handle that is not marked as this device is the phone's.
    let current_at = list.body.find("This device").unwrap();
    let phone_handle = found
        .iter()
        .find(|h| {
            let at = list.body.find(h.as_str()).unwrap();
            !(at < current_at && list.body[at..current_at].find("</li>").is_none())
        })
        .unwrap()
        .clone();
    let token = list.csrf();
    let revoked =
        laptop.post_form("/account/sessions/revoke", &[("csrf_token", &token), ("session", &phone_handle)]).await;
    assert_eq!(revoked.status, 303);
    assert!(laptop.get("/account/sessions").await.body.contains("That session was signed out."));
    assert_eq!(phone.get("/profile").await.status, 303, "the phone was signed out");
    assert_eq!(laptop.get("/profile").await.status, 200, "the laptop was not");

    // Another user's handle matches nothing of mine.
    let mut stranger = server.browser();
    stranger.register(&unique_name("stranger"), PASSWORD).await;
    let stranger_handle = handles(&stranger.get("/account/sessions").await.body).remove(0);
    let token = laptop.get("/account/sessions").await.csrf();
    let refused =
        laptop.post_form("/account/sessions/revoke", &[("csrf_token", &token), ("session", &stranger_handle)]).await;
    assert_eq!(refused.status, 401);
    assert!(refused.body.contains("That session no longer exists."));
    assert_eq!(stranger.get("/profile").await.status, 200, "nobody can revoke another user's session");
    server.stop().await;
}

#[tokio::test]
async fn revoking_all_others_and_recent_authentication() {
    let (server, _dir) = server_with(None).await;
    let name = unique_name("everywhere");
    let mut main = server.browser();
    main.register(&name, PASSWORD).await;
    // An API sign-in too (a script, a phone app): "everywhere else" ends it.
    let http = reqwest::Client::new();
    let credentials = serde_json::json!({"username": name, "password": PASSWORD});
    let pair: serde_json::Value =
        http.post(format!("{}/api/signin", server.base)).json(&credentials).send().await.unwrap().json().await.unwrap();
    let refresh = serde_json::json!({"refresh_token": pair["refresh_token"]});
    let mut others = Vec::new();
    for _ in 0..3 {
        let mut other = server.browser();
        other.login(&name, PASSWORD).await;
        others.push(other);
    }
    // Eleven minutes later the password must be typed again.
    server.clock.advance(Duration::from_secs(11 * 60));
    let page = main.get("/account/sessions").await;
    assert!(page.body.contains("revoke-all-password"), "asks for the password");
    let token = page.csrf();
    let refused = main.post_form("/account/sessions/revoke", &[("csrf_token", &token), ("all_others", "1")]).await;
    assert_eq!(refused.status, 401);
    let wrong = main
        .post_form(
            "/account/sessions/revoke",
            &[("csrf_token", &token), ("all_others", "1"), ("current_password", "not it at all")],
        )
        .await;
    assert_eq!(wrong.status, 401);
    for other in &mut others {
        assert_eq!(other.get("/profile").await.status, 200, "nothing was revoked yet");
    }
    let done = main
        .post_form(
            "/account/sessions/revoke",
            &[("csrf_token", &token), ("all_others", "1"), ("current_password", PASSWORD)],
        )
        .await;
    assert_eq!(done.status, 303);
    for other in &mut others {
        assert_eq!(other.get("/profile").await.status, 303, "every other device is signed out");
    }
    let refreshed = http.post(format!("{}/api/token/refresh", server.base)).json(&refresh).send().await.unwrap();
    assert_eq!(refreshed.status(), 401, "and the API sign-in with them");
    let me = http.get(format!("{}/api/me", server.base)).bearer_auth(pair["access_token"].as_str().unwrap());
    assert_eq!(me.send().await.unwrap().status(), 401);
    assert_eq!(main.get("/profile").await.status, 200, "this one stays");
    assert_eq!(handles(&main.get("/account/sessions").await.body).len(), 1);
    server.stop().await;
}

async fn password_change(store: Option<&str>) {
    let (server, _dir) = server_with(store).await;
    let name = unique_name("changer");
    let mut main = server.browser();
    main.register(&name, PASSWORD).await;
    let mut other = server.browser();
    other.login(&name, PASSWORD).await;

    let form = main.get("/account/password").await;
    assert!(
        form.body.contains("autocomplete=\"current-password\"") && form.body.contains("autocomplete=\"new-password\"")
    );
    let token = form.csrf();
    let wrong = main
        .post_form(
            "/account/password",
            &[("csrf_token", &token), ("current_password", "not my password"), ("new_password", NEW_PASSWORD)],
        )
        .await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.body.contains("That is not your current password."));
    let weak = main
        .post_form(
            "/account/password",
            &[("csrf_token", &token), ("current_password", PASSWORD), ("new_password", "short")],
        )
        .await;
    assert_eq!(weak.status, 422);

    let before = main.session_id().unwrap();
    let changed = main
        .post_form(
            "/account/password",
            &[("csrf_token", &token), ("current_password", PASSWORD), ("new_password", NEW_PASSWORD)],
        )
        .await;
    assert_eq!(changed.status, 303);
    assert_eq!(changed.location(), Some("/account"));
    let after = main.session_id().unwrap();
    assert_ne!(before, after, "the session ID is rotated");
    let account = main.get("/account").await;
    assert_eq!(account.status, 200);
    assert!(account.body.contains("Password changed; other devices were signed out."));
    assert_eq!(other.get("/profile").await.status, 303, "other devices are signed out");
    let mut replay = server.browser();
    replay.cookies.insert("__Host-id".into(), before);
    assert_eq!(replay.get("/profile").await.status, 303, "the pre-change cookie is dead");
    assert_eq!(server.browser().login(&name, PASSWORD).await.status, 401, "the old password is gone");
    assert_eq!(server.browser().login(&name, NEW_PASSWORD).await.status, 303, "the new one works");
    server.stop().await;
}

#[tokio::test]
async fn password_change_with_server_side_sessions() {
    password_change(None).await;
}

#[tokio::test]
async fn password_change_with_sealed_cookie_sessions() {
    password_change(Some("cookie://")).await;
}

#[tokio::test]
async fn deleting_the_account() {
    let (server, _dir) = server_with(None).await;
    let name = unique_name("leaver");
    let mut main = server.browser();
    main.register(&name, PASSWORD).await;
    let mut other = server.browser();
    other.login(&name, PASSWORD).await;

    let token = main.get("/account").await.csrf();
    let wrong =
        main.post_form("/account/delete", &[("csrf_token", &token), ("current_password", "nope nope nope")]).await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.body.contains("Nothing was deleted."));
    let deleted = main.post_form("/account/delete", &[("csrf_token", &token), ("current_password", PASSWORD)]).await;
    assert_eq!(deleted.status, 303);
    assert_eq!(deleted.location(), Some("/"));
    assert!(main.session_id().is_none());
    assert!(main.get("/").await.body.contains("Your account was deleted."));
    assert_eq!(other.get("/profile").await.status, 303, "every session ended");
    assert_eq!(server.browser().login(&name, PASSWORD).await.status, 401);
    assert_eq!(server.browser().register(&name, PASSWORD).await.status, 303, "the name is free again");
    server.stop().await;
}

#[tokio::test]
async fn activity_lists_authentication_events() {
    let (server, _dir) = server_with(None).await;
    let name = unique_name("active");
    let mut main = server.browser();
    main.register(&name, PASSWORD).await;
    server.browser().login(&name, "wrong password!").await;
    let mut other = server.browser();
    other.login(&name, PASSWORD).await;
    other.logout().await;
    let page = main.get("/account/activity").await;
    assert_eq!(page.status, 200);
    for kind in ["sign_up", "login_failed", "login_succeeded", "logout"] {
        assert!(page.body.contains(&format!("data-kind=\"{kind}\"")), "{kind} missing");
    }
    assert!(!page.body.contains("wrong password!"), "no password is ever recorded");
    server.stop().await;
}

#[tokio::test]
async fn security_headers_on_authenticated_pages_and_logout() {
    let (server, _dir) = server_with(None).await;
    let mut main = server.browser();
    main.register(&unique_name("headers"), PASSWORD).await;
    for path in ["/profile", "/account", "/account/sessions", "/account/password", "/account/activity"] {
        let page = main.get(path).await;
        assert_eq!(page.status, 200, "{path}");
        assert_eq!(page.header("cache-control"), Some("no-store"), "{path}");
        assert!(page.header("content-security-policy").unwrap().contains("frame-ancestors 'none'"), "{path}");
    }
    let logout = main.logout().await;
    assert!(logout.header("clear-site-data").unwrap().contains("\"cache\""));
    let anonymous = main.get("/account").await;
    assert_eq!(anonymous.status, 303);
    assert_eq!(anonymous.location(), Some("/login?next=%2Faccount"));
    server.stop().await;
}

#[tokio::test]
async fn a_password_step_up_rotates_the_session_id() {
    let (server, _dir) = server_with(None).await;
    let name = unique_name("stepper");
    let mut main = server.browser();
    main.register(&name, PASSWORD).await;
    let mut other = server.browser();
    other.login(&name, PASSWORD).await;
    server.clock.advance(Duration::from_secs(11 * 60));
    let before = main.session_id().expect("logged in");
    let token = main.get("/account/sessions").await.csrf();
    let done = main
        .post_form(
            "/account/sessions/revoke",
            &[("csrf_token", &token), ("all_others", "1"), ("current_password", PASSWORD)],
        )
        .await;
    assert_eq!(done.status, 303, "{}", done.body);
    let after = main.session_id().expect("still logged in");
    assert_ne!(before, after, "the confirmed password gave the session a new ID");
    assert_eq!(main.get("/profile").await.status, 200, "the new ID works");
    let mut thief = server.browser();
    thief.cookies.insert("__Host-id".into(), before);
    assert_eq!(thief.get("/profile").await.status, 303, "the old ID no longer works");
    assert_eq!(other.get("/profile").await.status, 303, "the other device was signed out");
    // The step-up counts as recent authentication: no password needed now.
    assert!(!main.get("/account/sessions").await.body.contains("revoke-all-password"));
    server.stop().await;
}

/// Issue #14 item 11: audit events older than `audit.retention` are deleted
/// in the background; younger ones stay.
#[tokio::test]
async fn old_audit_events_are_purged_in_the_background() {
    purges_old_audit_events(None).await;
}

/// The same with the users database in PostgreSQL.
#[tokio::test]
async fn old_audit_events_are_purged_in_the_background_in_postgres() {
    if !services::reachable("PostgreSQL", "127.0.0.1:5432") {
        return;
    }
    purges_old_audit_events(Some(services::postgres_url())).await;
}

async fn purges_old_audit_events(database_url: Option<String>) {
    use tessera::{Clock, DeviceInfo};
    use tessera_server::audit::AuditKind;

    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let mut config = test_config(dir.path(), &clock);
    if let Some(url) = database_url {
        config.database_url = url;
    }
    config.purge_interval = Duration::from_millis(100);
    config.audit_retention = Duration::from_secs(30 * 24 * 3600);
    let server = TestServer::start(config, clock.clone()).await;
    let name = unique_name("audited");
    assert_eq!(server.browser().register(&name, PASSWORD).await.status, 303);
    let db = server.app_state.db.clone();
    let key = tessera_auth::password_policy::check_username(&name).unwrap();
    let user_id = db.users().user_by_name(&key).await.unwrap().unwrap().id;
    let day = 24 * 3600 * 1000;
    let now = clock.now().as_millis();
    let device = DeviceInfo::default();
    db.audit(AuditKind::LoginFailed, Some(user_id), &device, tessera::Timestamp(now - 31 * day)).await.unwrap();
    db.audit(AuditKind::LoginFailed, None, &device, tessera::Timestamp(now - 90 * day)).await.unwrap();
    db.audit(AuditKind::Logout, Some(user_id), &device, tessera::Timestamp(now - 29 * day)).await.unwrap();

    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let kinds = loop {
        let events = db.audit_events(user_id, 100).await.unwrap();
        let kinds: Vec<String> = events.into_iter().map(|e| e.kind).collect();
        if !kinds.contains(&"login_failed".to_owned()) {
            break kinds;
        }
        assert!(std::time::Instant::now() < deadline, "old events were never purged: {kinds:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(kinds, ["sign_up", "logout"], "events younger than the retention stay");
    server.stop().await;
}
