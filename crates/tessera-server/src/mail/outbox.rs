//! The `mail_outbox` table: enqueue, claim with a lease, settle.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::Row;
use tessera::{Clock, Timestamp};
use tessera_auth::{Mail, Outbox};
use tokio::sync::Notify;

use crate::database::{DatabaseError, TimedPool};

/// One message claimed for sending.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// Its row.
    pub id: i64,
    /// What to send (`None`: a payload this version cannot read).
    pub mail: Option<Mail>,
    /// Attempts so far, this one included.
    pub attempts: i64,
    /// This worker's lease: settling checks it is still ours.
    pub lease_until: i64,
}

/// Counts for `/metrics` and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxCounts {
    /// Waiting to be sent (including retries).
    pub pending: i64,
    /// Sent (or dropped: nobody to send to).
    pub sent: i64,
    /// Given up on.
    pub failed: i64,
}

/// The outbox in the users database; `Notify` wakes this instance's worker
/// at once instead of at its next poll.
#[derive(Clone)]
pub struct MailOutbox {
    db: TimedPool,
    clock: Arc<dyn Clock>,
    wake: Arc<Notify>,
}

impl MailOutbox {
    /// The outbox in `db`.
    pub fn new(db: TimedPool, clock: Arc<dyn Clock>) -> Self {
        MailOutbox { db, clock, wake: Arc::new(Notify::new()) }
    }

    /// What the worker waits on between polls.
    pub fn wake(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Up to `limit` due messages, each claimed for `lease` by one atomic
    /// `UPDATE … WHERE` that only an unleased (or lapsed) row passes: of
    /// several workers polling at once, one gets each row.
    pub async fn claim(&self, limit: i64, lease: Duration) -> Result<Vec<Claimed>, DatabaseError> {
        let now = self.clock.now().as_millis();
        let rows = sqlx::query(
            "SELECT id FROM mail_outbox WHERE sent_at IS NULL AND failed_at IS NULL AND next_attempt_at <= $1 \
             AND (lease_until IS NULL OR lease_until < $1) ORDER BY id LIMIT $2",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(&self.db)
        .await?;
        let lease_until = now.saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 2));
        let mut claimed = Vec::new();
        for row in rows {
            let id: i64 = row.try_get(0)?;
            let row = sqlx::query(
                "UPDATE mail_outbox SET lease_until = $2, attempts = attempts + 1 \
                 WHERE id = $1 AND sent_at IS NULL AND failed_at IS NULL AND (lease_until IS NULL OR lease_until < $3) \
                 RETURNING payload, attempts",
            )
            .bind(id)
            .bind(lease_until)
            .bind(now)
            .fetch_optional(&self.db)
            .await?;
            // No row: another worker claimed it between the SELECT and here.
            let Some(row) = row else { continue };
            let payload: String = row.try_get(0)?;
            claimed.push(Claimed {
                id,
                mail: serde_json::from_str(&payload).ok(),
                attempts: row.try_get(1)?,
                lease_until,
            });
        }
        Ok(claimed)
    }

    /// Marks a claimed message sent (or dropped, when there was nobody to send it to).
    pub async fn sent(&self, claimed: &Claimed) -> Result<(), DatabaseError> {
        sqlx::query("UPDATE mail_outbox SET sent_at = $2, lease_until = NULL, last_error = NULL WHERE id = $1 AND lease_until = $3")
            .bind(claimed.id)
            .bind(self.clock.now().as_millis())
            .bind(claimed.lease_until)
            .execute(&self.db)
            .await?;
        Ok(())
    }

    /// Records a failed attempt: retried after `retry_in`, or, with `None`,
    /// given up on.
    pub async fn failed(
        &self,
        claimed: &Claimed,
        error: &str,
        retry_in: Option<Duration>,
    ) -> Result<(), DatabaseError> {
        let now = self.clock.now();
        let error: String = error.chars().take(500).collect();
        let query = match retry_in {
            Some(wait) => sqlx::query(
                "UPDATE mail_outbox SET lease_until = NULL, last_error = $2, next_attempt_at = $3 \
                 WHERE id = $1 AND lease_until = $4",
            )
            .bind(claimed.id)
            .bind(error)
            .bind(now.plus(wait).as_millis()),
            None => sqlx::query(
                "UPDATE mail_outbox SET lease_until = NULL, last_error = $2, failed_at = $3 WHERE id = $1 AND lease_until = $4",
            )
            .bind(claimed.id)
            .bind(error)
            .bind(now.as_millis()),
        };
        query.bind(claimed.lease_until).execute(&self.db).await?;
        Ok(())
    }

    /// How many messages wait, were sent, failed.
    pub async fn counts(&self) -> Result<OutboxCounts, DatabaseError> {
        let row = sqlx::query(
            "SELECT \
             COALESCE(SUM(CASE WHEN sent_at IS NULL AND failed_at IS NULL THEN 1 ELSE 0 END), 0), \
             COALESCE(SUM(CASE WHEN sent_at IS NOT NULL THEN 1 ELSE 0 END), 0), \
             COALESCE(SUM(CASE WHEN failed_at IS NOT NULL THEN 1 ELSE 0 END), 0) FROM mail_outbox",
        )
        .fetch_one(&self.db)
        .await?;
        Ok(OutboxCounts { pending: row.try_get(0)?, sent: row.try_get(1)?, failed: row.try_get(2)? })
    }

    /// The last error of each message given up on or waiting to retry, newest first.
    pub async fn errors(&self) -> Result<Vec<String>, DatabaseError> {
        let rows = sqlx::query("SELECT last_error FROM mail_outbox WHERE last_error IS NOT NULL ORDER BY id DESC")
            .fetch_all(&self.db)
            .await?;
        rows.into_iter().map(|row| row.try_get(0).map_err(DatabaseError::from)).collect()
    }

    /// Deletes messages sent or given up on before `before`.
    pub async fn purge(&self, before: Timestamp) -> Result<u64, DatabaseError> {
        let done = sqlx::query("DELETE FROM mail_outbox WHERE sent_at < $1 OR failed_at < $1")
            .bind(before.as_millis())
            .execute(&self.db)
            .await?;
        Ok(done.rows_affected())
    }
}

#[async_trait]
impl Outbox for MailOutbox {
    async fn enqueue(&self, mail: Mail) -> Result<(), DatabaseError> {
        let now = self.clock.now().as_millis();
        let payload =
            serde_json::to_string(&mail).map_err(|e| DatabaseError::Unavailable(format!("mail payload: {e}")))?;
        sqlx::query("INSERT INTO mail_outbox (payload, created_at, next_attempt_at) VALUES ($1, $2, $2)")
            .bind(payload)
            .bind(now)
            .execute(&self.db)
            .await?;
        self.wake.notify_one();
        Ok(())
    }
}
