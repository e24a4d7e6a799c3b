//! # tessera-store-postgres — sessions in PostgreSQL
//!
//! [`PostgresStore`] implements [`tessera::SessionStore`] on one table,
//! `tessera_sessions`, through a [`sqlx`] connection pool.
//!
//! ```no_run
//! # async fn demo() -> Result<(), tessera::StoreError> {
//! use std::time::Duration;
//! let store = tessera_store_postgres::PostgresStore::connect("postgres://postgres@127.0.0.1/app").await?;
//! let _purge = store.spawn_purge_task(Duration::from_secs(300));
//! let engine = tessera::SessionEngine::new(std::sync::Arc::new(store));
//! # Ok(()) }
//! ```
//!
//! ## Schema and migrations
//!
//! The table is created by migrations embedded in this crate and run by
//! [`PostgresStore::connect`] or [`PostgresStore::migrate`]. They are plain
//! sqlx migrations, recorded in the `_sqlx_migrations` table of the schema the
//! connection's `search_path` selects, so an application that keeps its own
//! sqlx migrations in the same database shares that table with this crate.
//! To keep the two from clashing:
//!
//! - this crate's migration versions all lie in `1_000_000..=1_999_999`; an
//!   application must not use versions in that range;
//! - this crate's migrator ignores applied migrations it does not know
//!   ([`Migrator::set_ignore_missing`]), and the application's migrator must
//!   do the same (`set_ignore_missing(true)`), or it will refuse to run after
//!   seeing this crate's versions.
//!
//! To keep the store apart from application tables, point the connection at a
//! dedicated schema with `search_path`; the table name is never qualified.
//!
//! Data is kept as the exact bytes of [`SessionData::to_json`] in a `BYTEA`
//! column rather than `JSONB`, because `JSONB` reorders and normalises
//! numbers (`-0.0`, `1e300`) and sessions must round-trip exactly.
//!
//! ## Time
//!
//! Liveness is decided against the application's wall clock
//! ([`Timestamp::now`]), not the database's `now()`: `expires_at` is stamped by
//! the application, so comparing it with the same clock keeps a skewed
//! database clock from shortening or lengthening sessions. A record is live
//! while `expires_at > now`.
//!
//! ## Outages
//!
//! The pool gives up acquiring a connection after
//! [`DEFAULT_ACQUIRE_TIMEOUT`], so calls fail with
//! [`StoreError::Unavailable`] instead of hanging while the database is down,
//! and it tests pooled connections before use, so it recovers by itself once
//! the database is back (for example after a restart).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::Postgres;
use tessera::{DeviceInfo, SessionData, SessionKey, SessionRecord, SessionStore, StoreError, Timestamp, WriteOutcome};

/// Re-exported so that an application can build its own migrator with the
/// same sqlx version (it needs `set_ignore_missing(true)`, see the crate docs).
pub use sqlx::migrate::Migrator;
/// Re-exported so that callers configure the pool with the sqlx version this
/// crate was built against.
pub use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

/// How long a call waits for a pooled connection before failing with
/// [`StoreError::Unavailable`]. Shorter than the engine's default store
/// time-out (3 s), so an outage reports the backend's error rather than a bare
/// time-out.
pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

/// Most rows one purge statement deletes, so that purging a large backlog
/// never holds many row locks or one long transaction.
pub const PURGE_BATCH: i64 = 1000;

/// The columns of `tessera_sessions` in the order [`Row`] decodes them.
macro_rules! columns {
    () => {
        "key, version, user_id, data, created_at, last_active, expires_at, device"
    };
}

/// One row of `tessera_sessions`, in [`columns!`] order.
type Row = (Vec<u8>, i64, Option<String>, Vec<u8>, i64, i64, i64, Vec<u8>);

/// The embedded migrations, set to tolerate migrations applied by other
/// migrators sharing the database (see the crate documentation).
pub fn migrator() -> Migrator {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.set_ignore_missing(true);
    migrator
}

/// The pool settings the constructors use: fail fast on an outage and test
/// connections before handing them out so the pool heals after a restart.
/// Start from these when building a pool for [`PostgresStore::from_pool`].
pub fn pool_options() -> PgPoolOptions {
    PgPoolOptions::new().acquire_timeout(DEFAULT_ACQUIRE_TIMEOUT).test_before_acquire(true)
}

/// A [`SessionStore`] on PostgreSQL.
///
/// Cloning is cheap and shares the pool.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects to `url` (a `postgres://` URL) and runs the migrations, so
    /// that a misconfigured or unreachable database is reported at start-up.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options: PgConnectOptions = url.parse().map_err(StoreError::unavailable)?;
        Self::connect_with(options).await
    }

    /// Like [`connect`](Self::connect), with options built in code (for example
    /// to set `search_path` or `application_name`).
    pub async fn connect_with(options: PgConnectOptions) -> Result<Self, StoreError> {
        let pool = pool_options().connect_with(options).await.map_err(StoreError::unavailable)?;
        let store = Self::from_pool(pool);
        store.migrate().await?;
        Ok(store)
    }

    /// A store whose pool connects on first use, for processes that must start
    /// while the database is down. Nothing is migrated: call
    /// [`migrate`](Self::migrate) once the database answers. Only a malformed
    /// URL is an error here.
    pub fn connect_lazy(url: &str) -> Result<Self, StoreError> {
        let options: PgConnectOptions = url.parse().map_err(StoreError::unavailable)?;
        Ok(Self::connect_lazy_with(options))
    }

    /// Like [`connect_lazy`](Self::connect_lazy), with options built in code.
    pub fn connect_lazy_with(options: PgConnectOptions) -> Self {
        Self::from_pool(pool_options().connect_lazy_with(options))
    }

    /// Wraps an existing pool, for applications that share one pool between
    /// the store and their own queries. Nothing is migrated: call
    /// [`migrate`](Self::migrate). See [`pool_options`] for settings that keep
    /// outages from hanging calls.
    pub fn from_pool(pool: PgPool) -> Self {
        PostgresStore { pool }
    }

    /// Creates or upgrades the `tessera_sessions` table. Safe to run
    /// concurrently from several processes (sqlx takes an advisory lock) and
    /// alongside an application's own sqlx migrations (see the crate docs).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        migrator().run(&self.pool).await.map_err(StoreError::unavailable)
    }

    /// The underlying pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Deletes expired records every `interval` (first right away), in batches
    /// of [`PURGE_BATCH`]. A failed round is logged and retried at the next
    /// tick, so an outage does not end the task; abort the returned handle to
    /// stop it. Must be called inside a Tokio runtime.
    pub fn spawn_purge_task(&self, interval: Duration) -> tokio::task::JoinHandle<()> {
        let store = self.clone();
        // `tokio::time::interval` panics on a zero period.
        let interval = interval.max(Duration::from_millis(1));
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                match store.purge().await {
                    Ok(removed) => tracing::debug!(removed, "purged expired sessions"),
                    Err(error) => tracing::warn!(%error, "purging expired sessions failed"),
                }
            }
        })
    }

    async fn purge(&self) -> Result<u64, StoreError> {
        let now = Timestamp::now().as_millis();
        let mut total = 0u64;
        loop {
            // SKIP LOCKED: several processes may purge at once, and a row being
            // rewritten by `create` is not ours to delete anyway.
            let removed = sqlx::query(
                "DELETE FROM tessera_sessions WHERE key IN (
                     SELECT key FROM tessera_sessions WHERE expires_at <= $1 LIMIT $2 FOR UPDATE SKIP LOCKED
                 )",
            )
            .bind(now)
            .bind(PURGE_BATCH)
            .execute(&self.pool)
            .await
            .map_err(StoreError::unavailable)?
            .rows_affected();
            total += removed;
            if removed < PURGE_BATCH as u64 {
                return Ok(total);
            }
        }
    }

    /// Whether a live record is stored under `key`, read in a fresh statement
    /// so that it reflects writes committed after an earlier statement of the
    /// same call.
    async fn live(&self, key: &SessionKey, now: i64) -> Result<bool, StoreError> {
        sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT 1 FROM tessera_sessions WHERE key = $1 AND expires_at > $2)",
        )
        .bind(key.as_bytes().as_slice())
        .bind(now)
        .fetch_one(&self.pool)
        .await
        .map_err(StoreError::unavailable)
    }
}

/// Inserts `record`, replacing an expired row that still holds its key (one
/// not yet purged is dead, so taking its key over resurrects nothing); a live
/// row under the key makes it affect no row.
fn insert(record: &SessionRecord, now: i64) -> Result<Query<'_, Postgres, PgArguments>, StoreError> {
    Ok(sqlx::query(concat!(
        "INSERT INTO tessera_sessions (",
        columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (key) DO UPDATE SET
             version = EXCLUDED.version, user_id = EXCLUDED.user_id, data = EXCLUDED.data,
             created_at = EXCLUDED.created_at, last_active = EXCLUDED.last_active,
             expires_at = EXCLUDED.expires_at, device = EXCLUDED.device
         WHERE tessera_sessions.expires_at <= $9"
    ))
    .bind(record.key.as_bytes().as_slice())
    .bind(version_to_db(record.version)?)
    .bind(record.user_id.as_deref())
    .bind(record.data.to_json())
    .bind(record.created_at.as_millis())
    .bind(record.last_active.as_millis())
    .bind(record.expires_at.as_millis())
    .bind(record.device.to_json())
    .bind(now))
}

fn version_to_db(version: u64) -> Result<i64, StoreError> {
    i64::try_from(version).map_err(|_| StoreError::corrupt(format!("version {version} does not fit a BIGINT")))
}

fn decode(row: Row) -> Result<SessionRecord, StoreError> {
    let (key, version, user_id, data, created_at, last_active, expires_at, device) = row;
    let key = <[u8; 32]>::try_from(key.as_slice())
        .map_err(|_| StoreError::corrupt(format!("key has {} bytes, not 32", key.len())))?;
    let version = u64::try_from(version).map_err(|_| StoreError::corrupt(format!("negative version {version}")))?;
    let data = SessionData::from_json(&data).map_err(|e| StoreError::corrupt(format!("session data: {e}")))?;
    Ok(SessionRecord {
        key: SessionKey::from_bytes(key),
        version,
        user_id,
        data,
        created_at: Timestamp(created_at),
        last_active: Timestamp(last_active),
        expires_at: Timestamp(expires_at),
        device: DeviceInfo::from_json(&device),
    })
}

#[async_trait]
impl SessionStore for PostgresStore {
    async fn load(&self, key: &SessionKey) -> Result<Option<SessionRecord>, StoreError> {
        let row: Option<Row> =
            sqlx::query_as(concat!("SELECT ", columns!(), " FROM tessera_sessions WHERE key = $1 AND expires_at > $2"))
                .bind(key.as_bytes().as_slice())
                .bind(Timestamp::now().as_millis())
                .fetch_optional(&self.pool)
                .await
                .map_err(StoreError::unavailable)?;
        row.map(decode).transpose()
    }

    async fn create(&self, record: &SessionRecord) -> Result<WriteOutcome, StoreError> {
        let written = insert(record, Timestamp::now().as_millis())?
            .execute(&self.pool)
            .await
            .map_err(StoreError::unavailable)?
            .rows_affected();
        Ok(if written == 1 { WriteOutcome::Written } else { WriteOutcome::Conflict })
    }

    async fn save(&self, record: &SessionRecord, expected_version: u64) -> Result<WriteOutcome, StoreError> {
        let now = Timestamp::now().as_millis();
        // Under READ COMMITTED a concurrent writer's committed change is
        // re-checked against the WHERE clause, so at most one of several
        // savers with the same expected version matches.
        let written = sqlx::query(
            "UPDATE tessera_sessions SET
                 version = $2, user_id = $3, data = $4, created_at = $5, last_active = $6, expires_at = $7, device = $8
             WHERE key = $1 AND version = $9 AND expires_at > $10",
        )
        .bind(record.key.as_bytes().as_slice())
        .bind(version_to_db(record.version)?)
        .bind(record.user_id.as_deref())
        .bind(record.data.to_json())
        .bind(record.created_at.as_millis())
        .bind(record.last_active.as_millis())
        .bind(record.expires_at.as_millis())
        .bind(record.device.to_json())
        .bind(version_to_db(expected_version)?)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(StoreError::unavailable)?
        .rows_affected();
        if written == 1 {
            return Ok(WriteOutcome::Written);
        }
        // A separate statement sees what is committed now: a row deleted by a
        // concurrent destroy is Missing, not a Conflict seen in an old snapshot.
        Ok(if self.live(&record.key, now).await? { WriteOutcome::Conflict } else { WriteOutcome::Missing })
    }

    async fn regenerate(
        &self,
        old_key: &SessionKey,
        expected_version: u64,
        record: &SessionRecord,
    ) -> Result<WriteOutcome, StoreError> {
        let now = Timestamp::now().as_millis();
        let mut tx = self.pool.begin().await.map_err(StoreError::unavailable)?;
        let removed = sqlx::query("DELETE FROM tessera_sessions WHERE key = $1 AND version = $2 AND expires_at > $3")
            .bind(old_key.as_bytes().as_slice())
            .bind(version_to_db(expected_version)?)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::unavailable)?
            .rows_affected();
        if removed != 1 {
            tx.rollback().await.map_err(StoreError::unavailable)?;
            return Ok(if self.live(old_key, now).await? { WriteOutcome::Conflict } else { WriteOutcome::Missing });
        }
        let inserted = insert(record, now)?.execute(&mut *tx).await.map_err(StoreError::unavailable)?.rows_affected();
        if inserted != 1 {
            // The new key is taken by a live record (a 256-bit collision):
            // keep the old session rather than lose either.
            tx.rollback().await.map_err(StoreError::unavailable)?;
            return Ok(WriteOutcome::Conflict);
        }
        tx.commit().await.map_err(StoreError::unavailable)?;
        Ok(WriteOutcome::Written)
    }

    async fn touch(&self, key: &SessionKey, last_active: Timestamp, expires_at: Timestamp) -> Result<bool, StoreError> {
        // One statement that matches every live row and moves the deadlines
        // only forward: the row count then says "live" exactly, with no
        // second read that a concurrent destroy could slip between.
        let found = sqlx::query(
            "UPDATE tessera_sessions SET
                 last_active = GREATEST(last_active, $2),
                 expires_at = CASE WHEN last_active < $2 THEN $3 ELSE expires_at END
             WHERE key = $1 AND expires_at > $4",
        )
        .bind(key.as_bytes().as_slice())
        .bind(last_active.as_millis())
        .bind(expires_at.as_millis())
        .bind(Timestamp::now().as_millis())
        .execute(&self.pool)
        .await
        .map_err(StoreError::unavailable)?
        .rows_affected();
        Ok(found == 1)
    }

    async fn destroy(&self, key: &SessionKey) -> Result<bool, StoreError> {
        // Expired rows are deleted too (they are garbage), but only a live one
        // counts as "removed", matching what `load` would have shown.
        let live: Option<bool> =
            sqlx::query_scalar("DELETE FROM tessera_sessions WHERE key = $1 RETURNING expires_at > $2")
                .bind(key.as_bytes().as_slice())
                .bind(Timestamp::now().as_millis())
                .fetch_optional(&self.pool)
                .await
                .map_err(StoreError::unavailable)?;
        Ok(live == Some(true))
    }

    async fn list_for_user(&self, user_id: &str) -> Result<Vec<SessionRecord>, StoreError> {
        let rows: Vec<Row> = sqlx::query_as(concat!(
            "SELECT ",
            columns!(),
            " FROM tessera_sessions WHERE user_id = $1 AND expires_at > $2 ORDER BY created_at, key"
        ))
        .bind(user_id)
        .bind(Timestamp::now().as_millis())
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::unavailable)?;
        rows.into_iter().map(decode).collect()
    }

    async fn destroy_for_user(&self, user_id: &str, keep: Option<&SessionKey>) -> Result<u64, StoreError> {
        let removed: i64 = sqlx::query_scalar(
            "WITH removed AS (
                 DELETE FROM tessera_sessions
                 WHERE user_id = $1 AND ($2::BYTEA IS NULL OR key <> $2)
                 RETURNING expires_at
             )
             SELECT count(*) FROM removed WHERE expires_at > $3",
        )
        .bind(user_id)
        .bind(keep.map(|k| k.as_bytes().as_slice()))
        .bind(Timestamp::now().as_millis())
        .fetch_one(&self.pool)
        .await
        .map_err(StoreError::unavailable)?;
        // count(*) is never negative.
        Ok(u64::try_from(removed).unwrap_or(0))
    }

    async fn purge_expired(&self) -> Result<u64, StoreError> {
        self.purge().await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map_err(StoreError::unavailable)?;
        Ok(())
    }
}
