//! Revocation marks for sealed cookie sessions, kept in the server database
//! so that every instance sharing it honours a logout.

use async_trait::async_trait;
use sqlx::Row;
use tessera::{RevocationMarks, StoreError, Timestamp};

use crate::database::Database;

#[async_trait]
impl RevocationMarks for Database {
    async fn valid_after(&self, user_id: &str) -> Result<Option<Timestamp>, StoreError> {
        let row = sqlx::query("SELECT valid_after FROM session_revocations WHERE user_id = $1")
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::unavailable)?;
        row.map(|row| row.try_get::<i64, _>(0).map(Timestamp)).transpose().map_err(StoreError::unavailable)
    }

    async fn revoke_before(&self, user_id: &str, at: Timestamp) -> Result<(), StoreError> {
        // Marks only move forward, whichever instance writes last.
        sqlx::query(
            "INSERT INTO session_revocations (user_id, valid_after) VALUES ($1, $2) \
             ON CONFLICT (user_id) DO UPDATE SET valid_after = \
             CASE WHEN session_revocations.valid_after > excluded.valid_after \
             THEN session_revocations.valid_after ELSE excluded.valid_after END",
        )
        .bind(user_id)
        .bind(at.as_millis())
        .execute(&self.pool)
        .await
        .map_err(StoreError::unavailable)?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Database::ping(self).await.map_err(StoreError::unavailable)
    }
}
