//! The real `tessera` server under test: the settings of each measured
//! session store, and one account's session cookie and bearer token.
//!
//! Used twice: in process by `profile --app server-<store>` (the router that
//! `tessera serve` builds, driven with `tower::ServiceExt::oneshot`), and
//! over sockets by the benchmark's server rows (the release binary, started
//! with the same settings as flags).
//!
//! Stores (`server-<store>`):
//! - `memory`: `--session-store memory://`, users in SQLite;
//! - `sqlite`: the default, sessions and users in one SQLite file;
//! - `postgres`: `--database postgres://…`, sessions in the same database;
//! - `redis`: `--session-store redis://…`, users in SQLite.
//!
//! Everything else is the default configuration: argon2id at OWASP's
//! parameters, CSRF, security headers, the access log (`info`), metrics,
//! audit, request IDs.

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use serde_json::Value;
use std::net::SocketAddr;
use tower::ServiceExt;

use crate::Fallible;

/// The account every measurement signs up and logs in as.
pub(crate) const USERNAME: &str = "bench";
/// Its password (long enough for the default password policy).
pub(crate) const PASSWORD: &str = "correct horse battery staple";

/// Accounts the `POST /login` runs cycle through (`bench0`, `bench1`, …):
/// concurrent logins to one account are what the brute-force throttle is
/// for (each attempt is reserved before the password is checked), so a
/// login benchmark, like real traffic, logs different people in at once.
pub(crate) const LOGIN_USERS: usize = 16;

/// The name of login account `i`.
pub(crate) fn login_user(i: usize) -> String {
    format!("{USERNAME}{i}")
}

/// Signs up the [`LOGIN_USERS`] accounts (the server must allow that many
/// sign-ups from one address).
pub(crate) async fn sign_up_login_users(client: &mut impl Client) -> Fallible {
    for i in 0..LOGIN_USERS {
        let json = serde_json::json!({"username": login_user(i), "password": PASSWORD}).to_string();
        let answer = client.send("POST", "/api/signup", &[("content-type", "application/json")], &json).await?;
        if answer.status != 201 && answer.status != 409 {
            return Err(format!("POST /api/signup answered {}: {}", answer.status, answer.body).into());
        }
    }
    Ok(())
}

/// Where the server's users database and sessions go.
#[derive(Debug, Clone)]
pub(crate) struct Stores {
    /// `--database`.
    pub(crate) database: String,
    /// `--session-store`, when not the database.
    pub(crate) session_store: Option<String>,
}

impl Stores {
    /// The stores of `server-<name>`; SQLite files go into `dir`.
    pub(crate) fn of(name: &str, dir: &std::path::Path, redis_url: &str, postgres_url: &str) -> Fallible<Stores> {
        let sqlite = format!("sqlite://{}", dir.join("users.db").display());
        let need = |url: &str, what: &str| -> Fallible<String> {
            if url.is_empty() {
                return Err(format!("server-{name} needs {what}").into());
            }
            Ok(url.to_owned())
        };
        Ok(match name {
            "memory" => Stores { database: sqlite, session_store: Some("memory://".into()) },
            "sqlite" => Stores { database: sqlite, session_store: None },
            "postgres" => Stores { database: need(postgres_url, "--postgres-url")?, session_store: None },
            "redis" => Stores { database: sqlite, session_store: Some(need(redis_url, "--redis-url")?) },
            other => return Err(format!("unknown server store {other:?} (memory, sqlite, postgres, redis)").into()),
        })
    }

    /// The same as `tessera serve` flags.
    pub(crate) fn flags(&self) -> Vec<String> {
        let mut flags = vec!["--database".to_owned(), self.database.clone()];
        if let Some(store) = &self.session_store {
            flags.push("--session-store".into());
            flags.push(store.clone());
        }
        flags
    }
}

/// The routes the server rows and profiles measure. `/api/me-bearer` is
/// `GET /api/me` with `Authorization: Bearer` instead of the cookie.
pub(crate) const ROUTES: [&str; 5] = ["/healthz", "/api/me", "/api/me-bearer", "/profile", "/login"];

/// A logged-in client: what each measured request carries.
#[derive(Debug, Clone, Default)]
pub(crate) struct Credentials {
    /// `__Host-id=…`: the session cookie from the HTML login form.
    pub(crate) session_cookie: String,
    /// An access token from `POST /api/signin`.
    pub(crate) access_token: String,
    /// The pre-session CSRF cookie(s) and the login form's token: a
    /// `POST /login` with both passes the CSRF check every time (the token
    /// is bound to the cookie, which the client keeps sending).
    pub(crate) login_cookie: String,
    pub(crate) login_csrf: String,
}

impl Credentials {
    /// The form body of `POST /login`.
    pub(crate) fn login_body(&self) -> String {
        self.login_body_for(USERNAME)
    }

    /// The form body of `POST /login` as `user`.
    pub(crate) fn login_body_for(&self, user: &str) -> String {
        format!("csrf_token={}&username={user}&password={}", urlencode(&self.login_csrf), urlencode(PASSWORD))
    }
}

/// `application/x-www-form-urlencoded` escaping.
pub(crate) fn urlencode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(byte as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// The `name=value` parts of every `Set-Cookie` of an answer, without
/// deletions.
pub(crate) fn set_cookies<'a>(values: impl Iterator<Item = &'a str>) -> Vec<String> {
    values
        .filter(|value| !value.contains("Max-Age=0"))
        .filter_map(|value| value.split(';').next())
        .filter(|pair| !pair.ends_with('='))
        .map(str::to_owned)
        .collect()
}

/// The `csrf_token` hidden field of a page.
pub(crate) fn csrf_field(page: &str) -> Fallible<String> {
    let marker = "name=\"csrf_token\" value=\"";
    let start = page.find(marker).ok_or("the login page has no csrf_token field")? + marker.len();
    let end = page[start..].find('"').ok_or("unterminated csrf_token field")? + start;
    Ok(page[start..end].to_owned())
}

/// One HTTP exchange, whatever carries it (in process or a socket).
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) cookies: Vec<String>,
    pub(crate) body: String,
}

/// A way to send one request: method, path, headers, body.
pub(crate) trait Client {
    async fn send(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Fallible<Answer>;
}

/// Signs the bench account up (a 409 from an earlier run on the same
/// database is fine), logs in through the HTML form and through the API.
pub(crate) async fn log_in(client: &mut impl Client) -> Fallible<Credentials> {
    let json = serde_json::json!({"username": USERNAME, "password": PASSWORD}).to_string();
    let signup = client.send("POST", "/api/signup", &[("content-type", "application/json")], &json).await?;
    if signup.status != 201 && signup.status != 409 {
        return Err(format!("POST /api/signup answered {}: {}", signup.status, signup.body).into());
    }
    let page = client.send("GET", "/login", &[("accept", "text/html")], "").await?;
    if page.status != 200 {
        return Err(format!("GET /login answered {}", page.status).into());
    }
    let login_cookie = page.cookies.join("; ");
    let login_csrf = csrf_field(&page.body)?;
    let mut credentials = Credentials { login_cookie, login_csrf, ..Credentials::default() };
    let form = credentials.login_body();
    let login = client
        .send(
            "POST",
            "/login",
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("cookie", &credentials.login_cookie),
                ("accept", "text/html"),
            ],
            &form,
        )
        .await?;
    if login.status != 303 {
        return Err(format!("POST /login answered {}: {}", login.status, login.body).into());
    }
    credentials.session_cookie = login
        .cookies
        .iter()
        .find(|cookie| cookie.starts_with("__Host-id=") || cookie.starts_with("id="))
        .ok_or_else(|| format!("POST /login set no session cookie: {:?}", login.cookies))?
        .clone();
    let signin = client.send("POST", "/api/signin", &[("content-type", "application/json")], &json).await?;
    if signin.status != 200 {
        return Err(format!("POST /api/signin answered {}: {}", signin.status, signin.body).into());
    }
    let pair: Value = serde_json::from_str(&signin.body)?;
    credentials.access_token =
        pair.get("access_token").and_then(Value::as_str).ok_or("POST /api/signin: no access_token")?.to_owned();
    Ok(credentials)
}

/// A measured route's request: method, path, headers, body; and the status
/// it must answer.
pub(crate) struct RouteRequest {
    pub(crate) method: &'static str,
    pub(crate) path: &'static str,
    pub(crate) headers: Vec<(&'static str, String)>,
    pub(crate) body: Option<String>,
    pub(crate) expect: u16,
}

/// What a client sends on `route` (see [`ROUTES`]).
pub(crate) fn route_request(route: &str, credentials: &Credentials) -> Fallible<RouteRequest> {
    let get = |path, headers, expect| RouteRequest { method: "GET", path, headers, body: None, expect };
    Ok(match route {
        "/healthz" => get("/healthz", Vec::new(), 200),
        "/api/me" => get(
            "/api/me",
            vec![("Cookie", credentials.session_cookie.clone()), ("Accept", "application/json".into())],
            200,
        ),
        "/api/me-bearer" => get(
            "/api/me",
            vec![
                ("Authorization", format!("Bearer {}", credentials.access_token)),
                ("Accept", "application/json".into()),
            ],
            200,
        ),
        "/profile" => {
            get("/profile", vec![("Cookie", credentials.session_cookie.clone()), ("Accept", "text/html".into())], 200)
        }
        "/login" => RouteRequest {
            method: "POST",
            path: "/login",
            headers: vec![
                ("Cookie", credentials.login_cookie.clone()),
                ("Content-Type", "application/x-www-form-urlencoded".into()),
                ("Accept", "text/html".into()),
            ],
            body: Some(credentials.login_body()),
            expect: 303,
        },
        other => return Err(format!("unknown server route {other:?} ({})", ROUTES.join(", ")).into()),
    })
}

/// The router `tessera serve` builds, driven in process.
pub(crate) struct InProcess {
    router: Router,
    peer: SocketAddr,
    /// Kept so the background tasks' handles and the stores live as long
    /// as the measurement.
    _app: tessera_server::App,
    /// Writes the queued log lines when dropped.
    _log: Option<tracing_appender::non_blocking::WorkerGuard>,
}

impl InProcess {
    /// Builds the server as `tessera serve` does from its settings (defaults
    /// plus these flags), with the same logging set-up, and keeps its
    /// background tasks running on the current runtime. `extra` are more
    /// settings (`key`, value), as flags would give.
    pub(crate) async fn build(stores: &Stores, extra: &[(&'static str, Value)]) -> Fallible<InProcess> {
        let mut overrides: Vec<(&'static str, Value)> = vec![("database.url", Value::from(stores.database.as_str()))];
        if let Some(store) = &stores.session_store {
            overrides.push(("sessions.store", Value::from(store.as_str())));
        }
        overrides.extend(extra.iter().cloned());
        let settings = tessera_server::settings::Settings::load(None, &[], &overrides)?;
        // `tessera serve`'s own logging (the access log on, written by its
        // own thread), kept for as long as the app.
        let log = tessera_server::log_format::init(&settings, true);
        let config = tessera_server::AppConfig::from_settings(&settings)?;
        let app = tessera_server::App::build(config).await?;
        // `App::serve` hands the router to hyper as
        // `into_make_service_with_connect_info::<SocketAddr>()`: each request
        // carries the peer address, which is all it adds per request.
        // The background tasks (purge, stats flush, metrics upkeep) run on
        // this runtime, as in the server.
        Ok(InProcess {
            router: app.router.clone(),
            peer: SocketAddr::from(([127, 0, 0, 1], 40_000)),
            _app: app,
            _log: log,
        })
    }

    /// Sends one request; the body is read to the end (so lazily rendered
    /// or compressed bodies are paid for).
    pub(crate) async fn call(
        &self,
        request: Request<Body>,
    ) -> Fallible<(StatusCode, http::HeaderMap, axum::body::Bytes)> {
        let mut request = request;
        request.extensions_mut().insert(ConnectInfo(self.peer));
        let response = self.router.clone().oneshot(request).await?;
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX).await?;
        Ok((parts.status, parts.headers, bytes))
    }

    /// The request of a measured route.
    pub(crate) fn request(route: &RouteRequest) -> Fallible<Request<Body>> {
        let method = Method::from_bytes(route.method.as_bytes())?;
        let mut builder = Request::builder().method(method).uri(route.path).header(header::HOST, "127.0.0.1:3000");
        for (name, value) in &route.headers {
            builder = builder.header(*name, value.as_str());
        }
        let body = route.body.clone().map(Body::from).unwrap_or_else(Body::empty);
        if let Some(text) = &route.body {
            builder = builder.header(header::CONTENT_LENGTH, text.len());
        }
        Ok(builder.body(body)?)
    }
}

impl Client for InProcess {
    async fn send(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Fallible<Answer> {
        let mut builder = Request::builder()
            .method(Method::from_bytes(method.as_bytes())?)
            .uri(path)
            .header(header::HOST, "127.0.0.1:3000");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        if !body.is_empty() {
            builder = builder.header(header::CONTENT_LENGTH, body.len());
        }
        let (status, headers, bytes) = self.call(builder.body(Body::from(body.to_owned()))?).await?;
        let cookies = set_cookies(headers.get_all(header::SET_COOKIE).iter().filter_map(|v| v.to_str().ok()));
        Ok(Answer { status: status.as_u16(), cookies, body: String::from_utf8_lossy(&bytes).into_owned() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_are_encoded_and_csrf_fields_found() {
        assert_eq!(urlencode("correct horse/é"), "correct+horse%2F%C3%A9");
        let credentials = Credentials { login_csrf: "a+b".into(), ..Credentials::default() };
        assert_eq!(
            credentials.login_body_for("bench3"),
            "csrf_token=a%2Bb&username=bench3&password=correct+horse+battery+staple"
        );
        let page = r#"<form><input type="hidden" name="csrf_token" value="tok-1"></form>"#;
        assert_eq!(csrf_field(page).unwrap(), "tok-1");
        assert!(csrf_field("<form></form>").is_err());
    }

    #[test]
    fn stores_become_the_servers_flags() {
        let dir = std::path::Path::new("/tmp/x");
        assert_eq!(Stores::of("sqlite", dir, "", "").unwrap().flags(), ["--database", "sqlite:///tmp/x/users.db"]);
        assert_eq!(
            Stores::of("memory", dir, "", "").unwrap().flags(),
            ["--database", "sqlite:///tmp/x/users.db", "--session-store", "memory://"]
        );
        assert!(Stores::of("redis", dir, "", "").is_err(), "Redis needs a URL");
        assert!(Stores::of("mongodb", dir, "", "").is_err());
        let unknown = route_request("/nope", &Credentials::default());
        assert!(unknown.is_err());
        let bearer = route_request("/api/me-bearer", &Credentials { access_token: "t".into(), ..Default::default() });
        assert_eq!(bearer.unwrap().headers[0], ("Authorization", "Bearer t".to_owned()));
    }
}
