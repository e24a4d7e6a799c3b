//! The mail the tests' servers sent: a Maildir (where the test SMTP server
//! of `tests/smtp` stores what it receives) or a directory of `.eml` files,
//! read and parsed; and the server's outbox, waited on until it is drained.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tessera_server::mail::{MailOutbox, OutboxCounts};

use super::TestServer;

/// How long the mail tests wait for a message or for the outbox.
pub const WAIT: Duration = Duration::from_secs(20);

/// A Maildir, read and waited on.
#[derive(Debug, Clone)]
pub struct Mailbox {
    pub dir: PathBuf,
}

impl Mailbox {
    pub fn new(dir: PathBuf) -> Mailbox {
        Mailbox { dir }
    }

    /// Every message so far, oldest first.
    pub fn read(&self) -> Vec<Received> {
        read_maildir(&self.dir)
    }

    /// Waits (up to [`WAIT`]) until at least `count` messages have arrived.
    pub async fn wait_for(&self, count: usize) -> Vec<Received> {
        let dir = self.dir.clone();
        wait_for(move || read_maildir(&dir), count, WAIT).await
    }
}

/// The outbox of `server`.
pub fn outbox(server: &TestServer) -> MailOutbox {
    MailOutbox::new(server.app_state.db.pool().clone(), Arc::new(server.clock.clone()))
}

/// Waits (up to [`WAIT`]) until `server`'s outbox has nothing pending.
pub async fn drained(server: &TestServer) -> OutboxCounts {
    let deadline = Instant::now() + WAIT;
    loop {
        let counts = outbox(server).counts().await.unwrap();
        if counts.pending == 0 {
            return counts;
        }
        assert!(Instant::now() < deadline, "outbox not drained: {counts:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
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
