//! A real tessera server on a loopback port, and a cookie-keeping client.
#![allow(dead_code)]

pub mod burst;
pub mod external;
pub mod mail;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use argon2::Params;
use tessera::password::PasswordHasher;
use tessera::ManualClock;
use tessera_server::{App, AppConfig};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// A running server.
pub struct TestServer {
    pub base: String,
    pub address: SocketAddr,
    pub clock: ManualClock,
    pub app_state: tessera_server::AppState,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// A config for tests: cheap hashing, a manual clock, the panic route, a
/// fresh SQLite file in `dir`, and a sign-up allowance and hashing queue no
/// test reaches (every test registers its users from 127.0.0.1, and bursts
/// of 60 would otherwise find the default queue of 8 per core full;
/// `signup_flood.rs` tests the default allowance and a full queue).
pub fn test_config(dir: &std::path::Path, clock: &ManualClock) -> AppConfig {
    let mut config = AppConfig {
        database_url: format!("sqlite://{}", dir.join("tessera.db").display()),
        clock: std::sync::Arc::new(clock.clone()),
        hasher: PasswordHasher::with_params(Params::new(1024, 1, 1, None).unwrap()).with_queue_limit(10_000),
        test_routes: true,
        ..AppConfig::default()
    };
    config.throttle.signups_per_address = TEST_SIGNUPS_PER_ADDRESS;
    // Tests begin many passkey ceremonies from 127.0.0.1; passkeys.rs tests
    // the default allowance.
    config.throttle.passkey_ceremonies_per_address = 1_000_000;
    config
}

/// The sign-up allowance of [`test_config`].
pub const TEST_SIGNUPS_PER_ADDRESS: u32 = 1_000_000;

impl TestServer {
    pub async fn start(config: AppConfig, clock: ManualClock) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::start_on(config, clock, listener).await
    }

    /// Starts on an already bound listener (when the port must be known
    /// before the configuration, e.g. for `public_url`).
    pub async fn start_on(config: AppConfig, clock: ManualClock, listener: TcpListener) -> TestServer {
        let app = App::build(config).await.expect("server builds");
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let app_state = app.state.clone();
        let task = tokio::spawn(async move {
            app.serve(listener, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        TestServer {
            base: format!("http://localhost:{}", address.port()),
            address,
            clock,
            app_state,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn browser(&self) -> Browser {
        Browser::new(&self.base)
    }

    /// Stops the server and waits until it has closed its database.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }
}

/// An answer.
pub struct Page {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
    pub set_cookies: Vec<String>,
}

impl Page {
    pub fn location(&self) -> Option<&str> {
        self.headers.get("location").and_then(|v| v.to_str().ok())
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `csrf_token` hidden field of the page's first form.
    pub fn csrf(&self) -> String {
        let marker = "name=\"csrf_token\" value=\"";
        let start = self.body.find(marker).expect("page has a CSRF field") + marker.len();
        let end = self.body[start..].find('"').unwrap() + start;
        self.body[start..end].to_owned()
    }

    /// The text of the element with `id`.
    pub fn element_text(&self, id: &str) -> Option<String> {
        let marker = format!("id=\"{id}\"");
        let at = self.body.find(&marker)?;
        let start = self.body[at..].find('>')? + at + 1;
        let end = self.body[start..].find('<')? + start;
        Some(self.body[start..end].trim().to_owned())
    }

    pub fn session_cookie(&self) -> Option<&String> {
        self.set_cookies.iter().find(|c| c.starts_with("__Host-id="))
    }
}

/// A client that keeps cookies by hand (reqwest's jar will not send
/// `Secure` cookies over plain HTTP) and never follows redirects.
#[derive(Clone)]
pub struct Browser {
    pub base: String,
    client: reqwest::Client,
    pub cookies: BTreeMap<String, String>,
    pub extra_headers: Vec<(String, String)>,
}

impl Browser {
    pub fn new(base: &str) -> Self {
        Browser {
            base: base.to_owned(),
            client: reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap(),
            cookies: BTreeMap::new(),
            extra_headers: vec![("accept".into(), "text/html".into())],
        }
    }

    pub fn session_id(&self) -> Option<String> {
        self.cookies.get("__Host-id").cloned()
    }

    /// The `cookie` header this browser sends.
    pub fn cookie_header(&self) -> String {
        self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
    }

    async fn send(&mut self, request: reqwest::RequestBuilder) -> Page {
        let mut request = request;
        for (name, value) in &self.extra_headers {
            request = request.header(name, value);
        }
        if !self.cookies.is_empty() {
            request = request.header("cookie", self.cookie_header());
        }
        let response = request.send().await.expect("request sent");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let set_cookies: Vec<String> =
            headers.get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_owned()).collect();
        for cookie in &set_cookies {
            let first = cookie.split(';').next().unwrap();
            let (name, value) = first.split_once('=').unwrap();
            if cookie.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
        let body = response.text().await.unwrap_or_default();
        Page { status, headers, body, set_cookies }
    }

    pub async fn get(&mut self, path: &str) -> Page {
        let request = self.client.get(format!("{}{path}", self.base));
        self.send(request).await
    }

    pub async fn get_with(&mut self, path: &str, headers: &[(&str, &str)]) -> Page {
        let mut request = self.client.get(format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.send(request).await
    }

    pub async fn post_form(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        self.post_form_with(path, fields, &[]).await
    }

    pub async fn post_form_with(&mut self, path: &str, fields: &[(&str, &str)], headers: &[(&str, &str)]) -> Page {
        let mut request = self.client.post(format!("{}{path}", self.base)).form(fields);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.send(request).await
    }

    /// Posts `body` as JSON with `headers` (e.g. `x-csrf-token`).
    pub async fn post_json_with(&mut self, path: &str, body: &serde_json::Value, headers: &[(&str, &str)]) -> Page {
        let mut request = self.client.post(format!("{}{path}", self.base)).json(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.send(request).await
    }

    /// Opens `form_path`, then posts `fields` with its CSRF token.
    pub async fn submit(&mut self, form_path: &str, post_path: &str, fields: &[(&str, &str)]) -> Page {
        let form = self.get(form_path).await;
        let token = form.csrf();
        let mut all: Vec<(&str, &str)> = vec![("csrf_token", &token)];
        all.extend_from_slice(fields);
        self.post_form(post_path, &all).await
    }

    pub async fn register(&mut self, username: &str, password: &str) -> Page {
        self.submit("/register", "/register", &[("username", username), ("password", password)]).await
    }

    pub async fn login(&mut self, username: &str, password: &str) -> Page {
        self.submit("/login", "/login", &[("username", username), ("password", password)]).await
    }

    pub async fn logout(&mut self) -> Page {
        let token = self.get("/").await.csrf();
        self.post_form("/logout", &[("csrf_token", &token)]).await
    }
}

/// A fresh unique user name.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{:08x}", rand::random::<u32>())
}
