//! The token API through the real HTTP stack: the flow, every refusal,
//! expiry on the manual clock, key rotation, refresh reuse, cookie callers
//! with CSRF, bad bodies, and the OpenAPI document.

mod harness;
mod services;

use std::collections::BTreeSet;
use std::time::Duration;
use tessera_auth::UserDirectory;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::Signer as _;
use harness::{test_config, unique_name, TestServer};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use tessera::{Clock, ManualClock};
use tessera_server::api::tokens::TokenService;
use tessera_server::registration_policy::RegistrationPolicy;

const PASSWORD: &str = "correct horse battery";

async fn server() -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let server = TestServer::start(test_config(dir.path(), &clock), clock).await;
    (server, dir)
}

/// An answer, with its body parsed as JSON when it is JSON.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    json: Value,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts a problem document of `kind` with `status`.
    #[track_caller]
    fn assert_problem(&self, status: u16, kind: &str) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(self.header("content-type"), Some("application/problem+json"), "{self:?}");
        assert_eq!(self.json["type"], format!("/problems/{kind}"), "{self:?}");
        assert_eq!(self.json["status"], status, "{self:?}");
        assert!(self.json["title"].is_string() && self.json["detail"].is_string(), "{self:?}");
    }
}

/// A JSON client; `bearer` and `cookie` are sent when set.
#[derive(Clone)]
struct Api {
    base: String,
    client: reqwest::Client,
    bearer: Option<String>,
    cookie: Option<String>,
}

impl Api {
    fn new(server: &TestServer) -> Self {
        Api { base: server.base.clone(), client: reqwest::Client::new(), bearer: None, cookie: None }
    }

    fn with_bearer(&self, token: &str) -> Self {
        Api { bearer: Some(token.to_owned()), ..self.clone() }
    }

    async fn raw(&self, method: &str, path: &str, body: Option<Vec<u8>>, headers: &[(&str, &str)]) -> Reply {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.bearer {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        if let Some(cookie) = &self.cookie {
            request = request.header("cookie", cookie);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.unwrap();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply { status, headers, json }
    }

    async fn send(&self, method: &str, path: &str, body: Option<Value>) -> Reply {
        self.send_with(method, path, body, &[]).await
    }

    async fn send_with(&self, method: &str, path: &str, body: Option<Value>, headers: &[(&str, &str)]) -> Reply {
        let mut all = vec![("accept", "application/json")];
        let bytes = body.map(|b| {
            all.push(("content-type", "application/json"));
            b.to_string().into_bytes()
        });
        all.extend_from_slice(headers);
        self.raw(method, path, bytes, &all).await
    }

    async fn get(&self, path: &str) -> Reply {
        self.send("GET", path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> Reply {
        self.send("POST", path, Some(body)).await
    }

    async fn signup_and_signin(&self, name: &str) -> Value {
        let signup = self.post("/api/signup", json!({"username": name, "password": PASSWORD})).await;
        assert_eq!(signup.status, 201, "{signup:?}");
        let signin = self.post("/api/signin", json!({"username": name, "password": PASSWORD})).await;
        assert_eq!(signin.status, 200, "{signin:?}");
        signin.json
    }
}

fn access(pair: &Value) -> &str {
    pair["access_token"].as_str().unwrap()
}

fn refresh_token(pair: &Value) -> &str {
    pair["refresh_token"].as_str().unwrap()
}

fn jwt_header(token: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(token.split('.').next().unwrap()).unwrap()).unwrap()
}

/// Sign-up to sign-out, products included; run on SQLite and PostgreSQL.
async fn api_flow(server: &TestServer) {
    let api = Api::new(server);
    let name = unique_name("Api");

    // Sign-up and its refusals.
    let signup = api.post("/api/signup", json!({"username": name, "password": PASSWORD})).await;
    assert_eq!(signup.status, 201, "{signup:?}");
    assert_eq!(signup.header("content-type"), Some("application/json"));
    assert_eq!(signup.json["username"], name.as_str());
    assert!(signup.json["id"].as_i64().unwrap() > 0);
    assert!(signup.json["created_at"].as_str().unwrap().ends_with('Z'));
    assert!(signup.json.get("password_hash").is_none());
    api.post("/api/signup", json!({"username": name.to_uppercase(), "password": PASSWORD}))
        .await
        .assert_problem(409, "username-taken");
    let bad_name = api.post("/api/signup", json!({"username": "a b", "password": PASSWORD})).await;
    bad_name.assert_problem(422, "validation");
    assert!(bad_name.json["detail"].as_str().unwrap().contains("User names"), "{bad_name:?}");
    let short = api.post("/api/signup", json!({"username": unique_name("x"), "password": "short"})).await;
    short.assert_problem(422, "validation");
    assert!(short.json["detail"].as_str().unwrap().contains("at least 12 characters"), "{short:?}");
    let missing = api.post("/api/signup", json!({"username": unique_name("x")})).await;
    missing.assert_problem(422, "validation");
    assert!(missing.json["detail"].as_str().unwrap().contains("password"), "{missing:?}");

    // Sign-in: one generic refusal.
    let wrong = api.post("/api/signin", json!({"username": name, "password": "not the password"})).await;
    wrong.assert_problem(401, "invalid-credentials");
    let unknown = api.post("/api/signin", json!({"username": unique_name("nobody"), "password": PASSWORD})).await;
    unknown.assert_problem(401, "invalid-credentials");
    assert_eq!(wrong.json, unknown.json, "the same answer whatever the reason");
    let pair = api.post("/api/signin", json!({"username": name, "password": PASSWORD})).await;
    assert_eq!(pair.status, 200, "{pair:?}");
    assert_eq!(pair.json["token_type"], "Bearer");
    assert_eq!(pair.json["expires_in"], 900);
    assert_eq!(refresh_token(&pair.json).len(), 43);
    assert_eq!(pair.header("cache-control"), Some("no-store"));
    let header = jwt_header(access(&pair.json));
    assert_eq!(header["alg"], "EdDSA");
    assert_eq!(header["typ"], "at+jwt");
    assert!(header["kid"].is_string());

    // Who am I.
    let me = api.with_bearer(access(&pair.json)).get("/api/me").await;
    assert_eq!(me.status, 200, "{me:?}");
    assert_eq!(me.json, signup.json);
    let anonymous = api.get("/api/me").await;
    anonymous.assert_problem(401, "unauthenticated");
    assert_eq!(anonymous.header("www-authenticate"), Some("Bearer realm=\"tessera\""));

    // Products.
    let authed = api.with_bearer(access(&pair.json));
    let created =
        authed.post("/api/products", json!({"name": "Widget", "description": "Blue", "price": "12.50"})).await;
    assert_eq!(created.status, 201, "{created:?}");
    assert_eq!(created.json["price"], "12.5");
    assert_eq!(created.json["name"], "Widget");
    let id = created.json["id"].as_i64().unwrap();
    assert_eq!(created.header("location"), Some(format!("/api/products/{id}").as_str()));
    // Numbers keep their exact text: no binary floating point on the way.
    let exact = authed.post("/api/products", json!({"name": "Exact", "price": 0.1})).await;
    assert_eq!(exact.json["price"], "0.1", "{exact:?}");
    let big = authed
        .raw(
            "POST",
            "/api/products",
            Some(br#"{"name": "Big", "price": 123456789012345.123456}"#.to_vec()),
            &[("content-type", "application/json")],
        )
        .await;
    assert_eq!(big.json["price"], "123456789012345.123456", "{big:?}");
    assert_eq!(big.json["description"], "");

    let shown = authed.get(&format!("/api/products/{id}")).await;
    assert_eq!(shown.status, 200);
    assert_eq!(shown.json, created.json);
    let page = authed.get("/api/products?limit=2").await;
    assert_eq!(page.status, 200, "{page:?}");
    assert_eq!(page.json["items"].as_array().unwrap().len(), 2);
    let total = page.json["total"].as_i64().unwrap();
    assert!(total >= 3);
    let rest = authed.get(&format!("/api/products?limit=100&offset={}", total - 1)).await;
    assert_eq!(rest.json["items"].as_array().unwrap().len(), 1);
    authed.get("/api/products?limit=0").await.assert_problem(400, "invalid-query");
    authed.get("/api/products?limit=abc").await.assert_problem(400, "invalid-query");
    authed.get("/api/products?offset=-1").await.assert_problem(400, "invalid-query");

    server.clock.advance(Duration::from_secs(2));
    let replaced =
        authed.send("PUT", &format!("/api/products/{id}"), Some(json!({"name": "Gadget", "price": 3}))).await;
    assert_eq!(replaced.status, 200, "{replaced:?}");
    assert_eq!((replaced.json["name"].as_str(), replaced.json["price"].as_str()), (Some("Gadget"), Some("3")));
    assert_eq!(replaced.json["description"], "", "PUT replaces the whole product");
    assert_eq!(replaced.json["created_at"], created.json["created_at"]);
    assert_ne!(replaced.json["updated_at"], created.json["updated_at"]);
    let patched = authed.send("PATCH", &format!("/api/products/{id}"), Some(json!({"price": "4.05"}))).await;
    assert_eq!(patched.status, 200);
    assert_eq!((patched.json["name"].as_str(), patched.json["price"].as_str()), (Some("Gadget"), Some("4.05")));

    for (body, needle) in [
        (json!({"name": "", "price": "1"}), "Name must be 1 to 200"),
        (json!({"name": "x".repeat(201), "price": "1"}), "Name must be 1 to 200"),
        (json!({"name": "ok", "price": "-1"}), "zero or more"),
        (json!({"name": "ok", "price": -1}), "zero or more"),
        (json!({"name": "ok", "price": "1e3"}), "plain decimal"),
        (json!({"name": "ok", "price": true}), "decimal"),
        (json!({"name": "ok"}), "price"),
        (json!({"name": 5, "price": "1"}), "Invalid type"),
    ] {
        let refused = authed.post("/api/products", body.clone()).await;
        refused.assert_problem(422, "validation");
        assert!(refused.json["detail"].as_str().unwrap().contains(needle), "{body}: {refused:?}");
    }
    let exponent = authed
        .raw(
            "POST",
            "/api/products",
            Some(br#"{"name": "ok", "price": 1e3}"#.to_vec()),
            &[("content-type", "application/json")],
        )
        .await;
    exponent.assert_problem(422, "validation");
    assert!(exponent.json["detail"].as_str().unwrap().contains("exponent"));
    assert_eq!(authed.post("/api/products", json!({"name": "x".repeat(200), "price": "0"})).await.status, 201);

    assert_eq!(authed.send("DELETE", &format!("/api/products/{id}"), None).await.status, 204);
    authed.get(&format!("/api/products/{id}")).await.assert_problem(404, "not-found");
    authed.send("DELETE", &format!("/api/products/{id}"), None).await.assert_problem(404, "not-found");
    authed.send("PATCH", &format!("/api/products/{id}"), Some(json!({}))).await.assert_problem(404, "not-found");
    authed.get("/api/products/not-a-number").await.assert_problem(404, "not-found");
    for (method, path) in [("GET", "/api/products"), ("GET", "/api/products/1"), ("DELETE", "/api/products/1")] {
        api.send(method, path, None).await.assert_problem(401, "unauthenticated");
    }
    api.post("/api/products", json!({"name": "x", "price": "1"})).await.assert_problem(401, "unauthenticated");

    // Refresh: a new pair; the old refresh token is spent.
    let refreshed = api.post("/api/token/refresh", json!({"refresh_token": refresh_token(&pair.json)})).await;
    assert_eq!(refreshed.status, 200, "{refreshed:?}");
    assert_ne!(refresh_token(&refreshed.json), refresh_token(&pair.json));
    assert_eq!(api.with_bearer(access(&refreshed.json)).get("/api/me").await.json["username"], name.as_str());
    api.post("/api/token/refresh", json!({"refresh_token": "garbage"}))
        .await
        .assert_problem(401, "invalid-refresh-token");

    // Sign-out revokes the family: the newest refresh token dies too.
    assert_eq!(api.post("/api/signout", json!({"refresh_token": refresh_token(&refreshed.json)})).await.status, 204);
    api.post("/api/token/refresh", json!({"refresh_token": refresh_token(&refreshed.json)}))
        .await
        .assert_problem(401, "invalid-refresh-token");
    assert_eq!(api.post("/api/signout", json!({"refresh_token": "unknown"})).await.status, 204, "no oracle");
}

#[tokio::test]
async fn the_api_flow_on_sqlite() {
    let (server, _dir) = server().await;
    api_flow(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn the_api_flow_with_users_in_postgres() {
    if !services::reachable("PostgreSQL", "127.0.0.1:5432") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let mut config = test_config(dir.path(), &clock);
    config.database_url = services::postgres_url();
    let server = TestServer::start(config, clock).await;
    api_flow(&server).await;
    server.stop().await;
}

/// The active signing key, read from the database, to forge tokens with.
async fn active_key(server: &TestServer) -> (String, ed25519_dalek::SigningKey) {
    let keys = server.app_state.db.signing_keys().await.unwrap();
    let key = keys.iter().find(|k| k.retired_at.is_none()).unwrap();
    let seed: [u8; 32] = key.private_key.clone().unwrap().try_into().unwrap();
    (key.kid.clone(), ed25519_dalek::SigningKey::from_bytes(&seed))
}

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

fn forge(key: &ed25519_dalek::SigningKey, header: &Value, claims: &Value) -> String {
    let message = format!("{}.{}", b64(header), b64(claims));
    format!("{message}.{}", URL_SAFE_NO_PAD.encode(key.sign(message.as_bytes()).to_bytes()))
}

#[tokio::test]
async fn malicious_tokens_are_all_401() {
    let (server, _dir) = server().await;
    let api = Api::new(&server);
    let pair = api.signup_and_signin(&unique_name("victim")).await;
    let real = access(&pair).to_owned();
    let (kid, key) = active_key(&server).await;
    let real_claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(real.split('.').nth(1).unwrap()).unwrap()).unwrap();
    let header = json!({"alg": "EdDSA", "typ": "at+jwt", "kid": kid});
    let now = real_claims["iat"].as_i64().unwrap();

    // The forging is faithful: an honest forged token works.
    assert_eq!(api.with_bearer(&forge(&key, &header, &real_claims)).get("/api/me").await.status, 200);

    let mut refused: Vec<(String, String)> = Vec::new();
    for alg in ["none", "None", "NONE"] {
        let token = format!("{}.{}.", b64(&json!({"alg": alg, "typ": "at+jwt", "kid": kid})), b64(&real_claims));
        refused.push((format!("alg {alg}"), token));
    }
    // HMAC keyed with the public key (raw and as its JWK `x`).
    let public = key.verifying_key().to_bytes();
    for secret in [public.to_vec(), URL_SAFE_NO_PAD.encode(public).into_bytes()] {
        let message = format!("{}.{}", b64(&json!({"alg": "HS256", "typ": "at+jwt", "kid": kid})), b64(&real_claims));
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&secret).unwrap();
        mac.update(message.as_bytes());
        refused.push((
            "HS256 with the public key".into(),
            format!("{message}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())),
        ));
    }
    let attacker = ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]);
    let attacker_x = URL_SAFE_NO_PAD.encode(attacker.verifying_key().to_bytes());
    for (name, value) in [
        ("jwk", json!({"kty": "OKP", "crv": "Ed25519", "x": attacker_x})),
        ("jku", json!("https://evil.example/jwks.json")),
        ("x5u", json!("https://evil.example/cert.pem")),
    ] {
        let mut head = header.clone();
        head[name] = value;
        refused.push((format!("{name} header"), forge(&attacker, &head, &real_claims)));
        refused.push((format!("{name} header, our signature"), forge(&key, &head, &real_claims)));
    }
    let parts: Vec<&str> = real.split('.').collect();
    let mut tampered_claims = real_claims.clone();
    // Another subject than the victim's (who may well be user 1 in a fresh
    // database: "1" would leave the payload as signed).
    tampered_claims["sub"] = json!("999999");
    assert_ne!(tampered_claims["sub"], real_claims["sub"]);
    refused.push(("tampered payload".into(), format!("{}.{}.{}", parts[0], b64(&tampered_claims), parts[2])));
    let mut claims_variants: Vec<(&str, Value)> = Vec::new();
    let mut no_exp = real_claims.clone();
    no_exp.as_object_mut().unwrap().remove("exp");
    claims_variants.push(("missing exp", no_exp));
    let mut past = real_claims.clone();
    past["exp"] = json!(now - 1);
    claims_variants.push(("past exp", past));
    let mut future = real_claims.clone();
    future["nbf"] = json!(now + 60);
    claims_variants.push(("future nbf", future));
    let mut string_exp = real_claims.clone();
    string_exp["exp"] = json!("99999999999");
    claims_variants.push(("string exp", string_exp));
    let mut wrong_iss = real_claims.clone();
    wrong_iss["iss"] = json!("https://evil.example");
    claims_variants.push(("wrong iss", wrong_iss));
    let mut wrong_aud = real_claims.clone();
    wrong_aud["aud"] = json!("another-api");
    claims_variants.push(("wrong aud", wrong_aud));
    for (name, claims) in claims_variants {
        refused.push((name.into(), forge(&key, &header, &claims)));
    }
    for typ in ["JWT", "refresh+jwt"] {
        let mut head = header.clone();
        head["typ"] = json!(typ);
        refused.push((format!("typ {typ}"), forge(&key, &head, &real_claims)));
    }
    let mut unknown_kid = header.clone();
    unknown_kid["kid"] = json!("no-such-key");
    refused.push(("unknown kid".into(), forge(&key, &unknown_kid, &real_claims)));
    refused.push(("attacker key, our kid".into(), forge(&attacker, &header, &real_claims)));
    refused.push(("garbage".into(), "not.a.jwt".into()));

    for (what, token) in refused {
        let answer = api.with_bearer(&token).get("/api/me").await;
        assert_eq!(answer.status, 401, "{what} must be refused: {answer:?}");
        answer.assert_problem(401, "invalid-token");
        assert!(answer.header("www-authenticate").unwrap().contains("invalid_token"), "{what}");
    }
    // A bad Authorization header never falls back to a cookie, and other
    // schemes are refused.
    for value in ["Basic dXNlcjpwYXNz", "Bearer", &format!("Token {real}")] {
        let answer = api.raw("GET", "/api/me", None, &[("authorization", value), ("accept", "application/json")]).await;
        assert_eq!(answer.status, 401, "{value}");
    }
    let lower = api.raw("GET", "/api/me", None, &[("authorization", &format!("bearer {real}"))]).await;
    assert_eq!(lower.status, 200, "the scheme is case-insensitive");
    server.stop().await;
}

#[tokio::test]
async fn access_tokens_expire_on_the_servers_clock() {
    let (server, _dir) = server().await;
    let api = Api::new(&server);
    let pair = api.signup_and_signin(&unique_name("clock")).await;
    let authed = api.with_bearer(access(&pair));
    server.clock.advance(Duration::from_secs(15 * 60 - 1));
    assert_eq!(authed.get("/api/me").await.status, 200, "valid for 15 minutes");
    server.clock.advance(Duration::from_secs(1));
    authed.get("/api/me").await.assert_problem(401, "invalid-token");
    // The refresh token still works and yields a fresh access token.
    let refreshed = api.post("/api/token/refresh", json!({"refresh_token": refresh_token(&pair)})).await;
    assert_eq!(refreshed.status, 200);
    assert_eq!(api.with_bearer(access(&refreshed.json)).get("/api/me").await.status, 200);
    server.stop().await;
}

#[tokio::test]
async fn key_rotation_keeps_old_tokens_valid_until_they_expire() {
    let (server, _dir) = server().await;
    let api = Api::new(&server);
    let name = unique_name("rotor");
    let old_pair = api.signup_and_signin(&name).await;
    let old_kid = jwt_header(access(&old_pair))["kid"].as_str().unwrap().to_owned();
    let jwks = api.get("/.well-known/jwks.json").await;
    assert_eq!(jwks.status, 200);
    assert_eq!(jwks.json["keys"].as_array().unwrap().len(), 1);
    let listed = &jwks.json["keys"][0];
    assert_eq!(
        (listed["kty"].as_str(), listed["crv"].as_str(), listed["alg"].as_str()),
        (Some("OKP"), Some("Ed25519"), Some("EdDSA"))
    );
    assert_eq!(listed["kid"], old_kid.as_str());
    assert!(listed.get("d").is_none(), "never the private key");

    // What `tessera keys rotate` does, then the reload a running server does
    // within 30 seconds.
    let db = &server.app_state.db;
    let new_kid = TokenService::rotate_keys(db, tessera::Clock::now(&server.clock)).await.unwrap();
    server.app_state.tokens.reload().await.unwrap();
    assert_ne!(new_kid, old_kid);
    let jwks_kids = || async {
        api.get("/.well-known/jwks.json").await.json["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect::<BTreeSet<String>>()
    };
    // Published at once, but not signing yet: a verifier behind an HTTP
    // cache may hold the JWKS of a moment ago for its max-age.
    assert_eq!(jwks_kids().await, BTreeSet::from([old_kid.clone(), new_kid.clone()]), "the new key is published");
    let during = api.post("/api/signin", json!({"username": name, "password": PASSWORD})).await.json;
    assert_eq!(jwt_header(access(&during))["kid"], old_kid.as_str(), "the old key signs while the new one spreads");
    server.clock.advance(tessera_server::api::tokens::PUBLISH_BEFORE_SIGNING - Duration::from_secs(1));
    server.app_state.tokens.reload().await.unwrap();
    let still = api.post("/api/signin", json!({"username": name, "password": PASSWORD})).await.json;
    assert_eq!(jwt_header(access(&still))["kid"], old_kid.as_str(), "…until the JWKS max-age and a reload passed");
    assert!(tessera_server::api::tokens::PUBLISH_BEFORE_SIGNING >= Duration::from_secs(300 + 30));
    server.clock.advance(Duration::from_secs(1));
    server.app_state.tokens.reload().await.unwrap();

    assert_eq!(api.with_bearer(access(&old_pair)).get("/api/me").await.status, 200, "old token still valid");
    let new_pair = api.post("/api/signin", json!({"username": name, "password": PASSWORD})).await.json;
    assert_eq!(jwt_header(access(&new_pair))["kid"], new_kid.as_str(), "new tokens carry the new kid");
    assert_eq!(jwks_kids().await, BTreeSet::from([old_kid.clone(), new_kid.clone()]), "JWKS lists both");
    let stored = db.signing_keys().await.unwrap();
    assert!(stored.iter().find(|k| k.kid == old_kid).unwrap().private_key.is_none(), "retired private key erased");

    // Once every token the old key signed has expired, it is dropped.
    server.clock.advance(Duration::from_secs(15 * 60 + 1));
    server.app_state.tokens.reload().await.unwrap();
    let jwks = api.get("/.well-known/jwks.json").await;
    assert_eq!(jwks.json["keys"].as_array().unwrap().len(), 1);
    assert_eq!(jwks.json["keys"][0]["kid"], new_kid.as_str());
    server.stop().await;
}

#[tokio::test]
async fn a_reused_refresh_token_revokes_its_whole_family() {
    let (server, _dir) = server().await;
    let api = Api::new(&server);
    let name = unique_name("thief");
    let first = api.signup_and_signin(&name).await;
    let user_id = api.with_bearer(access(&first)).get("/api/me").await.json["id"].as_i64().unwrap();
    let other_device = api.post("/api/signin", json!({"username": name, "password": PASSWORD})).await.json;

    let second = api.post("/api/token/refresh", json!({"refresh_token": refresh_token(&first)})).await;
    assert_eq!(second.status, 200);
    let third = api.post("/api/token/refresh", json!({"refresh_token": refresh_token(&second.json)})).await;
    assert_eq!(third.status, 200);
    // The thief replays the first token: refused, and the family dies.
    api.post("/api/token/refresh", json!({"refresh_token": refresh_token(&first)}))
        .await
        .assert_problem(401, "invalid-refresh-token");
    api.post("/api/token/refresh", json!({"refresh_token": refresh_token(&third.json)}))
        .await
        .assert_problem(401, "invalid-refresh-token");
    // Another family of the same user is untouched.
    let elsewhere = api.post("/api/token/refresh", json!({"refresh_token": refresh_token(&other_device)})).await;
    assert_eq!(elsewhere.status, 200);

    // Log out everywhere: every family of the user.
    let again = api.post("/api/signin", json!({"username": name, "password": PASSWORD})).await.json;
    let revoked = server.app_state.tokens.revoke_all_refresh_families(user_id).await.unwrap();
    // The other device's used and newest tokens, and the new sign-in's.
    assert_eq!(revoked, 3);
    for token in [refresh_token(&elsewhere.json), refresh_token(&again)] {
        api.post("/api/token/refresh", json!({"refresh_token": token}))
            .await
            .assert_problem(401, "invalid-refresh-token");
    }

    // Refresh tokens expire too.
    let late = api.post("/api/signin", json!({"username": name, "password": PASSWORD})).await.json;
    server.clock.advance(Duration::from_secs(30 * 24 * 3600));
    api.post("/api/token/refresh", json!({"refresh_token": refresh_token(&late)}))
        .await
        .assert_problem(401, "invalid-refresh-token");
    server.stop().await;
}

/// Issue #14 item 7: a replayed refresh token also ends the access tokens
/// of its family at once (through the user's "not before" mark, so the
/// user's other clients' access tokens too; they refresh once), and the
/// replay is in the audit trail.
#[tokio::test]
async fn a_replayed_refresh_token_ends_the_familys_access_tokens_and_is_audited() {
    let (server, _dir) = server().await;
    let api = Api::new(&server);
    let name = unique_name("replay");
    let first = api.signup_and_signin(&name).await;
    let user_id = api.with_bearer(access(&first)).get("/api/me").await.json["id"].as_i64().unwrap();
    let other_device = api.post("/api/signin", json!({"username": name, "password": PASSWORD})).await.json;
    server.clock.advance(Duration::from_secs(5));
    let second = api.post("/api/token/refresh", json!({"refresh_token": refresh_token(&first)})).await;
    assert_eq!(second.status, 200);
    for pair in [&first, &second.json] {
        assert_eq!(api.with_bearer(access(pair)).get("/api/me").await.status, 200, "valid before the replay");
    }

    // A minute later the thief replays the first refresh token.
    server.clock.advance(Duration::from_secs(60));
    api.post("/api/token/refresh", json!({"refresh_token": refresh_token(&first)}))
        .await
        .assert_problem(401, "invalid-refresh-token");
    // Every access token of the family is dead now, not in 15 minutes.
    for pair in [&first, &second.json] {
        api.with_bearer(access(pair)).get("/api/me").await.assert_problem(401, "invalid-token");
    }
    // The user's other client refreshes once and carries on.
    api.with_bearer(access(&other_device)).get("/api/me").await.assert_problem(401, "invalid-token");
    server.clock.advance(Duration::from_secs(1));
    let renewed = api.post("/api/token/refresh", json!({"refresh_token": refresh_token(&other_device)})).await;
    assert_eq!(renewed.status, 200);
    assert_eq!(api.with_bearer(access(&renewed.json)).get("/api/me").await.status, 200);

    // The audit trail says what happened (and never the token).
    let events = server.app_state.db.audit_events(user_id, 20).await.unwrap();
    let reuse: Vec<_> = events.iter().filter(|e| e.kind == "token_reuse_detected").collect();
    assert_eq!(reuse.len(), 1, "{events:?}");
    assert_eq!(reuse[0].ip.as_deref(), Some("127.0.0.1"), "the replaying client's address is recorded");
    server.stop().await;
}

#[tokio::test]
async fn cookie_callers_need_the_csrf_header_for_unsafe_methods() {
    let (server, _dir) = server().await;
    let mut browser = server.browser();
    assert_eq!(browser.register(&unique_name("cookie"), PASSWORD).await.status, 303);
    let csrf = browser.get("/").await.csrf();
    let cookie = browser.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ");
    let api = Api { cookie: Some(cookie), ..Api::new(&server) };

    let me = api.get("/api/me").await;
    assert_eq!(me.status, 200, "{me:?}");
    assert_eq!(api.get("/api/products").await.status, 200, "safe methods need no CSRF token");

    let product = json!({"name": "Cookie jar", "price": "5"});
    let no_token = api.post("/api/products", product.clone()).await;
    no_token.assert_problem(403, "csrf");
    api.send_with("POST", "/api/products", Some(product.clone()), &[("x-csrf-token", "forged")])
        .await
        .assert_problem(403, "csrf");
    // Even with Accept: text/html, the API answers with a problem document.
    let html_client = api
        .raw(
            "POST",
            "/api/products",
            Some(product.to_string().into_bytes()),
            &[("content-type", "application/json"), ("accept", "text/html")],
        )
        .await;
    html_client.assert_problem(403, "csrf");
    api.send_with(
        "POST",
        "/api/products",
        Some(product.clone()),
        &[("x-csrf-token", &csrf), ("sec-fetch-site", "cross-site")],
    )
    .await
    .assert_problem(403, "csrf");
    let created = api.send_with("POST", "/api/products", Some(product.clone()), &[("x-csrf-token", &csrf)]).await;
    assert_eq!(created.status, 201, "{created:?}");
    let path = format!("/api/products/{}", created.json["id"]);
    api.send("DELETE", &path, None).await.assert_problem(403, "csrf");
    assert_eq!(api.send_with("DELETE", &path, None, &[("x-csrf-token", &csrf)]).await.status, 204);

    // Bearer callers need no CSRF token.
    let tokens = Api::new(&server).signup_and_signin(&unique_name("bearer")).await;
    assert_eq!(Api::new(&server).with_bearer(access(&tokens)).post("/api/products", product).await.status, 201);

    // A logged-out cookie is no identity.
    browser.logout().await;
    let stale = Api { cookie: api.cookie.clone(), ..Api::new(&server) };
    stale.get("/api/me").await.assert_problem(401, "unauthenticated");
    server.stop().await;
}

#[tokio::test]
async fn bad_bodies_are_4xx_problems_never_5xx() {
    let (server, _dir) = server().await;
    let api = Api::new(&server);
    let signin = "/api/signin";
    let json_type = [("content-type", "application/json")];

    api.raw("POST", signin, Some(b"{\"username\": ".to_vec()), &json_type).await.assert_problem(400, "malformed-json");
    api.raw("POST", signin, Some(b"not json".to_vec()), &json_type).await.assert_problem(400, "malformed-json");
    api.raw("POST", signin, Some(b"".to_vec()), &json_type).await.assert_problem(400, "malformed-json");
    api.raw("POST", signin, Some(b"{\"username\": \"a\xff\"}".to_vec()), &json_type)
        .await
        .assert_problem(400, "invalid-utf8");
    api.raw("POST", signin, Some(b"[1, 2]".to_vec()), &json_type).await.assert_problem(422, "validation");
    for content_type in ["text/plain", "application/x-www-form-urlencoded", "application/xml"] {
        api.raw("POST", signin, Some(b"{}".to_vec()), &[("content-type", content_type)])
            .await
            .assert_problem(415, "unsupported-media-type");
    }
    api.raw("POST", signin, Some(b"{}".to_vec()), &[]).await.assert_problem(415, "unsupported-media-type");
    let huge = format!("{{\"username\": \"{}\", \"password\": \"x\"}}", "a".repeat(200 * 1024));
    api.raw("POST", signin, Some(huge.clone().into_bytes()), &json_type).await.assert_problem(413, "payload-too-large");
    // Chunked, without Content-Length: refused while reading.
    let chunked = raw_http(
        &server,
        &format!(
            "POST {signin} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
             Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n{}",
            huge.as_bytes()
                .chunks(8192)
                .map(|c| format!("{:x}\r\n{}\r\n", c.len(), String::from_utf8_lossy(c)))
                .collect::<String>()
                + "0\r\n\r\n"
        ),
    )
    .await;
    assert!(chunked.starts_with("HTTP/1.1 413"), "{}", &chunked[..chunked.len().min(300)]);
    assert!(chunked.to_ascii_lowercase().contains("content-type: application/problem+json"));

    // Unknown routes and methods under /api answer in problems too.
    api.raw("GET", "/api/nothing-here", None, &[("accept", "text/html")]).await.assert_problem(404, "not-found");
    api.raw("DELETE", "/api/me", None, &[]).await.assert_problem(405, "method-not-allowed");
    server.stop().await;
}

/// Sends `request` as is and returns everything the server answered.
async fn raw_http(server: &TestServer, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(server.address).await.unwrap();
    // The server may answer 413 and close before reading everything.
    let _ = stream.write_all(request.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn the_openapi_document_covers_every_route() {
    let (server, _dir) = server().await;
    let api = Api::new(&server);
    let doc = api.get("/api/openapi.json").await;
    assert_eq!(doc.status, 200);
    assert!(doc.json["openapi"].as_str().unwrap().starts_with("3.1"), "{:?}", doc.json["openapi"]);
    let paths = doc.json["paths"].as_object().unwrap();
    let routes = tessera_server::api::ROUTES;
    let mut documented = BTreeSet::new();
    for (path, operations) in paths {
        for method in operations.as_object().unwrap().keys() {
            if ["get", "put", "post", "delete", "patch", "head", "options"].contains(&method.as_str()) {
                documented.insert((method.clone(), path.clone()));
            }
        }
    }
    let served: BTreeSet<(String, String)> = routes.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    assert_eq!(documented, served, "the document lists exactly the routes the router serves");
    for scheme in ["bearer", "cookie"] {
        assert!(doc.json["components"]["securitySchemes"][scheme].is_object(), "{scheme}");
    }
    // Who may change a product, and who may sign up, are documented.
    for method in ["put", "patch", "delete"] {
        let refused = &doc.json["paths"]["/api/products/{id}"][method]["responses"]["403"]["description"];
        assert!(refused.as_str().unwrap().contains("owner"), "{method}: {refused}");
    }
    assert!(doc.json["components"]["schemas"]["Product"]["properties"]["owner_id"].is_object());
    assert!(doc.json["components"]["schemas"]["Credentials"]["properties"]["invite"].is_object());
    let signup_refused = &doc.json["paths"]["/api/signup"]["post"]["responses"]["403"]["description"];
    assert!(signup_refused.as_str().unwrap().contains("invitation"), "{signup_refused}");

    // And ROUTES is what the router really serves: no route is a 404 or 405.
    for (method, path) in routes {
        let concrete = path.replace("{id}", "1");
        let answer = api.raw(&method.to_uppercase(), &concrete, None, &[("accept", "application/json")]).await;
        assert!(![404, 405].contains(&answer.status), "{method} {path}: {}", answer.status);
        assert!(answer.status < 500, "{method} {path}: {}", answer.status);
    }
    server.stop().await;
}

#[tokio::test]
async fn a_password_change_on_the_site_revokes_api_refresh_tokens() {
    let (server, _dir) = server().await;
    let name = unique_name("changer");
    let mut browser = server.browser();
    assert_eq!(browser.register(&name, PASSWORD).await.status, 303);
    let api = Api::new(&server);
    let pair = api.post("/api/signin", json!({"username": name, "password": PASSWORD})).await.json;
    let token = browser.get("/account/password").await.csrf();
    let changed = browser
        .post_form(
            "/account/password",
            &[("csrf_token", &token), ("current_password", PASSWORD), ("new_password", "a brand new passphrase")],
        )
        .await;
    assert_eq!(changed.status, 303, "{}", changed.body);
    api.post("/api/token/refresh", json!({"refresh_token": refresh_token(&pair)}))
        .await
        .assert_problem(401, "invalid-refresh-token");
    server.stop().await;
}

#[tokio::test]
async fn account_operations_in_the_api() {
    let (server, _dir) = server().await;
    let name = unique_name("apiacct");
    let api = Api::new(&server);
    let pair = api.signup_and_signin(&name).await;
    let me = api.with_bearer(access(&pair));
    // Two browser sessions of the same user.
    let mut laptop = server.browser();
    assert_eq!(laptop.login(&name, PASSWORD).await.status, 303);
    let mut phone = server.browser();
    assert_eq!(phone.login(&name, PASSWORD).await.status, 303);

    let sessions = me.get("/api/sessions").await;
    assert_eq!(sessions.status, 200, "{sessions:?}");
    let list = sessions.json.as_array().unwrap().clone();
    assert_eq!(list.len(), 2);
    assert!(list.iter().all(|s| s["current"] == json!(false)), "a bearer caller owns no cookie session");
    let handle = list[0]["handle"].as_str().unwrap().to_owned();
    assert!(laptop.session_id().unwrap() != handle && phone.session_id().unwrap() != handle);

    // Sensitive operations need the current password.
    me.send("DELETE", &format!("/api/sessions/{handle}"), Some(json!({"current_password": "wrong password here"})))
        .await
        .assert_problem(401, "invalid-credentials");
    me.send("DELETE", "/api/sessions/not-a-handle", Some(json!({"current_password": PASSWORD})))
        .await
        .assert_problem(404, "not-found");
    let ended =
        me.send("DELETE", &format!("/api/sessions/{handle}"), Some(json!({"current_password": PASSWORD}))).await;
    assert_eq!(ended.status, 204, "{ended:?}");
    assert_eq!(me.get("/api/sessions").await.json.as_array().unwrap().len(), 1);
    // Access tokens carry their issue time in whole seconds: one issued in
    // the second of a revocation outlives it (a known limit); this one is older.
    server.clock.advance(Duration::from_secs(1));
    let others = me.post("/api/sessions/revoke-others", json!({"current_password": PASSWORD})).await;
    assert_eq!(others.status, 200, "{others:?}");
    assert_eq!(others.json["revoked"], json!(1));
    assert_eq!(others.json["tokens_revoked"], json!(1), "API sign-ins end too: {others:?}");
    assert_eq!(laptop.get("/profile").await.status, 303);
    assert_eq!(phone.get("/profile").await.status, 303);
    // Everywhere means every API sign-in as well, this bearer caller's own.
    me.get("/api/me").await.assert_problem(401, "invalid-token");
    api.post("/api/token/refresh", json!({"refresh_token": refresh_token(&pair)}))
        .await
        .assert_problem(401, "invalid-refresh-token");
    let again = api.post("/api/signin", json!({"username": name, "password": PASSWORD})).await;
    assert_eq!(again.status, 200, "{again:?}");
    let pair = again.json;
    let me = api.with_bearer(access(&pair));

    // Password change: policy refusals say why; success revokes refresh tokens.
    let weak = me.post("/api/password", json!({"current_password": PASSWORD, "new_password": "short"})).await;
    weak.assert_problem(422, "validation");
    let changed =
        me.post("/api/password", json!({"current_password": PASSWORD, "new_password": "a brand new passphrase"})).await;
    assert_eq!(changed.status, 204, "{changed:?}");
    api.post("/api/token/refresh", json!({"refresh_token": refresh_token(&pair)}))
        .await
        .assert_problem(401, "invalid-refresh-token");
    api.post("/api/signin", json!({"username": name, "password": PASSWORD}))
        .await
        .assert_problem(401, "invalid-credentials");

    // Delete the account.
    let fresh = api.post("/api/signin", json!({"username": name, "password": "a brand new passphrase"})).await;
    assert_eq!(fresh.status, 200);
    let me = api.with_bearer(access(&fresh.json));
    let deleted = me.send("DELETE", "/api/account", Some(json!({"current_password": "a brand new passphrase"}))).await;
    assert_eq!(deleted.status, 204, "{deleted:?}");
    me.get("/api/me").await.assert_problem(401, "invalid-token");
    server.stop().await;
}

#[tokio::test]
async fn api_sign_in_is_throttled_with_retry_after() {
    let (server, _dir) = server().await;
    let name = unique_name("hammered");
    let api = Api::new(&server);
    api.signup_and_signin(&name).await;
    let mut last = None;
    for _ in 0..12 {
        let reply = api.post("/api/signin", json!({"username": name, "password": "not the right one"})).await;
        if reply.status == 429 {
            last = Some(reply);
            break;
        }
        reply.assert_problem(401, "invalid-credentials");
    }
    let throttled = last.expect("repeated failures are throttled");
    throttled.assert_problem(429, "throttled");
    let retry: u64 = throttled.header("retry-after").unwrap().parse().unwrap();
    assert!(retry >= 1);
    // Even the right password waits until the back-off has passed.
    api.post("/api/signin", json!({"username": name, "password": PASSWORD})).await.assert_problem(429, "throttled");
    server.clock.advance(std::time::Duration::from_secs(retry));
    assert_eq!(api.post("/api/signin", json!({"username": name, "password": PASSWORD})).await.status, 200);
    server.stop().await;
}

#[tokio::test]
async fn api_password_confirmations_are_throttled_with_retry_after() {
    let (server, _dir) = server().await;
    let name = unique_name("apiguess");
    let api = Api::new(&server);
    let pair = api.signup_and_signin(&name).await;
    // A stolen access token must not become a password-guessing oracle.
    let thief = api.with_bearer(access(&pair));
    let mut blocked = None;
    for _ in 0..12 {
        let reply = thief.send("DELETE", "/api/account", Some(json!({"current_password": "a wrong guess"}))).await;
        if reply.status == 429 {
            blocked = Some(reply);
            break;
        }
        reply.assert_problem(401, "invalid-credentials");
    }
    let blocked = blocked.expect("repeated wrong passwords are throttled");
    blocked.assert_problem(429, "throttled");
    let wait: u64 = blocked.header("retry-after").unwrap().parse().unwrap();
    assert!(wait >= 1);
    // The block covers every confirmation and sign-in of the account, and
    // is checked before the password: the right one waits too.
    let change = json!({"current_password": PASSWORD, "new_password": "a brand new passphrase"});
    thief.post("/api/password", change.clone()).await.assert_problem(429, "throttled");
    thief
        .post("/api/sessions/revoke-others", json!({"current_password": PASSWORD}))
        .await
        .assert_problem(429, "throttled");
    api.post("/api/signin", json!({"username": name, "password": PASSWORD})).await.assert_problem(429, "throttled");
    server.clock.advance(Duration::from_secs(wait));
    assert_eq!(thief.post("/api/password", change).await.status, 204);
    server.stop().await;
}

#[tokio::test]
async fn access_tokens_die_with_sign_out_password_change_and_account_changes() {
    let (server, _dir) = server().await;
    let name = unique_name("notbefore");
    let api = Api::new(&server);
    let first = api.signup_and_signin(&name).await;
    let second = api.post("/api/signin", json!({"username": name, "password": PASSWORD})).await.json;
    assert_eq!(api.with_bearer(access(&first)).get("/api/me").await.status, 200);

    // Signing out one client refuses every access token issued before it
    // (a per-user mark); the other client refreshes and goes on.
    server.clock.advance(Duration::from_secs(2));
    assert_eq!(api.post("/api/signout", json!({"refresh_token": refresh_token(&first)})).await.status, 204);
    api.with_bearer(access(&first)).get("/api/me").await.assert_problem(401, "invalid-token");
    api.with_bearer(access(&second)).get("/api/me").await.assert_problem(401, "invalid-token");
    let renewed = api.post("/api/token/refresh", json!({"refresh_token": refresh_token(&second)})).await;
    assert_eq!(renewed.status, 200, "{renewed:?}");
    let me = api.with_bearer(access(&renewed.json));
    assert_eq!(me.get("/api/me").await.status, 200, "a token issued after the mark works at once");

    // A password change on the site kills the access token too, not only
    // the refresh tokens; a new sign-in in the same second works.
    server.clock.advance(Duration::from_secs(2));
    let mut browser = server.browser();
    assert_eq!(browser.login(&name, PASSWORD).await.status, 303);
    let token = browser.get("/account/password").await.csrf();
    let changed = browser
        .post_form(
            "/account/password",
            &[("csrf_token", &token), ("current_password", PASSWORD), ("new_password", "a brand new passphrase")],
        )
        .await;
    assert_eq!(changed.status, 303, "{}", changed.body);
    me.get("/api/me").await.assert_problem(401, "invalid-token");
    let fresh = api.post("/api/signin", json!({"username": name, "password": "a brand new passphrase"})).await;
    assert_eq!(fresh.status, 200);
    assert_eq!(api.with_bearer(access(&fresh.json)).get("/api/me").await.status, 200);

    // Disabling (and re-enabling) the account, as `tessera users disable`
    // does it: the old token stays dead after the account is enabled again.
    use tessera::Clock as _;
    server.clock.advance(Duration::from_secs(2));
    let db = &server.app_state.db;
    let user = db.users().user_by_name(&name).await.unwrap().unwrap();
    db.users().set_disabled(user.id, Some(server.clock.now())).await.unwrap();
    db.revoke_all_refresh_tokens(user.id, server.clock.now()).await.unwrap();
    db.users().set_disabled(user.id, None).await.unwrap();
    api.with_bearer(access(&fresh.json)).get("/api/me").await.assert_problem(401, "invalid-token");
    server.stop().await;
}

#[tokio::test]
async fn a_password_change_ends_access_tokens_issued_earlier_in_the_same_second() {
    // Access tokens say when they were issued to the millisecond (`iat_ms`),
    // so the per-user mark tells before from after within one second — and
    // the user behind a token may then come from memory.
    use tessera::Clock as _;
    let (server, _dir) = server().await;
    let name = unique_name("samesecond");
    let api = Api::new(&server);
    let millis = server.clock.now().as_millis().rem_euclid(1000);
    server.clock.advance(Duration::from_millis(u64::try_from(1000 - millis).unwrap()));
    let before = api.signup_and_signin(&name).await;
    let me = api.with_bearer(access(&before));
    assert_eq!(me.get("/api/me").await.status, 200, "the user is now also kept in memory");
    server.clock.advance(Duration::from_millis(300));
    let change = json!({"current_password": PASSWORD, "new_password": "a brand new passphrase"});
    assert_eq!(me.post("/api/password", change).await.status, 204);
    me.get("/api/me").await.assert_problem(401, "invalid-token");
    // A sign-in in the same millisecond as the change works.
    let after = api.post("/api/signin", json!({"username": name, "password": "a brand new passphrase"})).await;
    assert_eq!(after.status, 200, "{after:?}");
    assert_eq!(api.with_bearer(access(&after.json)).get("/api/me").await.status, 200);
    server.stop().await;
}

#[tokio::test]
async fn refresh_families_end_after_their_absolute_lifetime() {
    // The default: 30 days from the sign-in, however often it is refreshed.
    let (server, _dir) = server().await;
    let name = unique_name("longlived");
    let api = Api::new(&server);
    let mut pair = api.signup_and_signin(&name).await;
    for _ in 0..2 {
        server.clock.advance(Duration::from_secs(14 * 24 * 3600));
        let refreshed = api.post("/api/token/refresh", json!({"refresh_token": refresh_token(&pair)})).await;
        assert_eq!(refreshed.status, 200, "day 14 and 28 refresh: {refreshed:?}");
        pair = refreshed.json;
    }
    // Day 30 and a bit: the newest token is two days old, but the family is over.
    server.clock.advance(Duration::from_secs(2 * 24 * 3600 + 60));
    api.post("/api/token/refresh", json!({"refresh_token": refresh_token(&pair)}))
        .await
        .assert_problem(401, "invalid-refresh-token");
    // A new sign-in starts a new family.
    let again = api.post("/api/signin", json!({"username": name, "password": PASSWORD})).await;
    assert_eq!(again.status, 200);
    let refreshed = api.post("/api/token/refresh", json!({"refresh_token": refresh_token(&again.json)})).await;
    assert_eq!(refreshed.status, 200);
    server.stop().await;
}

/// Products have owners: another signed-in user may read a product but not
/// change or delete it (403 `forbidden`, since reading shows it exists
/// anyway); the owner and members of `admin` may.
async fn products_belong_to_their_owner(server: &TestServer) {
    let api = Api::new(server);
    let (alice, bob, carol) = (unique_name("alice"), unique_name("bob"), unique_name("carol"));
    let alice_api = api.with_bearer(access(&api.signup_and_signin(&alice).await));
    let bob_api = api.with_bearer(access(&api.signup_and_signin(&bob).await));
    let carol_api = api.with_bearer(access(&api.signup_and_signin(&carol).await));
    let db = &server.app_state.db;
    let alice_id = db.users().user_by_name(&alice.to_lowercase()).await.unwrap().unwrap().id;

    let created = alice_api.post("/api/products", json!({"name": "Widget", "price": "12.50"})).await;
    assert_eq!(created.status, 201, "{created:?}");
    assert_eq!(created.json["owner_id"], alice_id);
    let path = format!("/api/products/{}", created.json["id"]);

    // Bob can read it, and cannot change or delete it.
    let shown = bob_api.get(&path).await;
    assert_eq!(shown.status, 200);
    assert_eq!(shown.json["owner_id"], alice_id);
    let put = bob_api.send("PUT", &path, Some(json!({"name": "Mine now", "price": "0"}))).await;
    put.assert_problem(403, "forbidden");
    assert!(put.json["detail"].as_str().unwrap().contains("owner"), "{put:?}");
    bob_api.send("PATCH", &path, Some(json!({"price": "0"}))).await.assert_problem(403, "forbidden");
    bob_api.send("DELETE", &path, None).await.assert_problem(403, "forbidden");
    let unchanged = alice_api.get(&path).await;
    assert_eq!((unchanged.json["name"].as_str(), unchanged.json["price"].as_str()), (Some("Widget"), Some("12.5")));
    // A product that does not exist is still 404.
    bob_api.send("DELETE", "/api/products/999999999", None).await.assert_problem(404, "not-found");
    bob_api.send("PATCH", "/api/products/999999999", Some(json!({}))).await.assert_problem(404, "not-found");

    // The owner can.
    let patched = alice_api.send("PATCH", &path, Some(json!({"price": "9"}))).await;
    assert_eq!((patched.status, patched.json["price"].as_str()), (200, Some("9")), "{patched:?}");

    // A member of the admin group can change and delete anyone's product.
    carol_api.send("PATCH", &path, Some(json!({"price": "1"}))).await.assert_problem(403, "forbidden");
    let carol_id = db.users().user_by_name(&carol.to_lowercase()).await.unwrap().unwrap().id;
    db.add_to_group(carol_id, "admin", server.clock.now()).await.unwrap();
    let replaced = carol_api.send("PUT", &path, Some(json!({"name": "Moderated", "price": "1"}))).await;
    assert_eq!(replaced.status, 200, "{replaced:?}");
    assert_eq!(replaced.json["owner_id"], alice_id, "the owner stays");
    assert_eq!(carol_api.send("DELETE", &path, None).await.status, 204);
    alice_api.get(&path).await.assert_problem(404, "not-found");
}

#[tokio::test]
async fn products_belong_to_their_owner_on_sqlite() {
    let (server, _dir) = server().await;
    products_belong_to_their_owner(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn products_belong_to_their_owner_in_postgres() {
    if !services::reachable("PostgreSQL", "127.0.0.1:5432") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let mut config = test_config(dir.path(), &clock);
    config.database_url = services::postgres_url();
    let server = TestServer::start(config, clock).await;
    products_belong_to_their_owner(&server).await;
    server.stop().await;
}

async fn server_with(
    registration: RegistrationPolicy,
    database_url: Option<String>,
) -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let mut config = test_config(dir.path(), &clock);
    config.registration = registration;
    if let Some(url) = database_url {
        config.database_url = url;
    }
    (TestServer::start(config, clock).await, dir)
}

async fn invitation(server: &TestServer, groups: &[&str], valid_for: Duration) -> String {
    let now = server.clock.now();
    let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
    server.app_state.db.create_invitation(&groups, now, now.plus(valid_for)).await.unwrap().token
}

#[tokio::test]
async fn api_signup_follows_the_registration_policy() {
    let (server, _dir) = server_with(RegistrationPolicy::Invite, None).await;
    let api = Api::new(&server);
    let db = &server.app_state.db;
    let signup = |name: String, invite: Option<String>| {
        let api = api.clone();
        async move {
            let mut body = json!({"username": name, "password": PASSWORD});
            if let Some(invite) = invite {
                body["invite"] = json!(invite);
            }
            api.post("/api/signup", body).await
        }
    };

    // No invitation, a made-up one: refused, no account.
    let stranger = unique_name("stranger");
    signup(stranger.clone(), None).await.assert_problem(403, "invitation-required");
    signup(stranger.clone(), Some("made-up".into())).await.assert_problem(403, "invalid-invitation");
    assert!(db.users().user_by_name(&stranger.to_lowercase()).await.unwrap().is_none());

    // A valid one: an account, in the invitation's group; then it is used.
    let token = invitation(&server, &["staff"], Duration::from_secs(3600)).await;
    assert_eq!(token.len(), 43, "256 bits, base64url");
    // A refused sign-up (weak password) does not use it up.
    let weak = json!({"username": unique_name("weak"), "password": "short", "invite": token});
    api.post("/api/signup", weak).await.assert_problem(422, "validation");
    let invited = unique_name("invited");
    let created = signup(invited.clone(), Some(token.clone())).await;
    assert_eq!(created.status, 201, "{created:?}");
    let user_id = created.json["id"].as_i64().unwrap();
    assert_eq!(db.groups_of(user_id).await.unwrap(), vec!["staff".to_owned()]);
    signup(unique_name("second"), Some(token.clone())).await.assert_problem(403, "invalid-invitation");

    // An expired one.
    let expiring = invitation(&server, &[], Duration::from_secs(60)).await;
    server.clock.advance(Duration::from_secs(61));
    signup(unique_name("late"), Some(expiring)).await.assert_problem(403, "invalid-invitation");
    server.stop().await;

    // Closed: nobody, invitation or not.
    let (closed, _dir) = server_with(RegistrationPolicy::Closed, None).await;
    let token = invitation(&closed, &[], Duration::from_secs(3600)).await;
    let api = Api::new(&closed);
    let refused = api.post("/api/signup", json!({"username": unique_name("c"), "password": PASSWORD})).await;
    refused.assert_problem(403, "registration-closed");
    let body = json!({"username": unique_name("c"), "password": PASSWORD, "invite": token});
    api.post("/api/signup", body).await.assert_problem(403, "registration-closed");
    closed.stop().await;
}

/// Sixty sign-ups at once with the same invitation: exactly one account.
async fn one_invitation_many_racers(database_url: Option<String>) {
    let (server, _dir) = server_with(RegistrationPolicy::Invite, database_url).await;
    let token = invitation(&server, &["staff"], Duration::from_secs(3600)).await;
    let api = Api::new(&server);
    let prefix = unique_name("racer");
    let started = std::time::Instant::now();
    let attempts = (0..60).map(|i| {
        let api = api.clone();
        let body = json!({"username": format!("{prefix}-{i}"), "password": PASSWORD, "invite": token});
        async move { api.post("/api/signup", body).await }
    });
    let replies = futures::future::join_all(attempts).await;
    let elapsed = started.elapsed();
    let created: Vec<&Reply> = replies.iter().filter(|r| r.status == 201).collect();
    assert_eq!(created.len(), 1, "exactly one account: {:?}", replies.iter().map(|r| r.status).collect::<Vec<_>>());
    for reply in replies.iter().filter(|r| r.status != 201) {
        reply.assert_problem(403, "invalid-invitation");
    }
    let db = &server.app_state.db;
    let mut accounts = 0;
    for i in 0..60 {
        accounts += usize::from(db.users().user_by_name(&format!("{prefix}-{i}")).await.unwrap().is_some());
    }
    assert_eq!(accounts, 1);
    eprintln!("60 concurrent sign-ups with one invitation: 1 account, 59 refused, in {elapsed:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_invitation_used_sixty_times_at_once_creates_one_account_on_sqlite() {
    one_invitation_many_racers(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_invitation_used_sixty_times_at_once_creates_one_account_in_postgres() {
    if !services::reachable("PostgreSQL", "127.0.0.1:5432") {
        return;
    }
    one_invitation_many_racers(Some(services::postgres_url())).await;
}
