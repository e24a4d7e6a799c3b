//! External programs the tests start as child processes on loopback ports:
//! the OpenID Connect test provider (Node.js), nginx and Caddy.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Whether a program is missing: a test failure under
/// `TESSERA_REQUIRE_SERVICES`, else a loud skip. Returns `true` to skip.
pub fn missing(what: &str, test: &str) -> bool {
    if std::env::var_os("TESSERA_REQUIRE_SERVICES").is_some() {
        panic!("{what} is required (TESSERA_REQUIRE_SERVICES is set); run scripts/proxy-deps.sh");
    }
    eprintln!("SKIPPED: {test}: {what} is not available (run scripts/proxy-deps.sh)");
    true
}

/// Where a program is, if installed.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// A child process killed on drop.
pub struct ChildGuard {
    pub child: Child,
    pub name: &'static str,
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `url` answers (any status), or panics after ~60 s.
///
/// A test binary starts one provider per test, all at once, and on the
/// 2-core CI machine one of nine once needed more than 15 s; the child's
/// log (when given) is part of either failure message.
pub async fn wait_until_up(url: &str, guard: &mut ChildGuard, log: Option<&Path>) {
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    for _ in 0..600 {
        if client.get(url).send().await.is_ok() {
            return;
        }
        if let Ok(Some(status)) = guard.child.try_wait() {
            let log = log.and_then(|l| std::fs::read_to_string(l).ok()).unwrap_or_default();
            panic!("{} exited with {status} before answering at {url}\n{log}", guard.name);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = log.and_then(|l| std::fs::read_to_string(l).ok()).unwrap_or_default();
    panic!("{} did not answer at {url}\n{log}", guard.name);
}

/// The OpenID Connect test provider (tests/oidc-provider) on a free port.
pub struct OidcProvider {
    pub issuer: String,
    pub port: u16,
    guard: ChildGuard,
    redirect_uris: String,
    require_auth_time: bool,
}

pub const CLIENT_ID: &str = "tessera-test";
pub const CLIENT_SECRET: &str = "tessera-test-secret";

impl OidcProvider {
    /// Starts the provider, or `None` (after a SKIPPED line) without Node.js.
    /// Its ID tokens always carry `auth_time`.
    pub async fn start(redirect_uris: &[String], test: &str) -> Option<OidcProvider> {
        Self::start_with(redirect_uris, test, true).await
    }

    /// Like [`OidcProvider::start`]; with `require_auth_time` false, ID
    /// tokens carry `auth_time` only when the request asks (`max_age`).
    pub async fn start_with(redirect_uris: &[String], test: &str, require_auth_time: bool) -> Option<OidcProvider> {
        if which("node").is_none() {
            missing("node (Node.js)", test);
            return None;
        }
        let install = Command::new(repo_root().join("scripts/oidc-provider.sh")).arg("install").status();
        if !install.is_ok_and(|s| s.success()) {
            missing("the oidc-provider npm package", test);
            return None;
        }
        let port = free_port();
        Some(Self::start_on(port, redirect_uris.join(","), require_auth_time).await)
    }

    async fn start_on(port: u16, redirect_uris: String, require_auth_time: bool) -> OidcProvider {
        // A test binary starts one provider per test, all at once: on two
        // cores a dozen Node start-ups together took more than the minute
        // `wait_until_up` allows. Two start at a time; the rest wait their
        // turn before their minute begins.
        static STARTING: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
        let _turn = STARTING.get_or_init(|| tokio::sync::Semaphore::new(2)).acquire().await;
        // Its errors, shown if it dies or never answers.
        let log = std::env::temp_dir().join(format!("tessera-test-oidc-provider-{port}.log"));
        let log_file = std::fs::File::create(&log).expect("a log file for the provider");
        let child = Command::new("node")
            .arg(repo_root().join("tests/oidc-provider/provider.mjs"))
            .env("PORT", port.to_string())
            .env("OIDC_REDIRECT_URIS", &redirect_uris)
            .env("OIDC_REQUIRE_AUTH_TIME", if require_auth_time { "1" } else { "0" })
            .stdout(Stdio::null())
            .stderr(log_file.try_clone().map(Stdio::from).unwrap_or_else(|_| Stdio::null()))
            .spawn()
            .expect("node starts");
        let mut guard = ChildGuard { child, name: "oidc-provider" };
        let issuer = format!("http://127.0.0.1:{port}");
        wait_until_up(&format!("{issuer}/.well-known/openid-configuration"), &mut guard, Some(&log)).await;
        OidcProvider { issuer, port, guard, redirect_uris, require_auth_time }
    }

    /// Stops and starts again on the same port: new signing keys (new `kid`),
    /// no sessions, and the clock back to real time.
    pub async fn restart_with_new_keys(self) -> OidcProvider {
        let (port, uris, require_auth_time) = (self.port, self.redirect_uris.clone(), self.require_auth_time);
        drop(self.guard);
        Self::start_on(port, uris, require_auth_time).await
    }

    /// Moves the provider's clock forward (its sessions age, its `auth_time`
    /// and token times move), to keep it with tessera's manual clock.
    pub async fn advance_clock(&self, by: Duration) {
        let url = format!("{}/__test/clock?advance={}", self.issuer, by.as_secs());
        let response = reqwest::Client::new().post(&url).send().await.expect("provider answers");
        assert!(response.status().is_success(), "the provider's clock moved: {}", response.status());
    }

    /// A browser at the provider that keeps its cookies: after the first
    /// login it is signed in there (single sign-on) and the provider answers
    /// later requests without its login form, unless `max_age` says otherwise.
    pub fn browser(&self) -> IdpBrowser {
        let client =
            reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).cookie_store(true).build().unwrap();
        IdpBrowser { client, issuer: self.issuer.clone() }
    }

    /// Plays a new user at the provider (a fresh browser, so always through
    /// the login form as `login_hint`): follows `authorize_url` until the
    /// redirect back to `callback_prefix`, and returns that callback URL.
    pub async fn authorize(&self, authorize_url: &str, login_hint: &str, callback_prefix: &str) -> String {
        self.browser().authorize(authorize_url, login_hint, callback_prefix).await.callback
    }
}

/// A user's browser at the test provider (see [`OidcProvider::browser`]).
pub struct IdpBrowser {
    client: reqwest::Client,
    issuer: String,
}

/// What the provider did with an authorization request.
pub struct IdpAnswer {
    /// The redirect back to tessera.
    pub callback: String,
    /// Whether the provider showed its login form (and the user filled it
    /// in), rather than answering from its session.
    pub showed_login: bool,
}

impl IdpBrowser {
    /// Follows `authorize_url` (with `login_hint`), filling in the login
    /// form as that account if the provider shows it, until the redirect
    /// back to `callback_prefix`.
    pub async fn authorize(&self, authorize_url: &str, login_hint: &str, callback_prefix: &str) -> IdpAnswer {
        let mut url = format!("{authorize_url}&login_hint={login_hint}");
        let mut showed_login = false;
        for _ in 0..10 {
            let mut response = self.client.get(&url).send().await.expect("provider answers");
            if response.status() == 200 {
                let body = response.text().await.unwrap();
                let action = body
                    .split_once("action=\"")
                    .and_then(|(_, rest)| rest.split_once('"'))
                    .map(|(action, _)| action.to_owned())
                    .unwrap_or_else(|| panic!("the provider answered 200 without a login form at {url}: {body}"));
                showed_login = true;
                response = self
                    .client
                    .post(format!("{}{action}", self.issuer))
                    .form(&[("login", login_hint)])
                    .send()
                    .await
                    .expect("provider answers");
            }
            let location = response
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
                .unwrap_or_else(|| panic!("provider answered {} without a redirect at {url}", response.status()));
            let next = if location.starts_with('/') { format!("{}{location}", self.issuer) } else { location };
            if next.starts_with(callback_prefix) {
                return IdpAnswer { callback: next, showed_login };
            }
            url = next;
        }
        panic!("too many redirects at the provider");
    }
}

/// A reverse proxy (nginx or Caddy) running from a temp dir.
pub struct Proxy {
    pub port: u16,
    pub dir: tempfile::TempDir,
    guard: ChildGuard,
}

impl Proxy {
    /// nginx in the foreground with `server_block` inside `http {}`; pid,
    /// logs and temp paths all in a temp dir. `{PORT}` in the block is replaced.
    pub async fn nginx(server_block: &str, test: &str) -> Option<Proxy> {
        let Some(nginx) = which("nginx") else {
            missing("nginx", test);
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        let port = free_port();
        let conf = format!(
            "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  \
             fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n{}\n}}\n",
            server_block.replace("{PORT}", &port.to_string())
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
        let child = Command::new(nginx)
            .args(["-p", &d, "-e", &format!("{d}/error.log"), "-c", &format!("{d}/nginx.conf")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx starts");
        let mut guard = ChildGuard { child, name: "nginx" };
        wait_until_up(&format!("http://127.0.0.1:{port}/"), &mut guard, Some(&dir.path().join("error.log"))).await;
        Some(Proxy { port, dir, guard })
    }

    /// Caddy with `site` (a Caddyfile site block; `{PORT}` replaced), admin
    /// API off, data and config in a temp dir.
    pub async fn caddy(site: &str, test: &str) -> Option<Proxy> {
        let Some(caddy) = which("caddy") else {
            missing("caddy", test);
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let caddyfile =
            format!("{{\n  admin off\n  auto_https off\n}}\n{}\n", site.replace("{PORT}", &port.to_string()));
        std::fs::write(dir.path().join("Caddyfile"), caddyfile).unwrap();
        let log = dir.path().join("caddy.log");
        let child = Command::new(caddy)
            .args(["run", "--adapter", "caddyfile", "--config"])
            .arg(dir.path().join("Caddyfile"))
            .env("HOME", dir.path())
            .env("XDG_DATA_HOME", dir.path().join("data"))
            .env("XDG_CONFIG_HOME", dir.path().join("config"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("caddy starts");
        let mut guard = ChildGuard { child, name: "caddy" };
        wait_until_up(&format!("http://127.0.0.1:{port}/"), &mut guard, Some(&log)).await;
        Some(Proxy { port, dir, guard })
    }

    /// Stops the proxy now.
    pub fn stop(self) {
        drop(self.guard);
    }
}
