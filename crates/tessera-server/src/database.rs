//! The server's own data: users and generated secrets, in SQLite or PostgreSQL.
//!
//! One implementation serves both through sqlx's `Any` driver: the SQL is
//! written once with `$n` placeholders, which both databases accept, and
//! only the schema migrations differ.
//!
//! Every query is bounded by `database.query_timeout`: the pool is wrapped
//! in [`TimedPool`], an sqlx executor that puts the deadline around each
//! query it runs (transactions included), so the modules that query keep
//! writing `.fetch_one(&db.pool)` and a hung database turns into
//! [`DatabaseError::Unavailable`] (503) instead of a hung request.

use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::{BoxStream, StreamExt};
use rand::rngs::OsRng;
use rand::RngCore;
use sqlx::any::{AnyPoolOptions, AnyQueryResult, AnyRow, AnyTypeInfo};
use sqlx::migrate::Migrator;
use sqlx::{Any, AnyConnection, AnyPool, Describe, Either, Execute, Executor, Row, Transaction};
use tessera::Timestamp;

/// Default of `database.query_timeout`: like the session store's time-out.
pub const DEFAULT_QUERY_TIMEOUT: Duration = Duration::from_secs(3);

/// A failure of the user database.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    /// The database could not be reached or refused the query.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The user name is taken.
    #[error("user name taken")]
    UsernameTaken,
    /// The database file is open to other users (the message names it and
    /// the fix).
    #[error("{0}")]
    Insecure(String),
    /// The URL (password masked) names no supported database.
    #[error("unsupported database URL {0:?}: expected sqlite://… or postgres://…")]
    UnsupportedUrl(String),
}

impl From<sqlx::Error> for DatabaseError {
    fn from(error: sqlx::Error) -> Self {
        DatabaseError::Unavailable(error.to_string())
    }
}

impl From<sqlx::migrate::MigrateError> for DatabaseError {
    fn from(error: sqlx::migrate::MigrateError) -> Self {
        DatabaseError::Unavailable(format!("migration failed: {error}"))
    }
}

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

/// The users database.
#[derive(Clone, Debug)]
pub struct Database {
    pub(crate) pool: TimedPool,
}

impl Database {
    /// Opens (creating a SQLite file if needed) and migrates the database at
    /// `url`, with the default query time-out.
    pub async fn connect(url: &str) -> Result<Self, DatabaseError> {
        Self::connect_with_timeout(url, DEFAULT_QUERY_TIMEOUT).await
    }

    /// Opens and migrates the database at `url`; every later query that takes
    /// longer than `query_timeout` fails as [`DatabaseError::Unavailable`].
    pub async fn connect_with_timeout(url: &str, query_timeout: Duration) -> Result<Self, DatabaseError> {
        sqlx::any::install_default_drivers();
        let is_sqlite = url.starts_with("sqlite:");
        if !is_sqlite && !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
            return Err(DatabaseError::UnsupportedUrl(crate::session_store::mask_url(url)));
        }
        if is_sqlite {
            // Created 0600 (its -wal/-shm files follow); refused if others may read it.
            crate::file_permissions::prepare_sqlite(url, "database").map_err(DatabaseError::Insecure)?;
        }
        let url = if is_sqlite && !url.contains("mode=") {
            format!("{url}{}mode=rwc", if url.contains('?') { '&' } else { '?' })
        } else {
            url.to_owned()
        };
        let options = AnyPoolOptions::new()
            .max_connections(if is_sqlite { 4 } else { 10 })
            .acquire_timeout(Duration::from_secs(5))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if is_sqlite {
                        // WAL lets readers and the writer proceed together;
                        // busy_timeout makes a second pool on the same file wait
                        // for the write lock instead of failing.
                        sqlx::query("PRAGMA journal_mode = WAL").execute(&mut *conn).await?;
                        sqlx::query("PRAGMA busy_timeout = 5000").execute(&mut *conn).await?;
                        sqlx::query("PRAGMA foreign_keys = ON").execute(&mut *conn).await?;
                    }
                    Ok(())
                })
            });
        let pool = options
            .connect(&url)
            .await
            .map_err(|e| DatabaseError::Unavailable(crate::session_store::scrub_message(&e.to_string(), &url)))?;
        let mut migrator: Migrator =
            if is_sqlite { sqlx::migrate!("./migrations/sqlite") } else { sqlx::migrate!("./migrations/postgres") };
        // The session store keeps its own migrations in the same table.
        migrator.set_ignore_missing(true);
        migrator.run(&pool).await?;
        Ok(Database { pool: TimedPool { pool, timeout: query_timeout } })
    }

    /// Adds a user; [`DatabaseError::UsernameTaken`] if the name is taken
    /// (compared case-insensitively through `username_key`).
    pub async fn create_user(
        &self,
        username: &str,
        username_key: &str,
        password_hash: &str,
        created_at: Timestamp,
    ) -> Result<User, DatabaseError> {
        let row = sqlx::query(
            "INSERT INTO users (username, username_key, password_hash, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (username_key) DO NOTHING RETURNING id",
        )
        .bind(username)
        .bind(username_key)
        .bind(password_hash)
        .bind(created_at.as_millis())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Err(DatabaseError::UsernameTaken) };
        Ok(User {
            id: row.try_get(0)?,
            username: username.to_owned(),
            password_hash: Some(password_hash.to_owned()),
            created_at,
            disabled_at: None,
        })
    }

    /// The user whose canonical name is `username_key`.
    pub async fn user_by_name(&self, username_key: &str) -> Result<Option<User>, DatabaseError> {
        let row = sqlx::query(
            "SELECT id, username, password_hash, created_at, disabled_at FROM users WHERE username_key = $1",
        )
        .bind(username_key)
        .fetch_optional(&self.pool)
        .await?;
        row.map(user_from_row).transpose()
    }

    /// The user with `id`.
    pub async fn user_by_id(&self, id: i64) -> Result<Option<User>, DatabaseError> {
        let row = sqlx::query("SELECT id, username, password_hash, created_at, disabled_at FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(user_from_row).transpose()
    }

    /// Replaces a user's password hash (after a rehash or a password change).
    pub async fn set_password_hash(&self, id: i64, password_hash: &str) -> Result<(), DatabaseError> {
        sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
            .bind(password_hash)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Disables (`Some(when)`) or enables (`None`) a user. Returns whether
    /// the user exists.
    pub async fn set_disabled(&self, id: i64, disabled_at: Option<Timestamp>) -> Result<bool, DatabaseError> {
        let result = sqlx::query("UPDATE users SET disabled_at = $1 WHERE id = $2")
            .bind(disabled_at.map(|t| t.as_millis()))
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected() > 0)
    }

    /// The 32-byte secret called `name`, generated on first use. Instances
    /// sharing a database race to insert it; the first wins and all read it.
    pub async fn secret(&self, name: &str) -> Result<[u8; 32], DatabaseError> {
        let mut fresh = [0u8; 32];
        OsRng.fill_bytes(&mut fresh);
        sqlx::query(
            "INSERT INTO server_secrets (name, value, created_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(fresh.to_vec())
        .bind(Timestamp::now().as_millis())
        .execute(&self.pool)
        .await?;
        let row =
            sqlx::query("SELECT value FROM server_secrets WHERE name = $1").bind(name).fetch_one(&self.pool).await?;
        let value: Vec<u8> = row.try_get(0)?;
        value.try_into().map_err(|_| DatabaseError::Unavailable(format!("stored secret {name:?} is not 32 bytes")))
    }

    /// The sealing keys of cookie sessions, newest first: `(id, key)`.
    /// Generated on first use; `rotate_cookie_key` adds a newer one.
    pub async fn cookie_sealing_keys(&self) -> Result<Vec<(u32, [u8; 32])>, DatabaseError> {
        let mut keys = self.cookie_key_rows().await?;
        if keys.is_empty() {
            self.secret("cookie-seal:1").await?;
            keys = self.cookie_key_rows().await?;
        }
        Ok(keys)
    }

    /// Adds a new newest cookie sealing key; older keys keep opening cookies.
    pub async fn rotate_cookie_key(&self) -> Result<u32, DatabaseError> {
        let next = self.cookie_key_rows().await?.first().map(|(id, _)| id + 1).unwrap_or(1);
        self.secret(&format!("cookie-seal:{next}")).await?;
        Ok(next)
    }

    async fn cookie_key_rows(&self) -> Result<Vec<(u32, [u8; 32])>, DatabaseError> {
        let rows = sqlx::query("SELECT name, value FROM server_secrets WHERE name LIKE 'cookie-seal:%'")
            .fetch_all(&self.pool)
            .await?;
        let mut keys = Vec::new();
        for row in rows {
            let name: String = row.try_get(0)?;
            let value: Vec<u8> = row.try_get(1)?;
            let id = name.trim_start_matches("cookie-seal:").parse::<u32>().ok();
            if let (Some(id), Ok(key)) = (id, <[u8; 32]>::try_from(value)) {
                keys.push((id, key));
            }
        }
        keys.sort_by_key(|(id, _)| std::cmp::Reverse(*id));
        Ok(keys)
    }

    /// A round trip, for readiness checks.
    pub async fn ping(&self) -> Result<(), DatabaseError> {
        sqlx::query("SELECT 1").fetch_one(&self.pool).await?;
        Ok(())
    }

    /// Closes the pool, waiting for connections to return.
    pub async fn close(&self) {
        self.pool.close().await
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

/// The pool, with a deadline on every query run through it.
#[derive(Clone, Debug)]
pub(crate) struct TimedPool {
    pool: AnyPool,
    timeout: Duration,
}

impl TimedPool {
    /// Starts a transaction whose queries (and commit) are bounded too.
    pub(crate) async fn begin(&self) -> Result<TimedTransaction, sqlx::Error> {
        let tx = within(self.timeout, self.pool.begin()).await?;
        Ok(TimedTransaction { inner: TimedConnection { tx, timeout: self.timeout } })
    }

    /// Closes the pool, waiting for connections to return.
    pub(crate) async fn close(&self) {
        self.pool.close().await
    }
}

/// A transaction of a [`TimedPool`]. `&mut *tx` is the executor, as with
/// sqlx's own transactions, so the code using it does not change.
#[derive(Debug)]
pub(crate) struct TimedTransaction {
    inner: TimedConnection,
}

/// The connection of a [`TimedTransaction`].
#[derive(Debug)]
pub(crate) struct TimedConnection {
    tx: Transaction<'static, Any>,
    timeout: Duration,
}

impl TimedTransaction {
    /// Commits, within the time-out.
    pub(crate) async fn commit(self) -> Result<(), sqlx::Error> {
        let timeout = self.inner.timeout;
        within(timeout, self.inner.tx.commit()).await
    }

    /// Rolls back, within the time-out (a transaction dropped without either
    /// is rolled back by sqlx as well).
    pub(crate) async fn rollback(self) -> Result<(), sqlx::Error> {
        let timeout = self.inner.timeout;
        within(timeout, self.inner.tx.rollback()).await
    }
}

impl Deref for TimedTransaction {
    type Target = TimedConnection;
    fn deref(&self) -> &TimedConnection {
        &self.inner
    }
}

impl DerefMut for TimedTransaction {
    fn deref_mut(&mut self) -> &mut TimedConnection {
        &mut self.inner
    }
}

/// The error of a query that ran out of time: an I/O time-out, which
/// becomes [`DatabaseError::Unavailable`] like any connection failure.
fn timed_out(timeout: Duration) -> sqlx::Error {
    sqlx::Error::Io(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("no answer within {} (database.query_timeout)", humantime::format_duration(timeout)),
    ))
}

/// `future`, failing with [`timed_out`] after `timeout`. Dropping sqlx's
/// future mid-query is safe: the connection is closed or checked before it
/// is used again.
async fn within<T>(timeout: Duration, future: impl Future<Output = Result<T, sqlx::Error>>) -> Result<T, sqlx::Error> {
    tokio::time::timeout(timeout, future).await.unwrap_or_else(|_| Err(timed_out(timeout)))
}

/// `stream` with one deadline for all of it (a query's rows arrive as a
/// stream; `fetch_all`, `execute` and friends are built on it).
fn within_stream<'e, T: Send + 'e>(
    timeout: Duration,
    stream: BoxStream<'e, Result<T, sqlx::Error>>,
) -> BoxStream<'e, Result<T, sqlx::Error>> {
    let deadline = Box::pin(tokio::time::sleep(timeout));
    futures::stream::unfold(Some((stream, deadline)), move |state| async move {
        let (mut stream, mut deadline) = state?;
        tokio::select! {
            item = stream.next() => item.map(|item| (item, Some((stream, deadline)))),
            () = &mut deadline => Some((Err(timed_out(timeout)), None)),
        }
    })
    .boxed()
}

/// The executor methods sqlx has no default for, each delegating to `$inner`
/// within `$timeout`; the defaults (`fetch_one`, `fetch_all`, `execute`…)
/// go through these two.
macro_rules! timed_executor {
    ($for:ty, |$this:ident| ($inner:expr, $timeout:expr)) => {
        impl<'c> Executor<'c> for $for {
            type Database = Any;

            fn fetch_many<'e, 'q: 'e, E>(
                self,
                query: E,
            ) -> BoxStream<'e, Result<Either<AnyQueryResult, AnyRow>, sqlx::Error>>
            where
                'c: 'e,
                E: 'q + Execute<'q, Any>,
            {
                let $this = self;
                within_stream($timeout, $inner.fetch_many(query))
            }

            fn fetch_optional<'e, 'q: 'e, E>(self, query: E) -> BoxFuture<'e, Result<Option<AnyRow>, sqlx::Error>>
            where
                'c: 'e,
                E: 'q + Execute<'q, Any>,
            {
                let $this = self;
                let timeout = $timeout;
                Box::pin(within(timeout, $inner.fetch_optional(query)))
            }

            fn prepare_with<'e, 'q: 'e>(
                self,
                sql: &'q str,
                parameters: &'e [AnyTypeInfo],
            ) -> BoxFuture<'e, Result<<Any as sqlx::Database>::Statement<'q>, sqlx::Error>>
            where
                'c: 'e,
            {
                let $this = self;
                let timeout = $timeout;
                Box::pin(within(timeout, $inner.prepare_with(sql, parameters)))
            }

            fn describe<'e, 'q: 'e>(self, sql: &'q str) -> BoxFuture<'e, Result<Describe<Any>, sqlx::Error>>
            where
                'c: 'e,
            {
                let $this = self;
                let timeout = $timeout;
                Box::pin(within(timeout, $inner.describe(sql)))
            }
        }
    };
}

timed_executor!(&'c TimedPool, |this| (&this.pool, this.timeout));
timed_executor!(&'c mut TimedConnection, |this| (&mut *this.tx as &mut AnyConnection, this.timeout));
