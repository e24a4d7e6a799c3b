//! A real headless Chromium, driven through WebDriver by a chromedriver this
//! module starts on a free loopback port and stops (with every browser it
//! started) when dropped.
//!
//! Missing `/usr/bin/chromium` or `/usr/bin/chromedriver` is a panic when
//! `TESSERA_REQUIRE_SERVICES` is set (CI), else a loud `SKIPPED:` line.
//! `scripts/browser-deps.sh` installs both.
#![allow(dead_code)]

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::cookies::Cookie;
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Flags Chromium needs on this machine: headless, as root, and without the
/// background traffic a closed network refuses.
const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-crash-reporter",
    "--disable-breakpad",
    "--no-first-run",
    "--no-default-browser-check",
    "--hide-scrollbars",
];

/// A desktop window.
pub const DESKTOP: (u32, u32) = (1280, 860);
/// A phone held upright.
pub const PHONE: (u32, u32) = (390, 844);

/// Whether Chromium and chromedriver are installed. When they are not: a
/// panic if services are required (CI), else a loud skip message and `false`.
pub fn available() -> bool {
    let missing: Vec<&str> = [CHROMIUM, CHROMEDRIVER].into_iter().filter(|p| !Path::new(p).exists()).collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var_os("TESSERA_REQUIRE_SERVICES").is_some() {
        panic!("browser tests need {missing:?}; run scripts/browser-deps.sh");
    }
    eprintln!("SKIPPED: browser test: {missing:?} not installed (scripts/browser-deps.sh installs them)");
    false
}

/// Where the tests leave screenshots for people to look at: `target/screenshots`.
pub fn screenshot_dir() -> PathBuf {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().expect("target dir").to_path_buf();
    target.join("screenshots")
}

/// A running chromedriver, in its own process group so that dropping it
/// also ends every Chromium it launched.
pub struct Chromedriver {
    child: Child,
    url: String,
    _turn: tokio::sync::SemaphorePermit<'static>,
}

/// At most two browser tests at a time: the machines have two cores.
static TURNS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

impl Chromedriver {
    /// Starts chromedriver on a free loopback port and waits until it is ready.
    ///
    /// Under load (two cores shared by parallel builds and tests) a start
    /// can take long or fail (a port taken between choosing and binding):
    /// each attempt waits up to `TESSERA_BROWSER_READY_SECS` (default 60 s),
    /// logging every 10 s, and a driver that exits or never gets ready is
    /// stopped and started again, [`START_ATTEMPTS`] times in all. A driver
    /// that never starts still fails the test, with every attempt's output.
    pub async fn start() -> Chromedriver {
        let turn = TURNS.acquire().await.expect("semaphore open");
        let limit = std::env::var("TESSERA_BROWSER_READY_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map(Duration::from_secs)
            .unwrap_or(READY_WAIT);
        let mut failures = Vec::new();
        for attempt in 1..=START_ATTEMPTS {
            match start_on(free_port(), limit).await {
                Ok((child, url)) => {
                    if attempt > 1 {
                        eprintln!("chromedriver: ready on attempt {attempt} after: {}", failures.join("; "));
                    }
                    return Chromedriver { child, url, _turn: turn };
                }
                Err(failure) => {
                    eprintln!("chromedriver: attempt {attempt}/{START_ATTEMPTS} failed: {failure}");
                    failures.push(failure);
                }
            }
        }
        panic!("chromedriver did not become ready in {START_ATTEMPTS} attempts:\n{}", failures.join("\n"));
    }

    /// A new browser with a fresh, empty profile, its window `size` large.
    pub async fn chromium(&self, size: (u32, u32)) -> Chromium {
        self.chromium_with(size, true, &[]).await
    }

    /// A new browser whose pages cannot run JavaScript.
    pub async fn chromium_without_javascript(&self, size: (u32, u32)) -> Chromium {
        self.chromium_with(size, false, &[]).await
    }

    /// A new browser started with extra command-line `flags` (such as
    /// `--ignore-certificate-errors` for a test's self-signed certificate).
    pub async fn chromium_with_flags(&self, size: (u32, u32), flags: &[&str]) -> Chromium {
        self.chromium_with(size, true, flags).await
    }

    async fn chromium_with(&self, size: (u32, u32), javascript: bool, flags: &[&str]) -> Chromium {
        let profile = tempfile::tempdir().expect("profile dir");
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().chain(flags).map(|s| (*s).to_owned()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        args.push(format!("--window-size={},{}", size.0, size.1));
        let mut prefs = json!({ "credentials_enable_service": false, "profile.password_manager_enabled": false });
        if !javascript {
            prefs["profile.managed_default_content_settings.javascript"] = json!(2);
        }
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": CHROMIUM, "args": args, "prefs": prefs },
            "goog:loggingPrefs": { "browser": "ALL" },
        });
        let Value::Object(capabilities) = capabilities else { unreachable!() };
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .expect("chromedriver opens a Chromium session");
        let session = client.session_id().await.unwrap().expect("a session id");
        let chromium = Chromium {
            client,
            session_url: format!("{}/session/{session}", self.url),
            http: reqwest::Client::new(),
            _profile: profile,
        };
        chromium.client.set_window_size(size.0, size.1).await.expect("window resized");
        chromium
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        // chromedriver and every Chromium process share its process group.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How many times [`Chromedriver::start`] tries.
const START_ATTEMPTS: u32 = 3;
/// How long one attempt waits for `/status` to say ready.
const READY_WAIT: Duration = Duration::from_secs(60);

/// The machine's 1-minute load average, for the log.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split(' ').next().map(str::to_owned))
        .unwrap_or_default()
}

/// One start on `port`: the driver and its URL, or what went wrong (with
/// its output). Public for the test of the retry path.
pub async fn start_on(port: u16, limit: Duration) -> Result<(Child, String), String> {
    let log = tempfile::NamedTempFile::new().map_err(|e| e.to_string())?;
    let out = log.reopen().map_err(|e| e.to_string())?;
    let err = log.reopen().map_err(|e| e.to_string())?;
    let mut child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .arg("--allowed-ips=127.0.0.1")
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .process_group(0)
        .spawn()
        .map_err(|e| format!("chromedriver does not start: {e}"))?;
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().map_err(|e| e.to_string())?;
    let started = Instant::now();
    let mut next_report = Duration::from_secs(10);
    let output = |log: &tempfile::NamedTempFile| std::fs::read_to_string(log.path()).unwrap_or_default();
    loop {
        let ready = match http.get(format!("{url}/status")).send().await {
            Ok(response) => response.json::<Value>().await.ok().and_then(|v| v["value"]["ready"].as_bool()),
            Err(_) => None,
        };
        if ready == Some(true) {
            if started.elapsed() > Duration::from_secs(5) {
                eprintln!("chromedriver: ready on port {port} after {:.1} s", started.elapsed().as_secs_f64());
            }
            return Ok((child, url));
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("exited ({status}) on port {port}; output: {}", output(&log).trim()));
        }
        let waited = started.elapsed();
        if waited >= limit {
            let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", child.id())]).status();
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "not ready on port {port} after {} s (load {}); output: {}",
                waited.as_secs(),
                load_average(),
                output(&log).trim()
            ));
        }
        if waited >= next_report {
            eprintln!(
                "chromedriver: still waiting on port {port} after {} s (load {})",
                waited.as_secs(),
                load_average()
            );
            next_report += Duration::from_secs(10);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One browser window (with its own profile) and the page it shows.
pub struct Chromium {
    /// The WebDriver client.
    pub client: Client,
    session_url: String,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
}

/// A line of the browser's console log.
#[derive(Debug, Clone)]
pub struct ConsoleEntry {
    pub level: String,
    pub source: String,
    pub message: String,
}

impl Chromium {
    /// Opens `url` and waits for the page to load.
    pub async fn open(&self, url: &str) {
        self.client.goto(url).await.unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// The current URL's path and query.
    pub async fn path(&self) -> String {
        let url = self.client.current_url().await.unwrap();
        match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        }
    }

    /// The element matching `css`.
    pub async fn find(&self, css: &str) -> Element {
        self.client.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("no element {css}: {e}"))
    }

    /// Whether an element matches `css`.
    pub async fn has(&self, css: &str) -> bool {
        !self.client.find_all(Locator::Css(css)).await.unwrap().is_empty()
    }

    /// The visible text of the element matching `css`.
    pub async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.unwrap()
    }

    /// Types `text` into the field matching `css`, replacing what was there.
    pub async fn fill(&self, css: &str, text: &str) {
        let field = self.find(css).await;
        field.clear().await.unwrap();
        field.send_keys(text).await.unwrap();
    }

    /// Clicks the element matching `css`, then waits until the URL has left
    /// `previous`'s document (a form post or a link).
    pub async fn click_and_wait(&self, css: &str) {
        let marker = self.mark_document().await;
        self.find(css).await.click().await.unwrap();
        self.wait_for_new_document(marker).await;
    }

    /// Puts a marker on the current document, to notice the next navigation.
    pub async fn mark_document(&self) -> String {
        let marker = format!("m{}", rand::random::<u32>());
        self.eval(&format!("window.__tesseraMarker = '{marker}'; return null;")).await;
        marker
    }

    /// Waits until a document without `marker` has finished loading.
    pub async fn wait_for_new_document(&self, marker: String) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let state =
                self.client.execute("return [window.__tesseraMarker || '', document.readyState];", vec![]).await.ok();
            if let Some(Value::Array(values)) = state {
                if values[0] != json!(marker) && values[1] == json!("complete") {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "no navigation happened");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Presses keys on the focused element (`fantoccini::key::Key` values
    /// are characters too).
    pub async fn press(&self, keys: &str) {
        self.client.active_element().await.unwrap().send_keys(keys).await.unwrap();
    }

    /// Runs `script` in the page and returns its value.
    pub async fn eval(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.unwrap_or_else(|e| panic!("script {script:?}: {e}"))
    }

    /// The cookie `name` as the browser stored it.
    pub async fn cookie(&self, name: &str) -> Option<Cookie<'static>> {
        self.client.get_named_cookie(name).await.ok()
    }

    /// The console lines logged since the last call.
    pub async fn console(&self) -> Vec<ConsoleEntry> {
        let answer: Value = self
            .http
            .post(format!("{}/se/log", self.session_url))
            .json(&json!({ "type": "browser" }))
            .send()
            .await
            .expect("log request")
            .json()
            .await
            .expect("log answer");
        answer["value"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|entry| ConsoleEntry {
                level: entry["level"].as_str().unwrap_or_default().to_owned(),
                source: entry["source"].as_str().unwrap_or_default().to_owned(),
                message: entry["message"].as_str().unwrap_or_default().to_owned(),
            })
            .collect()
    }

    /// Runs a Chrome DevTools Protocol command.
    pub async fn devtools(&self, command: &str, params: Value) -> Value {
        let answer: Value = self
            .http
            .post(format!("{}/goog/cdp/execute", self.session_url))
            .json(&json!({ "cmd": command, "params": params }))
            .send()
            .await
            .expect("devtools request")
            .json()
            .await
            .expect("devtools answer");
        assert!(answer["value"].get("error").is_none(), "{command}: {answer}");
        answer["value"].clone()
    }

    /// Sends a WebDriver command of this session that fantoccini has no
    /// method for (e.g. the WebAuthn virtual-authenticator extension):
    /// `method` on `{session}/{path}`; answers the `value`, or panics with
    /// the driver's error.
    pub async fn webdriver(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.http.request(method, format!("{}/{path}", self.session_url));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request.send().await.expect("webdriver request").json().await.expect("webdriver answer");
        assert!(answer["value"].get("error").is_none(), "{path}: {answer}");
        answer["value"].clone()
    }

    /// Adds a WebAuthn virtual authenticator (CTAP2, platform, resident
    /// keys, user verification that succeeds, presence simulated) and
    /// answers its ID.
    pub async fn add_virtual_authenticator(&self) -> String {
        let options = json!({
            "protocol": "ctap2",
            "transport": "internal",
            "hasResidentKey": true,
            "hasUserVerification": true,
            "isUserVerified": true,
            "isUserConsenting": true,
            "automaticPresenceSimulation": true,
        });
        let id = self.webdriver(reqwest::Method::POST, "webauthn/authenticator", Some(options)).await;
        id.as_str().expect("an authenticator ID").to_owned()
    }

    /// The credentials a virtual authenticator holds.
    pub async fn virtual_credentials(&self, authenticator: &str) -> Vec<Value> {
        let path = format!("webauthn/authenticator/{authenticator}/credentials");
        self.webdriver(reqwest::Method::GET, &path, None).await.as_array().cloned().unwrap_or_default()
    }

    /// Makes pages see `prefers-color-scheme: dark` (or light).
    pub async fn prefer_color_scheme(&self, scheme: &str) {
        self.devtools(
            "Emulation.setEmulatedMedia",
            json!({ "features": [{ "name": "prefers-color-scheme", "value": scheme }] }),
        )
        .await;
    }

    /// Resizes the window.
    pub async fn resize(&self, size: (u32, u32)) {
        self.client.set_window_size(size.0, size.1).await.unwrap();
    }

    /// Saves a screenshot of the window as `target/screenshots/NAME.png`.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("screenshot");
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    /// Ends the session (Chromium exits).
    pub async fn close(self) {
        let _ = self.client.close().await;
    }
}

// ---- tessera's forms, as a person fills them in --------------------------

/// Fills in and sends the registration form of the server at `base`.
pub async fn register(browser: &Chromium, base: &str, name: &str, password: &str) {
    browser.open(&format!("{base}/register")).await;
    browser.fill("#username", name).await;
    browser.fill("#password", password).await;
    browser.click_and_wait("form[action='/register'] button[type=submit]").await;
}

/// Fills in and sends the login form already shown.
pub async fn log_in_here(browser: &Chromium, name: &str, password: &str) {
    browser.fill("#username", name).await;
    browser.fill("#password", password).await;
    browser.click_and_wait("form[action='/login'] button[type=submit]").await;
}
