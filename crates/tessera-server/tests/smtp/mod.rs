//! A real SMTP server for the mail tests: aiosmtpd (installed by
//! `scripts/smtp-deps.sh` into `/opt/tessera-smtp`, or `TESSERA_SMTP_VENV`)
//! on a loopback port, storing what it receives in a Maildir
//! (`harness::mail` reads and parses it). Stopped (killed) when dropped.
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
