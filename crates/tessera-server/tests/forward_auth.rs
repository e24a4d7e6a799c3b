//! Forward-auth: `/auth/verify` on its own, then behind a real nginx
//! (`auth_request`) and a real Caddy (`forward_auth`) in front of a small
//! upstream app that echoes the user headers.

mod harness;

use harness::external::Proxy;
use harness::{test_config, unique_name, Browser, TestServer};
use http::HeaderMap;
use tessera::{Clock, ManualClock};
use tessera_auth::second_factor::totp::step_at;
use tessera_auth::UserDirectory;
use tessera_server::access_rules::{AccessRule, Policy};
use tessera_server::client_ip::{parse_trusted_proxy, TrustedProxies};
use tessera_server::forward_auth::parse_forward_header;
use tessera_server::AppConfig;
use tokio::net::TcpListener;

const PASSWORD: &str = "correct horse battery";

async fn start_server(configure: impl FnOnce(&mut AppConfig)) -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = test_config(dir.path(), &clock);
    config.public_url = Some(format!("http://localhost:{}", listener.local_addr().unwrap().port()));
    config.trusted_proxies = TrustedProxies::new(vec![parse_trusted_proxy("127.0.0.1").unwrap()]);
    config.forward_auth.protected_hosts = vec!["localhost".into(), "app.example.test".into()];
    config.forward_auth.rules = vec![
        rule(&["staff.test"], Policy::OneFactor, &["staff"]),
        rule(&["secure.test"], Policy::TwoFactor, &["staff"]),
        rule(&["public.test"], Policy::Bypass, &[]),
        rule(&["localhost", "app.example.test"], Policy::OneFactor, &[]),
    ];
    configure(&mut config);
    (TestServer::start_on(config, clock, listener).await, dir)
}

fn rule(hosts: &[&str], policy: Policy, groups: &[&str]) -> AccessRule {
    AccessRule {
        hosts: hosts.iter().map(|h| h.to_string()).collect(),
        paths: vec![],
        policy,
        users: vec![],
        groups: groups.iter().map(|g| g.to_string()).collect(),
        email_domains: vec![],
    }
}

/// The app behind the proxy: echoes who the proxy says the user is.
async fn upstream() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().fallback(|headers: HeaderMap, uri: http::Uri| async move {
        let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("-").to_owned();
        format!(
            "upstream user={} id={} groups={} uri={}",
            get("x-auth-user"),
            get("x-auth-user-id"),
            get("x-auth-groups"),
            uri
        )
    });
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (port, task)
}

/// A browser for the proxied site carrying the tessera browser's cookies
/// (cookies are per host, not per port).
fn through(proxy_port: u16, tessera: &Browser) -> Browser {
    let mut browser = Browser::new(&format!("http://localhost:{proxy_port}"));
    browser.cookies = tessera.cookies.clone();
    browser
}

#[tokio::test]
async fn verify_answers_by_session_client_kind_and_proxy_trust() {
    let (server, _dir) = start_server(|config| {
        config.forward_auth.headers.push(parse_forward_header("X-Remote-User=username").unwrap());
    })
    .await;
    let public = server.base.clone();
    let forwarded: [(&str, &str); 3] =
        [("x-forwarded-proto", "https"), ("x-forwarded-host", "app.example.test"), ("x-forwarded-uri", "/wiki?page=1")];

    let mut anonymous = server.browser();
    let mut headers = vec![("accept", "application/json")];
    headers.extend(forwarded);
    let api = anonymous.get_with("/auth/verify", &headers).await;
    assert_eq!(api.status, 401);
    assert!(api.location().is_none());

    let browser_page = anonymous.get_with("/auth/verify", &forwarded).await;
    assert_eq!(browser_page.status, 302);
    assert_eq!(
        browser_page.location(),
        Some(format!("{public}/login?next=https%3A%2F%2Fapp%2Eexample%2Etest%2Fwiki%3Fpage%3D1").as_str())
    );
    let nginx_style =
        anonymous.get_with("/auth/verify?status=401", &[("x-original-url", "http://localhost:1/x")]).await;
    assert_eq!(nginx_style.status, 401);
    assert_eq!(nginx_style.location(), Some(format!("{public}/login?next=http%3A%2F%2Flocalhost%3A1%2Fx").as_str()));
    let unprotected = anonymous.get_with("/auth/verify", &[("x-original-url", "https://staff.test/")]).await;
    assert_eq!(unprotected.location(), Some(format!("{public}/login").as_str()), "next only for protected hosts");
    // No rule for the host: refused outright, no detour to the login page.
    let no_rule = anonymous.get_with("/auth/verify", &[("x-original-url", "https://evil.example/")]).await;
    assert_eq!(no_rule.status, 403);
    assert!(no_rule.location().is_none());
    assert!(no_rule.body.contains("<html") || no_rule.body.contains("<!DOCTYPE"), "a page for browsers");
    let json = anonymous
        .get_with("/auth/verify", &[("x-original-url", "https://evil.example/"), ("accept", "application/json")])
        .await;
    assert_eq!(json.status, 403);
    assert_eq!(json.header("content-type"), Some("application/problem+json"));
    assert!(json.body.contains("/problems/forward-auth-denied"), "{}", json.body);
    // A bypass rule lets anyone in, without user headers.
    let public_page = anonymous.get_with("/auth/verify", &[("x-original-url", "https://public.test/x")]).await;
    assert_eq!(public_page.status, 200);
    assert!(public_page.header("x-auth-user").is_none());

    // The login page takes an absolute next only on a protected host.
    let name = unique_name("lena");
    server.browser().register(&name, PASSWORD).await;
    let mut browser = server.browser();
    let form = browser.get("/login?next=https%3A%2F%2Fapp.example.test%2Fwiki%3Fpage%3D1").await;
    assert!(form.body.contains("name=\"next\" value=\"https://app.example.test/wiki?page=1\""));
    let token = form.csrf();
    let done = browser
        .post_form(
            "/login",
            &[
                ("csrf_token", &token),
                ("username", &name),
                ("password", PASSWORD),
                ("next", "https://app.example.test/wiki?page=1"),
            ],
        )
        .await;
    assert_eq!(done.location(), Some("https://app.example.test/wiki?page=1"));
    let evil = server.browser().get("/login?next=https%3A%2F%2Fevil.example%2F").await;
    assert!(!evil.body.contains("name=\"next\""));

    let ok = browser.get_with("/auth/verify", &forwarded).await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.header("x-auth-groups"), Some(""), "no groups: an empty header, never a forged one");
    assert_eq!(ok.header("x-auth-user"), Some(name.as_str()));
    assert_eq!(ok.header("x-remote-user"), Some(name.as_str()));
    let user = server.app_state.db.users().user_by_name(&name.to_lowercase()).await.unwrap().unwrap();
    assert_eq!(ok.header("x-auth-user-id"), Some(user.id.to_string().as_str()));
    browser.logout().await;
    let mut headers = vec![("accept", "application/json")];
    headers.extend(forwarded);
    assert_eq!(browser.get_with("/auth/verify", &headers).await.status, 401);
    server.stop().await;

    // A peer that is not a trusted proxy: its forwarded headers are ignored,
    // so tessera cannot tell which address is meant and lets nobody in.
    let (untrusting, _dir) = start_server(|config| config.trusted_proxies = TrustedProxies::default()).await;
    let page = untrusting.browser().get_with("/auth/verify", &forwarded).await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert!(page.body.contains("trusted_proxies"), "the page says why: {}", page.body);
    untrusting.stop().await;
}

#[tokio::test]
async fn cookie_domain_uses_the_secure_prefix_and_still_verifies() {
    let (server, _dir) = start_server(|config| config.cookie.domain = Some("localhost".into())).await;
    let mut browser = server.browser();
    let registered = browser.register(&unique_name("mia"), PASSWORD).await;
    let cookie = registered.set_cookies.iter().find(|c| c.starts_with("__Secure-id=")).expect("__Secure-id cookie");
    assert!(
        cookie.contains("Domain=localhost") && cookie.contains("Secure") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    let page = browser.get_with("/auth/verify", &[("x-original-url", "https://app.example.test/")]).await;
    assert_eq!(page.status, 200);
    server.stop().await;
}

const NGINX_SITE: &str = r#"
  server {
    listen 127.0.0.1:{PORT};
    location = /_tessera_verify {
      internal;
      proxy_pass http://127.0.0.1:{TESSERA}/auth/verify?status=401;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Original-URL $scheme://$http_host$request_uri;
    }
    location @tessera_login {
      if ($tessera_login = "") { return 401; }
      return 302 $tessera_login;
    }
    location / {
      auth_request /_tessera_verify;
      auth_request_set $tessera_user $upstream_http_x_auth_user;
      auth_request_set $tessera_user_id $upstream_http_x_auth_user_id;
      auth_request_set $tessera_groups $upstream_http_x_auth_groups;
      auth_request_set $tessera_login $upstream_http_location;
      error_page 401 = @tessera_login;
      proxy_set_header X-Auth-User $tessera_user;
      proxy_set_header X-Auth-User-Id $tessera_user_id;
      proxy_set_header X-Auth-Groups $tessera_groups;
      proxy_pass http://127.0.0.1:{UPSTREAM};
    }
  }
"#;

const CADDY_SITE: &str = r#"
http://:{PORT} {
  route {
    request_header -X-Auth-User
    request_header -X-Auth-User-Id
    request_header -X-Auth-Groups
    forward_auth 127.0.0.1:{TESSERA} {
      uri /auth/verify
      copy_headers X-Auth-User X-Auth-User-Id X-Auth-Groups
    }
    reverse_proxy 127.0.0.1:{UPSTREAM}
  }
}
"#;

async fn behind_a_proxy(kind: &str) {
    let (server, _dir) = start_server(|_| {}).await;
    let (upstream_port, upstream_task) = upstream().await;
    let tessera_port = server.address.port().to_string();
    let test = format!("forward-auth behind {kind}");
    let proxy = if kind == "nginx" {
        let site = NGINX_SITE.replace("{TESSERA}", &tessera_port).replace("{UPSTREAM}", &upstream_port.to_string());
        Proxy::nginx(&site, &test).await
    } else {
        let site = CADDY_SITE.replace("{TESSERA}", &tessera_port).replace("{UPSTREAM}", &upstream_port.to_string());
        Proxy::caddy(&site, &test).await
    };
    let Some(proxy) = proxy else {
        server.stop().await;
        return;
    };
    let site = format!("http://localhost:{}", proxy.port);

    // Anonymous: browsers go to the login page with next = the original URL;
    // API clients get 401. A forged user header changes nothing.
    let mut tessera = server.browser();
    let mut anonymous = through(proxy.port, &tessera);
    let page = anonymous.get_with("/app?x=1", &[("x-auth-user", "admin")]).await;
    assert_eq!(page.status, 302, "{kind}: {}", page.body);
    let expected_next = format!("{site}/app?x=1");
    let login_url = page.location().unwrap().to_owned();
    assert!(login_url.starts_with(&format!("{}/login?next=", server.base)), "{kind}: {login_url}");
    let mut api = through(proxy.port, &tessera);
    api.extra_headers = vec![("accept".into(), "application/json".into())];
    assert_eq!(api.get("/app").await.status, 401, "{kind}");

    // Log in at tessera through that login URL: back to the original URL.
    let name = unique_name("nils");
    server.browser().register(&name, PASSWORD).await;
    let form = tessera.get(&login_url[server.base.len()..]).await;
    assert!(form.body.contains(&format!("name=\"next\" value=\"{expected_next}\"")), "{kind}: next kept");
    let token = form.csrf();
    let done = tessera
        .post_form(
            "/login",
            &[("csrf_token", &token), ("username", &name), ("password", PASSWORD), ("next", &expected_next)],
        )
        .await;
    assert_eq!(done.location(), Some(expected_next.as_str()), "{kind}");

    // Logged in: the upstream sees the user, not a forged header.
    let mut user = through(proxy.port, &tessera);
    let page = user.get_with("/app?x=1", &[("x-auth-user", "admin")]).await;
    assert_eq!(page.status, 200, "{kind}: {}", page.body);
    assert!(page.body.starts_with(&format!("upstream user={name} id=")), "{kind}: {}", page.body);
    assert!(page.body.ends_with("uri=/app?x=1"), "{kind}: {}", page.body);

    // The access rules, through the real proxy (other hosts by Host header).
    let port = proxy.port;
    let (staff_host, secure_host, no_rule_host) =
        (format!("staff.test:{port}"), format!("secure.test:{port}"), format!("norule.test:{port}"));
    // A self-registered user is refused where the rule names group staff,
    // and on a host with no rule.
    let refused = user.get_with("/wiki", &[("host", &staff_host)]).await;
    assert_eq!(refused.status, 403, "{kind}: a self-registered user on a staff host: {}", refused.body);
    assert!(!refused.body.contains("upstream"), "{kind}");
    assert_eq!(user.get_with("/", &[("host", &no_rule_host)]).await.status, 403, "{kind}: no rule");
    // Caddy passes the client's own headers on to the check: an
    // X-Original-URL naming a page the user may see must not stand in for
    // the one the proxy asks about (found by a black-box attack).
    let hidden = format!("{site}/app");
    for who in [&mut user, &mut anonymous] {
        let page = who.get_with("/wiki", &[("host", &staff_host), ("x-original-url", &hidden)]).await;
        assert_ne!(page.status, 200, "{kind}: a client's X-Original-URL hid the real target: {}", page.body);
        assert!(!page.body.contains("upstream"), "{kind}");
    }
    assert_eq!(anonymous.get_with("/", &[("host", &no_rule_host)]).await.status, 403, "{kind}: no rule, anonymous");
    assert_eq!(api.get_with("/", &[("host", &no_rule_host)]).await.status, 403, "{kind}: no rule, API client");

    // A staff member passes, and the application sees the group, not a
    // forged one.
    let staff_name = unique_name("stina");
    let mut staff_tessera = server.browser();
    assert_eq!(staff_tessera.register(&staff_name, PASSWORD).await.status, 303);
    let state = &server.app_state;
    let db = &state.db;
    let staff_id = db.users().user_by_name(&staff_name.to_lowercase()).await.unwrap().unwrap().id;
    db.add_to_group(staff_id, "staff", server.clock.now()).await.unwrap();
    let mut staff = through(port, &staff_tessera);
    let page = staff.get_with("/wiki", &[("host", &staff_host), ("x-auth-groups", "admin")]).await;
    assert_eq!(page.status, 200, "{kind}: {}", page.body);
    assert!(page.body.contains(&format!("user={staff_name} ")), "{kind}: {}", page.body);
    assert!(page.body.contains(" groups=staff "), "{kind}: {}", page.body);
    assert_eq!(staff.get_with("/", &[("host", &no_rule_host)]).await.status, 403, "{kind}: no rule, staff");

    // A two_factor host refuses a staff member without a second factor:
    // browsers are sent to set one up where the proxy can pass a redirect
    // on (Caddy), nginx's auth_request answers 403.
    let page = staff.get_with("/", &[("host", &secure_host)]).await;
    if kind == "nginx" {
        assert_eq!(page.status, 403, "{kind}: {}", page.body);
    } else {
        assert_eq!(page.status, 302, "{kind}: {}", page.body);
        assert_eq!(page.location(), Some(format!("{}/account/two-factor", server.base).as_str()), "{kind}");
    }
    let mut staff_api = staff.clone();
    staff_api.extra_headers = vec![("accept".into(), "application/json".into())];
    assert_eq!(staff_api.get_with("/", &[("host", &secure_host)]).await.status, 403, "{kind}");
    // With two-step verification on, the same member passes.
    let secret = state.auth.second_factors().begin_setup(staff_id).await.unwrap().expect("setup starts");
    let code = secret.code_at(step_at(server.clock.now()));
    assert!(state.auth.second_factors().confirm_setup(staff_id, &code).await.unwrap().is_some());
    let page = staff.get_with("/", &[("host", &secure_host)]).await;
    assert_eq!(page.status, 200, "{kind}: {}", page.body);

    // Logout ends access.
    tessera.logout().await;
    let mut after = through(proxy.port, &user);
    assert_eq!(after.get("/app").await.status, 302, "{kind}: the old cookie is dead");
    proxy.stop();
    upstream_task.abort();
    server.stop().await;
}

#[tokio::test]
async fn nginx_auth_request() {
    behind_a_proxy("nginx").await;
}

#[tokio::test]
async fn caddy_forward_auth() {
    behind_a_proxy("caddy").await;
}

/// Issue #14 item 9: form posts carry the browser's `Origin`, which must
/// match the request's own host however it reaches tessera: through nginx
/// sending `X-Forwarded-Host` (believed from a trusted proxy only, with
/// `Host` left at nginx's default, the upstream's address), and through
/// Caddy over h2c, where HTTP/2 carries `:authority` and no `Host`.
#[tokio::test]
async fn forms_pass_the_origin_check_behind_proxies() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let mut config = test_config(dir.path(), &clock);
    config.trusted_proxies = TrustedProxies::new(vec![parse_trusted_proxy("127.0.0.1").unwrap()]);
    let server = TestServer::start(config, clock).await;
    let port = server.address.port();
    let nginx_site = format!(
        "  server {{\n    listen 127.0.0.1:{{PORT}};\n    location / {{\n      proxy_pass http://127.0.0.1:{port};\n      \
         proxy_set_header X-Forwarded-Host $http_host;\n    }}\n  }}\n"
    );
    let Some(nginx) = Proxy::nginx(&nginx_site, "origin check behind nginx").await else { return };
    let caddy_site =
        format!("http://localhost:{{PORT}}, http://127.0.0.1:{{PORT}} {{\n  reverse_proxy h2c://127.0.0.1:{port}\n}}");
    let Some(caddy) = Proxy::caddy(&caddy_site, "origin check behind caddy h2c").await else { return };

    for (kind, proxy_port) in [("nginx", nginx.port), ("caddy-h2c", caddy.port)] {
        let site = format!("http://localhost:{proxy_port}");
        let mut browser = Browser::new(&site);
        let name = unique_name(kind);
        let token = browser.get("/register").await.csrf();
        let fields = [("csrf_token", token.as_str()), ("username", name.as_str()), ("password", PASSWORD)];
        let registered = browser.post_form_with("/register", &fields, &[("origin", site.as_str())]).await;
        assert_eq!(registered.status, 303, "{kind}: {}", registered.body);
        let token = browser.get("/profile").await.csrf();
        let evil =
            browser.post_form_with("/logout", &[("csrf_token", &token)], &[("origin", "http://evil.example")]).await;
        assert_eq!(evil.status, 403, "{kind}: another origin is still refused");
        let out = browser.post_form_with("/logout", &[("csrf_token", &token)], &[("origin", site.as_str())]).await;
        assert_eq!(out.status, 303, "{kind}: {}", out.body);
    }
    nginx.stop();
    caddy.stop();
    server.stop().await;

    // Without a trusted proxy, X-Forwarded-Host is anyone's to send and
    // changes nothing.
    let (plain, _plain_dir) = {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new();
        (TestServer::start(test_config(dir.path(), &clock), clock).await, dir)
    };
    let mut browser = plain.browser();
    let token = browser.get("/login").await.csrf();
    let forged = browser
        .post_form_with(
            "/login",
            &[("csrf_token", &token), ("username", "nobody"), ("password", PASSWORD)],
            &[("origin", "http://evil.example"), ("x-forwarded-host", "evil.example")],
        )
        .await;
    assert_eq!(forged.status, 403, "{}", forged.body);
    plain.stop().await;
}
