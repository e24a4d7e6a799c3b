//! Second factors: an authenticator app (TOTP) and single-use recovery
//! codes, asked for after the password (or an OpenID Connect login) of an
//! account that has set them up (ASVS 6.3.3, 6.5).
//!
//! [`SecondFactors`] owns the two tables; [`crate::login::PendingLogin`] holds the
//! half-finished login between the first and the second factor. Every
//! acceptance is an atomic conditional update, so two requests racing with
//! the same code or recovery code cannot both succeed.

pub mod recovery_codes;
pub mod totp;

use std::sync::Arc;

use sqlx::Row;
use tessera::Clock;

use crate::database::{DatabaseError, TimedPool};
pub use totp::TotpSecret;

/// What a user has set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// An authenticator app is confirmed: logins need a second factor.
    pub enabled: bool,
    /// Unused recovery codes.
    pub recovery_codes_left: i64,
}

/// The verdict on a second-factor input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// A current authenticator code, not used before.
    Totp,
    /// An unused recovery code, now used up; `left` remain.
    RecoveryCode {
        /// Unused codes remaining.
        left: i64,
    },
    /// Wrong, used before, or the account has no second factor.
    Wrong,
}

/// The second-factor tables.
#[derive(Clone)]
pub struct SecondFactors {
    db: TimedPool,
    clock: Arc<dyn Clock>,
}

impl SecondFactors {
    /// Second factors in `db`, with `clock` for code steps and timestamps.
    pub fn new(db: TimedPool, clock: Arc<dyn Clock>) -> Self {
        SecondFactors { db, clock }
    }

    /// Whether `user_id` has an authenticator app, and how many recovery
    /// codes are left.
    pub async fn status(&self, user_id: i64) -> Result<Status, DatabaseError> {
        let enabled = self.is_enabled(user_id).await?;
        let recovery_codes_left = self.recovery_codes_left(user_id).await?;
        Ok(Status { enabled, recovery_codes_left })
    }

    /// Whether logins of `user_id` need a second factor (one indexed lookup:
    /// every login asks).
    pub async fn is_enabled(&self, user_id: i64) -> Result<bool, DatabaseError> {
        Ok(sqlx::query("SELECT 1 FROM totp_credentials WHERE user_id = $1 AND confirmed_at IS NOT NULL")
            .bind(user_id)
            .fetch_optional(&self.db)
            .await?
            .is_some())
    }

    /// Starts (or restarts) setting up an authenticator app: a new secret,
    /// stored unconfirmed. `None` if one is already active: replacing it
    /// takes turning it off first, so a stolen session cannot silently swap
    /// the victim's app for the attacker's.
    pub async fn begin_setup(&self, user_id: i64) -> Result<Option<TotpSecret>, DatabaseError> {
        let secret = TotpSecret::generate();
        let written = sqlx::query(
            "INSERT INTO totp_credentials (user_id, secret, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id) DO UPDATE SET secret = excluded.secret, created_at = excluded.created_at \
             WHERE totp_credentials.confirmed_at IS NULL",
        )
        .bind(user_id)
        .bind(secret.to_base32())
        .bind(self.clock.now().as_millis())
        .execute(&self.db)
        .await?
        .rows_affected();
        Ok((written == 1).then_some(secret))
    }

    /// The secret of a setup that was started and not confirmed.
    pub async fn setup_in_progress(&self, user_id: i64) -> Result<Option<TotpSecret>, DatabaseError> {
        self.secret(user_id, false).await
    }

    /// Confirms a started setup with a code from the app. On success the app
    /// is active, the code counts as used, and a fresh set of recovery codes
    /// (replacing any older set) is returned to be shown once.
    pub async fn confirm_setup(&self, user_id: i64, code: &str) -> Result<Option<Vec<String>>, DatabaseError> {
        let Some(secret) = self.setup_in_progress(user_id).await? else { return Ok(None) };
        let now = self.clock.now();
        let Some(step) = secret.matching_step(code, now) else { return Ok(None) };
        let mut tx = self.db.begin().await?;
        let confirmed = sqlx::query(
            "UPDATE totp_credentials SET confirmed_at = $1, last_step = $2 \
             WHERE user_id = $3 AND secret = $4 AND confirmed_at IS NULL",
        )
        .bind(now.as_millis())
        .bind(step_as_i64(step))
        .bind(user_id)
        .bind(secret.to_base32())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if confirmed != 1 {
            // A concurrent setup replaced the secret, or confirmed it first.
            tx.rollback().await?;
            return Ok(None);
        }
        let codes = replace_recovery_codes(&mut tx, user_id, now.as_millis()).await?;
        tx.commit().await?;
        Ok(Some(codes))
    }

    /// Turns on an authenticator app whose secret was kept with a pending
    /// login (not in the database): `code` must be the app's current code
    /// for `secret`. Refused (`None`) if it is not, or if the account has an
    /// active app already. Returns the recovery codes to show once.
    ///
    /// Each pending login gets a secret of its own, so someone holding only
    /// the password sees a secret nobody will ever confirm: the owner's
    /// enrolment, made in another pending login, uses another secret.
    pub async fn confirm_pending_setup(
        &self,
        user_id: i64,
        secret: &TotpSecret,
        code: &str,
    ) -> Result<Option<Vec<String>>, DatabaseError> {
        let now = self.clock.now();
        let Some(step) = secret.matching_step(code, now) else { return Ok(None) };
        let mut tx = self.db.begin().await?;
        let written = sqlx::query(
            "INSERT INTO totp_credentials (user_id, secret, created_at, confirmed_at, last_step) \
             VALUES ($1, $2, $3, $3, $4) \
             ON CONFLICT (user_id) DO UPDATE SET secret = excluded.secret, created_at = excluded.created_at, \
             confirmed_at = excluded.confirmed_at, last_step = excluded.last_step \
             WHERE totp_credentials.confirmed_at IS NULL",
        )
        .bind(user_id)
        .bind(secret.to_base32())
        .bind(now.as_millis())
        .bind(step_as_i64(step))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if written != 1 {
            // An app is active already (confirmed by a concurrent login).
            tx.rollback().await?;
            return Ok(None);
        }
        let codes = replace_recovery_codes(&mut tx, user_id, now.as_millis()).await?;
        tx.commit().await?;
        Ok(Some(codes))
    }

    /// Checks a second-factor input: a 6-digit authenticator code, or else a
    /// recovery code. An accepted code is used up at once.
    pub async fn verify(&self, user_id: i64, input: &str) -> Result<Verification, DatabaseError> {
        let now = self.clock.now();
        if totp::looks_like_code(input) {
            let Some(secret) = self.secret(user_id, true).await? else { return Ok(Verification::Wrong) };
            let Some(step) = secret.matching_step(input, now) else { return Ok(Verification::Wrong) };
            // Only a step newer than the last accepted one: a code (or an
            // older one, once a newer was used) works once.
            let accepted = sqlx::query(
                "UPDATE totp_credentials SET last_step = $1 \
                 WHERE user_id = $2 AND confirmed_at IS NOT NULL AND last_step < $1",
            )
            .bind(step_as_i64(step))
            .bind(user_id)
            .execute(&self.db)
            .await?
            .rows_affected();
            return Ok(if accepted == 1 { Verification::Totp } else { Verification::Wrong });
        }
        let Some(hash) = recovery_codes::hash(input) else { return Ok(Verification::Wrong) };
        let used = sqlx::query(
            "UPDATE recovery_codes SET used_at = $1 WHERE code_hash = $2 AND user_id = $3 AND used_at IS NULL \
             AND EXISTS (SELECT 1 FROM totp_credentials t WHERE t.user_id = $3 AND t.confirmed_at IS NOT NULL)",
        )
        .bind(now.as_millis())
        .bind(hash)
        .bind(user_id)
        .execute(&self.db)
        .await?
        .rows_affected();
        if used != 1 {
            return Ok(Verification::Wrong);
        }
        Ok(Verification::RecoveryCode { left: self.recovery_codes_left(user_id).await? })
    }

    /// A new set of recovery codes replacing the old one (all of it, used or
    /// not). `None` if no authenticator app is active.
    pub async fn new_recovery_codes(&self, user_id: i64) -> Result<Option<Vec<String>>, DatabaseError> {
        let mut tx = self.db.begin().await?;
        let enabled = sqlx::query("SELECT 1 FROM totp_credentials WHERE user_id = $1 AND confirmed_at IS NOT NULL")
            .bind(user_id)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if !enabled {
            tx.rollback().await?;
            return Ok(None);
        }
        let codes = replace_recovery_codes(&mut tx, user_id, self.clock.now().as_millis()).await?;
        tx.commit().await?;
        Ok(Some(codes))
    }

    /// Removes the authenticator app and every recovery code. `true` if an
    /// active app was removed.
    pub async fn disable(&self, user_id: i64) -> Result<bool, DatabaseError> {
        let mut tx = self.db.begin().await?;
        let removed = sqlx::query("DELETE FROM totp_credentials WHERE user_id = $1 AND confirmed_at IS NOT NULL")
            .bind(user_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query("DELETE FROM totp_credentials WHERE user_id = $1").bind(user_id).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1").bind(user_id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(removed == 1)
    }

    async fn secret(&self, user_id: i64, confirmed: bool) -> Result<Option<TotpSecret>, DatabaseError> {
        let sql = if confirmed {
            "SELECT secret FROM totp_credentials WHERE user_id = $1 AND confirmed_at IS NOT NULL"
        } else {
            "SELECT secret FROM totp_credentials WHERE user_id = $1 AND confirmed_at IS NULL"
        };
        let Some(row) = sqlx::query(sql).bind(user_id).fetch_optional(&self.db).await? else { return Ok(None) };
        let text: String = row.try_get(0)?;
        match TotpSecret::from_base32(&text) {
            Some(secret) => Ok(Some(secret)),
            None => Err(DatabaseError::Unavailable(format!("stored TOTP secret of user {user_id} is unreadable"))),
        }
    }

    async fn recovery_codes_left(&self, user_id: i64) -> Result<i64, DatabaseError> {
        let row = sqlx::query("SELECT COUNT(*) FROM recovery_codes WHERE user_id = $1 AND used_at IS NULL")
            .bind(user_id)
            .fetch_one(&self.db)
            .await?;
        Ok(row.try_get(0)?)
    }
}

/// Steps are about 59 million today; `i64` holds them for ever.
fn step_as_i64(step: u64) -> i64 {
    i64::try_from(step).unwrap_or(i64::MAX)
}

async fn replace_recovery_codes(
    tx: &mut crate::database::TimedTransaction,
    user_id: i64,
    now_millis: i64,
) -> Result<Vec<String>, DatabaseError> {
    sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1").bind(user_id).execute(&mut **tx).await?;
    let codes = recovery_codes::generate_set();
    for code in &codes {
        let hash = recovery_codes::hash(code)
            .ok_or_else(|| DatabaseError::Unavailable("a generated recovery code does not parse as one".to_owned()))?;
        sqlx::query("INSERT INTO recovery_codes (code_hash, user_id, created_at) VALUES ($1, $2, $3)")
            .bind(hash)
            .bind(user_id)
            .bind(now_millis)
            .execute(&mut **tx)
            .await?;
    }
    Ok(codes)
}
