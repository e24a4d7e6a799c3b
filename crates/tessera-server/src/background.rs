//! Work that runs beside the requests: purging expired sessions, old
//! throttle counters, old audit events, expired mailed secrets and old
//! outbox rows, and counting live sessions.

use std::sync::Arc;
use std::time::Duration;

use tessera::{Clock, SessionEngine};
use tessera_auth::throttle::Throttle;

use crate::activity_stats::ActivityStats;
use crate::database::Database;
use crate::mail::MailOutbox;
use crate::session_store::ActiveCounter;

/// Counts live sessions every `every` for the metrics and the activity statistics.
pub(crate) async fn count_active_periodically(
    counter: ActiveCounter,
    kind: &'static str,
    activity: ActivityStats,
    every: Duration,
) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        match tokio::time::timeout(Duration::from_secs(10), counter()).await {
            Ok(Ok(count)) => {
                crate::metrics::set_active_sessions(kind, count);
                activity.active_sessions(count);
            }
            Ok(Err(error)) => tracing::debug!(%error, "counting active sessions failed"),
            Err(_) => tracing::debug!("counting active sessions timed out"),
        }
    }
}

/// What the background purge needs to forget old audit events.
pub(crate) struct AuditPurge {
    pub(crate) db: Database,
    pub(crate) retention: Duration,
    pub(crate) clock: Arc<dyn Clock>,
}

impl AuditPurge {
    async fn run(&self) {
        let cutoff =
            self.clock.now().as_millis().saturating_sub(i64::try_from(self.retention.as_millis()).unwrap_or(i64::MAX));
        match self.db.purge_audit_events(tessera::Timestamp(cutoff)).await {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, retention = ?self.retention, "purged old audit events"),
            Err(error) => tracing::warn!(%error, "purging old audit events failed"),
        }
    }
}

/// How long sent (or given up) outbox rows stay, for the administrator's
/// "was it sent?" — they hold no secrets.
pub const OUTBOX_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// What the background purge needs to forget expired mailed secrets
/// (verification, reset and sign-in) and old outbox rows; `email` is
/// `None` when email is off.
pub(crate) struct MailPurge {
    pub(crate) email: Option<tessera_auth::Email>,
    pub(crate) outbox: MailOutbox,
    pub(crate) clock: Arc<dyn Clock>,
}

impl MailPurge {
    async fn run(&self) {
        let Some(email) = &self.email else { return };
        let now = self.clock.now();
        match email.tokens.purge(now).await {
            Ok(0) => {}
            Ok(purged) => tracing::debug!(purged, "purged expired email tokens"),
            Err(error) => tracing::warn!(%error, "purging expired email tokens failed"),
        }
        match email.logins.purge(now).await {
            Ok(0) => {}
            Ok(purged) => tracing::debug!(purged, "purged expired email sign-in codes"),
            Err(error) => tracing::warn!(%error, "purging expired email sign-in codes failed"),
        }
        let cutoff = now.as_millis().saturating_sub(i64::try_from(OUTBOX_RETENTION.as_millis()).unwrap_or(i64::MAX));
        match self.outbox.purge(tessera::Timestamp(cutoff)).await {
            Ok(0) => {}
            Ok(purged) => tracing::debug!(purged, "purged old outbox messages"),
            Err(error) => tracing::warn!(%error, "purging old outbox messages failed"),
        }
    }
}

/// Purges expired sessions, old throttle counters, old audit events,
/// expired mailed secrets and old outbox rows every `every`.
pub(crate) async fn purge_periodically(
    engine: SessionEngine,
    throttle: Throttle,
    audit: AuditPurge,
    mail: MailPurge,
    every: Duration,
) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        match engine.purge_expired().await {
            Ok(0) => {}
            Ok(purged) => tracing::debug!(purged, "purged expired sessions"),
            Err(error) => tracing::warn!(%error, "purging expired sessions failed"),
        }
        if let Err(error) = throttle.purge().await {
            tracing::warn!(%error, "purging old login throttle counters failed");
        }
        audit.run().await;
        mail.run().await;
    }
}
