//! Load generation with `wrk`, pinned to CPU 0, and the session cookies the
//! session routes need.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Fallible;

/// One route's request: method, path, optional body, and the cookies to
/// send, round-robin (empty: none).
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub(crate) method: &'static str,
    pub(crate) path: &'static str,
    pub(crate) body: Option<String>,
    pub(crate) cookies: Vec<String>,
    /// More headers, sent with every request (a `Content-Type` here
    /// replaces the default `text/plain` of a body).
    pub(crate) headers: Vec<(String, String)>,
    /// Bodies to send round-robin instead of `body` (non-empty: used).
    pub(crate) bodies: Vec<String>,
}

impl Request {
    /// `GET path`, cycling through `cookies`.
    pub(crate) fn get(path: &'static str, cookies: Vec<String>) -> Request {
        Request { method: "GET", path, body: None, cookies, headers: Vec::new(), bodies: Vec::new() }
    }
}

/// What `wrk` reported for one run (its Lua `done` hook prints these).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct WrkResult {
    pub(crate) requests: u64,
    pub(crate) duration_us: u64,
    pub(crate) p50_us: u64,
    pub(crate) p99_us: u64,
    /// Non-2xx/3xx answers, connection errors, timeouts.
    pub(crate) errors: u64,
}

impl WrkResult {
    pub(crate) fn rps(&self) -> f64 {
        self.requests as f64 / (self.duration_us.max(1) as f64 / 1e6)
    }

    /// Answers per second that were not errors (a bounded queue's fast
    /// `503 busy` must not count as work done).
    pub(crate) fn ok_rps(&self) -> f64 {
        self.requests.saturating_sub(self.errors) as f64 / (self.duration_us.max(1) as f64 / 1e6)
    }
}

/// Connections and threads of every run: `wrk -t1 -c64`.
pub(crate) const CONNECTIONS: u32 = 64;

/// Writes the Lua script for `request` into `dir`.
fn script(dir: &Path, request: &Request, tag: &str) -> Fallible<PathBuf> {
    let lua_string = |text: &str| format!("{text:?}");
    let cookies: Vec<String> = request.cookies.iter().map(|cookie| lua_string(cookie)).collect();
    let body = request.body.as_deref().map(lua_string).unwrap_or_else(|| "nil".to_owned());
    let bodies: Vec<String> = request.bodies.iter().map(|body| lua_string(body)).collect();
    let extra: Vec<String> =
        request.headers.iter().map(|(name, value)| format!("[{}] = {}", lua_string(name), lua_string(value))).collect();
    let text = format!(
        r#"local cookies = {{ {cookies} }}
local extra = {{ {extra} }}
local bodies = {{ {bodies} }}
local method = {method}
local path = {path}
local body = {body}
local n = 0
request = function()
  n = n + 1
  local headers = {{}}
  if #cookies > 0 then headers["Cookie"] = cookies[(n % #cookies) + 1] end
  if body ~= nil then headers["Content-Type"] = "text/plain" end
  for name, value in pairs(extra) do headers[name] = value end
  if #bodies > 0 then return wrk.format(method, path, headers, bodies[(n % #bodies) + 1]) end
  return wrk.format(method, path, headers, body)
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH requests=%d duration_us=%d p50_us=%d p99_us=%d errors=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.status + e.timeout))
end
"#,
        cookies = cookies.join(", "),
        extra = extra.join(", "),
        bodies = bodies.join(", "),
        method = lua_string(request.method),
        path = lua_string(request.path),
    );
    let path = dir.join(format!("{tag}.lua"));
    std::fs::write(&path, text)?;
    Ok(path)
}

/// Starts `wrk -t1 -c<connections> -d<seconds>s` on CPU 0 against `port`.
pub(crate) fn spawn_wrk(
    dir: &Path,
    port: u16,
    request: &Request,
    connections: u32,
    seconds: u64,
    tag: &str,
) -> Fallible<Child> {
    let script = script(dir, request, tag)?;
    let mut command = Command::new("taskset");
    command
        .args(["-c", "0", "wrk", "-t1"])
        .arg(format!("-c{connections}"))
        .arg(format!("-d{seconds}s"))
        .arg("--timeout")
        .arg("10s")
        .arg("-s")
        .arg(&script)
        .arg(format!("http://127.0.0.1:{port}{}", request.path))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    Ok(command.spawn()?)
}

/// Waits for a `wrk` started by [`spawn_wrk`] and parses its report.
pub(crate) fn finish_wrk(child: Child) -> Fallible<WrkResult> {
    let output = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find(|line| line.starts_with("BENCH "))
        .ok_or_else(|| format!("wrk printed no result: {}{}", stdout, String::from_utf8_lossy(&output.stderr)))?;
    let mut result = WrkResult::default();
    for pair in line.split_whitespace().skip(1) {
        let Some((key, value)) = pair.split_once('=') else { continue };
        let value: u64 = value.parse()?;
        match key {
            "requests" => result.requests = value,
            "duration_us" => result.duration_us = value,
            "p50_us" => result.p50_us = value,
            "p99_us" => result.p99_us = value,
            "errors" => result.errors = value,
            _ => {}
        }
    }
    Ok(result)
}

/// Runs `wrk` to completion.
pub(crate) fn run_wrk(
    dir: &Path,
    port: u16,
    request: &Request,
    connections: u32,
    seconds: u64,
    tag: &str,
) -> Fallible<WrkResult> {
    finish_wrk(spawn_wrk(dir, port, request, connections, seconds, tag)?)
}

/// One plain HTTP/1.1 exchange; returns the status and the `name=value`
/// parts of the `Set-Cookie` headers.
pub(crate) fn exchange(port: u16, method: &str, path: &str, body: &str) -> Fallible<(u16, Vec<String>)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    let mut lines = head.lines();
    let status = lines.next().and_then(|line| line.split_whitespace().nth(1)).and_then(|s| s.parse().ok()).unwrap_or(0);
    let cookies = lines
        .filter_map(|line| line.split_once(':'))
        .filter(|(name, _)| name.eq_ignore_ascii_case("set-cookie"))
        .filter_map(|(_, value)| value.trim().split(';').next().map(str::to_owned))
        .filter(|pair| !pair.ends_with('='))
        .collect();
    Ok((status, cookies))
}

/// Logs in `count` times and returns one session cookie per login.
pub(crate) fn session_cookies(port: u16, count: usize) -> Fallible<Vec<String>> {
    (0..count)
        .map(|_| {
            let (status, cookies) = exchange(port, "POST", "/login", "")?;
            if status != 200 {
                return Err(format!("POST /login answered {status}").into());
            }
            cookies.into_iter().next().ok_or_else(|| "POST /login set no cookie".into())
        })
        .collect()
}

/// Waits until the server on `port` answers `GET /hello`.
pub(crate) fn wait_until_up(port: u16, timeout: Duration) -> Fallible {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Ok((200, _)) = exchange(port, "GET", "/hello", "") {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(format!("server on port {port} did not come up").into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
