//! # tessera-store-mysql — sessions in MySQL or MariaDB
//!
//! [`MySqlStore`] implements [`tessera::SessionStore`] on one InnoDB table,
//! `tessera_sessions`, through a [`sqlx`] connection pool. It is tested
//! against MariaDB 10.11 and uses only SQL that MySQL 8 shares with it: no
//! `RETURNING`, no `ON CONFLICT`, no partial indexes.
//!
//! ```no_run
//! # async fn demo() -> Result<(), tessera::StoreError> {
//! use std::time::Duration;
//! let store = tessera_store_mysql::MySqlStore::connect("mysql://app@127.0.0.1:3306/app").await?;
//! let _purge = store.spawn_purge_task(Duration::from_secs(300));
//! let engine = tessera::SessionEngine::new(std::sync::Arc::new(store));
//! # Ok(()) }
//! ```
//!
//! ## Schema and migrations
//!
//! The table is created by migrations embedded in this crate and run by
//! [`MySqlStore::connect`] or [`MySqlStore::migrate`]. They are plain sqlx
//! migrations, recorded in the `_sqlx_migrations` table of the connection's
//! database, so an application that keeps its own sqlx migrations in the same
//! database shares that table with this crate. To keep the two from clashing:
//!
//! - this crate's migration versions all lie in `1_000_000..=1_999_999`; an
//!   application must not use versions in that range;
//! - this crate's migrator ignores applied migrations it does not know
//!   ([`Migrator::set_ignore_missing`]), and the application's migrator must
//!   do the same (`set_ignore_missing(true)`).
//!
//! To keep the store apart from application tables, give it a database of
//! its own in the URL.
//!
//! Keys are `BINARY(32)` (the SHA-256 digest, as in the PostgreSQL store);
//! user IDs are binary strings, compared byte for byte with no collation;
//! data is kept as the exact bytes of [`SessionData::to_json`] in a
//! `LONGBLOB` rather than a `JSON` column, because sessions must round-trip
//! exactly.
//!
//! ## Compare-and-swap without `RETURNING`
//!
//! Writes that must be conditional are single `UPDATE … WHERE key = ? AND
//! version = ? AND expires_at > ?` statements. InnoDB evaluates an `UPDATE`'s
//! condition against the newest committed row under a row lock, so of several
//! writers with the same expected version exactly one matches. sqlx connects
//! with `CLIENT_FOUND_ROWS`, so the affected-row count is the number of rows
//! *matched*, which is what says whether the condition held. `create` is a
//! plain `INSERT` whose duplicate-key error means "taken", unless the row
//! holding the key has expired: that one is overwritten by an `UPDATE` that
//! matches only while it is still expired. `regenerate` deletes the old row
//! and inserts the new one in one transaction, run again if InnoDB picks it
//! as a deadlock victim.
//!
//! Statements that address a row by key force the primary key
//! (`FORCE INDEX (PRIMARY)`): beside a condition on `expires_at`, the
//! optimizer may pick the `expires_at` index instead, and the gap locks of a
//! locking scan there deadlocked concurrent regenerates in testing.
//!
//! ## Time
//!
//! Liveness is decided against the application's wall clock
//! ([`Timestamp::now`]), not the database's `NOW()`: `expires_at` is stamped
//! by the application, so comparing it with the same clock keeps a skewed
//! database clock from shortening or lengthening sessions. A record is live
//! while `expires_at > now`.
//!
//! ## Outages
//!
//! The pool gives up acquiring a connection after
//! [`DEFAULT_ACQUIRE_TIMEOUT`], so calls fail with
//! [`StoreError::Unavailable`] instead of hanging while the database is down,
//! and it tests pooled connections before use, so it recovers by itself once
//! the database is back.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::time::Duration;

use async_trait::async_trait;
use sqlx::mysql::MySqlArguments;
use sqlx::query::Query;
use sqlx::MySql;
use tessera::{DeviceInfo, SessionData, SessionKey, SessionRecord, SessionStore, StoreError, Timestamp, WriteOutcome};

/// Re-exported so that an application can build its own migrator with the
/// same sqlx version (it needs `set_ignore_missing(true)`, see the crate docs).
pub use sqlx::migrate::Migrator;
/// Re-exported so that callers configure the pool with the sqlx version this
/// crate was built against.
pub use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};

/// How long a call waits for a pooled connection before failing with
/// [`StoreError::Unavailable`]. Shorter than the engine's default store
/// time-out (3 s), so an outage reports the backend's error rather than a bare
/// time-out.
pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

/// Most rows one purge statement deletes, so that purging a large backlog
/// never holds many row locks or one long statement.
pub const PURGE_BATCH: u64 = 1000;

/// The columns of `tessera_sessions` in the order [`Row`] decodes them.
macro_rules! columns {
    () => {
        "`key`, version, user_id, data, created_at, last_active, expires_at, device"
    };
}

/// Statements that address one row by its key name the primary key
/// explicitly: with a condition on `expires_at` beside the key, the optimizer
/// may otherwise pick the `expires_at` index when it estimates few matches,
/// and a locking scan of that index takes gap locks that deadlock with
/// concurrent inserts.
macro_rules! by_key {
    () => {
        "tessera_sessions FORCE INDEX (PRIMARY)"
    };
}

/// The start of a `DELETE` by key, naming the primary key as [`by_key!`]
/// does (a `DELETE` takes index hints only in its multi-table form).
macro_rules! delete_by_key {
    () => {
        "DELETE s FROM tessera_sessions AS s FORCE INDEX (PRIMARY)"
    };
}

/// One row of `tessera_sessions`, in [`columns!`] order.
type Row = (Vec<u8>, i64, Option<Vec<u8>>, Vec<u8>, i64, i64, i64, Vec<u8>);

/// The embedded migrations, set to tolerate migrations applied by other
/// migrators sharing the database (see the crate documentation).
pub fn migrator() -> Migrator {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.set_ignore_missing(true);
    migrator
}

/// The pool settings the constructors use: fail fast on an outage and test
/// connections before handing them out so the pool heals after a restart.
/// Start from these when building a pool for [`MySqlStore::from_pool`].
pub fn pool_options() -> MySqlPoolOptions {
    MySqlPoolOptions::new().acquire_timeout(DEFAULT_ACQUIRE_TIMEOUT).test_before_acquire(true)
}

/// A [`SessionStore`] on MySQL or MariaDB.
///
/// Cloning is cheap and shares the pool.
#[derive(Debug, Clone)]
pub struct MySqlStore {
    pool: MySqlPool,
}

impl MySqlStore {
    /// Connects to `url` (a `mysql://USER[:PASSWORD]@HOST[:PORT]/DATABASE`
    /// URL; `mariadb://` is accepted as a synonym) and runs the migrations,
    /// so that a misconfigured or unreachable database is reported at
    /// start-up.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(parse_url(url)?).await
    }

    /// Like [`connect`](Self::connect), with options built in code.
    pub async fn connect_with(options: MySqlConnectOptions) -> Result<Self, StoreError> {
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
        Ok(Self::connect_lazy_with(parse_url(url)?))
    }

    /// Like [`connect_lazy`](Self::connect_lazy), with options built in code.
    pub fn connect_lazy_with(options: MySqlConnectOptions) -> Self {
        Self::from_pool(pool_options().connect_lazy_with(options))
    }

    /// Wraps an existing pool, for applications that share one pool between
    /// the store and their own queries. Nothing is migrated: call
    /// [`migrate`](Self::migrate). See [`pool_options`] for settings that keep
    /// outages from hanging calls.
    pub fn from_pool(pool: MySqlPool) -> Self {
        MySqlStore { pool }
    }

    /// Creates or upgrades the `tessera_sessions` table. Safe to run
    /// concurrently from several processes (sqlx takes a named lock) and
    /// alongside an application's own sqlx migrations (see the crate docs).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        migrator().run(&self.pool).await.map_err(StoreError::unavailable)
    }

    /// The underlying pool.
    pub fn pool(&self) -> &MySqlPool {
        &self.pool
    }

    /// How many live records the table holds (one indexed range count).
    pub async fn count_live(&self) -> Result<u64, StoreError> {
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tessera_sessions WHERE expires_at > ?")
            .bind(Timestamp::now().as_millis())
            .fetch_one(&self.pool)
            .await
            .map_err(StoreError::unavailable)?;
        Ok(u64::try_from(count).unwrap_or(0))
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
        let mut attempt = 0;
        loop {
            // MySQL has no LIMIT in IN-subqueries, but a single-table DELETE
            // takes ORDER BY and LIMIT; walking the expires_at index in order
            // keeps each statement to one short range of rows.
            let result = sqlx::query("DELETE FROM tessera_sessions WHERE expires_at <= ? ORDER BY expires_at LIMIT ?")
                .bind(now)
                .bind(PURGE_BATCH)
                .execute(&self.pool)
                .await;
            let removed = match result {
                Ok(done) => done.rows_affected(),
                // Chosen as a deadlock victim by a concurrent transaction
                // (the batch's locks on the index meet a regenerate's): the
                // statement was rolled back whole, so run it again.
                Err(error) if is_deadlock(&error) && attempt + 1 < DEADLOCK_ATTEMPTS => {
                    attempt += 1;
                    continue;
                }
                Err(error) => return Err(StoreError::unavailable(error)),
            };
            attempt = 0;
            total += removed;
            if removed < PURGE_BATCH {
                return Ok(total);
            }
        }
    }

    /// One run of `regenerate`'s transaction: `None` if the old row did not
    /// match. Errors are sqlx's, so that the caller can spot deadlocks.
    async fn regenerate_once(
        &self,
        old_key: &SessionKey,
        expected_version: i64,
        record: &SessionRecord,
        version: i64,
        now: i64,
    ) -> Result<Option<WriteOutcome>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let removed =
            sqlx::query(concat!(delete_by_key!(), " WHERE s.`key` = ? AND s.version = ? AND s.expires_at > ?"))
                .bind(old_key.as_bytes().as_slice())
                .bind(expected_version)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        if removed != 1 {
            tx.rollback().await?;
            return Ok(None);
        }
        match insert(record, version).execute(&mut *tx).await {
            Ok(_) => {}
            Err(error) if is_duplicate(&error) => {
                // A dead row under the new key may be taken over; a live one
                // (a 256-bit collision) keeps the old session rather than
                // losing either.
                if replace_expired(record, version, now).execute(&mut *tx).await?.rows_affected() != 1 {
                    tx.rollback().await?;
                    return Ok(Some(WriteOutcome::Conflict));
                }
            }
            Err(error) => return Err(error),
        }
        tx.commit().await?;
        Ok(Some(WriteOutcome::Written))
    }

    /// Whether a live record is stored under `key`, read in a fresh
    /// (autocommit) statement so that it reflects writes committed after an
    /// earlier statement of the same call.
    async fn live(&self, key: &SessionKey, now: i64) -> Result<bool, StoreError> {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM tessera_sessions WHERE `key` = ? AND expires_at > ?")
                .bind(key.as_bytes().as_slice())
                .bind(now)
                .fetch_optional(&self.pool)
                .await
                .map_err(StoreError::unavailable)?;
        Ok(found.is_some())
    }
}

fn parse_url(url: &str) -> Result<MySqlConnectOptions, StoreError> {
    // sqlx knows only mysql://; MariaDB users may well write mariadb://.
    let url = match url.strip_prefix("mariadb://") {
        Some(rest) => format!("mysql://{rest}"),
        None => url.to_owned(),
    };
    url.parse().map_err(StoreError::unavailable)
}

/// Replaces the row under `record.key` only while it has expired (a dead row
/// that was not purged yet: taking its key over resurrects nothing). Matches
/// no row when the row under the key is live.
fn replace_expired(record: &SessionRecord, version: i64, now: i64) -> Query<'_, MySql, MySqlArguments> {
    sqlx::query(concat!(
        "UPDATE ",
        by_key!(),
        " SET version = ?, user_id = ?, data = ?, created_at = ?, last_active = ?, expires_at = ?, device = ?
         WHERE `key` = ? AND expires_at <= ?"
    ))
    .bind(version)
    .bind(record.user_id.as_deref().map(str::as_bytes))
    .bind(record.data.to_json())
    .bind(record.created_at.as_millis())
    .bind(record.last_active.as_millis())
    .bind(record.expires_at.as_millis())
    .bind(record.device.to_json())
    .bind(record.key.as_bytes().as_slice())
    .bind(now)
}

/// How often a transaction that InnoDB chose as a deadlock victim is run
/// again (InnoDB's advice for error 1213 is "try restarting transaction").
const DEADLOCK_ATTEMPTS: u32 = 3;

/// Whether `error` is a deadlock or a serialization failure, after which
/// the whole transaction may be run again.
fn is_deadlock(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.code().as_deref() == Some("40001"))
}

/// A plain insert of `record`: a duplicate-key error means the key is taken.
fn insert(record: &SessionRecord, version: i64) -> Query<'_, MySql, MySqlArguments> {
    sqlx::query(concat!("INSERT INTO tessera_sessions (", columns!(), ") VALUES (?, ?, ?, ?, ?, ?, ?, ?)"))
        .bind(record.key.as_bytes().as_slice())
        .bind(version)
        .bind(record.user_id.as_deref().map(str::as_bytes))
        .bind(record.data.to_json())
        .bind(record.created_at.as_millis())
        .bind(record.last_active.as_millis())
        .bind(record.expires_at.as_millis())
        .bind(record.device.to_json())
}

/// Whether `error` is a duplicate-key error (the key is taken).
fn is_duplicate(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.is_unique_violation())
}

fn version_to_db(version: u64) -> Result<i64, StoreError> {
    i64::try_from(version).map_err(|_| StoreError::corrupt(format!("version {version} does not fit a BIGINT")))
}

fn decode(row: Row) -> Result<SessionRecord, StoreError> {
    let (key, version, user_id, data, created_at, last_active, expires_at, device) = row;
    let key = <[u8; 32]>::try_from(key.as_slice())
        .map_err(|_| StoreError::corrupt(format!("key has {} bytes, not 32", key.len())))?;
    let version = u64::try_from(version).map_err(|_| StoreError::corrupt(format!("negative version {version}")))?;
    let user_id =
        user_id.map(String::from_utf8).transpose().map_err(|_| StoreError::corrupt("user_id is not UTF-8"))?;
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
impl SessionStore for MySqlStore {
    async fn load(&self, key: &SessionKey) -> Result<Option<SessionRecord>, StoreError> {
        let row: Option<Row> =
            sqlx::query_as(concat!("SELECT ", columns!(), " FROM tessera_sessions WHERE `key` = ? AND expires_at > ?"))
                .bind(key.as_bytes().as_slice())
                .bind(Timestamp::now().as_millis())
                .fetch_optional(&self.pool)
                .await
                .map_err(StoreError::unavailable)?;
        row.map(decode).transpose()
    }

    async fn create(&self, record: &SessionRecord) -> Result<WriteOutcome, StoreError> {
        let version = version_to_db(record.version)?;
        match insert(record, version).execute(&self.pool).await {
            Ok(_) => Ok(WriteOutcome::Written),
            Err(error) if is_duplicate(&error) => {
                // Taken, perhaps by a dead row: that one may be replaced. Of
                // two creates racing here, the second sees a live row.
                let replaced = replace_expired(record, version, Timestamp::now().as_millis())
                    .execute(&self.pool)
                    .await
                    .map_err(StoreError::unavailable)?
                    .rows_affected();
                Ok(if replaced == 1 { WriteOutcome::Written } else { WriteOutcome::Conflict })
            }
            Err(error) => Err(StoreError::unavailable(error)),
        }
    }

    async fn save(&self, record: &SessionRecord, expected_version: u64) -> Result<WriteOutcome, StoreError> {
        let now = Timestamp::now().as_millis();
        // The row lock makes concurrent savers with the same expected version
        // queue; each re-reads the newest committed row, so only the first
        // still matches. With CLIENT_FOUND_ROWS the count is of matched rows.
        let written = sqlx::query(concat!(
            "UPDATE ",
            by_key!(),
            " SET version = ?, user_id = ?, data = ?, created_at = ?, last_active = ?, expires_at = ?, device = ?
             WHERE `key` = ? AND version = ? AND expires_at > ?"
        ))
        .bind(version_to_db(record.version)?)
        .bind(record.user_id.as_deref().map(str::as_bytes))
        .bind(record.data.to_json())
        .bind(record.created_at.as_millis())
        .bind(record.last_active.as_millis())
        .bind(record.expires_at.as_millis())
        .bind(record.device.to_json())
        .bind(record.key.as_bytes().as_slice())
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
        // concurrent destroy is Missing, not a Conflict.
        Ok(if self.live(&record.key, now).await? { WriteOutcome::Conflict } else { WriteOutcome::Missing })
    }

    async fn regenerate(
        &self,
        old_key: &SessionKey,
        expected_version: u64,
        record: &SessionRecord,
    ) -> Result<WriteOutcome, StoreError> {
        let now = Timestamp::now().as_millis();
        let (expected_version, version) = (version_to_db(expected_version)?, version_to_db(record.version)?);
        let mut attempt = 0;
        let outcome = loop {
            attempt += 1;
            match self.regenerate_once(old_key, expected_version, record, version, now).await {
                Ok(outcome) => break outcome,
                Err(error) if is_deadlock(&error) && attempt < DEADLOCK_ATTEMPTS => continue,
                Err(error) => return Err(StoreError::unavailable(error)),
            }
        };
        match outcome {
            // The old row did not match: gone, or another version.
            None => Ok(if self.live(old_key, now).await? { WriteOutcome::Conflict } else { WriteOutcome::Missing }),
            Some(outcome) => Ok(outcome),
        }
    }

    async fn touch(&self, key: &SessionKey, last_active: Timestamp, expires_at: Timestamp) -> Result<bool, StoreError> {
        // One statement that matches every live row and moves the deadlines
        // only forward. MySQL evaluates single-table assignments left to
        // right, each seeing the ones before, so expires_at (which tests the
        // old last_active) must come first. The matched-row count then says
        // "live" exactly.
        let found = sqlx::query(concat!(
            "UPDATE ",
            by_key!(),
            " SET expires_at = IF(last_active < ?, ?, expires_at), last_active = GREATEST(last_active, ?)
             WHERE `key` = ? AND expires_at > ?"
        ))
        .bind(last_active.as_millis())
        .bind(expires_at.as_millis())
        .bind(last_active.as_millis())
        .bind(key.as_bytes().as_slice())
        .bind(Timestamp::now().as_millis())
        .execute(&self.pool)
        .await
        .map_err(StoreError::unavailable)?
        .rows_affected();
        Ok(found == 1)
    }

    async fn destroy(&self, key: &SessionKey) -> Result<bool, StoreError> {
        // Without RETURNING, two statements: the live row counts as removed,
        // and an expired one (garbage) is freed too.
        let now = Timestamp::now().as_millis();
        let mut removed = [0; 2];
        for (i, sql) in [
            concat!(delete_by_key!(), " WHERE s.`key` = ? AND s.expires_at > ?"),
            concat!(delete_by_key!(), " WHERE s.`key` = ? AND s.expires_at <= ?"),
        ]
        .into_iter()
        .enumerate()
        {
            removed[i] = sqlx::query(sql)
                .bind(key.as_bytes().as_slice())
                .bind(now)
                .execute(&self.pool)
                .await
                .map_err(StoreError::unavailable)?
                .rows_affected();
            if removed[i] == 1 {
                break;
            }
        }
        Ok(removed[0] == 1)
    }

    async fn list_for_user(&self, user_id: &str) -> Result<Vec<SessionRecord>, StoreError> {
        let rows: Vec<Row> = sqlx::query_as(concat!(
            "SELECT ",
            columns!(),
            " FROM tessera_sessions WHERE user_id = ? AND expires_at > ? ORDER BY created_at, `key`"
        ))
        .bind(user_id.as_bytes())
        .bind(Timestamp::now().as_millis())
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::unavailable)?;
        rows.into_iter().map(decode).collect()
    }

    async fn destroy_for_user(&self, user_id: &str, keep: Option<&SessionKey>) -> Result<u64, StoreError> {
        let now = Timestamp::now().as_millis();
        let keep = keep.map(|k| k.as_bytes().as_slice());
        // Live rows first, so that the count is of sessions that were live;
        // then the user's expired rows, which are garbage.
        let mut removed = 0;
        for live in [true, false] {
            // The user index, for the reason given at `by_key!`.
            let sql = if live {
                "DELETE s FROM tessera_sessions AS s FORCE INDEX (tessera_sessions_user_id)
                 WHERE s.user_id = ? AND (? IS NULL OR s.`key` <> ?) AND s.expires_at > ?"
            } else {
                "DELETE s FROM tessera_sessions AS s FORCE INDEX (tessera_sessions_user_id)
                 WHERE s.user_id = ? AND (? IS NULL OR s.`key` <> ?) AND s.expires_at <= ?"
            };
            let affected = sqlx::query(sql)
                .bind(user_id.as_bytes())
                .bind(keep)
                .bind(keep)
                .bind(now)
                .execute(&self.pool)
                .await
                .map_err(StoreError::unavailable)?
                .rows_affected();
            if live {
                removed = affected;
            }
        }
        Ok(removed)
    }

    async fn purge_expired(&self) -> Result<u64, StoreError> {
        self.purge().await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map_err(StoreError::unavailable)?;
        Ok(())
    }
}
