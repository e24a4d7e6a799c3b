//! The background worker: claims due messages, turns each intent into a
//! message (issuing its secret only now), sends it, and settles the row —
//! sent, retried later with back-off, or given up on after the last
//! attempt with its error recorded.

use std::sync::Arc;
use std::time::Duration;

use tessera_auth::Authenticator;

use super::messages::{render, Site};
use super::outbox::{Claimed, MailOutbox};
use super::{backoff, Transport};

/// How long a claimed message is this worker's; longer than any send (the
/// SMTP time-out), so no other worker sends it meanwhile.
pub const LEASE: Duration = Duration::from_secs(5 * 60);

/// Messages claimed per round.
const BATCH: i64 = 20;

/// A worker's parts.
pub struct Worker {
    /// The outbox.
    pub outbox: MailOutbox,
    /// The core, which prepares messages.
    pub auth: Authenticator,
    /// Where messages go.
    pub transport: Arc<Transport>,
    /// Names and links.
    pub site: Site,
    /// Polling interval.
    pub poll_interval: Duration,
    /// Attempts before giving up.
    pub max_attempts: u32,
}

impl Worker {
    /// Runs until the task is aborted.
    pub async fn run(self) {
        let wake = self.outbox.wake();
        loop {
            let full = match self.round().await {
                Ok(claimed) => claimed == BATCH as usize,
                Err(error) => {
                    tracing::warn!(%error, "mail outbox: claiming messages failed");
                    false
                }
            };
            if !full {
                tokio::select! {
                    () = wake.notified() => {}
                    () = tokio::time::sleep(self.poll_interval) => {}
                }
            }
        }
    }

    /// One round: claims and handles due messages; returns how many.
    pub async fn round(&self) -> Result<usize, crate::database::DatabaseError> {
        let batch = self.outbox.claim(BATCH, LEASE).await?;
        let count = batch.len();
        for claimed in batch {
            self.handle(&claimed).await;
        }
        Ok(count)
    }

    async fn handle(&self, claimed: &Claimed) {
        let settled = match self.attempt(claimed).await {
            Ok(()) => self.outbox.sent(claimed).await,
            Err(Failure::Permanent(error)) => {
                tracing::warn!(id = claimed.id, %error, "mail outbox: message given up on");
                self.outbox.failed(claimed, &error, None).await
            }
            Err(Failure::Transient(error)) if claimed.attempts >= i64::from(self.max_attempts) => {
                tracing::warn!(id = claimed.id, attempts = claimed.attempts, %error, "mail outbox: last attempt failed, message given up on");
                self.outbox.failed(claimed, &error, None).await
            }
            Err(Failure::Transient(error)) => {
                let wait = backoff(claimed.attempts);
                tracing::info!(id = claimed.id, attempts = claimed.attempts, retry_in = ?wait, %error, "mail outbox: sending failed, will retry");
                self.outbox.failed(claimed, &error, Some(wait)).await
            }
        };
        if let Err(error) = settled {
            // The lease runs out and the message is tried again.
            tracing::warn!(id = claimed.id, %error, "mail outbox: recording the outcome failed");
        }
    }

    async fn attempt(&self, claimed: &Claimed) -> Result<(), Failure> {
        let Some(mail) = &claimed.mail else {
            return Err(Failure::Permanent("unreadable payload".into()));
        };
        let prepared = self.auth.prepare_mail(mail).await.map_err(|e| Failure::Transient(e.to_string()))?;
        let Some(prepared) = prepared else {
            // Nobody to send it to (e.g. a reset for an unknown address):
            // settled like a sent message, and as quietly.
            tracing::debug!(id = claimed.id, "mail outbox: nobody to send to");
            return Ok(());
        };
        let message = render(&self.site, &prepared).map_err(Failure::Permanent)?;
        self.transport.send(message).await.map_err(Failure::Transient)?;
        tracing::info!(id = claimed.id, "mail sent");
        Ok(())
    }
}

enum Failure {
    /// Worth another try (the SMTP server or the database was down).
    Transient(String),
    /// Never going to work (a payload or address that cannot become a message).
    Permanent(String),
}
