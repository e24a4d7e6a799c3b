//! A real SMTP server for the mail tests: aiosmtpd (installed by
//! `scripts/smtp-deps.sh` into `/opt/tessera-smtp`, or `TESSERA_SMTP_VENV`)
//! on a loopback port, storing what it receives in a Maildir this module
//! reads and parses. Stopped (killed) when dropped.
//!
//! Missing aiosmtpd is a panic when `TESSERA_REQUIRE_SERVICES` is set (CI),
//! else a loud `SKIPPED:` line.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The aiosmtpd executable, if installed; else `None` after a skip message
/// (a panic under CI).
pub fn aiosmtpd() -> Option<PathBuf> {
    let venv = std::env::var("TESSERA_SMTP_VENV").unwrap_or_else(|_| "/opt/tessera-smtp".into());
    let path = Path::new(&venv).join("bin/aiosmtpd");
    if path.exists() {
        return Some(path);
    }
    if std::env::var_os("TESSERA_REQUIRE_SERVICES").is_some() {
        panic!("the mail tests need {}; run scripts/smtp-deps.sh", path.display());
    }
    eprintln!("SKIPPED: mail test: {} not installed (scripts/smtp-deps.sh installs it)", path.display());
    None
}

/// A free loopback port (free when asked; the server binds it later).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A running aiosmtpd.
pub struct SmtpServer {
    child: Child,
    /// Its port.
    pub port: u16,
    /// Its Maildir.
    pub maildir: PathBuf,
}

impl SmtpServer {
    /// Starts aiosmtpd on `port`, storing mail in `maildir`; waits until it accepts connections.
    pub async fn start(executable: &Path, port: u16, maildir: &Path) -> SmtpServer {
        let child = Command::new(executable)
            .args(["-n", "-l", &format!("127.0.0.1:{port}"), "-c", "aiosmtpd.handlers.Mailbox"])
            .arg(maildir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("aiosmtpd starts");
        let server = SmtpServer { child, port, maildir: maildir.to_path_buf() };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "aiosmtpd did not listen on port {port}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server
    }

    /// Stops it.
    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A received message, parsed.
#[derive(Debug, Clone)]
pub struct Received {
    pub to: String,
    pub from: String,
    pub subject: String,
    pub text: String,
    pub html: String,
}

impl Received {
    /// The first URL in the text part starting with `prefix`.
    pub fn link(&self, prefix: &str) -> Option<String> {
        let start = self.text.find(prefix)?;
        let end = self.text[start..].find(|c: char| c.is_whitespace()).map_or(self.text.len(), |e| e + start);
        Some(self.text[start..end].to_owned())
    }

    /// The `token` parameter of the first link starting with `prefix`.
    pub fn token(&self, prefix: &str) -> Option<String> {
        let link = self.link(prefix)?;
        Some(link.split_once("token=")?.1.to_owned())
    }

    /// The first run of exactly six digits after "code".
    pub fn code(&self) -> Option<String> {
        let at = self.text.find("code")?;
        let rest = &self.text[at..];
        rest.split(|c: char| !c.is_ascii_digit()).find(|w| w.len() == 6).map(str::to_owned)
    }
}

/// Every message in the Maildir `dir` (`new/`), oldest first.
pub fn read_maildir(dir: &Path) -> Vec<Received> {
    read_files(&dir.join("new"), None)
}

/// Every `.eml` file in `dir`.
pub fn read_eml_dir(dir: &Path) -> Vec<Received> {
    read_files(dir, Some("eml"))
}

fn read_files(dir: &Path, extension: Option<&str>) -> Vec<Received> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| extension.is_none_or(|ext| p.extension().is_some_and(|e| e == ext)))
        .map(|p| (std::fs::metadata(&p).and_then(|m| m.modified()).unwrap_or(std::time::UNIX_EPOCH), p))
        .collect();
    files.sort();
    files.into_iter().map(|(_, p)| parse(&std::fs::read(&p).unwrap())).collect()
}

/// Parses one RFC 5322 message with a text and an HTML part.
pub fn parse(bytes: &[u8]) -> Received {
    let mail = mailparse::parse_mail(bytes).expect("a parseable message");
    let header = |name: &str| {
        mail.headers.iter().find(|h| h.get_key().eq_ignore_ascii_case(name)).map(|h| h.get_value()).unwrap_or_default()
    };
    let mut text = String::new();
    let mut html = String::new();
    for part in std::iter::once(&mail).chain(mail.subparts.iter()) {
        match part.ctype.mimetype.as_str() {
            "text/plain" => text = part.get_body().unwrap(),
            "text/html" => html = part.get_body().unwrap(),
            _ => {}
        }
    }
    Received { to: header("To"), from: header("From"), subject: header("Subject"), text, html }
}

/// Waits until `read` returns at least `count` messages.
pub async fn wait_for(read: impl Fn() -> Vec<Received>, count: usize, limit: Duration) -> Vec<Received> {
    let deadline = Instant::now() + limit;
    loop {
        let messages = read();
        if messages.len() >= count {
            return messages;
        }
        assert!(Instant::now() < deadline, "expected {count} messages within {limit:?}, got {}", messages.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
