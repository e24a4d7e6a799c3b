//! Storage for the token API: signing keys and refresh-token families.

use sqlx::Row;
use tessera::Timestamp;

use crate::database::{Database, DatabaseError};

/// A signing key as stored. `Debug` never shows the private half.
#[derive(Clone)]
pub struct StoredSigningKey {
    /// The key ID (RFC 7638 thumbprint).
    pub kid: String,
    /// The 32-byte Ed25519 seed; wiped when the key is retired.
    pub private_key: Option<Vec<u8>>,
    /// The 32-byte public key.
    pub public_key: Vec<u8>,
    /// When it was made.
    pub created_at: Timestamp,
    /// When a newer key replaced it.
    pub retired_at: Option<Timestamp>,
}

impl std::fmt::Debug for StoredSigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredSigningKey")
            .field("kid", &self.kid)
            .field("private_key", &self.private_key.as_ref().map(|_| "<redacted>"))
            .field("created_at", &self.created_at)
            .field("retired_at", &self.retired_at)
            .finish()
    }
}

/// What presenting a refresh token did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshUse {
    /// It was valid; it is now used and `successor` replaces it.
    Rotated {
        /// The owner.
        user_id: i64,
        /// The family, shared with the successor.
        family_id: String,
    },
    /// It had been used before: the family is now revoked.
    Reused {
        /// The owner.
        user_id: i64,
    },
    /// Unknown, expired or revoked.
    Invalid,
}

/// Retired keys older than this are deleted at the next rotation; no access
/// token lives anywhere near as long.
const KEEP_RETIRED_MILLIS: i64 = 30 * 24 * 3600 * 1000;

impl Database {
    /// Every stored signing key, newest first.
    pub async fn signing_keys(&self) -> Result<Vec<StoredSigningKey>, DatabaseError> {
        let rows = sqlx::query(
            "SELECT kid, private_key, public_key, created_at, retired_at FROM signing_keys \
             ORDER BY created_at DESC, kid DESC",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| {
                Ok(StoredSigningKey {
                    kid: row.try_get(0)?,
                    private_key: row.try_get(1)?,
                    public_key: row.try_get(2)?,
                    created_at: Timestamp(row.try_get(3)?),
                    retired_at: row.try_get::<Option<i64>, _>(4)?.map(Timestamp),
                })
            })
            .collect()
    }

    /// Adds a key and retires every other key at `sign_from`: until then the
    /// current key keeps signing while the new one is published in the JWKS
    /// (see [`crate::api::tokens::PUBLISH_BEFORE_SIGNING`]); from then on the
    /// new key signs. Retired public halves keep verifying; private halves
    /// of keys retired by now are erased.
    pub async fn rotate_signing_key(
        &self,
        kid: &str,
        private_key: &[u8],
        public_key: &[u8],
        now: Timestamp,
        sign_from: Timestamp,
    ) -> Result<(), DatabaseError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE signing_keys SET retired_at = $1 WHERE retired_at IS NULL OR retired_at > $1")
            .bind(sign_from.as_millis())
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE signing_keys SET private_key = NULL WHERE retired_at <= $1")
            .bind(now.as_millis())
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM signing_keys WHERE retired_at < $1")
            .bind(now.as_millis() - KEEP_RETIRED_MILLIS)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO signing_keys (kid, algorithm, private_key, public_key, created_at) VALUES ($1, 'EdDSA', $2, $3, $4)",
        )
        .bind(kid)
        .bind(private_key.to_vec())
        .bind(public_key.to_vec())
        .bind(now.as_millis())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Erases the private halves of keys retired by `now` (they sign no
    /// more). Returns how many were erased.
    pub async fn erase_retired_private_keys(&self, now: Timestamp) -> Result<u64, DatabaseError> {
        let done = sqlx::query(
            "UPDATE signing_keys SET private_key = NULL WHERE retired_at <= $1 AND private_key IS NOT NULL",
        )
        .bind(now.as_millis())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Adds the first signing key unless another instance already has. Two
    /// instances starting at once may both add one; both then verify, and
    /// the newer signs.
    pub async fn add_first_signing_key(
        &self,
        kid: &str,
        private_key: &[u8],
        public_key: &[u8],
        now: Timestamp,
    ) -> Result<(), DatabaseError> {
        sqlx::query(
            "INSERT INTO signing_keys (kid, algorithm, private_key, public_key, created_at) \
             SELECT $1, 'EdDSA', $2, $3, $4 WHERE NOT EXISTS (SELECT 1 FROM signing_keys WHERE retired_at IS NULL)",
        )
        .bind(kid)
        .bind(private_key.to_vec())
        .bind(public_key.to_vec())
        .bind(now.as_millis())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Stores a new refresh token (its digest) in `family_id`.
    pub async fn insert_refresh_token(
        &self,
        digest: &[u8; 32],
        family_id: &str,
        user_id: i64,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<(), DatabaseError> {
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, family_id, user_id, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(digest.to_vec())
        .bind(family_id)
        .bind(user_id)
        .bind(now.as_millis())
        .bind(expires_at.as_millis())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Uses the refresh token with `digest`: marks it used and stores
    /// `successor` in its family, in one transaction. A token that was used
    /// before revokes its whole family, the newer tokens included.
    ///
    /// A family whose first token was created at or before `family_born_after`
    /// has outlived its absolute lifetime: its tokens are no longer claimed
    /// (the answer is [`RefreshUse::Invalid`]).
    pub async fn use_refresh_token(
        &self,
        digest: &[u8; 32],
        successor: &[u8; 32],
        now: Timestamp,
        successor_expires_at: Timestamp,
        family_born_after: Timestamp,
    ) -> Result<RefreshUse, DatabaseError> {
        let mut tx = self.pool.begin().await?;
        // The conditional update is the lock: of two concurrent uses of one
        // token exactly one matches; the other is treated as reuse. The
        // family's birth is its oldest token (found through the family index).
        let claimed = sqlx::query(
            "UPDATE refresh_tokens SET used_at = $1 \
             WHERE token_hash = $2 AND used_at IS NULL AND revoked_at IS NULL AND expires_at > $1 \
             AND (SELECT MIN(f.created_at) FROM refresh_tokens f WHERE f.family_id = refresh_tokens.family_id) > $3 \
             RETURNING family_id, user_id",
        )
        .bind(now.as_millis())
        .bind(digest.to_vec())
        .bind(family_born_after.as_millis())
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = claimed {
            let family_id: String = row.try_get(0)?;
            let user_id: i64 = row.try_get(1)?;
            sqlx::query(
                "INSERT INTO refresh_tokens (token_hash, family_id, parent_hash, user_id, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(successor.to_vec())
            .bind(&family_id)
            .bind(digest.to_vec())
            .bind(user_id)
            .bind(now.as_millis())
            .bind(successor_expires_at.as_millis())
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            return Ok(RefreshUse::Rotated { user_id, family_id });
        }
        let known = sqlx::query("SELECT family_id, user_id, used_at FROM refresh_tokens WHERE token_hash = $1")
            .bind(digest.to_vec())
            .fetch_optional(&mut *tx)
            .await?;
        let outcome = match known {
            Some(row) if row.try_get::<Option<i64>, _>(2)?.is_some() => {
                let family_id: String = row.try_get(0)?;
                sqlx::query("UPDATE refresh_tokens SET revoked_at = $1 WHERE family_id = $2 AND revoked_at IS NULL")
                    .bind(now.as_millis())
                    .bind(&family_id)
                    .execute(&mut *tx)
                    .await?;
                RefreshUse::Reused { user_id: row.try_get(1)? }
            }
            _ => RefreshUse::Invalid,
        };
        tx.commit().await?;
        Ok(outcome)
    }

    /// Revokes the family of the token with `digest`; the owner if any token
    /// was newly revoked, `None` if the token is unknown or already revoked.
    pub async fn revoke_refresh_family_of(
        &self,
        digest: &[u8; 32],
        now: Timestamp,
    ) -> Result<Option<i64>, DatabaseError> {
        let rows = sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = $1 WHERE revoked_at IS NULL AND family_id = \
             (SELECT family_id FROM refresh_tokens WHERE token_hash = $2) \
             RETURNING user_id",
        )
        .bind(now.as_millis())
        .bind(digest.to_vec())
        .fetch_all(&self.pool)
        .await?;
        rows.first().map(|row| row.try_get::<i64, _>(0)).transpose().map_err(DatabaseError::from)
    }

    /// Revokes every refresh token of `user_id` not yet revoked (used ones
    /// included, so reuse is still recognised); returns how many. Every
    /// access token issued before `now` dies with them (the per-user "not
    /// before" mark), so the user's API clients are signed out at once, not
    /// when their last access token expires.
    pub async fn revoke_all_refresh_tokens(&self, user_id: i64, now: Timestamp) -> Result<u64, DatabaseError> {
        self.revoke_access_tokens_before(user_id, now).await?;
        let revoked =
            sqlx::query("UPDATE refresh_tokens SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL")
                .bind(now.as_millis())
                .bind(user_id)
                .execute(&self.pool)
                .await?;
        Ok(revoked.rows_affected())
    }
}
