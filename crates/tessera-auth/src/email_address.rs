//! An account's email address: its syntax, and the verified address each
//! account may have.
//!
//! An address is stored only once a link or code mailed to it came back
//! ([`EmailAddresses::set_verified`], called by [`crate::email_token`]'s
//! consumer), so a password reset or a security notice can only ever go to
//! an address its owner proved to read. Each address belongs to at most
//! one account, compared case-insensitively.

use sqlx::Row;
use tessera::{Clock, Timestamp};

use std::sync::Arc;

use crate::database::{DatabaseError, TimedPool};

/// Longest address accepted (RFC 5321's path limit).
pub const MAX_ADDRESS_LEN: usize = 254;

/// Why an address is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// Not of the form `name@domain.tld`, too long, or with spaces or
    /// control characters.
    #[error("that is not an email address (expected name@example.com)")]
    Malformed,
}

/// A syntactically plausible address, trimmed, with its lookup key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailAddress {
    address: String,
}

impl EmailAddress {
    /// Checks `input`: one `@`, a non-empty local part, a domain of at
    /// least two dot-separated labels, no whitespace, control characters or
    /// the characters that would let it break out of a mail header. Deliberately
    /// simple: whether it exists is what the mailed link proves.
    pub fn parse(input: &str) -> Result<EmailAddress, AddressError> {
        let address = input.trim();
        if address.is_empty() || address.len() > MAX_ADDRESS_LEN {
            return Err(AddressError::Malformed);
        }
        if address.chars().any(|c| c.is_whitespace() || c.is_control() || "<>()[]\\,;:\"".contains(c)) {
            return Err(AddressError::Malformed);
        }
        let Some((local, domain)) = address.rsplit_once('@') else { return Err(AddressError::Malformed) };
        if local.is_empty() || local.contains('@') || local.len() > 64 {
            return Err(AddressError::Malformed);
        }
        let labels: Vec<&str> = domain.split('.').collect();
        let label_ok = |l: &&str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_alphanumeric() || c == '-')
        };
        if labels.len() < 2 || !labels.iter().all(label_ok) {
            return Err(AddressError::Malformed);
        }
        Ok(EmailAddress { address: address.to_owned() })
    }

    /// The address as typed (trimmed).
    pub fn as_str(&self) -> &str {
        &self.address
    }

    /// The form addresses are compared and looked up by: lower case. (The
    /// local part may be case-sensitive in theory; no provider treats it
    /// so, and one account per mailbox matters more.)
    pub fn key(&self) -> String {
        self.address.to_lowercase()
    }
}

/// The outcome of storing a verified address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetAddress {
    /// Stored; the address it replaced, if any, is returned by the caller's lookup.
    Stored,
    /// Another account already has this address.
    TakenByAnother,
}

/// The `user_emails` table.
#[derive(Clone)]
pub struct EmailAddresses {
    db: TimedPool,
    clock: Arc<dyn Clock>,
}

impl EmailAddresses {
    /// Addresses in `db`.
    pub fn new(db: TimedPool, clock: Arc<dyn Clock>) -> Self {
        EmailAddresses { db, clock }
    }

    /// The verified address of `user_id`, if it has one.
    pub async fn verified(&self, user_id: i64) -> Result<Option<String>, DatabaseError> {
        let row = sqlx::query("SELECT address FROM user_emails WHERE user_id = $1")
            .bind(user_id)
            .fetch_optional(&self.db)
            .await?;
        Ok(match row {
            Some(row) => Some(row.try_get(0)?),
            None => None,
        })
    }

    /// The account whose verified address is `address` (any case).
    pub async fn user_with(&self, address: &EmailAddress) -> Result<Option<i64>, DatabaseError> {
        let row = sqlx::query("SELECT user_id FROM user_emails WHERE address_key = $1")
            .bind(address.key())
            .fetch_optional(&self.db)
            .await?;
        Ok(match row {
            Some(row) => Some(row.try_get(0)?),
            None => None,
        })
    }

    /// Makes `address` the verified address of `user_id`, replacing any
    /// other; refused if another account has it.
    pub async fn set_verified(&self, user_id: i64, address: &EmailAddress) -> Result<SetAddress, DatabaseError> {
        if let Some(owner) = self.user_with(address).await? {
            if owner != user_id {
                return Ok(SetAddress::TakenByAnother);
            }
        }
        let now: Timestamp = self.clock.now();
        // The unique key still decides between two accounts racing for one
        // address: the loser's insert fails and is reported as taken.
        let result = sqlx::query(
            "INSERT INTO user_emails (user_id, address, address_key, verified_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (user_id) DO UPDATE SET address = $2, address_key = $3, verified_at = $4",
        )
        .bind(user_id)
        .bind(address.as_str())
        .bind(address.key())
        .bind(now.as_millis())
        .execute(&self.db)
        .await;
        match result {
            Ok(_) => Ok(SetAddress::Stored),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(SetAddress::TakenByAnother),
            Err(other) => Err(other.into()),
        }
    }

    /// Removes `user_id`'s address; whether it had one.
    pub async fn remove(&self, user_id: i64) -> Result<bool, DatabaseError> {
        let done = sqlx::query("DELETE FROM user_emails WHERE user_id = $1").bind(user_id).execute(&self.db).await?;
        Ok(done.rows_affected() > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plausible_addresses_pass_and_others_do_not() {
        for good in ["a@b.co", " Alice.Smith+tag@Example.COM ", "x@mail.example.org", "ü@bücher.de"] {
            assert!(EmailAddress::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "alice",
            "@example.com",
            "alice@",
            "alice@localhost",
            "a b@example.com",
            "alice@exa mple.com",
            "alice@example..com",
            "alice@-example.com",
            "a@b@example.com",
            "alice@example.com\r\nBcc: x@y.z",
            "Alice <alice@example.com>",
            "alice@example.com,bob@example.com",
        ] {
            assert_eq!(EmailAddress::parse(bad), Err(AddressError::Malformed), "{bad:?}");
        }
        assert!(EmailAddress::parse(&format!("{}@example.com", "a".repeat(65))).is_err());
        assert_eq!(EmailAddress::parse(" Bob@Example.com").unwrap().key(), "bob@example.com");
    }
}
