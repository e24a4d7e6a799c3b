//! Standards that clients and tools check (issue #18): JSON bodies, HTTP
//! semantics (Host, Content-Encoding, WWW-Authenticate, conditional
//! requests, compression), RFC 9068 access tokens and RFC 8414 metadata,
//! and the password-manager conventions.

mod harness;

use std::io::{Read, Write};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use harness::{test_config, unique_name, TestServer};
use serde_json::{json, Value};
use tessera::ManualClock;
use tessera_server::settings::Settings;
use tessera_server::AppConfig;

const PASSWORD: &str = "correct horse battery";

async fn server() -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let server = TestServer::start(test_config(dir.path(), &clock), clock).await;
    (server, dir)
}

/// A signed-in API client's access token.
async fn bearer(server: &TestServer) -> String {
    let client = reqwest::Client::new();
    let name = unique_name("std");
    let body = json!({"username": name, "password": PASSWORD});
    let signup = client.post(format!("{}/api/signup", server.base)).json(&body).send().await.unwrap();
    assert_eq!(signup.status(), 201);
    let signin = client.post(format!("{}/api/signin", server.base)).json(&body).send().await.unwrap();
    assert_eq!(signin.status(), 200);
    let pair: Value = signin.json().await.unwrap();
    pair["access_token"].as_str().unwrap().to_owned()
}

fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// Sends `request` as raw bytes and returns the answer's text.
fn raw(server: &TestServer, request: &str) -> String {
    let mut stream = std::net::TcpStream::connect(server.address).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn an_array_where_an_object_belongs_is_422() {
    let (server, _dir) = server().await;
    let token = bearer(&server).await;
    let client = reqwest::Client::new();
    let post = |body: &'static str| {
        client
            .post(format!("{}/api/products", server.base))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let answer = post(r#"["Widget","Blue","12.50"]"#).await.unwrap();
    assert_eq!(answer.status(), 422);
    assert_eq!(answer.headers()["content-type"], "application/problem+json");
    let problem: Value = answer.json().await.unwrap();
    assert_eq!(problem["type"], "/problems/validation");
    assert!(problem["detail"].as_str().unwrap().contains("not an array"), "{problem}");
    for other in ["\"Widget\"", "12", "true", "null"] {
        let answer = post(other).await.unwrap();
        assert_eq!(answer.status(), 422, "{other}");
    }
    assert_eq!(post("[\"Widget\"").await.unwrap().status(), 400, "malformed JSON stays 400");
    let good = post(r#"{"name":"Widget","description":"Blue","price":"12.50"}"#).await.unwrap();
    assert_eq!(good.status(), 201, "{:?}", good.text().await);
    // The same on the sign-up route, without credentials.
    let signup = client
        .post(format!("{}/api/signup", server.base))
        .header("content-type", "application/json")
        .body(format!(r#"["{}","{PASSWORD}"]"#, unique_name("arr")))
        .send()
        .await
        .unwrap();
    assert_eq!(signup.status(), 422);
    server.stop().await;
}

#[tokio::test]
async fn an_unsupported_content_encoding_is_415() {
    let (server, _dir) = server().await;
    let client = reqwest::Client::new();
    for (path, content_type, accept) in [
        ("/api/signup", "application/json", "application/json"),
        ("/register", "application/x-www-form-urlencoded", "text/html"),
    ] {
        for encoding in ["gzip", "br", "identity, deflate", "x-unknown"] {
            let answer = client
                .post(format!("{}{path}", server.base))
                .header("content-type", content_type)
                .header("content-encoding", encoding)
                .header("accept", accept)
                .body(vec![0x1f, 0x8b, 0, 1, 2, 3])
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), 415, "{path} {encoding}");
            assert_eq!(answer.headers()["accept-encoding"], "identity", "{path}");
            let text = answer.text().await.unwrap();
            assert!(text.contains("Content-Encoding"), "{path}: {text}");
        }
    }
    // identity is no encoding at all.
    let answer = client
        .post(format!("{}/api/signup", server.base))
        .header("content-type", "application/json")
        .header("content-encoding", "identity")
        .body(json!({"username": unique_name("ident"), "password": PASSWORD}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 201);
    server.stop().await;
}

#[tokio::test]
async fn every_401_carries_www_authenticate() {
    let (server, _dir) = server().await;
    let client = reqwest::Client::new();
    let api = client.get(format!("{}/api/me", server.base)).send().await.unwrap();
    assert_eq!(api.status(), 401);
    assert_eq!(api.headers()["www-authenticate"], "Bearer realm=\"tessera\"");
    let bad = client.get(format!("{}/api/me", server.base)).bearer_auth("nonsense").send().await.unwrap();
    assert_eq!(bad.status(), 401);
    assert!(bad.headers()["www-authenticate"].to_str().unwrap().contains("error=\"invalid_token\""));
    let refresh =
        client.post(format!("{}/api/token/refresh", server.base)).json(&json!({"refresh_token": "x"})).send().await;
    let refresh = refresh.unwrap();
    assert_eq!(refresh.status(), 401);
    assert!(refresh.headers().contains_key("www-authenticate"), "refresh refusals too");
    let json_page =
        client.get(format!("{}/profile", server.base)).header("accept", "application/json").send().await.unwrap();
    assert_eq!(json_page.status(), 401);
    assert!(json_page.headers()["www-authenticate"].to_str().unwrap().starts_with("Bearer"));
    // A failed form login is a 401 page: the challenge names the form.
    let mut browser = server.browser();
    let page = browser.login(&unique_name("nobody"), "wrong password here").await;
    assert_eq!(page.status, 401);
    assert_eq!(page.header("www-authenticate"), Some("Cookie realm=\"tessera\", form-action=\"/login\""));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_1_1_needs_exactly_one_host() {
    let (server, _dir) = server().await;
    let none = raw(&server, "GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert!(none.starts_with("HTTP/1.1 400"), "{none}");
    assert!(none.contains("exactly one Host header"), "{none}");
    let two = raw(&server, "GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n");
    assert!(two.starts_with("HTTP/1.1 400"), "{two}");
    let one = raw(&server, "GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    assert!(one.starts_with("HTTP/1.1 200"), "{one}");
    // HTTP/1.0 has no Host requirement.
    let old = raw(&server, "GET /healthz HTTP/1.0\r\n\r\n");
    assert!(old.starts_with("HTTP/1.0 200") || old.starts_with("HTTP/1.1 200"), "{old:?}");
    server.stop().await;
}

#[tokio::test]
async fn static_files_answer_304_to_conditional_requests() {
    let (server, _dir) = server().await;
    let client = reqwest::Client::new();
    for path in ["/static/style.css", "/static/forms.js", "/static/icon.svg"] {
        let first = client.get(format!("{}{path}", server.base)).send().await.unwrap();
        assert_eq!(first.status(), 200);
        let etag = first.headers()["etag"].to_str().unwrap().to_owned();
        let modified = first.headers()["last-modified"].to_str().unwrap().to_owned();
        assert!(etag.starts_with("W/\"") && etag.len() > 10, "{etag}");
        assert!(httpdate::parse_http_date(&modified).is_ok(), "{modified}");
        let again = client.get(format!("{}{path}", server.base)).header("if-none-match", &etag).send().await.unwrap();
        assert_eq!(again.status(), 304, "{path}");
        assert_eq!(again.headers()["etag"], etag.as_str());
        assert!(again.bytes().await.unwrap().is_empty());
        let since =
            client.get(format!("{}{path}", server.base)).header("if-modified-since", &modified).send().await.unwrap();
        assert_eq!(since.status(), 304, "{path}");
        let changed =
            client.get(format!("{}{path}", server.base)).header("if-none-match", "\"stale\"").send().await.unwrap();
        assert_eq!(changed.status(), 200, "{path}");
    }
    server.stop().await;
}

#[tokio::test]
async fn text_answers_are_compressed_when_the_client_accepts_it() {
    let (server, _dir) = server().await;
    let client = reqwest::Client::new();
    for path in ["/login", "/register", "/static/style.css", "/static/forms.js", "/api/openapi.json"] {
        let plain = client.get(format!("{}{path}", server.base)).send().await.unwrap();
        assert!(plain.headers().get("content-encoding").is_none(), "{path}: no Accept-Encoding, no compression");
        let vary = plain.headers()["vary"].to_str().unwrap().to_ascii_lowercase();
        assert!(vary.contains("accept-encoding"), "{path}: caches key on Accept-Encoding even when none was sent");
        let plain = plain.bytes().await.unwrap();
        let gzip = client.get(format!("{}{path}", server.base)).header("accept-encoding", "gzip").send().await.unwrap();
        assert_eq!(gzip.status(), 200);
        assert_eq!(gzip.headers()["content-encoding"], "gzip", "{path}");
        assert!(gzip.headers()["vary"].to_str().unwrap().to_ascii_lowercase().contains("accept-encoding"), "{path}");
        let compressed = gzip.bytes().await.unwrap();
        let mut text = Vec::new();
        flate2::read::GzDecoder::new(&compressed[..]).read_to_end(&mut text).unwrap();
        if path.starts_with("/static") || path.starts_with("/api") {
            assert_eq!(text, plain, "{path}");
        } else {
            assert!(String::from_utf8_lossy(&text).contains("<form"), "{path}");
        }
        assert!(compressed.len() < plain.len(), "{path}: {} >= {}", compressed.len(), plain.len());
        let br = client.get(format!("{}{path}", server.base)).header("accept-encoding", "br").send().await.unwrap();
        assert_eq!(br.headers()["content-encoding"], "br", "{path}");
    }
    // Probes and forward-auth answer a few bytes on every request a proxy
    // or an orchestrator makes: they are never wrapped for compression.
    for path in ["/healthz", "/auth/verify"] {
        let answer = client.get(format!("{}{path}", server.base)).header("accept-encoding", "gzip, br").send().await;
        let answer = answer.unwrap();
        assert!(answer.headers().get("content-encoding").is_none(), "{path}");
        let vary = answer.headers().get("vary").map(|v| v.to_str().unwrap().to_ascii_lowercase());
        assert!(!vary.unwrap_or_default().contains("accept-encoding"), "{path}");
    }
    // Pages carry a CSRF token masked afresh on every rendering, so that a
    // compression oracle has nothing stable to guess (BREACH).
    let mut browser = server.browser();
    let (a, b) = (browser.get("/login").await.csrf(), browser.get("/login").await.csrf());
    assert_ne!(a, b);
    assert_eq!(browser.register(&unique_name("masked"), PASSWORD).await.status, 303, "masked tokens verify");
    server.stop().await;
}

#[tokio::test]
async fn password_managers_find_the_change_form_and_the_rules() {
    let (server, _dir) = server().await;
    let mut browser = server.browser();
    let redirect = browser.get("/.well-known/change-password").await;
    assert!(matches!(redirect.status, 302 | 303 | 307), "{}", redirect.status);
    assert_eq!(redirect.location(), Some("/account/password"));
    let register = browser.get("/register").await;
    assert!(register.body.contains(r#"passwordrules="minlength: 12; allowed: unicode;""#), "{}", register.body);
    browser.register(&unique_name("pm"), PASSWORD).await;
    let change = browser.get("/account/password").await;
    assert_eq!(change.status, 200);
    assert!(
        change.body.contains(r#"type="hidden" name="username""#) && change.body.contains(r#"autocomplete="username""#)
    );
    assert!(change.body.contains("passwordrules=\"minlength: 12;"));
    server.stop().await;
}

#[tokio::test]
async fn access_tokens_follow_rfc_9068_and_the_issuer_is_discoverable() {
    // With server.public_url, that is the issuer.
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let public = format!("http://localhost:{}/", listener.local_addr().unwrap().port());
    let mut settings = Settings::default();
    settings.server.public_url = public.clone();
    let from_settings = AppConfig::from_settings(&settings).unwrap();
    let mut config = test_config(dir.path(), &clock);
    config.tokens = from_settings.tokens.clone();
    config.public_url = from_settings.public_url.clone();
    let server = TestServer::start_on(config, clock.clone(), listener).await;
    let issuer = public.trim_end_matches('/').to_owned();

    let token = bearer(&server).await;
    let claims = claims(&token);
    assert_eq!(claims["iss"], issuer.as_str());
    assert_eq!(claims["client_id"], "tessera-api");
    assert_eq!(claims["scope"], "api");
    assert_eq!(claims["aud"], "tessera-api");

    let client = reqwest::Client::new();
    let metadata = client.get(format!("{}/.well-known/oauth-authorization-server", server.base)).send().await.unwrap();
    assert_eq!(metadata.status(), 200);
    assert_eq!(metadata.headers()["access-control-allow-origin"], "*");
    let metadata: Value = metadata.json().await.unwrap();
    assert_eq!(metadata["issuer"], issuer.as_str());
    let jwks_uri = metadata["jwks_uri"].as_str().unwrap();
    assert_eq!(jwks_uri, format!("{issuer}/.well-known/jwks.json"));
    // A browser-side verifier on another origin may read the keys.
    let jwks = client.get(jwks_uri).header("origin", "https://app.example").send().await.unwrap();
    assert_eq!(jwks.status(), 200);
    assert_eq!(jwks.headers()["access-control-allow-origin"], "*");
    assert_eq!(jwks.headers()["cache-control"], "public, max-age=300");
    let jwks: Value = jwks.json().await.unwrap();
    let kid = {
        let header = token.split('.').next().unwrap();
        let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
        header["kid"].as_str().unwrap().to_owned()
    };
    assert!(jwks["keys"].as_array().unwrap().iter().any(|k| k["kid"] == kid.as_str()));
    server.stop().await;

    // Without a public URL, the issuer is the URL of the listen address.
    assert_eq!(Settings::default().token_issuer(), "http://127.0.0.1:3000");
    let mut explicit = Settings::default();
    explicit.tokens.issuer = "https://auth.example".into();
    explicit.server.public_url = "https://ignored.example".into();
    assert_eq!(explicit.token_issuer(), "https://auth.example");
}
