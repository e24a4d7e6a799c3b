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

/// Waits until `url` answers (any status), or panics after ~15 s.
pub async fn wait_until_up(url: &str, guard: &mut ChildGuard, log: Option<&Path>) {
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    for _ in 0..150 {
        if client.get(url).send().await.is_ok() {
            return;
        }
        if let Ok(Some(status)) = guard.child.try_wait() {
            let log = log.and_then(|l| std::fs::read_to_string(l).ok()).unwrap_or_default();
            panic!("{} exited with {status} before answering at {url}\n{log}", guard.name);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{} did not answer at {url}", guard.name);
}

/// The OpenID Connect test provider (tests/oidc-provider) on a free port.
pub struct OidcProvider {
    pub issuer: String,
    pub port: u16,
    guard: ChildGuard,
    redirect_uris: String,
}

pub const CLIENT_ID: &str = "tessera-test";
pub const CLIENT_SECRET: &str = "tessera-test-secret";

impl OidcProvider {
    /// Starts the provider, or `None` (after a SKIPPED line) without Node.js.
    pub async fn start(redirect_uris: &[String], test: &str) -> Option<OidcProvider> {
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
        Some(Self::start_on(port, redirect_uris.join(",")).await)
    }

    async fn start_on(port: u16, redirect_uris: String) -> OidcProvider {
        let child = Command::new("node")
            .arg(repo_root().join("tests/oidc-provider/provider.mjs"))
            .env("PORT", port.to_string())
            .env("OIDC_REDIRECT_URIS", &redirect_uris)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("node starts");
        let mut guard = ChildGuard { child, name: "oidc-provider" };
        let issuer = format!("http://127.0.0.1:{port}");
        wait_until_up(&format!("{issuer}/.well-known/openid-configuration"), &mut guard, None).await;
        OidcProvider { issuer, port, guard, redirect_uris }
    }

    /// Stops and starts again on the same port: new signing keys (new `kid`).
    pub async fn restart_with_new_keys(self) -> OidcProvider {
        let (port, uris) = (self.port, self.redirect_uris.clone());
        drop(self.guard);
        Self::start_on(port, uris).await
    }

    /// Plays the user at the provider: follows `authorize_url` (logging in
    /// `login_hint` automatically) until the redirect back to `callback_prefix`,
    /// and returns that callback URL.
    pub async fn authorize(&self, authorize_url: &str, login_hint: &str, callback_prefix: &str) -> String {
        let client =
            reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).cookie_store(true).build().unwrap();
        let mut url = format!("{authorize_url}&login_hint={login_hint}");
        for _ in 0..10 {
            let response = client.get(&url).send().await.expect("provider answers");
            let location = response
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
                .unwrap_or_else(|| panic!("provider answered {} without a redirect at {url}", response.status()));
            let next = if location.starts_with('/') { format!("{}{location}", self.issuer) } else { location };
            if next.starts_with(callback_prefix) {
                return next;
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
