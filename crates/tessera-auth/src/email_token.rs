//! Single-use secrets sent by mail: a 256-bit link token and, where a
//! person may read the mail on another device, a 6-digit code.
//!
//! At rest the token is only its SHA-256 (its 256 random bits make a slow
//! hash pointless: nobody can enumerate the preimages), and the code only an
//! HMAC under a server secret bound to its user and purpose (a million
//! codes could be enumerated from a plain hash; without the key they
//! cannot). Each secret has a purpose and an expiry and works once: the
//! `UPDATE … WHERE used_at IS NULL AND expires_at > now` that redeems it is
//! the one check, so two simultaneous uses redeem it once. Codes are
//! guessable in a million tries, so every code check goes through the
//! login throttle (see [`crate::email_verification`]).

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::rngs::OsRng;
use rand::{Rng, RngCore};
use sha2::{Digest, Sha256};
use sqlx::Row;
use tessera::{Clock, Timestamp};

use crate::database::{DatabaseError, TimedPool};

/// What a mailed secret is for; a secret of one purpose never works for another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Proves the mailbox of an address to add to (or change on) an account.
    Verify,
    /// Lets the holder choose a new password.
    Reset,
}

impl Purpose {
    fn as_str(self) -> &'static str {
        match self {
            Purpose::Verify => "verify",
            Purpose::Reset => "reset",
        }
    }
}

/// A secret just issued: what goes into the mail, and nowhere else.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The link token (43 characters of base64url).
    pub token: String,
    /// The 6-digit code, if one was asked for.
    pub code: Option<String>,
    /// When both stop working.
    pub expires_at: Timestamp,
}

/// A redeemed (or still redeemable) secret: whose, and for which address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redeemed {
    /// The account.
    pub user_id: i64,
    /// The address the secret was mailed to.
    pub address: String,
}

/// The `email_tokens` table.
#[derive(Clone)]
pub struct EmailTokens {
    db: TimedPool,
    clock: Arc<dyn Clock>,
    code_key: Arc<[u8; 32]>,
}

impl EmailTokens {
    /// Secrets in `db`; codes keyed with `code_key` (a server secret shared
    /// by every instance).
    pub fn new(db: TimedPool, clock: Arc<dyn Clock>, code_key: [u8; 32]) -> Self {
        EmailTokens { db, clock, code_key: Arc::new(code_key) }
    }

    /// Issues a secret for `user_id` and `purpose`, mailed to `address`,
    /// valid for `lifetime`; with a 6-digit code if `with_code`. Earlier
    /// unused secrets of the same user and purpose stop working: only the
    /// newest mail counts.
    pub async fn issue(
        &self,
        user_id: i64,
        purpose: Purpose,
        address: &str,
        lifetime: Duration,
        with_code: bool,
    ) -> Result<Issued, DatabaseError> {
        let now = self.clock.now();
        let mut bytes = [0u8; 32];
        OsRng.fill_bytes(&mut bytes);
        let token = URL_SAFE_NO_PAD.encode(bytes);
        let code = with_code.then(|| format!("{:06}", OsRng.gen_range(0..1_000_000u32)));
        let code_hash = code.as_deref().map(|c| self.code_hash(user_id, purpose, c));
        let expires_at = now.plus(lifetime);
        let mut tx = self.db.begin().await?;
        sqlx::query("UPDATE email_tokens SET used_at = $1 WHERE user_id = $2 AND purpose = $3 AND used_at IS NULL")
            .bind(now.as_millis())
            .bind(user_id)
            .bind(purpose.as_str())
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO email_tokens (token_hash, user_id, purpose, address, code_hash, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(token_hash(&token))
        .bind(user_id)
        .bind(purpose.as_str())
        .bind(address)
        .bind(code_hash)
        .bind(now.as_millis())
        .bind(expires_at.as_millis())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Issued { token, code, expires_at })
    }

    /// Whose `token` is, if it is unused, unexpired and for `purpose`,
    /// without using it (to show the form it leads to).
    pub async fn peek(&self, token: &str, purpose: Purpose) -> Result<Option<Redeemed>, DatabaseError> {
        if !plausible_token(token) {
            return Ok(None);
        }
        let row = sqlx::query(
            "SELECT user_id, address FROM email_tokens \
             WHERE token_hash = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > $3",
        )
        .bind(token_hash(token))
        .bind(purpose.as_str())
        .bind(self.clock.now().as_millis())
        .fetch_optional(&self.db)
        .await?;
        row.map(redeemed).transpose()
    }

    /// Uses `token` up: whose it was, if it was unused, unexpired and for
    /// `purpose`. Of simultaneous uses, one succeeds.
    pub async fn redeem(&self, token: &str, purpose: Purpose) -> Result<Option<Redeemed>, DatabaseError> {
        if !plausible_token(token) {
            return Ok(None);
        }
        let row = sqlx::query(
            "UPDATE email_tokens SET used_at = $1 \
             WHERE token_hash = $2 AND purpose = $3 AND used_at IS NULL AND expires_at > $1 \
             RETURNING user_id, address",
        )
        .bind(self.clock.now().as_millis())
        .bind(token_hash(token))
        .bind(purpose.as_str())
        .fetch_optional(&self.db)
        .await?;
        row.map(redeemed).transpose()
    }

    /// Uses up `user_id`'s code for `purpose`: the address it was mailed
    /// to, if `code` is right, unused and unexpired. The caller throttles.
    pub async fn redeem_code(
        &self,
        user_id: i64,
        purpose: Purpose,
        code: &str,
    ) -> Result<Option<String>, DatabaseError> {
        let code = code.trim();
        if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Ok(None);
        }
        let row = sqlx::query(
            "UPDATE email_tokens SET used_at = $1 \
             WHERE user_id = $2 AND purpose = $3 AND code_hash = $4 AND used_at IS NULL AND expires_at > $1 \
             RETURNING address",
        )
        .bind(self.clock.now().as_millis())
        .bind(user_id)
        .bind(purpose.as_str())
        .bind(self.code_hash(user_id, purpose, code))
        .fetch_optional(&self.db)
        .await?;
        Ok(match row {
            Some(row) => Some(row.try_get(0)?),
            None => None,
        })
    }

    /// Ends every unused secret of `user_id` for `purpose` (after a reset,
    /// the other reset links in the mailbox must not work either).
    pub async fn revoke_all(&self, user_id: i64, purpose: Purpose) -> Result<u64, DatabaseError> {
        let done =
            sqlx::query("UPDATE email_tokens SET used_at = $1 WHERE user_id = $2 AND purpose = $3 AND used_at IS NULL")
                .bind(self.clock.now().as_millis())
                .bind(user_id)
                .bind(purpose.as_str())
                .execute(&self.db)
                .await?;
        Ok(done.rows_affected())
    }

    /// Deletes secrets that expired before `before`; returns how many.
    pub async fn purge(&self, before: Timestamp) -> Result<u64, DatabaseError> {
        let done = sqlx::query("DELETE FROM email_tokens WHERE expires_at < $1")
            .bind(before.as_millis())
            .execute(&self.db)
            .await?;
        Ok(done.rows_affected())
    }

    fn code_hash(&self, user_id: i64, purpose: Purpose, code: &str) -> String {
        // The key is 32 bytes, which HMAC always accepts.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.code_key[..]).expect("HMAC takes any key length");
        mac.update(format!("{user_id}:{}:{code}", purpose.as_str()).as_bytes());
        hex(&mac.finalize().into_bytes())
    }
}

/// The stored form of a link token.
fn token_hash(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

/// Tokens are 43 base64url characters; anything else is not looked up.
fn plausible_token(token: &str) -> bool {
    token.len() == 43 && token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn redeemed(row: sqlx::any::AnyRow) -> Result<Redeemed, DatabaseError> {
    Ok(Redeemed { user_id: row.try_get(0)?, address: row.try_get(1)? })
}
