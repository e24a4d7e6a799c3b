//! Who the users are: the [`UserDirectory`] trait the authentication core
//! reads and writes accounts through, and [`SqlDirectory`], its SQLite and
//! PostgreSQL implementation.
//!
//! The trait is deliberately narrow (look up, create, change a hash,
//! disable), so an application with its own users table, or an LDAP
//! directory, can plug in without the rest of the core changing.

use async_trait::async_trait;
use sqlx::any::AnyRow;
use sqlx::Row;
use tessera::Timestamp;

use crate::database::{DatabaseError, TimedPool};

/// A registered user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Numeric ID, the owner of sessions.
    pub id: i64,
    /// The name as the user typed it at registration.
    pub username: String,
    /// The argon2id PHC string, if the account has a password.
    pub password_hash: Option<String>,
    /// Registration time.
    pub created_at: Timestamp,
    /// When an administrator disabled the account.
    pub disabled_at: Option<Timestamp>,
}

impl User {
    /// Whether the account may sign in.
    pub fn is_enabled(&self) -> bool {
        self.disabled_at.is_none()
    }
}

/// Why a user could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateUserError {
    /// The (canonical) user name is taken.
    #[error("user name taken")]
    UsernameTaken,
    /// The directory is unavailable.
    #[error(transparent)]
    Unavailable(#[from] DatabaseError),
}

/// Where accounts live.
#[async_trait]
pub trait UserDirectory: Send + Sync + 'static {
    /// Adds a user whose canonical name is `username_key`; fails with
    /// [`CreateUserError::UsernameTaken`] if that key is taken, atomically
    /// (two concurrent sign-ups for one name create one account).
    async fn create_user(
        &self,
        username: &str,
        username_key: &str,
        password_hash: Option<&str>,
        created_at: Timestamp,
    ) -> Result<User, CreateUserError>;

    /// The user whose canonical name is `username_key`.
    async fn user_by_name(&self, username_key: &str) -> Result<Option<User>, DatabaseError>;

    /// The user with `id`.
    async fn user_by_id(&self, id: i64) -> Result<Option<User>, DatabaseError>;

    /// Replaces a user's password hash (after a rehash or a password change).
    async fn set_password_hash(&self, id: i64, password_hash: &str) -> Result<(), DatabaseError>;

    /// Disables (`Some(when)`) or enables (`None`) a user; whether the user exists.
    async fn set_disabled(&self, id: i64, disabled_at: Option<Timestamp>) -> Result<bool, DatabaseError>;
}

/// The `users` table of the accounts database.
#[derive(Clone, Debug)]
pub struct SqlDirectory {
    pool: TimedPool,
}

impl SqlDirectory {
    /// Users in `pool` (whose tables [`TimedPool::connect`] created).
    pub fn new(pool: TimedPool) -> Self {
        SqlDirectory { pool }
    }
}

#[async_trait]
impl UserDirectory for SqlDirectory {
    async fn create_user(
        &self,
        username: &str,
        username_key: &str,
        password_hash: Option<&str>,
        created_at: Timestamp,
    ) -> Result<User, CreateUserError> {
        let row = sqlx::query(
            "INSERT INTO users (username, username_key, password_hash, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (username_key) DO NOTHING RETURNING id",
        )
        .bind(username)
        .bind(username_key)
        .bind(password_hash)
        .bind(created_at.as_millis())
        .fetch_optional(&self.pool)
        .await
        .map_err(DatabaseError::from)?;
        let Some(row) = row else { return Err(CreateUserError::UsernameTaken) };
        Ok(User {
            id: row.try_get(0).map_err(DatabaseError::from)?,
            username: username.to_owned(),
            password_hash: password_hash.map(str::to_owned),
            created_at,
            disabled_at: None,
        })
    }

    async fn user_by_name(&self, username_key: &str) -> Result<Option<User>, DatabaseError> {
        let row = sqlx::query(
            "SELECT id, username, password_hash, created_at, disabled_at FROM users WHERE username_key = $1",
        )
        .bind(username_key)
        .fetch_optional(&self.pool)
        .await?;
        row.map(user_from_row).transpose()
    }

    async fn user_by_id(&self, id: i64) -> Result<Option<User>, DatabaseError> {
        let row = sqlx::query("SELECT id, username, password_hash, created_at, disabled_at FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(user_from_row).transpose()
    }

    async fn set_password_hash(&self, id: i64, password_hash: &str) -> Result<(), DatabaseError> {
        sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
            .bind(password_hash)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn set_disabled(&self, id: i64, disabled_at: Option<Timestamp>) -> Result<bool, DatabaseError> {
        let result = sqlx::query("UPDATE users SET disabled_at = $1 WHERE id = $2")
            .bind(disabled_at.map(|t| t.as_millis()))
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected() > 0)
    }
}

fn user_from_row(row: AnyRow) -> Result<User, DatabaseError> {
    Ok(User {
        id: row.try_get(0)?,
        username: row.try_get(1)?,
        password_hash: row.try_get(2)?,
        created_at: Timestamp(row.try_get(3)?),
        disabled_at: row.try_get::<Option<i64>, _>(4)?.map(Timestamp),
    })
}
