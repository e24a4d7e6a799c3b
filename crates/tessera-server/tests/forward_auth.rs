//! Forward-auth: `/auth/verify` on its own, then behind a real nginx
//! (`auth_request`) and a real Caddy (`forward_auth`) in front of a small
//! upstream app that echoes the user headers.

mod harness;

use harness::external::Proxy;
use harness::{test_config, unique_name, Browser, TestServer};
use http::HeaderMap;
use tessera::ManualClock;
use tessera_auth::UserDirectory;
use tessera_server::forward_auth::{parse_forward_header, parse_trusted_proxy};
use tessera_server::AppConfig;
use tokio::net::TcpListener;

const PASSWORD: &str = "correct horse battery";

async fn start_server(configure: impl FnOnce(&mut AppConfig)) -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = test_config(dir.path(), &clock);
    config.public_url = Some(format!("http://localhost:{}", listener.local_addr().unwrap().port()));
    config.forward_auth.trusted_proxies = vec![parse_trusted_proxy("127.0.0.1").unwrap()];
    config.forward_auth.protected_hosts = vec!["localhost".into(), "app.example.test".into()];
    configure(&mut config);
    (TestServer::start_on(config, clock, listener).await, dir)
}

/// The app behind the proxy: echoes who the proxy says the user is.
async fn upstream() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().fallback(|headers: HeaderMap, uri: http::Uri| async move {
        let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("-").to_owned();
        format!("upstream user={} id={} uri={}", get("x-auth-user"), get("x-auth-user-id"), uri)
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
    let unprotected = anonymous.get_with("/auth/verify", &[("x-original-url", "https://evil.example/")]).await;
    assert_eq!(unprotected.location(), Some(format!("{public}/login").as_str()), "next only for protected hosts");

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

    let ok = browser.get("/auth/verify").await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.header("x-auth-user"), Some(name.as_str()));
    assert_eq!(ok.header("x-remote-user"), Some(name.as_str()));
    let user = server.app_state.db.users().user_by_name(&name.to_lowercase()).await.unwrap().unwrap();
    assert_eq!(ok.header("x-auth-user-id"), Some(user.id.to_string().as_str()));
    browser.logout().await;
    assert_eq!(browser.get_with("/auth/verify", &[("accept", "application/json")]).await.status, 401);
    server.stop().await;

    // A peer that is not a trusted proxy: its forwarded headers are ignored.
    let (untrusting, _dir) = start_server(|config| config.forward_auth.trusted_proxies.clear()).await;
    let page = untrusting.browser().get_with("/auth/verify", &forwarded).await;
    assert_eq!(page.status, 302);
    assert_eq!(page.location(), Some(format!("{}/login", untrusting.base).as_str()));
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
    assert_eq!(browser.get("/auth/verify").await.status, 200);
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
      auth_request_set $tessera_login $upstream_http_location;
      error_page 401 = @tessera_login;
      proxy_set_header X-Auth-User $tessera_user;
      proxy_set_header X-Auth-User-Id $tessera_user_id;
      proxy_pass http://127.0.0.1:{UPSTREAM};
    }
  }
"#;

const CADDY_SITE: &str = r#"
http://localhost:{PORT}, http://127.0.0.1:{PORT} {
  route {
    request_header -X-Auth-User
    request_header -X-Auth-User-Id
    forward_auth 127.0.0.1:{TESSERA} {
      uri /auth/verify
      copy_headers X-Auth-User X-Auth-User-Id
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
