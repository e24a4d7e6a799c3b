//! Identities at providers, linked to accounts by (issuer, subject) — never
//! by email — and what a verified login means for the account: log in, link,
//! or create.

use rand::Rng;
use sqlx::Row;
use tessera::Timestamp;
use tessera_auth::UserDirectory;

use super::provider::VerifiedIdentity;
use crate::database::{Database, DatabaseError};
use tessera_auth::password_policy::check_username;
use tessera_auth::User;

/// One linked identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The account it logs into.
    pub user_id: i64,
    /// The provider's issuer URL.
    pub issuer: String,
    /// The subject at that issuer.
    pub subject: String,
    /// The address, if the provider asserted it verified.
    pub email: Option<String>,
    /// When it was linked.
    pub linked_at: Timestamp,
}

/// What a verified login did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The identity was already linked: log into its account.
    Existing(User),
    /// The identity was linked to an existing account (the logged-in user,
    /// or by a verified email where the operator allows it).
    Linked(User),
    /// A new account was created for the identity.
    Created(User),
}

/// Why a verified login cannot proceed.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The identity belongs to another account than the one linking it.
    #[error("the identity is linked to another account")]
    LinkedElsewhere,
    /// The account is disabled or gone.
    #[error("the account is disabled")]
    Disabled,
    /// The identity has no account, and the registration policy or the
    /// provider's settings forbid creating one.
    #[error("no account, and none may be created")]
    SignupRefused,
    /// The database failed.
    #[error(transparent)]
    Database(#[from] DatabaseError),
}

fn db_error(error: sqlx::Error) -> DatabaseError {
    DatabaseError::from(error)
}

fn identity_from_row(row: sqlx::any::AnyRow) -> Result<Identity, DatabaseError> {
    Ok(Identity {
        user_id: row.try_get(0).map_err(db_error)?,
        issuer: row.try_get(1).map_err(db_error)?,
        subject: row.try_get(2).map_err(db_error)?,
        email: row.try_get(3).map_err(db_error)?,
        linked_at: Timestamp(row.try_get(4).map_err(db_error)?),
    })
}

const COLUMNS: &str = "user_id, issuer, subject, email, linked_at";

/// How many identities are linked to the account `$1`: one of its ways
/// in, counted inside transactions that must not remove the last one
/// (here, and `Passkeys::remove_unless_last`).
pub const COUNT_IDENTITIES: &str = "SELECT COUNT(*) FROM user_identities WHERE user_id = $1";

impl Database {
    /// The identity (issuer, subject), if linked.
    pub async fn identity(&self, issuer: &str, subject: &str) -> Result<Option<Identity>, DatabaseError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM user_identities WHERE issuer = $1 AND subject = $2"))
            .bind(issuer)
            .bind(subject)
            .fetch_optional(&self.pool)
            .await?;
        row.map(identity_from_row).transpose()
    }

    /// The identities linked to `user_id`, oldest first.
    pub async fn identities_of(&self, user_id: i64) -> Result<Vec<Identity>, DatabaseError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM user_identities WHERE user_id = $1 ORDER BY linked_at, issuer, subject"
        ))
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(identity_from_row).collect()
    }

    /// The account that has an identity with this verified address, if
    /// exactly one does.
    pub async fn user_by_verified_email(&self, email: &str) -> Result<Option<i64>, DatabaseError> {
        let rows = sqlx::query("SELECT DISTINCT user_id FROM user_identities WHERE email = $1")
            .bind(email.to_lowercase())
            .fetch_all(&self.pool)
            .await?;
        if rows.len() != 1 {
            return Ok(None);
        }
        Ok(Some(rows[0].try_get(0)?))
    }

    /// Links an identity to `user_id`; `false` if (issuer, subject) is
    /// already linked (to anyone).
    pub async fn link_identity(
        &self,
        user_id: i64,
        identity: &VerifiedIdentity,
        now: Timestamp,
    ) -> Result<bool, DatabaseError> {
        let result = sqlx::query(
            "INSERT INTO user_identities (user_id, issuer, subject, email, linked_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (issuer, subject) DO NOTHING",
        )
        .bind(user_id)
        .bind(&identity.issuer)
        .bind(&identity.subject)
        .bind(identity.verified_email.as_ref().map(|e| e.to_lowercase()))
        .bind(now.as_millis())
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    /// Unlinks (issuer, subject) from `user_id` if the account keeps another
    /// way to log in (a password, another identity or a passkey). `Ok(false)` when it
    /// would not, or when no such identity is linked to that account.
    pub async fn unlink_identity(&self, user_id: i64, issuer: &str, subject: &str) -> Result<bool, DatabaseError> {
        let mut tx = self.pool.begin().await?;
        // Passkeys are a way in too. The account's passkey row is locked
        // first, as removing a passkey locks it (`Passkeys::remove_unless_last`):
        // the two run one after the other. (A write as the first statement
        // also makes SQLite wait for its write lock instead of failing to
        // upgrade a read lock.)
        sqlx::query("UPDATE passkey_user_handles SET handle = handle WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        let has_password: bool = sqlx::query("SELECT password_hash FROM users WHERE id = $1")
            .bind(user_id)
            .fetch_optional(&mut *tx)
            .await?
            .map(|row| row.try_get::<Option<String>, _>(0))
            .transpose()?
            .flatten()
            .is_some();
        let count: i64 = sqlx::query(COUNT_IDENTITIES).bind(user_id).fetch_one(&mut *tx).await?.try_get(0)?;
        let passkeys: i64 = sqlx::query("SELECT COUNT(*) FROM passkeys WHERE user_id = $1")
            .bind(user_id)
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        if !has_password && count <= 1 && passkeys == 0 {
            return Ok(false);
        }
        let deleted = sqlx::query("DELETE FROM user_identities WHERE user_id = $1 AND issuer = $2 AND subject = $3")
            .bind(user_id)
            .bind(issuer)
            .bind(subject)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(deleted == 1)
    }

    /// Creates a password-less account for `identity` with a unique user
    /// name derived from its claims, and links the identity, atomically.
    /// `Ok(None)` if the identity was linked meanwhile by a concurrent login.
    pub async fn create_user_for_identity(
        &self,
        identity: &VerifiedIdentity,
        now: Timestamp,
    ) -> Result<Option<User>, DatabaseError> {
        let base = username_base(identity);
        for attempt in 0..12 {
            let username = match attempt {
                0 => base.clone(),
                1..=4 => format!("{base}-{}", attempt + 1),
                _ => format!("{base}-{:06x}", rand::thread_rng().gen::<u32>() & 0xff_ffff),
            };
            let Ok(username_key) = check_username(&username) else { continue };
            let mut tx = self.pool.begin().await?;
            let row = sqlx::query(
                "INSERT INTO users (username, username_key, password_hash, created_at) VALUES ($1, $2, NULL, $3) \
                 ON CONFLICT (username_key) DO NOTHING RETURNING id",
            )
            .bind(&username)
            .bind(&username_key)
            .bind(now.as_millis())
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = row else { continue };
            let id: i64 = row.try_get(0)?;
            let linked = sqlx::query(
                "INSERT INTO user_identities (user_id, issuer, subject, email, linked_at) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (issuer, subject) DO NOTHING",
            )
            .bind(id)
            .bind(&identity.issuer)
            .bind(&identity.subject)
            .bind(identity.verified_email.as_ref().map(|e| e.to_lowercase()))
            .bind(now.as_millis())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if linked != 1 {
                tx.rollback().await?;
                return Ok(None);
            }
            tx.commit().await?;
            return Ok(Some(User { id, username, password_hash: None, created_at: now, disabled_at: None }));
        }
        Err(DatabaseError::Unavailable("no free user name for this identity after 12 tries".to_owned()))
    }

    /// Records that the login flow `flow_id` was used; `false` if it
    /// already was (a replayed callback). Forgets records past their expiry.
    pub async fn consume_flow(&self, flow_id: &str, expires_at: i64, now: i64) -> Result<bool, DatabaseError> {
        sqlx::query("DELETE FROM oidc_consumed_flows WHERE expires_at < $1").bind(now).execute(&self.pool).await?;
        let inserted = sqlx::query(
            "INSERT INTO oidc_consumed_flows (flow_id, expires_at) VALUES ($1, $2) ON CONFLICT (flow_id) DO NOTHING",
        )
        .bind(flow_id)
        .bind(expires_at)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(inserted == 1)
    }
}

/// A valid user name from `preferred_username`, else the email's local
/// part, else `user`: invalid characters become `-`, at most 48 characters.
pub fn username_base(identity: &VerifiedIdentity) -> String {
    let source = identity
        .preferred_username
        .as_deref()
        .filter(|s| !s.trim().is_empty())
        .or_else(|| identity.any_email.as_deref().and_then(|e| e.split('@').next()))
        .unwrap_or("user");
    let mut name: String = source
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '-' })
        .take(48)
        .collect();
    name = name.trim_matches(|c| c == '-' || c == '.').to_owned();
    if name.chars().count() < 3 {
        name = format!("user-{name}").trim_end_matches('-').to_owned();
    }
    name
}

/// Decides what a verified login means: the account of an identity already
/// linked, a link to `link_user` (a logged-in user who asked), a link by
/// verified email when `link_by_email` allows it, or a new account if
/// `may_create` (the registration policy, `registration_policy::oidc_signup`).
pub async fn resolve(
    db: &Database,
    identity: &VerifiedIdentity,
    link_user: Option<i64>,
    link_by_email: bool,
    may_create: bool,
    now: Timestamp,
) -> Result<Outcome, ResolveError> {
    let enabled = |user: Option<User>| user.filter(|u| u.disabled_at.is_none()).ok_or(ResolveError::Disabled);
    if let Some(existing) = db.identity(&identity.issuer, &identity.subject).await? {
        if link_user.is_some_and(|id| id != existing.user_id) {
            return Err(ResolveError::LinkedElsewhere);
        }
        return Ok(Outcome::Existing(enabled(db.users().user_by_id(existing.user_id).await?)?));
    }
    let target = match link_user {
        Some(id) => Some(id),
        None if link_by_email => match &identity.verified_email {
            Some(email) => db.user_by_verified_email(email).await?,
            None => None,
        },
        None => None,
    };
    if let Some(user_id) = target {
        let user = enabled(db.users().user_by_id(user_id).await?)?;
        if !db.link_identity(user.id, identity, now).await? {
            // Linked concurrently: decide again with the winner.
            return Box::pin(resolve(db, identity, link_user, false, may_create, now)).await;
        }
        return Ok(Outcome::Linked(user));
    }
    if !may_create {
        return Err(ResolveError::SignupRefused);
    }
    match db.create_user_for_identity(identity, now).await? {
        Some(user) => Ok(Outcome::Created(user)),
        None => Box::pin(resolve(db, identity, link_user, false, may_create, now)).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(preferred: Option<&str>, email: Option<&str>) -> VerifiedIdentity {
        VerifiedIdentity {
            issuer: "https://i".into(),
            subject: "s".into(),
            verified_email: None,
            preferred_username: preferred.map(Into::into),
            any_email: email.map(Into::into),
        }
    }

    #[test]
    fn user_names_are_derived_and_valid() {
        assert_eq!(username_base(&id(Some("Jane Doe"), None)), "Jane-Doe");
        assert_eq!(username_base(&id(None, Some("j.doe+x@example.com"))), "j.doe-x");
        assert_eq!(username_base(&id(None, None)), "user");
        assert_eq!(username_base(&id(Some("ü"), None)), "user");
        assert_eq!(username_base(&id(Some("ab"), None)), "user-ab");
        assert_eq!(username_base(&id(Some(&"x".repeat(100)), None)).len(), 48);
        for name in ["Jane-Doe", "j.doe-x", "user", "user-ab"] {
            assert!(check_username(name).is_ok(), "{name}");
        }
    }
}
