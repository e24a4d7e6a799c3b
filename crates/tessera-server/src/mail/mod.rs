//! Mail: the durable outbox, the worker that sends it, the transports
//! (SMTP through `lettre`, or `.eml` files when no SMTP server is set) and
//! the messages themselves.
//!
//! ```text
//!  request ──enqueue intent──► mail_outbox ◄──claim (lease)── worker ──prepare (issue secret)──► render ──► SMTP / .eml
//! ```
//!
//! A request never talks to the mail server: it adds a row (one insert,
//! the same for every answer) and returns; a crash or an SMTP outage loses
//! nothing, and a lease makes one worker of many instances send each row.
//! Delivery is at least once: a worker that sends and then cannot record
//! it (the database went away in between) sends again after its lease.

pub mod messages;
pub mod outbox;
pub mod transport;
pub mod worker;

use std::path::PathBuf;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use outbox::{MailOutbox, OutboxCounts};
pub use transport::{SmtpConfig, SmtpSecurity, Transport};

/// `accounts.email`: whether accounts have an address.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum EmailPolicy {
    /// Sign-up asks for an address but does not insist.
    #[default]
    Optional,
    /// Sign-up (web and API) needs an address.
    Required,
    /// No addresses, no password reset, no notices.
    Off,
}

/// How mail is sent, from the `[mail]` settings.
#[derive(Debug, Clone)]
pub struct MailConfig {
    /// The SMTP server; `None`: write `.eml` files to `eml_dir`.
    pub smtp: Option<SmtpConfig>,
    /// Where `.eml` files go without SMTP.
    pub eml_dir: PathBuf,
    /// The `From` address (`Name <address>` or `address`).
    pub from: String,
    /// The name the messages sign with.
    pub site_name: String,
    /// How often the worker looks for due messages (it is also woken by
    /// every enqueue on its own instance).
    pub poll_interval: Duration,
    /// Attempts before a message is given up on.
    pub max_attempts: u32,
    /// How long verification links and codes work.
    pub verify_lifetime: Duration,
    /// `accounts.email`.
    pub policy: EmailPolicy,
    /// `accounts.email_login`.
    pub login: tessera_auth::email_login::EmailLoginMode,
}

impl Default for MailConfig {
    fn default() -> Self {
        MailConfig {
            smtp: None,
            eml_dir: PathBuf::from("mail"),
            from: "tessera <tessera@localhost>".into(),
            site_name: "tessera".into(),
            poll_interval: Duration::from_secs(5),
            max_attempts: 10,
            verify_lifetime: tessera_auth::mail::DEFAULT_VERIFY_LIFETIME,
            policy: EmailPolicy::Optional,
            login: tessera_auth::email_login::EmailLoginMode::Off,
        }
    }
}

/// What the email pages and API handlers need besides the core.
#[derive(Debug, Clone, Copy)]
pub struct EmailPages {
    /// `accounts.email`.
    pub policy: EmailPolicy,
}

impl EmailPages {
    /// Whether addresses (and reset, notices) are on.
    pub fn enabled(&self) -> bool {
        self.policy != EmailPolicy::Off
    }
}

/// The wait before attempt `attempts + 1`: 30 s, doubling, at most an hour.
pub fn backoff(attempts: i64) -> Duration {
    let doublings = attempts.saturating_sub(1).clamp(0, 7) as u32;
    Duration::from_secs(30).saturating_mul(1 << doublings).min(Duration::from_secs(3600))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_an_hour() {
        assert_eq!(backoff(1), Duration::from_secs(30));
        assert_eq!(backoff(2), Duration::from_secs(60));
        assert_eq!(backoff(3), Duration::from_secs(120));
        assert_eq!(backoff(8), Duration::from_secs(3600));
        assert_eq!(backoff(50), Duration::from_secs(3600));
    }
}
