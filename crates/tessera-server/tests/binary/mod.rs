//! The real `tessera` binary as a child process, on free loopback ports.
#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// The binary under test.
pub fn exe() -> &'static str {
    env!("CARGO_BIN_EXE_tessera")
}

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A command with a clean environment: no `TESSERA_*` or `RUST_LOG` from
/// the caller, cheap argon2 so tests run fast.
pub fn command(args: &[&str]) -> Command {
    let mut command = Command::new(exe());
    command.args(args);
    for (name, _) in std::env::vars() {
        if name.starts_with("TESSERA_") || name == "RUST_LOG" {
            command.env_remove(name);
        }
    }
    command.env("TESSERA_PASSWORDS__ARGON2_MEMORY_KIB", "1024");
    command.env("TESSERA_PASSWORDS__ARGON2_ITERATIONS", "1");
    command
}

/// Runs a command to completion with `stdin` as input.
pub fn run(mut command: Command, stdin: &str) -> Output {
    use std::io::Write;
    command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().expect("tessera runs");
    if let Some(mut input) = child.stdin.take() {
        let _ = input.write_all(stdin.as_bytes());
    }
    child.wait_with_output().expect("tessera finishes")
}

/// `tessera --database URL [ARGS…]` run to completion.
pub fn admin(database: &str, args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut all = vec!["admin", "--database", database];
    all.extend_from_slice(args);
    let output = run(command(&all), stdin);
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A running server process.
pub struct Server {
    pub child: Child,
    pub port: u16,
    pub metrics_port: u16,
    pub base: String,
    pub log: PathBuf,
}

impl Server {
    /// Starts `tessera serve` with `extra` flags, logs to `log`, and waits
    /// until it accepts connections.
    pub fn start(dir: &Path, database: &str, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let port = free_port();
        let metrics_port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let metrics = format!("127.0.0.1:{metrics_port}");
        let log = dir.join(format!("server-{port}.log"));
        let mut args = vec!["serve", "--listen", &listen, "--metrics-listen", &metrics, "--database", database];
        args.extend_from_slice(extra);
        let mut command = command(&args);
        command.env("TESSERA_COOKIE_SECURE", "true");
        // Every test registers its users from 127.0.0.1 (and repeated crash
        // rounds share one database): an allowance no test reaches.
        command.env("TESSERA_THROTTLE__SIGNUPS_PER_ADDRESS", "1000000");
        for (k, v) in env {
            command.env(k, v);
        }
        let file = std::fs::File::create(&log).unwrap();
        let err = file.try_clone().unwrap();
        command.stdout(Stdio::from(file)).stderr(Stdio::from(err)).stdin(Stdio::null());
        let mut child = command.spawn().expect("tessera starts");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("tessera exited early ({status}): {}", std::fs::read_to_string(&log).unwrap_or_default());
            }
            assert!(Instant::now() < deadline, "tessera did not listen: {}", std::fs::read_to_string(&log).unwrap());
            std::thread::sleep(Duration::from_millis(25));
        }
        Server { child, port, metrics_port, base: format!("http://localhost:{port}"), log }
    }

    /// Sends a signal (`-TERM`, `-KILL`, …).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill").args([signal, &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
    }

    /// Waits for the process to end, at most `limit`.
    pub fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What the server logged so far.
    pub fn log_text(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = std::fs::File::open(&self.log) {
            let _ = file.read_to_string(&mut text);
        }
        text
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
