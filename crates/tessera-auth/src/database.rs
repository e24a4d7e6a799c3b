//! The accounts database: SQLite or PostgreSQL through sqlx's `Any` driver.
//!
//! The SQL of the authentication core is written once with `$n`
//! placeholders, which both databases accept; only the schema migrations
//! differ. The core's tables (users, generated secrets, login throttle,
//! second factors) are created by [`TimedPool::connect`]; an application
//! keeps its own tables in the same database with [`TimedPool::migrate`].
//!
//! Every query is bounded by a time-out: [`TimedPool`] is an sqlx executor
//! that puts the deadline around each query it runs (transactions
//! included), so code keeps writing `.fetch_one(&pool)` and a hung database
//! turns into [`DatabaseError::Unavailable`] (a 503 for a web app) instead
//! of a hung request.

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

/// The default bound on one query: like the session store's time-out.
pub const DEFAULT_QUERY_TIMEOUT: Duration = Duration::from_secs(3);

/// A failure of the user database.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    /// The database could not be reached or refused the query.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The URL names no supported database.
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

/// The pool, with a deadline on every query run through it.
#[derive(Clone, Debug)]
pub struct TimedPool {
    pool: AnyPool,
    timeout: Duration,
    sqlite: bool,
}

impl TimedPool {
    /// Opens (creating a SQLite file if needed) the database at `url`
    /// (`sqlite://FILE` or `postgres://…`) and creates or updates the
    /// authentication core's tables; every later query that takes longer
    /// than `query_timeout` fails as [`DatabaseError::Unavailable`].
    pub async fn connect(url: &str, query_timeout: Duration) -> Result<Self, DatabaseError> {
        sqlx::any::install_default_drivers();
        let sqlite = url.starts_with("sqlite:");
        if !sqlite && !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
            return Err(DatabaseError::UnsupportedUrl(url.to_owned()));
        }
        let url = if sqlite && !url.contains("mode=") {
            format!("{url}{}mode=rwc", if url.contains('?') { '&' } else { '?' })
        } else {
            url.to_owned()
        };
        let options = AnyPoolOptions::new()
            .max_connections(if sqlite { 4 } else { 10 })
            .acquire_timeout(Duration::from_secs(5))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if sqlite {
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
        let pool = options.connect(&url).await?;
        let timed = TimedPool { pool, timeout: query_timeout, sqlite };
        let migrator: Migrator =
            if sqlite { sqlx::migrate!("./migrations/sqlite") } else { sqlx::migrate!("./migrations/postgres") };
        timed.migrate(migrator).await?;
        Ok(timed)
    }

    /// Runs `migrator` (an application's own tables) on this database.
    /// Every migrator sharing the database ignores the versions of the
    /// others, so the core, the session store and the application each
    /// keep their own set.
    pub async fn migrate(&self, mut migrator: Migrator) -> Result<(), DatabaseError> {
        migrator.set_ignore_missing(true);
        migrator.run(&self.pool).await?;
        Ok(())
    }

    /// Whether this is SQLite (for the few statements that differ).
    pub fn is_sqlite(&self) -> bool {
        self.sqlite
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
        .execute(self)
        .await?;
        let row = sqlx::query("SELECT value FROM server_secrets WHERE name = $1").bind(name).fetch_one(self).await?;
        let value: Vec<u8> = row.try_get(0)?;
        value.try_into().map_err(|_| DatabaseError::Unavailable(format!("stored secret {name:?} is not 32 bytes")))
    }

    /// A round trip, for readiness checks.
    pub async fn ping(&self) -> Result<(), DatabaseError> {
        sqlx::query("SELECT 1").fetch_one(self).await?;
        Ok(())
    }

    /// Starts a transaction whose queries (and commit) are bounded too.
    pub async fn begin(&self) -> Result<TimedTransaction, sqlx::Error> {
        let tx = within(self.timeout, self.pool.begin()).await?;
        Ok(TimedTransaction { inner: TimedConnection { tx, timeout: self.timeout } })
    }

    /// Closes the pool, waiting for connections to return.
    pub async fn close(&self) {
        self.pool.close().await
    }
}

/// A transaction of a [`TimedPool`]. `&mut *tx` is the executor, as with
/// sqlx's own transactions, so the code using it does not change.
#[derive(Debug)]
pub struct TimedTransaction {
    inner: TimedConnection,
}

/// The connection of a [`TimedTransaction`].
#[derive(Debug)]
pub struct TimedConnection {
    tx: Transaction<'static, Any>,
    timeout: Duration,
}

impl TimedTransaction {
    /// Commits, within the time-out.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        let timeout = self.inner.timeout;
        within(timeout, self.inner.tx.commit()).await
    }

    /// Rolls back, within the time-out (a transaction dropped without either
    /// is rolled back by sqlx as well).
    pub async fn rollback(self) -> Result<(), sqlx::Error> {
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
        format!("no answer within {} (the database query time-out)", humantime::format_duration(timeout)),
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
