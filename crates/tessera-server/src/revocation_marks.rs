//! Revocation marks for sealed cookie sessions, kept in the server database
//! so that every instance sharing it honours a logout.
//!
//! The same table holds the per-user "not before" time of API access tokens,
//! under the key `api:<user id>` (session marks use the bare user ID, which
//! is numeric, so the two never meet). Reusing it keeps the check one
//! primary-key lookup and needs no migration; keeping the keys apart means a
//! sealed-cookie logout does not end API access and vice versa.

use async_trait::async_trait;
use sqlx::Row;
use tessera::{RevocationMarks, StoreError, Timestamp};

use crate::database::{Database, DatabaseError};

/// The marks key of a user's API access tokens.
fn access_token_key(user_id: i64) -> String {
    format!("api:{user_id}")
}

impl Database {
    /// Makes every access token of `user_id` issued before `at` invalid.
    /// Marks only move forward.
    pub async fn revoke_access_tokens_before(&self, user_id: i64, at: Timestamp) -> Result<(), DatabaseError> {
        RevocationMarks::revoke_before(self, &access_token_key(user_id), at)
            .await
            .map_err(|error| DatabaseError::Unavailable(error.to_string()))
    }

    /// Since when `user_id`'s access tokens are valid, if they were ever revoked.
    pub async fn access_tokens_valid_after(&self, user_id: i64) -> Result<Option<Timestamp>, DatabaseError> {
        RevocationMarks::valid_after(self, &access_token_key(user_id))
            .await
            .map_err(|error| DatabaseError::Unavailable(error.to_string()))
    }
}

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
